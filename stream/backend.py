"""Backends run an avatar bundle's nets by name: `run(net, {input: array}) -> {output: array}`.

The renderer never asks which backend it holds. ONNX Runtime on the CPU is the one implemented here; torch-CUDA and
TensorRT backends are further implementations of the same `Backend` protocol (device arrays in, device arrays out,
same names and shapes as docs/bundle.md), registered in `_FACTORIES` when they exist.

Inputs are checked against the net's declared inputs before anything runs, so a wrong name, rank or fixed size is a
`BackendError` naming the net and the tensor, not an opaque runtime failure deep inside the session.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from models.bundle import AvatarBundle


class BackendError(ValueError):
    """A net or tensor asked of a backend does not exist or does not fit; the message names which and why."""


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a net. `shape` uses None for a dynamic axis (the batch axis, usually)."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str  # numpy dtype name, "float32" for every net of format version 1


@runtime_checkable
class Backend(Protocol):
    name: str  # "onnxruntime", later "torch-cuda", "tensorrt"
    device: str  # "cpu" or "cuda": which array library `run` takes and returns (NumPy or CuPy)

    def net_names(self) -> tuple[str, ...]: ...

    def inputs(self, net: str) -> tuple[TensorSpec, ...]: ...

    def outputs(self, net: str) -> tuple[TensorSpec, ...]: ...

    def run(self, net: str, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Run `net` once; every declared input must be given, nothing else. Outputs by name."""
        ...


def _onnx_dtype(type_string: str) -> str:
    # ORT reports "tensor(float)"; the bundle contract only uses float tensors, but say so if one differs.
    table = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
             "tensor(int64)": "int64", "tensor(int32)": "int32"}
    if type_string not in table:
        raise BackendError(f"unsupported ONNX tensor type {type_string}")
    return table[type_string]


def _spec_of(arg) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) and d > 0 else None for d in arg.shape)
    return TensorSpec(arg.name, shape, _onnx_dtype(arg.type))


def default_threads() -> int:
    """Intra-op threads per net: the cores there are, at most 2.

    The live pipeline also needs a core for audio, compositing and encoding; on the 2-core target two threads per net
    still won (mouth net at 64 px: 7.5 ms vs 8.6 ms, at 96 px 13.6 vs 21.0 ms), and more never helps nets this small.
    """
    return max(1, min(2, os.cpu_count() or 1))


class NetTable:
    """The per-net input/output specs every backend keeps, and the lookups the Backend protocol asks of them.

    A subclass fills `self._inputs[net]` and `self._outputs[net]` as it loads each net.
    """

    name: str
    _inputs: dict[str, tuple[TensorSpec, ...]]
    _outputs: dict[str, tuple[TensorSpec, ...]]

    def net_names(self) -> tuple[str, ...]:
        return tuple(self._inputs)

    def _check_net(self, net: str) -> None:
        if net not in self._inputs:
            raise BackendError(f"backend {self.name} has no net {net!r}; loaded nets: {sorted(self._inputs)}")

    def inputs(self, net: str) -> tuple[TensorSpec, ...]:
        self._check_net(net)
        return self._inputs[net]

    def outputs(self, net: str) -> tuple[TensorSpec, ...]:
        self._check_net(net)
        return self._outputs[net]


