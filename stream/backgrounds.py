"""Backgrounds the avatar is composited over: a few built-in ones plus pictures the user names.

Each is prepared once at the canvas size as sRGB uint8, the encoding the compositor blends the avatar over.
`background_lighting` lights the avatar like the picture (models.lighting.envmap.photo_lighting: the picture spread
over the environment behind the avatar, at half its colour saturation, exposed for the face as a webcam would).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.colour import srgb_to_linear
from models.lighting.envmap import photo_lighting
from models.lighting.lighting import Lighting


@dataclass(frozen=True)
class Background:
    name: str
    srgb: np.ndarray  # uint8 (H, W, 3) at canvas size


def _vertical_gradient(size_px: tuple[int, int], top_srgb, bottom_srgb) -> np.ndarray:
    w, h = size_px
    t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    rows = (1 - t) * np.asarray(top_srgb, np.float32) + t * np.asarray(bottom_srgb, np.float32)
    return np.broadcast_to(np.round(rows * 255).astype(np.uint8), (h, w, 3)).copy()


def _flat(size_px: tuple[int, int], srgb) -> np.ndarray:
    w, h = size_px
    return np.broadcast_to(np.round(np.asarray(srgb, np.float32) * 255).astype(np.uint8), (h, w, 3)).copy()


# name -> picture maker; sRGB colours, the way designers pick them.
BUILTIN_BACKGROUNDS = {
    "studio_grey": lambda s: _vertical_gradient(s, (0.42, 0.43, 0.45), (0.22, 0.22, 0.24)),
    "charcoal": lambda s: _flat(s, (0.12, 0.12, 0.13)),
    "office_blue": lambda s: _vertical_gradient(s, (0.55, 0.65, 0.78), (0.25, 0.32, 0.42)),
    "warm_wall": lambda s: _vertical_gradient(s, (0.72, 0.60, 0.47), (0.45, 0.35, 0.27)),
    "green_screen": lambda s: _flat(s, (0.0, 0.69, 0.25)),
}


def _cover_resize(image: np.ndarray, size_px: tuple[int, int]) -> np.ndarray:
    """Scale to cover the canvas and centre-crop, so a picture of any aspect fills it without distortion."""
    from skimage.transform import resize

    w, h = size_px
    ih, iw = image.shape[:2]
    scale = max(w / iw, h / ih)
    sw, sh = max(w, round(iw * scale)), max(h, round(ih * scale))
    scaled = resize(image, (sh, sw), order=1, anti_aliasing=scale < 1, preserve_range=True)
    y0, x0 = (sh - h) // 2, (sw - w) // 2
    return np.clip(np.round(scaled[y0 : y0 + h, x0 : x0 + w]), 0, 255).astype(np.uint8)


def load_background(spec: str, size_px: tuple[int, int]) -> Background:
    """A built-in name or an image path (PNG/JPEG), at canvas size."""
    if spec in BUILTIN_BACKGROUNDS:
        srgb = BUILTIN_BACKGROUNDS[spec](size_px)
        name = spec
    else:
        path = Path(spec)
        if not path.is_file():
            raise ValueError(f"unknown background {spec!r}: not a file and not one of {', '.join(BUILTIN_BACKGROUNDS)}")
        from models.media import read_image_rgb

        srgb = _cover_resize(read_image_rgb(path), size_px)
        name = path.stem
    return Background(name=name, srgb=srgb)


ADDED_PREFIX = "\0added:"  # spec of a picture given as pixels (cannot clash with a built-in name or a path)
MAX_ADDED = 8  # uploaded pictures kept on offer (2.8 MB each at 1280x720): a long call must not grow without bound


class BackgroundSet:
    """The backgrounds on offer, in order, with one selected; pictures are prepared lazily on first use."""

    def __init__(self, specs: list[str] | None, size_px: tuple[int, int]) -> None:
        self.size_px = size_px
        self.specs = list(specs) if specs else list(BUILTIN_BACKGROUNDS)
        self._cache: dict[str, Background] = {}
        self._lightings: dict[str, Lighting] = {}  # background_lighting of each spec asked for, while it is on offer
        self._added = 0  # uploads so far: numbers their specs, never reused
        self.index = 0
        self.current = self._load(self.specs[0])

    def _load(self, spec: str) -> Background:
        if spec not in self._cache:
            self._cache[spec] = load_background(spec, self.size_px)
        return self._cache[spec]

    def _name(self, spec: str) -> str:
        if spec.startswith(ADDED_PREFIX):
            return self._cache[spec].name
        return spec if spec in BUILTIN_BACKGROUNDS else Path(spec).stem

    @property
    def names(self) -> list[str]:
        return [self._name(s) for s in self.specs]

    def add(self, background: Background) -> Background:
        """Offer a picture prepared elsewhere (the page's upload) and select it. A name already on offer gets a
        numbered suffix, so nothing the user had is replaced; past MAX_ADDED uploads the oldest one is let go."""
        if background.srgb.shape != (self.size_px[1], self.size_px[0], 3):
            raise ValueError(f"background {background.name!r} is {background.srgb.shape}, not the canvas size")
        added = [s for s in self.specs if s.startswith(ADDED_PREFIX)]
        if len(added) >= MAX_ADDED:  # the oldest upload goes (the new one is selected next, so it may be current)
            self.specs.remove(added[0])
            del self._cache[added[0]]
            self._lightings.pop(added[0], None)
        name, n = background.name, 2
        while name in self.names:
            name, n = f"{background.name}-{n}", n + 1
        self._added += 1
        spec = f"{ADDED_PREFIX}{self._added}"
        self._cache[spec] = Background(name=name, srgb=background.srgb)
        self.specs.append(spec)
        return self.select(name)

    def current_lighting(self) -> Lighting:
        """`background_lighting` of the selected background, computed once per background (~0.1 s: call it off the
        event loop when live)."""
        spec = self.specs[self.index]
        if spec not in self._lightings:
            self._lightings[spec] = background_lighting(self.current)
        return self._lightings[spec]

    def select(self, name: str) -> Background:
        if name not in self.names:
            raise ValueError(f"unknown background {name!r}; valid backgrounds: {', '.join(self.names)}")
        self.index = self.names.index(name)
        self.current = self._load(self.specs[self.index])
        return self.current

    def next(self) -> Background:
        return self.select(self.names[(self.index + 1) % len(self.specs)])


def background_lighting(background: Background) -> Lighting:
    """The lighting of the place the picture shows: its colours and where its bright and dark parts are, with the
    avatar exposed for its face (presets' level); named "background:<name>"."""
    photo = srgb_to_linear(background.srgb.astype(np.float32) * np.float32(1.0 / 255.0))
    try:
        return photo_lighting(photo, name=f"background:{background.name}")
    except ValueError as e:  # a black picture lights nothing
        raise ValueError(f"background {background.name!r} cannot light the avatar: {e}") from None
