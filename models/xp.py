"""One array namespace for NumPy and CuPy code.

Numeric code in relitcam takes arrays and asks `array_module(a)` which library they belong to, so the same function
runs on host (NumPy) and device (CuPy) arrays without branches.
"""

from __future__ import annotations

import numpy as np


def array_module(*arrays):
    """Return `cupy` if any argument is a CuPy array, else `numpy`."""
    for a in arrays:
        mod = type(a).__module__
        if mod.startswith("cupy"):
            import cupy

            return cupy
    return np


def to_numpy(a) -> np.ndarray:
    """Host copy of a NumPy or CuPy array (no copy for NumPy)."""
    if type(a).__module__.startswith("cupy"):
        return a.get()
    return np.asarray(a)


def cupy_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def smoothstep(x, edge0: float = 0.0, edge1: float = 1.0):
    """3t^2 - 2t^3 of t = (x - edge0) / (edge1 - edge0) clamped to [0, 1], elementwise on NumPy or CuPy arrays:
    0 up to edge0, 1 from edge1, no slope jump at either (a linear ramp's kinks show as lines in shading)."""
    xp = array_module(x)
    t = xp.clip((xp.asarray(x) - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)
