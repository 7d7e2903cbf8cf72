#!/usr/bin/env python3
"""Benchmark the live pipeline: per-stage p50/p95/p99, sustained fps, dropped frames, CPU %, and the true
audio-to-frame latency: feed speech onsets in real time and time the first output frame whose mouth responds.

    .venv/bin/python scripts/bench_latency.py                       # the default avatar (models/avatars/default)
    .venv/bin/python scripts/bench_latency.py --avatar BUNDLE_FOLDER
    PYTHONPATH=tests .venv/bin/python scripts/bench_latency.py --avatar test_stream_doubles:SphereHeadRenderer

Writes BENCH.json and BENCH.png (stage percentiles, latency histogram, mouth response around each onset) to --out
(default out/bench_latency).

How a response is found. A real avatar never sits still: its idle loop (head motion, blinks) changes pixels every
frame, with or without sound. But the idle loop depends on the frame index only (frame k shows media time k / fps),
so the same pipeline is first run offline on SILENT audio of the same length, and each frame of the real-time onset
run is compared with the silent run's frame of the same index. Only the mouth region is compared (the renderer's
mouth box where it has one, else the whole avatar crop). Whatever differs there is the audio's doing; frames whose
mel window hears only silence in both runs measure the numeric noise floor (zero for a deterministic renderer). The
response to an onset is the first frame that can hear it (its mel lookahead reaches the onset) in which more than
max(--min-changed-frac x the region's pixels, --threshold x noise floor) pixels differ by more than CHANGE_LEVELS grey
levels; its latency is the wall time that frame left the pipeline minus the wall time the onset's audio sample
arrived.

The onsets are speech (a cut of models/assets/speech_sample.wav, from its first sound) after silence: the
audio-to-expression net was trained on speech, and a pure tone opens the mouth less and later (--burst tone to see).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.audio import MelSpec, read_wav  # noqa: E402
from models.lighting.sources import preset  # noqa: E402
from stream.backgrounds import BackgroundSet  # noqa: E402
from stream.clock import MonotonicClock  # noqa: E402
from stream.compose import fit_avatar  # noqa: E402
from stream.file_source import FileSource  # noqa: E402
from stream.lighting_state import LightingState  # noqa: E402
from stream.pipeline import Pipeline, PipelineConfig  # noqa: E402
from stream.types import AUDIO_RATE_HZ, AudioChunk, Frame  # noqa: E402

RATE_HZ = AUDIO_RATE_HZ
SPEECH_SAMPLE = ROOT / "models" / "assets" / "speech_sample.wav"
CHANGE_LEVELS = 12  # sRGB grey levels (of 255), max over channels, a pixel must differ by to count as changed
SOUND_LEVEL = 0.02  # |sample| from which the speech cut counts as sound (the onset)
FADE_S = 0.005

# A region of the canvas, rows then columns: (y0, y1, x0, x1) px.
Region = tuple[int, int, int, int]


# ------------------------------------------------------------------------------------------------ the audio


def speech_burst(burst_s: float, path: Path = SPEECH_SAMPLE) -> np.ndarray:
    """burst_s of speech from the sample's first sound on, so the burst's first sample is its onset."""
    speech = read_wav(path, RATE_HZ).samples.astype(np.float32)
    loud = np.flatnonzero(np.abs(speech) >= SOUND_LEVEL)
    if loud.size == 0:
        raise ValueError(f"{path} holds no sound above {SOUND_LEVEL}")
    n = int(burst_s * RATE_HZ)
    burst = speech[loud[0] : loud[0] + n].copy()
    if burst.size < n:
        raise ValueError(f"{path} has less than {burst_s} s of speech after its first sound")
    fade = int(FADE_S * RATE_HZ)
    burst[-fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)  # no click at the end
    return burst


def tone_burst(burst_s: float, hz: float = 300.0) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * hz * np.arange(int(burst_s * RATE_HZ)) / RATE_HZ)).astype(np.float32)


def onset_audio(burst: np.ndarray, n_onsets: int, silence_s: float) -> tuple[np.ndarray, list[float]]:
    """Silence / burst pairs ending in silence; returns the audio and each burst's start (media s)."""
    silence = np.zeros(int(silence_s * RATE_HZ), np.float32)
    pieces, onsets, n = [], [], 0
    for _ in range(n_onsets):
        pieces += [silence, burst]
        onsets.append((n + silence.size) / RATE_HZ)
        n += silence.size + burst.size
    pieces.append(silence)
    return np.concatenate(pieces).astype(np.float32), onsets


# ------------------------------------------------------------------------------------------------ the region


