"""One net call for several sessions' frames: `BatchedRunner` gathers requests within a frame period.

Several avatars on one GPU each need the same nets every frame; a batch of B costs far less than B calls of 1 on a
GPU (launch overhead and idle SMs dominate nets this small). Sessions `submit` their single-sample inputs (batch
axis 1) from their own threads and get a Future; a worker collects requests until `max_batch` are waiting or
`window_s` has passed since the first, concatenates them along the batch axis, runs one `backend.run`, and hands
each session its row of every output. Requests whose non-batch shapes differ are run in separate groups.

It works with any Backend (ONNX Runtime on CPU included). A failing batched call fails those requests' Futures
with the error; the worker keeps serving. Not GPU specific; it lives with the GPU serving code because that is
where batching pays.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from models.xp import array_module


@dataclass
class _Request:
    inputs: Mapping[str, Any]
    future: Future = field(default_factory=Future)

    def signature(self) -> tuple:
        return tuple((k, tuple(v.shape[1:])) for k, v in sorted(self.inputs.items()))


def run_batched(backend, net: str, requests: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Run `requests` (each with batch axis 1) as one call; per-request outputs (each with batch axis 1)."""
    if not requests:
        return []
    for r in requests:
        for k, v in r.items():
            if not v.shape or v.shape[0] != 1:
                raise ValueError(f"batched request input {k!r} must have batch axis 1, got shape {tuple(v.shape)}")
    xp = array_module(*requests[0].values())
    joined = {k: xp.concatenate([r[k] for r in requests]) for k in requests[0]}
    out = backend.run(net, joined)
    return [{k: v[i : i + 1] for k, v in out.items()} for i in range(len(requests))]


class BatchedRunner:
    def __init__(self, backend, net: str, *, max_batch: int = 8, window_s: float = 0.004) -> None:
        if max_batch < 1 or window_s < 0:
            raise ValueError(f"max_batch must be >= 1 and window_s >= 0, got {max_batch}, {window_s}")
        self.backend, self.net = backend, net
        self.max_batch, self.window_s = max_batch, window_s
        self._pending: list[_Request] = []
        self._cond = threading.Condition()
        self._closed = False
        self.calls = 0  # batched backend calls made
        self.batch_sizes: list[int] = []
        self._worker = threading.Thread(target=self._serve, name=f"batch-{net}", daemon=True)
        self._worker.start()

    def submit(self, inputs: Mapping[str, Any]) -> Future:
        req = _Request(inputs)
        with self._cond:
            if self._closed:
                raise RuntimeError("BatchedRunner is closed")
            self._pending.append(req)
            self._cond.notify_all()
        return req.future

    def run(self, inputs: Mapping[str, Any], timeout_s: float | None = 1.0) -> dict[str, Any]:
        """Submit and wait: what one session calls per frame."""
        return self.submit(inputs).result(timeout=timeout_s)

    def _take(self) -> list[_Request] | None:
        with self._cond:
            while not self._pending and not self._closed:
                self._cond.wait()
            if not self._pending:
                return None
            deadline = time.monotonic() + self.window_s
            while len(self._pending) < self.max_batch and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            taken, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
            return taken

    def _serve(self) -> None:
        while (taken := self._take()) is not None:
            groups: dict[tuple, list[_Request]] = {}
            for r in taken:
                try:
                    groups.setdefault(r.signature(), []).append(r)
                except Exception as e:  # no .shape: a malformed request fails alone
                    r.future.set_exception(ValueError(f"bad batched request: {e}"))
            for group in groups.values():
                try:
                    outs = run_batched(self.backend, self.net, [r.inputs for r in group])
                except Exception as e:
                    for r in group:
                        r.future.set_exception(e)
                    continue
                self.calls += 1
                self.batch_sizes.append(len(group))
                for r, o in zip(group, outs):
                    r.future.set_result(o)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._worker.join(timeout=2.0)
