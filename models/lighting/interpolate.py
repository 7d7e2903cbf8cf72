"""Smooth changes between lightings, so a live lighting switch glides over ~250 ms instead of popping.

Diffuse SH blends linearly (irradiance is linear in the coefficients, so every in-between frame is a real mix of the
two lightings). Specular lights are paired by direction and each pair is slerped on the sphere with its colour
blended, so a key light visibly swings round instead of fading out in one place and in at another; lights without a
partner fade. Time follows a smoothstep ease-in-out curve: no velocity jump at either end.
"""

from __future__ import annotations

import math

import numpy as np

from models.lighting.lighting import Lighting
from models.xp import smoothstep

DEFAULT_GLIDE_S = 0.25


def ease_in_out(t: float) -> float:
    """Smoothstep 3t^2 - 2t^3 of t clamped to [0, 1]: zero slope at 0 and 1."""
    return float(smoothstep(float(t)))


def slerp_direction(a: np.ndarray, b: np.ndarray, s: float) -> np.ndarray:
    """Unit vector a fraction s of the way along the great circle from unit a to unit b."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    cos = float(np.clip(a @ b, -1.0, 1.0))
    if cos > 1.0 - 1e-9:
        return a
    if cos < -1.0 + 1e-9:  # opposite: any great circle will do; take one through a direction perpendicular to a
        helper = np.array([1.0, 0.0, 0.0]) if abs(a[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
        perp = np.cross(a, helper)
        perp /= np.linalg.norm(perp)
        angle = math.pi * s
        return math.cos(angle) * a + math.sin(angle) * perp
    angle = math.acos(cos)
    out = (math.sin((1.0 - s) * angle) * a + math.sin(s * angle) * b) / math.sin(angle)
    return out / np.linalg.norm(out)


def _pair_lights(a: Lighting, b: Lighting) -> list[tuple[int | None, int | None]]:
    """Greedy pairing by closest direction (largest cosine first); unpaired lights pair with None."""
    if a.num_lights == 0 or b.num_lights == 0:
        return [(i, None) for i in range(a.num_lights)] + [(None, j) for j in range(b.num_lights)]
    cos = a.light_dirs.astype(np.float64) @ b.light_dirs.astype(np.float64).T
    pairs, used_a, used_b = [], set(), set()
    for flat in np.argsort(-cos, axis=None):
        i, j = divmod(int(flat), b.num_lights)
        if i not in used_a and j not in used_b:
            pairs.append((i, j))
            used_a.add(i)
            used_b.add(j)
    pairs += [(i, None) for i in range(a.num_lights) if i not in used_a]
    pairs += [(None, j) for j in range(b.num_lights) if j not in used_b]
    return pairs


def interpolate(a: Lighting, b: Lighting, t: float) -> Lighting:
    """Lighting a fraction t (0..1, eased) of the way from a to b; t <= 0 gives a and t >= 1 gives b exactly."""
    if math.isnan(t):
        raise ValueError("interpolation fraction is NaN")
    if t <= 0.0:
        return a
    if t >= 1.0:
        return b
    s = ease_in_out(t)
    sh = (1.0 - s) * a.sh_coeffs.astype(np.float64) + s * b.sh_coeffs.astype(np.float64)
    dirs, colours = [], []
    for i, j in _pair_lights(a, b):
        if i is not None and j is not None:
            dirs.append(slerp_direction(a.light_dirs[i], b.light_dirs[j], s))
            colours.append((1.0 - s) * a.light_colours[i] + s * b.light_colours[j])
        elif i is not None:
            dirs.append(a.light_dirs[i])
            colours.append((1.0 - s) * a.light_colours[i])
        else:
            dirs.append(b.light_dirs[j])
            colours.append(s * b.light_colours[j])
    return Lighting(sh, np.reshape(dirs, (-1, 3)), np.reshape(colours, (-1, 3)), b.name)


class LightingGlide:
    """The lighting to use at each frame time while changes glide over `duration_s`.

    Setting a new target mid-glide starts the next glide from the lighting currently shown, so rapid changes never
    jump.
    """

    def __init__(self, initial: Lighting, duration_s: float = DEFAULT_GLIDE_S) -> None:
        if not (math.isfinite(duration_s) and duration_s >= 0):
            raise ValueError(f"glide duration must be a finite number of seconds >= 0, got {duration_s!r}")
        self.duration_s = duration_s
        self._start = initial
        self._target = initial
        self._start_time_s = -math.inf

    @property
    def target(self) -> Lighting:
        return self._target

    def set_target(self, target: Lighting, now_s: float) -> None:
        self._start = self.at(now_s)
        self._target = target
        self._start_time_s = now_s

    def at(self, now_s: float) -> Lighting:
        if self.duration_s == 0:
            return self._target
        return interpolate(self._start, self._target, (now_s - self._start_time_s) / self.duration_s)
