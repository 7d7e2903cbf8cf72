"""The pipeline's one clock: monotonic wall time, and the frame grid laid on media time.

Every stage asks the same `Clock` for the time, so latencies computed in one stage compare with times taken in
another. Tests may pass their own `Clock` (anything with `now_s` and `sleep_until`).
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from typing import Protocol


class Clock(Protocol):
    def now_s(self) -> float: ...

    async def sleep_until(self, t_s: float) -> None: ...


class MonotonicClock:
    """time.monotonic: never jumps when the system clock is set, so frame deadlines stay meaningful."""

    def now_s(self) -> float:
        return time.monotonic()

    async def sleep_until(self, t_s: float) -> None:
        delay_s = t_s - time.monotonic()
        # Always yield, even when already late, so a producer that is behind cannot starve the loop.
        await asyncio.sleep(max(0.0, delay_s))


SUPPORTED_FPS = (25.0, 30.0)


@dataclass(frozen=True)
class FrameGrid:
    """Frame k shows media time k / fps."""

    fps: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.fps) and self.fps > 0):
            raise ValueError(f"fps must be a positive number, got {self.fps!r}")

    @property
    def interval_s(self) -> float:
        return 1.0 / self.fps

    def pts_s(self, frame_index: int) -> float:
        return frame_index / self.fps

    def frames_until(self, media_s: float) -> int:
        """How many frames have pts <= media_s, i.e. the index of the first frame after media_s."""
        # A hair of slack so a frame exactly on the boundary counts despite float rounding.
        return max(0, math.floor(media_s * self.fps + 1e-9) + 1)
