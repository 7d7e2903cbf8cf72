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

    opening: float  # mouth opening (tracker units, scale-free); NaN when no face was found
    landmarks_px: np.ndarray | None  # (K, 2) face landmarks in image pixels, None when no face was found


class MouthTracker(Protocol):
    """Measures the mouth on consecutive frames of one video (trackers may use the previous frame)."""

    def measure(self, frame: np.ndarray) -> MouthMeasurement: ...


def face_mesh_mouth_tracker() -> MouthTracker:
    """The product tracker: face mesh from models.face; ValueError when that module is not usable here."""
    raise ValueError("lip sync needs the face tracker from models.face, which is not available yet")


def mouth_landmark_indices() -> np.ndarray | None:
    """Indices of the mouth points in the face mesh layout, for mouth LMD; None scores all points."""
    return None
