"""Reference mouths (models/enroll/reference_mouths.py): bank choice, nearest-lip retrieval, the warp onto a
driven mesh, and the bank's checks."""

from __future__ import annotations

import numpy as np
import pytest

from models.enroll.mouth import mouth_box, mouth_coarse_normals
from models.enroll.reference_mouths import (ReferenceMouths, box_landmarks, choose_references, lip_shape_key,
                                            warp_reference, warp_triangles)
from models.face.resources import load_topology
from test_enroll_mouth import S, _mesh

M = 24


def _texture(seed: int = 0) -> np.ndarray:
    """A smooth, non-repeating test image: a warp that lands a pixel off shows."""
    yy, xx = np.mgrid[0:M, 0:M].astype(np.float32)
    rng = np.random.default_rng(seed)
    f = rng.uniform(0.1, 0.4, size=(3, 2))
    return np.stack([0.5 + 0.4 * np.sin(f[c, 0] * xx + f[c, 1] * yy + c) for c in range(3)], -1).astype(np.float32)


def _local(mesh: np.ndarray, box) -> np.ndarray:
    return box_landmarks(mesh, box).astype(np.float64)


def test_warp_onto_the_same_mesh_is_the_identity_and_follows_a_shift():
    mesh = _mesh(4.0)
    box = mouth_box(mesh, S, M)
    local = _local(mesh, box)
    tex = _texture()
    same, valid = warp_reference(tex, local, local, M)
    assert valid.mean() > 0.3
    np.testing.assert_allclose(same[valid], tex[valid], atol=1e-5)
    # The driven lips two px right and one down: each pixel reads the reference one step back.
    moved = local + np.array([2.0, 1.0, 0.0])
    shifted, valid2 = warp_reference(tex, local, moved, M)
    inner = valid2.copy()
    inner[:1], inner[:, :2] = False, False
    ys, xs = np.nonzero(inner)
    np.testing.assert_allclose(shifted[ys, xs], tex[ys - 1, xs - 2], atol=1e-5)


def test_warp_covers_the_open_mouth_the_mesh_leaves_as_a_hole():
    mesh = _mesh(4.0)  # jaw dropped: the inner lips part
    box = mouth_box(mesh, S, M)
    hole = np.linalg.norm(mouth_coarse_normals(mesh, load_topology().triangles, box, M), axis=-1) == 0
    _, valid = warp_reference(_texture(), _local(mesh, box), _local(mesh, box), M)
    lips_inner = _local(mesh, box)[load_topology().lips_inner, :2]
    lo, hi = lips_inner.min(0), lips_inner.max(0)
    yy, xx = np.mgrid[0:M, 0:M] + 0.5
    between = hole & (xx > lo[0] + 2) & (xx < hi[0] - 2) & (yy > lo[1]) & (yy < hi[1])
    assert between.sum() >= 5  # the opening is there, and not covered by the face mesh
    assert valid[between].all()  # the strip across the opening carries it
    assert warp_triangles().shape[1] == 3 and warp_triangles().max() < 468


def test_choose_references_spans_the_shapes_and_nearest_respects_allowed():
    rng = np.random.default_rng(1)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    keys = np.concatenate([c + rng.normal(0, 0.3, size=(20, 2)) for c in centres])
    chosen = choose_references(keys, 3)
    assert sorted(chosen // 20) == [0, 1, 2]  # one per cluster
    assert np.array_equal(choose_references(keys, 100), np.arange(60))

    meshes = [_mesh(d) for d in (0.0, 2.0, 4.0)]
    boxes = [mouth_box(m, S, M) for m in meshes]
    bank = ReferenceMouths(np.stack([_texture(k) for k in range(3)]),
                           np.stack([box_landmarks(m, b) for m, b in zip(meshes, boxes)]))
    probe = box_landmarks(_mesh(3.6), boxes[2])
    assert bank.nearest(probe) == 2
    assert bank.nearest(probe, allowed=np.array([True, True, False])) == 1
    # Keys are about the lips' own centre: where the box sits does not matter.
    np.testing.assert_allclose(lip_shape_key(probe), lip_shape_key(probe + np.array([5.0, -3.0, 0.0])), atol=1e-4)
    mask = np.zeros((M, M), bool)
    mask[4:20, 4:20] = True
    albedo, valid = bank.inputs(probe, mask)
    assert valid.any() and not valid[~mask].any() and not albedo[~mask].any()


def test_reference_bank_refuses_wrong_shapes():
    with pytest.raises(ValueError, match="reference albedo must be"):
        ReferenceMouths(np.zeros((2, M, M + 1, 3), np.float32), np.zeros((2, 468, 3), np.float32))
    with pytest.raises(ValueError, match="reference landmarks must be"):
        ReferenceMouths(np.zeros((2, M, M, 3), np.float32), np.zeros((3, 468, 3), np.float32))
