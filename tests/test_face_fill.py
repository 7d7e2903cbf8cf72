"""Hole fills of the face mesh: eyes closed over lid to lid, the teeth's arch behind an open mouth."""

import numpy as np
import pytest

from models.face.fill import arch_normals, eye_fill_triangles, split_contour, strip_triangles
from models.face.masks import polygon_mask
from models.face.resources import load_canonical_face, load_topology
from models.raster import interpolate, rasterize, vertex_normals


def test_eye_fills_close_both_eyes_and_face_the_camera():
    topo = load_topology()
    canon = load_canonical_face().vertices.astype(np.float64)
    fills = eye_fill_triangles(topo, canon)
    used = set(fills.ravel().tolist())
    assert used == set(topo.left_eye.tolist()) | set(topo.right_eye.tolist())
    # Counter-clockwise from +Z, like the mesh.
    p = canon[fills]
    assert (np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])[:, 2] > 0).all()
    # Rasterised with the mesh, the eye holes are covered, with normals close to the lids' (the proxy is not).
    s = 256
    px = np.c_[canon[:, 0] * 60 + s / 2, -canon[:, 1] * 60 + s / 2, canon[:, 2] * 60]
    tris = np.concatenate([topo.triangles.astype(np.int64), fills])
    eye = polygon_mask(px[topo.left_eye, :2], (s, s)) | polygon_mask(px[topo.right_eye, :2], (s, s))
    bare = rasterize(px, topo.triangles, s, s).coverage
    closed = rasterize(px, tris, s, s)
    assert eye.sum() > 50 and (~bare[eye]).mean() > 0.8 and closed.coverage[eye].all()
    n = interpolate(vertex_normals(px * [1, -1, 1], tris), closed)
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    assert n[eye][:, 2].min() > 0.7


def test_strip_triangles_walk_both_chains():
    xy = np.array([[0, 0], [1, -1], [2, -1], [3, 0], [2, 1], [1, 1]], np.float64)
    chains = split_contour(np.arange(6), xy)
    assert chains.upper.tolist() == [0, 1, 2, 3] and chains.lower.tolist() == [0, 5, 4, 3]
    tris = strip_triangles(chains, np.c_[xy[:, 0], -xy[:, 1], np.zeros(6)])
    assert len(tris) == 4  # (3 + 3 edges) - 2
    # The fill's area is the polygon's.
    a, b, c = (xy[tris[:, k]] for k in range(3))
    area = 0.5 * np.abs((b - a)[:, 0] * (c - a)[:, 1] - (b - a)[:, 1] * (c - a)[:, 0]).sum()
    assert area == pytest.approx(4.0)


def test_arch_faces_forward_in_the_middle_and_turns_out_at_the_corners():
    forward, side = np.array([0.0, 0.0, 1.0]), np.array([1.0, 0.0, 0.0])
    pix = np.array([[100.0, 50.0], [150.0, 52.0], [198.0, 50.0]])
    n = arch_normals(pix, np.array([100.0, 50.0]), np.array([200.0, 50.0]), forward, side)
    np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1.0, atol=1e-6)
    assert n[1] @ forward > 0.999
    assert n[0, 0] < -0.4 and n[2, 0] > 0.4  # ~30 deg outward at the corners
    # A turned head turns the arch with it.
    yaw = np.radians(20)
    turned = arch_normals(pix, np.array([100.0, 50.0]), np.array([200.0, 50.0]),
                          np.array([np.sin(yaw), 0, np.cos(yaw)]), np.array([np.cos(yaw), 0, -np.sin(yaw)]))
    assert np.degrees(np.arccos(turned[1, 2])) == pytest.approx(20.0, abs=0.5)
