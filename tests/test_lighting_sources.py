"""Presets, directional lights, the Lighting dataclass and its JSON form, interpolation and portrait estimation."""

import json
import math

import numpy as np
import pytest

from models.lighting.estimate import dominant_light, estimate_lighting, estimate_sh
from models.lighting.files import load_lighting, resolve_lighting, save_lighting
from models.lighting.interpolate import LightingGlide, ease_in_out, interpolate, slerp_direction
from models.lighting.lighting import Lighting
from models.lighting.probes import face_probe, sphere_probe
from models.lighting.sh import axis_angle_matrix, constant_sh, project_directional
from models.lighting.sources import (
    DirectionalLight,
    direction_from_angles,
    directional_lighting,
    preset,
    preset_names,
)
from models.render import render, shading


def test_there_are_at_least_eight_presets_and_each_is_a_valid_lighting():
    names = preset_names()
    assert len(names) >= 8 and len(set(names)) == len(names)
    for name in names:
        lighting = preset(name)
        assert lighting.name == name and lighting.sh_coeffs.shape == (9, 3)
        assert np.all(lighting.sh_coeffs[0] > 0)  # every preset has some light


def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown lighting preset 'disco'.*soft_front.*low_key_dramatic"):
        preset("disco")


def test_directional_light_units():
    w = direction_from_angles(90, 0)
    np.testing.assert_allclose(w, [1, 0, 0], atol=1e-12)  # azimuth 90 = image right
    np.testing.assert_allclose(direction_from_angles(0, 90), [0, 1, 0], atol=1e-12)
    lighting = directional_lighting([DirectionalLight((2, 0, 0), (1.0, 0.5, 0.25), 0.8)], ambient_linear=(0.1,) * 3)
    np.testing.assert_allclose(lighting.light_dirs, [[1, 0, 0]])
    np.testing.assert_allclose(lighting.light_colours, [[0.8 * math.pi, 0.4 * math.pi, 0.2 * math.pi]], rtol=1e-6)
    expected = constant_sh([0.1] * 3) + project_directional([1, 0, 0], lighting.light_colours[0])
    np.testing.assert_allclose(lighting.sh_coeffs, expected, rtol=1e-6)
    # Facing the light: S_shad = intensity x colour + ambient, up to the 9-term error 2/32 at t = 1.
    s = shading(np.array([[1.0, 0.0, 0.0]], np.float32), lighting.sh_coeffs)[0]
    np.testing.assert_allclose(s, 0.1 + 0.8 * np.array([1.0, 0.5, 0.25]) * 34 / 32, rtol=1e-5)
    with pytest.raises(ValueError, match="direction"):
        directional_lighting([DirectionalLight((0, 0, 0))])
    with pytest.raises(ValueError, match="intensity"):
        directional_lighting([DirectionalLight((0, 0, 1), intensity=-1)])


def test_json_round_trip(tmp_path):
    lighting = preset("studio_key")
    path = tmp_path / "L.json"
    save_lighting(path, lighting)
    loaded = load_lighting(path)
    np.testing.assert_array_equal(loaded.sh_coeffs, lighting.sh_coeffs)
    np.testing.assert_array_equal(loaded.light_dirs, lighting.light_dirs)
    np.testing.assert_array_equal(loaded.light_colours, lighting.light_colours)
    assert loaded.name == "studio_key"
    assert resolve_lighting(str(path)).name == "studio_key" and resolve_lighting("top").name == "top"
    assert not list(tmp_path.glob(".*tmp"))  # the atomic write left no temp file


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda d: d.pop("sh_coeffs"), "sh_coeffs"),
        (lambda d: d.__setitem__("sh_coeffs", d["sh_coeffs"][:8]), "sh_coeffs"),
        (lambda d: d["sh_coeffs"][2].__setitem__(1, "x"), "sh_coeffs"),
        (lambda d: d.__setitem__("lights", {"a": 1}), "lights"),
        (lambda d: d["lights"][0].__setitem__("direction", [1, 2]), r"lights\[0\].direction"),
        (lambda d: d["lights"][0].__setitem__("direction", [0, 0, 0]), r"lights\[0\].direction"),
        (lambda d: d["lights"][0].__setitem__("colour", [1, -1, 1]), r"lights\[0\].colour"),
        (lambda d: d.__setitem__("name", 7), "name"),
        (lambda d: d.__setitem__("format", "something-else"), "format"),
    ],
)
def test_malformed_json_names_the_field(tmp_path, mutate, field):
    data = preset("studio_key").to_dict()
    mutate(data)
    path = tmp_path / "L.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=f"L.json: field '?{field}"):
        load_lighting(path)


