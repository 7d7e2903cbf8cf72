"""Sample-rate conversion with a polyphase anti-aliasing filter."""

from __future__ import annotations

from math import gcd

import numpy as np
from scipy.signal import resample_poly


def resample(samples: np.ndarray, from_hz: int, to_hz: int) -> np.ndarray:
    """Resample 1-D `samples` from `from_hz` to `to_hz`; returns float32.

    resample_poly applies a Kaiser-windowed FIR low-pass at the lower Nyquist, so downsampling (espeak's 22050 Hz
    to 16 kHz) does not alias, and the filter is zero-phase, so phoneme times stay where they were.
    """
    if from_hz <= 0 or to_hz <= 0:
        raise ValueError(f"sample rates must be positive, got from_hz={from_hz}, to_hz={to_hz}")
    x = np.asarray(samples)
    if x.ndim != 1:
        raise ValueError(f"resample expects 1-D samples, got shape {x.shape}")
    if from_hz == to_hz:
        return x.astype(np.float32, copy=True)
    if len(x) == 0:
        return np.zeros(0, np.float32)
    g = gcd(int(from_hz), int(to_hz))
    up, down = int(to_hz) // g, int(from_hz) // g
    return resample_poly(x.astype(np.float64), up, down).astype(np.float32)
