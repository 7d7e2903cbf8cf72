"""scripts/soak.py on the sphere-head double: a short soak writes its report and passes; a renderer that hoards
memory fails it."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_stream_doubles import SphereHeadRenderer

_SPEC = importlib.util.spec_from_file_location("soak", Path(__file__).resolve().parents[1] / "scripts" / "soak.py")
soak = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(soak)

# 3 s of media at 30 fps, the start reading after 1 s.
MB_2 = 2 * 1024 * 1024
ARGS = ["--minutes", "0.05", "--warmup-s", "1", "--sample-s", "0.05", "--canvas", "320x240"]


class HoardingHead(SphereHeadRenderer):
    """Keeps 2 MB (written, so resident) of every frame it renders: 120 MB after the warm-up."""

    def __init__(self) -> None:
        super().__init__()
        self.hoard: list[np.ndarray] = []

    def render(self, mel_window, lighting, frame_index):
        self.hoard.append(np.ones(MB_2 // 8))
        return super().render(mel_window, lighting, frame_index)



def test_short_soak_reports_flat_memory(tmp_path):
    assert soak.main(["--avatar", "test_stream_doubles:SphereHeadRenderer", "--out", str(tmp_path), *ARGS]) == 0
    r = json.loads((tmp_path / "SOAK.json").read_text())
    assert r["frames"] == r["frames_expected"] == r["mp4_frames_written"] == 90
    assert r["mp4_mb"] > 0 and r["pipeline"]["dropped_total"] == 0
    assert r["start_at_media_s"] == 1.0
    assert 0 < r["start_rss_mb"] <= r["peak_rss_mb"] and r["end_rss_mb"] <= r["peak_rss_mb"]
    assert r["passed"] and r["end_over_start"] <= 1.05
    assert r["machine"]["cpu_count"] >= 1
    assert len(r["samples"]["rss_mb"]) >= 3 and r["samples"]["media_s"] == sorted(r["samples"]["media_s"])
    assert (tmp_path / "SOAK.png").stat().st_size > 10_000


def test_a_renderer_that_hoards_memory_fails_the_soak(tmp_path):
    # A fresh process: in a long test session the allocator reuses memory earlier tests freed, so hoarding need not
    # raise the resident size at all.
    tests = Path(__file__).resolve().parent
    done = subprocess.run([sys.executable, str(tests.parent / "scripts" / "soak.py"), "--avatar",
                           "test_soak:HoardingHead", "--out", str(tmp_path), "--tracemalloc", *ARGS],
                          env={**os.environ, "PYTHONPATH": str(tests)}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    r = json.loads((tmp_path / "SOAK.json").read_text())
    assert not r["passed"]
    assert r["end_rss_mb"] - r["start_rss_mb"] > 100  # 60 frames x 2 MB after the start reading
    # tracemalloc names the line that hoards, first, with its 60 arrays.
    top = r["traced_growth_top"][0]
    hoard_line = next(i for i, line in enumerate(Path(__file__).read_text().splitlines(), 1)
                      if "self.hoard.append" in line)
    assert top["where"].endswith(f"test_soak.py:{hoard_line}"), r["traced_growth_top"][:3]
    assert top["count_diff"] >= 59 and top["grew_kb"] > 100 * 1024


def test_webrtc_soak_streams_to_a_viewer_in_another_process(tmp_path):
    # 4 s of media in real time to one aiortc viewer; what it received comes back in the report.
    args = ["--minutes", str(4 / 60), "--warmup-s", "1", "--sample-s", "0.2", "--canvas", "320x240"]
    assert soak.main(["--avatar", "test_stream_doubles:SphereHeadRenderer", "--sink", "webrtc", "--out",
                      str(tmp_path), *args]) == 0
    r = json.loads((tmp_path / "SOAK.json").read_text())
    assert r["sink"] == "webrtc" and r["mp4_mb"] is None and r["mp4_frames_written"] is None
    assert 0.8 < r["speed_x_realtime"] < 1.1
    received = r["webrtc_viewer_received"]
    assert received["video_frames"] >= 0.7 * r["frames"] and received["audio_frames"] >= 0.7 * 4 / 0.02
    assert any(name.startswith("sink:webrtc") for name in r["pipeline"]["dropped"])


@pytest.mark.skipif(not Path(soak.CHROMIUM).is_file(), reason="needs Debian's chromium at /usr/bin/chromium")
def test_webrtc_soak_streams_to_the_web_page_in_chromium(tmp_path):
    # 8 s of media in real time to the web page in Chromium (it starts while the pipeline runs, so it sees the later
    # part); the page's own receive statistics come back in the report.
    args = ["--minutes", str(8 / 60), "--warmup-s", "1", "--sample-s", "0.2", "--canvas", "320x240"]
    assert soak.main(["--avatar", "test_stream_doubles:SphereHeadRenderer", "--sink", "webrtc", "--viewer", "chromium",
                      "--out", str(tmp_path), *args]) == 0
    r = json.loads((tmp_path / "SOAK.json").read_text())
    assert r["webrtc_viewer"] == "chromium"
    received = r["webrtc_viewer_received"]
    assert received["connection"] == "connected"
    assert received["video_frames"] >= 0.3 * r["frames"] and received["presented_frames"] >= 0.3 * r["frames"]
    assert received["audio_frames"] >= 0.3 * 8 / 0.02


def test_chromium_viewer_needs_the_webrtc_sink():
    with pytest.raises(SystemExit, match="needs --sink webrtc"):
        soak.main(["--viewer", "chromium", "--minutes", "0.05", "--warmup-s", "1"])


def test_virtualcam_soak_streams_in_real_time_into_the_stand_in_camera(tmp_path):
    # No v4l2loopback here: pyvirtualcam finds no device, so the soak says so and uses the stand-in backend, which
    # converts every frame to I420 as the device's backend does.
    args = ["--minutes", str(3 / 60), "--warmup-s", "1", "--sample-s", "0.2", "--canvas", "320x240"]
    assert soak.main(["--avatar", "test_stream_doubles:SphereHeadRenderer", "--sink", "virtualcam", "--out",
                      str(tmp_path), *args]) == 0
    r = json.loads((tmp_path / "SOAK.json").read_text())
    assert r["sink"] == "virtualcam" and r["mp4_mb"] is None and r["webrtc_viewer_received"] is None
    assert 0.8 < r["speed_x_realtime"] < 1.1
    camera = r["virtualcam"]
    assert camera["backend"] == soak.StandInCameraBackend.NAME
    assert camera["frames_taken"] == camera["frames_sent"] >= 0.99 * r["frames"] > 0.8 * 90


def test_stand_in_camera_converts_to_i420_as_the_device_backend_would():
    import pyvirtualcam

    backend = soak.StandInCameraBackend(width=4, height=2, fps=30, fourcc=None, device=None)
    rgb = np.zeros((2, 4, 3), np.uint8)
    rgb[:, :2] = 255  # white | black
    backend.send(rgb)
    y, u, v = backend._i420[:8].reshape(2, 4), backend._i420[8:10], backend._i420[10:]
    assert y[:, :2].tolist() == [[235, 235]] * 2 and y[:, 2:].tolist() == [[16, 16]] * 2  # limited range
    assert u.tolist() == v.tolist() == [128, 128]  # grey: no colour
    assert soak.StandInCameraBackend.taken == 1 and pyvirtualcam is not None


class CameraThatStops(soak.StandInCameraBackend):
    """A camera that takes 30 frames and then fails every write (a device that went away mid-call)."""

    def send(self, frame):
        if soak.StandInCameraBackend.taken >= 30:
            raise RuntimeError("device went away")
        super().send(frame)


def test_a_camera_that_stops_taking_frames_fails_the_soak(tmp_path):
    import pyvirtualcam

    pyvirtualcam.register_backend("test-stops", CameraThatStops)
    try:
        args = ["--minutes", str(3 / 60), "--warmup-s", "0.5", "--sample-s", "0.2", "--canvas", "320x240"]
        assert soak.main(["--avatar", "test_stream_doubles:SphereHeadRenderer", "--sink", "virtualcam",
                          "--camera-backend", "test-stops", "--out", str(tmp_path), *args]) == 1
    finally:
        pyvirtualcam.camera.BACKENDS.pop("test-stops", None)
    r = json.loads((tmp_path / "SOAK.json").read_text())
    assert not r["passed"] and r["end_over_start"] <= 1.05  # memory was fine: the camera failed it
    assert r["virtualcam"]["frames_sent"] == 30 < 0.5 * r["frames"]


def test_the_stand_in_camera_is_not_left_for_other_cameras_to_find():
    import pyvirtualcam

    args = soak.build_parser().parse_args(["--sink", "virtualcam", "--camera-backend", "standin", "--canvas", "64x48"])
    camera = soak.open_camera(args)
    camera.close()
    assert camera.backend == soak.StandInCameraBackend.NAME
    assert soak.StandInCameraBackend.NAME not in pyvirtualcam.camera.BACKENDS
