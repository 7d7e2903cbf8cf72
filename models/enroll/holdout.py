"""Held-out evaluation of an enrolled avatar on its own video (scripts/eval_real_clip.py): the avatar's crop pasted
back into the real full frame, mouth boxes in the full frame, SSIM over a full frame computed on the part that
changed, held-out lip coefficients from audio.

Pixel convention (models/face/crop.py): crop pixel (j, i) has its centre at crop coordinates (j + 0.5, i + 0.5);
image pixel (x, y) at (x + 0.5, y + 0.5). `image_to_crop` (2, 3) maps image coordinates to crop coordinates.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import map_coordinates

from models.metrics.image import ssim_map

SSIM_MARGIN_PX = 7  # windows (7x7: 3 px reach) within 3 px of the box see changes; 3 more px avoid the local edge


def crop_footprint_bbox(image_to_crop: np.ndarray, size_px: int, frame_hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1), x1/y1 exclusive: image pixels the S x S crop covers (clipped to the frame)."""
    inv = np.linalg.inv(np.vstack([np.asarray(image_to_crop, np.float64), [0.0, 0.0, 1.0]]))[:2]
    corners = np.array([[0, 0, 1], [size_px, 0, 1], [size_px, size_px, 1], [0, size_px, 1]], np.float64) @ inv.T
    h, w = frame_hw
    x0, y0 = np.floor(corners.min(0) - 1).astype(int)
    x1, y1 = np.ceil(corners.max(0) + 1).astype(int)
    return max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)


def paste_crop(frame: np.ndarray, crop: np.ndarray, alpha: np.ndarray, image_to_crop: np.ndarray) -> np.ndarray:
    """Warp an S x S crop (uint8 or float 0..255, sRGB) back into a copy of the uint8 frame with the crop transform,
    blended by `alpha` (S, S) in [0, 1] (the person matte), bilinear; pixels outside the crop keep the frame."""
    s = crop.shape[0]
    out = frame.copy()
    x0, y0, x1, y1 = crop_footprint_bbox(image_to_crop, s, frame.shape[:2])
    if x1 <= x0 or y1 <= y0:
        return out
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    a = np.asarray(image_to_crop, np.float64)
    u = a[0, 0] * (xx + 0.5) + a[0, 1] * (yy + 0.5) + a[0, 2] - 0.5  # crop array coordinates
    v = a[1, 0] * (xx + 0.5) + a[1, 1] * (yy + 0.5) + a[1, 2] - 0.5
    coords = np.stack([v, u])
    inside = (u >= -0.5) & (u <= s - 0.5) & (v >= -0.5) & (v <= s - 0.5)
    al = map_coordinates(np.asarray(alpha, np.float64), coords, order=1, mode="nearest") * inside
    crop = np.asarray(crop, np.float64)
    region = out[y0:y1, x0:x1].astype(np.float64)
    for c in range(3):
        val = map_coordinates(crop[..., c], coords, order=1, mode="nearest")
        region[..., c] = al * val + (1.0 - al) * region[..., c]
    out[y0:y1, x0:x1] = np.clip(np.rint(region), 0, 255).astype(np.uint8)
    return out


def crop_to_image_points(points_crop: np.ndarray, image_to_crop: np.ndarray) -> np.ndarray:
    """(N, 2) crop-px coordinates (pixel-centre convention above) -> image-px coordinates."""
    inv = np.linalg.inv(np.vstack([np.asarray(image_to_crop, np.float64), [0.0, 0.0, 1.0]]))[:2]
    p = np.asarray(points_crop, np.float64)[:, :2]
    return p @ inv[:, :2].T + inv[:, 2]


def mouth_box_in_frame(landmarks_crop_px: np.ndarray, image_to_crop: np.ndarray, frame_hw: tuple[int, int],
                       side_px: int = 120) -> tuple[int, int]:
    """Top-left (x, y) of a side x side box in the full frame centred on the tracked mouth (mean of the outer lip
    contour, mapped from the crop to the frame), kept inside the frame."""
    from models.face.resources import load_topology

    lips = crop_to_image_points(np.asarray(landmarks_crop_px)[load_topology().lips_outer], image_to_crop)
    cx, cy = lips.mean(0)
    h, w = frame_hw
    x = int(np.clip(round(cx - side_px / 2), 0, w - side_px))
    y = int(np.clip(round(cy - side_px / 2), 0, h - side_px))
    return x, y


