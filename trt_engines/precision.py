"""How an engine of a wanted precision is built with the TensorRT at hand (a pure decision, tested on CPU).

fp32: the ONNX as it is; every TensorRT can.
fp16: weakly typed TensorRT (10.x): BuilderFlag.FP16 on the fp32 graph. Strongly typed only (11.x, RTX): the graph's
      own types decide, so an FP16 ONNX is needed (the bundle's `<net>.fp16.onnx`, else one derived from the fp32
      net, trt_engines/fp16_onnx.py); without one the engine is fp32 and the plan says why.
int8: weakly typed TensorRT with calibrators: BuilderFlag.INT8 + FP16 (layers INT8 cannot run stay FP16) and an
      entropy calibrator fed with the user's enrollment data. Elsewhere implicit INT8 does not exist (explicit Q/DQ
      graphs are not produced by relitcam): the plan falls back to fp16 and says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from trt_engines.api import TrtCapabilities


class Precision(str, Enum):
    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"


def parse_precision(value: str | Precision) -> Precision:
    try:
        return Precision(value)
    except ValueError:
        raise ValueError(f"precision must be one of {[p.value for p in Precision]}, got {value!r}") from None


@dataclass(frozen=True)
class PrecisionPlan:
    """What to build. `precision` is what the engine will really be (it can be lower than asked: see `note`)."""

    requested: Precision
    precision: Precision
    strongly_typed: bool  # create the network with NetworkDefinitionCreationFlag.STRONGLY_TYPED
    builder_flags: tuple[str, ...]  # BuilderFlag names to set
    needs_calibrator: bool
    use_fp16_onnx: bool  # parse `<net>.fp16.onnx` instead of `<net>.onnx`
    note: str = ""  # why `precision` differs from `requested`; empty when it does not


def plan_precision(requested: str | Precision, caps: TrtCapabilities, *, has_fp16_onnx: bool) -> PrecisionPlan:
    want = parse_precision(requested)
    if want is Precision.FP32:
        return PrecisionPlan(want, want, caps.strongly_typed_flag and not caps.weak_typing, (), False, False)
    if caps.weak_typing:
        if want is Precision.FP16:
            return PrecisionPlan(want, want, False, ("FP16",), False, False)
        if caps.int8_calibration:
            return PrecisionPlan(want, want, False, ("FP16", "INT8"), True, False)
        return PrecisionPlan(want, Precision.FP16, False, ("FP16",), False, False,
                             note=f"{caps.module_name} {caps.version} has no INT8 calibrator; built fp16")
    # Strongly typed only: the ONNX's types are the engine's types.
    int8_note = (f"{caps.module_name} {caps.version} has no implicit INT8 (needs Q/DQ nodes in the ONNX); "
                 if want is Precision.INT8 else "")
    if has_fp16_onnx:
        return PrecisionPlan(want, Precision.FP16, True, (), False, True,
                             note=int8_note + "built fp16" if int8_note else "")
    return PrecisionPlan(want, Precision.FP32, True, (), False, False,
                         note=int8_note + f"{caps.module_name} {caps.version} is strongly typed and the bundle has no "
                         "FP16 ONNX of this net; built fp32")
