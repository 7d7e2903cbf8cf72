"""Head pose as a similarity transform from a reference mesh to the observed landmarks (Umeyama 1991).

Frames: the reference mesh is in the canonical face frame (x toward the subject's left, y up, z toward the
viewer); observed landmarks are image pixels (x right, y down) with z toward the viewer, which we flip to
(x, -y, z) so both frames are right-handed and the fitted rotation is a proper rotation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

_Y_DOWN = np.array([1.0, -1.0, 1.0])


@dataclass(frozen=True)
class SimilarityFit:
    """dst ~= scale * rotation @ src + translation, with the RMS residual in dst units."""

    rotation: np.ndarray
    scale: float
    translation: np.ndarray
    rms_error: float


def fit_similarity(
    src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None, with_scale: bool = True
) -> SimilarityFit:
    """Least-squares rotation (+ scale) + translation taking (N, 3) `src` onto `dst`; never a reflection."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 3 or src.shape[0] < 3:
        raise ValueError(f"fit_similarity needs two (N>=3, 3) arrays of equal shape, got {src.shape}, {dst.shape}")
    w = np.ones(len(src)) if weights is None else np.asarray(weights, np.float64)
    if w.shape != (len(src),) or (w < 0).any() or w.sum() <= 0:
        raise ValueError("fit_similarity weights must be (N,) non-negative with a positive sum")
    w = w / w.sum()
    mu_s, mu_d = w @ src, w @ dst
    s_c, d_c = src - mu_s, dst - mu_d
    cov = (d_c * w[:, None]).T @ s_c
    u, sig, vt = np.linalg.svd(cov)
    fix = np.diag([1.0, 1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    rot = u @ fix @ vt
    var_s = float(w @ (s_c**2).sum(1))
    scale = float(np.trace(np.diag(sig) @ fix) / var_s) if with_scale else 1.0
    trans = mu_d - scale * rot @ mu_s
    resid = dst - (scale * src @ rot.T + trans)
    rms = float(np.sqrt(w @ (resid**2).sum(1)))
    return SimilarityFit(rotation=rot, scale=scale, translation=trans, rms_error=rms)


@dataclass(frozen=True)
class HeadPose:
    """Pose of the head relative to a reference mesh.

    rotation: 3x3, reference frame -> camera frame (x right, y up, z toward viewer).
    scale_px: image pixels per reference unit (for the canonical face: the inter-ocular distance in px).
    translation_px: (3,) in the camera frame, pixels: (x_px, -y_px, z_px) of the reference origin.
    rms_error_px: fit residual over the vertices used.
    """

    rotation: np.ndarray
    scale_px: float
    translation_px: np.ndarray
    rms_error_px: float

    def apply(self, reference_vertices: np.ndarray) -> np.ndarray:
        """Reference vertices -> image pixels (x right, y down, z toward viewer), i.e. FaceLandmarks layout."""
        cam = self.scale_px * np.asarray(reference_vertices) @ self.rotation.T + self.translation_px
        return (cam * _Y_DOWN).astype(np.float32)

    def yaw_pitch_roll_deg(self) -> tuple[float, float, float]:
        """Euler angles of rotation = Ry(yaw) @ Rx(pitch) @ Rz(roll), degrees.

        Positive yaw turns the face toward the image's right (subject's left), positive pitch turns the face
        down (looking down), positive roll tilts the head counter-clockwise on screen.
        """
        r = self.rotation
        pitch = math.asin(float(np.clip(-r[1, 2], -1.0, 1.0)))
        yaw = math.atan2(r[0, 2], r[2, 2])
        roll = math.atan2(r[1, 0], r[1, 1])
        return math.degrees(yaw), math.degrees(pitch), math.degrees(roll)


def estimate_head_pose(
    points_px: np.ndarray, reference_vertices: np.ndarray, vertex_mask: np.ndarray | None = None
) -> HeadPose:
    """Fit the reference mesh to (468, 3) landmarks in image pixels; `vertex_mask` selects the vertices used."""
    points_px = np.asarray(points_px, np.float64)
    reference_vertices = np.asarray(reference_vertices, np.float64)
    if points_px.shape != reference_vertices.shape:
        raise ValueError(f"landmarks {points_px.shape} and reference {reference_vertices.shape} differ in shape")
    sel = np.ones(len(points_px), bool) if vertex_mask is None else np.asarray(vertex_mask, bool)
    fit = fit_similarity(reference_vertices[sel], points_px[sel] * _Y_DOWN)
    return HeadPose(
        rotation=fit.rotation, scale_px=fit.scale, translation_px=fit.translation, rms_error_px=fit.rms_error
    )
