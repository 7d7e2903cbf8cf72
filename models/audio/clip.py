"""A mono audio buffer with its sample rate."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AudioClip:
    """float32 mono samples in [-1, 1] at `sample_rate_hz`."""

    samples: np.ndarray
    sample_rate_hz: int

    def __post_init__(self) -> None:
        if self.samples.ndim != 1:
            raise ValueError(f"AudioClip samples must be 1-D mono, got shape {self.samples.shape}")
        if self.samples.dtype != np.float32:
            raise ValueError(f"AudioClip samples must be float32, got {self.samples.dtype}")
        if self.sample_rate_hz <= 0:
            raise ValueError(f"AudioClip sample_rate_hz must be positive, got {self.sample_rate_hz}")

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate_hz