def mouth_box_fn(renderer) -> Callable[[int], tuple[int, int, int, int]] | None:
    """frame_index -> the mouth box (x, y, width, height) in crop px, or None when the renderer cannot tell.

    A renderer may offer `mouth_box_px(frame_index)`; a bundle renderer (stream/bundle_renderer.py) has the box of
    every idle frame in its bundle (docs/bundle.md: idle_mouth_box, info.mouth_px) and shows idle frame
    `loop_frame(frame_index)`.
    """
    own = getattr(renderer, "mouth_box_px", None)
    if callable(own):
        return own
    bundle = getattr(renderer, "bundle", None)
    arrays = getattr(bundle, "arrays", {})
    if "idle_mouth_box" in arrays and hasattr(renderer, "loop_frame") and hasattr(renderer, "mouth_px"):
        boxes, m = arrays["idle_mouth_box"], int(renderer.mouth_px)

        def box(frame_index: int) -> tuple[int, int, int, int]:
            x, y = boxes[renderer.loop_frame(frame_index)]
            return int(x), int(y), m, m

        return box
    return None


def region_fn(renderer, canvas_px: tuple[int, int], height_frac: float) -> tuple[Callable[[int], Region], str]:
    """frame_index -> the canvas region compared between runs: the mouth box where known, else the avatar crop."""
    p = fit_avatar(renderer.frame_size, canvas_px, height_frac)  # where the compositor puts the crop
    aw, ah = renderer.frame_size
    sx, sy = p.width_px / aw, p.height_px / ah
    whole = (p.y_px, p.y_px + p.height_px, p.x_px, p.x_px + p.width_px)
    box = mouth_box_fn(renderer)
    if box is None:
        return (lambda frame_index: whole), "avatar"
    pad = int(np.ceil(max(sx, sy))) + 1  # bilinear scaling spreads a crop pixel into its neighbours' canvas pixels

    def region(frame_index: int) -> Region:
        x, y, w, h = box(frame_index)
        return (max(whole[0], p.y_px + int(y * sy) - pad), min(whole[1], p.y_px + int(np.ceil((y + h) * sy)) + pad),
                max(whole[2], p.x_px + int(x * sx) - pad), min(whole[3], p.x_px + int(np.ceil((x + w) * sx)) + pad))

    return region, "mouth"


# ------------------------------------------------------------------------------------------------ the runs


class ProbeSink:
    """Per frame (by index): when it left the pipeline, its pts and its pixels in `region`; and onset arrivals."""

    name = "probe"
    blocking = False

    def __init__(self, clock, onsets_s: list[float], region: Callable[[int], Region]) -> None:
        self.clock = clock
        self.onsets_s = onsets_s
        self.region = region
        self.onset_arrivals_s: dict[int, float] = {}
        self.sent_s: dict[int, float] = {}
        self.pts_s: dict[int, float] = {}
        self.crops: dict[int, np.ndarray] = {}

    def send_audio(self, chunk: AudioChunk) -> None:
        for i, onset in enumerate(self.onsets_s):
            if chunk.start_s <= onset < chunk.end_s:
                self.onset_arrivals_s[i] = chunk.arrival_of(onset)

    def send(self, frame: Frame) -> None:
        self.sent_s[frame.frame_index] = self.clock.now_s()
        self.pts_s[frame.frame_index] = frame.frame_pts_s
        y0, y1, x0, x1 = self.region(frame.frame_index)
        self.crops[frame.frame_index] = frame.rgb[y0:y1, x0:x1].copy()

    def close(self) -> None:
        pass


async def run_pipeline(renderer, audio: np.ndarray, sinks: list, args, realtime: bool, clock):
    pipeline = Pipeline(
        FileSource(audio, realtime=realtime),
        renderer,
        LightingState(preset(args.light), now_s=clock.now_s()),
        BackgroundSet(None, args.canvas),
        sinks,
        PipelineConfig(fps=args.fps, canvas_size_px=args.canvas, realtime=realtime,
                       avatar_height_frac=args.avatar_height, voice_gate_db=args.voice_gate_db),
        clock,
    )
    return await pipeline.run()


# ------------------------------------------------------------------------------------------------ the analysis


def changed_px(onset_run: ProbeSink, silent_run: ProbeSink) -> dict[int, int]:
    """Per frame index in both runs: pixels of the region that differ by more than CHANGE_LEVELS."""
    out = {}
    for k, crop in onset_run.crops.items():
        ref = silent_run.crops.get(k)
        if ref is None:
            continue
        if ref.shape != crop.shape:
            raise RuntimeError(f"frame {k}: the compared region differs between the runs ({crop.shape} vs {ref.shape})")
        out[k] = int((np.abs(crop.astype(np.int16) - ref).max(axis=2) > CHANGE_LEVELS).sum())
    return out


