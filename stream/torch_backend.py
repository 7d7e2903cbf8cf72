"""TorchBackend: the bundle's nets as torch modules (FP16, channels_last and CUDA graphs on CUDA; fp32 on CPU).

ONNX cannot be loaded into torch, so a bundle that wants this backend carries, next to each `<net>.onnx`, a
`<net>.torch.pt` written by `save_torch_net`: {"format", "version", "kind", "config", "state_dict"}. `kind` names a
class of models/enroll (NET_KINDS) and `config` its constructor arguments, so nothing but tensors and plain values is
unpickled (torch.load(weights_only=True)). Inputs and outputs follow the bundle's NetSpec order, the same names and
shapes as the ONNX graph (docs/bundle.md).

device "cpu": NumPy in, NumPy out (a reference and the CPU test of this backend against ONNX Runtime).
device "cuda": CuPy arrays (or torch CUDA tensors) in, CuPy float32 out, exchanged zero-copy through DLPack. Weights
and activations are FP16 (inputs cast on the way in, outputs back to float32), 4-D inputs channels_last (tensor-core
convolutions want NHWC), and with cuda_graphs=True each input shape is captured once into a CUDA graph and replayed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.bundle import AvatarBundle
from stream.backend import BackendError, NetTable, TensorSpec

FORMAT = "relitcam-torch-net"
VERSION = 1
MAX_GRAPHS_PER_NET = 4  # each captured shape pins its static buffers; a handful of batch sizes is plenty


def torch_state_path(onnx_path: Path) -> Path:
    return onnx_path.with_name(onnx_path.stem + ".torch.pt")


def _mouth(config):
    from models.enroll.nets import MouthNet

    return MouthNet(widths=tuple(config["widths"]))


def _shading(config):
    from models.enroll.nets import ShadingCorrection

    return ShadingCorrection(**config)


def _decomposition(config):
    from models.enroll.nets import DecompositionNet

    return DecompositionNet(**{**config, "widths": tuple(config["widths"])})


def _audio_to_expression(config):
    from models.enroll.nets import AudioToExpression

    return AudioToExpression(**config)


def _audio_to_lip_coeffs(config):
    from models.enroll.a2e import AudioToLipCoeffs, PersonalHead
    from models.enroll.audio_encoder import EncoderConfig, SpeakerIndependentEncoder

    return AudioToLipCoeffs(SpeakerIndependentEncoder(EncoderConfig(**config["encoder"])), PersonalHead(**config["head"]))


# kind -> constructor from a plain config dict. The kinds are the classes enrollment exports.
NET_KINDS: dict[str, Callable[[dict], Any]] = {
    "MouthNet": _mouth,
    "ShadingCorrection": _shading,
    "DecompositionNet": _decomposition,
    "AudioToExpression": _audio_to_expression,
    "AudioToLipCoeffs": _audio_to_lip_coeffs,
}


def save_torch_net(path: str | os.PathLike, kind: str, config: Mapping | Any, module) -> Path:
    """Write `module`'s weights in the format TorchBackend reads (for enrollment export and test fixtures)."""
    import torch

    if kind not in NET_KINDS:
        raise ValueError(f"unknown net kind {kind!r}; known: {sorted(NET_KINDS)}")
    cfg = asdict(config) if is_dataclass(config) else dict(config)
    blob = {"format": FORMAT, "version": VERSION, "kind": kind, "config": cfg,
            "state_dict": {k: v.detach().cpu() for k, v in module.state_dict().items()}}
    path = Path(path)
    torch.save(blob, path)
    return path


