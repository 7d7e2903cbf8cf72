"""Load the portrait a clip is built from and frame it as a square around the face."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from skimage import transform

from models.face.detector import FaceDetector
from models.face.measures import require_single_face


def _read_rgb8(path: Path) -> np.ndarray:
    from models.media import read_image_rgb

    if not path.is_file():
        raise FileNotFoundError(f"portrait not found: {path}")
    return read_image_rgb(path)  # ValueError naming the file for undecodable or unusual images


def square_around_face(image: np.ndarray, what: str) -> np.ndarray:
    """The largest square crop of `image` that is horizontally centred on its one face (ValueError otherwise)."""
    face = require_single_face(image, what, FaceDetector())
    h, w = image.shape[:2]
    side = min(h, w)
    cx = 0.5 * (face.box_px[0] + face.box_px[2])
    cy = 0.5 * (face.box_px[1] + face.box_px[3])
    c0 = int(np.clip(round(cx - side / 2), 0, w - side))
    # Vertically keep some head room: the face sits at about 40 % of the height.
    r0 = int(np.clip(round(cy - 0.4 * side), 0, h - side))
    return image[r0 : r0 + side, c0 : c0 + side]


def load_portrait(path: Path | None, size_px: int) -> tuple[np.ndarray, str]:
    """(uint8 (size, size, 3) portrait, its name). None loads scikit-image's astronaut (public domain)."""
    if path is None:
        from skimage import data

        image, name = data.astronaut(), "skimage.data.astronaut"
    else:
        image, name = _read_rgb8(Path(path)), str(path)
    square = square_around_face(image, f"portrait {name}")
    if square.shape[0] != size_px:
        square = transform.resize(square, (size_px, size_px), order=1, anti_aliasing=square.shape[0] > size_px)
        square = np.round(square * 255.0).astype(np.uint8)
    return np.ascontiguousarray(square), name