def window_reach_s(renderer, spec: MelSpec = MelSpec()) -> tuple[float, float]:
    """(before, after): how far a frame's mel window reaches either side of its pts, s."""
    half = spec.win_length / 2 / spec.sample_rate_hz
    hop = spec.hop_length / spec.sample_rate_hz
    return renderer.mel_past_frames * hop + half, renderer.mel_lookahead_frames * hop + half


def find_responses(onset_run: ProbeSink, changed: dict[int, int], audio: np.ndarray, reach_s: tuple[float, float],
                   burst_s: float, fps: float, threshold: float, min_changed_frac: float) -> dict:
    """Per onset, the first frame that can hear it and whose region differs from the silent run by more than the
    limit; plus the noise floor (frames that hear only silence, in both runs) the limit is set from."""
    before_s, after_s = reach_s
    frames = sorted(changed)
    quiet = []
    for k in frames:
        pts = onset_run.pts_s[k]
        lo = max(0, int((pts - before_s - 0.01) * RATE_HZ))
        hi = int((pts + after_s + 0.01) * RATE_HZ) + 1
        if not np.any(audio[lo:hi]):
            quiet.append(changed[k])
    if not quiet:
        raise RuntimeError("no frame heard only silence: the silences between onsets are too short for this window")
    noise = max(quiet)
    region_px = int(np.mean([crop.shape[0] * crop.shape[1] for crop in onset_run.crops.values()]))
    limit = max(min_changed_frac * region_px, threshold * noise)
    onsets = []
    for i, onset in enumerate(onset_run.onsets_s):
        # Frames that can hear the onset (their lookahead reaches it), up to the end of the burst.
        near = [k for k in frames if onset - after_s - 0.5 / fps <= onset_run.pts_s[k] < onset + burst_s]
        entry = {"onset_s": onset, "frames": len(near),
                 "curve": [[round(1000.0 * (onset_run.pts_s[k] - onset), 1), changed[k]] for k in near]}
        hit = next((k for k in near if changed[k] > limit), None)
        if hit is not None and i in onset_run.onset_arrivals_s:
            entry.update({
                "response_frame": hit,
                "response_pts_minus_onset_ms": 1000.0 * (onset_run.pts_s[hit] - onset),
                "latency_ms": 1000.0 * (onset_run.sent_s[hit] - onset_run.onset_arrivals_s[i]),
                "changed_px": changed[hit],
            })
        onsets.append(entry)
    return {"region_px": region_px, "noise_floor_px": noise, "quiet_frames": len(quiet), "limit_px": limit,
            "onsets": onsets}


# ------------------------------------------------------------------------------------------------ report


def plot(report: dict, per_frame_ms: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b, c) = plt.subplots(1, 3, figsize=(17, 4.5))
    stages = {k: v for k, v in report["stages_ms"].items() if v["count"]}
    x = np.arange(len(stages))
    for j, q in enumerate(("p50", "p95", "p99")):
        a.bar(x + (j - 1) * 0.27, [v[q] for v in stages.values()], 0.27, label=q)
    a.set_xticks(x, list(stages), rotation=30, ha="right")
    a.set_ylabel("ms")
    a.set_title(f"stage timings · {report['sustained_fps']:.1f} fps · dropped {report['dropped_total']}")
    a.legend()
    b.hist(per_frame_ms, bins=40, label="audio at pts -> frame out")
    for j, ms in enumerate(report["onset_to_response_ms"]):
        b.axvline(ms, color="r", lw=1, label="onset -> mouth responds" if j == 0 else None)
    b.set_xlabel("ms")
    b.set_title("audio-to-frame latency")
    b.legend(fontsize=8)
    r = report["response"]
    for o in r["onsets"]:
        if o["curve"]:
            t, px = np.asarray(o["curve"], float).T
            c.plot(t, px, marker=".", lw=1)
        if "response_pts_minus_onset_ms" in o:
            c.axvline(o["response_pts_minus_onset_ms"], color="r", lw=0.6)
    c.axhline(r["limit_px"], color="k", ls="--", lw=1, label=f"limit {r['limit_px']:.0f} px")
    c.set_xlabel("frame pts - onset (ms)")
    c.set_ylabel(f"{report['compared_region']} px differing from the silent run")
    c.set_title(f"mouth response (noise floor {r['noise_floor_px']} px)")
    c.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


