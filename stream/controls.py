"""Live controls: one set of validated actions, driven by terminal hotkeys, global hotkeys and the web page.

Every input path turns what the user did into a JSON-shaped message and hands it to `Controls.handle`, which
validates it, applies it to the LightingState / BackgroundSet, and returns a reply: the new state, or an error that
says exactly what was wrong. A bad message never raises out of `handle`, so a page sending garbage cannot stop the
stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
from pathlib import Path

from models.lighting.files import PHOTO_SUFFIXES, environment_map_lighting
from models.lighting.sources import preset, preset_names
from stream.backgrounds import Background, BackgroundSet, load_background
from stream.checks import finite_number_in
from stream.clock import Clock
from stream.compose import Compositor
from stream.lighting_state import MAX_GAIN, MAX_SHINE, LightingState
from stream.settings import BACKGROUND_LIGHT, LiveSettings

MAX_MESSAGE_CHARS = 4096
MAX_HDR_BYTES = 64 * 1024 * 1024
MAX_BACKGROUND_BYTES = 32 * 1024 * 1024
MAX_BACKGROUND_PIXELS = 50_000_000  # checked from the header before decoding: a small file can unpack to gigabytes
BACKGROUND_SUFFIXES = PHOTO_SUFFIXES
ROTATE_STEP_DEG = 15.0
GAIN_STEP = 1.25
MIN_AVATAR_HEIGHT = 0.2  # of the canvas height; smaller is a face nobody in the call can read
SHINE_STEP = 0.25  # additive: shine has to reach 0 (matte), which multiplying never does
# What `c` cycles through: linear RGB multipliers, brightest channel 1 so the tint changes hue, not exposure.
TINT_CYCLE = {
    "white": (1.0, 1.0, 1.0),
    "warm": (1.0, 0.78, 0.55),
    "cool": (0.7, 0.82, 1.0),
    "magenta": (1.0, 0.55, 0.9),
    "green": (0.6, 1.0, 0.65),
}
DEFAULT_HDR_DIR = Path("/usr/share/blender/datafiles/studiolights/world")


def default_hdr_maps() -> list[Path]:
    return sorted(DEFAULT_HDR_DIR.glob("*.exr")) if DEFAULT_HDR_DIR.is_dir() else []


class ControlError(ValueError):
    """A control message that cannot be applied; the text goes back to the sender."""


def _number(msg: dict, key: str, lo: float, hi: float) -> float:
    try:
        return finite_number_in(msg.get(key), lo, hi, f"{msg['type']!r}: {key!r}")
    except ValueError as e:
        raise ControlError(str(e)) from None


def _string(msg: dict, key: str) -> str:
    v = msg.get(key)
    if not isinstance(v, str) or not v:
        raise ControlError(f"{msg['type']!r} needs {key!r} as a non-empty string, got {v!r}")
    return v


def parse_hex_colour(text: str) -> tuple[float, float, float]:
    """'#rrggbb' (sRGB as a colour picker gives it) -> linear tint with its brightest channel at 1."""
    from models.colour import srgb_to_linear

    if not (isinstance(text, str) and len(text) == 7 and text[0] == "#"):
        raise ControlError(f"colour must be '#rrggbb', got {text!r}")
    try:
        srgb = [int(text[i : i + 2], 16) / 255.0 for i in (1, 3, 5)]
    except ValueError:
        raise ControlError(f"colour must be '#rrggbb' with hex digits, got {text!r}") from None
    linear = [float(v) for v in srgb_to_linear(srgb)]
    peak = max(linear)
    if peak <= 0:
        raise ControlError("colour must not be black (it would switch the light off; use intensity for that)")
    return tuple(v / peak for v in linear)


class Controls:
    """Applies control messages; holds the lists the page shows (presets, backgrounds, HDR maps)."""

    def __init__(
        self,
        lighting: LightingState,
        backgrounds: BackgroundSet,
        clock: Clock,
        hdr_maps: list[Path] | None = None,
        compositor: Compositor | None = None,
        avatars=None,
    ) -> None:
        self.lighting = lighting
        self.backgrounds = backgrounds
        self.clock = clock
        self.compositor = compositor  # None: the avatar's size is not offered
        self.avatars = avatars  # stream.avatar_choice.AvatarChoice; None: no switching between avatars
        self.presets = preset_names()
        self.hdr_maps = list(default_hdr_maps() if hdr_maps is None else hdr_maps)
        self._hdr_index = -1
        self._tint_index = 0
        # While on, the base lighting is the current background's and follows it when the background changes;
        # picking a preset or an HDR map turns it off (the explicit choice wins).
        self.light_from_background = False
        self.quit_requested = asyncio.Event()
        self.changes = 0  # control messages that changed something (what makes the look worth saving)

    def state(self) -> dict:
        return {
            **self.lighting.describe(),
            "background": self.backgrounds.current.name,
            "light_from_background": self.light_from_background,
            **({"avatar_height": round(self.compositor.height_frac, 3)} if self.compositor else {}),
            **(self.avatars.describe() if self.avatars else {}),
            "presets": self.presets,
            "backgrounds": self.backgrounds.names,
            "hdr_maps": [p.stem for p in self.hdr_maps],
        }

    async def handle(self, message: str | dict) -> dict:
        """Validate and apply one message; the reply is {"type": "state", ...} or {"type": "error", "error": ...}."""
        msg_id = None
        try:
            msg = self._decode(message)
            msg_id = msg.get("id")
            await self._apply(msg)
            reply = {"type": "state", "state": self.state()}
            if msg["type"] not in ("state", "quit"):
                self.changes += 1
        except ControlError as e:
            reply = {"type": "error", "error": str(e)}
        except ValueError as e:  # from lighting/background loaders: also the sender's input
            reply = {"type": "error", "error": str(e)}
        if isinstance(msg_id, (str, int)) and not isinstance(msg_id, bool):
            reply["id"] = msg_id
        return reply

    @staticmethod
    def _decode(message: str | dict) -> dict:
        if isinstance(message, str):
            if len(message) > MAX_MESSAGE_CHARS:
                raise ControlError(f"control message too long ({len(message)} chars, limit {MAX_MESSAGE_CHARS})")
            try:
                message = json.loads(message)
            except json.JSONDecodeError as e:
                raise ControlError(f"control message is not valid JSON ({e.msg} at char {e.pos})") from None
        if not isinstance(message, dict):
            raise ControlError(f"control message must be a JSON object, got {type(message).__name__}")
        if not isinstance(message.get("type"), str):
            raise ControlError("control message needs a string field 'type'")
        return message

    async def _apply(self, msg: dict) -> None:
        kind = msg["type"]
        now_s = self.clock.now_s()
        if kind == "state":
            return
        if kind == "preset":
            name = msg.get("name")
            if isinstance(msg.get("index"), int) and not isinstance(msg.get("index"), bool):
                index = msg["index"]
                if not 1 <= index <= len(self.presets):
                    raise ControlError(f"preset index must be 1..{len(self.presets)}, got {index}")
                name = self.presets[index - 1]
            elif not isinstance(name, str) or name not in self.presets:
                raise ControlError(f"unknown preset {name!r}; valid presets: {', '.join(self.presets)}")
            self.light_from_background = False
            self.lighting.set_base(preset(name), now_s)
        elif kind == "rotate":
            self.lighting.rotate_by(_number(msg, "dyaw_deg", -180, 180), _number(msg, "dpitch_deg", -180, 180), now_s)
        elif kind == "direction":
            self.lighting.set_direction(_number(msg, "yaw_deg", -180, 180), _number(msg, "pitch_deg", -90, 90), now_s)
        elif kind == "intensity":
            self.lighting.set_gain(_number(msg, "value", 0.0, MAX_GAIN), now_s)
        elif kind == "intensity_step":
            steps = _number(msg, "steps", -10, 10)
            self.lighting.set_gain(min(MAX_GAIN, self.lighting.controls.gain * GAIN_STEP**steps), now_s)
        elif kind == "shine":
            self.lighting.set_shine(_number(msg, "value", 0.0, MAX_SHINE), now_s)
        elif kind == "shine_step":
            steps = _number(msg, "steps", -10, 10)
            self.lighting.set_shine(self.lighting.controls.shine + SHINE_STEP * steps, now_s)
        elif kind == "colour":
            self.lighting.set_tint(parse_hex_colour(msg.get("rgb")), now_s)
        elif kind == "next_colour":
            self._tint_index = (self._tint_index + 1) % len(TINT_CYCLE)
            self.lighting.set_tint(list(TINT_CYCLE.values())[self._tint_index], now_s)
        elif kind == "background":
            name = _string(msg, "name")
            try:
                self.backgrounds.select(name)
            except ValueError as e:
                raise ControlError(str(e)) from None
            await self._follow_background()
        elif kind == "next_background":
            self.backgrounds.next()
            await self._follow_background()
        elif kind == "background_light":
            on = msg.get("on", not self.light_from_background)  # no "on": toggle (the l key)
            if not isinstance(on, bool):
                raise ControlError(f"background_light 'on' must be true or false, got {on!r}")
            if on:
                await self._set_background_lighting()
            self.light_from_background = on
        elif kind == "next_hdr":
            if not self.hdr_maps:
                raise ControlError(f"no HDR maps to cycle through (none given and none in {DEFAULT_HDR_DIR})")
            self._hdr_index = (self._hdr_index + 1) % len(self.hdr_maps)
            await self.load_hdr(self.hdr_maps[self._hdr_index])
            self.light_from_background = False
        elif kind == "avatar_height":
            if self.compositor is None:
                raise ControlError("this stream has no compositor to resize the avatar in")
            self.compositor.set_height_frac(_number(msg, "value", MIN_AVATAR_HEIGHT, 1.0))
        elif kind == "avatar":
            if self.avatars is None:
                raise ControlError("this stream cannot switch avatars (it was started with a renderer, not a bundle)")
            try:
                await self.avatars.switch(_string(msg, "name"))
            except ValueError as e:
                raise ControlError(str(e)) from None
        elif kind == "quit":
            self.quit_requested.set()
        else:
            raise ControlError(
                f"unknown control type {kind!r}; valid types: state, preset, rotate, direction, intensity, "
                "intensity_step, shine, shine_step, colour, next_colour, background, next_background, background_light, "
                "next_hdr, avatar_height, avatar, quit"
            )

    def live_settings(self) -> LiveSettings:
        """The look on screen now, as `relitcam run` saves it for the next run."""
        c, base = self.lighting.controls, self.lighting.base.name
        light = BACKGROUND_LIGHT if self.light_from_background else base if base in self.presets else None
        return LiveSettings(light=light, yaw_deg=c.yaw_deg, pitch_deg=c.pitch_deg, intensity=c.gain,
                            tint_rgb=tuple(c.tint_rgb), shine=c.shine, background=self.backgrounds.current.name,
                            avatar_height=self.compositor.height_frac if self.compositor else 1.0,
                            avatar=self.avatars.current if self.avatars else None)

    async def _set_background_lighting(self) -> None:
        lighting = await asyncio.to_thread(self.backgrounds.current_lighting)  # ~0.1 s the first time
        self.lighting.set_base(lighting, self.clock.now_s())

    async def _follow_background(self) -> None:
        if self.light_from_background:
            try:
                await self._set_background_lighting()
            except ValueError as e:  # the new background is shown; only the lighting cannot follow it
                self.light_from_background = False
                raise ControlError(f"{e}; the lighting no longer follows the background") from None

    async def load_hdr(self, path: Path, name: str | None = None) -> None:
        """Make an equirectangular .hdr/.exr map the base lighting (read + SH projection off the event loop), exposed
        for the face: maps straight from their files differ in level by orders of magnitude."""
        lighting = await asyncio.to_thread(environment_map_lighting, path, name)
        self.lighting.set_base(lighting, self.clock.now_s())

    async def load_background_bytes(self, data: bytes, filename: str) -> dict:
        """An uploaded picture (the page's background upload): offered, selected, and followed by the lighting if
        "light me like the background" is on. The reply has the same shape as `handle`'s."""
        suffix = Path(filename or "").suffix.lower()
        if suffix not in BACKGROUND_SUFFIXES:
            allowed = ", ".join(BACKGROUND_SUFFIXES)
            return {"type": "error", "error": f"background upload must be {allowed}, got {filename!r}"}
        if len(data) > MAX_BACKGROUND_BYTES:
            limit = MAX_BACKGROUND_BYTES
            return {"type": "error", "error": f"background upload too large ({len(data)} bytes, limit {limit})"}
        try:
            background = await asyncio.to_thread(_decode_background, data, suffix, Path(filename).stem,
                                                 self.backgrounds.size_px)
        except ValueError as e:
            return {"type": "error", "error": f"cannot use uploaded picture {filename!r}: {e}"}
        self.backgrounds.add(background)
        self.changes += 1
        try:
            await self._follow_background()
        except ControlError as e:
            return {"type": "error", "error": str(e)}
        return {"type": "state", "state": self.state()}

    async def load_hdr_bytes(self, data: bytes, filename: str) -> dict:
        """An uploaded map (the page's HDR upload); the reply has the same shape as `handle`'s."""
        suffix = Path(filename or "").suffix.lower()
        if suffix not in (".hdr", ".exr"):
            return {"type": "error", "error": f"HDR upload must be a .hdr or .exr file, got {filename!r}"}
        if len(data) > MAX_HDR_BYTES:
            return {"type": "error", "error": f"HDR upload too large ({len(data)} bytes, limit {MAX_HDR_BYTES})"}
        try:
            with _temporary_copy(data, suffix) as tmp:
                await self.load_hdr(tmp, name=Path(filename).stem)
            self.light_from_background = False
            self.changes += 1
        except ValueError as e:
            return {"type": "error", "error": f"cannot use uploaded map {filename!r}: {e}"}
        return {"type": "state", "state": self.state()}


def _decode_background(data: bytes, suffix: str, name: str, size_px: tuple[int, int]) -> Background:
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as probe:
            width, height = probe.size
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"not a readable picture ({e})") from None
    if width * height > MAX_BACKGROUND_PIXELS:
        raise ValueError(f"{width}x{height} pixels is more than the {MAX_BACKGROUND_PIXELS:,} allowed")
    with _temporary_copy(data, suffix) as tmp:
        try:
            background = load_background(str(tmp), size_px)
        except ValueError as e:  # name the user's file, not our temporary copy
            raise ValueError(str(e).replace(str(tmp), name)) from None
    return Background(name=name or "upload", srgb=background.srgb)


@contextlib.contextmanager
def _temporary_copy(data: bytes, suffix: str):
    """An upload as a file (the readers take paths; their format is told by the suffix), removed afterwards."""
    fd, tmp = tempfile.mkstemp(suffix=suffix, prefix="relitcam-upload-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        yield Path(tmp)
    finally:
        Path(tmp).unlink(missing_ok=True)
