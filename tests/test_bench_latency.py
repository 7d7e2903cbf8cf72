"""scripts/bench_latency.py: the onset-to-mouth latency it reports follows the renderer's own delay, and idle motion
(present identically without audio) does not count as a response. Real-time runs of a few seconds each."""

import asyncio
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from test_stream_doubles import SphereHeadRenderer

from models.render import render
from stream.avatar import RenderedFrame

_SPEC = importlib.util.spec_from_file_location(
    "bench_latency", Path(__file__).resolve().parents[1] / "scripts" / "bench_latency.py"
)
bench_latency = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(bench_latency)

FPS = 30.0
# Two onsets, at 0.6 s and 1.6 s: frames 18 and 48.
ARGS = ["--onsets", "2", "--silence-s", "0.6", "--burst-s", "0.4", "--canvas", "320x240"]


class SwayingHead(SphereHeadRenderer):
    """The sphere head with a real avatar's troubles: it sways sideways and blinks every frame whatever the audio
    (so its mouth region never sits still), and its mouth answers the audio `delay_frames` video frames late."""

    def __init__(self, delay_frames: int = 0, mouth_box: bool = False) -> None:
        super().__init__(frame_size=(96, 128), fps=FPS, mel_past_frames=24, mel_lookahead_frames=2)
        self.delay_rows = round(delay_frames * 1000.0 / FPS / 10.0)  # mel rows are 10 ms apart
        if mouth_box:
            self.mouth_box_px = lambda k: (26 + self.sway_px(k), 68, 44, 50)

    @staticmethod
    def sway_px(frame_index: int) -> int:
        return 2 * (frame_index % 5) - 4

    def render(self, mel_window, lighting, frame_index):
        rgb = render(self._albedo, self._normals, 0.2, lighting).astype(np.float32)
        row = mel_window[self.mel_past_frames - self.delay_rows]
        rgb[self.mouth_mask(self.mouth_openness(row))] = 0.01
        if frame_index % 7 < 2:  # a blink
            rgb[30:42, 25:70] *= 0.3
        dx = self.sway_px(frame_index)
        return RenderedFrame(rgb_linear=np.roll(rgb, dx, axis=1), matte=np.roll(self._matte, dx, axis=1))


def swaying_head() -> SwayingHead:
    return SwayingHead()


def _bench(renderer):
    args = bench_latency.build_parser().parse_args(ARGS)
    report, _ = asyncio.run(bench_latency.bench(renderer, args))
    return report


def test_idle_motion_changes_the_mouth_region_every_frame_yet_is_no_response():
    head = SwayingHead()
    silence = np.full((27, 80), -13.8, np.float32)
    frames = [head.render(silence, bench_latency.preset("studio_key"), k).rgb_linear for k in range(3)]
    assert all(np.abs(a - b)[60:120].max() > 0.1 for a, b in zip(frames, frames[1:]))  # the mouth rows move

    r = _bench(head)
    assert r["compared_region"] == "avatar"
    assert r["response"]["noise_floor_px"] == 0 and r["response"]["quiet_frames"] > 10
    onsets = r["response"]["onsets"]
    assert all("latency_ms" in o for o in onsets)
    # The mouth answers the frame whose own mel row hears the onset: the frame at the onset (pts 0.6 s, 1.6 s).
    assert [o["response_pts_minus_onset_ms"] for o in onsets] == pytest.approx([0.0, 0.0], abs=1.0)
    # After the onset: the lookahead (32.5 ms), a 20 ms audio chunk, one render, on a loaded machine.
    assert all(20.0 < ms < 400.0 for ms in r["onset_to_response_ms"])


def test_a_mouth_three_frames_late_measures_about_100_ms_later():
    on_time, late = _bench(SwayingHead(0, mouth_box=True)), _bench(SwayingHead(3, mouth_box=True))
    assert on_time["compared_region"] == late["compared_region"] == "mouth"
    assert [o["response_pts_minus_onset_ms"] for o in late["response"]["onsets"]] == pytest.approx([100.0] * 2,
                                                                                                   abs=1.0)
    # Three frame intervals later on the wall clock too. A busy machine only ever adds delay (a late render, a
    # dropped frame): compare the quickest response of each run, and allow about two frames either way.
    gap_ms = min(late["onset_to_response_ms"]) - min(on_time["onset_to_response_ms"])
    assert 100.0 - 60.0 < gap_ms < 100.0 + 60.0


def test_main_writes_json_and_plot(tmp_path):
    assert bench_latency.main(["--avatar", "test_bench_latency:swaying_head", "--out", str(tmp_path), *ARGS]) == 0
    report = json.loads((tmp_path / "BENCH.json").read_text())
    assert len(report["onset_to_response_ms"]) == 2 and report["frames_out"] > 0
    assert {"render", "compose", "audio_to_frame"} <= set(report["stages_ms"])
    assert (tmp_path / "BENCH.png").stat().st_size > 10_000
