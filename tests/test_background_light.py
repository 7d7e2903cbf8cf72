"""Lighting from the background picture, exposure for the face, and the live controls that use them."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from models.colour import LUMA_WEIGHTS_LINEAR
from models.lighting.exposure import TARGET_PEAK_SHADING, exposed_for_face, peak_front_shading
from models.lighting.lighting import Lighting
from models.lighting.sources import preset
from stream.backgrounds import Background, BackgroundSet, background_lighting, load_background
from stream.controls import Controls
from stream.lighting_state import LightingState
from test_pipeline import ManualClock

CANVAS = (160, 90)
LUMA = np.asarray(LUMA_WEIGHTS_LINEAR)


def test_exposure_for_the_face_sets_the_peak_and_keeps_the_look():
    dim = preset("studio_key").scaled(0.03)
    exposed = exposed_for_face(dim)
    assert peak_front_shading(exposed) == pytest.approx(TARGET_PEAK_SHADING, rel=1e-5)
    ratio = exposed.sh_coeffs / dim.sh_coeffs
    np.testing.assert_allclose(ratio[np.isfinite(ratio)], ratio[0, 0], rtol=1e-5)  # one scale for everything
    np.testing.assert_allclose(exposed.light_colours / dim.light_colours, ratio[0, 0], rtol=1e-5)
    with pytest.raises(ValueError, match="does not light the front"):
        exposed_for_face(Lighting(np.zeros((9, 3))))


def test_saturation_keeps_luminance_and_scales_colour():
    warm = preset("warm_sunset")
    for amount in (0.0, 0.5, 1.0):
        lit = warm.saturated(amount)
        np.testing.assert_allclose(lit.sh_coeffs @ LUMA, warm.sh_coeffs @ LUMA, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(lit.sh_coeffs - (lit.sh_coeffs @ LUMA)[:, None],
                                   amount * (warm.sh_coeffs - (warm.sh_coeffs @ LUMA)[:, None]), atol=1e-5)
    grey = warm.saturated(0.0).sh_coeffs
    np.testing.assert_allclose(grey[:, 0], grey[:, 2], atol=1e-6)
    with pytest.raises(ValueError, match="saturation"):
        warm.saturated(-1.0)


def test_background_lighting_follows_the_pictures_colour_and_layout():
    warm = background_lighting(load_background("warm_wall", CANVAS))
    cool = background_lighting(load_background("office_blue", CANVAS))
    assert warm.name == "background:warm_wall"
    assert warm.sh_coeffs[0, 0] > 1.2 * warm.sh_coeffs[0, 2]  # a warm picture gives warm light
    assert cool.sh_coeffs[0, 2] > 1.2 * cool.sh_coeffs[0, 0]
    # studio_grey is lighter at the top: the light comes from above (band-1 y coefficient, +y up).
    grey = background_lighting(load_background("studio_grey", CANVAS))
    assert grey.sh_coeffs[1].mean() > 0.1 * grey.sh_coeffs[0].mean()
    for lit in (warm, cool, grey):
        assert peak_front_shading(lit) == pytest.approx(TARGET_PEAK_SHADING, rel=1e-4)
    black = Background("black", np.zeros((CANVAS[1], CANVAS[0], 3), np.uint8))
    with pytest.raises(ValueError, match="'black' cannot light the avatar"):
        background_lighting(black)


def _controls(clock):
    state = LightingState(preset("soft_front"), now_s=clock.now_s())
    return Controls(state, BackgroundSet(["warm_wall", "office_blue"], CANVAS), clock, [])


def test_light_from_background_follows_it_until_a_preset_is_picked():
    clock = ManualClock(1.0)
    controls = _controls(clock)
    handle = lambda m: asyncio.run(controls.handle(m))  # noqa: E731
    assert controls.state()["light_from_background"] is False
    reply = handle({"type": "background_light", "on": True})
    assert reply["state"]["light_from_background"] is True and reply["state"]["base"] == "background:warm_wall"
    warm_target = controls.lighting.target.sh_coeffs.copy()
    handle({"type": "next_background"})
    assert controls.lighting.base.name == "background:office_blue"
    assert controls.lighting.target.sh_coeffs[0, 2] > warm_target[0, 2]  # bluer than under the warm wall
    handle({"type": "background", "name": "warm_wall"})
    np.testing.assert_allclose(controls.lighting.target.sh_coeffs, warm_target)  # the same light, from the cache
    handle({"type": "preset", "name": "top"})
    assert controls.state()["light_from_background"] is False
    handle({"type": "next_background"})
    assert controls.lighting.base.name == "top"  # no longer following
    handle({"type": "background_light"})  # no "on": toggles, as the l key does
    assert controls.state()["light_from_background"] is True
    assert controls.lighting.base.name == "background:office_blue"
    handle({"type": "background_light"})
    assert controls.state()["light_from_background"] is False


def test_background_light_rejects_a_bad_switch_and_keeps_the_state():
    clock = ManualClock(1.0)
    controls = _controls(clock)
    before = controls.state()
    reply = asyncio.run(controls.handle({"type": "background_light", "on": "yes"}))
    assert reply["type"] == "error" and "must be true or false" in reply["error"]
    assert controls.state() == before


def test_a_background_that_cannot_light_says_so_and_stops_following(tmp_path):
    from PIL import Image

    black = tmp_path / "black.png"
    Image.fromarray(np.zeros((9, 16, 3), np.uint8)).save(black)
    clock = ManualClock(1.0)
    controls = Controls(LightingState(preset("soft_front")), BackgroundSet(["warm_wall", str(black)], CANVAS), clock, [])
    asyncio.run(controls.handle({"type": "background_light", "on": True}))
    reply = asyncio.run(controls.handle({"type": "next_background"}))
    assert reply["type"] == "error" and "no longer follows the background" in reply["error"]
    assert controls.state()["background"] == "black" and controls.state()["light_from_background"] is False
    assert controls.lighting.base.name == "background:warm_wall"  # the last light stays


def test_hdr_maps_are_exposed_for_the_face(write_hdr, random_rgbe):
    clock = ManualClock(1.0)
    controls = _controls(clock)
    rgbe = random_rgbe(16, 32)
    rgbe[..., 3] = 110  # radiance ~1e-6: a map this dark would render the avatar black as read
    asyncio.run(controls.load_hdr(write_hdr(rgbe)))
    assert peak_front_shading(controls.lighting.base) == pytest.approx(TARGET_PEAK_SHADING, rel=1e-4)


def _png(rgb, size=(40, 30)) -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(np.full((size[1], size[0], 3), rgb, np.uint8)).save(out, format="PNG")
    return out.getvalue()


def test_an_uploaded_picture_is_offered_selected_and_lights_when_asked(monkeypatch):
    import stream.controls as controls_module

    clock = ManualClock(1.0)
    controls = _controls(clock)
    asyncio.run(controls.handle({"type": "background_light", "on": True}))
    reply = asyncio.run(controls.load_background_bytes(_png((60, 90, 200)), "lake.jpg.png"))
    assert reply["state"]["background"] == "lake.jpg" and reply["state"]["base"] == "background:lake.jpg"
    assert controls.lighting.target.sh_coeffs[0, 2] > controls.lighting.target.sh_coeffs[0, 0]  # blue light
    again = asyncio.run(controls.load_background_bytes(_png((200, 90, 60)), "lake.jpg.png"))
    assert again["state"]["backgrounds"][-2:] == ["lake.jpg", "lake.jpg-2"]  # nothing replaced
    before = controls.state()
    monkeypatch.setattr(controls_module, "MAX_BACKGROUND_PIXELS", 100)
    reply = asyncio.run(controls.load_background_bytes(_png((1, 2, 3)), "huge.png"))
    assert reply["type"] == "error" and "40x30 pixels is more than the 100 allowed" in reply["error"]
    assert asyncio.run(controls.load_background_bytes(b"\x89PNG garbage", "x.png"))["type"] == "error"
    assert controls.state() == before


def test_uploads_past_the_limit_let_the_oldest_go_and_its_light_with_it():
    from stream.backgrounds import MAX_ADDED

    clock = ManualClock(1.0)
    controls = _controls(clock)
    asyncio.run(controls.handle({"type": "background_light", "on": True}))
    for i in range(MAX_ADDED + 2):
        reply = asyncio.run(controls.load_background_bytes(_png((20 * i, 90, 200 - 15 * i)), f"pic{i}.png"))
        assert reply["state"]["background"] == f"pic{i}" and reply["state"]["base"] == f"background:pic{i}"
    names = controls.state()["backgrounds"]
    assert names == ["warm_wall", "office_blue"] + [f"pic{i}" for i in range(2, MAX_ADDED + 2)]
    assert len(controls.backgrounds._cache) <= MAX_ADDED + 2  # the pictures let go are not held
    assert set(controls.backgrounds._lightings) <= set(controls.backgrounds.specs)  # nor their lights
    assert len(controls.backgrounds._lightings) <= MAX_ADDED + 1
