"""Smooth proxy geometry for the person outside the face mesh (hair, ears, neck, shoulders) from a matte.

The selfie matte says where the person is but not their shape, so the proxy is an inflated silhouette: height rises
like a quarter circle of radius ROUNDING over the first pixels inside the outline and stays flat inside, plus an
ellipsoidal dome for the skull around the face. Smoothed, its normals turn sideways at the outline and face the camera
in the middle, which is what makes hair and shoulders darken on the side away from a light.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from models.xp import smoothstep

ROUNDING_FRACTION = 0.09  # of the image side: how far in from the outline the body surface turns to face the camera
SMOOTH_FRACTION = 0.02  # Gaussian sigma of the height field, of the image side
MATTE_THRESHOLD = 0.5


@dataclass(frozen=True)
class ProxyMesh:
    """Grid mesh over the person: camera-space vertices (X = col, Y = -row, Z toward viewer), in px.

    uv_px: (P, 2) where each vertex samples the portrait texture (column, row), i.e. its neutral image position.
    head_weight: (P,) 1 where the vertex moves rigidly with the head, 0 where it stays (torso), blended in between.
    """

    vertices: np.ndarray
    triangles: np.ndarray
    uv_px: np.ndarray
    head_weight: np.ndarray


def body_height_field(matte: np.ndarray, face_centre_px: np.ndarray, face_radii_px: np.ndarray) -> np.ndarray:
    """(H, W) height in px of the inflated person silhouette (0 outside)."""
    h, w = matte.shape
    side = max(h, w)
    inside = matte > MATTE_THRESHOLD
    dist = ndimage.distance_transform_edt(inside)
    rounding = ROUNDING_FRACTION * side
    t = np.minimum(dist / rounding, 1.0)
    height = rounding * np.sqrt(1.0 - (1.0 - t) ** 2)
    # The skull: an ellipsoid around the face, as deep as it is wide, so the whole head turns away from the light.
    rows, cols = np.mgrid[0:h, 0:w] + 0.5
    ax, ay = face_radii_px
    r2 = ((cols - face_centre_px[0]) / ax) ** 2 + ((rows - face_centre_px[1]) / ay) ** 2
    dome = ax * np.sqrt(np.clip(1.0 - r2, 0.0, None))
    height = np.where(inside, np.maximum(height, rounding * 0.5 + dome), 0.0)
    return ndimage.gaussian_filter(height, SMOOTH_FRACTION * side)


def proxy_mesh(
    matte: np.ndarray, height: np.ndarray, chin_row_px: float, face_height_px: float, step_px: int
) -> ProxyMesh:
    """Grid mesh with `step_px` spacing over the cells the matte touches, heights sampled from `height`.

    Cells reach a little beyond the thresholded matte: the silhouette itself comes from the matte sampled per pixel
    (texture alpha), so the mesh only has to cover it.
    """
    if step_px < 1:
        raise ValueError(f"proxy grid step must be >= 1 px, got {step_px}")
    h, w = matte.shape
    n_rows, n_cols = -(-h // step_px) + 1, -(-w // step_px) + 1
    grid_r, grid_c = np.mgrid[0:n_rows, 0:n_cols] * step_px
    grid_r = grid_r.astype(np.float64)
    grid_c = grid_c.astype(np.float64)

    # A cell is kept when any matte pixel inside it (dilated by one cell) is non-negligible.
    touched = ndimage.maximum_filter(matte, size=2 * step_px + 1) > 0.02
    cell_rows = np.minimum(np.arange(n_rows - 1) * step_px + step_px // 2, h - 1)
    cell_cols = np.minimum(np.arange(n_cols - 1) * step_px + step_px // 2, w - 1)
    keep_cell = touched[np.ix_(cell_rows, cell_cols)]
    if not keep_cell.any():
        raise ValueError("person matte is empty: no person found in the portrait")

    vid = np.arange(n_rows * n_cols).reshape(n_rows, n_cols)
    a, b = vid[:-1, :-1][keep_cell], vid[:-1, 1:][keep_cell]
    c, d = vid[1:, 1:][keep_cell], vid[1:, :-1][keep_cell]
    # (a, d, c) and (a, c, b) are counter-clockwise seen from +Z once rows are flipped to Y up.
    triangles = np.concatenate([np.stack([a, d, c], 1), np.stack([a, c, b], 1)])
    used, triangles = np.unique(triangles, return_inverse=True)
    triangles = triangles.reshape(-1, 3)

    rows = grid_r.ravel()[used]
    cols = grid_c.ravel()[used]
    z = height[np.clip(rows.astype(int), 0, h - 1), np.clip(cols.astype(int), 0, w - 1)]
    vertices = np.stack([cols, -rows, z], 1)
    # Above the chin the proxy is skull and hair (moves with the head); half a face below it, torso (stays).
    head_weight = smoothstep((chin_row_px + 0.5 * face_height_px - rows) / (0.5 * face_height_px))
    return ProxyMesh(vertices, triangles.astype(np.int64), np.stack([cols, rows], 1), head_weight)
