"""Lightings built from directional lights plus ambient, and the named presets.

Units: a directional light's `intensity` x `colour_linear` is the shading factor it gives a surface facing it
(S_shad = E / pi), so an albedo of 0.5 facing a light of intensity 1 renders 0.5. Its integrated radiance is therefore
pi x intensity x colour. `ambient_linear` is a constant environment radiance, which also gives S_shad = ambient on
every normal. Both are linear RGB.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from models.lighting.lighting import Lighting
from models.lighting.sh import constant_sh, project_directional


def direction_from_angles(azimuth_deg: float, elevation_deg: float) -> np.ndarray:
    """Unit camera-space direction: azimuth 0 = toward the camera (+z), +90 = image right (+x), elevation up (+y)."""
    a, e = math.radians(azimuth_deg), math.radians(elevation_deg)
    return np.array([math.cos(e) * math.sin(a), math.sin(e), math.cos(e) * math.cos(a)])


@dataclass(frozen=True)
class DirectionalLight:
    direction: tuple[float, float, float]  # camera space, pointing from the surface toward the light
    colour_linear: tuple[float, float, float] = (1.0, 1.0, 1.0)
    intensity: float = 1.0  # shading factor on a surface facing the light

    def integrated_radiance(self) -> np.ndarray:
        """Radiance x solid angle of the light, linear RGB (3,): the irradiance on a surface facing it."""
        c = np.asarray(self.colour_linear, dtype=np.float64)
        if c.shape != (3,) or not np.all(np.isfinite(c)) or np.any(c < 0):
            raise ValueError(f"light colour must be 3 finite non-negative numbers, got {self.colour_linear!r}")
        if not (math.isfinite(self.intensity) and self.intensity >= 0):
            raise ValueError(f"light intensity must be a finite number >= 0, got {self.intensity!r}")
        return math.pi * self.intensity * c

    def unit_direction(self) -> np.ndarray:
        d = np.asarray(self.direction, dtype=np.float64)
        n = float(np.linalg.norm(d)) if d.shape == (3,) and np.all(np.isfinite(d)) else 0.0
        if n < 1e-9:
            raise ValueError(f"light direction must be 3 finite numbers, not all zero, got {self.direction!r}")
        return d / n


def directional_lighting(
    lights: list[DirectionalLight], ambient_linear=(0.0, 0.0, 0.0), name: str = ""
) -> Lighting:
    """Sum of directional lights and a constant ambient: SH for diffuse, the exact lights for specular."""
    ambient = np.asarray(ambient_linear, dtype=np.float64)
    if ambient.shape != (3,) or not np.all(np.isfinite(ambient)) or np.any(ambient < 0):
        raise ValueError(f"ambient must be 3 finite non-negative numbers, got {ambient_linear!r}")
    sh = constant_sh(ambient).astype(np.float64)
    dirs, colours = [], []
    for light in lights:
        d, rgb = light.unit_direction(), light.integrated_radiance()
        sh += project_directional(d, rgb)
        dirs.append(d)
        colours.append(rgb)
    return Lighting(sh, np.reshape(dirs, (-1, 3)), np.reshape(colours, (-1, 3)), name)


# ---------------------------------------------------------------------------------------------------------------
# Presets. "Left"/"right" are as seen in the image (camera -x / +x); azimuth 0 is the camera side.
# ---------------------------------------------------------------------------------------------------------------

_WHITE = (1.0, 1.0, 1.0)


def _light(azimuth_deg: float, elevation_deg: float, intensity: float, colour=_WHITE) -> DirectionalLight:
    return DirectionalLight(tuple(direction_from_angles(azimuth_deg, elevation_deg)), colour, intensity)


@dataclass(frozen=True)
class _Preset:
    description: str
    lights: tuple[DirectionalLight, ...]
    ambient_linear: tuple[float, float, float]


_PRESETS: dict[str, _Preset] = {
    "soft_front": _Preset(
        "broad, even light from the camera side; low contrast",
        (_light(0, 20, 0.5), _light(-50, 10, 0.15), _light(50, 10, 0.15)),
        (0.25, 0.25, 0.25),
    ),
    "studio_key": _Preset(
        "classic three-point: warm key high on the right, soft fill left, rim from behind",
        (_light(40, 35, 0.85, (1.0, 0.96, 0.9)), _light(-45, 5, 0.22), _light(-150, 30, 0.5)),
        (0.08, 0.08, 0.08),
    ),
    "left_side": _Preset(
        "hard side light from image left; the right half falls into shadow",
        (_light(-90, 10, 0.95),),
        (0.07, 0.07, 0.07),
    ),
    "right_side": _Preset(
        "hard side light from image right; the left half falls into shadow",
        (_light(90, 10, 0.95),),
        (0.07, 0.07, 0.07),
    ),
    "rim_back": _Preset(
        "two lights behind the head outline its edges; the face itself stays dim",
        (_light(-125, 20, 1.0), _light(125, 20, 1.0), _light(0, 0, 0.06)),
        (0.05, 0.05, 0.06),
    ),
    "top": _Preset(
        "overhead light: bright forehead and nose, shadowed eye sockets and chin",
        (_light(0, 75, 1.0),),
        (0.08, 0.08, 0.08),
    ),
    "warm_sunset": _Preset(
        "low orange sun from the left with a blue-sky ambient",
        (_light(-65, 5, 1.1, (1.0, 0.55, 0.25)),),
        (0.08, 0.10, 0.17),
    ),
    "cool_office": _Preset(
        "overhead cool-white panels and a bright, slightly blue room",
        (_light(0, 60, 0.45, (0.85, 0.93, 1.0)), _light(0, 25, 0.15, (0.9, 0.95, 1.0))),
        (0.27, 0.30, 0.34),
    ),
    "low_key_dramatic": _Preset(
        "a single hard light high on the right, almost no fill",
        (_light(60, 40, 1.1),),
        (0.015, 0.015, 0.015),
    ),
    "flat": _Preset("uniform white environment: shading 1 everywhere, shows the albedo", (), (1.0, 1.0, 1.0)),
}


def preset_names() -> list[str]:
    return list(_PRESETS)


def preset_description(name: str) -> str:
    return _preset_spec(name).description


def _preset_spec(name: str) -> _Preset:
    if name not in _PRESETS:
        raise ValueError(f"unknown lighting preset {name!r}; valid presets: {', '.join(_PRESETS)}")
    return _PRESETS[name]


def preset(name: str) -> Lighting:
    """The named preset lighting; ValueError listing the valid names for an unknown one."""
    spec = _preset_spec(name)
    return directional_lighting(list(spec.lights), spec.ambient_linear, name)
