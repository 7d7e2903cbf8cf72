"""`relitcam run` end to end with the test renderer, and its hotkey parsing."""

from __future__ import annotations

import json

import numpy as np
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


def test_run_starts_from_the_saved_look_unless_a_flag_names_it(tmp_path):
    from models.media import iter_video_frames
    from stream.settings import LiveSettings, save_settings, settings_path

    wav = tmp_path / "voice.wav"
    write_wav(wav, tone_after_silence(0.2, 0.2), 16000)
    save_settings(LiveSettings(light="warm_sunset", background="charcoal", avatar_height=0.5), settings_path())

    def first_frame(*flags):
        out = tmp_path / "out.mp4"
        assert run.main(["--avatar", AVATAR, "--source", "file", "--audio", str(wav), "--offline", "--fps", "25",
                         "--canvas", "320x240", "--mp4", str(out), "--no-hotkeys", *flags]) == 0
        return next(iter_video_frames(out)).image.astype(int)

    saved = first_frame()
    assert abs(saved[5, 5] - 31).max() <= 6  # charcoal (sRGB 0.12) where a full-height avatar would not leave room
    assert abs(saved[100, 160] - 31).max() <= 6  # the avatar is half the canvas high: the middle is still wall
    flagged = first_frame("--avatar-height", "1", "--background", "office_blue")
    assert abs(flagged[5, 5] - 31).max() > 40  # the flags win (charcoal is not offered)
    offered = first_frame("--background", "office_blue", "--background", "charcoal")
    assert abs(offered[5, 5] - 31).max() <= 6  # the saved background is picked from those offered
    assert abs(flagged[100, 160] - flagged[5, 5]).max() > 40  # full height: the head is where the wall was
    fresh = first_frame("--no-settings")
    assert abs(fresh[5, 5] - saved[5, 5]).max() > 20  # built-in look: studio_grey, not the saved charcoal


def test_run_refuses_incomplete_or_wrong_arguments(tmp_path):
    with pytest.raises(UserError, match="--audio"):
        run.main(["--avatar", AVATAR, "--source", "file", "--no-hotkeys"])
    with pytest.raises(ValueError, match=r"enrolled: none yet .*module.path:factory"):
        run.main(["--avatar", "my_avatar_folder", "--source", "file", "--audio", "x.wav", "--no-hotkeys"])
    with pytest.raises(SystemExit):
        run.main(["--avatar", AVATAR, "--canvas", "big"])
    with pytest.raises(UserError, match="--shine must be a number from 0"):
        run.main(["--avatar", AVATAR, "--shine", "3", "--no-hotkeys"])


def test_an_hdr_map_lights_the_run_from_the_start_and_a_bad_one_is_refused_before_it(tmp_path, write_hdr):
    from models.media import iter_video_frames
    from stream.commands import lights
    from test_lighting_sources import one_bright_patch_rgbe

    wav = tmp_path / "voice.wav"
    write_wav(wav, tone_after_silence(0.2, 0.2), 16000)
    window = write_hdr(one_bright_patch_rgbe(), name="window.hdr")

    def first_frame(*flags):
        out = tmp_path / "out.mp4"
        assert run.main(["--avatar", AVATAR, "--source", "file", "--audio", str(wav), "--offline", "--fps", "25",
                         "--canvas", "320x240", "--mp4", str(out), "--no-hotkeys", "--no-settings", *flags]) == 0
        return next(iter_video_frames(out)).image.astype(int)

    from_map = first_frame("--light", str(window), "--hdr", str(window))
    assert lights.main(["from-hdr", str(window), "-o", str(tmp_path / "L.json")]) == 0
    np.testing.assert_array_equal(from_map, first_frame("--light", str(tmp_path / "L.json")))  # the two-step route
    assert np.abs(from_map - first_frame()).max() > 20  # not the default light

    (tmp_path / "broken.hdr").write_bytes(b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 4 +X")
    for bad, why in (("absent.hdr", "not found"), ("broken.hdr", "resolution"), ("notes.txt", "must be .hdr or .exr")):
        with pytest.raises(UserError, match=f"--hdr .*{bad}.*{why}"):
            run.main(["--avatar", AVATAR, "--source", "file", "--audio", str(wav), "--offline", "--mp4",
                      str(tmp_path / "never.mp4"), "--no-hotkeys", "--hdr", str(tmp_path / bad)])
    assert not (tmp_path / "never.mp4").exists()


def test_a_port_in_use_is_said_and_an_earlier_recording_kept(tmp_path):
    import socket

    wav = tmp_path / "voice.wav"
    write_wav(wav, tone_after_silence(0.2, 0.2), 16000)
    earlier = tmp_path / "call.mp4"
    earlier.write_bytes(b"yesterday's call")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(UserError, match=f"127.0.0.1:{port}: the port is in use .*--port picks another"):
            run.main(["--avatar", AVATAR, "--source", "file", "--audio", str(wav), "--web", "--port", str(port),
                      "--mp4", str(earlier), "--no-hotkeys", "--no-settings"])
    assert earlier.read_bytes() == b"yesterday's call"


def test_hotkeys_map_to_control_messages():
    assert split_keys("1\x1b[Cq") == ["1", "\x1b[C", "q"]
    assert key_message("3") == {"type": "preset", "index": 3}
    assert key_message("\x1b[C")["dyaw_deg"] > 0 and key_message("\x1b[A")["dpitch_deg"] > 0
    assert key_message("+")["steps"] == 1 and key_message("-")["steps"] == -1
    assert [key_message(k)["type"] for k in "cbhlq"] == ["next_colour", "next_background", "next_hdr",
                                                          "background_light", "quit"]
    assert key_message("[") == {"type": "shine_step", "steps": -1} and key_message("]")["steps"] == 1
    assert key_message("0") is None and key_message("x") is None


def test_an_enrolled_avatar_is_found_by_its_name(tmp_path):
    import models.enroll.enroll as enroll
    from stream.bundle_renderer import DEFAULT_BUNDLE

    avatars = enroll.DEFAULT_AVATARS_DIR  # this test's own folder (conftest)
    avatars.mkdir(parents=True)
    (avatars / "alice").symlink_to(DEFAULT_BUNDLE, target_is_directory=True)
    (avatars / "bob").mkdir()  # enrollment still running: no manifest yet
    assert list(enroll.enrolled_avatars()) == ["alice"]
    renderer = run.load_avatar("alice")
    assert renderer.fps == run.load_avatar(str(DEFAULT_BUNDLE)).fps
    with pytest.raises(ValueError, match=r"'carol' is neither an enrolled avatar's name \(enrolled: alice\)"):
        run.load_avatar("carol")
