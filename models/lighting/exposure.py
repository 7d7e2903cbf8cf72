"""Exposing a lighting for a face, as a camera's auto-exposure would.

An HDR map straight from its file can light a face 100x brighter or darker than a preset (the presets give a face
turned to their key a diffuse shading of ~1), and an ordinary background photo lights it only as bright as the
picture's own surfaces. `exposed_for_face` keeps a lighting's directions, colours and contrast and scales it so
the brightest diffuse shading a camera-facing face gets has luminance `target` (1 by default, the presets' level).
"""

from __future__ import annotations

import numpy as np

from models.colour import luminance
from models.lighting.lighting import Lighting
from models.render import shading

TARGET_PEAK_SHADING = 1.0


def front_normals(steps: int = 15) -> np.ndarray:
    """(steps^2, 3) unit normals over what a face shows the camera: the front hemisphere, z >= 0.64."""
    u, v = np.meshgrid(np.linspace(-1, 1, steps), np.linspace(-1, 1, steps))
    n = np.stack([u, v, np.ones_like(u) * 1.2], -1).reshape(-1, 3)
    return (n / np.linalg.norm(n, axis=1, keepdims=True)).astype(np.float32)


def peak_front_shading(lighting: Lighting) -> float:
    """Largest diffuse shading luminance over `front_normals()`."""
    return float(luminance(shading(front_normals(), lighting.sh_coeffs)).max())


def exposed_for_face(lighting: Lighting, target: float = TARGET_PEAK_SHADING) -> Lighting:
    """`lighting` scaled (diffuse and specular alike) so `peak_front_shading` is `target`."""
    peak = peak_front_shading(lighting)
    if not peak > 1e-9:
        raise ValueError(f"lighting {lighting.name!r} does not light the front of a face (all dark in front)")
    return lighting.scaled(target / peak)
