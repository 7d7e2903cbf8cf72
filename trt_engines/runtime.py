"""Run a serialized TensorRT engine on CuPy device buffers.

Deserialize (a None engine means it was built for another GPU or TensorRT: EngineLoadError says so), one execution
context, and per call: set_input_shape + set_tensor_address for each input (the caller's device buffers, zero-copy),
output buffers allocated in CuPy and bound the same way, execute_async_v3 on the runner's own stream. TensorRT is
never given the legacy default stream (CuPy's current stream unless the caller chose one): there it adds device
synchronisations of its own. The runner's stream waits for the caller's current stream and the caller's stream
waits for the results (events, no host wait), so compositing can follow without a host round trip; buffers are
allocated on the runner's stream, so CuPy's pool reuses them only after the work queued there.

CUDA graphs (`capture_graph`): for one fixed batch size, a second execution context of its own (a captured graph
replays the context state it was captured with; live calls of other batch sizes would change that state), static
input/output buffers bound once, one warm-up run lets TensorRT finish its lazy setup, and one execute_async_v3 is
captured on a private stream. A call then copies the inputs into the static buffers (device to device) and launches
the graph: one launch instead of one per kernel.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from trt_engines.api import TrtApi
from trt_engines.device import to_device


class EngineLoadError(RuntimeError):
    """The engine cannot run here (another GPU / TensorRT version, or damaged); rebuild it or use another backend."""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    is_input: bool
    dtype: Any  # numpy dtype
    shape: tuple[int, ...]  # -1 for dynamic axes


class EngineRunner:
    def __init__(self, api: TrtApi, engine_bytes: bytes, *, label: str = "engine", logger=None) -> None:
        trt = api.trt
        self.api = api
        self.label = label
        self._logger = logger or trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(engine_bytes)
        if self.engine is None:
            raise EngineLoadError(f"{label}: {api.label} cannot deserialize this engine; it was built for another GPU "
                                  "or TensorRT version, or the file is damaged; rebuild it")
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise EngineLoadError(f"{label}: no execution context (out of GPU memory?)")
        self.tensors: dict[str, TensorInfo] = {}
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            self.tensors[name] = TensorInfo(
                name=name,
                is_input=self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT,
                dtype=trt.nptype(self.engine.get_tensor_dtype(name)),
                shape=tuple(self.engine.get_tensor_shape(name)),
            )
        self.input_names = tuple(n for n, t in self.tensors.items() if t.is_input)
        self.output_names = tuple(n for n, t in self.tensors.items() if not t.is_input)
        self._graphs: dict[tuple, _CapturedGraph] = {}
        self._stream = None  # created at the first call, on the device current then

    def _bind_inputs(self, context, inputs: Mapping[str, Any]) -> dict[str, Any]:
        bound = {}
        for name in self.input_names:
            arr = to_device(inputs[name], self.tensors[name].dtype)
            if not context.set_input_shape(name, tuple(arr.shape)):
                raise ValueError(f"{self.label}: input {name!r} shape {tuple(arr.shape)} is outside the engine's "
                                 "optimization profile")
            context.set_tensor_address(name, arr.data.ptr)
            bound[name] = arr
        return bound

    def _bind_outputs(self, context) -> dict[str, Any]:
        import cupy as cp

        outs = {}
        for name in self.output_names:
            shape = tuple(context.get_tensor_shape(name))
            outs[name] = cp.empty(shape, dtype=self.tensors[name].dtype)
            context.set_tensor_address(name, outs[name].data.ptr)
        return outs

    def run(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Outputs (CuPy, float32) of one call, ordered before later work on the caller's current CuPy stream."""
        import cupy as cp

        key = tuple(tuple(getattr(inputs[n], "shape", ())) for n in self.input_names)
        if key in self._graphs:
            return self._graphs[key].run(inputs)
        if self._stream is None:
            self._stream = cp.cuda.Stream(non_blocking=True)
        caller = cp.cuda.get_current_stream()
        self._stream.wait_event(caller.record())  # the inputs may still be being written on the caller's stream
        with self._stream:
            bound = self._bind_inputs(self.context, inputs)
            outs = self._bind_outputs(self.context)
            if not self.context.execute_async_v3(self._stream.ptr):
                raise RuntimeError(f"{self.label}: execute_async_v3 failed; see the TensorRT log")
            outs = {n: a if a.dtype == cp.float32 else a.astype(cp.float32) for n, a in outs.items()}
            del bound  # freed to this stream's pool: reused only by work queued after this call's
        caller.wait_event(self._stream.record())
        return outs

    def capture_graph(self, example_inputs: Mapping[str, Any]) -> None:
        """Capture a CUDA graph for the shapes of `example_inputs`; later calls with those shapes replay it."""
        key = tuple(tuple(example_inputs[n].shape) for n in self.input_names)
        self._graphs[key] = _CapturedGraph(self, example_inputs)


class _CapturedGraph:
    def __init__(self, runner: EngineRunner, example_inputs: Mapping[str, Any]) -> None:
        import cupy as cp

        self.runner = runner
        self.stream = cp.cuda.Stream(non_blocking=True)
        self.context = runner.engine.create_execution_context()
        if self.context is None:
            raise EngineLoadError(f"{runner.label}: no execution context for a CUDA graph (out of GPU memory?)")
        with self.stream:
            self.inputs = {n: to_device(example_inputs[n], runner.tensors[n].dtype).copy() for n in runner.input_names}
            for n, arr in self.inputs.items():
                if not self.context.set_input_shape(n, tuple(arr.shape)):
                    raise ValueError(f"{runner.label}: input {n!r} shape {tuple(arr.shape)} is outside the engine's "
                                     "optimization profile")
                self.context.set_tensor_address(n, arr.data.ptr)
            self.outputs = runner._bind_outputs(self.context)
            # Warm-up outside capture: TensorRT may allocate or set up lazily on the first run.
            if not self.context.execute_async_v3(self.stream.ptr):
                raise RuntimeError(f"{runner.label}: warm-up before CUDA graph capture failed")
            self.stream.synchronize()
            self.stream.begin_capture()
            try:
                self.context.execute_async_v3(self.stream.ptr)
            finally:
                self.graph = self.stream.end_capture()

    def run(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        import cupy as cp

        caller = cp.cuda.get_current_stream()
        # Order the copies after the caller's earlier work, then the caller's later work after the graph.
        self.stream.wait_event(caller.record())
        with self.stream:
            for n, buf in self.inputs.items():
                buf[...] = to_device(inputs[n], buf.dtype)
            self.graph.launch(self.stream)
            # Copies: the static outputs are overwritten by the next launch.
            outs = {n: a.astype(cp.float32, copy=True) for n, a in self.outputs.items()}
        caller.wait_event(self.stream.record())
        return outs
