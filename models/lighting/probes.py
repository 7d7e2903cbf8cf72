"""Analytic normal maps for previewing and testing lightings: a unit sphere and a stylised face (an ellipsoid with a
nose, eye sockets, brows, cheeks, lips and chin as Gaussian bumps on its height field).

Both are orthographic views in camera space (x right, y up, z toward the viewer), row 0 at the top. Normals come
from the analytic height-field gradient, n = normalize(-dh/dx, -dh/dy, 1), so they are exact, not finite-differenced.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.colour import srgb_to_linear


@dataclass(frozen=True)
class Probe:
    normals: np.ndarray  # (H, W, 3) float32 unit, zero outside the mask
    mask: np.ndarray  # (H, W) float32, 1 on the object
    albedo_linear: np.ndarray  # (H, W, 3) float32 linear RGB
    spec_weight: np.ndarray  # (H, W) float32 specular albedo


def _pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    if size < 4:
        raise ValueError(f"probe size must be at least 4 pixels, got {size}")
    c = (np.arange(size, dtype=np.float64) + 0.5) / size * 2.0 - 1.0
    return np.meshgrid(c, -c)  # x to the right, y upward (row 0 is the top)


def sphere_probe(size: int = 128, albedo_linear=(0.5, 0.5, 0.5), spec_weight: float = 0.05) -> Probe:
    """A unit sphere filling the square: n = (x, y, sqrt(1 - x^2 - y^2))."""
    x, y = _pixel_grid(size)
    r2 = x * x + y * y
    inside = r2 < 1.0
    n = np.stack([x, y, np.sqrt(np.clip(1.0 - r2, 0.0, 1.0))], axis=-1) * inside[..., None]
    albedo = np.broadcast_to(np.asarray(albedo_linear, np.float32), n.shape) * inside[..., None]
    return Probe(n.astype(np.float32), inside.astype(np.float32), albedo.astype(np.float32),
                 (spec_weight * inside).astype(np.float32))


# (centre x, centre y, sigma x, sigma y, height) of each feature on the face's height field, in units of the half
# image width; negative heights are hollows.
_FACE_BUMPS = (
    (0.0, -0.02, 0.07, 0.20, 0.20),  # nose bridge and body
    (0.0, -0.20, 0.08, 0.07, 0.08),  # nose tip
    (-0.27, 0.17, 0.12, 0.09, -0.11),  # eye sockets
    (0.27, 0.17, 0.12, 0.09, -0.11),
    (-0.27, 0.31, 0.15, 0.04, 0.04),  # brow ridges
    (0.27, 0.31, 0.15, 0.04, 0.04),
    (-0.33, -0.17, 0.14, 0.12, 0.04),  # cheekbones
    (0.33, -0.17, 0.14, 0.12, 0.04),
    (0.0, -0.41, 0.15, 0.035, 0.035),  # upper lip
    (0.0, -0.50, 0.14, 0.035, 0.03),  # lower lip
    (0.0, -0.455, 0.16, 0.012, -0.02),  # mouth line
    (0.0, -0.71, 0.13, 0.08, 0.04),  # chin
)
_FACE_HALF_AXES = (0.68, 0.9, 0.75)  # ellipsoid x, y, depth


def face_probe(size: int = 128, spec_weight: float = 0.04) -> Probe:
    """A face-like height field: ellipsoid plus Gaussian bumps; skin albedo with redder lips."""
    x, y = _pixel_grid(size)
    ax, ay, az = _FACE_HALF_AXES
    u = 1.0 - (x / ax) ** 2 - (y / ay) ** 2
    inside = u > 0.0
    root = np.sqrt(np.clip(u, 1e-4, None))
    # Base ellipsoid h = az sqrt(u): dh/dx = -az x / (ax^2 sqrt(u)), likewise for y.
    dh_dx = -az * x / (ax * ax * root)
    dh_dy = -az * y / (ay * ay * root)
    # Bumps fade out toward the silhouette so the outline stays the ellipse's.
    fade = np.clip(u / 0.15, 0.0, 1.0)
    for cx, cy, sx, sy, height in _FACE_BUMPS:
        g = height * np.exp(-0.5 * (((x - cx) / sx) ** 2 + ((y - cy) / sy) ** 2)) * fade
        dh_dx += -g * (x - cx) / (sx * sx)
        dh_dy += -g * (y - cy) / (sy * sy)
    n = np.stack([-dh_dx, -dh_dy, np.ones_like(x)], axis=-1)
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    n *= inside[..., None]
    skin = srgb_to_linear(np.array([0.87, 0.68, 0.58], np.float32))
    lips = srgb_to_linear(np.array([0.75, 0.40, 0.40], np.float32))
    lip_weight = np.exp(-0.5 * ((x / 0.15) ** 4 + ((y + 0.455) / 0.06) ** 2))[..., None]
    albedo = (skin * (1.0 - lip_weight) + lips * lip_weight) * inside[..., None]
    return Probe(n.astype(np.float32), inside.astype(np.float32), albedo.astype(np.float32),
                 (spec_weight * inside).astype(np.float32))
