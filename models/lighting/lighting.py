"""The `Lighting` value passed between lighting sources, the renderer and the live stream, and its JSON form.

A lighting has two parts that the renderer uses differently:
  * `sh_coeffs` (9, 3): radiance SH of the whole environment (see models/lighting/sh.py) -> diffuse shading;
  * `light_dirs` (K, 3) / `light_colours` (K, 3): a few point-like lights for the specular lobe. Each colour is an
    integrated radiance (radiance x solid angle, linear RGB), i.e. the irradiance that light gives a surface facing
    it. For directional lights these are exact; for environment maps they sample the brightest regions.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np

from models.colour import LUMA_WEIGHTS_LINEAR
from models.lighting.sh import NUM_COEFFS, rotate_sh

JSON_FORMAT = "relitcam-lighting"
JSON_VERSION = 1


def _as_float_rows(value, width: int, what: str) -> np.ndarray:
    a = np.asarray(value, dtype=np.float64)
    if a.size == 0:
        a = a.reshape(0, width)
    if a.ndim != 2 or a.shape[1] != width:
        raise ValueError(f"{what} must have shape (K, {width}), got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{what} contains NaN or inf")
    return a


@dataclass(frozen=True)
class Lighting:
    sh_coeffs: np.ndarray  # (9, 3) float32 radiance SH, linear RGB
    light_dirs: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.float32))  # (K, 3) unit, toward light
    light_colours: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.float32))  # (K, 3) linear RGB
    name: str = ""

    def __post_init__(self) -> None:
        sh = np.asarray(self.sh_coeffs, dtype=np.float64)
        if sh.shape != (NUM_COEFFS, 3):
            raise ValueError(f"sh_coeffs must have shape (9, 3), got {sh.shape}")
        if not np.all(np.isfinite(sh)):
            raise ValueError("sh_coeffs contains NaN or inf")
        dirs = _as_float_rows(self.light_dirs, 3, "light_dirs")
        colours = _as_float_rows(self.light_colours, 3, "light_colours")
        if len(dirs) != len(colours):
            raise ValueError(f"light_dirs has {len(dirs)} rows but light_colours has {len(colours)}")
        norms = np.linalg.norm(dirs, axis=1)
        if np.any(norms < 1e-9):
            raise ValueError("light_dirs contains a zero vector")
        if np.any(colours < 0):
            raise ValueError("light_colours must be non-negative")
        # Frozen dataclass: normalise and fix dtypes through object.__setattr__ once, at construction.
        object.__setattr__(self, "sh_coeffs", sh.astype(np.float32))
        object.__setattr__(self, "light_dirs", (dirs / norms[:, None]).astype(np.float32))
        object.__setattr__(self, "light_colours", colours.astype(np.float32))

    @property
    def num_lights(self) -> int:
        return int(self.light_dirs.shape[0])

    def rotated(self, rotation: np.ndarray) -> Lighting:
        """The same lighting turned by the 3x3 rotation matrix (light arriving from w now arrives from R w)."""
        r = np.asarray(rotation, dtype=np.float64)
        return Lighting(rotate_sh(self.sh_coeffs, r), self.light_dirs @ r.T, self.light_colours, self.name)

    def scaled(self, gain: float) -> Lighting:
        """Every radiance multiplied by `gain` >= 0 (exposure)."""
        if not (math.isfinite(gain) and gain >= 0):
            raise ValueError(f"lighting gain must be a finite number >= 0, got {gain!r}")
        return Lighting(self.sh_coeffs * gain, self.light_dirs, self.light_colours * gain, self.name)

    def saturated(self, amount: float) -> Lighting:
        """Colour saturation scaled by `amount` (0 grey, 1 unchanged) at unchanged luminance: every radiance c becomes
        Y + amount (c - Y), Y its BT.709 luminance. Linear in radiance, so SH coefficients and lights transform alike."""
        if not (math.isfinite(amount) and amount >= 0):
            raise ValueError(f"saturation must be a finite number >= 0, got {amount!r}")
        weights = np.asarray(LUMA_WEIGHTS_LINEAR, np.float64)

        def scale(c):
            y = np.asarray(c, np.float64) @ weights
            return y[:, None] + amount * (c - y[:, None])

        return Lighting(scale(self.sh_coeffs), self.light_dirs, np.maximum(scale(self.light_colours), 0.0), self.name)

    # -- JSON ---------------------------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        return {
            "format": JSON_FORMAT,
            "version": JSON_VERSION,
            "name": self.name,
            "sh_convention": "radiance SH, order (0,0),(1,-1),(1,0),(1,1),(2,-2),(2,-1),(2,0),(2,1),(2,2); "
            "camera space x right, y up, z to viewer; linear RGB",
            "sh_coeffs": [[float(v) for v in row] for row in self.sh_coeffs],
            "lights": [
                {"direction": [float(v) for v in d], "colour": [float(v) for v in c]}
                for d, c in zip(self.light_dirs, self.light_colours)
            ],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, data, source: str = "lighting JSON") -> Lighting:
        def bad(field_name: str, why: str) -> ValueError:
            return ValueError(f"{source}: field {field_name!r} {why}")

        if not isinstance(data, dict):
            raise ValueError(f"{source}: top level must be a JSON object, got {type(data).__name__}")
        if data.get("format", JSON_FORMAT) != JSON_FORMAT:
            raise bad("format", f"must be {JSON_FORMAT!r}, got {data.get('format')!r}")
        if "sh_coeffs" not in data:
            raise bad("sh_coeffs", "is missing")
        sh = _number_grid(data["sh_coeffs"])
        if sh is None or sh.shape != (NUM_COEFFS, 3):
            raise bad("sh_coeffs", "must be 9 rows of 3 finite numbers (SH coefficient x RGB)")
        lights = data.get("lights", [])
        if not isinstance(lights, list):
            raise bad("lights", "must be a list of {direction, colour} objects")
        dirs, colours = [], []
        for i, light in enumerate(lights):
            if not isinstance(light, dict):
                raise bad(f"lights[{i}]", "must be an object with 'direction' and 'colour'")
            for key, out in (("direction", dirs), ("colour", colours)):
                v = _number_grid([light.get(key)])
                if v is None or v.shape != (1, 3):
                    raise bad(f"lights[{i}].{key}", "must be 3 finite numbers")
                out.append(v[0])
            if np.linalg.norm(dirs[-1]) < 1e-9:
                raise bad(f"lights[{i}].direction", "must be non-zero")
            if np.any(colours[-1] < 0):
                raise bad(f"lights[{i}].colour", "must be non-negative")
        name = data.get("name", "")
        if not isinstance(name, str):
            raise bad("name", "must be a string")
        return cls(sh, np.reshape(dirs, (-1, 3)), np.reshape(colours, (-1, 3)), name)

    @classmethod
    def from_json(cls, text: str, source: str = "lighting JSON") -> Lighting:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{source}: not valid JSON ({e})") from None
        return cls.from_dict(data, source)


def _number_grid(value) -> np.ndarray | None:
    """A list of lists of finite numbers as a 2-D float array, or None when it is anything else."""
    if not isinstance(value, list) or not all(isinstance(row, list) for row in value):
        return None
    widths = {len(row) for row in value}
    if len(widths) > 1:
        return None
    for row in value:
        for v in row:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                return None
    return np.asarray(value, dtype=np.float64).reshape(len(value), widths.pop() if widths else 0)
