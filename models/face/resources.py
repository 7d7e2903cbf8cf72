"""Where the shipped face assets live, and typed access to the mesh topology derived from MediaPipe's FaceMesh.

The files are produced by scripts/extract_mediapipe_assets.py and committed; nothing is downloaded at run time.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

ASSETS_DIR = Path(__file__).resolve().parent / "assets"
DETECTOR_MODEL = ASSETS_DIR / "face_detection_short_range.tflite"
LANDMARK_MODEL = ASSETS_DIR / "face_landmark.tflite"
SEGMENTATION_MODEL = ASSETS_DIR / "selfie_segmentation.tflite"
TOPOLOGY_FILE = ASSETS_DIR / "topology.npz"
CANONICAL_FILE = ASSETS_DIR / "canonical_face.npz"

NUM_LANDMARKS = 468

# Named landmark indices of the 468-point mesh. "Left"/"right" are the subject's, so the subject's right eye
# appears on the image's left in an unmirrored photo.
RIGHT_EYE_OUTER = 33
LEFT_EYE_OUTER = 263
NOSE_TIP = 1
UPPER_LIP_INNER = 13
LOWER_LIP_INNER = 14
MOUTH_RIGHT_CORNER = 61
MOUTH_LEFT_CORNER = 291
FOREHEAD_TOP = 10
CHIN = 152


@dataclass(frozen=True)
class MeshTopology:
    """Connectivity of the 468-vertex face mesh, plus ordered feature contours (closed polygons).

    Triangles are wound counter-clockwise seen from the front in camera space (x right, y up, z toward viewer),
    i.e. clockwise on screen in image coordinates (y down). Contours are closed loops, first vertex not repeated.
    """

    triangles: np.ndarray  # (F, 3) int32
    lips_outer: np.ndarray
    lips_inner: np.ndarray
    left_eye: np.ndarray
    right_eye: np.ndarray
    left_eyebrow: np.ndarray
    right_eyebrow: np.ndarray
    face_oval: np.ndarray
    mirror_index: np.ndarray  # (468,) vertex -> its left/right mirror partner (itself on the midline)


@dataclass(frozen=True)
class CanonicalFace:
    """A neutral, frontal, left-right symmetric reference mesh.

    Units: inter-ocular distance (outer eye corners 33-263) = 1. Frame: x right (toward the subject's left),
    y up, z toward the viewer; origin at the vertex centroid.
    """

    vertices: np.ndarray  # (468, 3) float32
    rigid_mask: np.ndarray  # (468,) bool: vertices that move little with expressions (used for pose fits)


@lru_cache(maxsize=1)
def load_topology() -> MeshTopology:
    if not TOPOLOGY_FILE.is_file():
        raise ValueError(f"mesh topology not found at {TOPOLOGY_FILE}; run scripts/extract_mediapipe_assets.py")
    with np.load(TOPOLOGY_FILE) as z:
        return MeshTopology(**{name: z[name].copy() for name in MeshTopology.__dataclass_fields__})


@lru_cache(maxsize=1)
def load_canonical_face() -> CanonicalFace:
    if not CANONICAL_FILE.is_file():
        raise ValueError(f"canonical face not found at {CANONICAL_FILE}; run scripts/extract_mediapipe_assets.py")
    with np.load(CANONICAL_FILE) as z:
        return CanonicalFace(vertices=z["vertices"].astype(np.float32), rigid_mask=z["rigid_mask"].astype(bool))
