"""Environment maps: direction mapping, projection, the blender EXR maps, .hdr/.exr reading and bad input."""

import math
from pathlib import Path

import numpy as np
import pytest

from models.lighting.envmap import (
    brightest_lights,
    check_environment_map,
    direction_to_equirect,
    environment_lighting,
    equirect_directions,
    equirect_solid_angles,
    photo_to_environment,
    project_environment,
)
from models.lighting.files import read_environment_map, read_exr, read_hdr
from models.lighting.sh import Y00_CONST, axis_angle_matrix, irradiance, rotate_sh

BLENDER_WORLDS = Path("/usr/share/blender/datafiles/studiolights/world")
BLENDER_EXRS = sorted(BLENDER_WORLDS.glob("*.exr")) if BLENDER_WORLDS.is_dir() else []
needs_blender = pytest.mark.skipif(not BLENDER_EXRS, reason=f"no blender-data EXR maps in {BLENDER_WORLDS}")

# Range of g(t) - max(t, 0), g the 3-band truncated clamped cosine: [-0.0396 at |t| = 8/15, 3/32 at t = 0].
TRUNCATION_ERROR_LOW, TRUNCATION_ERROR_HIGH = 3 / 32 - 4 / 15 + 15 / 32 * (8 / 15) ** 2, 3 / 32


def fibonacci_sphere(n: int) -> np.ndarray:
    i = np.arange(n) + 0.5
    z = 1 - 2 * i / n
    r = np.sqrt(1 - z * z)
    phi = i * math.pi * (3 - math.sqrt(5))
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=-1)


