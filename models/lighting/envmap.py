"""Equirectangular environment maps -> Lighting: SH projection with exact pixel solid angles, brightest-region
sampling for specular lights, and the mapping that turns an ordinary background photo into an environment.

Direction of pixel (row i, column j) of an H x 2H map (pixel centres):
    theta = pi (i + 0.5) / H              polar angle from +y (row 0 is straight up)
    phi   = 2 pi ((j + 0.5) / W - 0.5)    azimuth, 0 at the map's centre column
    w     = (sin theta sin phi, cos theta, -sin theta cos phi)
so the centre of the panorama is -z (what the camera looks at, behind the avatar), the column at 3/4 width is +x
(image right), and the left/right edges meet at +z, behind the camera, which lights the face from the front.
"""

from __future__ import annotations

import math

import numpy as np

from models.colour import luminance
from models.lighting.exposure import exposed_for_face
from models.lighting.lighting import Lighting
from models.lighting.sh import sh_basis
from models.xp import array_module, to_numpy

# Lossy EXR (DWAB) stores near-black pixels as tiny negatives; anything below -NEGATIVE_TOLERANCE x the map's peak is
# not compression noise but a broken map.
NEGATIVE_TOLERANCE = 1e-3


def equirect_directions(height: int, width: int, xp=np):
    """Unit direction (H, W, 3) float32 of each pixel centre of an equirectangular map (mapping in module doc)."""
    theta = (xp.arange(height, dtype=xp.float64) + 0.5) * (math.pi / height)
    phi = ((xp.arange(width, dtype=xp.float64) + 0.5) / width - 0.5) * (2.0 * math.pi)
    st, ct = xp.sin(theta)[:, None], xp.cos(theta)[:, None]
    sp, cp = xp.sin(phi)[None, :], xp.cos(phi)[None, :]
    return xp.stack([st * sp, xp.broadcast_to(ct, (height, width)), -st * cp], axis=-1).astype(xp.float32)


def equirect_solid_angles(height: int, width: int, xp=np):
    """Exact solid angle (H, 1) float64 of each pixel: (2 pi / W) (cos theta_top - cos theta_bottom); sums to 4 pi."""
    edges = xp.arange(height + 1, dtype=xp.float64) * (math.pi / height)
    band = xp.cos(edges[:-1]) - xp.cos(edges[1:])
    return (band * (2.0 * math.pi / width))[:, None]


def direction_to_equirect(directions, height: int, width: int):
    """Continuous (row, column) pixel coordinates of unit directions (..., 3): inverse of equirect_directions."""
    xp = array_module(directions)
    d = xp.asarray(directions, dtype=xp.float64)
    theta = xp.arccos(xp.clip(d[..., 1], -1.0, 1.0))
    phi = xp.arctan2(d[..., 0], -d[..., 2])
    return theta * (height / math.pi) - 0.5, (phi / (2.0 * math.pi) + 0.5) * width - 0.5


def check_environment_map(radiance, source: str = "environment map"):
    """Validate an equirectangular linear-RGB radiance map (H, 2H, 3); returns float32 with lossy-codec negatives
    clamped to 0. ValueError naming the problem for bad shape, non-2:1 aspect, NaN/inf or real negative values."""
    xp = array_module(radiance)
    shape = tuple(radiance.shape)
    if len(shape) != 3 or shape[2] != 3:
        raise ValueError(f"{source}: expected an RGB image (H, W, 3), got shape {shape}")
    h, w = shape[:2]
    if h < 2 or w != 2 * h:
        raise ValueError(f"{source}: equirectangular maps must be 2:1 (width = 2 x height), got {w}x{h}")
    m = xp.asarray(radiance, dtype=xp.float32)
    bad = int(xp.count_nonzero(~xp.isfinite(m)))
    if bad:
        raise ValueError(f"{source}: {bad} pixel values are NaN or inf")
    peak = float(xp.max(m)) if m.size else 0.0
    lowest = float(xp.min(m))
    if lowest < -NEGATIVE_TOLERANCE * max(peak, 1e-6):
        raise ValueError(f"{source}: negative radiance {lowest:g} (peak {peak:g}); not a radiance map")
    return xp.maximum(m, 0.0)


def project_environment(radiance):
    """Radiance SH (9, 3) of an equirectangular map: L_lm = sum_p L(w_p) Y_lm(w_p) dw_p (R&H 2001, eq. 10), with
    each pixel weighted by its exact solid angle. Same array library as the input; accumulated in float64."""
    xp = array_module(radiance)
    m = check_environment_map(radiance)
    h, w = m.shape[:2]
    basis = sh_basis(equirect_directions(h, w, xp)).astype(xp.float64)  # (H, W, 9)
    weighted = m.astype(xp.float64) * equirect_solid_angles(h, w, xp)[..., None]  # L dw, (H, W, 3)
    return (basis.reshape(-1, 9).T @ weighted.reshape(-1, 3)).astype(xp.float32)


