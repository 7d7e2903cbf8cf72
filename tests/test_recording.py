"""Recording on the page for enrollment (stream/recordings.py, POST /recording) and running enroll from the page
(stream/enroll_jobs.py, /enroll): refused recordings leave nothing behind, kept ones say the enroll command; the job
runner follows stages, reports the error line, stops with SIGINT; once with the real CLI."""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from skimage import data

import stream.recordings as recordings
from models.media import write_mp4
from stream.enroll_jobs import EnrollJobs
from stream.webrtc import WebRtcServer

MEDIARECORDER_WEBM = Path(__file__).parent / "data" / "mediarecorder" / "canvas10_uneven.webm"


def _talk(seconds: float, rate_hz: int = 16000, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * rate_hz)) / rate_hz
    return (amplitude * np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 3 * t) > 0)).astype(np.float32)


def _video(path: Path, seconds: float, picture: np.ndarray, audio: np.ndarray | None, fps: float = 5.0) -> Path:
    write_mp4(path, [picture] * int(seconds * fps), fps, audio=audio)
    return path


@pytest.fixture(scope="module")
def face_picture() -> np.ndarray:
    return np.ascontiguousarray(data.astronaut()[:288, 112:400])  # the astronaut's head and shoulders


@pytest.fixture(scope="module")
def good_recording(tmp_path_factory, face_picture) -> Path:
    return _video(tmp_path_factory.mktemp("rec") / "good.mp4", 21.0, face_picture, _talk(21.0))


def test_a_recording_enrollment_would_take_is_kept_with_its_enroll_command(good_recording, tmp_path):
    got = recordings.check_recording(good_recording, "me")
    assert got.warnings == [] and got.seconds == pytest.approx(21.0, abs=0.3) and got.size_px == (288, 288)
    assert got.reply()["command"] == f"relitcam enroll {good_recording} --name me"


@pytest.mark.parametrize("case, message", [
    ("short", r"is 3\.0 s long; enrollment needs at least 20 s"),
    ("no_sound", "has no sound"),
    ("silent", r"is silent \(loudest second -inf dBFS\)"),
    ("corrupt", "cannot be read"),
])
def test_recordings_enrollment_would_refuse_are_refused_with_the_reason(case, message, tmp_path, face_picture):
    path = tmp_path / f"{case}.mp4"
    if case == "short":
        path = MEDIARECORDER_WEBM
    elif case == "no_sound":
        _video(path, 21.0, face_picture, None)
    elif case == "silent":
        _video(path, 21.0, face_picture, np.zeros(21 * 16000, np.float32))
    else:
        path.write_bytes(MEDIARECORDER_WEBM.read_bytes()[:300])
    with pytest.raises(ValueError, match=message):
        recordings.check_recording(path, "me")


def test_no_face_or_a_second_person_is_a_warning_not_a_refusal(tmp_path, face_picture):
    wall = _video(tmp_path / "wall.mp4", 21.0, np.full((96, 96, 3), 90, np.uint8), _talk(21.0))
    assert "no face found in the first 10 s" in recordings.check_recording(wall, "me").warnings[0]

    class TwoFaces:
        def detect(self, image):
            return [object(), object()]

    two = recordings.check_recording(wall, "me", detector=TwoFaces())
    assert two.warnings == ["more than one face in the first seconds: enrollment needs you alone in the picture"]


def test_names_and_content_types_are_checked():
    with pytest.raises(ValueError, match="plain folder name"):
        recordings.recording_path(Path("/tmp"), "../evil", "video/webm")
    with pytest.raises(ValueError, match="must be video/webm or video/mp4"):
        recordings.recording_path(Path("/tmp"), "me", "text/plain")
    path = recordings.recording_path(Path("/tmp"), "me", "video/webm;codecs=vp8,opus", now=0.0)
    assert path.parent == Path("/tmp") and path.name.startswith("me-19") and path.suffix == ".webm"


# ----------------------------------------------------------------------------------------------- through HTTP


async def _post(server, path, body: bytes, content_type: str):
    async with aiohttp.ClientSession() as http:
        async with http.post(f"http://127.0.0.1:{server.port}{path}", data=body,
                             headers={"Content-Type": content_type}) as r:
            return r.status, await r.json()


def _serve(fn, **server_options):
    async def go():
        server = WebRtcServer(None, None, port=0, **server_options)
        await server.start()
        try:
            return await fn(server)
        finally:
            await server.close()

    return asyncio.run(go())


def test_the_page_uploads_a_recording_and_a_refused_one_leaves_nothing(good_recording):
    folder = recordings.RECORDINGS_DIR  # this test's own (conftest)

    async def go(server):
        short = await _post(server, "/recording?name=me", MEDIARECORDER_WEBM.read_bytes(), "video/webm")
        assert short[0] == 400 and "is 3.0 s long" in short[1]["error"]
        assert list(folder.iterdir()) == []  # the partial file is gone too
        text = await _post(server, "/recording?name=me", b"hello", "text/plain")
        assert text[0] == 400 and "video/webm" in text[1]["error"]
        status, reply = await _post(server, "/recording?name=me", good_recording.read_bytes(), "video/mp4")
        assert status == 200, reply
        kept = Path(reply["file"])
        assert kept.parent == folder and kept.read_bytes() == good_recording.read_bytes()
        assert reply["command"] == f"relitcam enroll {kept} --name me" and reply["warnings"] == []
        assert [p.name for p in folder.iterdir()] == [kept.name]

    _serve(go)


