"""Colour decontamination of the person's soft edge, for compositing over a new background.

Where the person matte is fractional (hair, ears, shoulders), a recorded pixel mixes the person with the wall behind
them: I = a F + (1 - a) B. Folding such a pixel into the albedo (I / shading) keeps B in it, so over a new background
and under a new light the avatar wears a rim of the old wall (measured: `docs/enroll.md`, "Soft edges"). The bundle
stores, in that band, the person's colour continued outward from where the matte is solid instead: the avatar is
then composited as a F' + (1 - a) B_new, with F' ~ F.

Only the idle layers the bundle stores are changed; the held-out evaluation against the real frames pastes the
avatar back over the *recorded* background, where the contaminated colour is the right one.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

# The matte at or above which a pixel is the person alone (its colour is kept and continued outward).
SOLID_MATTE = 0.95
# Continuation scales (px): the band is filled from the nearest scale that has enough solid pixels around.
FILL_SIGMAS_PX = (1.0, 2.0, 4.0, 8.0)
MIN_SOLID_WEIGHT = 0.05


def decontaminate_edges(albedo: np.ndarray, matte: np.ndarray, solid: float = SOLID_MATTE) -> np.ndarray:
    """albedo (H, W, 3) or (n, H, W, 3), matte (H, W) or (n, H, W) in [0, 1] -> albedo with every pixel whose matte
    is in (0, solid) replaced by the solid pixels' albedo continued outward (normalised Gaussian averaging at the
    finest scale in FILL_SIGMAS_PX that reaches it). Pixels beyond all scales keep their value."""
    albedo = np.asarray(albedo, np.float32)
    matte = np.asarray(matte, np.float32)
    if albedo.ndim == 4:
        return np.stack([decontaminate_edges(a, m, solid) for a, m in zip(albedo, matte)])
    if albedo.ndim != 3 or albedo.shape[-1] != 3 or matte.shape != albedo.shape[:2]:
        raise ValueError(f"albedo must be (H, W, 3) with matte (H, W), got {albedo.shape} and {matte.shape}")
    is_solid = (matte >= solid).astype(np.float32)
    band = (matte > 0) & (matte < solid)
    out = albedo.copy()
    todo = band.copy()
    for sigma in FILL_SIGMAS_PX:
        if not todo.any():
            break
        weight = gaussian_filter(is_solid, sigma, mode="constant")
        reach = todo & (weight > MIN_SOLID_WEIGHT)
        if reach.any():
            colour = gaussian_filter(albedo * is_solid[..., None], (sigma, sigma, 0), mode="constant")
            out[reach] = colour[reach] / weight[reach][:, None]
            todo &= ~reach
    return out
