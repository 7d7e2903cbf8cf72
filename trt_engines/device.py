"""The GPU an engine is built for and runs on (name and compute capability), and device-array conversions.

Device buffers are CuPy arrays. A torch CUDA tensor is taken zero-copy through DLPack (`cupy.from_dlpack`), and
results can be handed back to torch the same way (`torch.from_dlpack`): no host copies between nets and compositing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class NoGpu(RuntimeError):
    """No CUDA device is visible to CuPy; the message says what failed."""


@dataclass(frozen=True)
class GpuInfo:
    device_id: int
    name: str
    compute_capability: str  # "major.minor"
    total_memory_bytes: int


def current_gpu(device_id: int | None = None) -> GpuInfo:
    try:
        import cupy as cp

        dev = cp.cuda.Device() if device_id is None else cp.cuda.Device(device_id)
        props = cp.cuda.runtime.getDeviceProperties(dev.id)
    except Exception as e:  # ImportError, CUDARuntimeError (no driver / no device)
        raise NoGpu(f"no CUDA device available to CuPy ({type(e).__name__}: {e})") from None
    name = props["name"]
    name = name.decode() if isinstance(name, bytes) else str(name)
    return GpuInfo(dev.id, name, f"{props['major']}.{props['minor']}", int(props["totalGlobalMem"]))


def is_torch_tensor(a: Any) -> bool:
    return type(a).__module__.startswith("torch")


def to_device(a: Any, dtype=None):
    """A C-contiguous CuPy array of `a` (CuPy as is, torch CUDA via DLPack, host data uploaded), cast to `dtype`."""
    import cupy as cp

    if is_torch_tensor(a):
        if not a.is_cuda:
            a = a.numpy()  # a CPU tensor: the upload below copies it once
        else:
            a = cp.from_dlpack(a.detach().contiguous())
    arr = a if isinstance(a, cp.ndarray) else cp.asarray(a)
    if dtype is not None and arr.dtype != dtype:
        arr = arr.astype(dtype)
    return cp.ascontiguousarray(arr)