def test_json_syntax_and_nan_errors(tmp_path):
    with pytest.raises(ValueError, match="not valid JSON"):
        Lighting.from_json("{nope", "L.json")
    with pytest.raises(ValueError, match="sh_coeffs"):
        Lighting.from_json(json.dumps({"sh_coeffs": [[float("nan")] * 3] * 9}), "L.json")
    with pytest.raises(FileNotFoundError):
        load_lighting(tmp_path / "absent.json")
    with pytest.raises(ValueError, match=r"neither a preset, an L.json file, an .hdr/.exr environment map nor a "
                                         r"photo \(.png/.jpg/.jpeg/.webp\); presets: soft_front"):
        resolve_lighting("disco")


def one_bright_patch_rgbe(height: int = 16, width: int = 32) -> np.ndarray:
    """RGBE pixels of a dim map with one bright patch (a window), so the map's lighting has a clear key."""
    rgbe = np.zeros((height, width, 4), np.uint8)
    rgbe[...] = (40, 40, 40, 128)
    rgbe[4:8, 18:24] = (250, 230, 200, 133)
    return rgbe


def test_an_environment_map_is_a_lighting_exposed_for_the_face(tmp_path, write_hdr):
    from models.lighting.exposure import peak_front_shading

    path = write_hdr(one_bright_patch_rgbe(), name="window.hdr")
    lighting = resolve_lighting(str(path))
    assert lighting.name == "window" and lighting.num_lights == 4
    assert peak_front_shading(lighting) == pytest.approx(1.0, rel=1e-4)  # the level the live h key gives a map
    brightest = int(np.argmax(lighting.light_colours.sum(1)))
    assert lighting.light_colours[brightest, 0] > lighting.light_colours[brightest, 2]  # the patch's warm colour
    (tmp_path / "broken.exr").write_bytes(b"not an exr at all")
    with pytest.raises(ValueError, match="broken.exr: cannot read EXR"):
        resolve_lighting(str(tmp_path / "broken.exr"))
    with pytest.raises(FileNotFoundError, match="absent.hdr"):
        resolve_lighting(str(tmp_path / "absent.hdr"))


