"""The live lighting: what the user asked for (target) and what is on screen (a glide toward it).

Controls change the target instantly; frames take `current(now_s)`, which eases from the lighting on screen when
the change came to the new target over `glide_ms`, so a preset click or a light drag never pops. The target is
built from a base lighting (preset or HDR map) turned by the user's yaw/pitch, scaled by intensity and tinted;
`shine` scales the specular lights alone (the skin's highlights: "matte" 0 to "glossy" 2, 1 = as enrolled).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from models.lighting.interpolate import interpolate
from models.lighting.lighting import Lighting
from models.lighting.sh import axis_angle_matrix

MAX_GAIN = 4.0
MAX_SHINE = 2.0
MAX_PITCH_DEG = 89.0


@dataclass(frozen=True)
class LightingControls:
    """The user's settings on top of the base lighting."""

    yaw_deg: float = 0.0  # + turns the lights toward image right
    pitch_deg: float = 0.0  # + raises them
    gain: float = 1.0
    tint_rgb: tuple[float, float, float] = (1.0, 1.0, 1.0)  # linear multipliers in [0, 1]
    # Multiplies only the specular lights: A * (S_shad + C_spec * S_spec) has S_spec linear in them, so this is
    # C_spec x shine without touching the avatar's layers.
    shine: float = 1.0


def apply_controls(base: Lighting, c: LightingControls) -> Lighting:
    # Camera space: x right, y up, z toward the viewer. Yaw about +y moves +z toward +x (image right); pitch about
    # -x moves +z toward +y (up).
    rotation = axis_angle_matrix((0, 1, 0), math.radians(c.yaw_deg)) @ axis_angle_matrix(
        (-1, 0, 0), math.radians(c.pitch_deg)
    )
    lit = base.rotated(rotation) if (c.yaw_deg or c.pitch_deg) else base
    tint = np.asarray(c.tint_rgb, np.float32) * np.float32(c.gain)
    return Lighting(lit.sh_coeffs * tint, lit.light_dirs, lit.light_colours * (tint * np.float32(c.shine)), base.name)


class LightingState:
    """Target + glide. Call the setters from the event loop only (one writer, no locks)."""

    def __init__(self, base: Lighting, glide_ms: float = 250.0, now_s: float = 0.0,
                 controls: LightingControls | None = None) -> None:
        if glide_ms < 0:
            raise ValueError(f"glide_ms must be >= 0, got {glide_ms}")
        self.glide_s = glide_ms / 1000.0
        self.base = base
        self.controls = controls or LightingControls()
        self.target = apply_controls(base, self.controls)
        self._from = self.target
        self._change_s = now_s
        self.version = 0  # bumps on every change; cheap "did anything change" for observers

    # -- what frames use -------------------------------------------------------------------------------------
    def current(self, now_s: float) -> Lighting:
        if self.glide_s <= 0:
            return self.target
        # interpolate() eases (smoothstep) and pairs lights by direction, so a dragged key light swings round.
        return interpolate(self._from, self.target, (now_s - self._change_s) / self.glide_s)

    # -- what controls change --------------------------------------------------------------------------------
    def _retarget(self, now_s: float) -> None:
        self._from = self.current(now_s)  # glide from what is on screen, even mid-glide
        self.target = apply_controls(self.base, self.controls)
        self._change_s = now_s
        self.version += 1

    def _with(self, now_s: float, **changes) -> None:
        self.controls = LightingControls(**{**self.controls.__dict__, **changes})
        self._retarget(now_s)

    def set_base(self, base: Lighting, now_s: float, reset_controls: bool = False) -> None:
        self.base = base
        if reset_controls:
            self.controls = LightingControls()
        self._retarget(now_s)

    def set_direction(self, yaw_deg: float, pitch_deg: float, now_s: float) -> None:
        yaw = (float(yaw_deg) + 180.0) % 360.0 - 180.0
        self._with(now_s, yaw_deg=yaw, pitch_deg=max(-MAX_PITCH_DEG, min(MAX_PITCH_DEG, float(pitch_deg))))

    def rotate_by(self, dyaw_deg: float, dpitch_deg: float, now_s: float) -> None:
        self.set_direction(self.controls.yaw_deg + dyaw_deg, self.controls.pitch_deg + dpitch_deg, now_s)

    def set_gain(self, gain: float, now_s: float) -> None:
        if not math.isfinite(gain):
            raise ValueError(f"intensity must be a finite number, got {gain!r}")
        self._with(now_s, gain=max(0.0, min(MAX_GAIN, float(gain))))

    def set_tint(self, tint_rgb, now_s: float) -> None:
        t = tuple(float(v) for v in tint_rgb)
        if len(t) != 3 or not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in t):
            raise ValueError(f"tint must be 3 numbers in [0, 1], got {tint_rgb!r}")
        self._with(now_s, tint_rgb=t)

    def set_shine(self, shine: float, now_s: float) -> None:
        if not math.isfinite(shine):
            raise ValueError(f"shine must be a finite number, got {shine!r}")
        self._with(now_s, shine=max(0.0, min(MAX_SHINE, float(shine))))

    def describe(self) -> dict:
        c = self.controls
        return {
            "base": self.base.name,
            "yaw_deg": round(c.yaw_deg, 2),
            "pitch_deg": round(c.pitch_deg, 2),
            "intensity": round(c.gain, 3),
            "tint_rgb": [round(v, 3) for v in c.tint_rgb],
            "shine": round(c.shine, 3),
        }
