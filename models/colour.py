"""Exact sRGB transfer functions (IEC 61966-2-1) and luminance, for NumPy and CuPy arrays.

All lighting and rendering maths in relitcam happens on linear RGB; images are converted from sRGB when read from
8-bit files and back to sRGB only when written or displayed. The piecewise curve is used rather than a 2.2 gamma so
that a round trip is exact and dark values (where 2.2 is off by up to a factor of ~10) stay right.
"""

from __future__ import annotations

from models.xp import array_module

# Rec. 709 / sRGB primaries: weights giving relative luminance Y from linear RGB.
LUMA_WEIGHTS_LINEAR = (0.2126, 0.7152, 0.0722)

SRGB_LINEAR_KNEE = 0.0031308  # linear value where the curve switches from linear to power
_SRGB_ENCODED_KNEE = 0.04045  # the same point in encoded values (12.92 * 0.0031308)


def srgb_to_linear(srgb):
    """sRGB-encoded values in [0, 1] -> linear values in [0, 1]. Works elementwise on any shape, float32 out."""
    xp = array_module(srgb)
    s = xp.asarray(srgb, dtype=xp.float32)
    low = s / 12.92
    high = ((xp.maximum(s, _SRGB_ENCODED_KNEE) + 0.055) / 1.055) ** 2.4
    return xp.where(s <= _SRGB_ENCODED_KNEE, low, high).astype(xp.float32)


def linear_to_srgb(linear):
    """Linear values -> sRGB-encoded values, clipped to [0, 1] first (display range). Float32 out."""
    xp = array_module(linear)
    c = xp.clip(xp.asarray(linear, dtype=xp.float32), 0.0, 1.0)
    low = c * 12.92
    high = 1.055 * xp.maximum(c, SRGB_LINEAR_KNEE) ** (1.0 / 2.4) - 0.055
    return xp.where(c <= SRGB_LINEAR_KNEE, low, high).astype(xp.float32)


def luminance(linear_rgb):
    """Relative luminance Y of linear RGB (...x3) -> (...)."""
    xp = array_module(linear_rgb)
    rgb = xp.asarray(linear_rgb, dtype=xp.float32)
    r, g, b = LUMA_WEIGHTS_LINEAR
    return rgb[..., 0] * r + rgb[..., 1] * g + rgb[..., 2] * b
