"""Re-shade a frame's G-buffer under one lighting with the project's image formation (models/render)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.lighting.lighting import Lighting
from models.render import composite, render, shading, specular


@dataclass(frozen=True)
class ShadedLayers:
    """S_shad and S_spec (H, W, 3) of one frame under one lighting, and the final linear image."""

    shading: np.ndarray
    specular: np.ndarray
    image: np.ndarray


def backdrop_image(backdrop_albedo: np.ndarray, lighting: Lighting) -> np.ndarray:
    """The static backdrop (a flat wall facing the camera, no sheen) under `lighting`."""
    normals = np.broadcast_to(np.array([0.0, 0.0, 1.0], np.float32), backdrop_albedo.shape)
    return render(backdrop_albedo, np.ascontiguousarray(normals), 0.0, lighting)


def shade(albedo, normals, spec_weight, matte, backdrop: np.ndarray, lighting: Lighting) -> ShadedLayers:
    """composite(A * (S_shad + C_spec * S_spec), matte, backdrop) with the shading layers, all (H, W, ...) float32.

    Diffuse is shaded over the whole frame (cheaper than gathering the person's pixels): where matte == 0 the maps
    hold the backdrop, whose C_spec is 0, so the person term there equals `backdrop` and the composite ignores it.
    S_spec is 0 wherever C_spec is 0.
    """
    s_shad = shading(normals, lighting.sh_coeffs)
    s_spec = np.zeros_like(s_shad)
    shiny = spec_weight > 0  # the lobe's power is the costly part: skip the backdrop (C_spec 0, S_spec stored as 0)
    if lighting.num_lights and shiny.any():
        s_spec[shiny] = specular(normals[shiny], lighting.light_dirs, lighting.light_colours)
    person_image = albedo * (s_shad + spec_weight[..., None] * s_spec)
    return ShadedLayers(s_shad, s_spec, composite(person_image, matte, backdrop))