def brightest_lights(radiance, count: int = 4, grid_rows: int = 16):
    """The `count` brightest regions of a map as point lights for the specular lobe.

    The map is cut into grid_rows x 2 grid_rows cells; each cell becomes one light whose colour is its integrated
    radiance sum(L dw) and whose direction is the luminance-weighted mean direction of its pixels. Returns
    (dirs (K, 3), colours (K, 3)) with K <= count (empty cells are dropped).
    """
    xp = array_module(radiance)
    if count < 0:
        raise ValueError(f"number of specular lights must be >= 0, got {count}")
    m = check_environment_map(radiance)
    h, w = m.shape[:2]
    gr = max(1, min(grid_rows, h))
    gc = 2 * gr
    cell = ((xp.arange(h) * gr // h)[:, None] * gc + (xp.arange(w) * gc // w)[None, :]).reshape(-1)
    weighted = (m.astype(xp.float64) * equirect_solid_angles(h, w, xp)[..., None]).reshape(-1, 3)
    lum = luminance(weighted.astype(xp.float32)).astype(xp.float64)
    dirs = equirect_directions(h, w, xp).reshape(-1, 3).astype(xp.float64)
    n_cells = gr * gc
    colours = xp.stack([xp.bincount(cell, weights=weighted[:, c], minlength=n_cells) for c in range(3)], axis=-1)
    mean_dirs = xp.stack([xp.bincount(cell, weights=dirs[:, c] * lum, minlength=n_cells) for c in range(3)], -1)
    cell_lum = luminance(colours.astype(xp.float32))
    order = xp.argsort(-cell_lum)[:count]
    keep = order[(cell_lum[order] > 0) & (xp.linalg.norm(mean_dirs[order], axis=-1) > 1e-12)]
    d = mean_dirs[keep]
    d = d / xp.linalg.norm(d, axis=-1, keepdims=True)
    return d.astype(xp.float32), colours[keep].astype(xp.float32)


def environment_lighting(radiance, num_lights: int = 4, name: str = "") -> Lighting:
    """Lighting of an equirectangular linear radiance map: projected SH plus its brightest regions as lights."""
    sh = project_environment(radiance)
    dirs, colours = brightest_lights(radiance, num_lights)
    return Lighting(to_numpy(sh), to_numpy(dirs), to_numpy(colours), name)


def photo_to_environment(photo_linear: np.ndarray, height: int = 64) -> np.ndarray:
    """An equirectangular map (height, 2 height, 3) from an ordinary background photo (linear RGB, any size).

    The photo shows what lies behind the avatar, so it is spread over the back hemisphere (z < 0): its horizontal
    axis spans azimuth -90..+90 degrees (left edge at -x, right edge at +x) and its vertical axis elevation +90..-90
    (top edge at the zenith). The hemisphere behind the camera, which the photo cannot show, is filled with the same
    picture mirrored through the image plane (w -> (x, y, -z)): a room usually looks alike in front and behind, and
    this keeps the photo's left/right and up/down balance, which is what low-order lighting of a face depends on.
    Host-side preprocessing (NumPy).
    """
    from skimage.transform import resize

    p = np.asarray(photo_linear, dtype=np.float32)
    if p.ndim != 3 or p.shape[2] != 3 or min(p.shape[:2]) < 1:
        raise ValueError(f"background photo must be an RGB image (H, W, 3), got shape {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError("background photo contains NaN or inf")
    # Average down first (anti-aliased) so each environment texel sees a region of the photo, not one pixel.
    side = max(2, height)
    small = resize(p, (side, side), order=1, anti_aliasing=True, preserve_range=True).astype(np.float32)
    d = equirect_directions(height, 2 * height).astype(np.float64)
    x, y, z_back = d[..., 0], d[..., 1], -np.abs(d[..., 2])
    azimuth = np.arctan2(x, -z_back)  # in [-pi/2, pi/2] on the back hemisphere
    elevation = np.arcsin(np.clip(y, -1.0, 1.0))
    col = np.clip(((azimuth / math.pi + 0.5) * side).astype(np.int64), 0, side - 1)
    row = np.clip(((0.5 - elevation / math.pi) * side).astype(np.int64), 0, side - 1)
    return np.maximum(small[row, col], 0.0)


# A picture's colours are its surfaces' colours times the light's; the light itself is greyer (a brown table under
# white light photographs brown). Lighting a face with a picture's full saturation turned it the table's colour, so
# a picture's light keeps half its saturation (looked at on the built-in backgrounds and a photo).
PHOTO_LIGHT_SATURATION = 0.5


def photo_lighting(photo_linear: np.ndarray, num_lights: int = 4, name: str = "",
                   saturation: float = PHOTO_LIGHT_SATURATION, expose: bool = True) -> Lighting:
    """The lighting of the place an ordinary photo shows: `photo_to_environment`, `environment_lighting`, colour
    saturation scaled by `saturation`, and (`expose`) exposed for a face as a camera would (exposure.py)."""
    lighting = environment_lighting(photo_to_environment(photo_linear), num_lights, name).saturated(saturation)
    return exposed_for_face(lighting) if expose else lighting
