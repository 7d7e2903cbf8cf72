"""`relitcam run` end to end with the test renderer, and its hotkey parsing."""

from __future__ import annotations

import json

import pytest

from models.audio import write_wav
from models.media import probe_video
from stream.cli import UserError
from stream.commands import run
from stream.hotkeys import key_message, split_keys
from test_stream_doubles import tone_after_silence

AVATAR = "test_stream_doubles:SphereHeadRenderer"


def test_run_offline_file_to_mp4_with_stats(tmp_path):
    wav = tmp_path / "voice.wav"
    write_wav(wav, tone_after_silence(0.4, 0.6), 16000)
    out, stats = tmp_path / "out.mp4", tmp_path / "stats.json"
    code = run.main(["--avatar", AVATAR, "--source", "file", "--audio", str(wav), "--offline", "--fps", "25",
                     "--canvas", "320x240", "--mp4", str(out), "--stats", str(stats), "--no-hotkeys",
                     "--background", "charcoal", "--shine", "0.5", "--light", "background"])
    assert code == 0
    info = probe_video(out)
    assert (info.width_px, info.height_px, info.fps, info.has_audio) == (320, 240, 25.0, True)
    report = json.loads(stats.read_text())
    assert report["frames_out"] == 25 and report["dropped_total"] == 0
    assert {"render", "compose", "features", "audio_to_frame"} <= set(report["stages_ms"])


def test_run_refuses_incomplete_or_wrong_arguments(tmp_path):
    with pytest.raises(UserError, match="--audio"):
        run.main(["--avatar", AVATAR, "--source", "file", "--no-hotkeys"])
    with pytest.raises(ValueError, match="module.path:factory"):
        run.main(["--avatar", "my_avatar_folder", "--source", "file", "--audio", "x.wav", "--no-hotkeys"])
    with pytest.raises(SystemExit):
        run.main(["--avatar", AVATAR, "--canvas", "big"])
    with pytest.raises(UserError, match="--shine must be a number from 0"):
        run.main(["--avatar", AVATAR, "--shine", "3", "--no-hotkeys"])


def test_hotkeys_map_to_control_messages():
    assert split_keys("1\x1b[Cq") == ["1", "\x1b[C", "q"]
    assert key_message("3") == {"type": "preset", "index": 3}
    assert key_message("\x1b[C")["dyaw_deg"] > 0 and key_message("\x1b[A")["dpitch_deg"] > 0
    assert key_message("+")["steps"] == 1 and key_message("-")["steps"] == -1
    assert [key_message(k)["type"] for k in "cbhlq"] == ["next_colour", "next_background", "next_hdr",
                                                          "background_light", "quit"]
    assert key_message("[") == {"type": "shine_step", "steps": -1} and key_message("]")["steps"] == 1
    assert key_message("0") is None and key_message("x") is None
