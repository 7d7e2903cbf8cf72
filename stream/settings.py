"""The live look remembered between runs: what the user last set with the page or the keys.

`relitcam run` starts from the last session's lighting, shine, background, avatar size and avatar (one switched to
on the page, or started by name), unless a flag names
one (a flag always wins), and saves them again on the way out if anything was changed live. The file is small JSON
at $XDG_CONFIG_HOME/relitcam/live.json (~/.config/...; RELITCAM_SETTINGS names another file); a damaged one is
reported and ignored, never fatal. An HDR map or an uploaded picture is not restored (the file may be gone); the
rest of the look still is.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from stream.checks import finite_number_in

SETTINGS_ENV = "RELITCAM_SETTINGS"
FORMAT = "relitcam-live-settings"
VERSION = 1
DEFAULT_LIGHT = "soft_front"
BACKGROUND_LIGHT = "background"  # a light value: lit like the background picture


@dataclass(frozen=True)
class LiveSettings:
    light: str | None = None  # a preset name, BACKGROUND_LIGHT, or None (an HDR map: not restorable)
    yaw_deg: float = 0.0
    pitch_deg: float = 0.0
    intensity: float = 1.0
    tint_rgb: tuple[float, float, float] = (1.0, 1.0, 1.0)
    shine: float = 1.0
    background: str | None = None
    avatar_height: float = 1.0
    avatar: str | None = None  # an avatar's name in stream.avatar_choice (None: not one of them)


@dataclass(frozen=True)
class StartLook:
    """What a run starts with, each from its flag, else the saved settings, else the built-in default."""

    light: str  # a preset name, an L.json path, or BACKGROUND_LIGHT
    yaw_deg: float
    pitch_deg: float
    intensity: float
    tint_rgb: tuple[float, float, float]
    shine: float
    background: str | None  # selected if offered; else (or None) the first one offered
    avatar_height: float


def settings_path() -> Path:
    if os.environ.get(SETTINGS_ENV):
        return Path(os.environ[SETTINGS_ENV])
    config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return config / "relitcam" / "live.json"


def _number(d: dict, key: str, lo: float, hi: float, default: float) -> float:
    return finite_number_in(d.get(key, default), lo, hi, repr(key))


def settings_from_dict(d: dict) -> LiveSettings:
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise ValueError(f"not a {FORMAT} file")
    if d.get("version") != VERSION:
        raise ValueError(f"settings version {d.get('version')!r}, this relitcam reads version {VERSION}")
    light, background, avatar = d.get("light"), d.get("background"), d.get("avatar")
    for key, value in (("light", light), ("background", background), ("avatar", avatar)):
        if value is not None and not isinstance(value, str):
            raise ValueError(f"'{key}' must be a name or null, got {value!r}")
    tint = d.get("tint_rgb", [1.0, 1.0, 1.0])
    if not (isinstance(tint, list) and len(tint) == 3):
        raise ValueError(f"'tint_rgb' must be 3 numbers, got {tint!r}")
    tint_rgb = tuple(finite_number_in(t, 0.0, 1.0, "'tint_rgb'") for t in tint)
    return LiveSettings(light=light, yaw_deg=_number(d, "yaw_deg", -180, 180, 0.0),
                        pitch_deg=_number(d, "pitch_deg", -90, 90, 0.0), intensity=_number(d, "intensity", 0, 4, 1.0),
                        tint_rgb=tint_rgb, shine=_number(d, "shine", 0, 2, 1.0), background=background,
                        avatar_height=_number(d, "avatar_height", 0.2, 1.0, 1.0), avatar=avatar)


def load_settings(path: Path) -> LiveSettings | None:
    """The saved settings; None when there are none, or (said on stderr) when the file cannot be used."""
    if not path.is_file():
        return None
    try:
        return settings_from_dict(json.loads(path.read_text()))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValueError) as e:
        print(f"relitcam run: ignoring saved settings {path}: {e}", file=sys.stderr)
        return None


def save_settings(settings: LiveSettings, path: Path) -> None:
    """Written whole or not at all (a crash mid-write leaves the previous file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"format": FORMAT, "version": VERSION, **asdict(settings)}, indent=1) + "\n")
    os.replace(tmp, path)


def starting_look(saved: LiveSettings | None, light: str | None, shine: float | None, avatar_height: float | None,
                  presets: list[str]) -> StartLook:
    """Flags first (None: not given), then `saved`, then the defaults. The saved light's direction, intensity and
    tint come back with it, and only with it; a saved light that is no longer a preset is dropped. The background is
    the saved one if it is among those offered (`--background` says which are offered; the caller checks)."""
    s = saved or LiveSettings()
    restore_light = light is None and s.light is not None and (s.light in presets or s.light == BACKGROUND_LIGHT)
    base = LiveSettings() if not restore_light else s
    return StartLook(
        light=light if light is not None else (s.light if restore_light else DEFAULT_LIGHT),
        yaw_deg=base.yaw_deg, pitch_deg=base.pitch_deg, intensity=base.intensity, tint_rgb=tuple(base.tint_rgb),
        shine=shine if shine is not None else s.shine,
        background=s.background,
        avatar_height=avatar_height if avatar_height is not None else s.avatar_height,
    )


def remember_look(controls, path: Path | None) -> bool:
    """At the end of a run: save `controls.live_settings()` to `path` if anything was changed live (an offline render
    or a run nobody touched leaves the saved look alone). An unwritable folder is said, not fatal. True if saved."""
    if path is None or not controls.changes:
        return False
    try:
        save_settings(controls.live_settings(), path)
    except OSError as e:
        print(f"relitcam run: could not save the look to {path}: {e}", file=sys.stderr)
        return False
    return True
