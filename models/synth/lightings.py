"""The lightings a synth clip is rendered under: its own (from the portrait) plus presets and Blender's HDR worlds."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models.lighting.envmap import environment_lighting
from models.lighting.files import read_environment_map
from models.lighting.lighting import Lighting
from models.lighting.sources import preset, preset_names
from models.render import shading

BLENDER_WORLDS = Path("/usr/share/blender/datafiles/studiolights/world")
MIN_OTHER_LIGHTINGS = 1
# Every relighting is exposed so the brightest front-facing shading is this (an HDR world straight from the file can
# be 100x brighter or darker than a preset; unnormalised, half the videos would be black or white).
TARGET_PEAK_SHADING = 1.0


def _front_normals() -> np.ndarray:
    """Normals a face shows the camera: a grid over the front hemisphere (z > 0.2)."""
    u, v = np.meshgrid(np.linspace(-1, 1, 15), np.linspace(-1, 1, 15))
    n = np.stack([u, v, np.ones_like(u) * 1.2], -1).reshape(-1, 3)
    return (n / np.linalg.norm(n, axis=1, keepdims=True)).astype(np.float32)


def normalised(lighting: Lighting) -> Lighting:
    """`lighting` scaled so its peak front-facing diffuse shading luminance is TARGET_PEAK_SHADING."""
    s = shading(_front_normals(), lighting.sh_coeffs)
    peak = float((s @ np.array([0.2126, 0.7152, 0.0722], np.float32)).max())
    if peak <= 1e-9:
        raise ValueError(f"lighting {lighting.name!r} does not light the front of a face")
    return lighting.scaled(TARGET_PEAK_SHADING / peak)


def available_lighting_names() -> list[str]:
    """Presets and Blender worlds interleaved ('world:<name>' for the HDR maps), in a fixed order."""
    presets = preset_names()
    worlds = sorted(p.stem for p in BLENDER_WORLDS.glob("*.exr")) if BLENDER_WORLDS.is_dir() else []
    names = []
    for i in range(max(len(presets), len(worlds))):
        if i < len(presets):
            names.append(presets[i])
        if i < len(worlds):
            names.append(f"world:{worlds[i]}")
    return names


def load_lighting_by_name(name: str) -> Lighting:
    if name.startswith("world:"):
        world = name.split(":", 1)[1]
        radiance = read_environment_map(BLENDER_WORLDS / f"{world}.exr")
        return normalised(environment_lighting(radiance, num_lights=3, name=name.replace(":", "_")))
    return normalised(preset(name))


def other_lightings(count: int) -> list[Lighting]:
    """The first `count` of `available_lighting_names()`, loaded and exposure-normalised."""
    names = available_lighting_names()
    if not MIN_OTHER_LIGHTINGS <= count <= len(names):
        raise ValueError(f"--lightings must be between {MIN_OTHER_LIGHTINGS} and {len(names)}, got {count}")
    return [load_lighting_by_name(n) for n in names[:count]]
