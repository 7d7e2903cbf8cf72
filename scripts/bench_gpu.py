#!/usr/bin/env python3
"""GPU timings of the live path: per net and whole frame, per backend and precision, at 256 and 512 px crops.

    .venv/bin/python scripts/bench_gpu.py                      # fixture bundles at 256 and 512 px
    .venv/bin/python scripts/bench_gpu.py --bundle PATH        # one real bundle (its own size)

Measured with CUDA events on the stream the work is queued on (no host timers around asynchronous calls):
  * per net: median ms of `backend.run` at batch 1 (audio_to_expression, mouth);
  * whole frame: a2e + mouth + the fused compose kernel (stream/gpu_compose.py) to I420 on a 1280x720 canvas, and
    the fps that allows;
  * sessions per GPU at 30 fps: the nets at batch B (trt_engines/batching.py gathers B sessions into one call) plus B
    compose kernels, for B = 1, 2, 4, ...; the largest B whose frame fits 33.3 ms;
  * GPU memory in use (cudaMemGetInfo) after each backend is loaded.
Every backend present is timed (tensorrt at fp32 / fp16 / int8, torch-cuda at fp16); one that cannot start is
recorded with its reason. Fixture bundles are random-init nets of the contract's shapes (timings depend on shapes,
not weights). Writes BENCH_GPU.json and bench_gpu.png to --out with the GPU's name. Without a CUDA GPU it exits with
status 2 and says so.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FRAME_BUDGET_MS = 1000.0 / 30.0
CANVAS_PX = (1280, 720)


def _gpu_or_exit():
    from trt_engines.device import NoGpu, current_gpu

    try:
        return current_gpu()
    except NoGpu as e:
        print(f"bench_gpu: no CUDA GPU on this machine ({e}); nothing to measure", file=sys.stderr)
        raise SystemExit(2) from None


def _time_ms(fn, repeats: int, warmup: int = 5) -> float:
    """Median GPU time of fn() between CUDA events on the current stream."""
    import cupy as cp

    for _ in range(warmup):
        fn()
    stream = cp.cuda.get_current_stream()
    times = []
    for _ in range(repeats):
        start, end = cp.cuda.Event(), cp.cuda.Event()
        start.record(stream)
        fn()
        end.record(stream)
        end.synchronize()
        times.append(cp.cuda.get_elapsed_time(start, end))
    return float(np.median(times))


def _fixture(folder: Path, size_px: int) -> Path:
    sys.path.insert(0, str(ROOT / "tests"))
    import warnings

    warnings.filterwarnings("ignore")
    from test_bundle_renderer import build_fixture_bundle
    from test_torch_backend import add_torch_states

    fixture = build_fixture_bundle(folder / f"fixture{size_px}", size_px=size_px, mouth_px=size_px // 2, n_frames=4,
                                   mouth_widths=(24, 48, 96), n_lip=14, shading_net=False)
    add_torch_states(fixture)  # the torch-cuda backend reads <net>.torch.pt
    return fixture.path


def _inputs(backend, net: str, batch: int):
    import cupy as cp

    rng = cp.random.default_rng(0)
    return {s.name: rng.random((batch, *s.shape[1:]), dtype=cp.float32) for s in backend.inputs(net)}


def _backend_configs():
    return [("tensorrt", "fp32", {"precision": "fp32"}), ("tensorrt", "fp16", {"precision": "fp16"}),
            ("tensorrt", "int8", {"precision": "int8"}), ("torch-cuda", "fp16", {})]


def _bench_bundle(bundle_path: Path, repeats: int, max_batch: int) -> dict:
    import cupy as cp

    from models.bundle import load_bundle
    from models.lighting.lighting import Lighting
    from stream.backend import create_backend
    from stream.compose import fit_avatar
    from stream.bundle_renderer import fade_crop_edges
    from stream.gpu_compose import FusedComposer, IdleFrameU8, MouthPatch
    from trt_engines.profile import BatchProfile

    bundle = load_bundle(bundle_path)
    s, m = bundle.size_px, int(bundle.info["mouth_px"])
    a = bundle.arrays
    idle = IdleFrameU8(*(cp.asarray(a[k][0]) for k in ("idle_albedo", "idle_normals", "idle_spec_weight")),
                       cp.asarray(fade_crop_edges(a["idle_matte"][:1])[0]))
    placement = fit_avatar((s, s), CANVAS_PX)
    composer = FusedComposer(s, CANVAS_PX, placement)
    bg = np.full((CANVAS_PX[1], CANVAS_PX[0], 3), 90, np.uint8)
    bg_srgb = cp.asarray(bg)
    lighting = Lighting(sh_coeffs=bundle.sh_coeffs, light_dirs=[[0.4, 0.3, 1.0]], light_colours=[[1.5, 1.4, 1.2]])
    shininess = float(bundle.info["shininess"])
    box = [int(v) for v in a["idle_mouth_box"][0]]

    def compose(out):
        patch = MouthPatch(out["albedo"][0], out["normals"][0], out["spec_weight"][0, 0], out["blend"][0, 0], *box)
        composer.process(idle, patch, lighting, shininess, bg_srgb)

    results = []
    for name, precision, options in _backend_configs():
        entry = {"backend": name, "precision": precision}
        try:
            if name == "tensorrt":
                options = {**options, "profile": BatchProfile(1, 1, max_batch)}
            backend = create_backend(name, bundle, nets=["audio_to_expression", "mouth"], **options)
        except Exception as e:
            entry["skipped"] = f"{type(e).__name__}: {e}"
            results.append(entry)
            continue
        if hasattr(backend, "builds"):
            entry["builds"] = {n: b.describe() for n, b in backend.builds.items()}
        try:
            _time_backend(backend, entry, compose, repeats, max_batch)
        except Exception as e:  # one backend failing mid-run must not lose the others' figures
            entry["failed"] = f"{type(e).__name__}: {e}"
        results.append(entry)
        backend = None  # its engines and buffers go before the next backend loads
        cp.get_default_memory_pool().free_all_blocks()
    return {"bundle": str(bundle_path), "size_px": s, "mouth_px": m, "results": results}


def _time_backend(backend, entry: dict, compose, repeats: int, max_batch: int) -> None:
    """Per-net, compositing, whole-frame and batched timings of one backend, into `entry`."""
    import cupy as cp

    feeds = {net: _inputs(backend, net, 1) for net in ("audio_to_expression", "mouth")}
    entry["net_ms"] = {net: round(_time_ms(lambda n=net: backend.run(n, feeds[n]), repeats), 3) for net in feeds}
    mouth_out = backend.run("mouth", feeds["mouth"])
    entry["compose_ms"] = round(_time_ms(lambda: compose(mouth_out), repeats), 3)

    def frame():
        backend.run("audio_to_expression", feeds["audio_to_expression"])
        compose(backend.run("mouth", feeds["mouth"]))

    entry["frame_ms"] = round(_time_ms(frame, repeats), 3)
    entry["fps"] = round(1000.0 / entry["frame_ms"], 1)
    free, total = cp.cuda.runtime.memGetInfo()
    entry["gpu_memory_used_mb"] = round((total - free) / 2**20, 1)
    batches = {}
    b = 1
    while b <= max_batch:
        fb = {net: _inputs(backend, net, b) for net in feeds}

        def batched(fb=fb, b=b):
            backend.run("audio_to_expression", fb["audio_to_expression"])
            out = backend.run("mouth", fb["mouth"])
            for _ in range(b):
                compose({k: v[:1] for k, v in out.items()})

        batches[b] = round(_time_ms(batched, max(5, repeats // 4)), 3)
        b *= 2
    entry["batch_frame_ms"] = batches
    fits = [bb for bb, ms in batches.items() if ms <= FRAME_BUDGET_MS]
    entry["sessions_at_30fps"] = max(fits) if fits else 0


def _plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    labels, frame_ms = [], []
    for case in report["cases"]:
        for r in case["results"]:
            if "frame_ms" in r:
                labels.append(f"{case['size_px']}px {r['backend']} {r['precision']}")
                frame_ms.append(r["frame_ms"])
                if "batch_frame_ms" in r:  # absent where the backend failed before the batched runs
                    ax2.plot(list(r["batch_frame_ms"]), list(r["batch_frame_ms"].values()), marker="o",
                             label=labels[-1])
    ax1.barh(labels, frame_ms)
    ax1.axvline(FRAME_BUDGET_MS, color="r", ls="--", label="30 fps")
    ax1.set_xlabel("whole frame, GPU ms")
    ax2.axhline(FRAME_BUDGET_MS, color="r", ls="--")
    ax2.set_xscale("log", base=2)
    ax2.set_xlabel("sessions batched")
    ax2.set_ylabel("GPU ms per frame period")
    ax2.legend(fontsize=7)
    fig.suptitle(f"relitcam GPU path on {report['gpu']['name']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", type=Path, help="a bundle folder (default: fixtures at 256 and 512 px)")
    p.add_argument("--repeats", type=int, default=100)
    p.add_argument("--max-batch", type=int, default=16)
    p.add_argument("--out", type=Path, default=ROOT / "out" / "bench_gpu")
    args = p.parse_args(argv)
    gpu = _gpu_or_exit()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        bundles = [args.bundle] if args.bundle else [_fixture(Path(tmp), s) for s in (256, 512)]
        cases = [_bench_bundle(b, args.repeats, args.max_batch) for b in bundles]
    report = {"gpu": {"name": gpu.name, "compute_capability": gpu.compute_capability,
                      "memory_mb": round(gpu.total_memory_bytes / 2**20)},
              "canvas_px": CANVAS_PX, "frame_budget_ms": round(FRAME_BUDGET_MS, 2), "cases": cases}
    (args.out / "BENCH_GPU.json").write_text(json.dumps(report, indent=1))
    try:
        _plot(report, args.out / "bench_gpu.png")
    except ImportError as e:  # the figures are in the JSON already; a machine without matplotlib keeps them
        print(f"bench_gpu: no plot ({e})", file=sys.stderr)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
