"""The live look saved between runs: the file, what a run starts from, and what it saves."""

from __future__ import annotations

import asyncio

import pytest

from models.lighting.sources import preset, preset_names
from stream.backgrounds import BackgroundSet
from stream.compose import Compositor
from stream.controls import Controls
from stream.lighting_state import LightingState
from stream.settings import (DEFAULT_LIGHT, LiveSettings, load_settings, remember_look, save_settings, settings_path,
                             starting_look)
from test_pipeline import ManualClock

CANVAS = (160, 90)
PRESETS = preset_names()


def test_settings_round_trip_and_live_in_the_tests_own_folder(tmp_path):
    assert settings_path().parent != tmp_path.home() / ".config" / "relitcam"  # conftest points it elsewhere
    saved = LiveSettings(light="warm_sunset", yaw_deg=30.0, pitch_deg=-10.0, intensity=1.5, tint_rgb=(1.0, 0.8, 0.6),
                         shine=0.5, background="office_blue", avatar_height=0.7)
    path = tmp_path / "cfg" / "live.json"
    save_settings(saved, path)
    assert load_settings(path) == saved
    assert not (tmp_path / "cfg" / "live.json.tmp").exists()


@pytest.mark.parametrize("text, error", [
    ("{broken", "Expecting"),
    ('{"format": "something-else"}', "not a relitcam-live-settings file"),
    ('{"format": "relitcam-live-settings", "version": 9}', "version 9"),
    ('{"format": "relitcam-live-settings", "version": 1, "shine": 7}', "'shine' must be in [0, 2], got 7"),
    ('{"format": "relitcam-live-settings", "version": 1, "light": 3}', "'light' must be a name"),
    ('{"format": "relitcam-live-settings", "version": 1, "tint_rgb": [1, 2]}', "'tint_rgb' must be 3 numbers"),
])
def test_a_damaged_settings_file_is_reported_and_ignored(tmp_path, capsys, text, error):
    path = tmp_path / "live.json"
    path.write_text(text)
    assert load_settings(path) is None
    err = capsys.readouterr().err
    assert error in err and f"ignoring saved settings {path}" in err
    assert load_settings(tmp_path / "missing.json") is None  # no file: nothing to say
    assert capsys.readouterr().err == ""


def test_flags_win_then_saved_settings_then_defaults():
    saved = LiveSettings(light="top", yaw_deg=20.0, intensity=2.0, shine=0.3, background="charcoal",
                         avatar_height=0.6)
    look = starting_look(saved, None, None, None, PRESETS)
    assert (look.light, look.yaw_deg, look.intensity, look.shine, look.background, look.avatar_height) == (
        "top", 20.0, 2.0, 0.3, "charcoal", 0.6)
    flags = starting_look(saved, "left_side", 1.5, 1.0, PRESETS)
    assert (flags.light, flags.yaw_deg, flags.intensity, flags.shine, flags.avatar_height) == (
        "left_side", 0.0, 1.0, 1.5, 1.0)  # the saved light's direction goes with the saved light only
    gone = starting_look(LiveSettings(light="disco", yaw_deg=40.0), None, None, None, PRESETS)
    assert (gone.light, gone.yaw_deg) == (DEFAULT_LIGHT, 0.0)
    assert starting_look(None, None, None, None, PRESETS).light == DEFAULT_LIGHT


def test_controls_report_the_look_on_screen_and_count_changes():
    clock = ManualClock(1.0)
    comp = Compositor(CANVAS, (100, 100))
    controls = Controls(LightingState(preset("soft_front")), BackgroundSet(["charcoal", "warm_wall"], CANVAS), clock,
                        [], comp)
    asyncio.run(controls.handle({"type": "state"}))
    assert controls.changes == 0
    for message in ({"type": "preset", "name": "top"}, {"type": "shine", "value": 0.25},
                    {"type": "avatar_height", "value": 0.5}, {"type": "next_background"},
                    {"type": "rotate", "dyaw_deg": 15, "dpitch_deg": 0}):
        asyncio.run(controls.handle(message))
    asyncio.run(controls.handle({"type": "shine", "value": "bad"}))  # refused: not a change
    assert controls.changes == 5
    assert controls.live_settings() == LiveSettings(light="top", yaw_deg=15.0, shine=0.25, background="warm_wall",
                                                    avatar_height=0.5)
    asyncio.run(controls.handle({"type": "background_light", "on": True}))
    assert controls.live_settings().light == "background"


def test_the_look_is_saved_only_when_changed_live_and_a_bad_folder_is_not_fatal(tmp_path, capsys):
    clock = ManualClock(1.0)
    controls = Controls(LightingState(preset("soft_front")), BackgroundSet(["charcoal"], CANVAS), clock, [])
    path = tmp_path / "live.json"
    assert not remember_look(controls, path) and not path.exists()  # nothing touched: nothing written
    asyncio.run(controls.handle({"type": "preset", "name": "top"}))
    assert not remember_look(controls, None)  # --no-settings
    assert remember_look(controls, path) and load_settings(path).light == "top"
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert not remember_look(controls, blocker / "live.json")
    assert "could not save the look" in capsys.readouterr().err
