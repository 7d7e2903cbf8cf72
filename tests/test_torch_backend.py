"""TorchBackend on the CPU against ONNX Runtime, on a fixture bundle (random-init nets) that also carries the nets'
torch weights (<net>.torch.pt, the proposed bundle addition). The CUDA path (FP16, channels_last, CUDA graphs) is the
gpu-marked test (skipped without a GPU)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict

import numpy as np
import pytest
import torch

from models.bundle import load_bundle
from stream.backend import BackendError, OnnxRuntimeBackend
from stream.torch_backend import TorchBackend, load_torch_net, save_torch_net, torch_state_path
from test_bundle_renderer import build_fixture_bundle


def add_torch_states(fixture) -> None:
    """Write <net>.torch.pt for the fixture's nets and list them in the manifest's checksums (as export would)."""
    kinds = {
        "audio_to_expression": ("AudioToExpression", lambda m: dict(
            n_mels=80, n_coeffs=m.head.out_features, width=m.head.in_features, heads=2, layers=1,
            window_frames=m.position.shape[1], lookahead_frames=m.position.shape[1] - 1 - m.anchor)),
        "mouth": ("MouthNet", lambda m: {"widths": [b[0].out_channels for b in m.unet.down]}),
        "shading": ("ShadingCorrection", lambda m: {"hidden": m.mlp[0].out_channels, "max_log_gain": m.max_log_gain}),
    }
    manifest_path = fixture.path / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    for net, module in fixture.nets.items():
        kind, config = kinds[net]
        path = save_torch_net(torch_state_path(fixture.path / manifest["nets"][net]["file"]), kind, config(module),
                              module)
        manifest["sha256"][path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
    manifest_path.write_text(json.dumps(manifest, indent=1))


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    fx = build_fixture_bundle(tmp_path_factory.mktemp("torch") / "avatar")
    add_torch_states(fx)
    return fx


def _feeds(seed=0, m=32):
    rng = np.random.default_rng(seed)
    return {
        "mouth": {"coarse_normals": rng.normal(size=(2, 3, m, m)).astype(np.float32),
                  "idle_albedo": rng.random((2, 3, m, m), dtype=np.float32),
                  "idle_normals": rng.normal(size=(2, 3, m, m)).astype(np.float32),
                  "mouth_mask": (rng.random((2, 1, m, m)) > 0.5).astype(np.float32)},
        "audio_to_expression": {"mel_window": rng.normal(-5, 2, size=(3, 80, 9)).astype(np.float32)},
        "shading": {"normals": rng.normal(size=(1, 3, 1, 50)).astype(np.float32),
                    "sh_shading": rng.random((1, 3, 1, 50), dtype=np.float32)},
    }


def test_cpu_backend_matches_onnxruntime(fixture):
    bundle = load_bundle(fixture.path)  # the manifest checksums cover the torch files too
    backend = TorchBackend(bundle, device="cpu")
    assert backend.name == "torch-cpu" and backend.device == "cpu" and not backend.half
    ort = OnnxRuntimeBackend(bundle, threads=1)
    assert backend.inputs("mouth") == ort.inputs("mouth")
    for net, feed in _feeds().items():
        got, want = backend.run(net, feed), ort.run(net, feed)
        assert list(got) == list(want)
        for k in want:
            assert got[k].dtype == np.float32
            np.testing.assert_allclose(got[k], want[k], atol=2e-4, err_msg=f"{net}.{k}")


def test_bad_inputs_and_weights_are_named(fixture, tmp_path):
    bundle = load_bundle(fixture.path)
    backend = TorchBackend(bundle, device="cpu", nets=["mouth"])
    feed = _feeds()["mouth"]
    with pytest.raises(BackendError, match=r"missing \['mouth_mask'\]"):
        backend.run("mouth", {k: v for k, v in feed.items() if k != "mouth_mask"})
    with pytest.raises(BackendError, match=r"has shape \(2, 3, 16, 16\); the net takes \(N, 3, 32, 32\)"):
        backend.run("mouth", {**feed, "idle_albedo": feed["idle_albedo"][:, :, :16, :16]})
    with pytest.raises(BackendError, match="no net 'shading'"):
        backend.run("shading", {})
    with pytest.raises(BackendError, match="torch.pt is missing"):
        load_torch_net(tmp_path / "mouth.torch.pt")
    (tmp_path / "junk.torch.pt").write_bytes(b"not a zip")
    with pytest.raises(BackendError, match="not a readable"):
        load_torch_net(tmp_path / "junk.torch.pt")
    wrong = tmp_path / "wrong.torch.pt"
    save_torch_net(wrong, "MouthNet", {"widths": [4, 8]}, fixture.nets["mouth"])  # config disagrees with weights
    with pytest.raises(BackendError, match="do not fit a MouthNet"):
        load_torch_net(wrong)
    with pytest.raises(ValueError, match="unknown net kind"):
        save_torch_net(tmp_path / "x.pt", "Resnet", {}, fixture.nets["mouth"])
    with pytest.raises(BackendError, match="CUDA graphs need"):
        TorchBackend(bundle, device="cpu", cuda_graphs=True)


def test_real_a2e_chain_kind_roundtrips(tmp_path):
    from models.enroll.a2e import AudioToLipCoeffs, PersonalHead
    from models.enroll.audio_encoder import EncoderConfig, SpeakerIndependentEncoder

    cfg = EncoderConfig(width=16, past_frames=6, lookahead_frames=2)
    chain = AudioToLipCoeffs(SpeakerIndependentEncoder(cfg), PersonalHead(16 + 4, 5, 8, 0.0, True)).eval()
    path = save_torch_net(tmp_path / "a2e.torch.pt", "AudioToLipCoeffs",
                          {"encoder": asdict(cfg), "head": {"n_in": 20, "n_lip": 5, "hidden": 8, "dropout": 0.0,
                                                            "use_mlp": True}}, chain)
    x = torch.randn(2, 80, cfg.window_frames)
    with torch.no_grad():
        torch.testing.assert_close(load_torch_net(path)(x), chain(x))


@pytest.mark.gpu
def test_cuda_backend_fp16_graphs_close_to_onnxruntime(fixture):
    if not torch.cuda.is_available():
        pytest.skip("torch sees no CUDA device")
    import cupy as cp

    bundle = load_bundle(fixture.path)
    backend = TorchBackend(bundle, device="cuda", nets=["mouth"])
    assert backend.half and backend.channels_last and backend.cuda_graphs
    ort = OnnxRuntimeBackend(bundle, threads=1, nets=["mouth"])
    feed = _feeds()["mouth"]
    for _ in range(2):  # the second call replays the captured graph
        got = backend.run("mouth", {k: cp.asarray(v) for k, v in feed.items()})
    for k, v in ort.run("mouth", feed).items():
        assert isinstance(got[k], cp.ndarray)
        np.testing.assert_allclose(cp.asnumpy(got[k]), v, atol=2e-2)


def test_cuda_graphs_only_for_nets_whose_inputs_vary_only_in_batch():
    from stream.backend import TensorSpec
    from stream.torch_backend import graph_capturable

    mouth = (TensorSpec("coarse_normals", (None, 3, 96, 96), "float32"), TensorSpec("mask", (None, 1, 96, 96), "float32"))
    shading = (TensorSpec("normals", (None, 3, None, None), "float32"),)
    assert graph_capturable(mouth) and not graph_capturable(shading)
