"""The engine build half of the GPU path against the real TensorRT-RTX, on the CPU.

TensorRT-RTX builds engines ahead of time without a GPU (its "CPU-only AOT"): the real ONNX parser, strongly typed
network, optimization profiles and builder run here on the shipped avatar's nets, through the same code the
TensorRT backend uses (engine requests, precision plan, engine cache). Running an engine needs a GPU and is not
tested here (tests/test_trt_engines.py's gpu-marked test)."""

from __future__ import annotations

import dataclasses

import pytest

trt = pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX is not installed (pip install tensorrt-rtx)")

from models.bundle import load_bundle  # noqa: E402
from stream.bundle_renderer import DEFAULT_BUNDLE  # noqa: E402
from trt_engines.api import TrtApi, capabilities_of  # noqa: E402
from trt_engines.backend import engine_requests  # noqa: E402
from trt_engines.builder import EngineBuildError, build_serialized_engine  # noqa: E402
from trt_engines.cache import EngineCache  # noqa: E402
from trt_engines.device import GpuInfo  # noqa: E402
from trt_engines.engines import get_engine  # noqa: E402
from trt_engines.precision import plan_precision  # noqa: E402
from trt_engines.profile import BatchProfile, profile_shapes  # noqa: E402

RTX_4090 = GpuInfo(device_id=0, name="NVIDIA GeForce RTX 4090", compute_capability="8.9", total_memory_bytes=0)


@pytest.fixture(scope="module")
def api():
    return TrtApi(trt, capabilities_of(trt, "tensorrt_rtx"))


def test_the_shipped_avatars_nets_build_into_rtx_engines_and_are_cached(api, tmp_path):
    assert api.caps.strongly_typed_flag and api.caps.compute_capability_targets and not api.caps.weak_typing
    bundle = load_bundle(DEFAULT_BUNDLE)
    cache = EngineCache(tmp_path / "engines")
    requests = engine_requests(bundle, bundle.nets, profile=BatchProfile(1, 1, 4))
    assert {r.net for r in requests} >= {"audio_to_expression", "mouth"}
    for req in requests:
        blob, build = get_engine(api, RTX_4090, req, cache)
        assert len(blob) > 100_000 and not build.from_cache and build.engine_path.is_file()
        # Strongly typed: fp16 from the FP16 graph derived from the bundle's fp32 net, as the report says.
        assert build.precision == "fp16" and any("FP16 ONNX derived" in n for n in build.notes), build.describe()
        again, build = get_engine(api, RTX_4090, req, cache)
        assert build.from_cache and again == blob
        fp32, build = get_engine(api, RTX_4090, dataclasses.replace(req, precision="fp32"), cache)
        assert build.precision == "fp32" and not build.notes and fp32 != blob
        # What TensorRT makes of the derived graph: most layers compute in half precision.
        (derived,) = cache.root.glob(f"{req.net}-*.fp16.onnx")
        half, full = layer_precisions(derived)
        assert half >= full, f"{req.net}: {half} half-precision layers, {full} single"
    # Another GPU is another engine: the cached ones are named as not reusable, and it is built anew.
    other = GpuInfo(0, "NVIDIA GeForce RTX 3080", "8.6", 0)
    _, build = get_engine(api, other, requests[0], cache)
    assert not build.from_cache and any("not reusable" in n and "gpu_name" in n for n in build.notes)


def layer_precisions(onnx_path) -> tuple[int, int]:
    """(layers whose output is half, layers whose output is float) once TensorRT-RTX has parsed `onnx_path`."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    assert parser.parse_from_file(str(onnx_path))
    dtypes = [network.get_layer(i).get_output(0).dtype for i in range(network.num_layers)]
    return sum(d == trt.DataType.HALF for d in dtypes), sum(d == trt.DataType.FLOAT for d in dtypes)


def test_the_real_parser_and_builder_refuse_with_their_reasons(api, tmp_path):
    plan = plan_precision("fp32", api.caps, has_fp16_onnx=False)
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x08\x07 this is not a protobuf of a model")
    shapes = profile_shapes({"mel_window": [-1, 80, 33]}, BatchProfile())
    with pytest.raises(EngineBuildError, match="TensorRT cannot parse .*broken.onnx: .+"):
        build_serialized_engine(api, broken, plan, shapes, compute_capability="8.9")
    a2e = DEFAULT_BUNDLE / "audio_to_expression.onnx"
    with pytest.raises(EngineBuildError, match=r"network inputs \['mel_window'\], profile covers \['mel'\]"):
        build_serialized_engine(api, a2e, plan, profile_shapes({"mel": [-1, 80, 33]}, BatchProfile()),
                                compute_capability="8.9")
