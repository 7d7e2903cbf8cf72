"""The one number check shared by everything that reads numbers from outside (control messages, saved settings)."""

from __future__ import annotations

import math


def finite_number_in(value, lo: float, hi: float, what: str) -> float:
    """`value` as a float if it is a real number (not a bool) in [lo, hi]; else ValueError naming `what`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    if not lo <= value <= hi:
        raise ValueError(f"{what} must be in [{lo:g}, {hi:g}], got {value:g}")
    return float(value)
