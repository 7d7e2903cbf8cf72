"""One-Euro filter (Casiez, Roussel, Vogel, CHI 2012): a low-pass whose cutoff rises with speed.

Slow motion gets heavy smoothing (kills landmark jitter on a still face); fast motion gets little (no lag on
lip movements or head turns). Works element-wise on arrays of any fixed shape.

Parameters (units of the filtered signal per second):
  min_cutoff_hz  cutoff at rest; lower = smoother still face, more lag when motion starts.
  beta           how fast the cutoff grows with speed: cutoff = min_cutoff_hz + beta * |speed|.
  d_cutoff_hz    cutoff of the low-pass on the speed estimate itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class OneEuroParams:
    min_cutoff_hz: float = 1.0
    beta: float = 20.0
    d_cutoff_hz: float = 1.0

    def __post_init__(self) -> None:
        if self.min_cutoff_hz <= 0 or self.d_cutoff_hz <= 0 or self.beta < 0:
            raise ValueError(f"One-Euro parameters must be positive (beta >= 0), got {self}")


def _alpha(cutoff_hz: np.ndarray | float, dt_s: float) -> np.ndarray | float:
    tau = 1.0 / (2.0 * math.pi * cutoff_hz)
    return 1.0 / (1.0 + tau / dt_s)


class OneEuroFilter:
    def __init__(self, params: OneEuroParams = OneEuroParams()) -> None:
        self.params = params
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None
        self._t_s: float | None = None

    def reset(self) -> None:
        self._x = self._dx = self._t_s = None

    def __call__(self, x: np.ndarray, t_s: float, speed_unit: float = 1.0) -> np.ndarray:
        """Filter sample `x` taken at time `t_s`.

        `speed_unit` rescales speed before beta applies, so one parameter set fits any face size: pass the face's
        size in the units of x (e.g. inter-ocular px) and beta is then per face-size-per-second.
        """
        if not speed_unit > 0:
            raise ValueError(f"speed_unit must be positive, got {speed_unit}")
        x = np.asarray(x, np.float64)
        if self._x is None or self._t_s is None:
            self._x, self._dx, self._t_s = x.copy(), np.zeros_like(x), t_s
            return x.copy()
        if x.shape != self._x.shape:
            raise ValueError(f"OneEuroFilter got shape {x.shape}, was filtering {self._x.shape}")
        dt = t_s - self._t_s
        if dt <= 0:
            raise ValueError(f"OneEuroFilter timestamps must increase (got dt = {dt} s)")
        p = self.params
        dx = (x - self._x) / dt
        self._dx = self._dx + _alpha(p.d_cutoff_hz, dt) * (dx - self._dx)
        cutoff = p.min_cutoff_hz + p.beta * np.abs(self._dx) / speed_unit
        self._x = self._x + _alpha(cutoff, dt) * (x - self._x)
        self._t_s = t_s
        return self._x.copy()
