"""Log-mel spectrogram in NumPy; `mel_torch.py` computes the same thing in torch for training.

Framing: the signal is left-padded with `win_length // 2` zeros and frame i covers padded samples
[i * hop, i * hop + win). So frame i is centred on time i * hop / sample_rate (frame i <-> i * 10 ms), the first frame
needs no future audio beyond half a window, and no right padding is ever invented: a frame exists only once its whole
window has arrived. That is what lets `MelRingBuffer` reproduce this function exactly from chunks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np


@dataclass(frozen=True)
class MelSpec:
    """Parameters of the log-mel front end (defaults: 16 kHz, 25 ms Hann window, 10 ms hop, 80 HTK mel bins)."""

    sample_rate_hz: int = 16000
    n_fft: int = 512
    win_length: int = 400
    hop_length: int = 160
    n_mels: int = 80
    f_min_hz: float = 0.0
    f_max_hz: float = 8000.0
    # Added to mel power before the natural log: bounds digital silence at log(1e-6) ~ -13.8.
    log_floor: float = 1e-6

    def __post_init__(self) -> None:
        if self.sample_rate_hz <= 0:
            raise ValueError(f"MelSpec.sample_rate_hz must be positive, got {self.sample_rate_hz}")
        if not 0 < self.win_length <= self.n_fft:
            raise ValueError(f"MelSpec needs 0 < win_length <= n_fft, got {self.win_length} and {self.n_fft}")
        if self.hop_length <= 0:
            raise ValueError(f"MelSpec.hop_length must be positive, got {self.hop_length}")
        if self.n_mels <= 0:
            raise ValueError(f"MelSpec.n_mels must be positive, got {self.n_mels}")
        if not 0 <= self.f_min_hz < self.f_max_hz <= self.sample_rate_hz / 2:
            raise ValueError(
                f"MelSpec needs 0 <= f_min_hz < f_max_hz <= Nyquist ({self.sample_rate_hz / 2}), "
                f"got {self.f_min_hz} and {self.f_max_hz}"
            )
        if self.log_floor <= 0:
            raise ValueError(f"MelSpec.log_floor must be positive, got {self.log_floor}")

    @property
    def frame_rate_hz(self) -> float:
        return self.sample_rate_hz / self.hop_length

    @property
    def left_pad_samples(self) -> int:
        return self.win_length // 2

    @property
    def silence_value(self) -> float:
        """Log-mel value of digital silence; used to pad windows that reach outside the audio."""
        return math.log(self.log_floor)

    def n_frames(self, n_samples: int) -> int:
        """Number of complete frames in `n_samples` of audio."""
        padded = n_samples + self.left_pad_samples
        if padded < self.win_length:
            return 0
        return 1 + (padded - self.win_length) // self.hop_length


def _hz_to_mel(f_hz: np.ndarray) -> np.ndarray:
    # HTK mel scale (O'Shaughnessy): linear below ~1 kHz, log above, no break point to get wrong.
    return 2595.0 * np.log10(1.0 + np.asarray(f_hz, np.float64) / 700.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(mel, np.float64) / 2595.0) - 1.0)


@lru_cache(maxsize=8)
def mel_filterbank(spec: MelSpec) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) float64 triangular filters, peak 1, centres evenly spaced on the HTK mel scale."""
    edges_hz = _mel_to_hz(np.linspace(_hz_to_mel(spec.f_min_hz), _hz_to_mel(spec.f_max_hz), spec.n_mels + 2))
    bins_hz = np.arange(spec.n_fft // 2 + 1) * spec.sample_rate_hz / spec.n_fft
    lo, centre, hi = edges_hz[:-2, None], edges_hz[1:-1, None], edges_hz[2:, None]
    rising = (bins_hz[None, :] - lo) / (centre - lo)
    falling = (hi - bins_hz[None, :]) / (hi - centre)
    fb = np.maximum(0.0, np.minimum(rising, falling))
    empty = np.flatnonzero(fb.sum(axis=1) == 0)
    if len(empty):
        raise ValueError(
            f"mel filters {empty.tolist()} cover no FFT bin: use fewer mels or a larger n_fft ({spec})"
        )
    fb.setflags(write=False)
    return fb


@lru_cache(maxsize=8)
def hann_window(win_length: int) -> np.ndarray:
    """Periodic Hann window (the STFT convention, equal to torch.hann_window(periodic=True))."""
    n = np.arange(win_length)
    w = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / win_length)
    w.setflags(write=False)
    return w


def log_mel_from_frames(frames: np.ndarray, spec: MelSpec) -> np.ndarray:
    """(n, win_length) raw sample frames -> (n, n_mels) float32 log-mel. Shared by `log_mel` and `MelRingBuffer`."""
    windowed = frames * hann_window(spec.win_length)
    spectrum = np.fft.rfft(windowed, n=spec.n_fft, axis=-1)
    power = spectrum.real**2 + spectrum.imag**2
    mel = power @ mel_filterbank(spec).T
    return np.log(mel + spec.log_floor).astype(np.float32)


def log_mel(samples: np.ndarray, spec: MelSpec = MelSpec()) -> np.ndarray:
    """(n_frames, n_mels) float32 log-mel of 1-D float `samples` at `spec.sample_rate_hz` (see module doc for framing)."""
    x = np.asarray(samples)
    if x.ndim != 1:
        raise ValueError(f"log_mel expects 1-D mono samples, got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"log_mel expects float samples in [-1, 1], got dtype {x.dtype}")
    n = spec.n_frames(len(x))
    if n == 0:
        return np.zeros((0, spec.n_mels), np.float32)
    padded = np.concatenate([np.zeros(spec.left_pad_samples), x.astype(np.float64)])
    frames = np.lib.stride_tricks.sliding_window_view(padded, spec.win_length)[:: spec.hop_length][:n]
    return log_mel_from_frames(frames, spec)
