"""Image formation: SH diffuse shading, Blinn-Phong specular, the relit image, and alpha compositing.

Written once for NumPy and CuPy: every function takes arrays and returns arrays of the same library, linear RGB
float32 in and out (convert with models.colour at the edges). The model (ReliTalk's, see docs/lighting.md):

    S_shad = max(E(N), 0) / pi               E = SH irradiance, models/lighting/sh.py
    S_spec = sum_k c_k (s+2)/(2 pi) max(h_k . N, 0)^s max(N . w_k, 0),   h_k = normalize(w_k + v), v = (0, 0, 1)
    image  = A * (S_shad + C_spec * S_spec)

c_k is light k's integrated radiance (Lighting.light_colours), so (s+2)/(2 pi) cos^s is a normalised Phong-type lobe
and C_spec a specular albedo. The extra max(N . w, 0) (the cosine of the rendering equation) keeps lights behind a
surface from lighting it when h . N happens to be positive.
"""

from __future__ import annotations

import math

from models.lighting.lighting import Lighting
from models.lighting.sh import irradiance
from models.xp import array_module

DEFAULT_SHININESS = 32.0
VIEW_DIR = (0.0, 0.0, 1.0)  # orthographic camera looking down -z: the direction toward the camera


def _check_normals(normals) -> None:
    shape = tuple(getattr(normals, "shape", ()))
    if len(shape) < 1 or shape[-1] != 3:
        raise ValueError(f"normals must be (..., 3) unit vectors, got shape {shape}")


def shading(normals, sh_coeffs):
    """Diffuse shading S_shad = max(E(N), 0) / pi (..., 3) for unit normals (..., 3) and radiance SH (9, 3).

    The 9-term irradiance can dip below zero opposite a strong light (the truncated clamped cosine reaches -0.04 of
    the peak); real irradiance cannot, so it is clamped at 0.
    """
    xp = array_module(normals)
    _check_normals(normals)
    e = irradiance(normals, xp.asarray(sh_coeffs, dtype=xp.float32))
    return (xp.maximum(e, 0.0) * (1.0 / math.pi)).astype(xp.float32)


def specular(normals, light_dirs, light_colours, shininess: float = DEFAULT_SHININESS):
    """Specular shading S_spec (..., 3) from K point-like lights (dirs (K, 3) unit toward the light, colours (K, 3)
    integrated radiance) with Blinn-Phong exponent `shininess` (> 0); formula in the module doc."""
    xp = array_module(normals)
    _check_normals(normals)
    if not (math.isfinite(shininess) and shininess > 0):
        raise ValueError(f"shininess must be a finite number > 0, got {shininess!r}")
    dirs = xp.asarray(light_dirs, dtype=xp.float32).reshape(-1, 3)
    colours = xp.asarray(light_colours, dtype=xp.float32).reshape(-1, 3)
    if dirs.shape[0] != colours.shape[0]:
        raise ValueError(f"{dirs.shape[0]} light directions but {colours.shape[0]} light colours")
    n = xp.asarray(normals, dtype=xp.float32)
    out = xp.zeros(n.shape, dtype=xp.float32)
    view = xp.asarray(VIEW_DIR, dtype=xp.float32)
    lobe_norm = (shininess + 2.0) / (2.0 * math.pi)
    for k in range(dirs.shape[0]):  # K is a handful; a per-light pass keeps memory at one image
        w = dirs[k]
        half = w + view
        half_len = xp.linalg.norm(half)
        # With an orthographic camera h is the same for every pixel; a light exactly behind (w = -v) has no h and
        # contributes nothing anyway because max(N . w, 0) = 0 wherever h . N could be positive.
        half = xp.where(half_len > 1e-6, half / xp.maximum(half_len, 1e-6), 0.0)
        n_dot_h = xp.maximum(n @ half, 0.0)
        n_dot_w = xp.maximum(n @ w, 0.0)
        out += (lobe_norm * n_dot_h**shininess * n_dot_w)[..., None] * colours[k]
    return out


def render(albedo, normals, spec_weight, lighting: Lighting, shininess: float = DEFAULT_SHININESS):
    """Relit linear RGB (H, W, 3) = albedo * (S_shad + spec_weight * S_spec).

    albedo: (H, W, 3) linear; normals: (H, W, 3) unit; spec_weight: a number or (H, W) / (H, W, 1) / (H, W, 3).
    """
    xp = array_module(albedo, normals)
    a = xp.asarray(albedo, dtype=xp.float32)
    n = xp.asarray(normals, dtype=xp.float32)
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"albedo must be (H, W, 3) linear RGB, got shape {tuple(a.shape)}")
    if tuple(n.shape) != tuple(a.shape):
        raise ValueError(f"normals shape {tuple(n.shape)} does not match albedo shape {tuple(a.shape)}")
    c = xp.asarray(spec_weight, dtype=xp.float32)
    if c.ndim == 2:
        c = c[..., None]
    if c.ndim not in (0, 3) or (c.ndim == 3 and (c.shape[:2] != a.shape[:2] or c.shape[2] not in (1, 3))):
        raise ValueError(f"spec_weight must be a number or (H, W), (H, W, 1), (H, W, 3); got {tuple(c.shape)}")
    s_shad = shading(n, lighting.sh_coeffs)
    if lighting.num_lights == 0 or not bool(xp.any(c != 0)):
        return a * s_shad
    s_spec = specular(n, lighting.light_dirs, lighting.light_colours, shininess)
    return a * (s_shad + c * s_spec)


def composite(fg, alpha, bg):
    """Straight-alpha 'over' in linear light: fg * alpha + bg * (1 - alpha).

    fg is NOT premultiplied (the renderer's output is colour where the face is); alpha (H, W) or (H, W, 1) in [0, 1];
    bg (H, W, 3) or anything broadcastable to it, e.g. an RGB triple. Blending in linear light is what a camera would
    record at a soft edge; blending sRGB values darkens hair and edges.
    """
    xp = array_module(fg, alpha, bg)
    f = xp.asarray(fg, dtype=xp.float32)
    a = xp.asarray(alpha, dtype=xp.float32)
    if a.ndim == f.ndim - 1:
        a = a[..., None]
    if a.shape[:-1] != f.shape[:-1] or a.shape[-1] != 1:
        raise ValueError(f"alpha shape {tuple(xp.asarray(alpha).shape)} does not match image shape {tuple(f.shape)}")
    a = xp.clip(a, 0.0, 1.0)
    b = xp.broadcast_to(xp.asarray(bg, dtype=xp.float32), f.shape)
    return f * a + b * (1.0 - a)
