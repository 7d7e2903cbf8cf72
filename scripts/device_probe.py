#!/usr/bin/env python3
"""What this machine offers relitcam, as one JSON object on stdout: run it first on a lent GPU machine.

    python3 scripts/device_probe.py [--out probe.json] [--clip .device/clip.mp4]

Reports the Python, the GPU as torch and CuPy see it (name, memory, a tiny computation on it), the versions of
torch / CuPy / ONNX Runtime (and its execution providers) / NumPy / PyAV / LiteRT, whether TensorRT imports, a PyAV
encode + decode round trip, and one run of each of the three MediaPipe face models (models/face/assets) through
LiteRT with the project's own loader (models.face.tflite_model). With --clip, the face detector also runs on the
clip's first frame. Everything is optional: what is missing or fails is listed under "missing" and the exit status
is still 0, on a GPU machine or on a laptop alike. Needs only the standard library to start.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import platform
import sys
import tempfile
import time
import traceback
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# imported (a compiled package that is installed can still fail to load)
PACKAGES = ("numpy", "torch", "cupy", "onnxruntime", "av", "ai_edge_litert", "tensorrt", "tensorrt_rtx")
# only looked up (import name -> distribution): importing matplotlib or scikit-image takes seconds
LOOKED_UP = {"scipy": "scipy", "skimage": "scikit-image", "PIL": "pillow", "matplotlib": "matplotlib",
             "onnx": "onnx", "imageio": "imageio", "rich": "rich", "pytest": "pytest"}
FACE_ASSETS = ROOT / "models" / "face" / "assets"
TFLITE_LOADER = ROOT / "models" / "face" / "tflite_model.py"
FACE_MODELS = ("face_detection_short_range.tflite", "face_landmark.tflite", "selfie_segmentation.tflite")


def _error(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}".strip()[:500]


def packages(missing: list[str]) -> dict:
    out = {}
    for name in PACKAGES:
        try:
            mod = importlib.import_module(name)
            out[name] = {"version": str(getattr(mod, "__version__", None)), "file": getattr(mod, "__file__", None)}
        except BaseException as e:  # a broken native package can raise anything, even SystemExit
            out[name] = {"version": None, "error": _error(e)}
            if name not in ("tensorrt", "tensorrt_rtx"):
                missing.append(f"import {name}: {_error(e)}")
    for name, dist in LOOKED_UP.items():
        spec = importlib.util.find_spec(name)
        if spec is None:
            out[name] = {"version": None, "error": "not found"}
            missing.append(f"import {name}: not found")
            continue
        try:
            version = metadata.version(dist)
        except metadata.PackageNotFoundError:
            version = None
        out[name] = {"version": version, "file": spec.origin}
    # its __init__ needs pkg_resources; relitcam only reads the .dat beside it (models.face.identity.model_path)
    spec = importlib.util.find_spec("face_recognition_models")
    dat = Path(spec.origin).parent / "models" / "dlib_face_recognition_resnet_model_v1.dat" if spec and spec.origin \
        else None
    out["face_recognition_models"] = {"present": bool(dat and dat.is_file()), "file": str(dat) if dat else None}
    if not out["face_recognition_models"]["present"]:
        missing.append("face_recognition_models (dlib face-recognition weights; enroll's mouth stage needs them)")
    return out


def torch_info(missing: list[str]) -> dict:
    try:
        import torch
    except BaseException as e:
        return {"error": _error(e)}
    info = {"version": torch.__version__, "cuda_build": torch.version.cuda, "cuda_available": False, "devices": []}
    try:
        info["cuda_available"] = bool(torch.cuda.is_available())
        for i in range(torch.cuda.device_count() if info["cuda_available"] else 0):
            p = torch.cuda.get_device_properties(i)
            info["devices"].append({"name": p.name, "total_memory_mb": round(p.total_memory / 2**20),
                                    "capability": f"{p.major}.{p.minor}", "multiprocessors": p.multi_processor_count})
        if info["cuda_available"]:
            a = torch.randn(1024, 1024, device="cuda")
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            b = a @ a
            torch.cuda.synchronize()
            info["matmul_1024_ms"] = round((time.perf_counter() - t0) * 1000, 3)
            info["matmul_finite"] = bool(torch.isfinite(b).all())
            info["cudnn"] = torch.backends.cudnn.version()
        else:
            missing.append("torch.cuda: no CUDA device")
    except BaseException as e:
        info["error"] = _error(e)
        missing.append(f"torch.cuda: {_error(e)}")
    return info


def cupy_info(missing: list[str]) -> dict:
    try:
        import cupy as cp
    except BaseException as e:
        return {"error": _error(e)}
    info = {"version": cp.__version__, "device_count": 0, "devices": []}
    try:
        info["device_count"] = int(cp.cuda.runtime.getDeviceCount())
        info["runtime_version"] = int(cp.cuda.runtime.runtimeGetVersion())
        info["driver_version"] = int(cp.cuda.runtime.driverGetVersion())
        for i in range(info["device_count"]):
            p = cp.cuda.runtime.getDeviceProperties(i)
            name = p["name"].decode() if isinstance(p["name"], bytes) else str(p["name"])
            info["devices"].append({"name": name, "total_memory_mb": round(p["totalGlobalMem"] / 2**20),
                                    "compute_capability": f"{p['major']}.{p['minor']}"})
        if info["device_count"]:
            info["sum_arange_1000"] = int(cp.arange(1000).sum().get())  # compiles and runs a kernel: 499500
    except BaseException as e:
        info["error"] = _error(e)
        missing.append(f"cupy CUDA: {_error(e)}")
    return info


def onnxruntime_info() -> dict:
    try:
        import onnxruntime as ort
    except BaseException as e:
        return {"error": _error(e)}
    return {"version": ort.__version__, "providers": list(ort.get_available_providers()),
            "device": ort.get_device()}


def tensorrt_info() -> dict:
    out = {}
    for name in ("tensorrt", "tensorrt_rtx"):
        try:
            mod = importlib.import_module(name)
            out[name] = {"present": True, "version": str(getattr(mod, "__version__", None))}
        except BaseException as e:
            out[name] = {"present": False, "error": _error(e)}
    return out


def av_info(missing: list[str]) -> dict:
    try:
        import av
        import numpy as np
    except BaseException as e:
        missing.append(f"PyAV round trip: {_error(e)}")
        return {"error": _error(e)}
    info = {"version": av.__version__, "ffmpeg": str(getattr(av, "ffmpeg_version_info", None))}
    info["encoders"] = {c: c in av.codecs_available for c in ("libx264", "libx265", "aac", "mpeg4")}
    try:
        codec = "libx264" if info["encoders"]["libx264"] else "mpeg4"
        w, h, n = 64, 48, 12
        frames_in = [np.full((h, w, 3), 16 * k + 20, np.uint8) for k in range(n)]
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "roundtrip.mp4"
            with av.open(str(path), "w") as out:
                s = out.add_stream(codec, rate=25)
                s.width, s.height, s.pix_fmt = w, h, "yuv420p"
                for f in frames_in:
                    for pkt in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                        out.mux(pkt)
                for pkt in s.encode():
                    out.mux(pkt)
            with av.open(str(path)) as inp:
                frames_out = [f.to_ndarray(format="rgb24") for f in inp.decode(video=0)]
            err = max(float(np.abs(a.astype(int) - b.astype(int)).mean()) for a, b in zip(frames_in, frames_out))
        info["roundtrip"] = {"codec": codec, "frames_in": n, "frames_out": len(frames_out),
                             "max_mean_abs_error": round(err, 3), "ok": len(frames_out) == n and err < 8}
        if not info["roundtrip"]["ok"]:
            missing.append(f"PyAV round trip inexact: {info['roundtrip']}")
    except BaseException as e:
        info["roundtrip"] = {"ok": False, "error": _error(e)}
        missing.append(f"PyAV round trip: {_error(e)}")
    return info


def litert_info(missing: list[str]) -> dict:
    try:
        import ai_edge_litert
        import numpy as np

        # the project's loader, read from its file: importing the models.face package would also need SciPy
        spec = importlib.util.spec_from_file_location("relitcam_tflite_model", TFLITE_LOADER)
        loader = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(loader)
        TfliteModel = loader.TfliteModel
    except BaseException as e:
        missing.append(f"LiteRT face models: {_error(e)}")
        return {"error": _error(e)}
    info = {"version": getattr(ai_edge_litert, "__version__", None), "file": ai_edge_litert.__file__, "models": {}}
    for name in FACE_MODELS:
        try:
            model = TfliteModel(FACE_ASSETS / name)
            x = np.random.default_rng(0).uniform(-1, 1, model.input_shape).astype(np.float32)
            times, out = [], {}
            for _ in range(3):
                t0 = time.perf_counter()
                out = model(x)
                times.append((time.perf_counter() - t0) * 1000)
            info["models"][name] = {"input": list(model.input_shape), "ms": round(sorted(times)[1], 3),
                                    "outputs": {k: list(v.shape) for k, v in out.items()},
                                    # same input everywhere: compare these sums across machines
                                    "output_sums": {k: round(float(np.float64(v.sum())), 4) for k, v in out.items()}}
            if not all(np.isfinite(v).all() for v in out.values()):
                missing.append(f"LiteRT {name}: non-finite outputs")
        except BaseException as e:
            info["models"][name] = {"error": _error(e)}
            missing.append(f"LiteRT {name}: {_error(e)}")
    return info


def clip_info(clip: Path, missing: list[str]) -> dict:
    try:
        import av

        from models.face.detector import FaceDetector

        with av.open(str(clip)) as inp:
            v = inp.streams.video[0]
            frame = next(inp.decode(video=0)).to_ndarray(format="rgb24")
            info = {"path": str(clip), "width": v.codec_context.width, "height": v.codec_context.height,
                    "codec": v.codec_context.name, "audio_streams": len(inp.streams.audio),
                    "duration_s": round(float(inp.duration or 0) / 1e6, 2)}
        faces = FaceDetector().detect(frame)
        info["faces_in_first_frame"] = len(faces)
        info["best_score"] = round(faces[0].score, 3) if faces else None
        if not faces:
            missing.append("clip: no face found in the first frame")
        return info
    except BaseException as e:
        missing.append(f"clip {clip}: {_error(e)}")
        return {"path": str(clip), "error": _error(e)}


def probe(clip: Path | None = None) -> dict:
    missing: list[str] = []
    t0 = time.perf_counter()
    report = {"python": {"version": platform.python_version(), "executable": sys.executable,
                         "platform": platform.platform(), "machine": platform.machine()}}
    report["packages"] = packages(missing)
    report["torch"] = torch_info(missing)
    report["cupy"] = cupy_info(missing)
    report["onnxruntime"] = onnxruntime_info()
    report["tensorrt"] = tensorrt_info()
    report["av"] = av_info(missing)
    report["litert"] = litert_info(missing)
    if clip is not None:
        report["clip"] = clip_info(clip, missing)
    t, c = report["torch"], report["cupy"]
    report["gpu"] = bool(t.get("devices")) or bool(c.get("device_count"))
    report["gpu_name"] = (t.get("devices") or c.get("devices") or [{}])[0].get("name")
    report["missing"] = missing
    report["seconds"] = round(time.perf_counter() - t0, 2)
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, help="also write the JSON here")
    p.add_argument("--clip", type=Path, help="a video: decode its first frame and run the face detector on it")
    p.add_argument("--quiet", action="store_true", help="print one summary line instead of the JSON")
    args = p.parse_args(argv)
    try:
        report = probe(args.clip)
    except BaseException as e:  # a bug here must still leave a report
        report = {"error": _error(e), "traceback": traceback.format_exc()[-2000:], "missing": ["probe crashed"]}
    text = json.dumps(report, indent=1, default=str)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    if not args.quiet:
        print(text)
        return 0
    models = report.get("litert", {}).get("models", {})
    print(f"device_probe: python {report.get('python', {}).get('version')}, gpu {report.get('gpu_name')}, "
          f"torch {report.get('torch', {}).get('version')}, cupy {report.get('cupy', {}).get('version')}, "
          f"av {report.get('av', {}).get('version')}, litert {report.get('litert', {}).get('version')} "
          f"({sum('error' not in m for m in models.values())}/{len(FACE_MODELS)} face models ran), "
          f"tensorrt {report.get('tensorrt', {}).get('tensorrt', {}).get('present')}; "
          f"{len(report.get('missing', []))} missing: " + "; ".join(report.get("missing", [])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
