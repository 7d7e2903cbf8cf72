"""Image, temporal, lip-sync and landmark metrics on arrays with known answers."""

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from models import metrics
from models.metrics.sequence import FramePair, _EvenlySpacedSamples, SheetSample, score_sequence, zip_frames


def _texture(h=48, w=64, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (gaussian_filter(rng.random((h, w, 3)), (1.5, 1.5, 0)) * 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------------------- image


def test_psnr_identical_is_inf_and_known_error_gives_known_db():
    a = _texture()
    assert metrics.psnr_db(a, a) == float("inf")
    b = np.clip(a.astype(int) + 5, 0, 255).astype(np.uint8)
    exact = np.mean((a.astype(float) - b) ** 2)
    assert metrics.psnr_db(b, a) == pytest.approx(10 * np.log10(255**2 / exact))
    assert metrics.psnr_db(np.full((4, 4), 0.1), np.zeros((4, 4)), max_value=1.0) == pytest.approx(20.0)


def test_masked_psnr_and_ssim_ignore_pixels_outside_mask():
    a = _texture()
    b = a.copy()
    b[:, 32:] = 255 - b[:, 32:]  # destroy the right half only
    left = np.zeros(a.shape[:2], bool)
    left[:, :32] = True
    assert metrics.psnr_db(b, a, left) == float("inf")
    assert metrics.psnr_db(b, a) < 25
    full_map = metrics.ssim_map(b, a)
    assert metrics.ssim(b, a, left) == pytest.approx(full_map[left].mean())
    assert metrics.ssim(b, a, left) > 0.85 > metrics.ssim(b, a)


def test_ssim_is_one_for_identical_and_drops_for_blur():
    a = _texture()
    assert metrics.ssim(a, a) == pytest.approx(1.0)
    blurred = gaussian_filter(a, (1.5, 1.5, 0))
    assert metrics.ssim(blurred, a) < 0.95
    assert metrics.psnr_db(blurred, a) < 40


def test_mismatched_shapes_and_empty_masks_are_errors():
    a = _texture()
    with pytest.raises(ValueError, match="sizes must match"):
        metrics.psnr_db(a, a[:-2])
    with pytest.raises(ValueError, match="selects no pixels"):
        metrics.psnr_db(a, a, np.zeros(a.shape[:2], bool))
    with pytest.raises(ValueError, match="mask is"):
        metrics.ssim(a, a, np.ones((3, 3), bool))


def test_psnr_grad_ignores_offsets_but_sees_lost_detail():
    a = _texture().astype(np.float64)
    assert metrics.psnr_grad_db(a + 10, a) == float("inf")  # a constant shift has the same gradients
    assert metrics.psnr_db(a + 10, a) < 30
    smooth = gaussian_filter(a, (2, 2, 0))
    assert metrics.psnr_grad_db(smooth, a) < metrics.psnr_grad_db(a + np.random.default_rng(1).normal(0, 0.5, a.shape), a)


def _normals_tilted(angle_deg: float, h=8, w=8) -> np.ndarray:
    t = np.radians(angle_deg)
    n = np.zeros((h, w, 3))
    n[..., 0], n[..., 2] = np.sin(t), np.cos(t)
    return n


def test_normal_angular_error_in_degrees():
    assert metrics.normal_angular_error_deg(_normals_tilted(10), _normals_tilted(0)) == pytest.approx(10.0)
    gt = _normals_tilted(0)
    gt[:4] = 0  # no ground truth on the top half: skipped, not counted as error
    assert metrics.normal_angular_error_deg(_normals_tilted(30), gt) == pytest.approx(30.0)
    # 8-bit storage: (n + 1) / 2 * 255
    enc = lambda n: np.round((n + 1) / 2 * 255).astype(np.uint8)  # noqa: E731
    assert metrics.normal_angular_error_deg(enc(_normals_tilted(20)), enc(_normals_tilted(0))) == pytest.approx(
        20.0, abs=0.6
    )
    with pytest.raises(ValueError, match="no pixel has a ground-truth normal"):
        metrics.normal_angular_error_deg(_normals_tilted(0), np.zeros((8, 8, 3)))


# ---------------------------------------------------------------------------------------------------------- flicker


def test_flicker_measures_change_only_inside_static_mask():
    a = _texture()
    frames = [a, a, a]
    assert metrics.temporal_flicker(frames) == 0.0
    noisy = [a, np.clip(a.astype(int) + 4, 0, 255).astype(np.uint8), a]
    static = np.ones(a.shape[:2], bool)
    static[:, :8] = False
    moving = [f.copy() for f in noisy]
    moving[1][:, :8] = 0  # large change outside the static region
    assert metrics.temporal_flicker(moving, static) == pytest.approx(metrics.temporal_flicker(noisy, static), abs=0.2)
    assert metrics.temporal_flicker(noisy) == pytest.approx(4.0, abs=0.2)
    with pytest.raises(ValueError, match="at least two frames"):
        metrics.temporal_flicker([a])


# ---------------------------------------------------------------------------------------------------------- lip sync

SR = 16000


def _talk(duration_s=8.0, seed=0):
    """A syllable-rate loudness curve: the mouth follows it, the audio is noise shaped by it."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(duration_s * SR)) / SR
    knots = rng.random(int(duration_s * 5) + 2) ** 2  # one random syllable strength every 200 ms
    level = np.interp(t, np.arange(knots.size) * 0.2, knots)
    return t, level, rng


def _audio_shifted(t, level, rng, delay_ms):
    return (rng.standard_normal(t.size) * np.interp(t - delay_ms / 1000, t, level)).astype(np.float32)


@pytest.mark.parametrize("delay_ms", [0.0, 100.0, -100.0, 37.5])
def test_lip_sync_offset_follows_audio_delay(delay_ms):
    t, level, rng = _talk()
    fps = 25
    pts = np.arange(int(t[-1] * fps)) / fps
    mouth = np.interp(pts + 0.5 / fps, t, level)  # opening over each frame's display interval
    est = metrics.mouth_audio_offset(mouth, pts, _audio_shifted(t, level, rng, delay_ms), SR)
    assert est.offset_ms == pytest.approx(delay_ms, abs=5)
    # not 1: loudness is compared in dB while this mouth opens linearly with level, and the noise carrier jitters
    assert est.peak_correlation > 0.6
    assert not est.at_search_edge
    assert est.lags_ms[0] == -500 and est.lags_ms[-1] == 500


def test_lip_sync_flags_a_peak_outside_the_search_range():
    t, level, rng = _talk()
    pts = np.arange(200) / 25
    mouth = np.interp(pts, t, level)
    est = metrics.mouth_audio_offset(mouth, pts, _audio_shifted(t, level, rng, 300), SR, max_lag_ms=150)
    assert est.at_search_edge


def test_lip_sync_rejects_unusable_input():
    t, level, rng = _talk()
    pts = np.arange(200) / 25
    mouth = np.interp(pts, t, level)
    audio = _audio_shifted(t, level, rng, 0)
    with pytest.raises(ValueError, match="silent"):
        metrics.mouth_audio_offset(mouth, pts, np.zeros_like(audio), SR)
    with pytest.raises(ValueError, match="never changes"):
        metrics.mouth_audio_offset(np.ones(200), pts, audio, SR)
    with pytest.raises(ValueError, match="frame times"):
        metrics.mouth_audio_offset(mouth[:-1], pts, audio, SR)
    with pytest.raises(ValueError, match="overlap for"):
        metrics.mouth_audio_offset(mouth[:30], pts[:30], audio, SR)
    with pytest.raises(ValueError, match="fewer than 3"):
        metrics.mouth_audio_offset(np.full(200, np.nan), pts, audio, SR)


def test_lip_sync_bridges_frames_without_a_face():
    t, level, rng = _talk()
    pts = np.arange(200) / 25
    mouth = np.interp(pts + 0.02, t, level)
    mouth[50:53] = np.nan
    est = metrics.mouth_audio_offset(mouth, pts, _audio_shifted(t, level, rng, 60), SR)
    assert est.offset_ms == pytest.approx(60, abs=5)


# ---------------------------------------------------------------------------------------------------------- landmarks


def test_landmark_distance_in_pixels(tmp_path):
    gt = np.zeros((4, 5, 2))
    pred = gt + np.array([3.0, 4.0])
    assert metrics.landmark_distance_px(pred, gt) == pytest.approx(5.0)
    pred[1] = np.nan  # a frame without a face is left out, not counted as 0 or inf
    pred[:, 0] += 100  # point 0 is not a mouth point
    assert metrics.landmark_distance_px(pred, gt, point_indices=[1, 2, 3, 4]) == pytest.approx(5.0)
    with pytest.raises(ValueError, match="must match"):
        metrics.landmark_distance_px(pred[:3], gt)
    np.savez(tmp_path / "lm.npz", landmarks=gt)
    assert metrics.load_landmarks_npz(tmp_path / "lm.npz").shape == (4, 5, 2)
    np.savez(tmp_path / "two.npz", a=gt, b=gt)
    with pytest.raises(ValueError, match="name the landmark array"):
        metrics.load_landmarks_npz(tmp_path / "two.npz")
    (tmp_path / "bad.npz").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="cannot read landmarks"):
        metrics.load_landmarks_npz(tmp_path / "bad.npz")


# ---------------------------------------------------------------------------------------------------------- sequences


def test_zip_frames_reports_mismatched_counts():
    a = _texture()
    with pytest.raises(ValueError, match="mismatched frame counts: ground truth has 2 frames, prediction has 3"):
        list(zip_frames([a, a, a], [a, a]))


def test_score_sequence_scores_every_pair():
    frames = [_texture(seed=s) for s in range(5)]
    blurred = [gaussian_filter(f, (1, 1, 0)) for f in frames]
    roi = np.zeros(frames[0].shape[:2], bool)
    roi[10:30, 10:40] = True
    scores = score_sequence(FramePair(k, p, g, roi) for k, (p, g) in enumerate(zip(blurred, frames)))
    assert len(scores.psnr_db) == 5 and all(20 < v < 45 for v in scores.psnr_db)
    assert all(np.isfinite(scores.roi_ssim))
    assert scores.flicker_region == "outside mask"
    assert scores.pred_flicker < scores.gt_flicker  # blur smooths frame-to-frame change too
    assert scores.frame_size_px == (64, 48)
    assert [s.index for s in scores.sheet_samples] == [0, 1, 2, 3, 4]


def test_sheet_samples_stay_few_and_spread():
    keep = _EvenlySpacedSamples(4)
    blank = np.zeros((2, 2), np.uint8)
    for k in range(1000):
        if keep.wants(k):
            keep.add(SheetSample(k, blank, blank, blank, 0.0))
    assert len(keep.items) <= 8
    picked = [s.index for s in keep.pick()]
    assert len(picked) == 4 and picked[0] == 0 and picked[-1] > 800
