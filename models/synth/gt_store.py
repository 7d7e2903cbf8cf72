"""Ground-truth maps of a synth clip as lossless 10-bit videos, and the reader that turns them back into floats.

One lossless H.264 video (libx264, qp 0, yuv444p10le with our three channels written straight into the three planes,
so no colour conversion touches them) per map: frame-to-frame prediction makes a 60 s clip of slowly moving maps a
few hundred MB instead of the GBs that per-frame PNG/EXR folders take, and decoding returns the stored codes exactly.
10 bits, not 8: a Blinn-Phong lobe with exponent 32 turns 8-bit normal steps into visible specular banding.
Each map has a fixed encoding (ENCODINGS) of values v = code / 1023; `decode_map` inverts it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from models.colour import linear_to_srgb, srgb_to_linear

# Shading and specular are stored as sRGB-encoded value / RANGE: the sRGB curve spends codes on the dark end where
# relative error shows; values above RANGE clip (only specular peaks reach it).
SHADING_RANGE = 2.0

# map name -> how its 8-bit RGB frames decode (documented in manifest.json and docs/synth.md)
CODE_MAX = 1023
ENCODINGS: dict[str, str] = {
    "albedo": "linear albedo = srgb_to_linear(v)",
    "normals": "unit normal (camera space x right, y up, z to viewer) = v * 2 - 1",
    "shading": f"S_shad under the clip lighting = {SHADING_RANGE} * srgb_to_linear(v)",
    "specular": f"S_spec under the clip lighting = {SHADING_RANGE} * srgb_to_linear(v)",
    "masks": "channel 0: person matte, 1: mouth-interior mask, 2: specular weight C_spec; each = v",
}


def encode_map(name: str, value: np.ndarray) -> np.ndarray:
    """Float map (H, W, 3) -> uint16 codes 0..CODE_MAX (H, W, 3) in the encoding ENCODINGS[name]."""
    if name == "albedo":
        coded = linear_to_srgb(value)
    elif name == "normals":
        coded = np.clip(value * 0.5 + 0.5, 0.0, 1.0)
    elif name in ("shading", "specular"):
        coded = linear_to_srgb(value / SHADING_RANGE)
    elif name == "masks":
        coded = np.clip(value, 0.0, 1.0)
    else:
        raise ValueError(f"unknown ground-truth map {name!r}; known: {', '.join(ENCODINGS)}")
    return np.round(coded * CODE_MAX).astype(np.uint16)


def decode_map(name: str, coded: np.ndarray) -> np.ndarray:
    """uint16 codes (..., 3) in the encoding ENCODINGS[name] -> float32 map."""
    v = np.asarray(coded, dtype=np.float32) / CODE_MAX
    if name == "albedo":
        return srgb_to_linear(v)
    if name == "normals":
        n = v * 2.0 - 1.0
        return (n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-6)).astype(np.float32)
    if name in ("shading", "specular"):
        return (SHADING_RANGE * srgb_to_linear(v)).astype(np.float32)
    if name == "masks":
        return v
    raise ValueError(f"unknown ground-truth map {name!r}; known: {', '.join(ENCODINGS)}")


PIX_FMT = "yuv444p10le"


class LosslessVideoWriter:
    """Appends (H, W, 3) uint16 code frames to a lossless 10-bit H.264 .mkv, one channel per plane."""

    def __init__(self, path: Path, width: int, height: int, fps: int) -> None:
        self.path = Path(path)
        self.width, self.height = width, height
        self._container = av.open(str(self.path), "w")
        self._stream = self._container.add_stream("libx264", rate=fps)
        self._stream.width, self._stream.height, self._stream.pix_fmt = width, height, PIX_FMT
        self._stream.options = {"qp": "0", "preset": "ultrafast"}
        self._stream.thread_count = 1  # the caller already keeps both cores busy

    def write(self, codes: np.ndarray) -> None:
        if codes.shape != (self.height, self.width, 3) or codes.dtype != np.uint16:
            raise ValueError(f"expected uint16 ({self.height}, {self.width}, 3) codes, got {codes.dtype} {codes.shape}")
        frame = av.VideoFrame(self.width, self.height, PIX_FMT)
        for c, plane in enumerate(frame.planes):
            row_px = plane.line_size // 2  # planes may be padded past the width
            buf = np.zeros((self.height, row_px), np.uint16)
            buf[:, : self.width] = codes[..., c]
            plane.update(buf.tobytes())
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def close(self) -> None:
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()


def frame_codes(frame) -> np.ndarray:
    """One decoded frame of a ground-truth video -> its uint16 (H, W, 3) codes."""
    planes = [np.frombuffer(p, np.uint16).reshape(frame.height, -1)[:, : frame.width] for p in frame.planes]
    return np.stack(planes, axis=-1)


def read_lossless_video(path: Path, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Codes of frames [start, stop) of a lossless .mkv as uint16 (T, H, W, 3) (decoded from the start: no seeking)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ground-truth video not found: {path}")
    if start < 0 or (stop is not None and stop <= start):
        raise ValueError(f"frame range must satisfy 0 <= start < stop, got {start}, {stop}")
    frames = []
    with av.open(str(path)) as container:
        for i, f in enumerate(container.decode(video=0)):
            if stop is not None and i >= stop:
                break
            if i >= start:
                if f.format.name != PIX_FMT:
                    raise ValueError(f"{path} is {f.format.name}, not a relitcam {PIX_FMT} ground-truth video")
                frames.append(frame_codes(f))
    if not frames:
        raise ValueError(f"{path} has no frames in [{start}, {stop})")
    return np.stack(frames)


@dataclass(frozen=True)
class GroundTruthFrames:
    """Decoded ground truth of frames [start, stop) of a synth clip (float32, (T, H, W, ...))."""

    albedo: np.ndarray  # (T, H, W, 3) linear
    normals: np.ndarray  # (T, H, W, 3) unit, camera space
    shading: np.ndarray  # (T, H, W, 3) S_shad under the clip's own lighting
    specular: np.ndarray  # (T, H, W, 3) S_spec under the clip's own lighting
    matte: np.ndarray  # (T, H, W) person coverage 0..1
    mouth_mask: np.ndarray  # (T, H, W) mouth interior visible
    spec_weight: np.ndarray  # (T, H, W) C_spec

    def render(self) -> np.ndarray:
        """The clip-lighting image A * (S_shad + C_spec * S_spec), linear (T, H, W, 3)."""
        return self.albedo * (self.shading + self.spec_weight[..., None] * self.specular)


def load_ground_truth(out_dir: Path, start: int = 0, stop: int | None = None) -> GroundTruthFrames:
    """Decode frames [start, stop) of every ground-truth map of the synth clip in `out_dir` (see manifest.json).

    A 512 px frame is ~22 MB of float maps: load a 60 s clip in windows, not whole.
    """
    gt_dir = Path(out_dir) / "gt"
    maps = {name: decode_map(name, read_lossless_video(gt_dir / f"{name}.mkv", start, stop)) for name in ENCODINGS}
    masks = maps.pop("masks")
    return GroundTruthFrames(
        **maps, matte=masks[..., 0], mouth_mask=masks[..., 1], spec_weight=masks[..., 2]
    )
