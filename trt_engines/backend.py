"""TensorRTBackend: the bundle's nets as TensorRT engines, behind stream/backend.py's `Backend` protocol.

device = "cuda": `run` takes CuPy arrays (torch CUDA tensors via DLPack, host arrays are uploaded) and returns CuPy
float32 arrays, queued on the current CuPy stream. Engines come from trt_engines/engines.py (cache or build); the
build report is `self.builds` (one NetBuild per net: precision really used, cached or built, notes).

Nets whose inputs have dynamic non-batch axes (the shading net) need `fixed_dims`; by default the shading net is
built for full S x S frames.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from calibration.data import CalibrationData
from models.bundle import AvatarBundle
from stream.backend import BackendError, NetTable, TensorSpec
from trt_engines.api import TrtApi, load_trt
from trt_engines.cache import EngineCache
from trt_engines.device import current_gpu
from trt_engines.engines import EngineRequest, NetBuild, get_engine
from trt_engines.feed import check_feed, specs_from_bundle
from trt_engines.profile import BatchProfile
from trt_engines.runtime import EngineRunner


def default_fixed_dims(bundle: AvatarBundle, net: str) -> dict[str, list[int]] | None:
    if net != "shading":
        return None
    s = bundle.size_px
    return {name: [shape[1], s, s] for name, shape in bundle.nets[net].inputs.items()}


def engine_requests(bundle: AvatarBundle, nets: Iterable[str], precision: str = "fp16",
                    precision_per_net: Mapping[str, str] | None = None, profile: BatchProfile = BatchProfile(),
                    fixed_dims: Mapping[str, Mapping[str, Sequence[int]]] | None = None) -> list[EngineRequest]:
    """What to build for each of `nets`: its ONNX, input shapes (dynamic axes fixed, see `default_fixed_dims`),
    precision and batch profile."""
    requests = []
    for net in nets:
        fixed = (fixed_dims or {}).get(net) or default_fixed_dims(bundle, net)
        requests.append(EngineRequest(net=net, onnx_path=bundle.net_path(net), inputs=bundle.nets[net].inputs,
                                      precision=(precision_per_net or {}).get(net, precision), profile=profile,
                                      fixed_dims=fixed))
    return requests


class TensorRTBackend(NetTable):
    name = "tensorrt"
    device = "cuda"

    def __init__(
        self,
        bundle: AvatarBundle,
        threads: int | None = None,  # accepted for create_backend's common options; CPU threads mean nothing here
        *,
        nets: Iterable[str] | None = None,
        precision: str = "fp16",
        precision_per_net: Mapping[str, str] | None = None,
        profile: BatchProfile = BatchProfile(),
        fixed_dims: Mapping[str, Mapping[str, Sequence[int]]] | None = None,
        calibration: CalibrationData | None = None,
        cache_dir: str | None = None,
        cuda_graphs: bool = False,
        api: TrtApi | None = None,
        **_cpu_options: Any,  # threads_per_net, spin: ONNX Runtime options the renderer may pass
    ) -> None:
        self.api = api or load_trt()
        self.gpu = current_gpu()
        wanted = tuple(bundle.nets) if nets is None else tuple(nets)
        unknown = [n for n in wanted if n not in bundle.nets]
        if unknown:
            raise BackendError(f"bundle {bundle.path} has no net(s) {unknown}; it has {sorted(bundle.nets)}")
        cache = EngineCache(cache_dir)
        self.builds: dict[str, NetBuild] = {}
        self._runners: dict[str, EngineRunner] = {}
        self._inputs: dict[str, tuple[TensorSpec, ...]] = {}
        self._outputs: dict[str, tuple[TensorSpec, ...]] = {}
        self._fixed: dict[str, Mapping[str, Sequence[int]] | None] = {}
        for req in engine_requests(bundle, wanted, precision, precision_per_net, profile, fixed_dims):
            net, spec, fixed = req.net, bundle.nets[req.net], req.fixed_dims
            self._fixed[net] = fixed
            samples = calibration.for_net(net) if calibration is not None else None
            blob, build = get_engine(self.api, self.gpu, req, cache, samples, self._run_blob)
            self.builds[net] = build
            self._runners[net] = EngineRunner(self.api, blob, label=f"net {net!r}")
            self._inputs[net] = self._specs(specs_from_bundle(spec.inputs), fixed)
            self._outputs[net] = specs_from_bundle(spec.outputs)
            if cuda_graphs:
                self._capture(net, profile.opt_batch)

    @staticmethod
    def _specs(specs: tuple[TensorSpec, ...], fixed) -> tuple[TensorSpec, ...]:
        if not fixed:
            return specs
        return tuple(TensorSpec(s.name, (None, *fixed[s.name]), s.dtype) if s.name in fixed else s for s in specs)

    def _capture(self, net: str, batch: int) -> None:
        import cupy as cp

        example = {s.name: cp.zeros((batch, *s.shape[1:]), cp.float32) for s in self._inputs[net]}
        self._runners[net].capture_graph(example)

    def _run_blob(self, engine_bytes: bytes, samples: list) -> list:
        """Run an engine on host samples, host outputs back (the INT8 acceptance rule compares these)."""
        runner = EngineRunner(self.api, engine_bytes, label="acceptance check")
        out = []
        for sample in samples:
            got = runner.run(sample)
            out.append({k: v.get() for k, v in got.items()})
        return out

    def run(self, net: str, inputs: Mapping[str, Any]) -> dict[str, Any]:
        self._check_net(net)
        check_feed(net, self._inputs[net], inputs)
        try:
            return self._runners[net].run(inputs)
        except ValueError as e:  # a batch outside the profile
            raise BackendError(str(e)) from None


def tensorrt_unusable() -> str:
    """Why TensorRT cannot run the nets here ("" when it can): engines run on a CUDA GPU, through CuPy buffers."""
    from models.xp import cupy_available
    from trt_engines.api import TensorRTUnavailable

    if not cupy_available():
        return "no CUDA GPU visible to CuPy, or no CuPy"
    try:
        load_trt()
    except TensorRTUnavailable as e:
        return str(e)
    return ""


def host(a) -> np.ndarray:
    """Host copy of a backend output (CuPy or NumPy)."""
    return a.get() if hasattr(a, "get") else np.asarray(a)
