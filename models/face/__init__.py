"""relitcam: models/face — face detection, 468-point mesh, tracking, head pose, masks and person matte.

Runs MediaPipe's shipped TFLite networks (models/face/assets, Apache-2.0) with our own pre/post-processing.
"""

from models.face.resources import CanonicalFace, MeshTopology, load_canonical_face, load_topology
from models.face.crop import RotatedRect
from models.face.detector import FaceDetection, FaceDetector
from models.face.masks import face_mask, mouth_interior_mask, mouth_mask, polygon_mask, skin_mask
from models.face.measures import count_faces, inter_ocular_px, mouth_box_px, mouth_opening, require_single_face
from models.face.mesh import FaceLandmarks, FaceMesh, roi_from_detection, roi_from_landmarks
from models.face.one_euro import OneEuroFilter, OneEuroParams
from models.face.pose import HeadPose, SimilarityFit, estimate_head_pose, fit_similarity
from models.face.segmentation import SelfieSegmenter
from models.face.tracker import FaceTracker, TrackedFace, TrackerParams

__all__ = [
    "CanonicalFace",
    "FaceDetection",
    "FaceDetector",
    "FaceLandmarks",
    "FaceMesh",
    "FaceTracker",
    "HeadPose",
    "MeshTopology",
    "OneEuroFilter",
    "OneEuroParams",
    "RotatedRect",
    "SelfieSegmenter",
    "SimilarityFit",
    "TrackedFace",
    "TrackerParams",
    "count_faces",
    "estimate_head_pose",
    "face_mask",
    "fit_similarity",
    "inter_ocular_px",
    "load_canonical_face",
    "load_topology",
    "mouth_box_px",
    "mouth_interior_mask",
    "mouth_mask",
    "mouth_opening",
    "polygon_mask",
    "require_single_face",
    "roi_from_detection",
    "roi_from_landmarks",
    "skin_mask",
]
