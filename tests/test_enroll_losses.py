"""Losses, priors and the torch image formation used in enrollment, checked in closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from models.enroll import losses
from models.enroll import render_torch as rt
from models.lighting.sh import constant_sh, project_directional
from models import render as render_np
from models.lighting.lighting import Lighting


def test_tv_of_constant_is_zero_and_of_step_is_known():
    assert losses.total_variation(torch.full((1, 3, 8, 8), 0.7)).item() == 0.0
    step = torch.zeros(1, 1, 4, 5)
    step[..., 3:] = 1.0  # one vertical edge of height 1: 4 of the 4*4 horizontal pairs differ by 1
    assert losses.total_variation(step).item() == pytest.approx(4 / 16)
    # the same edge outside the mask costs nothing
    mask = torch.zeros(1, 1, 4, 5)
    mask[..., :3] = 1
    assert losses.total_variation(step, mask).item() == 0.0


def test_entropy_low_for_constant_high_for_uniform():
    torch.manual_seed(0)
    const = torch.full((1, 3, 16, 16), 0.5)
    uniform = torch.rand(1, 3, 64, 64)
    e_const = losses.histogram_entropy(const).item()
    e_uni = losses.histogram_entropy(uniform).item()
    assert e_const < 0.5 * losses.max_entropy(3)
    assert e_uni > 0.95 * losses.max_entropy(3)
    # two albedo clusters at bin centres, half the pixels each: log 2 per channel
    two = torch.where(torch.arange(64 * 64).reshape(1, 1, 64, 64) % 2 == 0, 6.5 / 32, 25.5 / 32).expand(1, 3, 64, 64)
    # (the soft kernel spreads each value over neighbouring bins; that spread is the same for one cluster)
    one = torch.full((1, 3, 64, 64), 6.5 / 32)
    e_one = losses.histogram_entropy(one, bins=32, bandwidth=0.01).item()
    e_two = losses.histogram_entropy(two, bins=32, bandwidth=0.01).item()
    assert e_two - e_one == pytest.approx(3 * math.log(2), abs=1e-3)


def test_entropy_and_tv_have_gradients():
    x = torch.rand(1, 3, 8, 8, requires_grad=True)
    (losses.histogram_entropy(x) + losses.total_variation(x)).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_l1_terms_and_empty_mask():
    r = torch.full((2, 3, 4, 4), -0.25)
    assert losses.normal_residual_l1(r).item() == pytest.approx(0.25)
    assert losses.reconstruction_l1(r, torch.zeros_like(r), torch.zeros(2, 1, 4, 4)).item() == 0.0


def _sphere_normals(size=32):
    v, u = np.mgrid[0:size, 0:size]
    x = (u + 0.5) / size * 2 - 1
    y = 1 - (v + 0.5) / size * 2
    z = np.sqrt(np.clip(1 - x * x - y * y, 0, None))
    n = np.stack([x, y, z], -1)
    n /= np.linalg.norm(n, axis=-1, keepdims=True) + 1e-9
    return n.astype(np.float32)


def test_torch_render_equals_numpy_render():
    n = _sphere_normals()
    sh = (project_directional([0.3, 0.5, 0.8] / np.linalg.norm([0.3, 0.5, 0.8]), [2.0, 1.5, 1.0])
          + constant_sh([0.1, 0.1, 0.12]))
    dirs = np.array([[0.0, 0.6, 0.8], [-0.8, 0.0, 0.6]], np.float32)
    cols = np.array([[1.0, 0.9, 0.8], [0.2, 0.3, 0.5]], np.float32)
    albedo = np.full((32, 32, 3), 0.6, np.float32)
    spec_w = np.full((32, 32, 1), 0.3, np.float32)
    lighting = Lighting(sh_coeffs=sh, light_dirs=dirs, light_colours=cols)
    expected = render_np.render(albedo, n, spec_w, lighting, shininess=16.0)
    to_t = lambda a: torch.from_numpy(a).permute(2, 0, 1)[None]
    got = rt.render(to_t(albedo), to_t(n), to_t(spec_w), torch.from_numpy(sh), torch.from_numpy(lighting.light_dirs),
                    torch.from_numpy(cols), 16.0)
    np.testing.assert_allclose(got[0].permute(1, 2, 0).numpy(), expected, atol=1e-4, rtol=1e-4)


def test_sh_specular_lights_of_constant_env_sum_to_4pi_c():
    dirs = rt.fibonacci_directions(256)
    lights = rt.sh_specular_lights(torch.from_numpy(constant_sh([0.5, 1.0, 2.0])), dirs)
    np.testing.assert_allclose(lights.sum(0).numpy(), 4 * math.pi * np.array([0.5, 1.0, 2.0]), rtol=1e-5)


def test_srgb_encode_is_the_colour_modules_curve_and_has_finite_gradients():
    from models.colour import linear_to_srgb

    x = torch.linspace(-0.1, 1.2, 2001, requires_grad=True)
    np.testing.assert_allclose(rt.srgb_encode(x).detach().numpy(), linear_to_srgb(x.detach().numpy()), atol=2e-6)
    rt.srgb_encode(x).sum().backward()
    assert torch.isfinite(x.grad).all()