def test_a_photo_is_the_lighting_of_the_place_it_shows(tmp_path):
    import imageio.v3 as iio

    from stream.commands import lights

    # A room lit warm from the upper left: a bright orange patch there, dim grey elsewhere.
    photo = np.full((60, 90, 3), 40, np.uint8)
    photo[5:25, 5:30] = (255, 190, 120)
    path = tmp_path / "room.png"
    iio.imwrite(path, photo)
    lighting = resolve_lighting(str(path))
    assert lighting.name == "room"
    # The same light `relitcam lights from-image` writes (and `--light background` gives over the picture).
    assert lights.main(["from-image", str(path), "-o", str(tmp_path / "L.json")]) == 0
    written = load_lighting(tmp_path / "L.json")
    np.testing.assert_allclose(lighting.sh_coeffs, written.sh_coeffs, rtol=1e-6)
    np.testing.assert_allclose(lighting.light_colours, written.light_colours, rtol=1e-6)
    assert lighting.sh_coeffs[0, 0] > lighting.sh_coeffs[0, 2]  # warm: more red than blue overall
    (tmp_path / "torn.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    with pytest.raises(ValueError, match="torn.jpg: cannot read photo"):
        resolve_lighting(str(tmp_path / "torn.jpg"))


def test_rotating_a_lighting_moves_its_lights():
    lighting = preset("left_side")
    r = axis_angle_matrix((0, 1, 0), math.pi)  # half a turn about up: left becomes right
    turned = lighting.rotated(r)
    np.testing.assert_allclose(turned.light_dirs, preset("right_side").light_dirs, atol=1e-6)
    np.testing.assert_allclose(turned.sh_coeffs, preset("right_side").sh_coeffs, atol=1e-5)


def test_interpolation_ends_eases_and_slerps():
    a, b = preset("left_side"), preset("right_side")
    assert interpolate(a, b, 0.0) is a and interpolate(a, b, 1.0) is b
    assert ease_in_out(0.5) == 0.5 and ease_in_out(0.1) < 0.1 and ease_in_out(2) == 1.0
    mid = interpolate(a, b, 0.5)
    np.testing.assert_allclose(mid.sh_coeffs, (a.sh_coeffs + b.sh_coeffs) / 2, rtol=1e-6, atol=1e-7)
    # The single side light swings over the top (great circle through both), keeping unit length and its colour.
    assert mid.num_lights == 1
    np.testing.assert_allclose(np.linalg.norm(mid.light_dirs[0]), 1.0, rtol=1e-6)
    assert abs(mid.light_dirs[0, 0]) < 1e-6
    np.testing.assert_allclose(mid.light_colours, a.light_colours, rtol=1e-6)
    quarter = slerp_direction(np.array([1.0, 0, 0]), np.array([0, 1.0, 0]), 0.5)
    np.testing.assert_allclose(quarter, [math.sqrt(0.5), math.sqrt(0.5), 0], atol=1e-12)
    opposite = slerp_direction(np.array([0, 0, 1.0]), np.array([0, 0, -1.0]), 0.5)
    assert abs(opposite[2]) < 1e-12 and np.linalg.norm(opposite) == pytest.approx(1.0)


def test_unpaired_lights_fade_and_glide_has_no_jumps():
    a, b = preset("flat"), preset("low_key_dramatic")  # 0 lights -> 1 light
    mid = interpolate(a, b, 0.5)
    np.testing.assert_allclose(mid.light_colours, 0.5 * b.light_colours, rtol=1e-6)
    glide = LightingGlide(a, duration_s=0.25)
    assert glide.at(10.0) is a
    glide.set_target(b, now_s=10.0)
    assert glide.at(10.0) is a and glide.at(10.25) is b
    np.testing.assert_allclose(glide.at(10.125).sh_coeffs, mid.sh_coeffs, rtol=1e-6)
    # Retargeting mid-glide starts from what is on screen, so the output is continuous.
    shown = glide.at(10.1)
    glide.set_target(preset("top"), now_s=10.1)
    np.testing.assert_allclose(glide.at(10.1).sh_coeffs, shown.sh_coeffs, rtol=1e-6)
    samples = [glide.at(10.1 + k * 0.25 / 50).sh_coeffs for k in range(51)]
    steps = [np.abs(samples[k + 1] - samples[k]).max() for k in range(50)]
    assert max(steps) < 0.05 * np.abs(samples[-1] - samples[0]).max()  # no pop: many small steps


def test_estimate_recovers_sh_from_a_rendered_sphere():
    lighting = preset("studio_key")
    probe = sphere_probe(96)
    image = render(probe.albedo_linear, probe.normals, 0.0, lighting)
    sh = estimate_sh(image, probe.normals, probe.mask, albedo_linear=probe.albedo_linear, ridge=0.0)
    # The front hemisphere determines the irradiance there exactly (no pixel is clamped by max(E, 0) here).
    relit = shading(probe.normals, sh) * probe.albedo_linear
    inside = probe.mask > 0
    np.testing.assert_allclose(relit[inside], image[inside], atol=2e-4)


def test_estimate_with_grey_albedo_guess_on_the_face_and_dominant_light():
    lighting = directional_lighting([DirectionalLight(direction_from_angles(-50, 30), (1, 1, 1), 0.9)],
                                    (0.1, 0.1, 0.1))
    probe = face_probe(96)
    image = render(np.full_like(probe.albedo_linear, 0.5), probe.normals, 0.0, lighting)
    estimated = estimate_lighting(image, probe.normals, probe.mask, albedo_linear=0.5, name="ref")
    inside = probe.mask > 0
    relit = 0.5 * shading(probe.normals, estimated.sh_coeffs)
    assert np.abs(relit[inside] - image[inside]).max() < 0.01
    assert estimated.num_lights == 1
    assert float(estimated.light_dirs[0] @ direction_from_angles(-50, 30)) > 0.97


def test_dominant_light_of_a_directional_sh_is_that_light():
    w = direction_from_angles(30, 20)
    dirs, colours = dominant_light(project_directional(w, [3.0, 2.0, 1.0]))
    np.testing.assert_allclose(dirs[0], w, atol=1e-6)
    np.testing.assert_allclose(colours[0], [3.0, 2.0, 1.0], rtol=1e-5)
    assert dominant_light(constant_sh([1, 1, 1]))[0].shape == (0, 3)


def test_estimate_rejects_bad_input():
    probe = sphere_probe(32)
    image = np.zeros_like(probe.albedo_linear)
    with pytest.raises(ValueError, match="does not match"):
        estimate_sh(image, probe.normals[:-1])
    with pytest.raises(ValueError, match="usable face pixels"):
        estimate_sh(image, probe.normals, mask=np.zeros(image.shape[:2]))
    bad = image.copy()
    bad[3, 3, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        estimate_sh(bad, probe.normals)
