"""Single-face video tracker: detect once, then follow the face by re-cropping around the last landmarks.

Running the detector only on the first frame (or after the face is lost) is what makes MediaPipe's face mesh
fast: the landmark network's own face-presence score says when the crop no longer holds a face. Landmarks are
smoothed with a One-Euro filter whose speed term is measured in inter-ocular distances, so one parameter set
works for any face size; head pose is a similarity fit of the canonical face's rigid vertices.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from models.face.resources import CanonicalFace, load_canonical_face
from models.face.detector import FaceDetection, FaceDetector
from models.face.measures import inter_ocular_px
from models.face.mesh import FaceLandmarks, FaceMesh, roi_from_detection, roi_from_landmarks
from models.face.one_euro import OneEuroFilter, OneEuroParams
from models.face.pose import HeadPose, estimate_head_pose


@dataclass(frozen=True)
class TrackerParams:
    """presence_threshold: below this face-presence probability the track counts as lost.
    fps: used for timestamps when process() is not given one.
    smoothing: One-Euro parameters; beta is per inter-ocular distance per second. min_cutoff 1 Hz removes
    sub-pixel jitter on a still face; beta 20 opens the filter to ~20 Hz at one inter-ocular per second, fast
    enough that lip motion is not visibly delayed at 30 fps.
    """

    presence_threshold: float = 0.5
    fps: float = 30.0
    smoothing: OneEuroParams = field(default_factory=OneEuroParams)

    def __post_init__(self) -> None:
        if not 0.0 < self.presence_threshold < 1.0:
            raise ValueError(f"presence_threshold must be in (0, 1), got {self.presence_threshold}")
        if not self.fps > 0:
            raise ValueError(f"fps must be positive, got {self.fps}")


@dataclass(frozen=True)
class TrackedFace:
    """Result for one frame. When found is False the other face fields are None.

    landmarks: One-Euro-smoothed; raw_landmarks: the network's output this frame.
    detected: the detector ran this frame (start of a track, or the previous track was lost).
    """

    found: bool
    frame_index: int
    timestamp_s: float
    landmarks: FaceLandmarks | None = None
    raw_landmarks: FaceLandmarks | None = None
    pose: HeadPose | None = None
    detected: bool = False
    detection: FaceDetection | None = None


class FaceTracker:
    def __init__(
        self,
        detector: FaceDetector | None = None,
        mesh: FaceMesh | None = None,
        params: TrackerParams | None = None,
        reference: CanonicalFace | None = None,
    ) -> None:
        self.params = params or TrackerParams()
        self._detector = detector or FaceDetector()
        self._mesh = mesh or FaceMesh()
        self._reference = reference or load_canonical_face()
        self._filter = OneEuroFilter(self.params.smoothing)
        self._previous: FaceLandmarks | None = None
        self._frame_index = 0

    def reset(self) -> None:
        self._previous = None
        self._filter.reset()
        self._frame_index = 0

    def process(self, frame: np.ndarray, timestamp_s: float | None = None) -> TrackedFace:
        """Track the face in the next frame (HxWx3 uint8 RGB)."""
        index = self._frame_index
        self._frame_index += 1
        t_s = index / self.params.fps if timestamp_s is None else float(timestamp_s)
        raw = None
        if self._previous is not None:
            raw = self._landmarks_if_present(frame, roi_from_landmarks(self._previous.points_px))
        detection = None
        detected = raw is None
        if detected:
            raw, detection = self._acquire(frame)
            self._filter.reset()  # a new track must not be blended with the old one
        if raw is None:
            self._previous = None
            return TrackedFace(found=False, frame_index=index, timestamp_s=t_s, detected=True)
        self._previous = raw
        smoothed = raw.with_points(self._filter(raw.points_px, t_s, speed_unit=max(inter_ocular_px(raw), 1.0)))
        pose = estimate_head_pose(smoothed.points_px, self._reference.vertices, self._reference.rigid_mask)
        return TrackedFace(
            found=True,
            frame_index=index,
            timestamp_s=t_s,
            landmarks=smoothed,
            raw_landmarks=raw,
            pose=pose,
            detected=detected,
            detection=detection,
        )

    def _acquire(self, frame: np.ndarray) -> tuple[FaceLandmarks | None, FaceDetection | None]:
        """Detect, take the most confident face, and refine its crop once from its own landmarks."""
        detections = self._detector.detect(frame)
        if not detections:
            return None, None
        best = detections[0]
        first = self._landmarks_if_present(frame, roi_from_detection(best))
        if first is None:
            return None, best
        # The detector's box is a coarser crop than the one tracking will use; one refinement pass makes the
        # first frame consistent with the following ones.
        refined = self._landmarks_if_present(frame, roi_from_landmarks(first.points_px))
        return (refined or first), best

    def _landmarks_if_present(self, frame: np.ndarray, roi) -> FaceLandmarks | None:
        lm = self._mesh.landmarks(frame, roi)
        return lm if lm.presence >= self.params.presence_threshold else None
