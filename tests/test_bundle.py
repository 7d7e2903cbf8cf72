"""Avatar bundles: atomic write, validated load, clear refusals of damaged or foreign bundles."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from models.bundle import FORMAT_VERSION, BundleError, NetSpec, load_bundle, write_bundle


@pytest.fixture()
def tiny_onnx(tmp_path):
    net = torch.nn.Conv2d(3, 2, 3, padding=1)
    path = tmp_path / "tiny.onnx"
    torch.onnx.export(net, (torch.zeros(1, 3, 8, 8),), str(path), input_names=["image"], output_names=["out"],
                      dynamo=False)
    return path, NetSpec(file="", inputs={"image": [1, 3, 8, 8]}, outputs={"out": [1, 2, 8, 8]})


def _write(tmp_path, tiny_onnx, **overrides):
    kwargs = dict(
        name="test",
        size_px=8,
        fps=25.0,
        lookahead_ms=80.0,
        sh_coeffs=np.ones((9, 3), np.float32),
        onnx_files={"mouth": tiny_onnx},
        arrays={"albedo": np.zeros((4, 8, 8, 3), np.float16)},
    )
    kwargs.update(overrides)
    return write_bundle(tmp_path / "avatar", **kwargs)


def test_round_trip(tmp_path, tiny_onnx):
    path = _write(tmp_path, tiny_onnx)
    bundle = load_bundle(path)
    assert bundle.size_px == 8 and bundle.fps == 25.0 and bundle.lookahead_ms == 80.0
    assert bundle.arrays["albedo"].shape == (4, 8, 8, 3) and bundle.arrays["albedo"].dtype == np.float16
    np.testing.assert_array_equal(bundle.sh_coeffs, np.ones((9, 3)))
    assert bundle.net_path("mouth").is_file()
    # nothing temporary is left beside the bundle
    assert sorted(p.name for p in tmp_path.iterdir()) == ["avatar", "tiny.onnx"]


def test_rewrite_replaces_whole_bundle(tmp_path, tiny_onnx):
    _write(tmp_path, tiny_onnx, arrays={"old": np.zeros(3)})
    path = _write(tmp_path, tiny_onnx)
    assert not (path / "old.npy").exists()
    assert set(load_bundle(path).arrays) == {"albedo"}


def test_failed_write_leaves_previous_bundle(tmp_path, tiny_onnx):
    path = _write(tmp_path, tiny_onnx)
    with pytest.raises(BundleError, match="dtype object"):
        _write(tmp_path, tiny_onnx, arrays={"bad": np.array([object()])})
    assert set(load_bundle(path).arrays) == {"albedo"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["avatar", "tiny.onnx"]


def test_refuses_other_version(tmp_path, tiny_onnx):
    path = _write(tmp_path, tiny_onnx)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["format_version"] = FORMAT_VERSION + 1
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="format version"):
        load_bundle(path)


def test_refuses_damaged_file(tmp_path, tiny_onnx):
    path = _write(tmp_path, tiny_onnx)
    data = bytearray((path / "mouth.onnx").read_bytes())
    data[-5] ^= 0xFF
    (path / "mouth.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="mouth.onnx is damaged"):
        load_bundle(path)


def test_refuses_missing_file_and_not_a_bundle(tmp_path, tiny_onnx):
    path = _write(tmp_path, tiny_onnx)
    (path / "albedo.npy").unlink()
    with pytest.raises(BundleError, match="albedo.npy .* missing"):
        load_bundle(path)
    with pytest.raises(BundleError, match="manifest.json is missing"):
        load_bundle(tmp_path)
    with pytest.raises(BundleError, match="does not exist"):
        load_bundle(tmp_path / "nope")


def test_refuses_wrong_net_shape(tmp_path, tiny_onnx):
    onnx_path, spec = tiny_onnx
    bad = NetSpec(file="", inputs={"image": [1, 3, 16, 16]}, outputs=spec.outputs)
    path = _write(tmp_path, tiny_onnx, onnx_files={"mouth": (onnx_path, bad)})
    with pytest.raises(BundleError, match="input 'image' has shape"):
        load_bundle(path)


def test_learned_lighting_is_the_manifests_sh_and_key_light(tmp_path, tiny_onnx):
    sh = np.arange(27, dtype=np.float32).reshape(9, 3) / 27
    key = {"dirs": [[0.0, 0.6, 0.8]], "colours": [[0.1, 0.2, 0.3]]}
    lit = load_bundle(_write(tmp_path, tiny_onnx, sh_coeffs=sh, info={"learned_specular_lights": key})).learned_lighting()
    np.testing.assert_allclose(lit.sh_coeffs, sh)
    np.testing.assert_allclose(lit.light_dirs, key["dirs"])
    np.testing.assert_allclose(lit.light_colours, key["colours"])
    bare = load_bundle(_write(tmp_path, tiny_onnx, sh_coeffs=sh)).learned_lighting()  # no key recorded: SH only
    assert bare.num_lights == 0


def _moving_frames(n: int = 12) -> np.ndarray:
    """uint8 (n, 32, 32, 3): a textured picture drifting a pixel per frame, like aligned crops of one face."""
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, (32, 64, 3), dtype=np.uint8)
    return np.stack([texture[:, k:k + 32] for k in range(n)])


def test_frame_sequences_are_stored_as_deflated_differences_and_load_exactly(tmp_path, tiny_onnx):
    frames = _moving_frames()
    matte = np.zeros((12, 32, 32), np.uint8)
    matte[:, 8:24, 8:24] = 255
    path = _write(tmp_path, tiny_onnx, arrays={"idle_albedo": frames, "idle_matte": matte,
                                               "basis": np.ones((3, 4), np.float32)})
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["format_version"] == FORMAT_VERSION == 2
    assert manifest["arrays"]["idle_albedo"]["file"] == "idle_albedo.npz"
    assert manifest["arrays"]["idle_albedo"]["encoding"] == "frame-delta-deflate"
    assert manifest["arrays"]["basis"]["file"] == "basis.npy" and "encoding" not in manifest["arrays"]["basis"]
    # A still matte's differences are zeros after its first frame: it stores in almost nothing.
    assert (path / "idle_matte.npz").stat().st_size < matte.nbytes / 20
    bundle = load_bundle(path)
    np.testing.assert_array_equal(bundle.arrays["idle_albedo"], frames)
    np.testing.assert_array_equal(bundle.arrays["idle_matte"], matte)
    assert bundle.arrays["idle_albedo"].dtype == np.uint8


def test_frame_differences_wrap_exactly():
    from models.bundle import frame_deltas, undo_frame_deltas

    frames = np.array([[0, 255, 7], [255, 0, 7], [1, 254, 200]], np.uint8)[:, None, None, :]
    deltas = frame_deltas(frames)
    assert deltas.dtype == np.uint8 and deltas[1, 0, 0, 0] == 255 and deltas[1, 0, 0, 1] == 1
    np.testing.assert_array_equal(undo_frame_deltas(deltas), frames)
    still = np.repeat(frames[:1], 5, axis=0)
    assert not frame_deltas(still)[1:].any()  # a still picture stores as zeros after its first frame


def test_format_1_bundles_still_load(tmp_path, tiny_onnx):
    path = _write(tmp_path, tiny_onnx, arrays={"albedo": np.zeros((4, 8, 8, 3), np.float16)})
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["format_version"] = 1
    (path / "manifest.json").write_text(json.dumps(manifest))
    assert load_bundle(path).arrays["albedo"].shape == (4, 8, 8, 3)


def test_refuses_unreadable_or_unknown_array_encoding(tmp_path, tiny_onnx):
    import hashlib

    path = _write(tmp_path, tiny_onnx, arrays={"idle_albedo": _moving_frames(4)})
    (path / "idle_albedo.npz").write_bytes(b"PK\x03\x04 not really a zip")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["sha256"]["idle_albedo.npz"] = hashlib.sha256((path / "idle_albedo.npz").read_bytes()).hexdigest()
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="array 'idle_albedo' .*idle_albedo.npz.* cannot be read"):
        load_bundle(path)
    manifest["arrays"]["idle_albedo"]["encoding"] = "jpeg"
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="encoding 'jpeg'"):
        load_bundle(path)
