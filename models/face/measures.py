"""Scalar measurements on face landmarks and the "exactly one face" check used by enrollment."""

from __future__ import annotations

import numpy as np

from models.face.resources import LEFT_EYE_OUTER, RIGHT_EYE_OUTER, load_topology
from models.face.detector import FaceDetection, FaceDetector
from models.face.mesh import FaceLandmarks

# Upper/lower inner-lip vertex pairs across the mouth (right, centre, left), averaged so a lopsided mouth or one
# noisy vertex does not dominate.
INNER_LIP_PAIRS = ((82, 87), (13, 14), (312, 317))


def inter_ocular_px(landmarks: FaceLandmarks) -> float:
    """3-D distance between the outer eye corners, in px: a face-size unit that ignores yaw better than width."""
    p = landmarks.points_px
    return float(np.linalg.norm(p[LEFT_EYE_OUTER] - p[RIGHT_EYE_OUTER]))


def mouth_opening(landmarks: FaceLandmarks) -> float:
    """Inner-lip gap divided by the inter-ocular distance (0 closed, ~0.3-0.6 wide open).

    3-D distances, so the ratio barely changes with head rotation or distance to the camera.
    """
    p = landmarks.points_px
    upper = np.array([a for a, _ in INNER_LIP_PAIRS])
    lower = np.array([b for _, b in INNER_LIP_PAIRS])
    gap = float(np.linalg.norm(p[lower] - p[upper], axis=1).mean())
    return gap / max(inter_ocular_px(landmarks), 1e-6)


def mouth_box_px(landmarks: FaceLandmarks, margin: float = 0.15) -> tuple[float, float, float, float]:
    """(x_min, y_min, x_max, y_max) around the outer lip contour, grown by `margin` x its size on each side."""
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    xy = landmarks.xy_px[load_topology().lips_outer]
    lo, hi = xy.min(0), xy.max(0)
    pad = (hi - lo) * margin
    return float(lo[0] - pad[0]), float(lo[1] - pad[1]), float(hi[0] + pad[0]), float(hi[1] + pad[1])


def count_faces(image: np.ndarray, detector: FaceDetector | None = None) -> int:
    return len((detector or FaceDetector()).detect(image))


def require_single_face(image: np.ndarray, what: str = "image", detector: FaceDetector | None = None) -> FaceDetection:
    """The one face in `image`; ValueError naming `what` if there is none or more than one."""
    faces = (detector or FaceDetector()).detect(image)
    if not faces:
        raise ValueError(f"no face found in {what}")
    if len(faces) > 1:
        raise ValueError(f"found {len(faces)} faces in {what}; expected exactly one")
    return faces[0]
