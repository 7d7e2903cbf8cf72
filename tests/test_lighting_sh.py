"""SH basis, irradiance and rotation against closed forms."""

import math

import numpy as np
import pytest

from models.lighting.envmap import equirect_directions, equirect_solid_angles
from models.lighting.sh import (
    axis_angle_matrix,
    band_energies,
    constant_sh,
    irradiance,
    project_directional,
    rotate_sh,
    sh_basis,
    sh_rotation_matrix,
)
from models.render import shading


def fibonacci_sphere(n: int) -> np.ndarray:
    i = np.arange(n) + 0.5
    z = 1 - 2 * i / n
    r = np.sqrt(1 - z * z)
    phi = i * math.pi * (3 - math.sqrt(5))
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=-1)


def random_rotation(rng) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def test_basis_constants_and_axes():
    y = sh_basis(np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], np.float32))
    np.testing.assert_allclose(y[:, 0], 0.282095, atol=1e-6)
    np.testing.assert_allclose([y[0, 2], y[1, 3], y[2, 1]], 0.488603, atol=1e-6)  # Y10~z, Y11~x, Y1-1~y
    np.testing.assert_allclose(y[0, 6], 0.315392 * 2, atol=1e-6)  # Y20 at +z: 0.315392 (3 - 1)
    np.testing.assert_allclose(y[1, 8], 0.546274, atol=1e-6)  # Y22 at +x
    d = np.array([[1.0, 1.0, 1.0]], np.float32) / math.sqrt(3)
    np.testing.assert_allclose(sh_basis(d)[0, [4, 5, 7]], 1.092548 / 3, atol=1e-6)  # xy, yz, xz


def test_basis_is_orthonormal_on_the_sphere():
    h, w = 256, 512
    y = sh_basis(equirect_directions(h, w)).astype(np.float64)
    dw = np.broadcast_to(equirect_solid_angles(h, w), (h, w))[..., None]
    gram = np.einsum("hwi,hwj->ij", y * dw, y)
    np.testing.assert_allclose(gram, np.eye(9), atol=2e-4)


def test_constant_environment_gives_pi_c_irradiance_everywhere():
    c = np.array([0.3, 1.0, 2.5])
    normals = fibonacci_sphere(500).astype(np.float32)
    e = irradiance(normals, constant_sh(c))
    np.testing.assert_allclose(e, np.broadcast_to(math.pi * c, e.shape), rtol=1e-5)
    np.testing.assert_allclose(shading(normals, constant_sh(c)), np.broadcast_to(c, e.shape), rtol=1e-5)


def truncated_clamped_cosine(t):
    """Exact 3-band Legendre truncation of max(t, 0): 1/4 + t/2 + (5/16) P2(t) = 3/32 + t/2 + 15 t^2 / 32."""
    return 3 / 32 + t / 2 + 15 * t * t / 32


def test_directional_light_irradiance_is_the_truncated_clamped_cosine():
    rng = np.random.default_rng(1)
    w = rng.normal(size=3)
    w /= np.linalg.norm(w)
    rgb = np.array([2.0, 1.0, 0.5])
    normals = fibonacci_sphere(4000)
    t = normals @ w
    e = irradiance(normals.astype(np.float32), project_directional(w, rgb))
    np.testing.assert_allclose(e, truncated_clamped_cosine(t)[:, None] * rgb, atol=2e-5 * rgb.max())

    # Errors against the exact clamped cosine, relative to the peak (facing the light): R&H's ~9% max, ~3% mean.
    err = np.abs(e[:, 0] / rgb[0] - np.maximum(t, 0))
    assert err.max() == pytest.approx(3 / 32, abs=2e-3)  # worst at grazing, t = 0
    assert 0.025 < err.mean() < 0.035  # exact mean of |g - max(t,0)| over the sphere is 0.0307
    clamped = np.abs(shading(normals.astype(np.float32), project_directional(w, rgb))[:, 0] * math.pi / rgb[0]
                     - np.maximum(t, 0))
    assert clamped.max() <= 3 / 32 + 1e-4 and clamped.mean() < 0.03  # shading clamps the negative lobe: 0.023


def test_axis_angle_matrix_turns_x_to_y_about_z():
    r = axis_angle_matrix((0, 0, 2), math.pi / 2)
    np.testing.assert_allclose(r @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    with pytest.raises(ValueError, match="non-zero"):
        axis_angle_matrix((0, 0, 0), 1.0)


def test_rotating_a_directional_light_moves_it_exactly():
    rng = np.random.default_rng(2)
    for _ in range(5):
        r = random_rotation(rng)
        w = rng.normal(size=3)
        w /= np.linalg.norm(w)
        rgb = rng.uniform(0.1, 2.0, 3)
        np.testing.assert_allclose(rotate_sh(project_directional(w, rgb), r), project_directional(r @ w, rgb),
                                   atol=1e-5)


def test_rotation_preserves_band_energies_and_composes():
    rng = np.random.default_rng(3)
    sh = rng.normal(size=(9, 3)).astype(np.float32)
    r1, r2 = random_rotation(rng), random_rotation(rng)
    np.testing.assert_allclose(band_energies(rotate_sh(sh, r1)), band_energies(sh), rtol=1e-5)
    np.testing.assert_allclose(sh_rotation_matrix(r1 @ r2), sh_rotation_matrix(r1) @ sh_rotation_matrix(r2),
                               atol=1e-10)
    d = sh_rotation_matrix(r1)
    np.testing.assert_allclose(d @ d.T, np.eye(9), atol=1e-10)  # orthogonal, block diagonal
    assert np.all(d[0, 1:] == 0) and np.all(d[1:4, 4:] == 0)


def test_rotation_rejects_non_rotations():
    with pytest.raises(ValueError, match="rotation"):
        sh_rotation_matrix(np.diag([1.0, 1.0, -1.0]))
    with pytest.raises(ValueError, match=r"\(9, 3\)"):
        rotate_sh(np.zeros((4, 3)), np.eye(3))
