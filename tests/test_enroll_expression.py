"""Expression space (lip PCA in the pose-normalised frame) and idle-loop selection.

Meshes come from the landmark network on the astronaut photograph with the mouth warped open by different amounts
and the head shifted/rolled, and, for the idle loop, from the canonical face posed along synthetic trajectories.
"""

import math

import numpy as np
import pytest
from skimage import data, transform

from face_warps import open_mouth
from models.enroll.expression import (
    ExpressionSpace,
    fit_expression_space,
    fit_pose,
    lip_coeffs,
    lip_region,
    lip_vertices,
    mouth_openings,
    select_idle_loop,
)
from models.face import FaceDetector, FaceMesh, HeadPose, load_canonical_face, load_topology, roi_from_detection
from models.face.mesh import roi_from_landmarks


def _moved(image: np.ndarray, dx: float, dy: float, roll_deg: float) -> np.ndarray:
    tf = transform.SimilarityTransform(translation=(-dx, -dy)) + transform.SimilarityTransform(
        translation=(-256, -150)
    ) + transform.SimilarityTransform(rotation=math.radians(roll_deg)) + transform.SimilarityTransform(
        translation=(256, 150)
    )
    return (transform.warp(image, tf, preserve_range=True)).astype(np.uint8)


@pytest.fixture(scope="module")
def meshes():
    """(drops, poses_xy_roll, landmarks (N, 468, 3)) for mouth drops 0..12 px under a few head placements."""
    image = data.astronaut()
    mesh = FaceMesh()
    det = FaceDetector().detect(image)[0]
    base = mesh.landmarks(image, roi_from_detection(det))
    base = mesh.landmarks(image, roi_from_landmarks(base.points_px))
    drops = [0.0, 3.0, 6.0, 9.0, 12.0]
    placements = [(0, 0, 0), (8, -5, 6), (-6, 4, -5)]
    out, labels = [], []
    for drop in drops:
        opened = open_mouth(image, base.points_px, drop) if drop else image
        for dx, dy, roll in placements:
            frame = _moved(opened, dx, dy, roll)
            lm = mesh.landmarks(frame, roi_from_landmarks(base.points_px + np.array([dx, dy, 0])))
            lm = mesh.landmarks(frame, roi_from_landmarks(lm.points_px))
            out.append(lm.points_px)
            labels.append((drop, (dx, dy, roll)))
    return labels, np.stack(out)


def test_lip_region_is_the_mouth_and_jaw():
    region = lip_region()
    topo = load_topology()
    idx = set(region.indices.tolist())
    assert set(topo.lips_outer) | set(topo.lips_inner) <= idx
    assert 152 in idx  # chin
    assert not idx & (set(topo.left_eye) | set(topo.right_eye) | set(topo.left_eyebrow) | set(topo.right_eyebrow))
    assert 1 not in idx and 10 not in idx  # nose tip, forehead
    w = dict(zip(region.indices.tolist(), region.weights.tolist()))
    assert all(w[i] == pytest.approx(1.0) for i in topo.lips_outer)
    assert 0 < region.weights.min() < 0.5 and region.weights.max() <= 1.0
    # Left/right symmetric, so a driven mouth is not lopsided.
    mirror = topo.mirror_index[region.indices]
    assert set(mirror.tolist()) == idx
    np.testing.assert_allclose([w[int(m)] for m in mirror], region.weights, atol=1e-6)


def test_pca_explains_and_reconstructs_the_training_meshes(meshes):
    _, lms = meshes
    space = fit_expression_space(lms, n_lip=6)
    assert space.n_lip == 6 and space.basis.shape == (6, lip_region().indices.size, 3)
    assert 0.9 < space.explained_variance_ratio.sum() <= 1.0 + 1e-6
    assert (np.diff(space.explained_variance_ratio) <= 1e-7).all()
    flat = space.basis.reshape(6, -1)
    np.testing.assert_allclose(flat @ flat.T, np.eye(6), atol=1e-5)
    others = np.setdiff1d(np.arange(468), space.indices)
    for lm in lms:
        rebuilt = lip_vertices(space, lip_coeffs(space, lm), lm)
        assert np.abs(rebuilt[space.indices] - lm[space.indices]).max() < 0.6  # px, face ~110 px wide
        np.testing.assert_array_equal(rebuilt[others], lm[others])


def test_an_opened_mouth_has_different_coefficients(meshes):
    labels, lms = meshes
    space = fit_expression_space(lms, n_lip=6)
    coeffs = np.stack([lip_coeffs(space, lm) for lm in lms])
    drops = np.array([d for d, _ in labels])
    closed, wide = coeffs[drops == 0], coeffs[drops == 12]
    # The same closed mouth under different head placements barely moves the coefficients ...
    pose_noise = np.linalg.norm(closed - closed.mean(0), axis=1).max()
    # ... while opening it moves them far, whatever the placement.
    assert np.linalg.norm(wide - closed, axis=1).min() > 5 * pose_noise


