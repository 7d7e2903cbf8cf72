"""The ONNX Runtime backend on a fixture bundle (random-init nets; see tests/test_bundle_renderer.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.bundle import load_bundle
from stream.backend import Backend, BackendError, OnnxRuntimeBackend, TensorSpec, available_backends, create_backend
from test_bundle_renderer import build_fixture_bundle


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    return build_fixture_bundle(tmp_path_factory.mktemp("backend") / "avatar", shading_net=False)


def _mouth_inputs(seed: int = 0, m: int = 32) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "coarse_normals": rng.normal(size=(1, 3, m, m)).astype(np.float32),
        "idle_albedo": rng.random((1, 3, m, m), dtype=np.float32),
        "idle_normals": rng.normal(size=(1, 3, m, m)).astype(np.float32),
        "mouth_mask": (rng.random((1, 1, m, m)) > 0.5).astype(np.float32),
    }


def test_runs_the_bundle_nets_like_torch(fixture):
    backend = create_backend("onnxruntime", load_bundle(fixture.path))
    assert isinstance(backend, Backend) and backend.device == "cpu"
    assert set(backend.net_names()) == {"audio_to_expression", "mouth"}
    assert backend.inputs("mouth")[0] == TensorSpec("coarse_normals", (None, 3, 32, 32), "float32")
    feed = _mouth_inputs()
    out = backend.run("mouth", feed)
    assert list(out) == ["albedo", "normals", "spec_weight", "blend"]
    with torch.no_grad():
        want = fixture.nets["mouth"](*(torch.from_numpy(feed[k]) for k in feed))
    for got, ref in zip(out.values(), want):
        np.testing.assert_allclose(got, ref.numpy(), atol=1e-4)
    # The batch axis is dynamic: two crops in one call give the two single-crop answers.
    pair = {k: np.concatenate([v, _mouth_inputs(1)[k]]) for k, v in feed.items()}
    np.testing.assert_allclose(backend.run("mouth", pair)["blend"][:1], out["blend"], atol=1e-5)


def test_float64_and_int_inputs_are_converted(fixture):
    backend = OnnxRuntimeBackend(load_bundle(fixture.path), threads=1, nets=["mouth"])
    feed = _mouth_inputs()
    as64 = {k: v.astype(np.float64) for k, v in feed.items()}
    np.testing.assert_allclose(backend.run("mouth", as64)["albedo"], backend.run("mouth", feed)["albedo"], atol=1e-6)


def test_wrong_names_and_shapes_are_named(fixture):
    bundle = load_bundle(fixture.path)
    backend = OnnxRuntimeBackend(bundle, nets=["mouth"])
    with pytest.raises(BackendError, match=r"no net 'audio_to_expression'; loaded nets: \['mouth'\]"):
        backend.run("audio_to_expression", {})
    feed = _mouth_inputs()
    with pytest.raises(BackendError, match=r"missing \['mouth_mask'\]"):
        backend.run("mouth", {k: v for k, v in feed.items() if k != "mouth_mask"})
    with pytest.raises(BackendError, match=r"unexpected \['extra'\]"):
        backend.run("mouth", {**feed, "extra": feed["mouth_mask"]})
    with pytest.raises(BackendError, match=r"'idle_albedo' has shape \(1, 3, 16, 16\); the net takes \(N, 3, 32, 32\)"):
        backend.run("mouth", {**feed, "idle_albedo": feed["idle_albedo"][:, :, :16, :16]})
    with pytest.raises(BackendError, match="numeric array"):
        backend.run("mouth", {**feed, "mouth_mask": np.array(["a"])})
    with pytest.raises(BackendError, match=r"no net\(s\) \['tensorrt_mouth'\]"):
        OnnxRuntimeBackend(bundle, nets=["tensorrt_mouth"])
    with pytest.raises(BackendError, match="thread count must be >= 1"):
        OnnxRuntimeBackend(bundle, threads=0)


def test_backend_registry():
    assert "onnxruntime" in available_backends()
    # tensorrt is known but cannot start without a GPU, and says so; a made-up name is unknown. Both list what can
    # run here.
    with pytest.raises(BackendError, match=r"backend 'tensorrt' cannot run on this machine \(no CUDA GPU visible to "
                                           r"CuPy.*\); usable here: \['onnxruntime'"):
        create_backend("tensorrt", None)
    with pytest.raises(BackendError, match=r"'torch-cuda' cannot run on this machine \(torch .* sees no CUDA device"):
        create_backend("torch-cuda", None)
    with pytest.raises(BackendError, match="unknown backend 'nonsense'.*usable here: \\['onnxruntime'"):
        create_backend("nonsense", None)


def test_damaged_onnx_is_a_backend_error(fixture, tmp_path):
    import shutil

    copy = tmp_path / "avatar"
    shutil.copytree(fixture.path, copy)
    bundle = load_bundle(copy)
    (copy / "mouth.onnx").write_bytes(b"\x08\x07garbage")  # after validation: the session itself must refuse it
    with pytest.raises(BackendError, match="ONNX Runtime cannot load it"):
        OnnxRuntimeBackend(bundle, nets=["mouth"])
