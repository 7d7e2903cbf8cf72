"""Switching avatars live (stream/avatar_choice.py through Controls), remembering the one used, and which avatar
`relitcam run` starts with."""

from __future__ import annotations

import asyncio
import json

import pytest

import models.enroll.enroll as enroll
from models.lighting.sources import preset
from stream.avatar_choice import DEFAULT_NAME, AvatarChoice, available_avatars
from stream.backgrounds import BackgroundSet
from stream.bundle_renderer import DEFAULT_BUNDLE
from stream.clock import MonotonicClock
from stream.commands.run import starting_avatar
from stream.controls import Controls
from stream.lighting_state import LightingState
from stream.settings import LiveSettings, load_settings, save_settings


class PipelineDouble:
    """What AvatarChoice needs of a pipeline: switch_renderer, here only kept."""

    def __init__(self) -> None:
        self.switched_to = []

    def switch_renderer(self, renderer) -> None:
        self.switched_to.append(renderer)


@pytest.fixture
def enrolled():
    """alice: an enrolled avatar (the shipped bundle under another name); broken: a bundle that does not load."""
    avatars = enroll.DEFAULT_AVATARS_DIR  # this test's own folder (conftest)
    avatars.mkdir(parents=True)
    (avatars / "alice").symlink_to(DEFAULT_BUNDLE, target_is_directory=True)
    (avatars / "broken").mkdir()
    (avatars / "broken" / "manifest.json").write_text("{not json")
    return avatars


def _controls(avatars) -> Controls:
    clock = MonotonicClock()
    return Controls(LightingState(preset("studio_key")), BackgroundSet(None, (64, 48)), clock, hdr_maps=[],
                    avatars=avatars)


def test_the_page_switches_to_an_enrolled_avatar_and_the_choice_is_in_the_state(enrolled):
    pipeline = PipelineDouble()
    controls = _controls(AvatarChoice(pipeline, DEFAULT_NAME))
    assert controls.state()["avatars"] == [DEFAULT_NAME, "alice", "broken"]
    reply = asyncio.run(controls.handle({"type": "avatar", "name": "alice"}))
    assert reply["type"] == "state" and reply["state"]["avatar"] == "alice"
    assert len(pipeline.switched_to) == 1 and pipeline.switched_to[0].fps > 0
    assert controls.changes == 1 and controls.live_settings().avatar == "alice"
    again = asyncio.run(controls.handle({"type": "avatar", "name": "alice"}))  # already on: nothing reloaded
    assert again["type"] == "state" and len(pipeline.switched_to) == 1


def test_unknown_or_broken_avatars_are_refused_and_the_stream_keeps_its_own(enrolled):
    pipeline = PipelineDouble()
    controls = _controls(AvatarChoice(pipeline, DEFAULT_NAME))
    unknown = asyncio.run(controls.handle({"type": "avatar", "name": "carol"}))
    assert unknown == {"type": "error", "error": "no avatar named 'carol'; avatars: default, alice, broken"}
    broken = asyncio.run(controls.handle({"type": "avatar", "name": "broken"}))
    assert broken["type"] == "error" and broken["error"].startswith("cannot load avatar 'broken': ")
    no_name = asyncio.run(controls.handle({"type": "avatar"}))
    assert no_name["type"] == "error" and "'name'" in no_name["error"]
    assert pipeline.switched_to == [] and controls.state()["avatar"] == DEFAULT_NAME
    fixed = asyncio.run(_controls(None).handle({"type": "avatar", "name": "alice"}))
    assert fixed["type"] == "error" and "cannot switch avatars" in fixed["error"]


def test_the_avatar_used_is_saved_and_a_run_starts_with_it_unless_told(enrolled, tmp_path, capsys):
    path = tmp_path / "live.json"
    save_settings(LiveSettings(avatar="alice"), path)
    assert json.loads(path.read_text())["avatar"] == "alice" and load_settings(path).avatar == "alice"
    available = available_avatars()
    assert starting_avatar(None, "alice", available) == (str(enrolled / "alice"), "alice")
    assert "starting with avatar 'alice'" in capsys.readouterr().out
    assert starting_avatar("alice", None, available) == ("alice", "alice")  # by name
    assert starting_avatar(str(DEFAULT_BUNDLE), "alice", available) == (str(DEFAULT_BUNDLE), DEFAULT_NAME)  # flag wins
    assert starting_avatar("test_stream_doubles:SphereHeadRenderer", None, available) == (
        "test_stream_doubles:SphereHeadRenderer", None)
    assert starting_avatar(None, "gone", available) == (None, DEFAULT_NAME)
    assert "'gone', is no longer enrolled; starting with the default" in capsys.readouterr().err
    path.write_text(json.dumps({"format": "relitcam-live-settings", "version": 1, "avatar": 3}))
    assert load_settings(path) is None  # said, and ignored
    assert "'avatar' must be a name or null" in capsys.readouterr().err
