"""Real spherical harmonics of order 2: basis, Lambertian irradiance and exact rotation.

Convention (shared by the whole project, see docs/lighting.md):
  * camera space, x right, y up, z toward the viewer; a direction is a unit vector pointing AWAY from the surface
    (toward where the light comes from);
  * 9 coefficients ordered (l,m) = (0,0),(1,-1),(1,0),(1,1),(2,-2),(2,-1),(2,0),(2,1),(2,2);
  * orthonormal real SH on the unit sphere: Y00 = 0.282095, Y1-1 = 0.488603 y, Y10 = 0.488603 z, Y11 = 0.488603 x,
    Y2-2 = 1.092548 xy, Y2-1 = 1.092548 yz, Y20 = 0.315392 (3z^2 - 1), Y21 = 1.092548 xz, Y22 = 0.546274 (x^2 - y^2);
  * `sh_coeffs` (9, 3) are RADIANCE coefficients L_lm = integral of L(w) Y_lm(w) dw, one column per linear RGB channel;
  * irradiance E(n) = sum_lm A_l L_lm Y_lm(n) with A0 = pi, A1 = 2pi/3, A2 = pi/4 (Ramamoorthi & Hanrahan 2001,
    "An Efficient Representation for Irradiance Environment Maps"), so a constant radiance c gives E = pi c.

Basis and irradiance take NumPy or CuPy arrays. Rotation matrices are 9x9 host (NumPy) arrays: lightings are tiny and
live on the host; only per-pixel work goes to the device.
"""

from __future__ import annotations

import math

import numpy as np

from models.xp import array_module

NUM_COEFFS = 9

# Normalisation constants of the orthonormal real SH basis (sqrt of (2l+1)/(4pi) * (l-|m|)!/(l+|m|)! times factors).
Y00_CONST = 0.5 * math.sqrt(1.0 / math.pi)  # 0.282095
Y1_CONST = math.sqrt(3.0 / (4.0 * math.pi))  # 0.488603
Y2_CROSS_CONST = 0.5 * math.sqrt(15.0 / math.pi)  # 1.092548  (xy, yz, xz)
Y20_CONST = 0.25 * math.sqrt(5.0 / math.pi)  # 0.315392
Y22_CONST = 0.25 * math.sqrt(15.0 / math.pi)  # 0.546274

# Band l of each of the 9 coefficients, and the clamped-cosine convolution gains A_l of R&H 2001 (eq. 8-9).
BAND_OF_COEFF = (0, 1, 1, 1, 2, 2, 2, 2, 2)
BAND_SLICES = (slice(0, 1), slice(1, 4), slice(4, 9))
IRRADIANCE_GAIN_PER_BAND = (math.pi, 2.0 * math.pi / 3.0, math.pi / 4.0)
IRRADIANCE_GAIN_PER_COEFF = tuple(IRRADIANCE_GAIN_PER_BAND[b] for b in BAND_OF_COEFF)


def sh_basis_terms(x, y, z) -> list:
    """The 9 basis functions at direction components x, y, z, in coefficient order.

    Plain arithmetic only, so the one formula serves NumPy, CuPy and torch arrays alike.
    """
    return [
        x * 0.0 + Y00_CONST,
        Y1_CONST * y,
        Y1_CONST * z,
        Y1_CONST * x,
        Y2_CROSS_CONST * x * y,
        Y2_CROSS_CONST * y * z,
        Y20_CONST * (3.0 * z * z - 1.0),
        Y2_CROSS_CONST * x * z,
        Y22_CONST * (x * x - y * y),
    ]


def sh_basis(directions):
    """Y_lm at unit directions (..., 3) -> (..., 9) float32, same array library as the input.

    Directions are not renormalised: callers pass unit vectors (normal maps are unit by convention).
    """
    xp = array_module(directions)
    d = xp.asarray(directions, dtype=xp.float32)
    if d.shape[-1] != 3:
        raise ValueError(f"directions must have a last axis of 3 (x, y, z), got shape {tuple(d.shape)}")
    return xp.stack(sh_basis_terms(d[..., 0], d[..., 1], d[..., 2]), axis=-1)


def check_sh_coeffs(sh_coeffs) -> None:
    """Raise ValueError unless `sh_coeffs` is a finite (9, 3) array."""
    xp = array_module(sh_coeffs)
    shape = tuple(getattr(sh_coeffs, "shape", ()))
    if shape != (NUM_COEFFS, 3):
        raise ValueError(f"sh_coeffs must have shape (9, 3) (9 SH coefficients x RGB), got {shape}")
    if not bool(xp.all(xp.isfinite(sh_coeffs))):
        raise ValueError("sh_coeffs contains NaN or inf")


def irradiance(normals, sh_coeffs):
    """Lambertian irradiance E(n) (..., 3) at unit normals (..., 3) under radiance SH `sh_coeffs` (9, 3).

    E = sum_lm A_l L_lm Y_lm(n). The result is in the units of radiance times steradians (W m^-2 if L is in
    W m^-2 sr^-1); divide by pi for the shading factor a Lambertian albedo multiplies.
    """
    xp = array_module(normals)
    check_sh_coeffs(sh_coeffs)
    gains = xp.asarray(IRRADIANCE_GAIN_PER_COEFF, dtype=xp.float32)[:, None]
    coeffs = xp.asarray(sh_coeffs, dtype=xp.float32) * gains  # fold A_l in: 27 multiplies, not 9 per pixel
    basis = sh_basis(normals)
    return basis @ coeffs


