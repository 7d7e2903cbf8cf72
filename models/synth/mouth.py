"""Mouth interior (dark cavity, upper and lower teeth, tongue) seen through the inner-lip opening.

Procedural in a mouth frame per pixel: u runs 0..1 from the image-left to the image-right inner-lip corner, and v is
the pixel distance perpendicular to that axis. Upper teeth hang a fixed depth below the upper lip (they belong to the
skull), lower teeth sit just above the lower lip (they ride on the jaw), the tongue fills the bottom middle, and the
rest is a dark cavity. Albedo here includes the darkening from being inside the mouth, so GT stays A*(S + C*S_spec).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.raster import rasterize

TEETH_ALBEDO = np.array([0.60, 0.56, 0.47], np.float32)
TONGUE_ALBEDO = np.array([0.42, 0.11, 0.11], np.float32)
CAVITY_ALBEDO = np.array([0.045, 0.012, 0.012], np.float32)
TEETH_SPEC = 0.35
TONGUE_SPEC = 0.2
UPPER_TEETH_DEPTH = 0.13  # of the mouth width
LOWER_TEETH_DEPTH = 0.09
TOOTH_WIDTH = 0.085  # of the mouth width


@dataclass(frozen=True)
class MouthLayer:
    """Mouth interior inside the inner-lip polygon: `inside` (H, W) bool, per-pixel albedo / normal / spec weight
    (valid where inside)."""

    inside: np.ndarray
    albedo: np.ndarray
    normals: np.ndarray
    spec_weight: np.ndarray


def mouth_layer(upper_xy: np.ndarray, lower_xy: np.ndarray, facing: np.ndarray, height: int, width: int) -> MouthLayer:
    """Render the interior for inner-lip chains `upper_xy`, `lower_xy` ((n, 2) image px, corner to corner, sharing
    end points) and the head's forward direction `facing` (3,) in camera space."""
    polygon = np.concatenate([upper_xy, lower_xy[-2:0:-1]])
    centre = polygon.mean(0)
    verts = np.c_[np.vstack([polygon, centre]), np.zeros(len(polygon) + 1)]
    k = len(polygon)
    fan = np.stack([np.arange(k), np.roll(np.arange(k), -1), np.full(k, k)], 1)
    inside = rasterize(verts, fan, height, width).coverage

    albedo = np.zeros((height, width, 3), np.float32)
    normals = np.zeros((height, width, 3), np.float32)
    spec = np.zeros((height, width), np.float32)
    rr, cc = np.nonzero(inside)
    if rr.size == 0:
        return MouthLayer(inside, albedo, normals, spec)

    left, right = upper_xy[0], upper_xy[-1]
    axis = right - left
    mouth_w = float(np.linalg.norm(axis))
    axis_unit = axis / max(mouth_w, 1e-6)
    down = np.array([-axis_unit[1], axis_unit[0]])
    if down[1] < 0:
        down = -down

    def frame(xy):
        rel = xy - left
        return rel @ axis_unit / max(mouth_w, 1e-6), rel @ down

    pu, pv = frame(np.stack([cc + 0.5, rr + 0.5], 1))
    uu, vu = frame(upper_xy)
    ul, vl = frame(lower_xy)
    v_up = np.interp(pu, uu, vu)
    v_lo = np.interp(pu, ul, vl)
    below_upper = pv - v_up
    above_lower = v_lo - pv
    gap = np.maximum(v_lo - v_up, 1e-3)
    centred = pu - 0.5

    # Gaps between teeth: a soft dark line every TOOTH_WIDTH, centred on the midline.
    tooth_phase = np.abs(np.sin(np.pi * centred / TOOTH_WIDTH))
    tooth_shade = (0.8 + 0.2 * np.sqrt(1 - tooth_phase**2)) * (1 - 0.55 * np.clip(np.abs(centred) / 0.36, 0, 1) ** 3)
    upper_teeth = (below_upper < UPPER_TEETH_DEPTH * mouth_w) & (np.abs(centred) < 0.36)
    lower_teeth = (above_lower < LOWER_TEETH_DEPTH * mouth_w) & (np.abs(centred) < 0.30) & ~upper_teeth
    tongue = (
        (centred / 0.3) ** 2 + ((above_lower - 0.2 * gap) / (0.4 * gap + 1.0)) ** 2 < 1.0
    ) & ~upper_teeth & ~lower_teeth
    # Cavity: a little light reaches just inside the lips, none deep in the middle.
    edge = np.clip(1.0 - np.minimum(below_upper, above_lower) / (0.1 * mouth_w + 1e-6), 0, 1)
    a = np.where(upper_teeth[:, None] | lower_teeth[:, None], TEETH_ALBEDO * tooth_shade[:, None], CAVITY_ALBEDO * (1 + 1.5 * edge)[:, None])
    a = np.where(tongue[:, None], TONGUE_ALBEDO * (0.6 + 0.4 * (1 - np.abs(centred) / 0.3))[:, None], a)
    albedo[rr, cc] = a
    spec[rr, cc] = np.where(upper_teeth | lower_teeth, TEETH_SPEC, np.where(tongue, TONGUE_SPEC, 0.0))

    # The teeth arch curves back toward the corners: tilt the normal sideways with u.
    facing = np.asarray(facing, np.float64) / np.linalg.norm(facing)
    side = np.array([axis_unit[0], -axis_unit[1], 0.0])  # image axis -> camera space (Y up)
    n = facing[None, :] + (1.2 * centred)[:, None] * side[None, :]
    normals[rr, cc] = n / np.linalg.norm(n, axis=1, keepdims=True)
    return MouthLayer(inside, albedo, normals, spec)
