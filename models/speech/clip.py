"""Synthesized speech with its phoneme timeline."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PhonemeEvent:
    """One phoneme (espeak-ng mnemonic, e.g. 'p', 'A:', 'aI'; pauses start with '_') over [start_s, end_s)."""

    start_s: float
    end_s: float
    phoneme: str

    def __post_init__(self) -> None:
        if not self.phoneme:
            raise ValueError("PhonemeEvent.phoneme must be a non-empty mnemonic")
        if not (0.0 <= self.start_s < self.end_s):
            raise ValueError(f"PhonemeEvent needs 0 <= start_s < end_s, got {self.start_s}, {self.end_s} for {self.phoneme!r}")

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    @property
    def is_pause(self) -> bool:
        return self.phoneme.startswith("_")


@dataclass(frozen=True)
class SpeechClip:
    """float32 mono `samples` in [-1, 1] at `sample_rate_hz`, with back-to-back `phonemes` covering the whole clip."""

    samples: np.ndarray
    sample_rate_hz: int
    phonemes: list[PhonemeEvent]
    text: str
    voice: str

    def __post_init__(self) -> None:
        if self.samples.ndim != 1 or self.samples.dtype != np.float32:
            raise ValueError(f"SpeechClip samples must be 1-D float32, got {self.samples.dtype} {self.samples.shape}")
        if self.sample_rate_hz <= 0:
            raise ValueError(f"SpeechClip sample_rate_hz must be positive, got {self.sample_rate_hz}")
        for a, b in zip(self.phonemes, self.phonemes[1:]):
            if b.start_s < a.end_s - 1e-9:
                raise ValueError(f"SpeechClip phonemes overlap or are unordered: {a} then {b}")

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate_hz
