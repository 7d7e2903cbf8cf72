"""Optimization profiles: min / opt / max shapes of every input for a dynamic batch axis.

The bundle's nets have a dynamic batch axis (docs/bundle.md) and otherwise fixed shapes, except the shading net whose
H and W may be dynamic too (it is a per-pixel 1x1 net run on pixel strips). An engine is built for a batch range;
any other dynamic axis must be given a fixed size (`fixed_dims`) so the engine has one kernel choice for it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class BatchProfile:
    """Batch sizes an engine accepts (min..max) and the one its kernels are tuned for (opt)."""

    min_batch: int = 1
    opt_batch: int = 1
    max_batch: int = 8

    def __post_init__(self) -> None:
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise ValueError(f"batch profile needs 1 <= min <= opt <= max, got {self}")

    def as_key(self) -> str:
        return f"b{self.min_batch}-{self.opt_batch}-{self.max_batch}"


@dataclass(frozen=True)
class InputShapes:
    name: str
    min_shape: tuple[int, ...]
    opt_shape: tuple[int, ...]
    max_shape: tuple[int, ...]


def profile_shapes(
    inputs: Mapping[str, Sequence[int | None]],
    profile: BatchProfile,
    fixed_dims: Mapping[str, Sequence[int]] | None = None,
) -> tuple[InputShapes, ...]:
    """Shapes for `IOptimizationProfile.set_shape` of each input.

    inputs: name -> shape with None (or -1) for dynamic axes; axis 0 is the batch axis. fixed_dims: name -> the full
    non-batch shape to use where the net leaves axes dynamic. A dynamic non-batch axis without one is an error.
    """
    fixed = dict(fixed_dims or {})
    out = []
    for name, shape in inputs.items():
        dims = [None if (d is None or d < 0) else int(d) for d in shape]
        if not dims:
            raise ValueError(f"input {name!r} is a scalar; nets take batched tensors")
        rest = dims[1:]
        if name in fixed:
            given = [int(d) for d in fixed[name]]
            if len(given) != len(rest) or any(r is not None and r != g for r, g in zip(rest, given)):
                raise ValueError(f"fixed_dims[{name!r}] = {given} does not fit the input's non-batch shape {rest}")
            rest = given
        if any(d is None for d in rest):
            raise ValueError(f"input {name!r} has dynamic non-batch axes {dims}; give their sizes in fixed_dims")
        out.append(InputShapes(name, (profile.min_batch, *rest), (profile.opt_batch, *rest),
                               (profile.max_batch, *rest)))
    return tuple(out)


def profile_key(shapes: Sequence[InputShapes]) -> str:
    """A stable text form of the shapes, part of the engine cache key."""
    parts = []
    for s in sorted(shapes, key=lambda s: s.name):
        parts.append(f"{s.name}:" + "/".join("x".join(str(d) for d in shp)
                                             for shp in (s.min_shape, s.opt_shape, s.max_shape)))
    return ";".join(parts)