# ---------------------------------------------------------------------------------------------------------------
# Rotation
# ---------------------------------------------------------------------------------------------------------------


def axis_angle_matrix(axis, angle_rad: float) -> np.ndarray:
    """3x3 rotation matrix turning vectors by `angle_rad` about `axis` (right-hand rule), via Rodrigues' formula."""
    a = np.asarray(axis, dtype=np.float64).reshape(-1)
    if a.shape != (3,) or not np.all(np.isfinite(a)):
        raise ValueError(f"rotation axis must be 3 finite numbers, got {axis!r}")
    norm = float(np.linalg.norm(a))
    if norm < 1e-12:
        raise ValueError("rotation axis must be non-zero")
    if not math.isfinite(angle_rad):
        raise ValueError(f"rotation angle must be finite, got {angle_rad!r}")
    k = a / norm
    kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + math.sin(angle_rad) * kx + (1.0 - math.cos(angle_rad)) * (kx @ kx)


# Fixed, well-spread sample directions used to fit band rotation matrices: a Fibonacci sphere of 64 points. Any set
# on which each band's basis has full column rank makes the least-squares fit exact, because a rotated band-l
# harmonic is itself a combination of band-l harmonics (the bands are rotation invariant subspaces).
def fibonacci_sphere(count: int) -> np.ndarray:
    i = np.arange(count, dtype=np.float64) + 0.5
    z = 1.0 - 2.0 * i / count
    r = np.sqrt(1.0 - z * z)
    phi = i * math.pi * (3.0 - math.sqrt(5.0))
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=-1)


_FIT_DIRECTIONS = fibonacci_sphere(64)


def _sh_basis_f64(directions: np.ndarray) -> np.ndarray:
    d = np.asarray(directions, dtype=np.float64)
    return np.stack(sh_basis_terms(d[..., 0], d[..., 1], d[..., 2]), axis=-1)


def sh_rotation_matrix(rotation: np.ndarray) -> np.ndarray:
    """9x9 block-diagonal matrix D with L' = D @ L for the lighting L'(w) = L(R^T w), i.e. L turned by R.

    Band 0 is 1; the 3x3 band-1 and 5x5 band-2 blocks are fitted by least squares from Y_l(R^T w_i) = M_l Y_l(w_i)
    on 64 sample directions, which is exact (to float64 rounding) because each band is closed under rotation.
    """
    r = np.asarray(rotation, dtype=np.float64)
    if r.shape != (3, 3) or not np.allclose(r @ r.T, np.eye(3), atol=1e-6) or np.linalg.det(r) < 0:
        raise ValueError("rotation must be a proper 3x3 rotation matrix (orthonormal, det +1)")
    y_at = _sh_basis_f64(_FIT_DIRECTIONS)  # (N, 9): Y(w_i)
    y_back = _sh_basis_f64(_FIT_DIRECTIONS @ r)  # rows are R^T w_i, since (R^T w)^T = w^T R
    d = np.zeros((NUM_COEFFS, NUM_COEFFS))
    for band in BAND_SLICES:
        # Y_back = Y_at @ M^T per band; the coefficients transform with M^T (see docs/lighting.md).
        m_t, *_ = np.linalg.lstsq(y_at[:, band], y_back[:, band], rcond=None)
        d[band, band] = m_t
    return d


def rotate_sh(sh_coeffs, rotation: np.ndarray) -> np.ndarray:
    """Radiance SH (9, 3) of the environment turned by the 3x3 rotation `rotation` (a light from w moves to R w)."""
    check_sh_coeffs(np.asarray(sh_coeffs))
    return (sh_rotation_matrix(rotation) @ np.asarray(sh_coeffs, dtype=np.float64)).astype(np.float32)


def band_energies(sh_coeffs) -> np.ndarray:
    """Per-band squared norms (3 bands, 3 channels) -> (3, 3); rotation leaves each one unchanged."""
    c = np.asarray(sh_coeffs, dtype=np.float64)
    return np.stack([np.sum(c[b] ** 2, axis=0) for b in BAND_SLICES])


def project_directional(direction, rgb) -> np.ndarray:
    """Radiance SH (9, 3) of a delta light from unit `direction` whose integrated radiance is `rgb` (3,).

    A delta of total radiance rgb contributes rgb * Y_lm(direction) to each coefficient; its exact irradiance is
    rgb * max(n . direction, 0).
    """
    d = np.asarray(direction, dtype=np.float64)
    return (_sh_basis_f64(d)[:, None] * np.asarray(rgb, dtype=np.float64)[None, :]).astype(np.float32)


def constant_sh(rgb) -> np.ndarray:
    """Radiance SH (9, 3) of a constant environment of radiance `rgb` (3,): only L00 = rgb * sqrt(4 pi)."""
    out = np.zeros((NUM_COEFFS, 3), dtype=np.float32)
    out[0] = np.asarray(rgb, dtype=np.float64) * math.sqrt(4.0 * math.pi)
    return out
