"""INT8 entropy calibration: batches of the user's own net inputs, and a calibration-cache file.

`CalibrationBatcher` (plain Python, tested on CPU) turns a list of single-sample input dicts into fixed-size batches in
the order TensorRT asks for them. TensorRT requires every batch to have exactly `batch_size` samples, so the last
partial batch is dropped (recorded in `dropped_samples`). `CalibrationCache` reads and atomically writes the scale
table TensorRT produces, so a rebuild of the same net with the same data skips calibration.

`make_entropy_calibrator` puts the two behind TensorRT's IInt8EntropyCalibrator2 (only TensorRT 10.x has it: see
trt_engines/api.py). The base class is a parameter so tests can hand in a small fake of it.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np


class CalibrationBatcher:
    def __init__(self, samples: Sequence[Mapping[str, np.ndarray]], batch_size: int,
                 input_names: Sequence[str]) -> None:
        if batch_size < 1:
            raise ValueError(f"calibration batch size must be >= 1, got {batch_size}")
        if len(samples) < batch_size:
            raise ValueError(f"{len(samples)} calibration samples cannot fill one batch of {batch_size}")
        for i, s in enumerate(samples):
            missing = [n for n in input_names if n not in s]
            if missing:
                raise ValueError(f"calibration sample {i} lacks inputs {missing}")
            # One sample = one net call of batch 1, exactly as the renderer feeds the net.
            unbatched = [n for n in input_names if np.ndim(s[n]) < 1 or np.shape(s[n])[0] != 1]
            if unbatched:
                raise ValueError(f"calibration sample {i}: inputs {unbatched} must have a batch axis of 1")
        self.samples = samples
        self.batch_size = int(batch_size)
        self.input_names = tuple(input_names)
        self.n_batches = len(samples) // self.batch_size
        self.dropped_samples = len(samples) - self.n_batches * self.batch_size
        self._next = 0

    def reset(self) -> None:
        self._next = 0

    def next_batch(self) -> dict[str, np.ndarray] | None:
        """The next batch as contiguous float32 arrays (batch axis first), or None when all have been given."""
        if self._next >= self.n_batches:
            return None
        rows = self.samples[self._next * self.batch_size : (self._next + 1) * self.batch_size]
        self._next += 1
        return {name: np.ascontiguousarray(np.concatenate([np.asarray(r[name], np.float32) for r in rows]))
                for name in self.input_names}

    def data_digest(self) -> str:
        """SHA-256 of every sample in order: part of the engine key and the cache check."""
        h = hashlib.sha256()
        for s in self.samples:
            for name in self.input_names:
                a = np.ascontiguousarray(np.asarray(s[name], np.float32))
                h.update(name.encode())
                h.update(str(a.shape).encode())
                h.update(a.tobytes())
        return h.hexdigest()


class CalibrationCache:
    """TensorRT's calibration table for one net and one calibration data set."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def read(self) -> bytes | None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        return data or None

    def write(self, data: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(bytes(data))
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def make_entropy_calibrator(base_cls: type, batcher: CalibrationBatcher, cache: CalibrationCache,
                            upload: Callable[[np.ndarray], Any], pointer: Callable[[Any], int]):
    """An instance of a `base_cls` (trt.IInt8EntropyCalibrator2) subclass feeding `batcher`'s batches.

    upload: host array -> device buffer (cupy.asarray); pointer: device buffer -> int address (a.data.ptr).
    The device buffers of the current batch are kept on the object: TensorRT reads them after get_batch returns.
    """

    class EntropyCalibrator(base_cls):
        def __init__(self) -> None:
            base_cls.__init__(self)  # the pybind11 base must be initialised explicitly
            self.batcher = batcher
            self.cache = cache
            self._device: dict[str, Any] = {}

        def get_batch_size(self) -> int:
            return self.batcher.batch_size

        def get_batch(self, names, *args):
            batch = self.batcher.next_batch()
            if batch is None:
                return None  # TensorRT: no more batches
            unknown = [n for n in names if n not in batch]
            if unknown:
                raise KeyError(f"TensorRT asked for calibration inputs {unknown}; the data has {sorted(batch)}")
            self._device = {n: upload(batch[n]) for n in names}
            return [int(pointer(self._device[n])) for n in names]

        def read_calibration_cache(self, *args):
            return self.cache.read()

        def write_calibration_cache(self, cache_bytes, *args) -> None:
            self.cache.write(bytes(cache_bytes))

    return EntropyCalibrator()
