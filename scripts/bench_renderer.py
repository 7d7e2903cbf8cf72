#!/usr/bin/env python3
"""Per-frame time of the bundle renderer (stream/bundle_renderer.py), whole and by step, its load time and resident
memory, as JSON.

    .venv/bin/python scripts/bench_renderer.py                      # the default avatar, else a 256 px fixture
    .venv/bin/python scripts/bench_renderer.py --bundle PATH        # any bundle
    .venv/bin/python scripts/bench_renderer.py --fixture --mouth-px 96

Without a trained bundle it times a TEST FIXTURE of the contract's shapes (random-init nets from models/enroll/nets.py
at their default widths, random idle layers; tests/test_bundle_renderer.py builds it): the cost per frame depends on
the shapes, not on the weights. Target: the renderer within ~20 ms per frame on 2 cores, so that the whole live
pipeline (features, compositing, encoding) holds 30 fps. Writes --out (default out/bench_renderer/BENCH.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _percentiles_ms(samples_s: list[float]) -> dict[str, float]:
    a = np.asarray(samples_s) * 1000.0
    return {"p50": round(float(np.percentile(a, 50)), 2), "p95": round(float(np.percentile(a, 95)), 2),
            "mean": round(float(a.mean()), 2)}


def _fixture_bundle(folder: Path, size_px: int, mouth_px: int) -> Path:
    sys.path.insert(0, str(ROOT / "tests"))
    import warnings

    warnings.filterwarnings("ignore")  # torch's tracer warnings while exporting the fixture nets
    from test_bundle_renderer import build_fixture_bundle

    return build_fixture_bundle(folder / "fixture", size_px=size_px, mouth_px=mouth_px, n_frames=8,
                                mouth_widths=(24, 48, 96), n_lip=14).path


def _rss_mb() -> float:
    """This process's resident memory now (Linux /proc), MB; 0 where /proc is missing."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    except OSError:
        return 0.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", type=Path, help="bundle folder (default: models/avatars/default if present)")
    p.add_argument("--fixture", action="store_true", help="time a random-init fixture bundle even if a default exists")
    p.add_argument("--size-px", type=int, default=256, help="fixture crop size")
    p.add_argument("--mouth-px", type=int, default=128, help="fixture mouth box (half the crop holds the lip region)")
    p.add_argument("--frames", type=int, default=150)
    p.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads per net (default: backend's choice)")
    p.add_argument("--no-shading-net", action="store_true", help="analytic SH shading only")
    p.add_argument("--light", default="soft_front", help="lighting preset or L.json")
    p.add_argument("--out", type=Path, default=ROOT / "out" / "bench_renderer")
    args = p.parse_args(argv)

    from models.lighting.files import resolve_lighting
    from stream.bundle_renderer import DEFAULT_BUNDLE, BundleRenderer

    tmp = tempfile.TemporaryDirectory(prefix="bench_renderer.")
    if args.bundle is not None:
        bundle, kind = args.bundle, "given"
    elif not args.fixture and (DEFAULT_BUNDLE / "manifest.json").is_file():
        bundle, kind = DEFAULT_BUNDLE, "default avatar"
    else:
        bundle, kind = _fixture_bundle(Path(tmp.name), args.size_px, args.mouth_px), "random-init fixture"
    rss_before = _rss_mb()
    t_load = time.perf_counter()
    r = BundleRenderer(bundle, use_shading_net=False if args.no_shading_net else None, threads=args.threads)
    load_s = time.perf_counter() - t_load
    rss_loaded = _rss_mb()
    lighting = resolve_lighting(args.light)
    rng = np.random.default_rng(0)
    t = r.mel_past_frames + 1 + r.mel_lookahead_frames
    mels = [rng.normal(-4.0, 2.0, (t, 80)).astype(np.float32) for _ in range(16)]

    for k in range(10):  # warm-up: session arenas, page faults of the idle layers
        r.render(mels[k % 16], lighting, k)
    steps: dict[str, list[float]] = {k: [] for k in ("audio_to_expression", "decode_layers", "mouth_inputs",
                                                     "mouth_net", "relight", "render_total")}
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for k in range(args.frames):
        t0 = time.perf_counter()
        r.render(mels[k % 16], lighting, k)
        steps["render_total"].append(time.perf_counter() - t0)
    cpu_per_frame_ms = 1000.0 * (time.process_time() - cpu0) / args.frames
    wall_s = time.perf_counter() - wall0
    for k in range(min(args.frames, 60)):  # the same work split into its steps
        i = r.loop_frame(k)
        t0 = time.perf_counter()
        coeffs = r.lip_coeffs(mels[k % 16])
        t1 = time.perf_counter()
        layers = r.decode_layers(i)
        t2 = time.perf_counter()
        feed = r.mouth_inputs(i, coeffs, layers)
        t3 = time.perf_counter()
        r.backend.run("mouth", feed)
        t4 = time.perf_counter()
        r.relight(layers, lighting)
        t5 = time.perf_counter()
        for name, a, b in (("audio_to_expression", t0, t1), ("decode_layers", t1, t2), ("mouth_inputs", t2, t3),
                           ("mouth_net", t3, t4), ("relight", t4, t5)):
            steps[name].append(b - a)

    total = _percentiles_ms(steps["render_total"])
    report = {
        "bundle": str(bundle),
        "bundle_kind": kind,
        "size_px": r.size_px,
        "mouth_px": r.mouth_px,
        "shading_net": r.use_shading_net,
        "lighting": args.light,
        "lights": lighting.num_lights,
        "frames": args.frames,
        "idle_frames": r.n_idle_frames,
        "load_s": round(load_s, 2),
        "rss_mb": {"before_load": round(rss_before, 1), "after_load": round(rss_loaded, 1),
                   "after_frames": round(_rss_mb(), 1)},
        "steps_ms": {k: _percentiles_ms(v) for k, v in steps.items()},
        "renderer_fps": round(args.frames / wall_s, 1),
        "cpu_ms_per_frame": round(cpu_per_frame_ms, 2),
        "target_ms": 20.0,
        "meets_target_p50": total["p50"] <= 20.0,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "load_avg_1min": round(os.getloadavg()[0], 2)},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "BENCH.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
