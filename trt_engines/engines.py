"""Get an engine for one net: from the cache when its key matches, else built (and cached), with a report.

Order of work for a net:
  1. plan the precision for this TensorRT (trt_engines/precision.py); strongly typed TensorRT builds fp16 from an
     FP16 ONNX, the bundle's or one derived from the fp32 net (trt_engines/fp16_onnx.py);
  2. key = (ONNX sha256, GPU name, compute capability, TensorRT module + version, precision, profile, calibration
     digest); a cached engine with that exact key is used; engines of the same net for another GPU / TensorRT are
     named in the report as the reason for rebuilding;
  3. INT8 with calibration data: build INT8 and FP16, run the held-out inputs through both, and keep INT8 only if
     calibration/acceptance.py's rule says so; without calibration data INT8 is not attempted (FP16, noted).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from calibration.acceptance import PrecisionDecision, choose_precision
from calibration.data import NetSamples
from models.enroll.workdir import file_sha256
from trt_engines.api import TrtApi
from trt_engines.builder import build_serialized_engine
from trt_engines.cache import EngineCache, EngineKey
from trt_engines.device import GpuInfo
from trt_engines.fp16_onnx import FP16_CONVERSION_VERSION, write_fp16_onnx
from trt_engines.precision import Precision, PrecisionPlan, parse_precision, plan_precision
from trt_engines.profile import BatchProfile, profile_key, profile_shapes

CALIBRATION_BATCH = 8


@dataclass
class NetBuild:
    """What became of one net: the engine's real precision, whether it came from the cache, and why."""

    net: str
    requested: str
    precision: str
    from_cache: bool
    engine_path: Path | None
    notes: list[str] = field(default_factory=list)
    decision: PrecisionDecision | None = None

    def describe(self) -> str:
        src = "cached" if self.from_cache else "built"
        text = f"{self.net}: {self.precision} engine ({src}; asked {self.requested})"
        return text + "".join(f"\n  - {n}" for n in self.notes)


def fp16_onnx_path(onnx_path: Path) -> Path:
    """Where a bundle keeps the FP16 export of a net for strongly typed TensorRT: `<net>.fp16.onnx`."""
    return onnx_path.with_name(onnx_path.stem + ".fp16.onnx")


def fp16_source(req: "EngineRequest", cache: EngineCache, notes: list[str]) -> Path | None:
    """The FP16 ONNX for `req`'s net: the bundle's own `<net>.fp16.onnx`, else one derived from the fp32 net
    (trt_engines/fp16_onnx.py) and kept beside the engines, named by the fp32 file's digest. None, with the reason
    in `notes`, if the net cannot be converted."""
    shipped = fp16_onnx_path(req.onnx_path)
    if shipped.is_file():
        return shipped
    derived = cache.root / f"{req.net}-{file_sha256(req.onnx_path)[:16]}-v{FP16_CONVERSION_VERSION}.fp16.onnx"
    if not derived.is_file():
        try:
            write_fp16_onnx(req.onnx_path, derived)
        except Exception as e:  # an op the converter does not know: fp32 is still a working engine
            notes.append(f"no FP16 ONNX could be derived from {req.onnx_path.name} ({type(e).__name__}: {e})")
            return None
    notes.append(f"FP16 ONNX derived from {req.onnx_path.name} (inputs and outputs stay float32)")
    return derived


@dataclass(frozen=True)
class EngineRequest:
    net: str
    onnx_path: Path
    inputs: Mapping[str, Sequence[int]]  # name -> shape, -1 dynamic (the bundle's NetSpec.inputs)
    precision: str = "fp16"
    profile: BatchProfile = BatchProfile()
    fixed_dims: Mapping[str, Sequence[int]] | None = None
    fp16_onnx: Path | None = None  # the FP16 graph strongly typed TensorRT builds fp16 from (fp16_source)

    def onnx_for(self, plan: PrecisionPlan) -> Path:
        if plan.use_fp16_onnx:
            if self.fp16_onnx is None:
                raise ValueError(f"net {self.net!r}: an fp16 plan without an FP16 ONNX")
            return self.fp16_onnx
        return self.onnx_path


