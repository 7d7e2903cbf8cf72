"""Landmark distance (LMD): how far predicted mouth landmarks are from ground-truth ones, in pixels.

Following the talking-head literature (M-LMD), the score is the Euclidean distance between corresponding points,
averaged over points and frames. Both sets must come from the same landmark layout (same indices).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def landmark_distance_px(
    pred_landmarks: np.ndarray, gt_landmarks: np.ndarray, point_indices: np.ndarray | None = None
) -> float:
    """Mean Euclidean distance (px) between (T, K, 2) landmark tracks, over frames where both are finite.

    point_indices selects the points to score (e.g. the mouth's); None scores all K.
    """
    pred = np.asarray(pred_landmarks, dtype=np.float64)
    gt = np.asarray(gt_landmarks, dtype=np.float64)
    if pred.ndim != 3 or pred.shape[2] < 2:
        raise ValueError(f"landmarks must be (frames, points, 2), got {pred.shape}")
    if pred.shape != gt.shape:
        raise ValueError(f"predicted landmarks are {pred.shape} but ground truth is {gt.shape}; they must match")
    if point_indices is not None:
        pred, gt = pred[:, point_indices], gt[:, point_indices]
    dist = np.linalg.norm(pred[..., :2] - gt[..., :2], axis=-1)  # (T, K)
    frame_ok = np.isfinite(dist).all(axis=1)
    if not frame_ok.any():
        raise ValueError("no frame has landmarks in both prediction and ground truth")
    return float(dist[frame_ok].mean())


def load_landmarks_npz(path: str | os.PathLike) -> np.ndarray:
    """(T, K, 2) landmarks from an .npz (the array named 'landmarks', or its only array) or an .npy."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such landmark file: '{path}'")
    try:
        data = np.load(path)
    except (OSError, EOFError, ValueError) as e:  # what np.load raises for content that is not .npz/.npy
        raise ValueError(f"cannot read landmarks '{path}': {e}") from e
    if isinstance(data, np.ndarray):  # a plain .npy
        landmarks = data
    else:
        with data:
            if "landmarks" in data.files:
                landmarks = data["landmarks"]
            elif len(data.files) == 1:
                landmarks = data[data.files[0]]
            else:
                raise ValueError(f"'{path}' holds {data.files}; name the landmark array 'landmarks'")
    if landmarks.ndim != 3 or landmarks.shape[2] < 2:
        raise ValueError(f"landmarks in '{path}' are {landmarks.shape}; expected (frames, points, 2)")
    return landmarks[..., :2].astype(np.float64)
