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
