"""BlazeFace short-range face detector (MediaPipe face_detection_short_range.tflite) with our own pre/post-processing.

Pipeline: letterbox the frame into a 128x128 square (zero padding, aspect kept), scale to [-1, 1], run the SSD
network, decode its 896 anchors into boxes + 6 keypoints, keep sigmoid scores above a threshold and merge
overlapping boxes with weighted non-maximum suppression (score-weighted average, as MediaPipe does, which is
steadier frame to frame than picking the single best box).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.face.resources import DETECTOR_MODEL
from models.face.crop import RotatedRect, sample_crop
from models.face.tflite_model import TfliteModel

INPUT_SIZE_PX = 128
# SSD anchor layout of the short-range model: feature-map strides per output layer, two anchors per layer
# (aspect 1 plus the interpolated scale); with a fixed anchor size only the anchor centres matter.
ANCHOR_STRIDES_PX = (8, 16, 16, 16)
ANCHORS_PER_LAYER = 2
NUM_KEYPOINTS = 6
# Keypoint order of the model's output.
KEYPOINT_NAMES = ("right_eye", "left_eye", "nose_tip", "mouth_center", "right_ear_tragion", "left_ear_tragion")


@dataclass(frozen=True)
class FaceDetection:
    """One detected face in image pixels (x right, y down).

    box_px = (x_min, y_min, x_max, y_max); keypoints_px is (6, 2) in KEYPOINT_NAMES order (subject's left/right).
    """

    box_px: tuple[float, float, float, float]
    score: float
    keypoints_px: np.ndarray

    @property
    def width_px(self) -> float:
        return self.box_px[2] - self.box_px[0]

    @property
    def height_px(self) -> float:
        return self.box_px[3] - self.box_px[1]

    def keypoint(self, name: str) -> np.ndarray:
        return self.keypoints_px[KEYPOINT_NAMES.index(name)]


def generate_anchor_centers() -> np.ndarray:
    """(896, 2) anchor centres in normalised [0, 1] input coordinates, in the network's output order."""
    centers = []
    layer = 0
    while layer < len(ANCHOR_STRIDES_PX):
        stride = ANCHOR_STRIDES_PX[layer]
        # Consecutive layers with the same stride share one feature map; their anchors interleave per cell.
        same = 0
        while layer + same < len(ANCHOR_STRIDES_PX) and ANCHOR_STRIDES_PX[layer + same] == stride:
            same += 1
        n = -(-INPUT_SIZE_PX // stride)
        ys, xs = np.meshgrid((np.arange(n) + 0.5) / n, (np.arange(n) + 0.5) / n, indexing="ij")
        cell = np.stack([xs.ravel(), ys.ravel()], axis=1)
        centers.append(np.repeat(cell, same * ANCHORS_PER_LAYER, axis=0))
        layer += same
    return np.concatenate(centers).astype(np.float32)


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    ix0 = np.maximum(box[0], boxes[:, 0])
    iy0 = np.maximum(box[1], boxes[:, 1])
    ix1 = np.minimum(box[2], boxes[:, 2])
    iy1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-12)


def weighted_nms(
    boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, iou_threshold: float
) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """Merge overlapping candidates: each cluster around the best remaining box becomes its score-weighted mean."""
    order = np.argsort(-scores)
    boxes, keypoints, scores = boxes[order], keypoints[order], scores[order]
    remaining = np.ones(len(scores), bool)
    merged = []
    for i in range(len(scores)):
        if not remaining[i]:
            continue
        cluster = remaining & (_iou(boxes[i], boxes) > iou_threshold)
        cluster[i] = True
        w = scores[cluster] / scores[cluster].sum()
        merged.append(
            (
                (boxes[cluster] * w[:, None]).sum(0),
                (keypoints[cluster] * w[:, None, None]).sum(0),
                float(scores[i]),
            )
        )
        remaining &= ~cluster
    return merged


class FaceDetector:
    """Finds faces that fill roughly 5-60% of the frame's long side (the short-range model's working range)."""

    def __init__(
        self,
        score_threshold: float = 0.5,
        iou_threshold: float = 0.3,
        model_path: Path = DETECTOR_MODEL,
        num_threads: int = 1,
    ) -> None:
        if not 0.0 < score_threshold < 1.0:
            raise ValueError(f"score_threshold must be in (0, 1), got {score_threshold}")
        self.score_threshold = score_threshold
        self.iou_threshold = iou_threshold
        self._model = TfliteModel(model_path, num_threads=num_threads)
        if self._model.input_hw != (INPUT_SIZE_PX, INPUT_SIZE_PX):
            raise ValueError(f"{model_path} is not a 128x128 short-range BlazeFace model")
        self._anchors = generate_anchor_centers()

    def detect(self, image: np.ndarray) -> list[FaceDetection]:
        """Faces in an HxWx3 uint8 RGB image, best score first."""
        _check_rgb(image)
        h, w = image.shape[:2]
        # Letterbox: a square of side max(h, w) centred on the image; the model sees zero padding outside.
        side = float(max(h, w))
        rect = RotatedRect(w / 2.0, h / 2.0, side, side)
        crop = sample_crop(image, rect, INPUT_SIZE_PX, INPUT_SIZE_PX)
        out = self._model((crop * (2.0 / 255.0) - 1.0)[None])
        return self.decode(out["regressors"][0], out["classificators"][0, :, 0], rect)

    def decode(self, regressors: np.ndarray, logits: np.ndarray, rect: RotatedRect) -> list[FaceDetection]:
        """Raw network outputs -> detections in the image pixels of the letterbox `rect` (axis-aligned)."""
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits, -80.0, 80.0)))
        keep = np.flatnonzero(scores >= self.score_threshold)
        if keep.size == 0:
            return []
        reg = regressors[keep] / INPUT_SIZE_PX
        anchors = self._anchors[keep]
        cx = reg[:, 0] + anchors[:, 0]
        cy = reg[:, 1] + anchors[:, 1]
        half_w, half_h = reg[:, 2] / 2, reg[:, 3] / 2
        boxes = np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=1)
        kps = reg[:, 4 : 4 + 2 * NUM_KEYPOINTS].reshape(-1, NUM_KEYPOINTS, 2) + anchors[:, None, :]
        # Normalised letterbox coordinates -> image pixels (the letterbox is axis-aligned).
        origin = np.array([rect.center_x_px - rect.width_px / 2, rect.center_y_px - rect.height_px / 2])
        side = rect.width_px
        detections = []
        for box, kp, score in weighted_nms(boxes, kps, scores[keep], self.iou_threshold):
            box_px = box.reshape(2, 2) * side + origin
            detections.append(
                FaceDetection(
                    box_px=(float(box_px[0, 0]), float(box_px[0, 1]), float(box_px[1, 0]), float(box_px[1, 1])),
                    score=score,
                    keypoints_px=(kp * side + origin).astype(np.float32),
                )
            )
        return detections


def _check_rgb(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 RGB image, got {getattr(image, 'shape', type(image))}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 RGB image, got dtype {image.dtype}")
    if image.shape[0] < 8 or image.shape[1] < 8:
        raise ValueError(f"image too small for face detection: {image.shape[1]}x{image.shape[0]} px")
