"""Hand freed heap memory back to the OS during long calls (glibc's malloc_trim).

Each frame allocates and frees arrays of 0.2-11 MB on three threads (render, compose, the sinks'). Once glibc's
dynamic mmap threshold has risen past their size it serves them from its heaps, and space freed in the middle of a
heap stays resident: over a 30-minute soak RSS crept up ~0.4 MB per media minute while Python's own allocations
stayed flat (`scripts/soak.py --tracemalloc`). malloc_trim(0) returns those free pages (~3 ms for the pipeline's
heaps). Called every few seconds it keeps RSS flat without a measurable cost in frame time; the other remedy,
a fixed mmap threshold (MALLOC_MMAP_THRESHOLD_=131072), also kept RSS flat but cost 40 % of the frame rate (every
large array freshly mapped and zeroed). Measured in docs/pipeline.md "Memory over long calls".
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable


def glibc_malloc_trim() -> Callable[[], None] | None:
    """malloc_trim(0) of this process's C library, or None where the library has none (musl, macOS, Windows)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return lambda: trim(0)


class HeapTrimmer:
    """Calls malloc_trim at most once per `every_s` of the caller's clock; a no-op without glibc or when every_s
    is 0."""

    def __init__(self, every_s: float, trim: Callable[[], None] | None = None) -> None:
        if every_s < 0:
            raise ValueError(f"heap trim interval must be >= 0 s, got {every_s}")
        self.every_s = every_s
        self._trim = (trim or glibc_malloc_trim()) if every_s > 0 else None
        self._next_s: float | None = None
        self.count = 0

    @property
    def active(self) -> bool:
        return self._trim is not None

    def maybe_trim(self, now_s: float) -> bool:
        if self._trim is None:
            return False
        if self._next_s is None:
            self._next_s = now_s + self.every_s
            return False
        if now_s < self._next_s:
            return False
        self._trim()
        self._next_s = now_s + self.every_s
        self.count += 1
        return True
