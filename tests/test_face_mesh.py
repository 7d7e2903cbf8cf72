"""Face mesh, measurements, masks and person matte on skimage's public-domain astronaut photograph."""

import numpy as np
import pytest
from skimage import data

from face_warps import open_mouth
from models.face import (
    FaceDetector,
    FaceLandmarks,
    FaceMesh,
    RotatedRect,
    SelfieSegmenter,
    face_mask,
    load_topology,
    mouth_box_px,
    mouth_interior_mask,
    mouth_mask,
    mouth_opening,
    polygon_mask,
    roi_from_detection,
    roi_from_landmarks,
    skin_mask,
)


@pytest.fixture(scope="module")
def astronaut():
    return data.astronaut()


@pytest.fixture(scope="module")
def mesh():
    return FaceMesh()


@pytest.fixture(scope="module")
def detection(astronaut):
    (face,) = FaceDetector().detect(astronaut)
    return face


@pytest.fixture(scope="module")
def landmarks(astronaut, mesh, detection):
    first = mesh.landmarks(astronaut, roi_from_detection(detection))
    return mesh.landmarks(astronaut, roi_from_landmarks(first.points_px))


def test_landmarks_land_on_the_face(landmarks, detection):
    p = landmarks.points_px
    assert landmarks.presence > 0.9
    x0, y0, x1, y1 = detection.box_px
    inner = p[[1, 33, 263, 13, 14, 61, 291]]
    assert ((inner[:, 0] > x0) & (inner[:, 0] < x1) & (inner[:, 1] > y0) & (inner[:, 1] < y1)).all()
    assert p[33, 0] < p[1, 0] < p[263, 0]
    assert max(p[33, 1], p[263, 1]) < p[1, 1] < p[13, 1] < p[14, 1] < p[152, 1]
    assert p[10, 1] < p[33, 1]
    # Detector and mesh agree on the eyes within a few pixels.
    right_eye_centre = (p[159, :2] + p[145, :2]) / 2  # mid-point of the subject's right upper and lower lid
    assert np.linalg.norm(right_eye_centre - detection.keypoint("right_eye")) < 8
    assert p[1, 2] > p[234, 2]  # nose tip nearer the viewer than the cheek edge


def test_mesh_triangles_are_mostly_non_degenerate_and_wound_alike(landmarks):
    tri = load_topology().triangles
    xy = landmarks.xy_px
    a, b, c = xy[tri[:, 0]], xy[tri[:, 1]], xy[tri[:, 2]]
    area = 0.5 * ((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0]))
    assert (np.abs(area) > 0.05).mean() > 0.95
    # Counter-clockwise in camera space (y up) is clockwise on screen (y down): negative area here.
    assert (area < 0).mean() > 0.9


def test_no_face_presence_on_noise(mesh):
    noise = np.random.default_rng(1).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    assert mesh.landmarks(noise, RotatedRect(128.0, 128.0, 200.0, 200.0)).presence < 0.5


def test_mouth_opening_grows_as_the_lower_lip_is_pulled_down(astronaut, mesh, landmarks):
    openings = []
    for drop_px in (0, 8, 16):
        warped = open_mouth(astronaut, landmarks.points_px, drop_px)
        roi = roi_from_landmarks(landmarks.points_px)
        openings.append(mouth_opening(mesh.landmarks(warped, roi)))
    assert 0.02 < openings[0] < 0.3
    assert openings[0] < openings[1] < openings[2]
    assert openings[2] - openings[0] > 0.08


def test_mouth_opening_of_synthetic_landmarks(landmarks):
    p = landmarks.points_px.copy()
    p[[87, 14, 317], 1] = p[[82, 13, 312], 1]
    p[[87, 14, 317], 2] = p[[82, 13, 312], 2]
    p[[87, 14, 317], 0] = p[[82, 13, 312], 0]
    assert mouth_opening(landmarks.with_points(p)) == pytest.approx(0.0, abs=1e-6)
    iod = np.linalg.norm(p[263] - p[33])
    p[[87, 14, 317], 1] += 0.5 * iod
    assert mouth_opening(landmarks.with_points(p)) == pytest.approx(0.5, rel=1e-4)


def test_masks_nest_inside_the_face(astronaut, landmarks):
    shape = astronaut.shape[:2]
    face, skin = face_mask(landmarks, shape), skin_mask(landmarks, shape)
    mouth, interior = mouth_mask(landmarks, shape), mouth_interior_mask(landmarks, shape)
    assert 6000 < face.sum() < 15000  # the face is about 100 x 110 px
    assert skin.sum() < face.sum() and not (skin & mouth).any()
    assert (mouth <= face).all() and (interior <= mouth).all() and 0 < interior.sum() < mouth.sum()
    x0, y0, x1, y1 = mouth_box_px(landmarks, margin=0.0)
    ys, xs = np.nonzero(mouth)
    assert x0 - 1 <= xs.min() and xs.max() <= x1 + 1 and y0 - 1 <= ys.min() and ys.max() <= y1 + 1
    # Skin pixels are skin-coloured: red dominates blue.
    rgb = astronaut[skin].astype(float)
    assert (rgb[:, 0] > rgb[:, 2]).mean() > 0.9


def test_convex_polygon_mask_is_polygon_mask_pixel_for_pixel():
    from scipy.spatial import ConvexHull

    from models.face.masks import convex_polygon_mask

    rng = np.random.default_rng(3)
    for k in range(300):
        pts = rng.normal(48, rng.uniform(2, 30), (rng.integers(3, 30), 2))
        hull = pts[ConvexHull(pts).vertices]
        if k % 2:
            hull = hull[::-1]  # either way round
        shape = (96, 80) if k % 3 else (40, 120)
        np.testing.assert_array_equal(convex_polygon_mask(hull, shape), polygon_mask(hull, shape))


def test_grow_mask_is_a_dilation_by_the_disc_of_integer_offsets():
    from scipy.ndimage import binary_dilation

    from models.face.masks import grow_mask

    rng = np.random.default_rng(4)
    for k in range(200):
        mask = rng.random((60, 70)) > rng.choice([0.999, 0.99, 0.9])
        radius = float(rng.choice([0.0, 0.5, 1.0, 2.5, 5.0, 5.12, 7.3]))
        r = int(np.ceil(radius))
        yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
        want = binary_dilation(mask, structure=(xx * xx + yy * yy) <= radius * radius) if r > 0 else mask
        np.testing.assert_array_equal(grow_mask(mask, radius), want)
    assert not grow_mask(np.zeros((5, 5), bool), 3.0).any()


def test_polygon_mask_area_and_bad_shape():
    square = np.array([[10.0, 10.0], [30.0, 10.0], [30.0, 20.0], [10.0, 20.0]])
    assert polygon_mask(square, (40, 40)).sum() == pytest.approx(200, abs=31)
    with pytest.raises(ValueError, match="mask shape"):
        polygon_mask(square, (0, 40))


def test_landmarks_shape_is_checked():
    with pytest.raises(ValueError, match="468"):
        FaceLandmarks(points_px=np.zeros((10, 3), np.float32), presence=1.0, roi=RotatedRect(0, 0, 1, 1))


def test_person_matte_covers_the_astronaut_not_the_sky(astronaut):
    matte = SelfieSegmenter().person_matte(astronaut)
    assert matte.shape == astronaut.shape[:2] and matte.dtype == np.float32
    assert 0.0 <= matte.min() and matte.max() <= 1.0
    assert matte[100:180, 190:260].mean() > 0.9  # face
    assert matte[:60, :60].mean() < 0.1 and matte[:60, -60:].mean() < 0.1  # background corners