def load_torch_net(path: str | os.PathLike):
    """The eval-mode module stored at `path`; BackendError naming the problem otherwise."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise BackendError(f"{path.name} is missing: the torch backend needs the nets' weights next to their ONNX "
                           "(bundle files <net>.torch.pt, which enrollment does not write yet; docs/gpu.md); "
                           "--backend tensorrt or onnxruntime runs this bundle")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise BackendError(f"{path}: not a readable torch weights file ({type(e).__name__}: {e})") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT or blob.get("version") != VERSION:
        raise BackendError(f"{path}: not a {FORMAT} v{VERSION} file")
    kind = blob.get("kind")
    if kind not in NET_KINDS:
        raise BackendError(f"{path}: net kind {kind!r} unknown to this relitcam (knows {sorted(NET_KINDS)})")
    try:
        module = NET_KINDS[kind](blob["config"])
        module.load_state_dict(blob["state_dict"])
    except Exception as e:  # wrong config keys, or weights that do not fit the config
        raise BackendError(f"{path}: weights do not fit a {kind} built from its config ({e})") from None
    return module.eval()


def _specs(shapes: Mapping[str, list[int]]) -> tuple[TensorSpec, ...]:
    return tuple(TensorSpec(n, tuple(None if d < 0 else int(d) for d in s), "float32") for n, s in shapes.items())


def graph_capturable(inputs: Iterable[TensorSpec]) -> bool:
    """Whether CUDA graphs pay for a net: only its batch axis may vary. A net fed other sizes every call (the shading
    net's pixel strips) would capture a graph per size, each capture synchronising the device, none replayed."""
    return all(d is not None for spec in inputs for d in spec.shape[1:])


class TorchBackend(NetTable):
    """Backend protocol over torch modules; see the module doc. device: "cuda" (default) or "cpu"."""

    def __init__(self, bundle: AvatarBundle, threads: int | None = None, *, nets: Iterable[str] | None = None,
                 device: str = "cuda", half: bool | None = None, channels_last: bool | None = None,
                 cuda_graphs: bool | None = None, **_cpu_options: Any) -> None:
        import torch

        if device not in ("cuda", "cpu"):
            raise BackendError(f"torch backend device must be 'cuda' or 'cpu', got {device!r}")
        if device == "cuda" and not torch.cuda.is_available():
            raise BackendError("torch backend: torch sees no CUDA device")
        on_cuda = device == "cuda"
        self.name = "torch-cuda" if on_cuda else "torch-cpu"
        self.device = device
        self.half = on_cuda if half is None else bool(half)
        self.channels_last = on_cuda if channels_last is None else bool(channels_last)
        self.cuda_graphs = on_cuda if cuda_graphs is None else bool(cuda_graphs)
        if self.cuda_graphs and not on_cuda:
            raise BackendError("CUDA graphs need device='cuda'")
        if threads is not None and not on_cuda:
            torch.set_num_threads(int(threads))
        self._torch = torch
        self._dtype = torch.float16 if self.half else torch.float32
        wanted = tuple(bundle.nets) if nets is None else tuple(nets)
        unknown = [n for n in wanted if n not in bundle.nets]
        if unknown:
            raise BackendError(f"bundle {bundle.path} has no net(s) {unknown}; it has {sorted(bundle.nets)}")
        self._modules, self._inputs, self._outputs = {}, {}, {}
        self._graphs: dict[tuple, tuple] = {}
        for net in wanted:
            module = load_torch_net(torch_state_path(bundle.net_path(net))).to(device=device, dtype=self._dtype)
            if self.channels_last:
                module = module.to(memory_format=torch.channels_last)
            self._modules[net] = module
            self._inputs[net] = _specs(bundle.nets[net].inputs)
            self._outputs[net] = _specs(bundle.nets[net].outputs)

    def _to_torch(self, net: str, name: str, value):
        torch = self._torch
        if self.device == "cpu":
            if type(value).__module__.startswith("cupy"):
                raise BackendError(f"net {net!r} input {name!r}: the torch-cpu backend takes NumPy arrays, got CuPy")
            t = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
        else:
            t = value if isinstance(value, torch.Tensor) else torch.from_dlpack(value)
            t = t.to(device="cuda", dtype=self._dtype, non_blocking=True)
        if self.channels_last and t.ndim == 4:
            t = t.contiguous(memory_format=torch.channels_last)
        return t

    def _from_torch(self, t):
        t = t.float().contiguous()
        if self.device == "cpu":
            return t.numpy()
        import cupy as cp

        return cp.from_dlpack(t)

    def run(self, net: str, inputs: Mapping[str, Any]) -> dict[str, Any]:
        from trt_engines.feed import check_feed

        self._check_net(net)
        check_feed(net, self._inputs[net], inputs)
        args = [self._to_torch(net, s.name, inputs[s.name]) for s in self._inputs[net]]
        with self._torch.inference_mode():
            graphs = self.cuda_graphs and graph_capturable(self._inputs[net])
            outs = self._graph_run(net, args) if graphs else self._modules[net](*args)
        outs = outs if isinstance(outs, (tuple, list)) else (outs,)
        names = [s.name for s in self._outputs[net]]
        if len(outs) != len(names):
            raise BackendError(f"net {net!r}: the torch module returned {len(outs)} outputs, the bundle lists {names}")
        return {n: self._from_torch(o) for n, o in zip(names, outs)}

    def _graph_run(self, net: str, args: list):
        torch = self._torch
        key = (net, *(tuple(a.shape) for a in args))
        entry = self._graphs.get(key)
        if entry is None:
            if sum(1 for k in self._graphs if k[0] == net) >= MAX_GRAPHS_PER_NET:
                return self._modules[net](*args)
            static_in = [a.clone() for a in args]
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm-up off the capture: cuDNN picks its kernels here
                for _ in range(2):
                    self._modules[net](*static_in)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = self._modules[net](*static_in)
            entry = self._graphs[key] = (graph, static_in, static_out)
        graph, static_in, static_out = entry
        for dst, src in zip(static_in, args):
            dst.copy_(src)
        graph.replay()
        outs = static_out if isinstance(static_out, (tuple, list)) else (static_out,)
        return tuple(o.clone() for o in outs)  # the next replay overwrites the static outputs


def torch_cuda_unusable() -> str:
    """Why torch cannot run the nets on a GPU here ("" when it can)."""
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    return "" if torch.cuda.is_available() else f"torch {torch.__version__} sees no CUDA device"
