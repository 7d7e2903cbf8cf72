#!/usr/bin/env python3
"""Benchmark the live pipeline: per-stage p50/p95/p99, sustained fps, dropped frames, CPU %, and audio-to-frame
latency measured the way a viewer sees it: feed audio onsets in real time and time the first output frame whose
picture responds.

    PYTHONPATH=tests .venv/bin/python scripts/bench_latency.py --avatar test_stream_doubles:SphereHeadRenderer

Writes BENCH.json and BENCH.png (stage percentiles, latency histogram) to --out (default out/bench_latency).
The response is detected without knowing the renderer: a frame responds when its avatar region differs from the
last frame before the onset in more pixels than `--threshold` times the most that changed between frames in silence.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.lighting.sources import preset  # noqa: E402
from stream.avatar import load_renderer  # noqa: E402
from stream.backgrounds import BackgroundSet  # noqa: E402
from stream.clock import MonotonicClock  # noqa: E402
from stream.file_source import FileSource  # noqa: E402
from stream.lighting_state import LightingState  # noqa: E402
from stream.pipeline import Pipeline, PipelineConfig  # noqa: E402
from stream.types import AudioChunk, Frame  # noqa: E402

RATE_HZ = 16000
CHANGE_LEVELS = 12.0  # grey levels (of 255) a thumbnail pixel must move to count as changed


def onset_audio(n_onsets: int, silence_s: float, burst_s: float) -> tuple[np.ndarray, list[float]]:
    """Silence / tone-burst pairs; returns the audio and each burst's start (media s)."""
    pieces, onsets, t = [], [], 0.0
    burst = 0.5 * np.sin(2 * np.pi * 300 * np.arange(int(burst_s * RATE_HZ)) / RATE_HZ)
    for _ in range(n_onsets):
        pieces += [np.zeros(int(silence_s * RATE_HZ)), burst]
        t += silence_s
        onsets.append(t)
        t += burst_s
    pieces.append(np.zeros(int(silence_s * RATE_HZ)))
    return np.concatenate(pieces).astype(np.float32), onsets


class ProbeSink:
    """Keeps, per frame, when it left the pipeline and a small grey thumbnail of the canvas; and onset arrivals."""

    name = "probe"
    blocking = False

    def __init__(self, clock, onsets_s: list[float]) -> None:
        self.clock = clock
        self.onsets_s = onsets_s
        self.onset_arrivals_s: dict[int, float] = {}
        self.sent_s: list[float] = []
        self.pts_s: list[float] = []
        self.thumbs: list[np.ndarray] = []

    def send_audio(self, chunk: AudioChunk) -> None:
        for i, onset in enumerate(self.onsets_s):
            if chunk.start_s <= onset < chunk.end_s:
                self.onset_arrivals_s[i] = chunk.arrival_of(onset)

    def send(self, frame: Frame) -> None:
        self.sent_s.append(self.clock.now_s())
        self.pts_s.append(frame.frame_pts_s)
        self.thumbs.append(frame.rgb[::4, ::4].mean(axis=2, dtype=np.float32))

    def close(self) -> None:
        pass


def response_latencies_ms(probe: ProbeSink, threshold: float, settle_s: float) -> list[float]:
    thumbs = np.stack(probe.thumbs)
    pts = np.asarray(probe.pts_s)
    sent = np.asarray(probe.sent_s)
    # Changed-pixel counts, not mean differences: a mouth is a small part of a 1280x720 canvas.
    steps = (np.abs(np.diff(thumbs, axis=0)) > CHANGE_LEVELS).sum(axis=(1, 2))
    latencies = []
    for i, onset in enumerate(probe.onsets_s):
        # The settled end of the silence before this onset (the mouth closing after the last burst is not noise).
        before = np.flatnonzero((pts > onset - settle_s) & (pts < onset - 0.1))
        if i not in probe.onset_arrivals_s or before.size < 3:
            continue
        quiet = steps[before[1:] - 1]
        ref = thumbs[before[-1]]
        noise = max(float(quiet.max()), 1.0)
        after = np.flatnonzero(pts >= onset - 0.5)
        diffs = (np.abs(thumbs[after] - ref) > CHANGE_LEVELS).sum(axis=(1, 2))
        hit = after[diffs > threshold * noise]
        if hit.size:
            latencies.append(1000.0 * (sent[hit[0]] - probe.onset_arrivals_s[i]))
    return latencies


