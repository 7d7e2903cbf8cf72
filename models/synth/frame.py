"""One frame's geometry pass: pose + visemes + blink -> ground-truth maps (the G-buffer) and projected landmarks.

Geometry, rasterisation and texture lookup happen once per frame; every lighting then re-shades the same G-buffer
(models/synth/shade.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.raster import interpolate, rasterize, vertex_normals
from models.synth.head import HeadModel, _blend_oval
from models.synth.mouth import mouth_layer
from models.synth.rig import deform

BACKDROP_NORMAL = np.array([0.0, 0.0, 1.0], np.float32)
MIN_MATTE = 0.03


@dataclass(frozen=True)
class FramePose:
    """Head rotation (3x3, camera space), image-plane translation (x right, y up, px), visemes (4,), blink 0..1."""

    rotation: np.ndarray
    translation_px: np.ndarray
    visemes: np.ndarray
    blink: float


@dataclass(frozen=True)
class GBuffer:
    """Ground truth of one frame, (H, W, ...) float32.

    Where matte > 0 the maps describe the person layer (face, body proxy, mouth interior); where matte == 0 they
    describe the backdrop. The frame is composite(render(maps), matte, render(backdrop)) and the backdrop is static.
    """

    albedo: np.ndarray  # linear RGB
    normals: np.ndarray  # unit, camera space
    spec_weight: np.ndarray  # (H, W) C_spec
    matte: np.ndarray  # (H, W) person coverage 0..1
    mouth_mask: np.ndarray  # (H, W) bool: mouth interior visible
    landmarks_px: np.ndarray  # (468, 3) projected face vertices: x, y (image px, y down), z toward viewer


def _bilinear(texture: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Sample texture (H, W, C) at pixel coordinates uv (N, 2) = (column, row) measured from the top-left corner."""
    h, w = texture.shape[:2]
    x = np.clip(uv[:, 0] - 0.5, 0, w - 1)
    y = np.clip(uv[:, 1] - 0.5, 0, h - 1)
    x0 = np.minimum(x.astype(np.int64), w - 2)
    y0 = np.minimum(y.astype(np.int64), h - 2)
    fx = (x - x0)[:, None].astype(np.float32)
    fy = (y - y0)[:, None].astype(np.float32)
    top = texture[y0, x0] * (1 - fx) + texture[y0, x0 + 1] * fx
    bottom = texture[y0 + 1, x0] * (1 - fx) + texture[y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _rigid(points: np.ndarray, rotation: np.ndarray, pivot: np.ndarray, shift: np.ndarray) -> np.ndarray:
    return (points - pivot) @ rotation.T + pivot + shift


def render_gbuffer(model: HeadModel, pose: FramePose) -> GBuffer:
    size = model.size_px
    shift = np.array([pose.translation_px[0], pose.translation_px[1], 0.0])
    face_local = deform(model.rig, pose.visemes, pose.blink)
    face_v = _rigid(face_local, pose.rotation, model.head_pivot, shift)
    proxy = model.proxy
    moved = _rigid(proxy.vertices, pose.rotation, model.head_pivot, shift)
    w = proxy.head_weight[:, None]
    proxy_v = w * moved + (1 - w) * proxy.vertices

    face_n = vertex_normals(face_v, model.face_triangles)
    proxy_n = vertex_normals(proxy_v, proxy.triangles)
    face_n = _blend_oval(face_n, model.oval, model.oval_proxy_normals @ pose.rotation.T)

    # The face mesh is drawn over the proxy whatever their depths: the proxy is a guess at the shape around the face
    # and must never cut into it (e.g. the chin swinging back as the jaw opens).
    face_r = rasterize(np.c_[face_v[:, 0], -face_v[:, 1], face_v[:, 2]], model.face_triangles, size, size)
    body_r = rasterize(np.c_[proxy_v[:, 0], -proxy_v[:, 1], proxy_v[:, 2]], proxy.triangles, size, size)
    face_uv = model.rig.neutral[:, :2] * [1, -1]
    face_attrs = interpolate(np.c_[face_uv, face_n, model.face_spec_weight], face_r)
    body_attrs = interpolate(np.c_[proxy.uv_px, proxy_n, model.proxy_spec_weight], body_r)
    on_face = face_r.coverage
    attrs = np.where(on_face[..., None], face_attrs, body_attrs)
    covered = (on_face | body_r.coverage).ravel()

    flat = attrs.reshape(-1, attrs.shape[-1])[covered]
    sampled = _bilinear(model.texture, flat[:, :2])

    albedo = model.backdrop_albedo.copy().reshape(-1, 3)
    normals = np.tile(BACKDROP_NORMAL, (size * size, 1))
    spec_w = np.zeros(size * size, np.float32)
    matte = np.zeros(size * size, np.float32)
    n = flat[:, 2:5]
    albedo[covered] = sampled[:, :3]
    normals[covered] = n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-6)
    spec_w[covered] = flat[:, 5]
    # A matte of a few percent is segmentation noise, not hair: drop it so the backdrop stays clean.
    body_alpha = np.where(sampled[:, 3] < MIN_MATTE, 0.0, sampled[:, 3])
    matte[covered] = np.where(on_face.ravel()[covered], 1.0, body_alpha)

    # Mouth interior: visible where the inner-lip opening is not covered by the face mesh itself.
    rig = model.rig
    img_xy = np.c_[face_v[:, 0], -face_v[:, 1]]
    mouth = mouth_layer(img_xy[rig.lips.upper], img_xy[rig.lips.lower], pose.rotation[:, 2], size, size)
    mouth_mask = mouth.inside & ~on_face
    m = mouth_mask.ravel()
    albedo[m] = mouth.albedo.reshape(-1, 3)[m]
    normals[m] = mouth.normals.reshape(-1, 3)[m]
    spec_w[m] = mouth.spec_weight.ravel()[m]
    matte[m] = 1.0

    # Below the matte threshold nothing of the person shows: keep the backdrop's maps there (see GBuffer).
    empty = matte <= 0.0
    albedo[empty] = model.backdrop_albedo.reshape(-1, 3)[empty]
    normals[empty] = BACKDROP_NORMAL
    spec_w[empty] = 0.0

    landmarks = np.c_[face_v[:, 0], -face_v[:, 1], face_v[:, 2]].astype(np.float32)
    shape = (size, size)
    return GBuffer(
        albedo=albedo.reshape(*shape, 3).astype(np.float32),
        normals=normals.reshape(*shape, 3).astype(np.float32),
        spec_weight=spec_w.reshape(shape),
        matte=matte.reshape(shape),
        mouth_mask=mouth_mask,
        landmarks_px=landmarks,
    )