def brute_force_irradiance(radiance: np.ndarray, normals: np.ndarray, block: int) -> np.ndarray:
    """E(n) = sum_p L_p dw_p max(n . w_p, 0), summed over block x block groups of pixels (integrated radiance and
    mean direction per group)."""
    h, w = radiance.shape[:2]
    dw = equirect_solid_angles(h, w)
    l_dw = (radiance * dw[..., None]).reshape(h // block, block, w // block, block, 3).sum((1, 3)).reshape(-1, 3)
    dirs = (equirect_directions(h, w) * dw[..., None]).reshape(h // block, block, w // block, block, 3).sum((1, 3))
    dirs = dirs.reshape(-1, 3) / np.linalg.norm(dirs.reshape(-1, 3), axis=-1, keepdims=True)
    return np.maximum(normals @ dirs.T, 0.0) @ l_dw


def test_direction_mapping_landmarks():
    h, w = 4, 8
    d = equirect_directions(h, w)
    assert d[0, 0, 1] > 0.9 and d[-1, 0, 1] < -0.9  # row 0 is up
    big = equirect_directions(64, 128)
    np.testing.assert_allclose(big[32, 64], [0, 0, -1], atol=0.05)  # centre looks where the camera looks
    np.testing.assert_allclose(big[32, 96], [1, 0, 0], atol=0.05)  # 3/4 across is image right
    np.testing.assert_allclose(big[32, 0], [0, 0, 1], atol=0.05)  # the seam is behind the camera
    rows, cols = direction_to_equirect(big, 64, 128)
    np.testing.assert_allclose(rows, np.arange(64)[:, None] + 0 * cols, atol=1e-4)
    np.testing.assert_allclose(cols, np.arange(128)[None, :] + 0 * rows, atol=1e-4)


def test_solid_angles_sum_to_4pi():
    for h in (3, 16, 511):
        assert equirect_solid_angles(h, 2 * h).sum() * 2 * h == pytest.approx(4 * math.pi, rel=1e-12)


def test_constant_map_projects_to_constant_irradiance():
    c = np.array([0.5, 1.0, 3.0], np.float32)
    sh = project_environment(np.broadcast_to(c, (64, 128, 3)))
    np.testing.assert_allclose(sh[0] * Y00_CONST * 4 * math.pi, 4 * math.pi * c, rtol=1e-5)  # integral = 4 pi c
    np.testing.assert_allclose(sh[1:], 0, atol=2e-3 * c.max())
    e = irradiance(fibonacci_sphere(200).astype(np.float32), sh)
    np.testing.assert_allclose(e, np.broadcast_to(math.pi * c, e.shape), rtol=2e-3)


def test_rotation_equals_rotating_the_map_before_projection():
    def env(d):  # a smooth positive environment with a lobe toward `lobe`
        lobe = np.array([0.3, 0.8, -0.52])
        return (1.0 + 2.0 * np.maximum(d @ (lobe / np.linalg.norm(lobe)), 0) ** 3)[..., None] * [1.0, 0.7, 0.4]

    h, w = 128, 256
    d = equirect_directions(h, w).astype(np.float64)
    r = axis_angle_matrix((1.0, 2.0, -0.5), 1.1)
    original = project_environment(env(d).astype(np.float32))
    turned = project_environment(env(d @ r).astype(np.float32))  # L'(w) = L(R^T w); rows of d @ r are R^T w
    np.testing.assert_allclose(rotate_sh(original, r), turned, atol=2e-3 * np.abs(original).max())


def test_sphere_matches_brute_force_on_a_synthetic_sun_and_sky():
    h, w = 128, 256
    d = equirect_directions(h, w).astype(np.float64)
    sky = 0.3 + 0.2 * np.clip(d[..., 1:2], 0, 1) * np.array([0.6, 0.8, 1.0])
    sun = 40.0 * (d @ np.array([0.5, 0.6, 0.62]) / np.linalg.norm([0.5, 0.6, 0.62]) > 0.995)[..., None]
    radiance = (sky + sun).astype(np.float32)
    normals = fibonacci_sphere(300)
    exact = brute_force_irradiance(radiance, normals, 4)
    diff = irradiance(normals.astype(np.float32), project_environment(radiance)) - exact
    total = radiance[..., 0].astype(np.float64) * equirect_solid_angles(h, w)
    flux = total.sum()  # integrated radiance of the red channel
    assert TRUNCATION_ERROR_LOW * flux - 0.01 <= diff[:, 0].min() and diff[:, 0].max() <= TRUNCATION_ERROR_HIGH * flux
    assert np.abs(diff).mean() < 0.03 * exact.mean()


@needs_blender
def test_blender_maps_project_and_match_brute_force():
    normals = fibonacci_sphere(200)
    mean_errors = {}
    for path in BLENDER_EXRS:
        radiance = read_environment_map(path)
        h, w = radiance.shape[:2]
        assert (h, w) == (512, 1024) and radiance.min() >= 0
        ones_sh = project_environment(np.ones((h, w, 3), np.float32))  # the solid angle the projection integrates
        assert ones_sh[0, 0] / Y00_CONST == pytest.approx(4 * math.pi, rel=1e-6)
        sh = project_environment(radiance)
        flux = (radiance.astype(np.float64) * equirect_solid_angles(h, w)[..., None]).sum((0, 1))
        np.testing.assert_allclose(sh[0] / Y00_CONST, flux, rtol=1e-4)  # L00 / Y00 is the integrated radiance
        exact = brute_force_irradiance(radiance, normals, 8)
        diff = irradiance(normals.astype(np.float32), sh) - exact
        # The 9-term error at any normal is sum_p L_p dw_p (g - f)(n . w_p), so it is bounded by the range of
        # g - f times the flux, whatever the map (plus a little for the brute force's 8x8 grouping).
        assert np.all(diff >= TRUNCATION_ERROR_LOW * flux - 0.005 * flux), path.name
        assert np.all(diff <= TRUNCATION_ERROR_HIGH * flux + 0.005 * flux), path.name
        mean_errors[path.stem] = float(np.abs(diff).mean() / exact.mean())
    # Natural outdoor maps have no point-like sources: the sphere matches brute force to a few percent.
    for name in ("city", "courtyard", "forest", "sunset"):
        if name in mean_errors:
            assert mean_errors[name] < 0.05, (name, mean_errors[name])


def test_brightest_lights_find_a_bright_patch():
    h, w = 32, 64
    radiance = np.full((h, w, 3), 0.1, np.float32)
    radiance[4:6, 40:42] = [100.0, 50.0, 25.0]  # exactly one 2x2 cell
    dirs, colours = brightest_lights(radiance, count=2, grid_rows=16)
    assert len(dirs) == 2
    dw = equirect_solid_angles(h, w)
    patch_flux = (radiance[4:6, 40:42] * dw[4:6, :, None]).sum((0, 1))
    np.testing.assert_allclose(colours[0], patch_flux, rtol=0.01)  # patch dominates its cell
    expected = equirect_directions(h, w)[4:6, 40:42].reshape(-1, 3).mean(0)
    np.testing.assert_allclose(dirs[0], expected / np.linalg.norm(expected), atol=0.01)
    assert colours[1, 1] < colours[0, 1] / 50
    lighting = environment_lighting(radiance, num_lights=3, name="patch")
    assert lighting.num_lights == 3 and lighting.name == "patch"


def test_photo_mapping_keeps_left_right_and_up_down():
    photo = np.zeros((40, 60, 3), np.float32)
    photo[:, :30] = 1.0  # bright left half
    sh = project_environment(photo_to_environment(photo, height=32))
    assert sh[3, 0] < -0.1 * sh[0, 0]  # band-1 x coefficient: light from -x (image left)
    assert abs(sh[1, 0]) < 0.01 * sh[0, 0]  # no up/down bias
    photo = np.zeros((40, 60, 3), np.float32)
    photo[:20] = 1.0  # bright top half
    assert project_environment(photo_to_environment(photo, height=32))[1, 0] > 0.1  # light from +y
    grey = photo_to_environment(np.full((10, 20, 3), 0.25, np.float32), height=16)
    np.testing.assert_allclose(grey, 0.25, rtol=1e-5)


# -- files -------------------------------------------------------------------------------------------------------


def reference_decode(rgbe):
    v = rgbe[..., :3].astype(np.float64) * np.ldexp(1.0, rgbe[..., 3:4].astype(np.int32) - 136)
    return np.where(rgbe[..., 3:4] == 0, 0.0, v)


@pytest.mark.parametrize("run_length", [True, False])
def test_hdr_reader_decodes_rgbe_exactly(write_hdr, random_rgbe, run_length):
    rgbe = random_rgbe(16, 32)
    out = read_hdr(write_hdr(rgbe, run_length=run_length))
    np.testing.assert_array_equal(out, reference_decode(rgbe).astype(np.float32))


def test_hdr_reader_undoes_exposure(write_hdr, random_rgbe):
    rgbe = random_rgbe(8, 16)
    out = read_hdr(write_hdr(rgbe, header_lines=["EXPOSURE=2", "EXPOSURE=4"]))
    np.testing.assert_allclose(out, reference_decode(rgbe) / 8.0, rtol=1e-6)


def test_environment_map_errors_name_the_problem(write_hdr, random_rgbe, tmp_path):
    with pytest.raises(ValueError, match="2:1"):
        read_environment_map(write_hdr(random_rgbe(16, 16)))
    garbage = tmp_path / "junk.hdr"
    garbage.write_bytes(b"this is not an image")
    with pytest.raises(ValueError, match="not a Radiance"):
        read_environment_map(garbage)
    truncated = tmp_path / "cut.hdr"
    truncated.write_bytes(write_hdr(random_rgbe(16, 32)).read_bytes()[:300])
    with pytest.raises(ValueError, match="truncated"):
        read_environment_map(truncated)
    with pytest.raises(FileNotFoundError, match="missing.hdr"):
        read_environment_map(tmp_path / "missing.hdr")
    with pytest.raises(ValueError, match=r"\.hdr or \.exr"):
        read_environment_map(garbage.with_suffix(".png"))
    bad_exr = tmp_path / "bad.exr"
    bad_exr.write_bytes(b"\x76\x2f\x31\x01garbage")
    with pytest.raises(ValueError, match="cannot read EXR"):
        read_environment_map(bad_exr)


def test_nan_inf_and_negative_maps_are_rejected():
    m = np.ones((8, 16, 3), np.float32)
    m[2, 3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        check_environment_map(m)
    m[2, 3, 1] = np.inf
    with pytest.raises(ValueError, match="NaN or inf"):
        check_environment_map(m)
    m[2, 3, 1] = -0.5
    with pytest.raises(ValueError, match="negative"):
        check_environment_map(m)
    m[2, 3, 1] = -1e-5  # lossy-codec noise is clamped, not rejected
    assert check_environment_map(m).min() == 0.0


def test_exr_reader_round_trip(tmp_path):
    import OpenEXR

    rng = np.random.default_rng(4)
    pixels = rng.uniform(0, 5, (8, 16, 3)).astype(np.float32)
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    OpenEXR.File(header, {"RGB": pixels}).write(str(tmp_path / "a.exr"))
    np.testing.assert_array_equal(read_exr(tmp_path / "a.exr"), pixels)
    OpenEXR.File(header, {"Y": pixels[..., 0]}).write(str(tmp_path / "grey.exr"))
    with pytest.raises(ValueError, match="no R, G, B"):
        read_exr(tmp_path / "grey.exr")


def ffmpeg_hdr_bytes(radiance: np.ndarray) -> bytes:
    """A Radiance .hdr written by FFmpeg's own encoder (through PyAV): a writer that is not ours."""
    import av

    height, width = radiance.shape[:2]
    encoder = av.CodecContext.create("hdr", "w")
    encoder.width, encoder.height, encoder.pix_fmt, encoder.time_base = width, height, "gbrpf32le", 1
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(radiance, np.float32), format="gbrpf32le")
    frame.pts = 0
    return b"".join(bytes(p) for p in [*encoder.encode(frame), *encoder.encode(None)])


def ffmpeg_hdr_decode(data: bytes) -> np.ndarray:
    import av

    return av.CodecContext.create("hdr", "r").decode(av.packet.Packet(data))[0].to_ndarray()


@pytest.mark.parametrize("width", [6, 64, 300])  # under 8 px FFmpeg writes flat scanlines, else run-length ones
def test_hdr_reader_reads_files_ffmpeg_writes(tmp_path, width):
    rng = np.random.default_rng(width)
    height = width // 2 or 1
    radiance = np.exp(rng.uniform(np.log(1e-3), np.log(1e3), (height, width, 3))).astype(np.float32)
    radiance[: height // 3] = radiance[0, 0]  # long runs, as in a sky
    path = tmp_path / "ffmpeg.hdr"
    path.write_bytes(ffmpeg_hdr_bytes(radiance))
    ours = read_hdr(path)
    # Bit-identical to FFmpeg's own decoder, and within RGBE's shared-exponent precision of what was written.
    np.testing.assert_array_equal(ours, ffmpeg_hdr_decode(path.read_bytes()))
    # (Pixels span six decades: rows flipped or channels swapped would be off by orders of magnitude.)
    error = np.abs(ours - radiance).max(-1) / radiance.max(-1)
    assert error.max() < 1 / 128, error.max()


@needs_blender
def test_a_blender_world_as_ffmpeg_hdr_lights_like_the_exr(tmp_path):
    exr = BLENDER_WORLDS / "courtyard.exr"
    radiance = read_exr(exr)
    path = tmp_path / "courtyard.hdr"
    path.write_bytes(ffmpeg_hdr_bytes(radiance))
    from_hdr = environment_lighting(read_environment_map(path), name="hdr")
    from_exr = environment_lighting(read_environment_map(exr), name="exr")
    np.testing.assert_allclose(from_hdr.sh_coeffs, from_exr.sh_coeffs, rtol=0,
                               atol=5e-3 * np.abs(from_exr.sh_coeffs).max())
    np.testing.assert_allclose(from_hdr.light_dirs, from_exr.light_dirs, atol=1e-3)