def test_driving_an_idle_frame_moves_only_its_mouth_and_follows_its_pose(meshes):
    labels, lms = meshes
    space = fit_expression_space(lms, n_lip=6)
    opened = lms[[i for i, (d, p) in enumerate(labels) if d == 12 and p == (0, 0, 0)][0]]
    idle = lms[[i for i, (d, p) in enumerate(labels) if d == 0 and p == (8, -5, 6)][0]]
    driven = lip_vertices(space, lip_coeffs(space, opened), idle)
    assert mouth_openings(driven)[0] == pytest.approx(mouth_openings(opened)[0], rel=0.15)
    # (the astronaut smiles with parted lips, so "closed" is ~0.13 and 12 px open ~0.22)
    assert mouth_openings(driven)[0] - mouth_openings(idle)[0] > 0.05
    # The driven mesh keeps the idle frame's head pose (rolled 6 deg), not the source's.
    roll = fit_pose(driven).yaw_pitch_roll_deg()[2]
    assert roll == pytest.approx(fit_pose(idle).yaw_pitch_roll_deg()[2], abs=1.0)
    # The blend ramp leaves no step at the region's top edge: vertices there barely move.
    edge = space.indices[space.weights < 0.1]
    assert np.abs(driven[edge] - idle[edge]).max() < 1.0


def test_space_file_round_trip_and_bad_files(meshes, tmp_path):
    space = fit_expression_space(meshes[1], n_lip=4)
    space.save(tmp_path / "expr.npz")
    back = ExpressionSpace.load(tmp_path / "expr.npz")
    for name in ExpressionSpace.__dataclass_fields__:
        np.testing.assert_array_equal(getattr(back, name), getattr(space, name))
    (tmp_path / "bad.npz").write_bytes(b"nope")
    with pytest.raises(ValueError, match="not an expression space"):
        ExpressionSpace.load(tmp_path / "bad.npz")
    with pytest.raises(ValueError, match="more frames than lip coefficients"):
        fit_expression_space(meshes[1][:4], n_lip=4)
    with pytest.raises(ValueError, match=r"\(\.\.\., 468, 3\)"):
        fit_expression_space(np.zeros((10, 400, 3)))
    with pytest.raises(ValueError, match="expected 4 lip coefficients"):
        lip_vertices(space, np.zeros(3), meshes[1][0])


# ------------------------------------------------------------------------------------------------------ idle loop

FPS = 25.0


def _posed_sequence(yaw_deg: np.ndarray, opening: np.ndarray, seed: int = 0) -> np.ndarray:
    """Canonical face posed with the given yaw per frame, jaw dropped by `opening` (inter-ocular units)."""
    v = load_canonical_face().vertices.astype(np.float64)
    below_lips = np.clip((-0.33 - v[:, 1]) / 0.1, 0, 1)  # 0 above the lower lip, 1 from the chin's top down
    rng = np.random.default_rng(seed)
    frames = []
    for yaw, op in zip(np.radians(yaw_deg), opening):
        c, s = math.cos(yaw), math.sin(yaw)
        rot = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
        pose = HeadPose(rotation=rot, scale_px=40.0, translation_px=np.array([64.0, -64.0, 0.0]), rms_error_px=0.0)
        shape = v.copy()
        shape[:, 1] -= op * below_lips
        frames.append(pose.apply(shape) + rng.normal(0, 0.03, (468, 3)))
    return np.stack(frames)


def test_idle_loop_is_a_quiet_stretch_that_loops_by_a_cut():
    n = 200
    t = np.arange(n) / FPS
    yaw = 6 * np.sin(2 * np.pi * t / 2.0)  # natural sway with a 2 s period
    rng = np.random.default_rng(1)
    opening = np.abs(rng.normal(0.15, 0.08, n))  # talking everywhere ...
    opening[60:150] = 0.0  # ... except 3.6 s of silence
    loop = select_idle_loop(_posed_sequence(yaw, opening), FPS, length_s=2.0)
    assert loop.mode == "cut"
    assert 60 <= loop.start and loop.end <= 150
    assert abs(loop.end - loop.start - 50) <= 25
    np.testing.assert_array_equal(loop.frame_indices, np.arange(loop.start, loop.end))
    assert loop.seam_cost <= 2.0
    # The frame after the stretch is (nearly) the first one: whole sway periods.
    assert abs((loop.end - loop.start) % 50) <= 2 or abs((loop.end - loop.start) % 50 - 50) <= 2
    openings = mouth_openings(_posed_sequence(yaw, opening))
    assert loop.mouth_opening_mean == pytest.approx(openings[60:150].mean(), abs=0.005)
    assert loop.mouth_opening_mean < openings[:60].mean() - 0.1


def test_idle_loop_plays_pingpong_when_no_stretch_closes():
    n = 120
    yaw = np.linspace(-20, 20, n)  # one slow turn: no frame comes back to an earlier pose
    loop = select_idle_loop(_posed_sequence(yaw, np.zeros(n)), FPS, length_s=2.0)
    assert loop.mode == "pingpong" and loop.seam_cost == 0.0
    forward = np.arange(loop.start, loop.end)
    np.testing.assert_array_equal(loop.frame_indices, np.concatenate([forward, forward[-2:0:-1]]))
    # Cyclic playback never jumps by more than one frame.
    steps = np.abs(np.diff(np.append(loop.frame_indices, loop.frame_indices[0])))
    assert steps.max() == 1


def test_idle_loop_needs_a_gapless_stretch():
    lms = _posed_sequence(np.zeros(80), np.zeros(80))
    index = np.concatenate([np.arange(40), np.arange(50, 90)])  # 10 frames skipped in the middle
    with pytest.raises(ValueError, match=r"longest is 1\.6 s"):
        select_idle_loop(lms, FPS, length_s=2.0, source_frame_index=index)
    loop = select_idle_loop(lms, FPS, length_s=1.2, source_frame_index=index)
    assert loop.end <= 40 or loop.start >= 40
