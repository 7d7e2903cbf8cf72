"""Compositing: the lit avatar crop over a background on the output canvas, encoded to sRGB.

The crop is scaled to fill the canvas height (a head-and-shoulders framing, as a webcam shows) after lighting, so
relighting costs the same at any output size. The encode uses a lookup table built from
models.colour.linear_to_srgb: the same curve at a fraction of the cost of a per-pixel power. stream/gpu_compose.py
does the same per pixel in one CUDA kernel; `composite_scaled` below is the float definition both follow.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from models.colour import linear_to_srgb
from models.xp import array_module
from stream.avatar import RenderedFrame
from stream.backgrounds import Background

# 14-bit table: fine enough that adjacent linear codes never skip an 8-bit sRGB level except in the darkest shadows.
_LUT_SIZE = 1 << 14
_SRGB_LUT = np.round(linear_to_srgb(np.linspace(0, 1, _LUT_SIZE, dtype=np.float32)) * 255).astype(np.uint8)


def encode_alpha_u8(matte: np.ndarray) -> np.ndarray:
    """float matte in [0, 1] -> uint8 0..255, rounded (values outside clip)."""
    return (np.clip(matte, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


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


def fit_avatar(avatar_size_px: tuple[int, int], canvas_size_px: tuple[int, int], height_frac: float = 1.0) -> Placement:
    """Scale the crop so its height is `height_frac` of the canvas height (the crop is a head-and-shoulders framing,
    so 1.0 fills a call's picture the way a webcam does), narrower if the canvas is not wide enough; centre it
    horizontally and sit it on the bottom edge."""
    if not 0.0 < height_frac <= 1.0:
        raise ValueError(f"avatar height must be a fraction of the canvas height in (0, 1], got {height_frac}")
    aw, ah = avatar_size_px
    cw, ch = canvas_size_px
    scale = min(height_frac * ch / ah, cw / aw)
    w, h = max(1, int(round(aw * scale))), max(1, int(round(ah * scale)))
    w, h = min(w, cw), min(h, ch)
    return Placement(x_px=(cw - w) // 2, y_px=ch - h, width_px=w, height_px=h)


@dataclass(frozen=True)
class ResampleAxis:
    """Bilinear resampling along one axis: destination pixel d = (1 - weight[d]) * src[lo[d]] + weight[d] * src[hi[d]]."""

    lo: np.ndarray  # (n_dst,) int32
    hi: np.ndarray  # (n_dst,) int32
    weight: np.ndarray  # (n_dst,) float32


def resample_axis(n_src: int, n_dst: int) -> ResampleAxis:
    """Pixel centres aligned (src x = (d + 0.5) * n_src / n_dst - 0.5), clamped at the edges."""
    x = np.clip((np.arange(n_dst) + 0.5) * (n_src / n_dst) - 0.5, 0.0, n_src - 1)
    lo = np.floor(x).astype(np.int32)
    hi = np.minimum(lo + 1, n_src - 1).astype(np.int32)
    return ResampleAxis(lo=lo, hi=hi, weight=(x - lo).astype(np.float32))


def resample(image, rows: ResampleAxis, cols: ResampleAxis):
    """Separable bilinear resampling of an (H, W, C) float array (NumPy or CuPy; the maps may be NumPy)."""
    xp = array_module(image)
    r_lo, r_hi, r_w = (xp.asarray(v) for v in (rows.lo, rows.hi, rows.weight))
    c_lo, c_hi, c_w = (xp.asarray(v) for v in (cols.lo, cols.hi, cols.weight))
    top = image[r_lo]
    tall = top + r_w[:, None, None] * (image[r_hi] - top)
    left = tall[:, c_lo]
    return left + c_w[None, :, None] * (tall[:, c_hi] - left)


def composite_scaled(avatar_srgb_u8, alpha_u8, background_srgb_u8, placement: Placement):
    """The float definition of the canvas (NumPy or CuPy): premultiplied sRGB colour and the matte, bilinearly
    resampled to the placement, over the background's sRGB pixels, rounded half up. Compositor (Pillow, 8-bit
    fixed point) and the fused CUDA kernel both equal it to within a grey level or two."""
    xp = array_module(avatar_srgb_u8)
    ah, aw = alpha_u8.shape
    a = alpha_u8.astype(xp.float32) / 255.0
    layers = xp.concatenate([avatar_srgb_u8.astype(xp.float32) * a[..., None], a[..., None]], axis=2)
    p = placement
    scaled = resample(layers, resample_axis(ah, p.height_px), resample_axis(aw, p.width_px))
    region = (slice(p.y_px, p.y_px + p.height_px), slice(p.x_px, p.x_px + p.width_px))
    canvas = background_srgb_u8.copy()
    over = scaled[..., :3] + canvas[region].astype(xp.float32) * (1.0 - scaled[..., 3:])
    canvas[region] = xp.clip(xp.floor(over + 0.5), 0, 255).astype(xp.uint8)
    return canvas


class Compositor:
    """process(rendered, background) -> uint8 (H, W, 3) sRGB canvas.

    The lit crop is encoded to sRGB at its own size (relighting costs the same at any output size), scaled to its
    placement as colour premultiplied by the matte (interpolating straight colour would pull the black outside the
    person into the edge of the hair) and laid over the background's sRGB pixels. Scaling and blending run in
    Pillow's C code on 8-bit values: a 256 px crop filling 720 px costs a few ms on one core, against several times
    that for float NumPy. Blending in sRGB rather than linear light, as OBS and browsers do, only differs where
    the matte is partial (the edge of the hair)."""

    def __init__(self, canvas_size_px: tuple[int, int], avatar_size_px: tuple[int, int],
                 height_frac: float = 1.0) -> None:
        cw, ch = canvas_size_px
        if cw < 2 or ch < 2 or cw % 2 or ch % 2:
            # Video encoders downstream (H.264, VP8 in I420) need even sizes.
            raise ValueError(f"canvas size must be even and at least 2x2 px, got {cw}x{ch}")
        self.canvas_size_px = (cw, ch)
        self.avatar_size_px = tuple(avatar_size_px)
        self.set_height_frac(height_frac)

    def set_height_frac(self, height_frac: float) -> None:
        """Resize the avatar on the canvas (live: one attribute swap, so the compositing thread sees the old or the
        new placement, never a mix)."""
        self.placement = fit_avatar(self.avatar_size_px, self.canvas_size_px, height_frac)
        self.height_frac = float(height_frac)

    def set_avatar_size(self, avatar_size_px: tuple[int, int]) -> None:
        """Another avatar's crop size (a live avatar switch), placed at the same height fraction."""
        self.avatar_size_px = tuple(avatar_size_px)
        self.set_height_frac(self.height_frac)

    def process(self, rendered: RenderedFrame, background: Background) -> np.ndarray:
        if background.srgb.shape[:2] != (self.canvas_size_px[1], self.canvas_size_px[0]):
            raise ValueError(f"background {background.name!r} is {background.srgb.shape[1]}x{background.srgb.shape[0]} px; "
                             f"canvas is {self.canvas_size_px[0]}x{self.canvas_size_px[1]}")
        p = self.placement
        rgba = np.empty(rendered.rgb_linear.shape[:2] + (4,), np.uint8)
        rgba[..., :3] = encode_srgb_u8(rendered.rgb_linear)
        rgba[..., 3] = encode_alpha_u8(rendered.matte)
        if p.height_px < rgba.shape[0]:
            # Shrinking, Pillow widens its filter to antialias; the GPU kernel samples 2x2 texels. A canvas smaller
            # than the avatar is rare, so this follows the float definition itself and the two paths stay equal.
            return composite_scaled(rgba[..., :3], rgba[..., 3], background.srgb, p)
        avatar = Image.fromarray(rgba, "RGBA")
        if avatar.size != (p.width_px, p.height_px):
            avatar = avatar.resize((p.width_px, p.height_px), Image.BILINEAR)  # premultiplies RGBA internally
        canvas = Image.fromarray(background.srgb.copy(), "RGB")
        canvas.paste(avatar, (p.x_px, p.y_px), avatar)
        return np.asarray(canvas).copy()
