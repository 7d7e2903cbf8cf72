"""Estimate the lighting of a reference portrait: least-squares radiance SH from its face pixels, given their normals
and an albedo guess, under the Lambertian model image = albedo * E(n) / pi.

Face normals only cover the half of the sphere that faces the camera, so some combinations of coefficients are
weakly constrained (light from behind barely changes a frontal face). A small ridge term, relative to the data's own
scale, keeps those at zero instead of letting noise blow them up; it changes well-constrained coefficients by about
`ridge` relative.
"""

from __future__ import annotations

import math

import numpy as np

from models.colour import luminance
from models.lighting.lighting import Lighting
from models.lighting.sh import IRRADIANCE_GAIN_PER_COEFF, NUM_COEFFS, Y1_CONST, sh_basis
from models.xp import array_module, to_numpy

MIN_FACE_PIXELS = 64
SATURATED_LINEAR = 0.98  # clipped pixels do not obey the linear model; leave them out


def estimate_sh(image_linear, normals, mask=None, albedo_linear=0.5, ridge: float = 1e-3):
    """Radiance SH (9, 3) that best explains `image_linear` (H, W, 3) as albedo * E(normals) / pi over the mask.

    albedo_linear: a number, an RGB triple or an (H, W, 3) map. mask: (H, W) weights/booleans; pixels count when
    mask > 0.5, the normal has length > 0.5 and no channel is saturated. Same array library as the inputs.
    """
    xp = array_module(image_linear, normals)
    img = xp.asarray(image_linear, dtype=xp.float32)
    nrm = xp.asarray(normals, dtype=xp.float32)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"portrait must be (H, W, 3) linear RGB, got shape {tuple(img.shape)}")
    if tuple(nrm.shape) != tuple(img.shape):
        raise ValueError(f"normal map shape {tuple(nrm.shape)} does not match portrait shape {tuple(img.shape)}")
    if not (math.isfinite(ridge) and ridge >= 0):
        raise ValueError(f"ridge must be a finite number >= 0, got {ridge!r}")
    albedo = xp.broadcast_to(xp.asarray(albedo_linear, dtype=xp.float32), img.shape)
    if not bool(xp.all(xp.isfinite(img))) or not bool(xp.all(xp.isfinite(nrm))):
        raise ValueError("portrait or normal map contains NaN or inf")
    valid = (xp.linalg.norm(nrm, axis=-1) > 0.5) & xp.all(img < SATURATED_LINEAR, axis=-1)
    valid &= xp.all(albedo > 1e-4, axis=-1)
    if mask is not None:
        m = xp.asarray(mask)
        if tuple(m.shape) != tuple(img.shape[:2]):
            raise ValueError(f"mask shape {tuple(m.shape)} does not match portrait size {tuple(img.shape[:2])}")
        valid &= m > 0.5
    count = int(xp.count_nonzero(valid))
    if count < MIN_FACE_PIXELS:
        raise ValueError(f"only {count} usable face pixels (need {MIN_FACE_PIXELS}): check the mask and normal map")
    n = nrm[valid]
    n = n / xp.linalg.norm(n, axis=-1, keepdims=True)
    gains = xp.asarray(IRRADIANCE_GAIN_PER_COEFF, dtype=xp.float64) / math.pi
    shading_basis = sh_basis(n).astype(xp.float64) * gains  # (P, 9): d(image)/d(L_k) for albedo 1
    out = xp.empty((NUM_COEFFS, 3), dtype=xp.float64)
    for c in range(3):
        design = shading_basis * albedo[valid][:, c : c + 1].astype(xp.float64)
        normal_matrix = design.T @ design
        damping = ridge * float(xp.trace(normal_matrix)) / NUM_COEFFS
        rhs = design.T @ img[valid][:, c].astype(xp.float64)
        out[:, c] = xp.linalg.solve(normal_matrix + damping * xp.eye(NUM_COEFFS), rhs)
    return out.astype(xp.float32)


def dominant_light(sh_coeffs) -> tuple[np.ndarray, np.ndarray]:
    """The single directional light explaining the band-1 (linear) part of an SH lighting: (dirs (K, 3),
    colours (K, 3)) with K = 1, or K = 0 when band 1 is zero. A delta light of integrated radiance c from w has
    (L11, L1-1, L10) = c Y1_CONST (x, y, z), so the direction is the luminance-weighted band-1 vector and each
    channel's colour is its projection on that direction divided by Y1_CONST."""
    sh = np.asarray(to_numpy(sh_coeffs), dtype=np.float64)
    band1_xyz = sh[[3, 1, 2]]  # rows x, y, z; columns RGB
    weighted = band1_xyz @ np.asarray(luminance(np.eye(3, dtype=np.float32)), dtype=np.float64)
    norm = float(np.linalg.norm(weighted))
    if norm < 1e-9:
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.float32)
    w = weighted / norm
    colour = np.maximum(w @ band1_xyz / Y1_CONST, 0.0)
    return w[None].astype(np.float32), colour[None].astype(np.float32)


def estimate_lighting(image_linear, normals, mask=None, albedo_linear=0.5, ridge: float = 1e-3, name: str = ""):
    """Lighting of a portrait: estimated SH plus its dominant light for the specular lobe."""
    sh = to_numpy(estimate_sh(image_linear, normals, mask, albedo_linear, ridge))
    dirs, colours = dominant_light(sh)
    return Lighting(sh, dirs, colours, name)