# ------------------------------------------------------------------------------------------------ enroll jobs

STAND_IN_ENROLL = r"""
import signal, sys, time
args = sys.argv[1:]
video, name = args[0], args[args.index("--name") + 1]
print(f"enrolling {name!r} from {video}")
if name == "fails":
    print("relitcam enroll: error: 'x.webm' shows more than one person", flush=True)
    sys.exit(2)
for k, stage in enumerate(["prepare", "expression", "decompose"], 1):
    print(f"[{k}/3] {stage}: stage {k}", flush=True)
    if name == "slow":
        try:
            time.sleep(60)
        except KeyboardInterrupt:
            print("relitcam enroll: interrupted; run the same command with --resume to continue", flush=True)
            sys.exit(130)
print("avatar bundle: somewhere")
"""


@pytest.fixture
def jobs(tmp_path, good_recording):
    folder = tmp_path / "recs"
    folder.mkdir()
    shutil.copy(good_recording, folder / "me-1.mp4")
    return EnrollJobs(folder, command=[sys.executable, "-c", STAND_IN_ENROLL])


def test_an_enroll_job_follows_its_stages_to_the_end(jobs):
    async def go():
        await jobs.start("me-1.mp4", "me")
        return await jobs.wait()

    status = asyncio.run(go())
    assert status.state == "done" and status.stage == "3/3 decompose: stage 3" and status.error is None
    assert status.last_line == "avatar bundle: somewhere" and status.ended_s >= status.started_s


def test_an_enroll_job_that_fails_reports_its_error_line(jobs):
    async def go():
        await jobs.start(str(jobs.recordings_dir / "me-1.mp4"), "fails")  # a full path inside the folder is fine
        return await jobs.wait()

    status = asyncio.run(go())
    assert status.state == "failed" and status.error == "'x.webm' shows more than one person"


def test_an_enroll_job_stops_on_request_and_one_runs_at_a_time(jobs, tmp_path):
    async def go():
        await jobs.start("me-1.mp4", "slow")
        while jobs.status.stage is None:
            await asyncio.sleep(0.05)
        with pytest.raises(ValueError, match="already running"):
            await jobs.start("me-1.mp4", "other")
        await jobs.stop()
        return await jobs.wait()

    status = asyncio.run(go())
    assert status.state == "stopped" and status.stage == "1/3 prepare: stage 1"
    assert "--resume" in status.last_line


def test_only_recordings_made_on_the_page_can_be_enrolled_from_it(jobs, tmp_path):
    elsewhere = tmp_path / "elsewhere.mp4"
    elsewhere.write_bytes(b"x")

    async def go():
        with pytest.raises(ValueError, match="only recordings made on this page"):
            await jobs.start(str(elsewhere), "me")
        with pytest.raises(ValueError, match="no recording 'nope.mp4'"):
            await jobs.start("nope.mp4", "me")
        with pytest.raises(ValueError, match="plain folder name"):
            await jobs.start("me-1.mp4", "../me")
        with pytest.raises(ValueError, match="no enrollment is running"):
            await jobs.stop()

    asyncio.run(go())


def test_the_page_runs_the_real_enroll_and_shows_why_it_stopped(tmp_path, monkeypatch):
    # The real CLI on a 3 s recording: it refuses before any training, and the page gets its error line.
    monkeypatch.setenv("RELITCAM_ENROLL_DIR", str(tmp_path / "work"))  # the child's folders, not the user's
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    folder = tmp_path / "recs"
    folder.mkdir()
    shutil.copy(MEDIARECORDER_WEBM, folder / "me-2.webm")

    async def go(server):
        bad = await _post(server, "/enroll", b'["me-2.webm"]', "application/json")
        assert bad == (400, {"type": "error", "error": "the body must be a JSON object"})
        idle = await _post(server, "/enroll/stop", b"", "application/json")
        assert idle == (409, {"type": "error", "error": "no enrollment is running"})
        status, reply = await _post(server, "/enroll", b'{"file": "me-2.webm", "name": "me"}', "application/json")
        assert status == 200 and reply["state"] == "running"
        for _ in range(600):
            async with aiohttp.ClientSession() as http:
                async with http.get(f"http://127.0.0.1:{server.port}/enroll") as r:
                    reply = await r.json()
            if reply["state"] != "running":
                break
            await asyncio.sleep(0.1)
        return reply

    reply = _serve(go, recordings_dir=folder)
    assert reply["state"] == "failed", reply
    assert reply["error"].endswith("is 3.0 s long; enrollment needs at least 20 s of usable video (min_usable_s)")


def test_a_page_started_enrollment_leaves_the_live_stream_two_cores():
    from stream.enroll_jobs import training_threads

    assert [training_threads(n) for n in (1, 2, 3, 16)] == [1, 1, 1, 14]


def test_the_enroll_child_gets_its_thread_count_and_unbuffered_lines(jobs, monkeypatch):
    monkeypatch.setattr("stream.enroll_jobs.training_threads", lambda: 3)
    jobs.command = [sys.executable, "-c", "import os, sys; print('[1/1] env:', os.environ['OMP_NUM_THREADS'], "
                                          "os.environ['PYTHONUNBUFFERED'])"]

    async def go():
        await jobs.start("me-1.mp4", "me")
        return await jobs.wait()

    status = asyncio.run(go())
    assert status.state == "done" and status.stage == "1/1 env: 3 1"
