"""The image formation of models/render.py in differentiable torch, for training (channels-first tensors).

Same convention as models/lighting/sh.py: camera space x right, y up, z toward the viewer; `sh_coeffs` (9, 3) are
radiance SH; shading = irradiance / pi; I = A * (S_shad + C_spec * S_spec). Equality with the NumPy path is tested.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from models.colour import SRGB_LINEAR_KNEE
from models.lighting.sh import IRRADIANCE_GAIN_PER_COEFF, fibonacci_sphere, sh_basis_terms
from models.lighting.sources import DirectionalLight, directional_lighting


def sh_basis(directions: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Y_lm at unit directions with xyz on axis `dim` -> 9 values on that axis."""
    return torch.stack(sh_basis_terms(*directions.unbind(dim)), dim=dim)


def shading(normals: torch.Tensor, sh_coeffs: torch.Tensor) -> torch.Tensor:
    """Lambertian shading irradiance/pi, (B, 3, H, W), from unit normals (B, 3, H, W) and SH (9, 3) or (B, 9, 3)."""
    gains = torch.tensor(IRRADIANCE_GAIN_PER_COEFF, dtype=normals.dtype, device=normals.device)
    coeffs = sh_coeffs * gains[:, None] / math.pi
    basis = sh_basis(normals, dim=1)  # (B, 9, H, W)
    if coeffs.dim() == 2:
        return torch.einsum("bkhw,kc->bchw", basis, coeffs)
    return torch.einsum("bkhw,bkc->bchw", basis, coeffs)


def fibonacci_directions(count: int, dtype=torch.float32) -> torch.Tensor:
    """`count` near-uniform unit directions (count, 3), each standing for a solid angle of 4 pi / count."""
    return torch.from_numpy(fibonacci_sphere(count)).to(dtype)


def sh_specular_lights(sh_coeffs: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """Radiance integrated over each direction's solid angle (K, 3) of SH lighting (9, 3), negative lobes clamped.

    This is how a learned SH lighting becomes the set of lights the Blinn-Phong sum runs over.
    """
    radiance = sh_basis(directions, dim=-1) @ sh_coeffs  # (K, 3)
    return torch.clamp(radiance, min=0.0) * (4.0 * math.pi / directions.shape[0])


def specular(normals: torch.Tensor, light_dirs: torch.Tensor, light_rgb: torch.Tensor, shininess: float) -> torch.Tensor:
    """sum_k L_k (s+2)/(2 pi) max(h_k . n, 0)^s max(n . w_k, 0), h_k = normalize(w_k + v), v = +z; (B,3,H,W).

    The same formula as models/render.specular (the cosine factor keeps lights behind the surface dark).
    """
    view = torch.tensor([0.0, 0.0, 1.0], dtype=normals.dtype, device=normals.device)
    half = light_dirs + view
    half = half / half.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    n_dot_h = torch.einsum("bchw,kc->bkhw", normals, half).clamp_min(0.0)
    n_dot_w = torch.einsum("bchw,kc->bkhw", normals, light_dirs).clamp_min(0.0)
    lobe = n_dot_h.pow(shininess) * n_dot_w * ((shininess + 2.0) / (2.0 * math.pi))
    return torch.einsum("bkhw,kc->bchw", lobe, light_rgb)


def render(albedo, normals, spec_weight, sh_coeffs, light_dirs, light_rgb, shininess: float) -> torch.Tensor:
    """I = A * (S_shad + C_spec * S_spec), all (B, C, H, W); spec_weight has one channel."""
    return albedo * (shading(normals, sh_coeffs) + spec_weight * specular(normals, light_dirs, light_rgb, shininess))


@dataclass(frozen=True)
class TorchLighting:
    sh: torch.Tensor  # (9, 3)
    dirs: torch.Tensor  # (K, 3)
    colours: torch.Tensor  # (K, 3) integrated radiance


def random_lighting(rng: np.random.Generator) -> TorchLighting:
    """A plausible portrait lighting: tinted ambient + a key light from the front hemisphere (up to 80 degrees off
    the camera axis), exposed so a surface facing the key gets shading ~1."""
    az, el = rng.uniform(-80, 80), rng.uniform(-30, 60)
    a, e = math.radians(az), math.radians(el)
    direction = (math.cos(e) * math.sin(a), math.sin(e), math.cos(e) * math.cos(a))
    tint = rng.uniform(0.8, 1.0, size=3)
    ambient = rng.uniform(0.05, 0.35)
    key = DirectionalLight(direction, tuple(tint / tint.max()), 1.0 - ambient)
    lighting = directional_lighting([key], ambient_linear=tuple(ambient * rng.uniform(0.85, 1.0, size=3)))
    t = lambda x: torch.as_tensor(np.asarray(x), dtype=torch.float32)  # noqa: E731
    return TorchLighting(t(lighting.sh_coeffs), t(lighting.light_dirs), t(lighting.light_colours))


def relight(albedo, normals, spec_weight, lighting: TorchLighting, shading_net, shininess: float) -> torch.Tensor:
    """I = A * (S_shad g(N) + C_spec * S_spec) with explicit specular lights (as the live renderer)."""
    s_sh = shading(normals, lighting.sh).clamp_min(0.0)
    diffuse = shading_net(normals, s_sh) if shading_net is not None else s_sh
    return albedo * (diffuse + spec_weight * specular(normals, lighting.dirs, lighting.colours, shininess))


def srgb_encode(linear: torch.Tensor) -> torch.Tensor:
    """models.colour.linear_to_srgb in differentiable torch: clipped to [0, 1], then the sRGB curve."""
    x = linear.clamp(0.0, 1.0)
    # The power branch sees at least the knee, so its gradient stays finite where the linear branch is taken.
    high = 1.055 * x.clamp_min(SRGB_LINEAR_KNEE) ** (1.0 / 2.4) - 0.055
    return torch.where(x <= SRGB_LINEAR_KNEE, 12.92 * x, high)
