"""Per-frame mouth measurements for lip sync and landmark distance, from the face tracker in models.face.

Metrics code depends only on the small `MouthTracker` protocol, so lip-sync scoring can be tested with any
measurement source (a synthetic clip's known mouth, for one) and uses the real face mesh in the product.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class MouthMeasurement:
    """What the tracker saw on one frame."""

    opening: float  # inner-lip gap / inter-ocular distance (scale-free); NaN when no face was found
    landmarks_px: np.ndarray | None  # (K, 2) face landmarks in image pixels, None when no face was found


class MouthTracker(Protocol):
    """Measures the mouth on consecutive frames of one video (trackers may use the previous frame)."""

    def measure(self, frame: np.ndarray, pts_s: float) -> MouthMeasurement: ...


class FaceMeshMouthTracker:
    """Mouth opening and landmarks from models.face's FaceTracker (MediaPipe face mesh, 468 points).

    Uses the tracker's raw per-frame landmarks, not its One-Euro-smoothed ones: smoothing delays fast lip motion,
    and a delay in the mouth series would read as an audio-video offset.
    """

    def __init__(self) -> None:
        from models.face.measures import mouth_opening
        from models.face.tracker import FaceTracker

        self._tracker = FaceTracker()
        self._mouth_opening = mouth_opening

    def measure(self, frame: np.ndarray, pts_s: float) -> MouthMeasurement:
        tracked = self._tracker.process(frame, timestamp_s=pts_s)
        landmarks = tracked.raw_landmarks if tracked.found else None
        if landmarks is None:
            return MouthMeasurement(opening=float("nan"), landmarks_px=None)
        return MouthMeasurement(
            opening=float(self._mouth_opening(landmarks)), landmarks_px=np.asarray(landmarks.xy_px, np.float64)
        )


def face_mesh_mouth_tracker() -> MouthTracker:
    """The product tracker; ValueError (one clear line for the CLI) when the face models cannot load here."""
    try:
        return FaceMeshMouthTracker()
    except (ImportError, OSError, RuntimeError) as e:
        raise ValueError(f"lip sync needs the face tracker from models.face, which failed to load: {e}") from e


def mouth_landmark_indices() -> np.ndarray:
    """Indices of the lip contours (outer and inner) in the 468-point mesh: the points mouth LMD scores."""
    from models.face.assets import load_topology

    topology = load_topology()
    return np.unique(np.concatenate([topology.lips_outer, topology.lips_inner]))
