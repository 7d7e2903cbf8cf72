"""`relitcam lights` and `relitcam relight` end to end, through the CLI dispatcher."""

import json

import imageio.v3 as iio
import numpy as np
import pytest

from models.colour import linear_to_srgb, srgb_to_linear
from models.lighting.envmap import environment_lighting
from models.lighting.exposure import peak_front_shading
from models.lighting.files import load_lighting, read_hdr
from models.lighting.probes import face_probe, sphere_probe
from models.lighting.sources import preset, preset_names
from models.render import render
from stream.cli import main


def write_probe_pngs(tmp_path, probe, with_alpha=True):
    albedo = np.round(linear_to_srgb(probe.albedo_linear) * 255).astype(np.uint8)
    normals = np.round((probe.normals * 0.5 + 0.5) * 255).astype(np.uint8)
    if with_alpha:
        normals = np.concatenate([normals, (probe.mask[..., None] * 255).astype(np.uint8)], axis=-1)
    iio.imwrite(tmp_path / "A.png", albedo)
    iio.imwrite(tmp_path / "N.png", normals)
    return tmp_path / "A.png", tmp_path / "N.png"


def test_lights_list_prints_every_preset(capsys):
    assert main(["lights", "list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in preset_names())


def test_from_hdr_writes_the_projected_lighting(tmp_path, write_hdr, random_rgbe, capsys):
    path = write_hdr(random_rgbe(16, 32), name="room.hdr")
    out = tmp_path / "L.json"
    assert main(["lights", "from-hdr", str(path), "-o", str(out), "--lights", "3", "--as-recorded"]) == 0
    lighting = load_lighting(out)
    expected = environment_lighting(read_hdr(path), 3)
    np.testing.assert_allclose(lighting.sh_coeffs, expected.sh_coeffs, rtol=1e-6)
    assert lighting.num_lights == 3 and lighting.name == "room"
    assert main(["lights", "from-hdr", str(path), "-o", str(out)]) == 0  # by default exposed for the face
    exposed = load_lighting(out)
    gain = peak_front_shading(expected)
    np.testing.assert_allclose(exposed.sh_coeffs * gain, expected.sh_coeffs, rtol=1e-4, atol=1e-6)
    assert peak_front_shading(exposed) == pytest.approx(1.0, rel=1e-4)


def test_from_hdr_errors_are_one_line(tmp_path, write_hdr, random_rgbe, capsys):
    square = write_hdr(random_rgbe(16, 16), name="square.hdr")
    assert main(["lights", "from-hdr", str(square), "-o", str(tmp_path / "L.json")]) == 2
    err = capsys.readouterr().err
    assert "2:1" in err and err.count("\n") == 1 and not (tmp_path / "L.json").exists()


def test_from_image_left_bright_photo_lights_from_the_left(tmp_path):
    photo = np.full((30, 40, 3), 40, np.uint8)
    photo[:, :20] = 255
    iio.imwrite(tmp_path / "bg.png", photo)
    assert main(["lights", "from-image", str(tmp_path / "bg.png"), "-o", str(tmp_path / "L.json")]) == 0
    lighting = load_lighting(tmp_path / "L.json")
    assert lighting.sh_coeffs[3, 0] < 0  # band-1 x: brighter toward -x
    assert lighting.light_dirs[0, 0] < 0


def test_from_portrait_recovers_the_lighting(tmp_path):
    probe = face_probe(64)
    lighting = preset("left_side")
    image = render(np.full_like(probe.albedo_linear, 0.5), probe.normals, 0.0, lighting)
    iio.imwrite(tmp_path / "face.png", np.round(linear_to_srgb(image) * 255).astype(np.uint8))
    _, normal_png = write_probe_pngs(tmp_path, probe)
    out = tmp_path / "L.json"
    assert main(["lights", "from-portrait", str(tmp_path / "face.png"), "--normal", str(normal_png),
                 "-o", str(out)]) == 0
    estimated = load_lighting(out)
    assert estimated.light_dirs[0, 0] < -0.9  # the side light is found on the left


def test_relight_flat_preset_reproduces_the_albedo(tmp_path):
    probe = sphere_probe(32)
    albedo_png, normal_png = write_probe_pngs(tmp_path, probe, with_alpha=False)
    out = tmp_path / "out.png"
    assert main(["relight", "--albedo", str(albedo_png), "--normal", str(normal_png), "--light", "flat",
                 "--spec", "0", "-o", str(out)]) == 0
    result = iio.imread(out)
    inside = probe.mask > 0
    assert result.shape == (32, 32, 4)  # background pixels (zero normals) are transparent
    assert np.abs(result[..., :3][inside].astype(int) - iio.imread(albedo_png)[inside].astype(int)).max() <= 1
    assert np.all(result[..., 3][inside] == 255) and np.all(result[..., 3][~inside] == 0)


def test_relight_with_json_and_background(tmp_path):
    probe = sphere_probe(32)
    albedo_png, normal_png = write_probe_pngs(tmp_path, probe)
    light = tmp_path / "L.json"
    light.write_text(preset("top").to_json())
    bg = np.full((32, 32, 3), 128, np.uint8)
    iio.imwrite(tmp_path / "bg.png", bg)
    out = tmp_path / "out.png"
    assert main(["relight", "--albedo", str(albedo_png), "--normal", str(normal_png), "--light", str(light),
                 "--background", str(tmp_path / "bg.png"), "-o", str(out)]) == 0
    result = iio.imread(out)
    assert result.shape == (32, 32, 3)
    assert np.all(result[0, 0] == 128)  # corner: background
    assert result[4, 16].mean() > result[28, 16].mean()  # lit from the top


def test_relight_bad_light_and_malformed_json(tmp_path, capsys):
    albedo_png, normal_png = write_probe_pngs(tmp_path, sphere_probe(16))
    args = ["relight", "--albedo", str(albedo_png), "--normal", str(normal_png), "-o", str(tmp_path / "o.png")]
    assert main(args + ["--light", "disco"]) == 2
    err = capsys.readouterr().err
    assert "'disco'" in err and "soft_front" in err and "low_key_dramatic" in err
    bad = tmp_path / "L.json"
    data = preset("top").to_dict()
    data["sh_coeffs"] = data["sh_coeffs"][:5]
    bad.write_text(json.dumps(data))
    assert main(args + ["--light", str(bad)]) == 2
    assert "field 'sh_coeffs'" in capsys.readouterr().err
    assert main(["relight", "--albedo", str(albedo_png), "-o", str(tmp_path / "o.png")]) == 2
    assert "missing --normal, --light" in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists()


def test_contact_sheet(tmp_path):
    out = tmp_path / "sheet.png"
    assert main(["relight", "--contact-sheet", "--size", "32", "-o", str(out)]) == 0
    sheet = iio.imread(out)
    rows = -(-len(preset_names()) // 5)
    assert sheet.shape == (rows * (32 + 18), 5 * 64, 3)
    # The first tile (soft_front sphere) is lit: its centre is much brighter than the sheet background.
    assert sheet[16, 16].mean() > 100 and sheet[0, 0].mean() < 60
    assert srgb_to_linear(sheet[16, 16] / 255.0).min() > 0.2


@pytest.mark.parametrize("argv", [["lights"], ["lights", "from-hdr"], ["relight"]])
def test_usage_errors_exit_2(argv):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2


def test_from_image_gives_the_live_background_light_or_the_picture_level(tmp_path):
    from models.lighting.exposure import TARGET_PEAK_SHADING, peak_front_shading
    from stream.backgrounds import Background, background_lighting

    rng = np.random.default_rng(5)
    photo = np.clip(rng.normal([150, 110, 70], 30, (36, 64, 3)), 0, 255).astype(np.uint8)
    iio.imwrite(tmp_path / "room.png", photo)
    assert main(["lights", "from-image", str(tmp_path / "room.png"), "-o", str(tmp_path / "L.json")]) == 0
    cli = load_lighting(tmp_path / "L.json")
    live = background_lighting(Background("room", photo))
    np.testing.assert_allclose(cli.sh_coeffs, live.sh_coeffs, rtol=1e-4, atol=1e-6)
    assert peak_front_shading(cli) == pytest.approx(TARGET_PEAK_SHADING, rel=1e-4)
    grey = np.full((30, 40, 3), 128, np.uint8)  # linear 0.216
    iio.imwrite(tmp_path / "grey.png", grey)
    assert main(["lights", "from-image", str(tmp_path / "grey.png"), "--as-recorded", "-o", str(tmp_path / "G.json")]) == 0
    assert peak_front_shading(load_lighting(tmp_path / "G.json")) == pytest.approx(0.216, abs=0.002)
