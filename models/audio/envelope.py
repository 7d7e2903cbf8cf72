"""Loudness per video frame, for measuring lip-sync against mouth opening."""

from __future__ import annotations

import numpy as np

FLOOR_DB = -100.0


def audio_envelope(
    samples: np.ndarray,
    sample_rate_hz: int,
    fps: float,
    n_frames: int | None = None,
    release_ms: float = 60.0,
) -> np.ndarray:
    """(n_frames,) float32 RMS level in dBFS per video frame (full-scale sine ~ -3 dB, silence FLOOR_DB).

    Frame j measures the window [j - 1/2, j + 1/2) / fps, centred on its display time like the mel frames. Smoothing is
    a peak follower on power: instant attack, exponential release with time constant `release_ms`. Instant attack keeps
    onsets on the frame where the sound starts (a symmetric smoother would pull them a frame early, which is exactly
    the error lip-sync measurement looks for); the release bridges short stop closures so the envelope follows syllables.
    `n_frames` defaults to round(duration * fps).
    """
    x = np.asarray(samples)
    if x.ndim != 1:
        raise ValueError(f"audio_envelope expects 1-D mono samples, got shape {x.shape}")
    if sample_rate_hz <= 0 or fps <= 0:
        raise ValueError(f"sample_rate_hz and fps must be positive, got {sample_rate_hz} and {fps}")
    if release_ms < 0:
        raise ValueError(f"release_ms must be >= 0, got {release_ms}")
    if n_frames is None:
        n_frames = int(round(len(x) * fps / sample_rate_hz))
    if n_frames < 0:
        raise ValueError(f"n_frames must be >= 0, got {n_frames}")
    energy = np.concatenate([[0.0], np.cumsum(x.astype(np.float64) ** 2)])
    centres_s = np.arange(n_frames) / fps
    lo = np.clip(np.rint((centres_s - 0.5 / fps) * sample_rate_hz).astype(np.int64), 0, len(x))
    hi = np.clip(np.rint((centres_s + 0.5 / fps) * sample_rate_hz).astype(np.int64), 0, len(x))
    count = hi - lo
    power = np.where(count > 0, (energy[hi] - energy[lo]) / np.maximum(count, 1), 0.0)
    if release_ms > 0:
        decay = np.exp(-1000.0 / (fps * release_ms))
        held = 0.0
        for j in range(n_frames):
            held = max(power[j], held * decay)
            power[j] = held
    db = 10.0 * np.log10(np.maximum(power, 10.0 ** (FLOOR_DB / 10.0)))
    return db.astype(np.float32)


def envelope_onsets(envelope_db: np.ndarray, threshold_db: float) -> np.ndarray:
    """Frame indices where the envelope rises to >= `threshold_db` from below (frame 0 counts if already above)."""
    env = np.asarray(envelope_db)
    if env.ndim != 1:
        raise ValueError(f"envelope must be 1-D, got shape {env.shape}")
    above = env >= threshold_db
    rising = above & ~np.concatenate([[False], above[:-1]])
    return np.flatnonzero(rising)
