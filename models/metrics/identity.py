"""Does a picture still show the same person? Face embeddings (dlib's face-recognition ResNet, models.face.identity)
of images whose 468-point mesh is known, and the distance between two sets of them; dlib's same-person threshold
is SAME_PERSON_DISTANCE (0.6)."""

from __future__ import annotations

import numpy as np
import torch

from models.face.identity import DlibFaceResNet, chip_affine_from_mesh, sample_chips


def face_embeddings(images_u8: np.ndarray, landmarks_px: np.ndarray, net: DlibFaceResNet | None = None,
                    batch: int = 16) -> np.ndarray:
    """(N, H, W, 3) uint8 sRGB images and their meshes (N, 468, 2+) in the same pixels -> (N, 128) embeddings."""
    images_u8 = np.asarray(images_u8)
    if images_u8.ndim != 4 or images_u8.shape[-1] != 3 or images_u8.dtype != np.uint8:
        raise ValueError(f"face_embeddings needs (N, H, W, 3) uint8 images, got {images_u8.shape} {images_u8.dtype}")
    if len(landmarks_px) != len(images_u8):
        raise ValueError(f"{len(images_u8)} images but {len(landmarks_px)} meshes")
    net = net or DlibFaceResNet.load()
    out = []
    with torch.no_grad():
        for s in range(0, len(images_u8), batch):
            img = torch.from_numpy(images_u8[s:s + batch]).permute(0, 3, 1, 2).float() / 255.0
            aff = torch.from_numpy(np.stack([chip_affine_from_mesh(lm) for lm in landmarks_px[s:s + batch]])).float()
            out.append(net(sample_chips(img, aff)).numpy())
    return np.concatenate(out) if out else np.zeros((0, 128), np.float32)


def embedding_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise Euclidean distance between two (N, 128) sets of embeddings."""
    return np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64), axis=-1)
