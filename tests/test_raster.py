"""Rasteriser: coverage, barycentrics, depth test, interpolation, normals, speed."""

import time

import numpy as np
import pytest

from models.raster import interpolate, rasterize, vertex_normals


def _pixel_centres(h, w):
    rows, cols = np.mgrid[0:h, 0:w]
    return cols + 0.5, rows + 0.5


def test_single_triangle_coverage_matches_area():
    verts = np.array([[10.3, 5.2, 0.0], [90.7, 20.1, 0.0], [30.4, 70.9, 0.0]])
    faces = np.array([[0, 1, 2]])
    r = rasterize(verts, faces, 80, 100)
    (x0, y0), (x1, y1), (x2, y2) = verts[:, :2]
    area = abs((x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)) / 2
    perimeter = sum(np.hypot(*(verts[i, :2] - verts[(i + 1) % 3, :2])) for i in range(3))
    # Sampling at centres: error bounded by the pixels the edges pass through.
    assert abs(int(r.coverage.sum()) - area) < perimeter / 2
    assert set(np.unique(r.triangle_id)) == {-1, 0}


def test_barycentrics_sum_to_one_and_reproduce_positions():
    verts = np.array([[5.0, 3.0, 1.0], [60.0, 10.0, 2.0], [20.0, 50.0, 3.0]])
    faces = np.array([[0, 2, 1]])  # either winding
    r = rasterize(verts, faces, 64, 64)
    cov = r.coverage
    np.testing.assert_allclose(r.barycentric[cov].sum(-1), 1.0, atol=1e-5)
    assert (r.barycentric[cov] >= -1e-6).all()
    pos = interpolate(verts[:, :2], r)
    cx, cy = _pixel_centres(64, 64)
    np.testing.assert_allclose(pos[cov][:, 0], cx[cov], atol=1e-3)
    np.testing.assert_allclose(pos[cov][:, 1], cy[cov], atol=1e-3)
    depth = interpolate(verts[:, 2:], r)[..., 0]
    np.testing.assert_allclose(r.depth[cov], depth[cov], atol=1e-4)
    assert np.isneginf(r.depth[~cov]).all()


def test_depth_test_keeps_nearer_triangle_regardless_of_order():
    square = np.array([[0, 0], [40, 0], [40, 40], [0, 40]], float)
    far = np.c_[square, np.full(4, -5.0)]
    near = np.c_[square + 10, np.full(4, 5.0)]  # z toward viewer: larger z is nearer
    verts = np.vstack([near, far])
    faces_near = np.array([[0, 1, 2], [0, 2, 3]])
    for faces in (np.vstack([faces_near, faces_near + 4]), np.vstack([faces_near + 4, faces_near])):
        r = rasterize(verts, faces, 64, 64)
        near_ids = set(np.nonzero((faces < 4).all(1))[0])
        assert int(r.triangle_id[25, 25]) in near_ids  # overlap region
        assert int(r.triangle_id[5, 5]) not in near_ids  # only the far square
        assert r.depth[25, 25] == pytest.approx(5.0)


def test_shared_edges_leave_no_cracks_or_double_coverage():
    # A grid of integer-aligned quads: many pixel centres lie exactly on no edge, but diagonals hit centres.
    n = 8
    ys, xs = np.mgrid[0 : n + 1, 0 : n + 1] * 4.0
    verts = np.c_[xs.ravel(), ys.ravel(), np.zeros(xs.size)]
    faces = []
    for i in range(n):
        for j in range(n):
            a = i * (n + 1) + j
            faces += [[a, a + 1, a + n + 2], [a, a + n + 2, a + n + 1]]
    faces = np.array(faces)
    r = rasterize(verts, faces, 32, 32)
    assert r.coverage.all()
    # Each triangle covers exactly half of its 16-pixel quad once the tie rule splits the diagonal pixels.
    counts = np.bincount(r.triangle_id.ravel(), minlength=len(faces))
    assert counts.sum() == 32 * 32
    assert set(np.unique(counts)) <= {6, 8, 10}


def test_constant_attribute_stays_constant():
    rng = np.random.default_rng(3)
    verts = np.c_[rng.uniform(0, 50, (30, 2)), rng.uniform(-1, 1, 30)]
    faces = rng.integers(0, 30, (40, 3))
    faces = faces[(faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])]
    r = rasterize(verts, faces, 50, 50)
    out = interpolate(np.tile([0.25, 0.5, 0.75], (30, 1)), r)
    np.testing.assert_allclose(out[r.coverage], np.tile([0.25, 0.5, 0.75], (int(r.coverage.sum()), 1)), atol=1e-6)
    assert (out[~r.coverage] == 0).all()


def test_vertex_normals_of_a_sphere_point_outward():
    # Front hemisphere of a unit sphere, triangulated counter-clockwise as seen from +z.
    lat, lon = np.meshgrid(np.linspace(-1.2, 1.2, 12), np.linspace(-1.2, 1.2, 12), indexing="ij")
    p = np.stack([np.cos(lat) * np.sin(lon), np.sin(lat), np.cos(lat) * np.cos(lon)], -1).reshape(-1, 3)
    faces = []
    for i in range(11):
        for j in range(11):
            a = i * 12 + j
            faces += [[a, a + 1, a + 13], [a, a + 13, a + 12]]
    n = vertex_normals(p, np.array(faces))
    np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1.0, atol=1e-5)
    assert (np.sum(n * p, axis=1) > 0.97).all()


def test_bad_input_raises():
    with pytest.raises(ValueError, match="vertices must be"):
        rasterize(np.zeros((3, 2)), np.array([[0, 1, 2]]), 8, 8)
    with pytest.raises(ValueError, match="faces index"):
        rasterize(np.zeros((3, 3)), np.array([[0, 1, 3]]), 8, 8)


def test_speed_512_with_900_triangles():
    rng = np.random.default_rng(0)
    n = 31  # 30x30 quads = 1800 triangles over a 400 px face-sized region, jittered
    ys, xs = np.mgrid[0:n, 0:n] * (400 / (n - 1)) + 56
    xy = np.c_[xs.ravel(), ys.ravel()] + rng.uniform(-3, 3, (n * n, 2))
    verts = np.c_[xy, rng.uniform(0, 1, n * n)]
    faces = []
    for i in range(n - 1):
        for j in range(n - 1):
            a = i * n + j
            faces += [[a, a + 1, a + n + 1], [a, a + n + 1, a + n]]
    faces = np.array(faces)[::2]  # ~900 triangles
    rasterize(verts, faces, 512, 512)
    best = min(_timed(lambda: rasterize(verts, faces, 512, 512)) for _ in range(3))
    assert best < 0.1, f"raster took {best * 1e3:.0f} ms"


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t
