"""Nets: shapes, output ranges, and ONNX export equal to torch under ONNX Runtime."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import torch

from models.enroll.nets import AudioToExpression, DecompositionNet, MouthNet, ShadingCorrection


def _export_and_run(net, args, names, tmp_path):
    path = tmp_path / "net.onnx"
    net.eval()
    torch.onnx.export(net, args, str(path), input_names=names, dynamo=False, opset_version=17)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {n: a.numpy() for n, a in zip(names, args)})


def test_decomposition_ranges_and_onnx(tmp_path):
    torch.manual_seed(0)
    net = DecompositionNet(widths=(8, 16))
    image = torch.rand(1, 3, 32, 32)
    coarse = torch.nn.functional.normalize(torch.randn(1, 3, 32, 32), dim=1)
    with torch.no_grad():
        normals, residual, albedo, spec = net(image, coarse)
    assert torch.allclose(normals.norm(dim=1), torch.ones(1, 32, 32), atol=1e-5)
    assert residual.abs().max() <= 0.5 and 0 <= albedo.min() and albedo.max() <= 1 and spec.max() <= 1
    outs = _export_and_run(net, (image, coarse), ["image", "coarse_normals"], tmp_path)
    np.testing.assert_allclose(outs[2], albedo.numpy(), atol=1e-4)


def test_mouth_net_and_shading_correction(tmp_path):
    torch.manual_seed(0)
    net = MouthNet(widths=(8, 16))
    args = (torch.randn(2, 3, 24, 24), torch.rand(2, 3, 24, 24), torch.randn(2, 3, 24, 24), torch.rand(2, 1, 24, 24))
    with torch.no_grad():
        albedo, normals, spec, blend = net(*args)
    assert albedo.shape == (2, 3, 24, 24) and blend.shape == (2, 1, 24, 24)
    outs = _export_and_run(net, args, ["coarse_normals", "idle_albedo", "idle_normals", "mouth_mask"], tmp_path)
    np.testing.assert_allclose(outs[3], blend.numpy(), atol=1e-4)
    corr = ShadingCorrection()
    shade = torch.rand(1, 3, 8, 8)
    ratio = corr(torch.randn(1, 3, 8, 8), shade) / shade
    assert ratio.min() >= np.exp(-0.7) - 1e-5 and ratio.max() <= np.exp(0.7) + 1e-5


def test_audio_to_expression_shape_and_onnx(tmp_path):
    torch.manual_seed(0)
    net = AudioToExpression(n_mels=20, n_coeffs=6, width=32, heads=2, layers=1, window_frames=12, lookahead_frames=3)
    net.eval()
    mel = torch.randn(1, 20, 12)
    with torch.no_grad():
        out = net(mel)
    assert out.shape == (1, 6)
    outs = _export_and_run(net, (mel,), ["mel_window"], tmp_path)
    np.testing.assert_allclose(outs[0], out.numpy(), atol=1e-4)
