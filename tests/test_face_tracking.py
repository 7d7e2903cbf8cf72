"""Tracker, head pose and One-Euro smoothing: synthetic sequences cut from the astronaut photograph, and the
development clip when it is present."""

import math
from pathlib import Path

import numpy as np
import pytest
from skimage import data, transform

from models.face import (
    FaceDetector,
    FaceMesh,
    FaceTracker,
    OneEuroFilter,
    OneEuroParams,
    TrackerParams,
    estimate_head_pose,
    fit_similarity,
    load_canonical_face,
)

CLIP = Path("/work/shared/data/talking_obama_24s.mp4")


@pytest.fixture(scope="module")
def models():
    return FaceDetector(), FaceMesh()


@pytest.fixture(scope="module")
def astronaut():
    return data.astronaut()


def _tracker(models, **params):
    detector, mesh = models
    return FaceTracker(detector=detector, mesh=mesh, params=TrackerParams(**params))


def _rotation(yaw_deg, pitch_deg, roll_deg):
    a, b, c = (math.radians(v) for v in (yaw_deg, pitch_deg, roll_deg))
    ry = np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
    rx = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    rz = np.array([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
    return ry @ rx @ rz


def test_tracker_follows_a_shifting_face_without_redetecting(models, astronaut):
    tracker = _tracker(models)
    offsets = [(6 * k, 4 * k) for k in range(8)]
    results = [tracker.process(astronaut[dy : dy + 400, dx : dx + 400]) for dx, dy in offsets]
    assert all(r.found for r in results)
    assert [r.detected for r in results] == [True] + [False] * 7
    # Back in astronaut coordinates the nose tip is the same image point, wherever the crop put it.
    noses = np.array([r.raw_landmarks.points_px[1, :2] + off for r, off in zip(results, offsets)])
    assert np.abs(noses - noses[0]).max() < 2.5  # the same image point, wherever the crop put it


def test_detector_runs_only_to_start_or_recover_a_track(models, astronaut):
    tracker = _tracker(models)
    blank = np.zeros_like(astronaut)
    results = [tracker.process(f) for f in (astronaut, astronaut, blank, astronaut, astronaut)]
    assert [r.found for r in results] == [True, True, False, True, True]
    assert [r.detected for r in results] == [True, False, True, True, False]
    assert results[2].landmarks is None and results[2].pose is None
    assert [r.frame_index for r in results] == [0, 1, 2, 3, 4]


def test_roll_follows_an_in_plane_rotation(models, astronaut):
    tracker = _tracker(models)
    nose = (256.0, 131.0)
    rolls = []
    for angle in (0, 5, 10, 15, 20):  # skimage rotates counter-clockwise on screen
        frame = (transform.rotate(astronaut, angle, center=nose) * 255).astype(np.uint8)
        r = tracker.process(frame)
        assert r.found
        rolls.append(r.pose.yaw_pitch_roll_deg()[2])
    np.testing.assert_allclose(np.array(rolls) - rolls[0], [0, 5, 10, 15, 20], atol=2.5)


def test_smoothing_removes_jitter_on_a_still_face(models, astronaut):
    tracker = _tracker(models)
    rng = np.random.default_rng(3)
    raw_spread, smooth_spread = [], []
    for _ in range(12):
        noisy = np.clip(astronaut.astype(int) + rng.integers(-12, 13, astronaut.shape), 0, 255).astype(np.uint8)
        r = tracker.process(noisy)
        raw_spread.append(r.raw_landmarks.points_px[:, :2])
        smooth_spread.append(r.landmarks.points_px[:, :2])
    raw_jitter = np.std(np.array(raw_spread)[4:], axis=0).mean()
    smooth_jitter = np.std(np.array(smooth_spread)[4:], axis=0).mean()
    assert smooth_jitter < 0.7 * raw_jitter


def test_pose_fit_recovers_a_known_similarity():
    canon = load_canonical_face()
    rot = _rotation(20, -10, 5)
    pts_cam = 80.0 * canon.vertices @ rot.T + np.array([300.0, -200.0, 5.0])
    pose = estimate_head_pose(pts_cam * [1, -1, 1], canon.vertices, canon.rigid_mask)
    np.testing.assert_allclose(pose.rotation, rot, atol=1e-6)
    assert pose.scale_px == pytest.approx(80.0)
    np.testing.assert_allclose(pose.yaw_pitch_roll_deg(), (20, -10, 5), atol=1e-6)
    np.testing.assert_allclose(pose.apply(canon.vertices), pts_cam * [1, -1, 1], atol=1e-3)


def test_similarity_fit_never_reflects_and_rejects_bad_input():
    rng = np.random.default_rng(0)
    src = rng.normal(size=(20, 3))
    fit = fit_similarity(src, src * [-1, 1, 1])
    assert np.linalg.det(fit.rotation) == pytest.approx(1.0)
    assert fit.rms_error > 0.1
    with pytest.raises(ValueError, match="equal shape"):
        fit_similarity(src, src[:10])


def test_one_euro_smooths_slow_noise_and_follows_fast_motion():
    rng = np.random.default_rng(0)
    still = OneEuroFilter(OneEuroParams(min_cutoff_hz=1.0, beta=0.0))
    out = [still(np.array([rng.normal()]), k / 30) for k in range(300)]
    assert np.std(out[30:]) < 0.4
    fast = OneEuroFilter(OneEuroParams(min_cutoff_hz=1.0, beta=5.0))
    ramp = [fast(np.array([10.0 * k / 30]), k / 30)[0] for k in range(60)]
    lagging = OneEuroFilter(OneEuroParams(min_cutoff_hz=1.0, beta=0.0))
    slow = [lagging(np.array([10.0 * k / 30]), k / 30)[0] for k in range(60)]
    assert abs(ramp[-1] - 10.0 * 59 / 30) < 0.2 < abs(slow[-1] - 10.0 * 59 / 30)
    with pytest.raises(ValueError, match="increase"):
        fast(np.array([0.0]), 0.0)
    with pytest.raises(ValueError, match="positive"):
        OneEuroParams(min_cutoff_hz=0.0)


@pytest.mark.skipif(not CLIP.is_file(), reason=f"development clip {CLIP} not present")
def test_tracks_the_development_clip(models):
    av = pytest.importorskip("av")
    tracker = _tracker(models)
    results = []
    with av.open(str(CLIP)) as container:
        for k, frame in enumerate(container.decode(video=0)):
            if k >= 60:
                break
            results.append(tracker.process(frame.to_ndarray(format="rgb24"), frame.time))
    assert sum(r.found for r in results) / len(results) > 0.95
    assert sum(r.detected for r in results) <= 2
    yaw, pitch, roll = results[-1].pose.yaw_pitch_roll_deg()
    assert abs(yaw) < 30 and abs(pitch) < 30 and abs(roll) < 30
