"""trt_engines/fp16_onnx.py: the FP16 graphs strongly typed TensorRT builds fp16 engines from, checked on the CPU.

ONNX Runtime runs each shipped net and its FP16 copy on what the live chain feeds it (speech -> mel windows ->
audio_to_expression -> driven mouth inputs; idle normals under turned lightings; relit idle frames for the
decomposition), and the copy must stay within the INT8 rule's 40 dB of the fp32 net (calibration/acceptance.py):
half precision may not be a visible change."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto

from calibration.acceptance import INT8_MIN_PSNR_DB, worst_psnr_db
from calibration.data import chain_samples, lighting_variants, mel_windows_at_times, shading_samples
from models.audio import read_wav
from stream.bundle_renderer import DEFAULT_BUNDLE, BundleRenderer
from trt_engines.fp16_onnx import FP32_OPS, to_fp16, write_fp16_onnx

SPEECH = DEFAULT_BUNDLE.parent.parent / "assets" / "speech_sample.wav"


@pytest.fixture(scope="module")
def live_samples():
    renderer = BundleRenderer(DEFAULT_BUNDLE, use_shading_net=False)
    clip = read_wav(SPEECH)
    frames = np.arange(0, int(clip.duration_s * renderer.fps) - 1, 9)
    windows = mel_windows_at_times(clip.samples, clip.sample_rate_hz, frames / renderer.fps,
                                   renderer.mel_past_frames, renderer.mel_lookahead_frames)
    a2e, mouth = chain_samples(renderer, windows, frames)
    lightings = lighting_variants(renderer.bundle.sh_coeffs, 4)
    shading = shading_samples(renderer, frames[:8], lightings)
    decomposition = []
    for k in frames[:4]:
        layers = renderer.decode_layers(renderer.loop_frame(int(k)))
        image = renderer.relight(layers, lightings[int(k) % 4])
        decomposition.append({"image": image.transpose(2, 0, 1)[None].copy(),
                              "coarse_normals": layers.normals.transpose(2, 0, 1)[None].copy()})
    return {"audio_to_expression": a2e, "mouth": mouth, "shading": shading, "decomposition": decomposition}


@pytest.mark.parametrize("net", ["audio_to_expression", "mouth", "shading", "decomposition"])
def test_the_fp16_copy_of_each_shipped_net_matches_it_on_live_inputs(net, live_samples, tmp_path):
    src = DEFAULT_BUNDLE / f"{net}.onnx"
    dst = write_fp16_onnx(src, tmp_path / f"{net}.fp16.onnx")
    model = onnx.load(str(dst))
    # The callers' side is unchanged: float32 in and out.
    assert all(t.type.tensor_type.elem_type == TensorProto.FLOAT for t in [*model.graph.input, *model.graph.output])
    halves = sum(t.data_type == TensorProto.FLOAT16 for t in model.graph.initializer)
    assert halves >= 0.5 * len(model.graph.initializer)
    samples = live_samples[net]
    fp32 = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"])
    fp16 = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"])
    names = [o.name for o in fp32.get_outputs()]
    ref = [dict(zip(names, fp32.run(None, s))) for s in samples]
    got = [dict(zip(names, fp16.run(None, s))) for s in samples]
    worst, output = worst_psnr_db(net, ref, got)
    assert worst >= INT8_MIN_PSNR_DB, f"{net}: fp16 copy {worst:.1f} dB from fp32 on {output!r}"


def test_what_stays_fp32():
    model = onnx.load(str(DEFAULT_BUNDLE / "mouth.onnx"))
    half = to_fp16(model)
    inferred = onnx.shape_inference.infer_shapes(half).graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*inferred.value_info, *inferred.input, *inferred.output]}
    types.update({t.name: t.data_type for t in half.graph.initializer})
    resizes = [n for n in half.graph.node if n.op_type == "Resize"]
    assert resizes and all(types[n.input[2]] == TensorProto.FLOAT for n in resizes if len(n.input) > 2 and n.input[2])
    assert all(types[n.input[0]] == TensorProto.FLOAT16 for n in resizes)  # the data itself is half
    for node in half.graph.node:
        if node.op_type in FP32_OPS:
            assert all(types.get(i, TensorProto.FLOAT) == TensorProto.FLOAT for i in node.input if i), node.name
    convs = [n for n in half.graph.node if n.op_type == "Conv"]
    assert convs and all(types[n.input[1]] == TensorProto.FLOAT16 for n in convs)


def test_values_beyond_half_precision_are_clipped_not_made_infinite():
    from onnx import helper, numpy_helper

    mask = numpy_helper.from_array(np.array([0.0, -1e9, 3.0], np.float32), "mask")
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "mask"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])], [mask])
    half = to_fp16(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    (converted,) = half.graph.initializer
    assert converted.data_type == TensorProto.FLOAT16
    np.testing.assert_array_equal(numpy_helper.to_array(converted), np.array([0.0, -65504.0, 3.0], np.float16))
    session = ort.InferenceSession(half.SerializeToString(), providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {"x": np.array([1.0, 2.0, 0.5], np.float32)})
    assert y.dtype == np.float32 and np.isfinite(y).all() and y[2] == 3.5
