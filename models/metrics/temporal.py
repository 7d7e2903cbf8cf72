"""Temporal flicker: how much pixels that should stay still change from frame to frame.

Rendered avatars shimmer where the scene is static (background, hair edges, the neck under a fixed light). The score
is the mean absolute change between consecutive frames inside a "should be static" mask, on the 0..255 scale; it is
reported for the prediction and for the ground truth, since real footage has sensor noise and compression flicker
of its own and only the excess over GT is the renderer's fault.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def frame_change(previous: np.ndarray, current: np.ndarray, static_mask: np.ndarray | None = None) -> float:
    """Mean |current - previous| over all channels of the static pixels (the whole frame without a mask)."""
    previous = np.asarray(previous, dtype=np.float32)
    current = np.asarray(current, dtype=np.float32)
    if previous.shape != current.shape:
        raise ValueError(f"consecutive frames differ in size: {previous.shape} then {current.shape}")
    diff = np.abs(current - previous)
    if static_mask is None:
        return float(diff.mean())
    static_mask = np.asarray(static_mask, dtype=bool)
    if static_mask.shape != previous.shape[:2]:
        raise ValueError(f"static mask is {static_mask.shape} but frames are {previous.shape[:2]}")
    if not static_mask.any():
        raise ValueError("static mask selects no pixels")
    return float(diff[static_mask].mean())


class FlickerMeter:
    """Running mean of frame_change over a stream of frames (constant memory)."""

    def __init__(self) -> None:
        self._previous: np.ndarray | None = None
        self._total = 0.0
        self._count = 0

    def add(self, frame: np.ndarray, static_mask: np.ndarray | None = None) -> None:
        if self._previous is not None:
            self._total += frame_change(self._previous, frame, static_mask)
            self._count += 1
        self._previous = np.asarray(frame)

    @property
    def transitions(self) -> int:
        return self._count

    @property
    def mean_abs_change(self) -> float:
        """Mean absolute frame-to-frame change (0..255 scale); NaN before two frames were added."""
        return self._total / self._count if self._count else float("nan")


def temporal_flicker(frames: Iterable[np.ndarray], static_mask: np.ndarray | None = None) -> float:
    """Mean absolute frame-to-frame change of a sequence inside one static mask (0..255 scale)."""
    meter = FlickerMeter()
    for frame in frames:
        meter.add(frame, static_mask)
    if meter.transitions == 0:
        raise ValueError("flicker needs at least two frames")
    return meter.mean_abs_change