def engine_key(req: EngineRequest, plan: PrecisionPlan, gpu: GpuInfo, api: TrtApi, calibration_digest: str = "") -> EngineKey:
    onnx = req.onnx_for(plan)
    shapes = profile_shapes(req.inputs, req.profile, req.fixed_dims)
    return EngineKey(net=req.net, onnx_sha256=file_sha256(onnx), gpu_name=gpu.name,
                     compute_capability=gpu.compute_capability, trt_module=api.caps.module_name,
                     trt_version=api.caps.version, precision=plan.precision.value, profile=profile_key(shapes),
                     calibration_sha256=calibration_digest)


def _load_or_build(api: TrtApi, gpu: GpuInfo, req: EngineRequest, plan: PrecisionPlan, cache: EngineCache,
                   notes: list[str], calibrator_factory: Callable[[], object] | None = None,
                   calibration_digest: str = "") -> tuple[bytes, bool, Path]:
    key = engine_key(req, plan, gpu, api, calibration_digest)
    blob = cache.load(key)
    if blob is not None:
        return blob, True, cache.paths(key)[0]
    for path, why in cache.stale_engines(key):
        notes.append(f"cached engine {path.name} not reusable: " + ", ".join(why) + "; rebuilding")
    onnx = req.onnx_for(plan)
    shapes = profile_shapes(req.inputs, req.profile, req.fixed_dims)
    blob = build_serialized_engine(api, onnx, plan, shapes,
                                   calibrator=calibrator_factory() if calibrator_factory else None,
                                   compute_capability=gpu.compute_capability)
    path = cache.store(key, blob, extra={"note": plan.note})
    return blob, False, path


def get_engine(api: TrtApi, gpu: GpuInfo, req: EngineRequest, cache: EngineCache,
               samples: NetSamples | None = None,
               run_engine: Callable[[bytes, list], list] | None = None,
               calibration_dir: str | os.PathLike | None = None) -> tuple[bytes, NetBuild]:
    """The engine bytes for `req` and its NetBuild report.

    samples: the net's calibration + held-out inputs (INT8 only). run_engine(engine_bytes, inputs) -> outputs runs an
    engine on host inputs and returns host outputs (the acceptance rule needs both engines' answers).
    """
    notes: list[str] = []
    if parse_precision(req.precision) is not Precision.FP32 and not api.caps.weak_typing:
        req = dataclasses.replace(req, fp16_onnx=fp16_source(req, cache, notes))
    has_fp16 = req.fp16_onnx is not None
    plan = plan_precision(req.precision, api.caps, has_fp16_onnx=has_fp16)
    notes += [plan.note] if plan.note else []
    if plan.needs_calibrator and (samples is None or not samples.calibration or not samples.held_out
                                  or run_engine is None):
        notes.append("no calibration data from the enrollment for this net; INT8 not attempted, FP16 used")
        plan = plan_precision(Precision.FP16, api.caps, has_fp16_onnx=has_fp16)
    if not plan.needs_calibrator:
        blob, cached, path = _load_or_build(api, gpu, req, plan, cache, notes)
        return blob, NetBuild(req.net, req.precision, plan.precision.value, cached, path, notes)

    from calibration.calibrator import CalibrationBatcher, CalibrationCache, make_entropy_calibrator

    names = list(req.inputs)
    batch = min(CALIBRATION_BATCH, req.profile.max_batch, len(samples.calibration))
    batcher = CalibrationBatcher(samples.calibration, batch, names)
    digest = batcher.data_digest()
    table = CalibrationCache(Path(calibration_dir or cache.root) / f"{req.net}-{digest[:16]}.calib")

    def calibrator():
        import cupy as cp

        return make_entropy_calibrator(api.trt.IInt8EntropyCalibrator2, batcher, table, cp.asarray,
                                       lambda a: a.data.ptr)

    fp16_plan = plan_precision(Precision.FP16, api.caps, has_fp16_onnx=has_fp16)
    int8_blob, int8_cached, int8_path = _load_or_build(api, gpu, req, plan, cache, notes, calibrator, digest)
    fp16_blob, fp16_cached, fp16_path = _load_or_build(api, gpu, req, fp16_plan, cache, notes)
    decision = choose_precision(req.net, run_engine(fp16_blob, samples.held_out), run_engine(int8_blob, samples.held_out))
    notes.append(decision.describe())
    if decision.precision == "int8":
        return int8_blob, NetBuild(req.net, req.precision, "int8", int8_cached, int8_path, notes, decision)
    return fp16_blob, NetBuild(req.net, req.precision, fp16_plan.precision.value, fp16_cached, fp16_path, notes,
                               decision)
