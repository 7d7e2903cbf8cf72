"""The face rig: which face-mesh vertices the jaw, lips and eyelids move, and how (viseme + blink deformation).

All positions are camera space in pixel units (X = column, Y = -row, Z toward the viewer); distances scale with the
inter-ocular distance so the same rig works at any image size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from models.face.fill import ContourChains, split_contour
from models.face.resources import LEFT_EYE_OUTER, RIGHT_EYE_OUTER, MeshTopology
from models.xp import smoothstep

JAW_MAX_DEG = 15.0  # jaw_open = 1: about a 0.35 inter-ocular inner-lip gap, a wide "ah"
ROUND_NARROW = 0.30  # lip_round = 1 pulls the lips in to 70 % width ...
ROUND_PROTRUDE_IOD = 0.12  # ... and pushes them forward
SPREAD_WIDEN = 0.16
PRESS_ROLL_IOD = 0.03


def _ring(vertices: np.ndarray, triangles: np.ndarray, exclude: set[int]) -> np.ndarray:
    """Vertices sharing a triangle with any of `vertices`, minus `exclude`."""
    members = np.isin(triangles, vertices).any(1)
    ring = set(np.unique(triangles[members]).tolist()) - exclude
    return np.array(sorted(ring), dtype=np.int64)


@dataclass(frozen=True)
class FaceRig:
    """Neutral face-mesh vertices plus the per-vertex weights that the viseme and blink controls use."""

    neutral: np.ndarray  # (468, 3) camera space, px
    iod_px: float
    mouth_centre: np.ndarray  # (3,)
    jaw_pivot: np.ndarray  # (3,)
    jaw_weight: np.ndarray  # (468,) 0 (skull) .. 1 (moves with the jaw)
    lip_weight: np.ndarray  # (468,) closeness to the mouth, for round / spread
    lips: ContourChains  # inner lip contour
    upper_lip_outer: np.ndarray  # outer-lip vertices of the upper / lower lip (corners excluded)
    lower_lip_outer: np.ndarray
    eyes: tuple[ContourChains, ContourChains]
    lid_ring: tuple[np.ndarray, np.ndarray]  # skin vertices above each upper lid that follow it part way


def build_rig(neutral: np.ndarray, topology: MeshTopology) -> FaceRig:
    """Rig for a neutral (mouth closed, eyes open) face mesh in camera space."""
    xy_img = np.c_[neutral[:, 0], -neutral[:, 1]]  # image rows for the contour split
    lips = split_contour(topology.lips_inner, xy_img)
    lips_outer = split_contour(topology.lips_outer, xy_img)
    eyes = (split_contour(topology.right_eye, xy_img), split_contour(topology.left_eye, xy_img))
    iod = float(np.linalg.norm(neutral[LEFT_EYE_OUTER] - neutral[RIGHT_EYE_OUTER]))
    if iod < 4.0:
        raise ValueError(f"face too small to animate: {iod:.1f} px between the eye corners (need >= 4)")
    corners = neutral[[lips.upper[0], lips.upper[-1]]]
    centre = corners.mean(0)
    # The jaw hinges near the ear: above the mouth (about nose height) and well behind the face surface.
    pivot = centre + np.array([0.0, 0.75 * iod, -1.2 * iod])

    below = (centre[1] + 0.08 * iod - neutral[:, 1]) / (0.4 * iod)  # 0 at the mouth line, 1 a bit below it
    jaw_w = smoothstep(below)
    lower_lip = np.concatenate([lips.lower[1:-1], lips_outer.lower[1:-1]])
    upper_lip = np.concatenate([lips.upper[1:-1], lips_outer.upper[1:-1]])
    jaw_w[lower_lip] = 1.0
    jaw_w[upper_lip] = 0.0
    jaw_w[[lips.upper[0], lips.upper[-1], lips_outer.upper[0], lips_outer.upper[-1]]] = 0.5

    d2 = ((neutral[:, :2] - centre[:2]) ** 2).sum(1)
    lip_w = np.exp(-d2 / (2 * (0.42 * iod) ** 2))

    rings = []
    for eye in eyes:
        contour = set(eye.upper.tolist()) | set(eye.lower.tolist())
        ring = _ring(eye.upper[1:-1], topology.triangles, contour)
        # Keep the ring above the lid (lower-lid neighbours must stay put).
        lid_y = neutral[eye.upper, 1].mean()
        rings.append(ring[neutral[ring, 1] > lid_y])
    return FaceRig(
        neutral=neutral.astype(np.float64),
        iod_px=iod,
        mouth_centre=centre,
        jaw_pivot=pivot,
        jaw_weight=jaw_w,
        lip_weight=lip_w,
        lips=lips,
        upper_lip_outer=lips_outer.upper[1:-1],
        lower_lip_outer=lips_outer.lower[1:-1],
        eyes=eyes,
        lid_ring=(rings[0], rings[1]),
    )


def _rotate_x(points: np.ndarray, pivot: np.ndarray, angle_rad: np.ndarray) -> np.ndarray:
    """Rotate each point about the X axis through `pivot` by its own angle (right hand: +angle moves -Y to -Z)."""
    rel = points - pivot
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    y = rel[:, 1] * c - rel[:, 2] * s
    z = rel[:, 1] * s + rel[:, 2] * c
    return np.c_[rel[:, 0], y, z] + pivot


def deform(rig: FaceRig, visemes: np.ndarray, blink: float) -> np.ndarray:
    """Face vertices (468, 3) for viseme weights (jaw_open, lip_round, lip_spread, lip_press) and blink 0..1."""
    jaw_open, lip_round, lip_spread, lip_press = (float(np.clip(v, 0.0, 1.0)) for v in visemes)
    v = rig.neutral.copy()
    iod, c, g = rig.iod_px, rig.mouth_centre, rig.lip_weight

    # Lip shape first (in the closed-mouth frame), then the jaw carries the lower half.
    dx = v[:, 0] - c[0]
    width_scale = 1.0 - ROUND_NARROW * lip_round * g + SPREAD_WIDEN * lip_spread * g
    v[:, 0] = c[0] + dx * width_scale
    v[:, 2] += ROUND_PROTRUDE_IOD * iod * lip_round * g
    # A spread lifts the corners a little (a smile-ish shape); |dx| grows toward the corners.
    half_width = max(abs(v[rig.lips.upper[0], 0] - c[0]), 1e-6)
    v[:, 1] += 0.06 * iod * lip_spread * g * np.clip(np.abs(dx) / half_width, 0, 1) ** 2
    # Press: the inner lips meet on their common mid line (whatever gap the portrait had) and roll in a little.
    if lip_press > 0:
        v = _seal_lips(v, rig, lip_press)
        v[:, 2] -= PRESS_ROLL_IOD * iod * lip_press * g

    # Pressed lips cannot be apart: the press wins over any co-articulated jaw opening.
    angle = math.radians(JAW_MAX_DEG) * jaw_open * (1.0 - lip_press) * rig.jaw_weight
    v = _rotate_x(v, rig.jaw_pivot, angle)

    blink = float(np.clip(blink, 0.0, 1.0))
    if blink > 0:
        for eye, ring in zip(rig.eyes, rig.lid_ring):
            v = _close_eye(v, eye, ring, blink)
    return v


def _seal_lips(v: np.ndarray, rig: FaceRig, amount: float) -> np.ndarray:
    """Move inner-lip vertices `amount` of the way to the upper/lower mid line; the outer lips follow half as far."""
    up, lo = rig.lips.upper, rig.lips.lower
    t_up, t_lo = np.linspace(0, 1, len(up)), np.linspace(0, 1, len(lo))
    mid_at_up = 0.5 * (v[up, 1] + np.interp(t_up, t_lo, v[lo, 1]))
    mid_at_lo = 0.5 * (v[lo, 1] + np.interp(t_lo, t_up, v[up, 1]))
    shift_up = (mid_at_up - v[up, 1]) * amount
    shift_lo = (mid_at_lo - v[lo, 1]) * amount
    out = v.copy()
    out[up, 1] += shift_up
    out[lo, 1] += shift_lo
    for ring, chain, shift in ((rig.upper_lip_outer, up, shift_up), (rig.lower_lip_outer, lo, shift_lo)):
        nearest = np.abs(v[ring, 0][:, None] - v[chain, 0][None, :]).argmin(1)
        out[ring, 1] += 0.5 * shift[nearest]
    return out


def _close_eye(v: np.ndarray, eye: ContourChains, ring: np.ndarray, blink: float) -> np.ndarray:
    """Upper lid slides down onto the lower lid (96 % at blink 1); the skin ring above follows 40 % of the way."""
    up, lo = eye.upper, eye.lower
    t_up = np.linspace(0, 1, len(up))
    t_lo = np.linspace(0, 1, len(lo))
    target_y = np.interp(t_up, t_lo, v[lo, 1])
    shift = (target_y - v[up, 1]) * 0.96 * blink
    shift[[0, -1]] = 0.0  # corners stay
    out = v.copy()
    out[up, 1] += shift
    if len(ring):
        # Each ring vertex follows the lid vertex nearest to it horizontally.
        nearest = np.abs(v[ring, 0][:, None] - v[up, 0][None, :]).argmin(1)
        out[ring, 1] += 0.4 * shift[nearest]
    return out
