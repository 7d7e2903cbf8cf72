"""Pieces of scripts/eval_real_clip.py (held-out evaluation on a real clip) on tiny inputs: pasting a crop back into
the full frame, full-frame SSIM computed on the changed box, the mouth box in the frame, held-out mel windows that
hear only the held-out audio, and the folded decomposition rendering its own crop back. One test uses the
development clip and skips without it."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from models.enroll.holdout import (crop_footprint_bbox, crop_to_image_points, full_frame_ssim, heldout_mel_windows,
                                   mouth_box_in_frame, paste_crop)
from models.enroll.prepare import crop_rect
from models.face.crop import sample_crop
from models.face.resources import load_canonical_face, load_topology
from models.metrics.image import psnr_db, ssim

ROOT = Path(__file__).resolve().parents[1]
DEV_VIDEO = Path("/work/shared/data/talking_obama_24s.mp4")


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _script():
    spec = importlib.util.spec_from_file_location("eval_real_clip", ROOT / "scripts" / "eval_real_clip.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _smooth_frame(h: int = 120, w: int = 160) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.stack([128 + 90 * np.sin(xx / 9.0) * np.cos(yy / 13.0), 100 + 0.8 * xx, 60 + 1.2 * yy], -1)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _affine(scale: float, angle_deg: float, centre_xy, s: int) -> np.ndarray:
    """image -> crop similarity: the crop of side s centred on centre_xy, image px per crop px = 1 / scale."""
    a = math.radians(angle_deg)
    rot = scale * np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
    t = np.array([s / 2, s / 2]) - rot @ np.asarray(centre_xy, np.float64)
    return np.hstack([rot, t[:, None]])


def test_paste_crop_round_trip_and_untouched_outside():
    frame = _smooth_frame()
    s = 48
    a = _affine(0.8, 12.0, (70, 55), s)
    crop = np.clip(np.rint(sample_crop(frame, crop_rect(a, s), s, s)), 0, 255).astype(np.uint8)
    back = paste_crop(frame, crop, np.ones((s, s)), a)
    x0, y0, x1, y1 = crop_footprint_bbox(a, s, frame.shape[:2])
    outside = np.ones(frame.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    np.testing.assert_array_equal(back[outside], frame[outside])
    # Inside the crop's footprint (away from its border) the round trip is only resampling loss.
    inner = np.zeros(frame.shape[:2], bool)
    yy, xx = np.mgrid[0:frame.shape[0], 0:frame.shape[1]]
    uv = np.stack([xx + 0.5, yy + 0.5, np.ones_like(xx)], -1) @ a.T
    inner[(uv[..., 0] > 3) & (uv[..., 0] < s - 3) & (uv[..., 1] > 3) & (uv[..., 1] < s - 3)] = True
    assert psnr_db(back[inner], frame[inner]) > 30.0
    # A shifted transform pastes visibly worse: the pixel-centre convention is the one sample_crop uses.
    shifted = a.copy()
    shifted[0, 2] += 0.5
    assert psnr_db(paste_crop(frame, crop, np.ones((s, s)), shifted)[inner], frame[inner]) < psnr_db(
        back[inner], frame[inner]) - 1.0
    np.testing.assert_array_equal(paste_crop(frame, crop, np.zeros((s, s)), a), frame)


def test_full_frame_ssim_on_the_changed_box_matches_the_whole_frame():
    rng = np.random.default_rng(0)
    real = _smooth_frame()
    pred = real.copy()
    pred[40:80, 50:100] = np.clip(pred[40:80, 50:100].astype(int) + rng.integers(-30, 30, (40, 50, 3)), 0, 255)
    assert abs(full_frame_ssim(pred, real, (50, 40, 100, 80)) - ssim(pred, real)) < 1e-6
    pred2 = real.copy()  # a box touching the frame edge
    pred2[0:30, 0:40] = 255 - pred2[0:30, 0:40]
    assert abs(full_frame_ssim(pred2, real, (0, 0, 40, 30)) - ssim(pred2, real)) < 1e-6


def test_mouth_box_is_on_the_lips_in_the_frame():
    s = 64
    v = load_canonical_face().vertices.astype(np.float64)
    mesh = np.stack([s / 2 + 20 * v[:, 0], s * 0.45 - 20 * v[:, 1], 20 * v[:, 2]], axis=1)
    a = _affine(0.5, -8.0, (90, 70), s)
    lips = crop_to_image_points(mesh[load_topology().lips_outer], a)
    x, y = mouth_box_in_frame(mesh, a, (140, 200), side_px=40)
    assert abs(x + 20 - lips[:, 0].mean()) <= 1 and abs(y + 20 - lips[:, 1].mean()) <= 1
    x, y = mouth_box_in_frame(mesh, a, (60, 200), side_px=40)  # kept inside a short frame
    assert 0 <= y <= 20


def test_heldout_windows_hear_only_the_heldout_audio():
    rng = np.random.default_rng(1)
    audio = rng.normal(0, 0.1, 16000 * 3).astype(np.float32)
    other = audio.copy()
    other[:16000] = rng.normal(0, 0.3, 16000)  # the first second changes: the held-out part starts at 1.0 s
    w1 = heldout_mel_windows(audio, 1.0, 30, 30.0, 10, 4)
    w2 = heldout_mel_windows(other, 1.0, 30, 30.0, 10, 4)
    assert w1.shape == (30, 15, 80)
    np.testing.assert_array_equal(w1, w2)


def test_folded_layers_render_their_own_crop_back():
    from models.enroll.decompose import DecomposeParams, DecompositionModelTorch, frame_layers

    mod = _script()
    rng = np.random.default_rng(2)
    s = 32
    crops = np.clip(rng.normal(120, 30, (2, s, s, 3)), 20, 230).astype(np.uint8)
    normals = np.zeros((2, s, s, 3), np.float32)
    normals[..., 2] = 1.0
    # An untrained model: its shading correction is a random grey gain, and where the frame is brighter than the
    # model's shading the folded albedo clamps at 1 (by design), so only unclamped pixels must come back; the seed
    # keeps the test from depending on which tests ran before (it failed for some torch RNG states).
    torch.manual_seed(0)
    model = DecompositionModelTorch(DecomposeParams(widths=(8, 16)))
    layers = frame_layers(model, crops, normals, np.ones((2, s, s), np.float32), fold_residual=True)
    back = mod.to8(mod.relit_learned(model, layers.albedo, layers.normals, layers.spec_weight))
    unclamped = layers.albedo.max(-1) < 1.0
    assert unclamped.mean() > 0.9
    assert np.abs(back.astype(int) - crops.astype(int))[unclamped].max() <= 1


@pytest.mark.skipif(not DEV_VIDEO.is_file(), reason=f"development clip {DEV_VIDEO} not present")
def test_round_trip_on_a_real_frame():
    import av

    with av.open(str(DEV_VIDEO)) as c:
        frame = next(c.decode(video=0)).to_ndarray(format="rgb24")
    s = 256
    a = _affine(256 / 410, 3.0, (640, 300), s)
    crop = np.clip(np.rint(sample_crop(frame, crop_rect(a, s), s, s)), 0, 255).astype(np.uint8)
    back = paste_crop(frame, crop, np.ones((s, s)), a)
    assert psnr_db(back, frame) > 40.0


def test_opening_gain_scales_only_the_opening_component():
    from models.enroll.holdout import amplify_opening, opening_axis, opening_gain

    rng = np.random.default_rng(4)
    verts = np.array([0, 13, 14, 17])
    basis = rng.normal(size=(5, 4, 3))
    axis = opening_axis(basis, verts)
    assert abs(np.linalg.norm(axis) - 1) < 1e-9
    d = basis[:, 1, 1] - basis[:, 2, 1]  # gap is linear in the coefficients along axis
    c = rng.normal(size=(50, 5))
    out = amplify_opening(c, axis, 3.0)
    np.testing.assert_allclose(out @ d, 3.0 * (c @ d), rtol=1e-4, atol=1e-4)
    ortho = c - np.outer(c @ axis, axis)
    np.testing.assert_allclose(out - np.outer(out @ axis, axis), ortho, atol=1e-5)
    measured = c
    pred = 0.25 * c + 0.01 * rng.normal(size=c.shape)
    assert 3.5 < opening_gain(pred, measured, axis) <= 4.0
    assert opening_gain(measured, measured, axis) == 1.0


def test_detail_ratio_is_one_for_the_same_image_and_drops_when_blurred():
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(0)
    img = (rng.random((40, 40, 3)) * 255).astype(np.uint8)
    blurred = np.clip(gaussian_filter(img.astype(np.float64), (1.5, 1.5, 0)), 0, 255).astype(np.uint8)
    detail_ratio = _script().detail_ratio
    assert detail_ratio(img, img) == pytest.approx(1.0)
    assert detail_ratio(blurred, img) < 0.5
    assert detail_ratio(img, blurred) > 2.0


def test_box_border_psnr_sees_a_seam_on_the_box_edge_not_the_mouth_inside():
    script = _script()
    band = script.BORDER_BAND_PX
    real = _smooth_frame(120, 120)
    matte = np.ones((120, 120), np.float32)
    box, m = (20, 10), 80
    mouth_changed = real.copy()
    mouth_changed[10 + band:10 + m - band, 20 + band:20 + m - band] //= 2  # everything inside the band differs
    seam = real.copy()
    seam[10 + 3, 20:20 + m] = 255  # one bright row along the box's top edge
    untouched = script.box_border_psnr(real, real, box, m, matte)
    assert script.box_border_psnr(mouth_changed, real, box, m, matte) == untouched
    assert script.box_border_psnr(seam, real, box, m, matte) < 30.0
    off_person = np.zeros_like(matte)
    off_person[:, :60] = 1.0  # the seam's row half off the person: half of it still counts
    assert script.box_border_psnr(seam, real, box, m, off_person) < 30.0