def full_frame_ssim(pred: np.ndarray, real: np.ndarray, bbox: tuple[int, int, int, int]) -> float:
    """Mean SSIM over the whole frame, as models.metrics.image.ssim (the mean of skimage's full SSIM map, frame
    edges reflected), when pred and real differ only inside bbox: computed on bbox grown by SSIM_MARGIN_PX; every
    window further out sees identical pixels and scores exactly 1."""
    h, w = real.shape[:2]
    x0, y0, x1, y1 = bbox
    gx0, gy0 = max(x0 - SSIM_MARGIN_PX, 0), max(y0 - SSIM_MARGIN_PX, 0)
    gx1, gy1 = min(x1 + SSIM_MARGIN_PX, w), min(y1 + SSIM_MARGIN_PX, h)
    local = ssim_map(pred[gy0:gy1, gx0:gx1], real[gy0:gy1, gx0:gx1])
    r = 3  # the 7x7 window's reach
    # Keep the local map where its window lies inside the local box, or where the local box edge is the frame's edge
    # (there the full-frame computation reflects the same way).
    ys, xs = np.arange(gy0, gy1), np.arange(gx0, gx1)
    keep_y = ((ys >= gy0 + r) | (gy0 == 0)) & ((ys < gy1 - r) | (gy1 == h))
    keep_x = ((xs >= gx0 + r) | (gx0 == 0)) & ((xs < gx1 - r) | (gx1 == w))
    scored = local[np.ix_(keep_y, keep_x)]
    return float(1.0 - (1.0 - scored).sum() / (h * w))


def heldout_mel_windows(audio_16k: np.ndarray, start_s: float, n_frames: int, fps: float, past_frames: int,
                        lookahead_frames: int) -> np.ndarray:
    """(n_frames, past + 1 + lookahead, 80) log-mel windows for video frames from `start_s` on, computed from the
    audio from `start_s` on only (nothing before the held-out part is heard; its first windows see silence before)."""
    from models.audio.mel import log_mel
    from models.audio.window import mel_windows_for_video

    audio = np.asarray(audio_16k, np.float32)[int(round(start_s * 16000)):]
    return mel_windows_for_video(log_mel(audio), fps, n_frames, past_frames, lookahead_frames)


def summary(values) -> dict:
    v = np.asarray(values, np.float64)
    return {"mean": round(float(v.mean()), 3), "min": round(float(v.min()), 3), "max": round(float(v.max()), 3),
            "frames": int(v.size)}


# ------------------------------------------------------------------------------------- mouth-opening amplitude


UPPER_INNER_LIP, LOWER_INNER_LIP = 13, 14  # inner-lip midpoints of the 468-point mesh


def opening_axis(expression_basis: np.ndarray, expression_vertices: np.ndarray) -> np.ndarray:
    """Unit vector u (n_lip,) in lip-coefficient space along which the inner-lip gap (canonical y of vertex 13 minus
    vertex 14) changes fastest: the gap is linear in the coefficients, gap(c) = gap(0) + |d| c.u."""
    rows = {int(v): k for k, v in enumerate(np.asarray(expression_vertices))}
    b = np.asarray(expression_basis, np.float64)
    d = b[:, rows[UPPER_INNER_LIP], 1] - b[:, rows[LOWER_INNER_LIP], 1]
    return d / np.linalg.norm(d)


def opening_gain(pred: np.ndarray, measured: np.ndarray, axis: np.ndarray, max_gain: float = 4.0) -> float:
    """std of the measured coefficients' opening component over std of the predicted one (regression shrinks
    predictions toward the mean by about their correlation; this restores the opening's amplitude), capped."""
    sp, sm = float(np.std(np.asarray(pred) @ axis)), float(np.std(np.asarray(measured) @ axis))
    return float(min(max(sm / max(sp, 1e-9), 1.0), max_gain))


def amplify_opening(coeffs: np.ndarray, axis: np.ndarray, gain: float, centre: np.ndarray | None = None) -> np.ndarray:
    """Coefficients with their opening component (about `centre`, default 0 = the PCA mean) scaled by `gain`; the
    other directions untouched."""
    c = np.asarray(coeffs, np.float64)
    centre = np.zeros_like(c) if centre is None else np.asarray(centre, np.float64)
    along = (c - centre) @ axis
    return (c + (gain - 1.0) * np.multiply.outer(along, axis)).astype(np.float32)


def opening_gain_renderer(bundle_path=None, gain: float | None = None, **kwargs):
    """A BundleRenderer whose predicted lip coefficients have their mouth-opening component scaled by `gain`
    ($RELITCAM_EVAL_OPENING_GAIN): what restoring the audio head's amplitude would give, measured through the same
    live renderer (`relitcam run --avatar models.enroll.holdout:opening_gain_renderer`, bundle in
    $RELITCAM_EVAL_BUNDLE)."""
    import os

    from stream.bundle_renderer import BundleRenderer

    path = bundle_path or os.environ.get("RELITCAM_EVAL_BUNDLE")
    g = float(gain if gain is not None else os.environ.get("RELITCAM_EVAL_OPENING_GAIN", "1"))
    if not path:
        raise ValueError("opening_gain_renderer needs the bundle folder (argument or $RELITCAM_EVAL_BUNDLE)")
    class OpeningGainRenderer(BundleRenderer):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            arrays = self.bundle.arrays
            self.opening_axis = opening_axis(arrays["expression_basis"], arrays["expression_vertices"])
            self.opening_gain = g

        def lip_coeffs(self, mel_window):
            return amplify_opening(super().lip_coeffs(mel_window), self.opening_axis, self.opening_gain)

    return OpeningGainRenderer(path, **kwargs)