async def bench(renderer, args) -> tuple[dict, np.ndarray]:
    load_before = os.getloadavg()[0]
    burst = speech_burst(args.burst_s) if args.burst == "speech" else tone_burst(args.burst_s)
    audio, onsets = onset_audio(burst, args.onsets, args.silence_s)
    region, region_name = region_fn(renderer, args.canvas, args.avatar_height)
    clock = MonotonicClock()

    # 1. The reference: silent audio of the same length, offline (every frame; also warms the renderer up).
    t0 = time.monotonic()
    silent = ProbeSink(clock, [], region)
    await run_pipeline(renderer, np.zeros_like(audio), [silent], args, realtime=False, clock=clock)
    silent_s = time.monotonic() - t0

    # 2. The measurement: the onsets in real time.
    probe = ProbeSink(clock, onsets, region)
    cpu0, wall0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    stats = await run_pipeline(renderer, audio, [probe], args, realtime=True, clock=clock)
    cpu1, wall1 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    cpu_s = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)

    changed = changed_px(probe, silent)
    response = find_responses(probe, changed, audio, window_reach_s(renderer), args.burst_s, args.fps,
                              args.threshold, args.min_changed_frac)
    latencies = [o["latency_ms"] for o in response["onsets"] if "latency_ms" in o]
    report = stats.report()
    report.update({
        "avatar": args.avatar or "models/avatars/default",
        "voice_gate_db": args.voice_gate_db,
        "avatar_px": list(renderer.frame_size),
        "renderer_lookahead_ms": renderer.lookahead_ms,
        "fps_target": args.fps,
        "canvas_px": list(args.canvas),
        "avatar_height_frac": args.avatar_height,
        "cpu_percent": 100.0 * cpu_s / (wall1 - wall0),
        "cpu_percent_of": "one core (200 = two cores busy)",
        "cpu_cores": os.cpu_count(),
        "load_average_1m": {"before": load_before, "after": os.getloadavg()[0]},
        "frames_expected": int(round(audio.size / RATE_HZ * args.fps)),
        "burst": args.burst,
        "onsets": len(onsets),
        "compared_region": region_name,
        "silent_reference_run_s": silent_s,
        "onset_to_response_ms": latencies,
        "onset_to_response_median_ms": float(np.median(latencies)) if latencies else None,
        "onset_to_response_max_ms": float(np.max(latencies)) if latencies else None,
        "response": response,
    })
    return report, np.asarray(stats.timers["audio_to_frame"].values_ms())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--avatar", help="avatar bundle folder or renderer as module.path:factory "
                                    "(default: the shipped avatar models/avatars/default)")
    p.add_argument("--backend", default="onnxruntime", help="where a bundle's nets run")
    p.add_argument("--fps", type=float, choices=(25.0, 30.0), default=30.0)
    p.add_argument("--canvas", type=lambda s: tuple(int(v) for v in s.split("x")), default=(1280, 720))
    p.add_argument("--avatar-height", type=float, default=1.0, help="as relitcam run: fraction of the canvas height")
    p.add_argument("--light", default="studio_key")
    p.add_argument("--burst", choices=("speech", "tone"), default="speech")
    p.add_argument("--voice-gate-db", type=float, help="as relitcam run (stream/voice_gate.py); default off")
    p.add_argument("--onsets", type=int, default=6)
    p.add_argument("--silence-s", type=float, default=1.0)
    p.add_argument("--burst-s", type=float, default=0.5)
    p.add_argument("--threshold", type=float, default=3.0, help="response: changed px > threshold x noise floor ...")
    p.add_argument("--min-changed-frac", type=float, default=0.002, help="... and > this fraction of the region")
    p.add_argument("--out", type=Path, default=Path("out/bench_latency"))
    return p


def main(argv=None) -> int:
    from stream.commands.run import load_avatar

    args = build_parser().parse_args(argv)
    renderer = load_avatar(args.avatar, args.backend)
    report, per_frame = asyncio.run(bench(renderer, args))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "BENCH.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(report, per_frame, args.out / "BENCH.png")
    print(json.dumps({k: report[k] for k in ("sustained_fps", "dropped_total", "cpu_percent", "compared_region",
                                             "onset_to_response_ms", "onset_to_response_median_ms")}, indent=2))
    print(f"noise floor {report['response']['noise_floor_px']} px over {report['response']['quiet_frames']} "
          f"silent frames; response limit {report['response']['limit_px']} px")
    print(f"wrote {args.out / 'BENCH.json'} and {args.out / 'BENCH.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
