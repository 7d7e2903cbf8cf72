"""Stage timings and counters: what the pipeline reports and the benchmark prints."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np


class StageTimer:
    """Durations of one stage over the last `window` calls, in ms (a window, so a long run keeps memory flat)."""

    def __init__(self, name: str, window: int = 2000) -> None:
        self.name = name
        self.count = 0
        self._ms: deque[float] = deque(maxlen=window)

    def add_s(self, duration_s: float) -> None:
        self.count += 1
        self._ms.append(duration_s * 1000.0)

    def values_ms(self) -> list[float]:
        return list(self._ms)

    def percentiles_ms(self) -> dict[str, float]:
        if not self._ms:
            return {"p50": float("nan"), "p95": float("nan"), "p99": float("nan"), "count": 0}
        p50, p95, p99 = np.percentile(np.fromiter(self._ms, float), [50, 95, 99])
        return {"p50": float(p50), "p95": float(p95), "p99": float(p99), "count": self.count}


@dataclass
class PipelineStats:
    """Per-stage timers plus drop counters, keyed by name so new stages need no new fields."""

    timers: dict[str, StageTimer] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    frames_out: int = 0
    first_frame_s: float | None = None
    last_frame_s: float | None = None

    def timer(self, name: str) -> StageTimer:
        if name not in self.timers:
            self.timers[name] = StageTimer(name)
        return self.timers[name]

    def count_drop(self, reason: str, n: int = 1) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + n

    def frame_sent(self, now_s: float) -> None:
        self.frames_out += 1
        if self.first_frame_s is None:
            self.first_frame_s = now_s
        self.last_frame_s = now_s

    @property
    def sustained_fps(self) -> float:
        if self.frames_out < 2 or self.first_frame_s is None or self.last_frame_s == self.first_frame_s:
            return 0.0
        return (self.frames_out - 1) / (self.last_frame_s - self.first_frame_s)

    def report(self) -> dict:
        return {
            "stages_ms": {name: t.percentiles_ms() for name, t in self.timers.items()},
            "dropped": dict(self.dropped),
            "dropped_total": sum(self.dropped.values()),
            "frames_out": self.frames_out,
            "sustained_fps": self.sustained_fps,
        }
