"""Shipped face assets: topology is a consistent mesh, contours and mirror map make sense."""

import collections
from itertools import combinations

import numpy as np

from models.face.resources import (
    ASSETS_DIR,
    LEFT_EYE_OUTER,
    NUM_LANDMARKS,
    RIGHT_EYE_OUTER,
    load_canonical_face,
    load_topology,
)


def test_model_files_and_licence_are_shipped():
    for name in ("face_detection_short_range.tflite", "face_landmark.tflite", "selfie_segmentation.tflite"):
        assert (ASSETS_DIR / name).stat().st_size > 100_000
    assert "Apache License" in (ASSETS_DIR / "LICENSE.mediapipe").read_text()
    assert "sha256" in (ASSETS_DIR / "NOTICE.md").read_text()


def test_triangles_form_a_consistently_wound_manifold():
    tri = load_topology().triangles
    assert tri.shape == (852, 3)
    assert tri.min() == 0 and tri.max() == NUM_LANDMARKS - 1
    assert all(len(set(t)) == 3 for t in tri)
    directed = collections.Counter((int(t[k]), int(t[(k + 1) % 3])) for t in tri for k in range(3))
    # Consistent winding: each directed edge used once, so neighbours traverse shared edges oppositely.
    assert max(directed.values()) == 1
    undirected = collections.Counter(tuple(sorted(e)) for t in tri for e in combinations(t, 2))
    assert max(undirected.values()) == 2


def test_canonical_triangles_face_the_viewer():
    topo, canon = load_topology(), load_canonical_face()
    v = canon.vertices
    n = np.cross(v[topo.triangles[:, 1]] - v[topo.triangles[:, 0]], v[topo.triangles[:, 2]] - v[topo.triangles[:, 0]])
    assert (n[:, 2] > 0).mean() > 0.9


def test_mirror_map_pairs_left_and_right():
    topo, canon = load_topology(), load_canonical_face()
    m = topo.mirror_index
    assert np.array_equal(m[m], np.arange(NUM_LANDMARKS))
    assert m[RIGHT_EYE_OUTER] == LEFT_EYE_OUTER and m[61] == 291 and m[1] == 1
    assert set(m[topo.left_eye]) == set(topo.right_eye)
    v = canon.vertices
    np.testing.assert_allclose(v[m] * [-1, 1, 1], v, atol=1e-5)


def test_canonical_frame_units_and_layout():
    v = load_canonical_face().vertices
    assert abs(np.linalg.norm(v[LEFT_EYE_OUTER] - v[RIGHT_EYE_OUTER]) - 1.0) < 1e-5
    assert v[LEFT_EYE_OUTER, 0] > v[RIGHT_EYE_OUTER, 0]  # subject's left is +x
    assert v[10, 1] > v[1, 1] > v[152, 1]  # forehead above nose tip above chin (y up)
    assert v[1, 2] > v[234, 2]  # nose tip nearer the viewer than the cheek edge
    assert 100 < load_canonical_face().rigid_mask.sum() < 400


def test_contours_are_closed_ccw_polygons_around_their_features():
    topo, v = load_topology(), load_canonical_face().vertices
    for name in ("lips_outer", "lips_inner", "left_eye", "right_eye", "left_eyebrow", "right_eyebrow", "face_oval"):
        poly = v[getattr(topo, name), :2]
        area = 0.5 * np.sum(poly[:, 0] * np.roll(poly[:, 1], -1) - np.roll(poly[:, 0], -1) * poly[:, 1])
        assert area > 0, name
    assert 13 in topo.lips_inner and 0 in topo.lips_outer and 10 in topo.face_oval
    assert len(topo.face_oval) == 36 and len(topo.lips_outer) == 20 and len(topo.left_eyebrow) == 10