def plot(report: dict, per_frame_ms: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    stages = {k: v for k, v in report["stages_ms"].items() if v["count"]}
    x = np.arange(len(stages))
    for j, q in enumerate(("p50", "p95", "p99")):
        a.bar(x + (j - 1) * 0.27, [v[q] for v in stages.values()], 0.27, label=q)
    a.set_xticks(x, list(stages), rotation=30, ha="right")
    a.set_ylabel("ms")
    a.set_title(f"stage timings · {report['sustained_fps']:.1f} fps · dropped {report['dropped_total']}")
    a.legend()
    b.hist(per_frame_ms, bins=40)
    for ms in report["onset_to_response_ms"]:
        b.axvline(ms, color="r", lw=1)
    b.set_xlabel("audio arrival -> frame out (ms); red: measured onset responses")
    b.set_title("audio-to-frame latency")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


async def bench(args) -> dict:
    renderer = load_renderer(args.avatar)
    audio, onsets = onset_audio(args.onsets, args.silence_s, args.burst_s)
    canvas = args.canvas
    clock = MonotonicClock()
    probe = ProbeSink(clock, onsets)
    pipeline = Pipeline(
        FileSource(audio, realtime=True),
        renderer,
        LightingState(preset(args.light)),
        BackgroundSet(None, canvas),
        [probe],
        PipelineConfig(fps=args.fps, canvas_size_px=canvas, realtime=True),
        clock,
    )
    cpu0, wall0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    stats = await pipeline.run()
    cpu1, wall1 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    cpu_s = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    report = stats.report()
    latencies = response_latencies_ms(probe, args.threshold, settle_s=args.silence_s / 2)
    report.update({
        "avatar": args.avatar,
        "fps_target": args.fps,
        "canvas_px": list(canvas),
        "cpu_percent": 100.0 * cpu_s / (wall1 - wall0),
        "cpu_cores": __import__("os").cpu_count(),
        "onsets": len(onsets),
        "onset_to_response_ms": latencies,
        "onset_to_response_median_ms": float(np.median(latencies)) if latencies else None,
        "frames_expected": int(round(audio.size / RATE_HZ * args.fps)),
    })
    return report, np.asarray(stats.timers["audio_to_frame"].values_ms())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--avatar", required=True, help="renderer as module.path:factory")
    p.add_argument("--fps", type=float, choices=(25.0, 30.0), default=30.0)
    p.add_argument("--canvas", type=lambda s: tuple(int(v) for v in s.split("x")), default=(1280, 720))
    p.add_argument("--light", default="studio_key")
    p.add_argument("--onsets", type=int, default=6)
    p.add_argument("--silence-s", type=float, default=1.0)
    p.add_argument("--burst-s", type=float, default=0.5)
    p.add_argument("--threshold", type=float, default=3.0, help="response = change > threshold x silent jitter")
    p.add_argument("--out", type=Path, default=Path("out/bench_latency"))
    args = p.parse_args(argv)
    report, per_frame = asyncio.run(bench(args))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "BENCH.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(report, per_frame, args.out / "BENCH.png")
    print(json.dumps({k: report[k] for k in ("sustained_fps", "dropped_total", "cpu_percent",
                                             "onset_to_response_median_ms")}, indent=2))
    print(f"wrote {args.out / 'BENCH.json'} and {args.out / 'BENCH.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
