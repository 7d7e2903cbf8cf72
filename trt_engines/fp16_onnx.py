"""An FP16 copy of an FP32 ONNX net, for strongly typed TensorRT (TensorRT-RTX, TensorRT 11).

Strongly typed TensorRT runs a net in the precision its ONNX says, so an fp16 engine needs an fp16 graph. Bundles
ship fp32 nets (what ONNX Runtime runs on the CPU); `to_fp16` derives the fp16 graph from one, the way the engine
cache derives engines: nothing new in the bundle, any bundle works.

What stays fp32, and why:
  * the net's inputs and outputs: callers feed and read float32, as with every other backend (one Cast at each);
  * normalisations and exponentials (`FP32_OPS`): their sums over a whole feature map, and exp's range, are where
    half precision loses digits or overflows; each such node gets fp32 inputs and hands fp16 on (Range too: ONNX
    defines it for no float16);
  * Resize's `roi` and `scales` (ONNX requires float32 there) and everything computed only to feed them.
Everything else that is float becomes float16: weights, constants, Cast-to-float nodes and the tensors between.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# Precision: sums over a feature map, exp's range. Typing: ONNX's Range has no float16.
FP32_OPS = frozenset({"InstanceNormalization", "LayerNormalization", "ReduceL2", "Exp", "Range"})
_FLOAT32_ONLY_INPUTS = {"Resize": (1, 2)}  # op -> input positions ONNX types as float32 whatever the data is
FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16
FP16_CONVERSION_VERSION = 1  # part of a derived file's name: a changed conversion is not served from an old file


def _float_tensors(model: onnx.ModelProto) -> set[str]:
    """Names of every float32 tensor in the graph (inputs, initializers, node outputs), from shape inference."""
    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    infos = [*g.input, *g.output, *g.value_info]
    names = {i.name for i in infos if i.type.tensor_type.elem_type == FLOAT}
    names |= {t.name for t in g.initializer if t.data_type == FLOAT}
    for node in g.node:
        if node.op_type == "Constant":
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            if value is not None and value.data_type == FLOAT:
                names.add(node.output[0])
    return names


def _kept_fp32(model: onnx.ModelProto, floats: set[str]) -> set[str]:
    """Float tensors that must stay float32: Resize's roi/scales and, upstream, whatever only computes them."""
    producer = {out: node for node in model.graph.node for out in node.output}
    todo = [node.input[i] for node in model.graph.node
            for i in _FLOAT32_ONLY_INPUTS.get(node.op_type, ()) if i < len(node.input) and node.input[i]]
    kept: set[str] = set()
    while todo:
        name = todo.pop()
        if name in kept or name not in floats:
            continue
        kept.add(name)
        node = producer.get(name)
        if node is not None and node.op_type != "Cast":  # a Cast starts the float chain (from shapes, ints)
            todo.extend(i for i in node.input if i)
    return kept


def _half(tensor: onnx.TensorProto) -> onnx.TensorProto:
    """`tensor` as float16; finite values beyond half's range are clipped to its largest (a -1e9 mask stays a mask
    instead of becoming -inf, whose products with 0 are NaN)."""
    values = numpy_helper.to_array(tensor)
    big = float(np.finfo(np.float16).max)
    values = np.where(np.isfinite(values), np.clip(values, -big, big), values)
    return numpy_helper.from_array(values.astype(np.float16), tensor.name)


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """The fp16 graph of `model` (see the module doc); inputs and outputs keep their float32 type."""
    floats = _float_tensors(model)
    kept = _kept_fp32(model, floats)
    src = onnx.ModelProto()
    src.CopyFrom(model)
    g = src.graph
    graph_inputs = {i.name for i in g.input}

    # The type each float tensor will have: fp32 for the kept ones, graph inputs and FP32_OPS outputs.
    fp32_nodes = {k for k, n in enumerate(g.node) if n.op_type in FP32_OPS or any(o in kept for o in n.output)}
    dtype = {}
    for name in floats:
        dtype[name] = FLOAT if (name in kept or name in graph_inputs) else HALF
    for k, node in enumerate(g.node):
        if k in fp32_nodes:
            dtype.update({o: FLOAT for o in node.output if o in floats})

    for t in g.initializer:
        if t.name in dtype and dtype[t.name] == HALF:
            t.CopyFrom(_half(t))
    new_nodes = []
    casts: dict[tuple[str, int], str] = {}

    def as_type(name: str, want: int) -> str:
        """`name` as `want`: itself, or the output of one Cast node shared by every consumer that needs it."""
        if name not in dtype or dtype[name] == want:
            return name
        key = (name, want)
        if key not in casts:
            casts[key] = f"{name}__as_{'fp16' if want == HALF else 'fp32'}"
            new_nodes.append(helper.make_node("Cast", [name], [casts[key]], to=want, name=casts[key] + "_cast"))
        return casts[key]

    for k, node in enumerate(g.node):
        want = FLOAT if k in fp32_nodes else HALF
        fixed = _FLOAT32_ONLY_INPUTS.get(node.op_type, ())
        for i, name in enumerate(node.input):
            if name:
                node.input[i] = as_type(name, FLOAT if i in fixed else want)
        if node.op_type == "Cast" and node.output[0] in dtype:
            for a in node.attribute:
                if a.name == "to":
                    a.i = dtype[node.output[0]]
        if node.op_type == "Constant" and node.output[0] in dtype and dtype[node.output[0]] == HALF:
            for a in node.attribute:
                if a.name == "value":
                    a.t.CopyFrom(_half(a.t))
        new_nodes.append(node)

    # Outputs leave as float32: the producer writes a half tensor, one Cast makes the named output.
    for out in g.output:
        if dtype.get(out.name) == HALF:
            inner = f"{out.name}__fp16"
            for node in new_nodes:
                node.input[:] = [inner if i == out.name else i for i in node.input]
                node.output[:] = [inner if o == out.name else o for o in node.output]
            new_nodes.append(helper.make_node("Cast", [inner], [out.name], to=FLOAT, name=out.name + "_to_fp32"))
    del g.node[:]
    g.node.extend(new_nodes)
    del g.value_info[:]  # their float types are stale; the checker re-infers
    onnx.checker.check_model(src, full_check=True)
    return src


def write_fp16_onnx(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Convert the ONNX file `src` and write it to `dst` atomically (a reader never sees half a file)."""
    from models.lighting.files import atomic_write_bytes

    model = to_fp16(onnx.load(str(src)))
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(dst, model.SerializeToString())
    return Path(dst)
