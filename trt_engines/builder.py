"""Build a serialized TensorRT engine from an ONNX file with the real TensorRT Python API.

Builder -> network (strongly typed or not, per the PrecisionPlan) -> OnnxParser -> builder config (workspace, precision
flags, INT8 calibrator, optimization profile for the batch range, TensorRT-RTX compute-capability target) ->
build_serialized_network. Parser and builder failures raise EngineBuildError with TensorRT's own messages.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from trt_engines.api import TrtApi
from trt_engines.precision import PrecisionPlan
from trt_engines.profile import InputShapes

DEFAULT_WORKSPACE_BYTES = 1 << 30  # the avatar's nets are small; 1 GiB leaves tactic choice free


class EngineBuildError(RuntimeError):
    """TensorRT could not parse or build the net; the message carries TensorRT's reasons."""


def network_flags(api: TrtApi, plan: PrecisionPlan) -> int:
    trt = api.trt
    flags = 0
    if plan.strongly_typed:
        if not api.caps.strongly_typed_flag:
            raise EngineBuildError(f"{api.label} cannot create strongly typed networks")
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    elif api.caps.explicit_batch_flag and api.caps.major < 10:
        # Before TensorRT 10 implicit batch was the default, and ONNX graphs need explicit batch.
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    return flags


def rtx_target(api: TrtApi, compute_capability: str | None):
    """TensorRT-RTX's AOT target for a GPU of compute capability "major.minor": its ComputeCapability.SM<major><minor>
    where the module has one, else CURRENT (the GPU in this machine). Naming the GPU lets an engine be built where
    there is none (TensorRT-RTX builds ahead of time on the CPU) for the GPU the cache key names."""
    cc = api.trt.ComputeCapability
    if compute_capability:
        named = getattr(cc, "SM" + compute_capability.replace(".", ""), None)
        if named is not None:
            return named
    return cc.CURRENT


def build_serialized_engine(
    api: TrtApi,
    onnx_path: str | os.PathLike,
    plan: PrecisionPlan,
    shapes: Sequence[InputShapes],
    *,
    calibrator=None,
    workspace_bytes: int = DEFAULT_WORKSPACE_BYTES,
    compute_capability: str | None = None,
    logger=None,
) -> bytes:
    """compute_capability ("major.minor", TensorRT-RTX only): the GPU to build for; None: the one in this machine."""
    trt = api.trt
    if plan.needs_calibrator and calibrator is None:
        raise EngineBuildError("an INT8 build needs a calibrator (calibration data from the enrollment)")
    logger = logger or trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(api, plan))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EngineBuildError(f"TensorRT cannot parse {onnx_path}: " + "; ".join(errors or ["no reason given"]))
    net_inputs = {network.get_input(i).name for i in range(network.num_inputs)}
    given = {s.name for s in shapes}
    if net_inputs != given:
        raise EngineBuildError(f"{onnx_path}: network inputs {sorted(net_inputs)}, profile covers {sorted(given)}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    for flag in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    profile = builder.create_optimization_profile()
    for s in shapes:
        profile.set_shape(s.name, s.min_shape, s.opt_shape, s.max_shape)
    config.add_optimization_profile(profile)
    if plan.needs_calibrator:
        config.int8_calibrator = calibrator
        # Calibration runs at its profile's opt shape, and the calibrator's buffers must be that shape: a profile of
        # its own, fixed at the calibrator's batch (the build profile's opt batch is the live one, usually 1).
        batch = int(calibrator.get_batch_size())
        if not shapes[0].min_shape[0] <= batch <= shapes[0].max_shape[0]:
            raise EngineBuildError(f"calibration batch {batch} is outside the engine's batch range "
                                   f"{shapes[0].min_shape[0]}..{shapes[0].max_shape[0]}")
        calibration = builder.create_optimization_profile()
        for s in shapes:
            fixed = (batch, *s.opt_shape[1:])
            calibration.set_shape(s.name, fixed, fixed, fixed)
        config.set_calibration_profile(calibration)
    if api.caps.compute_capability_targets:
        # TensorRT-RTX builds ahead of time for a list of GPUs: one, the GPU the cache key names.
        config.num_compute_capabilities = 1
        config.set_compute_capability(rtx_target(api, compute_capability), 0)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f"TensorRT ({api.label}) failed to build {onnx_path} at {plan.precision.value}; "
                               "see the TensorRT log above")
    return bytes(serialized)
