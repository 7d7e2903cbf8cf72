"""Backends in order of preference, falling back to the next one instead of failing the stream.

At start: `create_first_usable` tries each backend name in turn (tensorrt -> torch-cuda -> onnxruntime by default)
and keeps the reasons the earlier ones were passed over. Mid-stream: `FallbackBackend.run` turns a runtime failure of
the current backend (CUDA error, lost device, engine failure) into a switch to the next one, logged once, and the
same call is answered by it. Input mistakes (BackendError: wrong names or shapes) are the caller's and are raised as
they are: another backend would refuse them too.

Outputs keep the caller's array library: a CuPy caller falling back to a CPU backend gets CuPy arrays back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from models.xp import array_module, to_numpy
from stream.backend import Backend, BackendError, TensorSpec, create_backend

DEFAULT_ORDER = ("tensorrt", "torch-cuda", "onnxruntime")
log = logging.getLogger("relitcam.backend")


def create_first_usable(bundle, order: Sequence[str] = DEFAULT_ORDER, options: Mapping[str, Mapping] | None = None,
                        create: Callable[..., Backend] = create_backend) -> tuple[Backend, list[str]]:
    """The first backend of `order` that starts, and one line per backend passed over saying why."""
    reasons = []
    for name in order:
        try:
            return create(name, bundle, **dict((options or {}).get(name, {}))), reasons
        except Exception as e:  # any failure to start is a reason to try the next one, never a crash
            reasons.append(f"{name}: {type(e).__name__}: {e}")
    raise BackendError("no backend could start: " + "; ".join(reasons))


class FallbackBackend:
    """A Backend that delegates to the current one of a chain and moves down the chain when it fails."""

    def __init__(self, factories: Sequence[tuple[str, Callable[[], Backend]]]) -> None:
        if not factories:
            raise BackendError("FallbackBackend needs at least one backend")
        self._factories = list(factories)
        self.reasons: list[str] = []
        self._current: Backend | None = None
        self._advance(None)

    def _advance(self, why: str | None) -> None:
        if why:
            self.reasons.append(why)
            log.warning("backend fallback: %s", why)
        while self._factories:
            name, factory = self._factories.pop(0)
            try:
                self._current = factory()
                return
            except Exception as e:
                self.reasons.append(f"{name}: could not start ({type(e).__name__}: {e})")
        raise BackendError("every backend failed: " + "; ".join(self.reasons))

    @property
    def current(self) -> Backend:
        return self._current

    @property
    def name(self) -> str:
        return self._current.name

    @property
    def device(self) -> str:
        return self._current.device

    def net_names(self) -> tuple[str, ...]:
        return self._current.net_names()

    def inputs(self, net: str) -> tuple[TensorSpec, ...]:
        return self._current.inputs(net)

    def outputs(self, net: str) -> tuple[TensorSpec, ...]:
        return self._current.outputs(net)

    def run(self, net: str, inputs: Mapping[str, Any]) -> dict[str, Any]:
        caller_xp = array_module(*inputs.values())
        while True:
            backend = self._current
            feed = dict(inputs)
            if backend.device == "cpu":
                feed = {k: to_numpy(v) for k, v in feed.items()}
            try:
                out = backend.run(net, feed)
            except BackendError:
                raise
            except Exception as e:
                self._advance(f"{backend.name} failed running {net!r} ({type(e).__name__}: {e}); "
                              "switching to the next backend")
                continue
            if caller_xp.__name__ == "numpy":
                return {k: to_numpy(v) for k, v in out.items()}
            return {k: caller_xp.asarray(v) for k, v in out.items()}
