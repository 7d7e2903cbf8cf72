"""Image warps shared by the face and expression tests."""

from __future__ import annotations

import numpy as np


def open_mouth(image: np.ndarray, p: np.ndarray, drop_px: float) -> np.ndarray:
    """Pull everything below the inner-lip line down by up to drop_px (most at the mouth centre, fading toward
    the corners and the chin) and paint the opened band a dark mouth-interior colour."""
    h, w = image.shape[:2]
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    lip_y = (p[13, 1] + p[14, 1]) / 2
    cx, half = (p[61, 0] + p[291, 0]) / 2, (p[291, 0] - p[61, 0]) / 2
    across = np.clip(1 - ((x - cx) / half) ** 2, 0, 1)
    below = y - lip_y
    fade = np.clip(1 - (below - drop_px) / (3 * drop_px + 1), 0, 1)
    shift = drop_px * across * fade * (below > 0)
    out = image[np.clip(np.rint(y - shift), 0, h - 1).astype(int), x.astype(int)]
    out[(below > 0) & (below < shift)] = (60, 25, 30)
    return out
