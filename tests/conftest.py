"""Shared pytest setup: GPU tests are skipped with a reason when CuPy has no CUDA device; a one-torch-thread fixture;
a small writer of Radiance .hdr files (flat or run-length scanlines) for tests of the reader; and every test's
`relitcam run` settings file, enrolled-avatars folder and recordings folder in its own temporary folder, never the user's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.xp import cupy_available

GPU_SKIP_REASON = "needs CuPy with a CUDA device (models.xp.cupy_available() is False)"


@pytest.fixture(autouse=True)
def _own_live_settings(tmp_path, monkeypatch):
    from stream.settings import SETTINGS_ENV

    monkeypatch.setenv(SETTINGS_ENV, str(tmp_path / "live_settings.json"))


@pytest.fixture(autouse=True)
def _own_avatars_dir(tmp_path, monkeypatch):
    import models.enroll.enroll as enroll

    monkeypatch.setattr(enroll, "DEFAULT_AVATARS_DIR", tmp_path / "enrolled_avatars")


@pytest.fixture(autouse=True)
def _own_recordings_dir(tmp_path, monkeypatch):
    import stream.recordings as recordings

    monkeypatch.setattr(recordings, "RECORDINGS_DIR", tmp_path / "recordings")


@pytest.fixture
def torch_one_thread():
    """Tiny convolutions are dominated by thread hand-offs: one torch thread is faster and deterministic."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pytest_collection_modifyitems(config, items):
    if cupy_available():
        return
    skip = pytest.mark.skip(reason=GPU_SKIP_REASON)
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def _rle_channel(values: np.ndarray) -> bytes:
    """Radiance run-length code of one channel of one scanline: runs of >= 3 equal bytes, literals otherwise."""
    out, i, n = bytearray(), 0, len(values)
    while i < n:
        j = i
        while j < n and j - i < 127 and values[j] == values[i]:
            j += 1
        if j - i >= 3:
            out += bytes([128 + j - i, values[i]])
            i = j
            continue
        k = i
        while k < n and k - i < 128 and not (k + 2 < n and values[k] == values[k + 1] == values[k + 2]):
            k += 1
        out += bytes([k - i]) + bytes(values[i:k].tolist())
        i = k
    return bytes(out)


def encode_hdr(rgbe: np.ndarray, run_length: bool, header_lines: tuple[str, ...] = ()) -> bytes:
    """A .hdr file holding the raw (H, W, 4) uint8 RGBE pixels."""
    h, w = rgbe.shape[:2]
    head = "#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n" + "".join(f"{line}\n" for line in header_lines)
    body = bytearray((head + f"\n-Y {h} +X {w}\n").encode("ascii"))
    for row in rgbe.astype(np.uint8):
        if not run_length:
            body += row.tobytes()
            continue
        body += bytes([2, 2, w >> 8, w & 255])
        for c in range(4):
            body += _rle_channel(row[:, c])
    return bytes(body)


@pytest.fixture
def write_hdr(tmp_path: Path):
    """write_hdr(rgbe, run_length=True, name="map.hdr", header_lines=()) -> path of a .hdr file."""

    def write(rgbe: np.ndarray, run_length: bool = True, name: str = "map.hdr", header_lines=()) -> Path:
        path = tmp_path / name
        path.write_bytes(encode_hdr(rgbe, run_length, tuple(header_lines)))
        return path

    return write


@pytest.fixture
def random_rgbe():
    """random_rgbe(height, width, seed=0) -> (H, W, 4) uint8 RGBE pixels."""
    return _random_rgbe


def _random_rgbe(height: int, width: int, seed: int = 0) -> np.ndarray:
    """RGBE pixels with runs of repeated values (to exercise run coding) and some exact zeros."""
    rng = np.random.default_rng(seed)
    rgbe = rng.integers(0, 256, (height, width, 4), dtype=np.uint8)
    rgbe[..., 3] = rng.integers(120, 140, (height, width))
    rgbe[:, width // 4 : width // 2] = rgbe[:, width // 4 : width // 4 + 1]  # long runs
    rgbe[0, :3, 3] = 0
    return rgbe
