"""trt_engines on the CPU: capability probing, precision plans, profiles, the engine cache, the builder's calls
against a fake TensorRT module, backend fallback and multi-session batching (ONNX Runtime). The real TensorRT path is
the gpu-marked test at the end (skipped without a GPU and TensorRT)."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import numpy as np
import pytest

from models.bundle import load_bundle
from stream.backend import BackendError, OnnxRuntimeBackend
from test_bundle_renderer import build_fixture_bundle
from trt_engines.api import TrtApi, capabilities_of, module_order, TensorRTUnavailable
from trt_engines.batching import BatchedRunner, run_batched
from trt_engines.builder import EngineBuildError, build_serialized_engine, network_flags, rtx_target
from trt_engines.cache import EngineCache, EngineKey
from trt_engines.fallback import FallbackBackend, create_first_usable
from trt_engines.precision import Precision, plan_precision
from trt_engines.profile import BatchProfile, profile_key, profile_shapes


def fake_trt(version="10.8.0", weak=True, calib=True, strong=True, explicit=True, rtx=False):
    flags = SimpleNamespace(**({"FP16": 1, "INT8": 2} if weak else {}))
    creation = SimpleNamespace(**({"STRONGLY_TYPED": 1} if strong else {}), **({"EXPLICIT_BATCH": 0} if explicit else {}))
    mod = SimpleNamespace(__version__=version, BuilderFlag=flags, NetworkDefinitionCreationFlag=creation)
    if calib:
        mod.IInt8EntropyCalibrator2 = type("IInt8EntropyCalibrator2", (), {})
    if rtx:
        mod.ComputeCapability = SimpleNamespace(CURRENT=99, SM89=89)
    return mod


TRT10 = capabilities_of(fake_trt(), "tensorrt")
TRT11 = capabilities_of(fake_trt("11.4.0", weak=False, calib=False, explicit=False), "tensorrt")
RTX = capabilities_of(fake_trt("1.7.1", weak=False, calib=False, explicit=False, rtx=True), "tensorrt_rtx")


def test_capabilities_are_probed_not_guessed():
    assert TRT10.weak_typing and TRT10.int8_calibration and TRT10.major == 10
    assert not TRT11.weak_typing and not TRT11.int8_calibration and TRT11.strongly_typed_flag
    assert RTX.compute_capability_targets and not RTX.weak_typing
    assert module_order(None) == ("tensorrt", "tensorrt_rtx")
    assert module_order("tensorrt_rtx") == ("tensorrt_rtx",)
    with pytest.raises(TensorRTUnavailable, match="expected one of"):
        module_order("onnx")


def test_precision_plans():
    p = plan_precision("int8", TRT10, has_fp16_onnx=False)
    assert p.precision is Precision.INT8 and p.builder_flags == ("FP16", "INT8") and p.needs_calibrator
    assert not p.strongly_typed and not p.note
    assert plan_precision("fp16", TRT10, has_fp16_onnx=True).builder_flags == ("FP16",)
    # Strongly typed only: the ONNX's types decide.
    p = plan_precision("fp16", TRT11, has_fp16_onnx=True)
    assert p.precision is Precision.FP16 and p.use_fp16_onnx and p.strongly_typed and p.builder_flags == ()
    p = plan_precision("fp16", RTX, has_fp16_onnx=False)
    assert p.precision is Precision.FP32 and "no FP16 ONNX" in p.note
    p = plan_precision("int8", TRT11, has_fp16_onnx=True)
    assert p.precision is Precision.FP16 and "no implicit INT8" in p.note and not p.needs_calibrator
    no_calib = capabilities_of(fake_trt(calib=False), "tensorrt")
    assert plan_precision("int8", no_calib, has_fp16_onnx=False).precision is Precision.FP16
    assert plan_precision("fp32", TRT10, has_fp16_onnx=False).builder_flags == ()
    with pytest.raises(ValueError, match="precision must be one of"):
        plan_precision("bf16", TRT10, has_fp16_onnx=False)


def test_profile_shapes():
    shapes = profile_shapes({"x": [-1, 3, 32, 32], "m": [-1, 1, 32, 32]}, BatchProfile(1, 4, 8))
    assert shapes[0].min_shape == (1, 3, 32, 32) and shapes[0].opt_shape == (4, 3, 32, 32)
    assert shapes[1].max_shape == (8, 1, 32, 32)
    assert profile_key(shapes) == profile_key(shapes[::-1])  # order-free
    with pytest.raises(ValueError, match="dynamic non-batch axes"):
        profile_shapes({"n": [-1, 3, -1, -1]}, BatchProfile())
    fixed = profile_shapes({"n": [-1, 3, -1, -1]}, BatchProfile(), {"n": [3, 64, 64]})
    assert fixed[0].max_shape == (8, 3, 64, 64)
    with pytest.raises(ValueError, match="does not fit"):
        profile_shapes({"n": [-1, 3, -1, -1]}, BatchProfile(), {"n": [4, 64, 64]})
    with pytest.raises(ValueError, match="min <= opt <= max"):
        BatchProfile(2, 1, 4)


def _key(**kw):
    base = dict(net="mouth", onnx_sha256="a" * 64, gpu_name="NVIDIA H100", compute_capability="9.0",
                trt_module="tensorrt", trt_version="10.8.0", precision="fp16", profile="x:1x3/4x3/8x3")
    return EngineKey(**{**base, **kw})


def test_engine_cache_roundtrip_and_stale_detection(tmp_path):
    cache = EngineCache(tmp_path)
    key = _key()
    assert cache.load(key) is None
    cache.store(key, b"engine-bytes")
    assert cache.load(key) == b"engine-bytes"
    # Another GPU or TensorRT: a different file, not reused, and reported as the reason for rebuilding.
    other = _key(gpu_name="NVIDIA RTX 4090", compute_capability="8.9", trt_version="10.9.0")
    assert other.file_stem() != key.file_stem() and cache.load(other) is None
    (stale,) = cache.stale_engines(other)
    assert any("gpu_name" in w for w in stale[1]) and any("trt_version" in w for w in stale[1])
    # Another precision of the same net is a different build, not a stale one.
    assert cache.stale_engines(_key(precision="int8")) == []
    # A damaged engine file is not handed to TensorRT.
    engine, _ = cache.paths(key)
    engine.write_bytes(b"engine-byt")
    assert cache.load(key) is None


class _Recorder:
    """A fake TensorRT module that records what the builder asks of it."""

    def __init__(self, caps_module, inputs=("x",), parse_ok=True, build_ok=True):
        self.calls = []
        rec = self
        mod = caps_module

        class Logger:
            WARNING = 2

            def __init__(self, level):
                pass

        class Network:
            num_inputs = len(inputs)

            def get_input(self, i):
                return SimpleNamespace(name=inputs[i])

        class Parser:
            num_errors = 0 if parse_ok else 1

            def __init__(self, network, logger):
                pass

            def parse_from_file(self, path):
                rec.calls.append(("parse", path))
                return parse_ok

            def get_error(self, i):
                return "unsupported op Foo"

        class Profile:
            def set_shape(self, *a):
                rec.calls.append(("set_shape", a))

        class Config:
            def set_memory_pool_limit(self, pool, size):
                rec.calls.append(("workspace", size))

            def set_flag(self, flag):
                rec.calls.append(("flag", flag))

            def add_optimization_profile(self, p):
                rec.calls.append(("profile",))

            def set_calibration_profile(self, p):
                rec.calls.append(("calibration_profile",))

            def set_compute_capability(self, cc, i):
                rec.calls.append(("compute_capability", cc, i))

            def __setattr__(self, name, value):
                rec.calls.append(("set", name))
                object.__setattr__(self, name, value)

        class Builder:
            def __init__(self, logger):
                pass

            def create_network(self, flags):
                rec.calls.append(("network_flags", flags))
                return Network()

            def create_builder_config(self):
                return Config()

            def create_optimization_profile(self):
                return Profile()

            def build_serialized_network(self, network, config):
                return b"serialized" if build_ok else None

        mod.Logger, mod.Builder, mod.OnnxParser = Logger, Builder, Parser
        mod.MemoryPoolType = SimpleNamespace(WORKSPACE=0)
        self.module = mod


def test_builder_drives_the_tensorrt_api(tmp_path):
    shapes = profile_shapes({"x": [-1, 3, 8, 8]}, BatchProfile(1, 2, 4))
    rec = _Recorder(fake_trt())
    api = TrtApi(rec.module, capabilities_of(rec.module, "tensorrt"))
    plan = plan_precision("int8", api.caps, has_fp16_onnx=False)
    calibrator = SimpleNamespace(get_batch_size=lambda: 3)
    assert build_serialized_engine(api, tmp_path / "m.onnx", plan, shapes, calibrator=calibrator) == b"serialized"
    names = [c[0] for c in rec.calls]
    assert ("flag", 1) in rec.calls and ("flag", 2) in rec.calls  # FP16 and INT8
    assert ("set", "int8_calibrator") in rec.calls and "calibration_profile" in names
    assert ("set_shape", ("x", (1, 3, 8, 8), (2, 3, 8, 8), (4, 3, 8, 8))) in rec.calls
    # Calibration has a profile of its own, fixed at the calibrator's batch (TensorRT calibrates at opt).
    assert ("set_shape", ("x", (3, 3, 8, 8), (3, 3, 8, 8), (3, 3, 8, 8))) in rec.calls
    with pytest.raises(EngineBuildError, match="calibration batch 9 is outside the engine's batch range 1..4"):
        build_serialized_engine(api, "m.onnx", plan, shapes, calibrator=SimpleNamespace(get_batch_size=lambda: 9))
    assert ("network_flags", 0) in rec.calls  # TRT 10: explicit batch is the default, no flag
    with pytest.raises(EngineBuildError, match="needs a calibrator"):
        build_serialized_engine(api, "m.onnx", plan, shapes)
    # Strongly typed RTX: the STRONGLY_TYPED bit, no precision flags, this GPU as the AOT target.
    rec = _Recorder(fake_trt("1.7.1", weak=False, calib=False, explicit=False, rtx=True))
    api = TrtApi(rec.module, capabilities_of(rec.module, "tensorrt_rtx"))
    plan = plan_precision("fp16", api.caps, has_fp16_onnx=True)
    build_serialized_engine(api, "m.fp16.onnx", plan, shapes)
    assert ("network_flags", 1 << 1) in rec.calls and ("compute_capability", 99, 0) in rec.calls
    assert not [c for c in rec.calls if c[0] == "flag"]
    # A named GPU is the target where the module knows it (ahead of time, no GPU needed), else this machine's.
    build_serialized_engine(api, "m.fp16.onnx", plan, shapes, compute_capability="8.9")
    assert ("compute_capability", 89, 0) in rec.calls
    assert rtx_target(api, "9.0") == 99 and rtx_target(api, None) == 99
    assert network_flags(TrtApi(fake_trt("8.6.1"), capabilities_of(fake_trt("8.6.1"), "tensorrt")),
                         plan_precision("fp16", TRT10, has_fp16_onnx=False)) == 1 << 0
    rec = _Recorder(fake_trt(), parse_ok=False)
    api = TrtApi(rec.module, capabilities_of(rec.module, "tensorrt"))
    with pytest.raises(EngineBuildError, match="unsupported op Foo"):
        build_serialized_engine(api, "m.onnx", plan_precision("fp32", api.caps, has_fp16_onnx=False), shapes)
    rec = _Recorder(fake_trt(), inputs=("x", "y"))
    api = TrtApi(rec.module, capabilities_of(rec.module, "tensorrt"))
    with pytest.raises(EngineBuildError, match="profile covers"):
        build_serialized_engine(api, "m.onnx", plan_precision("fp32", api.caps, has_fp16_onnx=False), shapes)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return load_bundle(build_fixture_bundle(tmp_path_factory.mktemp("trt") / "avatar", shading_net=False).path)


def _mouth_inputs(seed, m=32):
    rng = np.random.default_rng(seed)
    return {"coarse_normals": rng.normal(size=(1, 3, m, m)).astype(np.float32),
            "idle_albedo": rng.random((1, 3, m, m), dtype=np.float32),
            "idle_normals": rng.normal(size=(1, 3, m, m)).astype(np.float32),
            "mouth_mask": (rng.random((1, 1, m, m)) > 0.5).astype(np.float32)}


class _Broken:
    name, device = "broken", "cpu"

    def __init__(self, inner):
        self.inner = inner

    def net_names(self):
        return self.inner.net_names()

    def inputs(self, net):
        return self.inner.inputs(net)

    def outputs(self, net):
        return self.inner.outputs(net)

    def run(self, net, inputs):
        if set(inputs) != {s.name for s in self.inputs(net)}:
            raise BackendError("bad names")
        raise RuntimeError("CUDA error: an illegal memory access was encountered")


def test_fallback_switches_backend_mid_stream(bundle):
    ort = OnnxRuntimeBackend(bundle, threads=1, nets=["mouth"])
    fb = FallbackBackend([("broken", lambda: _Broken(ort)), ("onnxruntime", lambda: ort)])
    assert fb.name == "broken"
    feed = _mouth_inputs(0)
    out = fb.run("mouth", feed)  # the failing backend is replaced and the same call answered
    assert fb.name == "onnxruntime" and "illegal memory access" in fb.reasons[0]
    np.testing.assert_allclose(out["blend"], ort.run("mouth", feed)["blend"])
    with pytest.raises(BackendError, match="missing"):  # input mistakes are not a reason to switch
        fb.run("mouth", {k: v for k, v in feed.items() if k != "mouth_mask"})
    with pytest.raises(BackendError, match="every backend failed"):
        FallbackBackend([("a", lambda: (_ for _ in ()).throw(RuntimeError("no GPU")))])


def test_create_first_usable_reports_why(bundle):
    backend, reasons = create_first_usable(bundle, options={"onnxruntime": {"threads": 1, "nets": ["mouth"]}})
    assert backend.name == "onnxruntime"
    assert [r.split(":")[0] for r in reasons] == ["tensorrt", "torch-cuda"]


def test_run_batched_equals_single_calls(bundle):
    ort = OnnxRuntimeBackend(bundle, threads=1, nets=["mouth"])
    feeds = [_mouth_inputs(s) for s in range(3)]
    outs = run_batched(ort, "mouth", feeds)
    for feed, out in zip(feeds, outs):
        single = ort.run("mouth", feed)
        for k in single:
            np.testing.assert_allclose(out[k], single[k], atol=1e-5)
    with pytest.raises(ValueError, match="batch axis 1"):
        run_batched(ort, "mouth", [{k: np.concatenate([v, v]) for k, v in feeds[0].items()}])


def test_batched_runner_gathers_sessions_into_one_call(bundle):
    ort = OnnxRuntimeBackend(bundle, threads=1, nets=["mouth"])
    runner = BatchedRunner(ort, "mouth", max_batch=4, window_s=0.5)
    feeds = [_mouth_inputs(s) for s in range(4)]
    results = [None] * 4
    barrier = threading.Barrier(4)

    def session(i):
        barrier.wait()
        results[i] = runner.run(feeds[i], timeout_s=10)

    threads = [threading.Thread(target=session, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert runner.calls == 1 and runner.batch_sizes == [4]
    for feed, out in zip(feeds, results):
        np.testing.assert_allclose(out["albedo"], ort.run("mouth", feed)["albedo"], atol=1e-5)
    # A bad request fails its own future; the worker keeps serving.
    bad = runner.submit({"coarse_normals": feeds[0]["coarse_normals"]})
    with pytest.raises(BackendError):
        bad.result(timeout=10)
    assert runner.run(feeds[0], timeout_s=10)["blend"].shape == (1, 1, 32, 32)
    runner.close()


@pytest.mark.gpu
def test_tensorrt_backend_matches_onnxruntime(bundle, tmp_path):
    pytest.importorskip("tensorrt", reason="needs the tensorrt Python package")
    from trt_engines.backend import TensorRTBackend, host

    trt_backend = TensorRTBackend(bundle, nets=["mouth"], precision="fp32", cache_dir=str(tmp_path))
    ort = OnnxRuntimeBackend(bundle, threads=1, nets=["mouth"])
    feed = _mouth_inputs(0)
    got = trt_backend.run("mouth", feed)
    for k, v in ort.run("mouth", feed).items():
        np.testing.assert_allclose(host(got[k]), v, atol=1e-3)
    again = TensorRTBackend(bundle, nets=["mouth"], precision="fp32", cache_dir=str(tmp_path))
    assert again.builds["mouth"].from_cache
