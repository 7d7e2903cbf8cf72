"""Head motion and blinks over a clip: smooth seeded noise, the same for every lighting of the clip."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# A few degrees of turn and a few pixels of drift read as "a person talking", more looks like a nod test.
YAW_AMPLITUDE_DEG = 3.0
PITCH_AMPLITUDE_DEG = 2.0
ROLL_AMPLITUDE_DEG = 1.5
DRIFT_AMPLITUDE_FRACTION = 0.006  # of the image side
BLINK_DURATION_S = 0.22
MEAN_BLINK_INTERVAL_S = 3.5
MIN_BLINK_INTERVAL_S = 1.2


@dataclass(frozen=True)
class HeadMotion:
    """Per-frame rigid head pose and eyelid closure.

    rotation_deg: (T, 3) yaw (about y), pitch (about x), roll (about z) in degrees.
    translation_px: (T, 2) image-plane shift (x right, y up) in pixels.
    blink: (T,) eyelid closure 0 (open) .. 1 (shut).
    """

    rotation_deg: np.ndarray
    translation_px: np.ndarray
    blink: np.ndarray

    def rotation_matrix(self, frame: int) -> np.ndarray:
        """3x3 camera-space rotation of frame `frame` (yaw, then pitch, then roll)."""
        yaw, pitch, roll = np.radians(self.rotation_deg[frame])
        cy, sy = math.cos(yaw), math.sin(yaw)
        cp, sp = math.cos(pitch), math.sin(pitch)
        cr, sr = math.cos(roll), math.sin(roll)
        r_yaw = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
        r_pitch = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
        r_roll = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
        return r_roll @ r_pitch @ r_yaw


def smooth_noise(rng: np.random.Generator, n_frames: int, fps: float, n_channels: int) -> np.ndarray:
    """(n_frames, n_channels) band-limited noise in [-1, 1]: a sum of 4 sinusoids of 0.08-0.6 Hz with random phase.

    Sinusoids rather than filtered white noise: no edge effects, and the value at a frame does not depend on clip
    length, so a longer clip starts with the same motion as a shorter one with the same seed.
    """
    t = np.arange(n_frames) / fps
    out = np.zeros((n_frames, n_channels))
    for c in range(n_channels):
        freqs = rng.uniform(0.08, 0.6, 4)
        phases = rng.uniform(0, 2 * math.pi, 4)
        weights = rng.uniform(0.5, 1.0, 4)
        out[:, c] = (weights[None] * np.sin(2 * math.pi * freqs[None] * t[:, None] + phases[None])).sum(1) / weights.sum()
    return out


def blink_curve(rng: np.random.Generator, n_frames: int, fps: float) -> np.ndarray:
    """(n_frames,) eyelid closure: blinks at random intervals, each a smooth close-open bump of BLINK_DURATION_S."""
    t = np.arange(n_frames) / fps
    closure = np.zeros(n_frames)
    start = rng.uniform(0.3, 1.5)
    end_s = n_frames / fps
    while start < end_s:
        phase = (t - start) / BLINK_DURATION_S
        inside = (phase >= 0) & (phase <= 1)
        closure[inside] = np.maximum(closure[inside], np.sin(math.pi * phase[inside]) ** 2)
        start += MIN_BLINK_INTERVAL_S + rng.exponential(MEAN_BLINK_INTERVAL_S - MIN_BLINK_INTERVAL_S)
    return closure


def head_motion(seed: int, n_frames: int, fps: float, image_size_px: int) -> HeadMotion:
    """Seeded head motion for a clip of `n_frames` at `fps`."""
    if n_frames <= 0 or fps <= 0:
        raise ValueError(f"head motion needs n_frames > 0 and fps > 0, got {n_frames}, {fps}")
    rng = np.random.default_rng([seed, 0x4EAD])
    rot = smooth_noise(rng, n_frames, fps, 3) * [YAW_AMPLITUDE_DEG, PITCH_AMPLITUDE_DEG, ROLL_AMPLITUDE_DEG]
    drift = smooth_noise(rng, n_frames, fps, 2) * DRIFT_AMPLITUDE_FRACTION * image_size_px
    blink = blink_curve(rng, n_frames, fps)
    return HeadMotion(rot.astype(np.float32), drift.astype(np.float32), blink.astype(np.float32))
