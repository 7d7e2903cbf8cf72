"""Face detector and crop sampling on real photographs (skimage's public-domain astronaut)."""

import numpy as np
import pytest
from skimage import data

from models.face import FaceDetector, RotatedRect, count_faces, require_single_face
from models.face.crop import crop_to_image_px, image_to_crop_px, sample_crop
from models.face.detector import generate_anchor_centers


@pytest.fixture(scope="module")
def detector():
    return FaceDetector()


@pytest.fixture(scope="module")
def astronaut():
    return data.astronaut()


def test_anchor_layout_matches_the_network_outputs():
    anchors = generate_anchor_centers()
    assert anchors.shape == (896, 2)
    # First 512: 16x16 grid, two per cell, row-major; the rest: 8x8 grid, six per cell.
    np.testing.assert_allclose(anchors[0], [1 / 32, 1 / 32])
    np.testing.assert_allclose(anchors[2], [3 / 32, 1 / 32])
    np.testing.assert_allclose(anchors[32], [1 / 32, 3 / 32])
    np.testing.assert_allclose(anchors[512:518], [[1 / 16, 1 / 16]] * 6)
    np.testing.assert_allclose(anchors[-1], [15 / 16, 15 / 16])


def test_one_face_on_the_astronaut(detector, astronaut):
    faces = detector.detect(astronaut)
    assert len(faces) == 1
    f = faces[0]
    assert f.score > 0.8
    x0, y0, x1, y1 = f.box_px
    # The face is roughly x 175-275, y 70-180 in this 512x512 photograph.
    assert 150 < x0 < 200 and 250 < x1 < 300 and 50 < y0 < 110 and 150 < y1 < 200
    right_eye, left_eye, nose, mouth = (f.keypoint(n) for n in ("right_eye", "left_eye", "nose_tip", "mouth_center"))
    assert right_eye[0] < nose[0] < left_eye[0]  # subject's right eye is on the image's left
    assert max(right_eye[1], left_eye[1]) < nose[1] < mouth[1]
    assert all(x0 <= k[0] <= x1 and y0 <= k[1] <= y1 for k in (right_eye, left_eye, nose, mouth))


def test_no_face_in_blank_or_noise(detector):
    assert detector.detect(np.zeros((480, 640, 3), np.uint8)) == []
    noise = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    assert detector.detect(noise) == []


def test_two_astronauts_side_by_side(detector, astronaut):
    # Crops around the face keep each face large enough for the short-range model at the doubled width.
    head = astronaut[0:300, 100:400]
    faces = detector.detect(np.concatenate([head, head], axis=1))
    assert len(faces) == 2
    centres = sorted((f.box_px[0] + f.box_px[2]) / 2 for f in faces)
    assert centres[0] < 300 < centres[1]
    assert abs((centres[1] - centres[0]) - 300) < 5


def test_single_face_check_names_the_problem(detector, astronaut):
    assert require_single_face(astronaut, detector=detector).score > 0.8
    with pytest.raises(ValueError, match="no face found in blank.png"):
        require_single_face(np.full((200, 200, 3), 128, np.uint8), what="blank.png", detector=detector)
    head = astronaut[0:300, 100:400]
    with pytest.raises(ValueError, match="found 2 faces in pair"):
        require_single_face(np.concatenate([head, head], axis=1), what="pair", detector=detector)
    assert count_faces(astronaut, detector) == 1


def test_bad_images_are_rejected(detector):
    with pytest.raises(ValueError, match="uint8"):
        detector.detect(np.zeros((64, 64, 3), np.float32))
    with pytest.raises(ValueError, match="HxWx3"):
        detector.detect(np.zeros((64, 64), np.uint8))


def test_crop_maps_round_trip_and_sampling_is_exact_at_unit_scale(astronaut):
    rect = RotatedRect(200.0, 150.0, 96.0, 96.0, 0.4)
    uv = np.array([[0.0, 0.0], [50.0, 20.0], [96.0, 96.0]])
    np.testing.assert_allclose(image_to_crop_px(crop_to_image_px(uv, rect, 96, 96), rect, 96, 96), uv, atol=1e-9)
    patch = astronaut[100:164, 200:264]
    same = sample_crop(astronaut, RotatedRect(232.0, 132.0, 64.0, 64.0), 64, 64)
    np.testing.assert_array_equal(same, patch.astype(np.float32))
    # Outside the image reads as zero; a 4x minification averages 4x4 blocks.
    corner = sample_crop(astronaut, RotatedRect(0.0, 0.0, 64.0, 64.0), 64, 64)
    assert corner[:32, :].max() == 0 and corner[:, :32].max() == 0
    np.testing.assert_array_equal(corner[32:, 32:], astronaut[:32, :32].astype(np.float32))
    small = sample_crop(astronaut, RotatedRect(256.0, 256.0, 512.0, 512.0), 128, 128)
    np.testing.assert_allclose(small, astronaut.reshape(128, 4, 128, 4, 3).mean(axis=(1, 3)), atol=1e-3)


def test_resize_bilinear_interpolates_between_pixel_centres():
    from models.face.crop import resize_bilinear

    up = resize_bilinear(np.array([[0.0, 1.0], [2.0, 3.0]], np.float32), 4, 4)
    np.testing.assert_allclose(up[0], [0, 0.25, 0.75, 1])
    np.testing.assert_allclose(up[:, 0], [0, 0.5, 1.5, 2])
    with pytest.raises(ValueError, match="HxW"):
        resize_bilinear(np.zeros((2, 2, 3)), 4, 4)
