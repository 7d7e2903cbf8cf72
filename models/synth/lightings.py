"""The lightings a synth clip is rendered under: its own (from the portrait) plus presets and Blender's HDR worlds."""

from __future__ import annotations

from pathlib import Path

from models.lighting.envmap import environment_lighting
from models.lighting.exposure import exposed_for_face
from models.lighting.files import read_environment_map
from models.lighting.lighting import Lighting
from models.lighting.sources import preset, preset_names

BLENDER_WORLDS = Path("/usr/share/blender/datafiles/studiolights/world")
MIN_OTHER_LIGHTINGS = 1


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
        return exposed_for_face(environment_lighting(radiance, num_lights=3, name=name.replace(":", "_")))
    return exposed_for_face(preset(name))


def other_lightings(count: int) -> list[Lighting]:
    """The first `count` of `available_lighting_names()`, loaded and exposure-normalised."""
    names = available_lighting_names()
    if not MIN_OTHER_LIGHTINGS <= count <= len(names):
        raise ValueError(f"--lightings must be between {MIN_OTHER_LIGHTINGS} and {len(names)}, got {count}")
    return [load_lighting_by_name(n) for n in names[:count]]
