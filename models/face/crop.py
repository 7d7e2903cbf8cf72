"""Rotated square crops of an image, and the affine maps between crop and image pixels.

The face models see a fixed-size square (128, 192, 256 px) cut from the frame, often rotated so the eye line is
horizontal. `RotatedRect` describes that square in image pixels; `sample_crop` resamples it; `crop_to_image_px` maps
model outputs back. Sampling is bilinear after an integer box pre-reduction, because plain bilinear sampling at 5-10x
minification aliases badly enough to move detections.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np


@dataclass(frozen=True)
class RotatedRect:
    """A rectangle in image pixels (x right, y down, row 0 at top).

    `angle_rad` is the direction of the rectangle's x axis in image coordinates: (cos a, sin a). Because y points
    down, a positive angle turns the rectangle clockwise on screen.
    """

    center_x_px: float
    center_y_px: float
    width_px: float
    height_px: float
    angle_rad: float = 0.0

    def __post_init__(self) -> None:
        if not (self.width_px > 0 and self.height_px > 0):
            raise ValueError(f"RotatedRect needs positive width/height, got {self.width_px} x {self.height_px}")
        if not all(math.isfinite(v) for v in (self.center_x_px, self.center_y_px, self.angle_rad)):
            raise ValueError("RotatedRect has a non-finite centre or angle")

    def crop_to_image_matrix(self, out_w: int, out_h: int) -> np.ndarray:
        """2x3 matrix taking crop pixel coordinates (u, v) (pixel centres at +0.5) to image pixel coordinates."""
        c, s = math.cos(self.angle_rad), math.sin(self.angle_rad)
        sx, sy = self.width_px / out_w, self.height_px / out_h
        ax = np.array([c, s]) * sx  # image step per crop-pixel step along u
        ay = np.array([-s, c]) * sy  # ... along v
        origin = np.array([self.center_x_px, self.center_y_px]) - ax * (out_w / 2) - ay * (out_h / 2)
        return np.array([[ax[0], ay[0], origin[0]], [ax[1], ay[1], origin[1]]], dtype=np.float64)

    def corners_px(self) -> np.ndarray:
        """(4, 2) image-pixel corners: top-left, top-right, bottom-right, bottom-left of the crop."""
        m = self.crop_to_image_matrix(1, 1)
        uv = np.array([[0, 0, 1], [1, 0, 1], [1, 1, 1], [0, 1, 1]], dtype=np.float64)
        return uv @ m.T


def crop_to_image_px(points_uv: np.ndarray, rect: RotatedRect, out_w: int, out_h: int) -> np.ndarray:
    """Map (N, 2) crop-pixel coordinates to (N, 2) image-pixel coordinates."""
    m = rect.crop_to_image_matrix(out_w, out_h)
    return points_uv @ m[:, :2].T + m[:, 2]


def image_to_crop_px(points_xy: np.ndarray, rect: RotatedRect, out_w: int, out_h: int) -> np.ndarray:
    """Inverse of `crop_to_image_px`."""
    m = rect.crop_to_image_matrix(out_w, out_h)
    return (points_xy - m[:, 2]) @ np.linalg.inv(m[:, :2]).T


def _box_reduce(region: np.ndarray, ky: int, kx: int) -> np.ndarray:
    """Mean over ky x kx blocks. Strided row adds then column adds: ~25x faster than reshape().mean() here."""
    h, w = region.shape[0] // ky * ky, region.shape[1] // kx * kx
    region = region[:h, :w]
    integer = region.dtype == np.uint8 and ky <= 256  # 255 * 256 fits in uint16
    rows = region[0::ky].astype(np.uint16 if integer else np.float32)
    for i in range(1, ky):
        rows += region[i::ky]
    cols = rows.reshape(h // ky, w // kx, kx, region.shape[2])
    out = cols[:, :, 0].astype(np.float32)
    for j in range(1, kx):
        out += cols[:, :, j]
    out *= 1.0 / (ky * kx)
    return out


def sample_crop(image: np.ndarray, rect: RotatedRect, out_w: int, out_h: int) -> np.ndarray:
    """Resample `rect` of an HxWxC image into an out_h x out_w x C float32 array in the image's value range.

    Outside the image reads as 0, matching the zero border the MediaPipe models were trained with.
    """
    if image.ndim != 3:
        raise ValueError(f"sample_crop expects an HxWxC image, got shape {image.shape}")
    m = rect.crop_to_image_matrix(out_w, out_h)
    # Pre-reduce only the part of the image the rectangle touches, by the integer part of the minification
    # (per image axis when the rectangle is axis-aligned, e.g. a whole 16:9 frame squeezed into a square).
    if m[0, 1] == 0.0 and m[1, 0] == 0.0:
        steps = (abs(m[1, 1]), abs(m[0, 0]))
    else:
        steps = (min(np.hypot(m[0, 0], m[1, 0]), np.hypot(m[0, 1], m[1, 1])),) * 2
    ky, kx = (int(step) if step >= 2.0 else 1 for step in steps)
    k = max(ky, kx)
    corners = rect.corners_px()
    x0 = max(int(math.floor(corners[:, 0].min())) - k, 0)
    y0 = max(int(math.floor(corners[:, 1].min())) - k, 0)
    x1 = min(int(math.ceil(corners[:, 0].max())) + k + 1, image.shape[1])
    y1 = min(int(math.ceil(corners[:, 1].max())) + k + 1, image.shape[0])
    channels = image.shape[2]
    if x1 - x0 < kx or y1 - y0 < ky:
        return np.zeros((out_h, out_w, channels), np.float32)
    region = image[y0:y1, x0:x1]
    src = _box_reduce(region, ky, kx) if k > 1 else region
    # Affine from crop pixel centres into `src` pixel-centre coordinates.
    kxy = np.array([[kx], [ky]], np.float64)
    a = m[:, :2] / kxy
    b = (m[:, 2] + m[:, :2] @ np.array([0.5, 0.5]) - np.array([x0, y0])) / kxy[:, 0] - 0.5
    u = np.arange(out_w, dtype=np.float32)
    v = np.arange(out_h, dtype=np.float32)[:, None]
    # +1: coordinates in the padded plane below.
    sx = (np.float32(a[0, 0]) * u + np.float32(a[0, 1]) * v + np.float32(b[0] + 1.0)).ravel()
    sy = (np.float32(a[1, 0]) * u + np.float32(a[1, 1]) * v + np.float32(b[1] + 1.0)).ravel()
    # Channel-planar copy with a one-pixel zero frame: every sample then reads its 4 neighbours with 1-D takes
    # (several times faster than row gathers) and no bounds masks; coordinates clamp into the zero frame.
    hs, ws = src.shape[:2]
    wp = ws + 2
    padded = np.zeros((channels, hs + 2, wp), np.float32)
    padded[:, 1:-1, 1:-1] = np.moveaxis(src, 2, 0)
    np.clip(sx, 0.0, ws + 1.0 - 1e-3, out=sx)
    np.clip(sy, 0.0, hs + 1.0 - 1e-3, out=sy)
    ix = sx.astype(np.int32)
    iy = sy.astype(np.int32)
    wx = sx - ix
    wy = sy - iy
    i00 = iy * wp + ix
    out = np.empty((out_h * out_w, channels), np.float32)
    for c in range(channels):
        plane = padded[c].ravel()
        p00 = plane.take(i00)
        p01 = plane.take(i00 + 1)
        p10 = plane.take(i00 + wp)
        p11 = plane.take(i00 + wp + 1)
        top = p00 + (p01 - p00) * wx
        out[:, c] = top + (p10 + (p11 - p10) * wx - top) * wy
    return out.reshape(out_h, out_w, channels)

def resize_bilinear(plane: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Resize a float HxW plane with separable linear interpolation (pixel-centre aligned, edges clamped).

    Done as two products with small interpolation matrices: BLAS beats gathering by ~3x when upsampling a
    256x256 matte to 720p.
    """
    if plane.ndim != 2:
        raise ValueError(f"resize_bilinear expects an HxW plane, got shape {plane.shape}")
    if out_h <= 0 or out_w <= 0:
        raise ValueError(f"resize_bilinear output size must be positive, got {out_h}x{out_w}")
    ry = _interp_matrix(plane.shape[0], out_h)
    rx = _interp_matrix(plane.shape[1], out_w)
    return ry @ plane.astype(np.float32, copy=False) @ rx.T


@lru_cache(maxsize=16)
def _interp_matrix(n_in: int, n_out: int) -> np.ndarray:
    pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    i0 = np.floor(pos).astype(np.intp)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w1 = (pos - i0).astype(np.float32)
    mat = np.zeros((n_out, n_in), np.float32)
    np.add.at(mat, (np.arange(n_out), i0), 1.0 - w1)
    np.add.at(mat, (np.arange(n_out), i1), w1)
    mat.setflags(write=False)
    return mat
