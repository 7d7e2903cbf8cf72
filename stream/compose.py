"""Compositing: the lit avatar crop over a background on the output canvas, encoded to sRGB.

Only the rectangle under the avatar is blended (in linear light, where mixing is physically right); the rest of
the canvas is the background's sRGB pixels copied as they are. That keeps a 1280x720 canvas cheap on a CPU. The
encode uses a lookup table built from models.colour.linear_to_srgb, so it is the same curve at a fraction of the
cost of a per-pixel power. A CuPy version only needs `xp` in place of `np` here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.colour import linear_to_srgb
from models.render import composite
from stream.avatar import RenderedFrame
from stream.backgrounds import Background

# 14-bit table: fine enough that adjacent linear codes never skip an 8-bit sRGB level except in the darkest shadows.
_LUT_SIZE = 1 << 14
_SRGB_LUT = np.round(linear_to_srgb(np.linspace(0, 1, _LUT_SIZE, dtype=np.float32)) * 255).astype(np.uint8)


def encode_srgb_u8(linear: np.ndarray) -> np.ndarray:
    """float linear RGB -> uint8 sRGB through the lookup table (values outside [0, 1] clip)."""
    idx = np.clip(linear, 0.0, 1.0)
    idx *= _LUT_SIZE - 1
    idx += 0.5
    return _SRGB_LUT[idx.astype(np.uint16)]


@dataclass(frozen=True)
class Placement:
    """Where the avatar crop lands on the canvas: its top-left corner and scaled size, px."""

    x_px: int
    y_px: int
    width_px: int
    height_px: int


def fit_avatar(avatar_size_px: tuple[int, int], canvas_size_px: tuple[int, int]) -> Placement:
    """Centre the crop horizontally and sit it on the bottom edge (a head-and-shoulders framing); shrink it to fit
    when it is larger than the canvas, never enlarge (upscaling only blurs and costs time)."""
    aw, ah = avatar_size_px
    cw, ch = canvas_size_px
    scale = min(1.0, cw / aw, ch / ah)
    w, h = max(1, int(aw * scale)), max(1, int(ah * scale))
    return Placement(x_px=(cw - w) // 2, y_px=ch - h, width_px=w, height_px=h)


class Compositor:
    """process(rendered, background) -> uint8 (H, W, 3) sRGB canvas."""

    def __init__(self, canvas_size_px: tuple[int, int], avatar_size_px: tuple[int, int]) -> None:
        cw, ch = canvas_size_px
        if cw < 2 or ch < 2 or cw % 2 or ch % 2:
            # Video encoders downstream (H.264, VP8 in I420) need even sizes.
            raise ValueError(f"canvas size must be even and at least 2x2 px, got {cw}x{ch}")
        self.canvas_size_px = (cw, ch)
        self.avatar_size_px = tuple(avatar_size_px)
        self.placement = fit_avatar(self.avatar_size_px, self.canvas_size_px)
        p = self.placement
        # Nearest-neighbour index maps, built once: only used when the crop had to shrink.
        aw, ah = self.avatar_size_px
        self._rows = None if p.height_px == ah else (np.arange(p.height_px) * ah // p.height_px)
        self._cols = None if p.width_px == aw else (np.arange(p.width_px) * aw // p.width_px)

    def process(self, rendered: RenderedFrame, background: Background) -> np.ndarray:
        if background.srgb.shape[:2] != (self.canvas_size_px[1], self.canvas_size_px[0]):
            raise ValueError(f"background {background.name!r} is {background.srgb.shape[1]}x{background.srgb.shape[0]} px; "
                             f"canvas is {self.canvas_size_px[0]}x{self.canvas_size_px[1]}")
        fg, matte = rendered.rgb_linear, rendered.matte
        if self._rows is not None:
            fg, matte = fg[self._rows][:, self._cols], matte[self._rows][:, self._cols]
        p = self.placement
        region = (slice(p.y_px, p.y_px + p.height_px), slice(p.x_px, p.x_px + p.width_px))
        blended = composite(fg, matte, background.linear[region])
        canvas = background.srgb.copy()
        canvas[region] = encode_srgb_u8(blended)
        return canvas
