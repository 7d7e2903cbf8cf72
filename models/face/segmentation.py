"""Person matte from MediaPipe's selfie segmentation network (general model, 256x256 input)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models.face.resources import SEGMENTATION_MODEL
from models.face.crop import RotatedRect, resize_bilinear, sample_crop
from models.face.detector import _check_rgb
from models.face.tflite_model import TfliteModel

INPUT_SIZE_PX = 256


class SelfieSegmenter:
    """person_matte(image) -> float32 HxW in [0, 1], 1 on the person."""

    def __init__(self, model_path: Path = SEGMENTATION_MODEL, num_threads: int = 1) -> None:
        self._model = TfliteModel(model_path, num_threads=num_threads)
        if self._model.input_hw != (INPUT_SIZE_PX, INPUT_SIZE_PX):
            raise ValueError(f"{model_path} is not a 256x256 selfie segmentation model")

    def person_matte_lowres(self, image: np.ndarray) -> np.ndarray:
        """The network's own 256x256 matte (the whole frame stretched to a square, no letterbox)."""
        _check_rgb(image)
        h, w = image.shape[:2]
        crop = sample_crop(image, RotatedRect(w / 2.0, h / 2.0, float(w), float(h)), INPUT_SIZE_PX, INPUT_SIZE_PX)
        out = self._model((crop * (1.0 / 255.0))[None])
        (matte,) = out.values()
        # The graph ends in a sigmoid already; clip only guards against float round-off.
        return np.clip(matte[0, :, :, 0], 0.0, 1.0)

    def person_matte(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        return np.clip(resize_bilinear(self.person_matte_lowres(image), h, w), 0.0, 1.0)
