"""Input checks shared by the CUDA backends (TensorRT, torch): the same rules and messages as the ONNX Runtime
backend, so a wrong name or shape is a BackendError naming the net and tensor, whatever runs the net."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from stream.backend import BackendError, TensorSpec


def check_feed(net: str, specs: Sequence[TensorSpec], inputs: Mapping[str, Any]) -> None:
    expected = {s.name for s in specs}
    missing, extra = sorted(expected - set(inputs)), sorted(set(inputs) - expected)
    if missing or extra:
        parts = [p for p in (f"missing {missing}" if missing else "", f"unexpected {extra}" if extra else "") if p]
        raise BackendError(f"net {net!r} takes inputs {sorted(expected)}; " + ", ".join(parts))
    for spec in specs:
        value = inputs[spec.name]
        shape = tuple(getattr(value, "shape", ()))
        dtype = getattr(value, "dtype", None)
        kind = getattr(dtype, "kind", None)
        if kind is None and dtype is not None:  # torch dtypes have no .kind
            kind = "f" if getattr(dtype, "is_floating_point", False) else "i"
        if kind not in ("f", "i", "u", "b"):
            raise BackendError(f"net {net!r} input {spec.name!r}: numeric array expected, got {type(value).__name__} "
                               f"with dtype {dtype}")
        if len(shape) != len(spec.shape) or any(w is not None and g != w for g, w in zip(shape, spec.shape)):
            shown = "(" + ", ".join("N" if d is None else str(d) for d in spec.shape) + ")"
            raise BackendError(f"net {net!r} input {spec.name!r} has shape {shape}; the net takes {shown}")


def specs_from_bundle(shapes: Mapping[str, Sequence[int]], dtype: str = "float32") -> tuple[TensorSpec, ...]:
    """TensorSpecs from a bundle NetSpec's name -> shape (-1 dynamic) mapping, in its order."""
    return tuple(TensorSpec(n, tuple(None if d < 0 else int(d) for d in s), dtype) for n, s in shapes.items())
