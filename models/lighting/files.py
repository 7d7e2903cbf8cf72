"""File I/O for lighting: Radiance .hdr and OpenEXR environment maps, L.json lightings, 8/16-bit images, and atomic
writes (temp file in the same folder, then rename, so a reader never sees half a file).

The lighting maths modules never touch files; everything that does is here.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import numpy as np

from models.colour import srgb_to_linear
from models.lighting.envmap import (PHOTO_LIGHT_SATURATION, check_environment_map, environment_lighting,
                                   photo_lighting)
from models.lighting.exposure import exposed_for_face
from models.lighting.lighting import Lighting
from models.lighting.sources import preset, preset_names

HDR_SUFFIXES = (".hdr", ".pic", ".rgbe")
EXR_SUFFIXES = (".exr",)
PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")  # ordinary pictures whose place can light a face

# ---------------------------------------------------------------------------------------------------------------
# Atomic writes
# ---------------------------------------------------------------------------------------------------------------


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` via a temp file in the same folder and os.replace (atomic on POSIX and Windows)."""
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(f"output folder does not exist: {folder}")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _require_file(path: str | os.PathLike, what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{what} not found: {p}")
    if not p.is_file():
        raise ValueError(f"{what} is not a regular file: {p}")
    return p


# ---------------------------------------------------------------------------------------------------------------
# Radiance RGBE (.hdr)
# ---------------------------------------------------------------------------------------------------------------

_RESOLUTION = re.compile(rb"^([-+])Y (\d+) \+X (\d+)$")


def read_hdr(path: str | os.PathLike) -> np.ndarray:
    """Linear RGB float32 (H, W, 3) from a Radiance RGBE file (flat or new-style run-length scanlines).

    Pixel value = mantissa x 2^(exponent - 136) (Ward's rgbe.c), divided by any EXPOSURE the header records so the
    result is the radiance before exposure was applied.
    """
    p = _require_file(path, "HDR file")
    data = p.read_bytes()
    if not (data.startswith(b"#?RADIANCE") or data.startswith(b"#?RGBE")):
        raise ValueError(f"{p}: not a Radiance .hdr file (missing '#?RADIANCE' signature)")
    pos, exposure, fmt = 0, 1.0, None
    while True:  # header lines up to the first empty one
        end = data.find(b"\n", pos)
        if end < 0:
            raise ValueError(f"{p}: truncated .hdr header (no blank line before the resolution line)")
        line = data[pos:end].strip()
        pos = end + 1
        if not line:
            break
        if line.startswith(b"FORMAT="):
            fmt = line[7:].decode("ascii", "replace")
        elif line.startswith(b"EXPOSURE="):
            try:
                exposure *= float(line[9:])
            except ValueError:
                raise ValueError(f"{p}: bad EXPOSURE line {line!r}") from None
    if fmt not in (None, "32-bit_rle_rgbe"):
        raise ValueError(f"{p}: unsupported .hdr pixel format {fmt!r} (only 32-bit_rle_rgbe)")
    end = data.find(b"\n", pos)
    match = _RESOLUTION.match(data[pos : end if end >= 0 else len(data)].strip())
    if not match:
        raise ValueError(f"{p}: unsupported .hdr resolution line (expected '-Y H +X W')")
    flip, height, width = match.group(1) == b"+", int(match.group(2)), int(match.group(3))
    if height < 1 or width < 1:
        raise ValueError(f"{p}: empty .hdr image ({width}x{height})")
    if not (exposure > 0 and np.isfinite(exposure)):
        raise ValueError(f"{p}: EXPOSURE must be positive, got {exposure}")
    rgbe = _decode_rgbe_pixels(data, end + 1, height, width, p)
    if flip:
        rgbe = rgbe[::-1]
    scale = np.ldexp(1.0, rgbe[..., 3].astype(np.int32) - 136)
    rgb = rgbe[..., :3].astype(np.float64) * scale[..., None]
    rgb[rgbe[..., 3] == 0] = 0.0
    return (rgb / exposure).astype(np.float32)


def _decode_rgbe_pixels(data: bytes, pos: int, height: int, width: int, source: Path) -> np.ndarray:
    out = np.empty((height, width, 4), dtype=np.uint8)
    buf = np.frombuffer(data, dtype=np.uint8)
    for row in range(height):
        head = data[pos : pos + 4]
        run_length = 8 <= width < 32768 and len(head) == 4 and head[0] == 2 and head[1] == 2 and head[2] < 128
        if run_length and (head[2] << 8 | head[3]) != width:
            raise ValueError(f"{source}: .hdr scanline {row} length does not match the image width")
        if not run_length:  # flat 4-byte pixels
            chunk = buf[pos : pos + 4 * width]
            if chunk.size < 4 * width:
                raise ValueError(f"{source}: truncated .hdr pixel data at scanline {row} of {height}")
            out[row] = chunk.reshape(width, 4)
            pos += 4 * width
            continue
        pos += 4
        for channel in range(4):  # each channel run-length coded separately
            x = 0
            while x < width:
                if pos >= len(data):
                    raise ValueError(f"{source}: truncated .hdr pixel data at scanline {row} of {height}")
                count = data[pos]
                is_run = count > 128  # a run: one value repeated count - 128 times; else count literal values
                count = count - 128 if is_run else count
                if count == 0 or x + count > width:
                    raise ValueError(f"{source}: corrupt .hdr run at scanline {row}")
                if pos + 1 + (1 if is_run else count) > len(data):
                    raise ValueError(f"{source}: truncated .hdr pixel data at scanline {row} of {height}")
                if is_run:
                    out[row, x : x + count, channel] = data[pos + 1]
                    pos += 2
                else:
                    out[row, x : x + count, channel] = buf[pos + 1 : pos + 1 + count]
                    pos += 1 + count
                x += count
    return out


# ---------------------------------------------------------------------------------------------------------------
# OpenEXR
# ---------------------------------------------------------------------------------------------------------------


def read_exr(path: str | os.PathLike) -> np.ndarray:
    """Linear RGB float32 (H, W, 3) from an OpenEXR file (RGB/RGBA or separate R, G, B channels)."""
    import OpenEXR

    p = _require_file(path, "EXR file")
    try:
        with OpenEXR.File(str(p)) as f:
            channels = f.channels()
            if "RGB" in channels or "RGBA" in channels:
                pixels = np.asarray(channels.get("RGB", channels.get("RGBA")).pixels)[..., :3]
            elif all(c in channels for c in "RGB"):
                pixels = np.stack([np.asarray(channels[c].pixels) for c in "RGB"], axis=-1)
            else:
                raise ValueError(f"{p}: EXR has no R, G, B channels (has {', '.join(sorted(channels))})")
    except ValueError:
        raise
    except Exception as e:  # OpenEXR raises plain RuntimeError/OSError on undecodable files
        raise ValueError(f"{p}: cannot read EXR file ({e})") from None
    return pixels.astype(np.float32)


def read_environment_map(path: str | os.PathLike) -> np.ndarray:
    """A validated equirectangular linear radiance map (H, 2H, 3) float32 from a .hdr or .exr file."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in HDR_SUFFIXES:
        radiance = read_hdr(p)
    elif suffix in EXR_SUFFIXES:
        radiance = read_exr(p)
    else:
        raise ValueError(f"{p}: environment maps must be .hdr or .exr, got {suffix or 'no extension'!r}")
    return check_environment_map(radiance, str(p))


# ---------------------------------------------------------------------------------------------------------------
# Ordinary images (PNG/JPEG) as float arrays
# ---------------------------------------------------------------------------------------------------------------


def read_image(path: str | os.PathLike, what: str = "image") -> tuple[np.ndarray, np.ndarray | None]:
    """(rgb (H, W, 3), alpha (H, W) or None), float32 in [0, 1] AS ENCODED in the file (no sRGB decoding here),
    upright as a viewer shows it (EXIF orientation applied)."""
    from models.media import imread_upright

    p = _require_file(path, what)
    try:
        a = imread_upright(p)
    except Exception as e:
        raise ValueError(f"{p}: cannot read {what} ({e})") from None
    if a.dtype == np.uint8 or a.dtype == np.uint16:
        a = a.astype(np.float32) / float(np.iinfo(a.dtype).max)
    elif np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float32)
    else:
        raise ValueError(f"{p}: unsupported {what} pixel type {a.dtype}")
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"{p}: {what} must be grey, grey+alpha, RGB or RGBA, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{p}: {what} contains NaN or inf")
    colour = a[..., :3] if a.shape[2] >= 3 else np.repeat(a[..., :1], 3, axis=2)
    alpha = a[..., -1] if a.shape[2] in (2, 4) else None
    return np.ascontiguousarray(colour), alpha


def decode_normals(encoded_rgb: np.ndarray) -> np.ndarray:
    """PNG-encoded normals (rgb = n*0.5+0.5) -> unit normals (H, W, 3). Pixels that decode shorter than 0.5, such as
    the grey (0.5, 0.5, 0.5) that encodes a zero vector, become zero vectors (background). Normal maps are data, so
    no sRGB decoding."""
    n = np.asarray(encoded_rgb, dtype=np.float32) * 2.0 - 1.0
    length = np.linalg.norm(n, axis=-1, keepdims=True)
    return np.where(length > 0.5, n / np.maximum(length, 1e-6), 0.0).astype(np.float32)


def read_normal_map(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(unit normals (H, W, 3), coverage mask (H, W) in [0, 1]) from a normal-map image; the mask is the file's
    alpha where it has one, times 1 where the normal is valid."""
    encoded, alpha = read_image(path, "normal map")
    normals = decode_normals(encoded)
    valid = (np.linalg.norm(normals, axis=-1) > 0.5).astype(np.float32)
    return normals, valid if alpha is None else valid * alpha


def write_png(path: str | os.PathLike, encoded: np.ndarray) -> None:
    """Write float values in [0, 1] (H, W, 3 or 4), already display-encoded, as an 8-bit PNG, atomically."""
    import io

    import imageio.v3 as iio

    a = np.asarray(encoded)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise ValueError(f"PNG output must be (H, W, 3) or (H, W, 4), got shape {a.shape}")
    u8 = np.round(np.clip(a, 0.0, 1.0) * 255.0).astype(np.uint8)
    out = io.BytesIO()
    iio.imwrite(out, u8, extension=".png")
    atomic_write_bytes(path, out.getvalue())


# ---------------------------------------------------------------------------------------------------------------
# L.json
# ---------------------------------------------------------------------------------------------------------------


def save_lighting(path: str | os.PathLike, lighting: Lighting) -> None:
    atomic_write_bytes(path, lighting.to_json().encode("utf-8"))


def load_lighting(path: str | os.PathLike) -> Lighting:
    p = _require_file(path, "lighting file")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{p}: lighting file is not UTF-8 text") from None
    return Lighting.from_json(text, source=str(p))


def environment_map_lighting(path: str | os.PathLike, name: str | None = None, num_lights: int = 4,
                             expose: bool = True) -> Lighting:
    """An .hdr/.exr environment map as a face's lighting: SH plus its `num_lights` brightest lights, exposed for the
    face as a camera would (`expose`; maps straight from their files differ in level by orders of magnitude)."""
    lighting = environment_lighting(read_environment_map(path), num_lights, name or Path(path).stem)
    return exposed_for_face(lighting) if expose else lighting


def photo_file_lighting(path: str | os.PathLike, num_lights: int = 4, saturation: float = PHOTO_LIGHT_SATURATION,
                        expose: bool = True) -> Lighting:
    """The lighting of the place an ordinary photo (sRGB) shows, exposed for the face (`expose`): what `relitcam run
    --light background` gives over that picture, and `relitcam lights from-image` writes."""
    photo, _ = read_image(path, "photo")
    return photo_lighting(srgb_to_linear(photo), num_lights, Path(path).stem, saturation, expose)


def resolve_lighting(spec: str) -> Lighting:
    """A preset name, an L.json file, an .hdr/.exr environment map or a photo -> Lighting (what `--light` accepts)."""
    suffix = Path(spec).suffix.lower()
    if suffix in HDR_SUFFIXES + EXR_SUFFIXES:
        return environment_map_lighting(spec)
    if suffix in PHOTO_SUFFIXES:
        return photo_file_lighting(spec)
    if spec.lower().endswith(".json") or os.sep in spec or Path(spec).is_file():
        return load_lighting(spec)
    if spec not in preset_names():
        raise ValueError(f"--light {spec!r} is neither a preset, an L.json file, an .hdr/.exr environment map nor a "
                         f"photo ({'/'.join(PHOTO_SUFFIXES)}); presets: {', '.join(preset_names())}")
    return preset(spec)
