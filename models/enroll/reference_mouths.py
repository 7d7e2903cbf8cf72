"""Reference mouths: recorded mouths the mouth net copies teeth and lip texture from.

A bank of training frames' mouth boxes (albedo) is chosen at enrollment to span the lip shapes the person made
(`choose_references`). For every frame the mouth net renders, the bank mouth whose lips are nearest the driven lips
(`lip_shape_key`) is warped onto the driven mesh, piecewise affine over the triangles around the lips plus a strip
across the opening between them (`warp_triangles`), so teeth, tongue and cavity travel with the lips; the net gets it
inside the mouth mask. NumPy only: the live renderer calls the same functions as training.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from models.enroll.expression import lip_region
from models.face.fill import split_contour, strip_triangles
from models.face.resources import NUM_LANDMARKS, load_canonical_face, load_topology
from models.raster import interpolate, rasterize


@lru_cache(maxsize=1)
def warp_triangles() -> np.ndarray:
    """(F, 3) triangles that carry a reference mouth onto another mesh: the mesh's triangles that touch the lip
    region, plus a strip across the opening between the inner lips, so the teeth and the cavity travel with the
    lips around them."""
    topology = load_topology()
    canonical = load_canonical_face().vertices.astype(np.float64)
    region = np.zeros(canonical.shape[0], bool)
    region[lip_region().indices] = True
    near = region[topology.triangles].any(axis=1)
    opening = strip_triangles(split_contour(topology.lips_inner, np.c_[canonical[:, 0], -canonical[:, 1]]),
                              canonical)
    return np.concatenate([topology.triangles[near], opening]).astype(np.int64)


@lru_cache(maxsize=1)
def _lip_contour_vertices() -> np.ndarray:
    topology = load_topology()
    return np.unique(np.concatenate([topology.lips_outer, topology.lips_inner]))


def lip_shape_key(landmarks_px: np.ndarray) -> np.ndarray:
    """(D,) float32: the lips' contour vertices (outer and inner) x, y about their mean (px): what retrieval
    compares. The lips alone: the jaw and chin vertices would outnumber them and match the opening, not the lips."""
    pts = np.asarray(landmarks_px, np.float64)[_lip_contour_vertices(), :2]
    return (pts - pts.mean(0)).ravel().astype(np.float32)


def choose_references(keys: np.ndarray, count: int, iterations: int = 20, seed: int = 0) -> np.ndarray:
    """Sorted indices of `count` rows of `keys` that span them: k-means (seeded by farthest points from the most
    typical row), then the row nearest each centre. Fewer if rows repeat."""
    keys = np.asarray(keys, np.float64)
    n = keys.shape[0]
    if count >= n:
        return np.arange(n)
    sq = lambda a, b: ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)  # noqa: E731
    chosen = [int(np.argmin(sq(keys, keys.mean(0, keepdims=True))[:, 0]))]
    dist = sq(keys, keys[chosen])[:, 0]
    while len(chosen) < count:
        chosen.append(int(np.argmax(dist)))
        dist = np.minimum(dist, sq(keys, keys[chosen[-1:]])[:, 0])
    centres = keys[chosen]
    rng = np.random.default_rng(seed)
    for _ in range(iterations):
        label = np.argmin(sq(keys, centres), axis=1)
        for c in range(count):
            members = keys[label == c]
            centres[c] = members.mean(0) if len(members) else keys[rng.integers(n)]
    return np.unique(np.argmin(sq(keys, centres), axis=0))


def _bilinear(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Sample (H, W, C) at continuous pixel positions (pixel i's centre at i + 0.5), clamped at the border."""
    h, w = image.shape[:2]
    fx, fy = np.clip(x - 0.5, 0, w - 1), np.clip(y - 0.5, 0, h - 1)
    x0, y0 = np.floor(fx).astype(np.int64), np.floor(fy).astype(np.int64)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    ax, ay = (fx - x0)[..., None], (fy - y0)[..., None]
    top = image[y0, x0] * (1 - ax) + image[y0, x1] * ax
    bottom = image[y1, x0] * (1 - ax) + image[y1, x1] * ax
    return (top * (1 - ay) + bottom * ay).astype(np.float32)


def warp_reference(albedo: np.ndarray, reference_px: np.ndarray, driven_px: np.ndarray,
                   mouth_px: int) -> tuple[np.ndarray, np.ndarray]:
    """A reference mouth box (M, M, 3) moved onto a driven mesh: both meshes (468, 3) in their own box's px.
    Piecewise affine over `warp_triangles`. -> (warped (M, M, 3), valid (M, M) bool: covered, source in the box)."""
    raster = rasterize(np.asarray(driven_px, np.float64), warp_triangles(), mouth_px, mouth_px)
    source = interpolate(np.asarray(reference_px, np.float64)[:, :2], raster)
    valid = (raster.triangle_id >= 0) & (source >= 0).all(-1) & (source <= mouth_px).all(-1)
    warped = _bilinear(np.asarray(albedo, np.float32), source[..., 0], source[..., 1])
    return warped * valid[..., None], valid


@dataclass(frozen=True)
class ReferenceMouths:
    """A bank of recorded mouths: albedo (R, M, M, 3) linear and each one's mesh (R, 468, 3) in its own box's px."""

    albedo: np.ndarray
    landmarks_px: np.ndarray

    def __post_init__(self) -> None:
        r = self.albedo.shape[0]
        if self.albedo.ndim != 4 or self.albedo.shape[1] != self.albedo.shape[2] or self.albedo.shape[3] != 3:
            raise ValueError(f"reference albedo must be (R, M, M, 3), got {self.albedo.shape}")
        if r < 1 or self.landmarks_px.shape != (r, NUM_LANDMARKS, 3):
            raise ValueError(f"reference landmarks must be ({r}, {NUM_LANDMARKS}, 3), got {self.landmarks_px.shape}")
        object.__setattr__(self, "keys", np.stack([lip_shape_key(lm) for lm in self.landmarks_px]))

    def __len__(self) -> int:
        return int(self.albedo.shape[0])

    def nearest(self, driven_px: np.ndarray, allowed: np.ndarray | None = None) -> int:
        d = ((self.keys - lip_shape_key(driven_px)) ** 2).sum(1)
        if allowed is not None:
            d = np.where(allowed, d, np.inf)
        return int(np.argmin(d))

    def inputs(self, driven_px: np.ndarray, mask: np.ndarray,
               allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The mouth net's reference inputs for a driven mesh (its box's px) and mouth mask (M, M) bool: the
        nearest reference warped onto it, and where that is valid, both zero outside the mask."""
        r = self.nearest(driven_px, allowed)
        warped, valid = warp_reference(self.albedo[r], self.landmarks_px[r], driven_px, self.albedo.shape[1])
        valid = valid & mask
        return warped * valid[..., None], valid


def box_landmarks(landmarks_px: np.ndarray, box_xy) -> np.ndarray:
    """A crop-px mesh moved into its mouth box's px."""
    return np.asarray(landmarks_px, np.float32) - np.array([box_xy[0], box_xy[1], 0.0], np.float32)
