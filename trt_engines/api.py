"""Which TensorRT Python module this machine has, and what its API can do.

relitcam builds engines with either NVIDIA TensorRT (`import tensorrt`) or TensorRT for RTX (`import tensorrt_rtx`).
They share the builder/runtime concepts (Builder, OnnxParser, IBuilderConfig, optimization profiles, ICudaEngine,
IExecutionContext with set_tensor_address + execute_async_v3) but differ where it matters here:

  * TensorRT 10.x: weakly typed networks; reduced precision is asked for with BuilderFlag.FP16 / BuilderFlag.INT8
    and INT8 ranges come from an IInt8EntropyCalibrator2 (deprecated since 10.1, still working).
  * TensorRT 11.x: weak typing is gone (no BuilderFlag.FP16/INT8, no calibrators, networks are strongly typed): the
    precision is the ONNX file's own types, and INT8 needs explicit Q/DQ nodes in the graph.
  * TensorRT-RTX: strongly typed as 11.x, no calibrators and no timing cache; engines are built ahead of time for a
    set of compute capabilities (IBuilderConfig.set_compute_capability; ComputeCapability.CURRENT = this GPU) and
    JIT-specialised at first run.
  * TensorRT 8.x and older 10.x builds still need NetworkDefinitionCreationFlag.EXPLICIT_BATCH; in 10.x it is the
    default and deprecated, in 11.x and RTX it is gone.

Nothing here decides by version number alone: `capabilities_of` probes the module's attributes, so a point release
that drops or adds a symbol is seen as it is. The module is chosen at first use: RELITCAM_TRT_MODULE=tensorrt or
tensorrt_rtx forces one, otherwise tensorrt, then tensorrt_rtx.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from types import ModuleType

MODULE_NAMES = ("tensorrt", "tensorrt_rtx")
ENV_MODULE = "RELITCAM_TRT_MODULE"


class TensorRTUnavailable(RuntimeError):
    """No usable TensorRT module (not installed, or its native libraries do not load); the message says which."""


@dataclass(frozen=True)
class TrtCapabilities:
    """What the imported TensorRT module can do, found by probing its attributes (see the module doc)."""

    module_name: str  # "tensorrt" or "tensorrt_rtx"
    version: str  # module.__version__
    weak_typing: bool  # BuilderFlag.FP16 / INT8 exist: precision chosen by flags on an fp32 graph
    int8_calibration: bool  # IInt8EntropyCalibrator2 and IBuilderConfig.int8_calibrator exist
    strongly_typed_flag: bool  # NetworkDefinitionCreationFlag.STRONGLY_TYPED exists
    explicit_batch_flag: bool  # NetworkDefinitionCreationFlag.EXPLICIT_BATCH exists (needed before TRT 10)
    compute_capability_targets: bool  # TensorRT-RTX style AOT targets (ComputeCapability.CURRENT)

    @property
    def major(self) -> int:
        head = self.version.split(".", 1)[0]
        return int(head) if head.isdigit() else 0


def capabilities_of(module: ModuleType | object, module_name: str) -> TrtCapabilities:
    """Probe a TensorRT Python module (or anything shaped like one, for tests)."""
    flags = getattr(module, "BuilderFlag", None)
    creation = getattr(module, "NetworkDefinitionCreationFlag", None)
    config_cls = getattr(module, "IBuilderConfig", None)
    cc = getattr(module, "ComputeCapability", None)
    return TrtCapabilities(
        module_name=module_name,
        version=str(getattr(module, "__version__", "0")),
        weak_typing=flags is not None and hasattr(flags, "FP16") and hasattr(flags, "INT8"),
        int8_calibration=hasattr(module, "IInt8EntropyCalibrator2")
        and (config_cls is None or hasattr(config_cls, "int8_calibrator")),
        strongly_typed_flag=creation is not None and hasattr(creation, "STRONGLY_TYPED"),
        explicit_batch_flag=creation is not None and hasattr(creation, "EXPLICIT_BATCH"),
        compute_capability_targets=cc is not None and hasattr(cc, "CURRENT"),
    )


@dataclass(frozen=True)
class TrtApi:
    """The imported module with its capabilities; everything that builds or runs engines takes one of these."""

    trt: ModuleType
    caps: TrtCapabilities

    @property
    def label(self) -> str:
        return f"{self.caps.module_name} {self.caps.version}"


def module_order(env_value: str | None) -> tuple[str, ...]:
    """Modules to try, in order: the forced one alone, or both (TensorRT first: it has INT8 calibration)."""
    if env_value:
        if env_value not in MODULE_NAMES:
            raise TensorRTUnavailable(f"{ENV_MODULE}={env_value!r}; expected one of {MODULE_NAMES}")
        return (env_value,)
    return MODULE_NAMES


_CACHED: TrtApi | None = None


def load_trt() -> TrtApi:
    """Import TensorRT (or TensorRT-RTX) once; TensorRTUnavailable with every reason when neither imports."""
    global _CACHED
    if _CACHED is not None:
        return _CACHED
    reasons = []
    for name in module_order(os.environ.get(ENV_MODULE)):
        try:
            module = importlib.import_module(name)
        except Exception as e:  # ImportError, or OSError from a missing libnvinfer / CUDA driver
            reasons.append(f"{name}: {type(e).__name__}: {e}")
            continue
        _CACHED = TrtApi(module, capabilities_of(module, name))
        return _CACHED
    raise TensorRTUnavailable("no TensorRT Python module could be imported (" + "; ".join(reasons) + ")")
