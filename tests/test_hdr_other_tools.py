"""The environment-map readers (models/lighting/files.py) read .hdr and .exr files written by OTHER tools.

The files in tests/data/hdr_other_tools/ were made once by its make.sh (OpenImageIO's oiiotool and maketx, ImageMagick,
pfstools) from source.pfm, and are committed: none of those tools is needed here.

* .hdr: our decode must be bit-identical to OpenImageIO's (its float32 decode of each file is committed beside it as
  X.hdr.oiio.exr, lossless float EXR). Both use the rgbe.c convention value = mantissa * 2^(exponent - 136), without
  Radiance's own +0.5 mantissa offset, so exact equality is expected, not just agreement within RGBE quantisation.
  Each must also be within RGBE's shared-exponent precision of source.pfm, so a mistake both readers made alike
  (rows flipped, channels swapped) would still fail.
* .exr: a tiled, MIP-mapped file must give its full-resolution level, and an RGBA file its R, G, B (not A or a
  shifted channel), each equal to source.pfm rounded to half floats, the precision the files store.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.lighting.files import read_environment_map, read_exr, read_hdr

DATA = Path(__file__).parent / "data" / "hdr_other_tools"
HDR_WRITERS = ["oiiotool", "imagemagick", "pfstools"]  # file DATA / f"{writer}.hdr"
WIDTH, HEIGHT = 64, 32


def read_pfm(path: Path) -> np.ndarray:
    """A colour PFM (H, W, 3) float32, top row first (PFM stores rows bottom-up; a negative scale = little-endian)."""
    magic, size, scale, pixels = path.read_bytes().split(b"\n", 3)
    assert magic == b"PF", f"{path}: not a colour PFM"
    width, height = map(int, size.split())
    a = np.frombuffer(pixels, "<f4" if float(scale) < 0 else ">f4", count=width * height * 3)
    return a.reshape(height, width, 3)[::-1].astype(np.float32)


@pytest.fixture(scope="module")
def source() -> np.ndarray:
    return read_pfm(DATA / "source.pfm")


def oiio_decode(hdr: Path) -> np.ndarray:
    import OpenEXR

    with OpenEXR.File(str(hdr) + ".oiio.exr") as f:
        pixels = np.asarray(f.channels()["RGB"].pixels)
    assert pixels.dtype == np.float32  # stored as float, so the reference is OpenImageIO's decode to the bit
    return pixels


def test_the_source_image_is_the_one_make_sh_describes(source):
    # Guards the checks below: a spot of ~50 in the upper right, a 1e-3..1 gradient under it, distinct channels.
    assert source.shape == (HEIGHT, WIDTH, 3)
    assert np.unravel_index(source[..., 0].argmax(), source.shape[:2]) == (8, 48)
    assert 49 < source.max() < 51 and 1e-4 < source.min() < 1e-3
    assert source[0].mean() > 100 * source[-1].mean()  # top row bright, bottom row dark
    assert np.abs(source[..., 0] - source[..., 1]).max() > 0.1  # channels differ


@pytest.mark.parametrize("writer", HDR_WRITERS)
def test_hdr_from_other_tool_decodes_exactly_as_openimageio_does(writer, source):
    path = DATA / f"{writer}.hdr"
    reference = oiio_decode(path)
    assert reference.shape == (HEIGHT, WIDTH, 3)
    ours = read_hdr(path)
    assert ours.dtype == np.float32
    np.testing.assert_array_equal(ours, reference, err_msg=f"{writer}.hdr: our decode differs from OpenImageIO's")
    np.testing.assert_array_equal(read_environment_map(path), reference)
    # And it is the image the tool was given: RGBE keeps 8 mantissa bits of the largest channel of each pixel.
    error = np.abs(ours - source).max(-1) / source.max(-1)
    assert error.max() < 1 / 128, f"{writer}.hdr: {error.max()} relative error against source.pfm"


def test_the_hdr_files_cover_header_variants_from_the_tools():
    # What the committed files exercise beyond our own writer's output (a change of tool version that drops these
    # should be noticed): ImageMagick's GAMMA/PRIMARIES lines, pfstools' comment line, run-length scanlines in all.
    headers = {w: (DATA / f"{w}.hdr").read_bytes().split(b"\n-Y 32 +X 64\n", 1)[0] for w in HDR_WRITERS}
    assert b"\nGAMMA=" in headers["imagemagick"] and b"\nPRIMARIES=" in headers["imagemagick"]
    assert b"\n# " in headers["pfstools"]
    for writer in HDR_WRITERS:
        data = (DATA / f"{writer}.hdr").read_bytes()
        assert data.startswith(b"#?RADIANCE\n") and b"\nFORMAT=32-bit_rle_rgbe\n" in data
        first_scanline = data[data.index(b"+X 64\n") + 6:][:4]
        assert first_scanline == bytes([2, 2, 0, WIDTH]), writer  # new-style run-length coded


def test_tiled_mipmapped_exr_reads_its_full_resolution_level(source):
    import OpenEXR

    path = DATA / "maketx_tiled_mip.exr"
    with OpenEXR.File(str(path)) as f:  # the file really is tiled and MIP-mapped
        tiles = f.header()["tiles"]
        assert f.header()["type"] == OpenEXR.tiledimage
        assert (tiles.xSize, tiles.ySize, tiles.mode) == (16, 16, OpenEXR.MIPMAP_LEVELS)
    expected = source.astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(read_exr(path), expected)
    np.testing.assert_array_equal(read_environment_map(path), expected)


def test_rgba_exr_reads_rgb_without_alpha(source):
    import OpenEXR

    path = DATA / "oiiotool_rgba.exr"
    with OpenEXR.File(str(path)) as f:  # the file really has an alpha channel, unlike any colour channel
        rgba = np.asarray(f.channels()["RGBA"].pixels).astype(np.float32)
    y, x = np.mgrid[:HEIGHT, :WIDTH]
    alpha = ((x + 2 * y + 1) / (WIDTH + 2 * HEIGHT)).astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(rgba[..., 3], alpha)
    expected = source.astype(np.float16).astype(np.float32)
    ours = read_exr(path)
    assert ours.shape == (HEIGHT, WIDTH, 3)
    np.testing.assert_array_equal(ours, expected)
    np.testing.assert_array_equal(read_environment_map(path), expected)
    np.testing.assert_allclose(ours, source, rtol=2**-11)  # half precision of what was written