class OnnxRuntimeBackend(NetTable):
    """One ONNX Runtime CPU session per net of `bundle`, all graph optimisations on.

    threads: intra-op threads for every net (default `default_threads()`); `threads_per_net` overrides single nets
    (a tiny net such as audio_to_expression runs faster on one thread: splitting it costs more than it saves).
    nets: which of the bundle's nets to load (default all); the live renderer skips the enrollment-only ones.
    spin: let idle ORT worker threads busy-wait. Off by default: on 2 cores a spinning thread steals the core the
    rest of the pipeline needs between frames.
    """

    name = "onnxruntime"
    device = "cpu"

    def __init__(
        self,
        bundle: AvatarBundle,
        threads: int | None = None,
        *,
        threads_per_net: Mapping[str, int] | None = None,
        nets: Iterable[str] | None = None,
        spin: bool = False,
    ) -> None:
        import onnxruntime as ort

        wanted = tuple(bundle.nets) if nets is None else tuple(nets)
        unknown = [n for n in wanted if n not in bundle.nets]
        if unknown:
            raise BackendError(f"bundle {bundle.path} has no net(s) {unknown}; it has {sorted(bundle.nets)}")
        threads = default_threads() if threads is None else int(threads)
        per_net = dict(threads_per_net or {})
        for n, t in {"": threads, **per_net}.items():
            if int(t) < 1:
                raise BackendError(f"thread count must be >= 1, got {t}" + (f" for net {n!r}" if n else ""))
        self._sessions = {}
        self._inputs: dict[str, tuple[TensorSpec, ...]] = {}
        self._outputs: dict[str, tuple[TensorSpec, ...]] = {}
        for net in wanted:
            opts = ort.SessionOptions()
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL  # nets are chains; parallel branches are rare
            opts.intra_op_num_threads = int(per_net.get(net, threads))
            opts.inter_op_num_threads = 1
            opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
            opts.log_severity_level = 3  # warnings about unused initialisers are noise at run time
            try:
                session = ort.InferenceSession(str(bundle.net_path(net)), opts, providers=["CPUExecutionProvider"])
            except Exception as e:  # ORT raises its own Fail/InvalidGraph types
                raise BackendError(f"net {net!r} of {bundle.path}: ONNX Runtime cannot load it ({e})") from None
            self._sessions[net] = session
            self._inputs[net] = tuple(_spec_of(a) for a in session.get_inputs())
            self._outputs[net] = tuple(_spec_of(a) for a in session.get_outputs())
        self._output_names = {net: [o.name for o in outs] for net, outs in self._outputs.items()}

    def run(self, net: str, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        self._check_net(net)
        specs = self._inputs[net]
        expected = {s.name for s in specs}
        missing, extra = sorted(expected - set(inputs)), sorted(set(inputs) - expected)
        if missing or extra:
            raise BackendError(
                f"net {net!r} takes inputs {sorted(expected)}; "
                + ", ".join(p for p in (f"missing {missing}" if missing else "", f"unexpected {extra}" if extra else "") if p)
            )
        feed = {}
        for spec in specs:
            value = inputs[spec.name]
            if type(value).__module__.startswith("cupy"):
                raise BackendError(f"net {net!r} input {spec.name!r}: the onnxruntime backend takes NumPy arrays, "
                                   "got a CuPy array (use a CUDA backend)")
            arr = np.asarray(value)
            if arr.dtype.kind not in "fiub":
                raise BackendError(f"net {net!r} input {spec.name!r}: numeric array expected, got dtype {arr.dtype}")
            if arr.ndim != len(spec.shape) or any(want is not None and got != want
                                                  for got, want in zip(arr.shape, spec.shape)):
                shown = "(" + ", ".join("N" if d is None else str(d) for d in spec.shape) + ")"
                raise BackendError(f"net {net!r} input {spec.name!r} has shape {arr.shape}; the net takes {shown}")
            feed[spec.name] = np.ascontiguousarray(arr, dtype=spec.dtype)
        results = self._sessions[net].run(self._output_names[net], feed)
        return dict(zip(self._output_names[net], results))


def _onnxruntime_unusable() -> str:
    try:
        import onnxruntime as ort
    except ImportError:
        return "onnxruntime is not installed"
    return "" if "CPUExecutionProvider" in ort.get_available_providers() else "ONNX Runtime has no CPU provider"


def _lazy(module: str, attr: str) -> Callable:
    # CUDA backends are imported only when asked for, so a CPU install never imports tensorrt, cupy or torch.cuda.
    def call(*args, **kwargs):
        import importlib

        return getattr(importlib.import_module(module), attr)(*args, **kwargs)

    return call


# name -> (why it cannot run on this machine, "" when it can; factory(bundle, **options)), in order of preference.
_FACTORIES: dict[str, tuple[Callable[[], str], Callable[..., Backend]]] = {
    "tensorrt": (_lazy("trt_engines.backend", "tensorrt_unusable"), _lazy("trt_engines.backend", "TensorRTBackend")),
    "torch-cuda": (_lazy("stream.torch_backend", "torch_cuda_unusable"), _lazy("stream.torch_backend", "TorchBackend")),
    "onnxruntime": (_onnxruntime_unusable, OnnxRuntimeBackend),
}


def available_backends() -> tuple[str, ...]:
    """Names of the backends that can run on this machine, in order of preference."""
    return tuple(name for name, (unusable, _) in _FACTORIES.items() if not unusable())


def create_backend(name: str, bundle: AvatarBundle, **options) -> Backend:
    """The backend called `name` for `bundle`; BackendError naming the usable ones when it is unknown or unusable."""
    if name not in _FACTORIES:
        raise BackendError(f"unknown backend {name!r}; this build has {sorted(_FACTORIES)}, "
                           f"usable here: {list(available_backends())}")
    unusable, factory = _FACTORIES[name]
    why = unusable()
    if why:
        raise BackendError(f"backend {name!r} cannot run on this machine ({why}); usable here: "
                           f"{list(available_backends())}")
    return factory(bundle, **options)
