"""Image formation and colour transfer functions against closed forms; the CuPy path against NumPy."""

import math

import numpy as np
import pytest

from models.colour import linear_to_srgb, luminance, srgb_to_linear
from models.lighting.lighting import Lighting
from models.lighting.probes import face_probe, sphere_probe
from models.lighting.sh import constant_sh
from models.lighting.sources import preset
from models.render import composite, render, shading, specular


def test_srgb_transfer_is_exact_and_inverts():
    np.testing.assert_allclose(srgb_to_linear(np.array([0.0, 0.04045, 0.5, 1.0])),
                               [0.0, 0.04045 / 12.92, ((0.5 + 0.055) / 1.055) ** 2.4, 1.0], rtol=1e-6)
    np.testing.assert_allclose(linear_to_srgb(np.array([0.0031308, 0.214041, 2.0, -1.0])),
                               [0.04045, 0.5, 1.0, 0.0], atol=2e-6)
    x = np.linspace(0, 1, 1001, dtype=np.float32)
    np.testing.assert_allclose(linear_to_srgb(srgb_to_linear(x)), x, atol=2e-6)
    assert luminance(np.array([1.0, 1.0, 1.0])) == pytest.approx(1.0)


def test_constant_environment_renders_albedo_times_radiance():
    probe = face_probe(48)
    lighting = Lighting(constant_sh([0.5, 1.0, 2.0]))
    out = render(probe.albedo_linear, probe.normals, probe.spec_weight, lighting)
    inside = probe.mask > 0
    np.testing.assert_allclose(out[inside], probe.albedo_linear[inside] * [0.5, 1.0, 2.0], rtol=1e-5)


def test_specular_closed_form():
    s = 20.0
    colour = np.array([[1.0, 2.0, 3.0]])
    n = np.array([[0.0, 0.0, 1.0]], np.float32)
    # Light at the camera: h = v = n, so S_spec = c (s+2)/(2 pi).
    np.testing.assert_allclose(specular(n, [[0, 0, 1]], colour, s)[0], colour[0] * (s + 2) / (2 * math.pi),
                               rtol=1e-5)
    # Light 60 degrees off in x: h at 30 degrees; a normal along h is 30 degrees from w: n.w = cos(30).
    w = np.array([math.sin(math.pi / 3), 0, math.cos(math.pi / 3)])
    h = np.array([math.sin(math.pi / 6), 0, math.cos(math.pi / 6)], np.float32)
    np.testing.assert_allclose(specular(h[None], w[None], colour, s)[0],
                               colour[0] * (s + 2) / (2 * math.pi) * math.cos(math.pi / 6), rtol=1e-5)
    # A normal tilted alpha away from h: cos(alpha)^s falloff.
    alpha = 0.2
    tilted = np.array([[math.sin(math.pi / 6 + alpha), 0, math.cos(math.pi / 6 + alpha)]], np.float32)
    expected = (s + 2) / (2 * math.pi) * math.cos(alpha) ** s * math.cos(math.pi / 6 - alpha)
    np.testing.assert_allclose(specular(tilted, w[None], colour, s)[0], colour[0] * expected, rtol=1e-4)
    # A light behind the surface gives nothing, even straight behind (h undefined).
    assert np.all(specular(n, [[0, 0, -1]], colour, s) == 0)
    assert np.all(specular(n, [[1, 0, -0.2]], colour, s) == 0)
    with pytest.raises(ValueError, match="shininess"):
        specular(n, [[0, 0, 1]], colour, 0.0)
    with pytest.raises(ValueError, match="2 light directions but 1"):
        specular(n, [[0, 0, 1], [1, 0, 0]], colour, s)


def test_render_is_albedo_times_shading_plus_weighted_specular():
    probe = sphere_probe(40)
    lighting = preset("studio_key")
    spec_weight = np.linspace(0, 0.2, 40 * 40, dtype=np.float32).reshape(40, 40)
    out = render(probe.albedo_linear, probe.normals, spec_weight, lighting, shininess=16.0)
    s_shad = shading(probe.normals, lighting.sh_coeffs)
    s_spec = specular(probe.normals, lighting.light_dirs, lighting.light_colours, 16.0)
    np.testing.assert_allclose(out, probe.albedo_linear * (s_shad + spec_weight[..., None] * s_spec), rtol=1e-5,
                               atol=1e-7)
    assert out.dtype == np.float32 and s_spec.max() > 0
    with pytest.raises(ValueError, match="normals shape"):
        render(probe.albedo_linear, probe.normals[:-1], 0.0, lighting)
    with pytest.raises(ValueError, match="spec_weight"):
        render(probe.albedo_linear, probe.normals, np.zeros((3, 3)), lighting)


def test_composite_is_straight_alpha_over():
    fg = np.full((2, 2, 3), 0.8, np.float32)
    alpha = np.array([[0.0, 1.0], [0.25, 0.5]], np.float32)
    out = composite(fg, alpha, (0.2, 0.4, 0.0))
    np.testing.assert_allclose(out[0, 0], [0.2, 0.4, 0.0])
    np.testing.assert_allclose(out[0, 1], [0.8, 0.8, 0.8])
    np.testing.assert_allclose(out[1, 0], [0.35, 0.5, 0.2], rtol=1e-6)
    with pytest.raises(ValueError, match="alpha shape"):
        composite(fg, np.ones((3, 3)), 0.0)


@pytest.mark.gpu
def test_cupy_path_equals_numpy_path():
    import cupy

    probe = face_probe(64)
    lighting = preset("warm_sunset")
    host = render(probe.albedo_linear, probe.normals, probe.spec_weight, lighting)
    device = render(cupy.asarray(probe.albedo_linear), cupy.asarray(probe.normals), cupy.asarray(probe.spec_weight),
                    lighting)
    assert isinstance(device, cupy.ndarray)
    np.testing.assert_allclose(device.get(), host, rtol=1e-5, atol=1e-6)
    out = composite(cupy.asarray(host), cupy.asarray(probe.mask), cupy.asarray([0.1, 0.2, 0.3]))
    np.testing.assert_allclose(linear_to_srgb(out).get(), linear_to_srgb(composite(host, probe.mask, [0.1, 0.2, 0.3])),
                               atol=1e-6)
    from models.lighting.envmap import project_environment

    env = np.random.default_rng(0).uniform(0, 2, (32, 64, 3)).astype(np.float32)
    np.testing.assert_allclose(project_environment(cupy.asarray(env)).get(), project_environment(env), rtol=1e-5)
