"""468-point face mesh (MediaPipe face_landmark.tflite) on a rotated square crop around the face.

The crop is a square aligned with the eye line and 1.5x the face's extent (25% margin each side), which is the
framing the network was trained on. Its ROI comes either from a detection (first frame) or from the previous
frame's landmarks (tracking), see `roi_from_detection` / `roi_from_landmarks`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.face.resources import LANDMARK_MODEL, LEFT_EYE_OUTER, NUM_LANDMARKS, RIGHT_EYE_OUTER
from models.face.crop import RotatedRect, crop_to_image_px, sample_crop
from models.face.detector import FaceDetection, _check_rgb
from models.face.tflite_model import TfliteModel

INPUT_SIZE_PX = 192
ROI_SCALE = 1.5


@dataclass(frozen=True)
class FaceLandmarks:
    """468 mesh landmarks of one face.

    points_px (468, 3) float32: x, y in image pixels (x right, y down, row 0 at top); z is relative depth in the
    same pixel scale, positive toward the viewer, roughly zero at the head centre. presence is the network's
    face-presence probability for the crop; roi is the crop the landmarks were computed in.
    """

    points_px: np.ndarray
    presence: float
    roi: RotatedRect

    def __post_init__(self) -> None:
        if self.points_px.shape != (NUM_LANDMARKS, 3):
            raise ValueError(f"FaceLandmarks needs (468, 3) points, got {self.points_px.shape}")

    @property
    def xy_px(self) -> np.ndarray:
        return self.points_px[:, :2]

    def with_points(self, points_px: np.ndarray) -> "FaceLandmarks":
        return FaceLandmarks(points_px=points_px.astype(np.float32), presence=self.presence, roi=self.roi)


def eye_line_angle_rad(right_eye_xy: np.ndarray, left_eye_xy: np.ndarray) -> float:
    """Angle of the subject's right-eye -> left-eye vector in image coordinates (0 for an upright face)."""
    d = np.asarray(left_eye_xy, np.float64) - np.asarray(right_eye_xy, np.float64)
    return math.atan2(d[1], d[0])


def roi_from_detection(detection: FaceDetection, scale: float = ROI_SCALE) -> RotatedRect:
    angle = eye_line_angle_rad(detection.keypoint("right_eye"), detection.keypoint("left_eye"))
    x0, y0, x1, y1 = detection.box_px
    side = max(x1 - x0, y1 - y0) * scale
    return RotatedRect((x0 + x1) / 2, (y0 + y1) / 2, side, side, angle)


def roi_from_landmarks(points_px: np.ndarray, scale: float = ROI_SCALE) -> RotatedRect:
    """Square around the landmarks, measured in the eye-line frame so a tilted head does not inflate it."""
    xy = np.asarray(points_px, np.float64)[:, :2]
    angle = eye_line_angle_rad(xy[RIGHT_EYE_OUTER], xy[LEFT_EYE_OUTER])
    c, s = math.cos(angle), math.sin(angle)
    local = xy @ np.array([[c, -s], [s, c]])  # coordinates along the rotated axes
    lo, hi = local.min(0), local.max(0)
    mid_local = (lo + hi) / 2
    center = np.array([[c, -s], [s, c]]) @ mid_local
    side = float(max(hi - lo)) * scale
    return RotatedRect(float(center[0]), float(center[1]), side, side, angle)


class FaceMesh:
    """Runs the landmark network on one ROI."""

    def __init__(self, model_path: Path = LANDMARK_MODEL, num_threads: int = 1) -> None:
        self._model = TfliteModel(model_path, num_threads=num_threads)
        if self._model.input_hw != (INPUT_SIZE_PX, INPUT_SIZE_PX):
            raise ValueError(f"{model_path} is not a 192x192 face landmark model")

    def landmarks(self, image: np.ndarray, roi: RotatedRect) -> FaceLandmarks:
        _check_rgb(image)
        crop = sample_crop(image, roi, INPUT_SIZE_PX, INPUT_SIZE_PX)
        out = self._model((crop * (1.0 / 255.0))[None])
        raw = out["conv2d_21"].reshape(NUM_LANDMARKS, 3).astype(np.float64)
        presence = float(1.0 / (1.0 + math.exp(-float(np.clip(out["conv2d_31"].ravel()[0], -80.0, 80.0)))))
        xy = crop_to_image_px(raw[:, :2], roi, INPUT_SIZE_PX, INPUT_SIZE_PX)
        # The network's z grows away from the camera; flip it to our "toward viewer" convention.
        z = -raw[:, 2] * (roi.width_px / INPUT_SIZE_PX)
        points = np.concatenate([xy, z[:, None]], axis=1).astype(np.float32)
        return FaceLandmarks(points_px=points, presence=presence, roi=roi)
