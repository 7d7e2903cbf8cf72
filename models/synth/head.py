"""Build the animatable head from one portrait: face mesh + proxy body geometry, de-lit albedo texture, backdrop,
and the clip's own lighting (the one that reproduces the portrait).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from models.colour import luminance, srgb_to_linear
from models.face.resources import load_topology
from models.face.detector import FaceDetector
from models.face.fill import strip_triangles
from models.face.masks import face_mask, skin_mask
from models.face.measures import require_single_face
from models.face.mesh import FaceLandmarks, FaceMesh, roi_from_detection, roi_from_landmarks
from models.face.segmentation import SelfieSegmenter
from models.lighting.lighting import Lighting
from models.lighting.sh import IRRADIANCE_GAIN_PER_COEFF, sh_basis
from models.raster import interpolate, rasterize, vertex_normals
from models.synth.proxy import ProxyMesh, body_height_field, proxy_mesh
from models.synth.rig import FaceRig, build_rig

FACE_SPEC_WEIGHT = 0.25  # skin: a visible but soft sheen
BODY_SPEC_WEIGHT = 0.06  # hair and clothes: mostly matte
MIN_DELIGHT_SHADING = 0.2  # never divide the photo by less: deep shadows keep some of their darkness in the albedo
MIN_FACE_PRESENCE = 0.5


@dataclass(frozen=True)
class HeadModel:
    """Everything needed to render any frame; built once per clip."""

    size_px: int
    rig: FaceRig
    face_triangles: np.ndarray  # (F, 3) into the 468 face vertices: FaceMesh triangles + eye fills, mouth left open
    face_spec_weight: np.ndarray  # (468,)
    oval: np.ndarray  # face-oval vertex ids, whose normals blend into the proxy's
    oval_proxy_normals: np.ndarray  # (len(oval), 3) neutral proxy normals under the oval vertices
    proxy: ProxyMesh
    proxy_spec_weight: np.ndarray  # (P,)
    head_pivot: np.ndarray  # (3,) camera space, px: centre of head rotation
    texture: np.ndarray  # (H, W, 4) float32: linear albedo RGB + person matte
    backdrop_albedo: np.ndarray  # (H, W, 3) float32 linear
    clip_lighting: Lighting
    neutral_landmarks_px: np.ndarray  # (468, 3) as detected (x, y down, z toward viewer)


def fit_landmarks(portrait: np.ndarray, what: str) -> FaceLandmarks:
    """The 468-point mesh of the single face in `portrait` (uint8 RGB); ValueError when there is not exactly one."""
    detection = require_single_face(portrait, what, FaceDetector())
    mesher = FaceMesh()
    landmarks = mesher.landmarks(portrait, roi_from_detection(detection))
    # A second pass on the landmarks' own crop is tighter and aligned to the eyes: steadier vertices.
    landmarks = mesher.landmarks(portrait, roi_from_landmarks(landmarks.points_px))
    if landmarks.presence < MIN_FACE_PRESENCE:
        raise ValueError(f"face mesh not confident about the face in {what} (presence {landmarks.presence:.2f})")
    return landmarks


def backdrop(seed: int, size_px: int) -> np.ndarray:
    """A plain studio backdrop: seeded muted colour, vertical gradient, soft vignette (linear albedo)."""
    rng = np.random.default_rng([seed, 0xBAC])
    hue = rng.uniform(0, 2 * math.pi)
    base = 0.22 + 0.06 * np.cos(hue + np.array([0.0, 2.1, 4.2]))
    rows, cols = np.mgrid[0:size_px, 0:size_px] / max(size_px - 1, 1)
    gradient = 1.15 - 0.35 * rows
    vignette = 1.0 - 0.25 * ((cols - 0.5) ** 2 + (rows - 0.45) ** 2)
    return (base[None, None, :] * (gradient * vignette)[..., None]).astype(np.float32)


def _sample_nearest(image: np.ndarray, xy: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    c = np.clip(xy[:, 0].astype(int), 0, w - 1)
    r = np.clip(xy[:, 1].astype(int), 0, h - 1)
    return image[r, c]


def build_head(portrait: np.ndarray, seed: int, what: str = "portrait") -> HeadModel:
    """Head model for a square uint8 RGB `portrait` of one person."""
    size = portrait.shape[0]
    if portrait.ndim != 3 or portrait.shape[1] != size or portrait.shape[2] != 3:
        raise ValueError(f"portrait must be a square RGB image, got shape {portrait.shape}")
    landmarks = fit_landmarks(portrait, what)
    topo = load_topology()
    pts = landmarks.points_px.astype(np.float64)
    oval_xy = pts[topo.face_oval, :2]
    face_lo, face_hi = oval_xy.min(0), oval_xy.max(0)
    face_centre = (face_lo + face_hi) / 2
    face_size = face_hi - face_lo

    matte = SelfieSegmenter().person_matte(portrait).astype(np.float32)
    # The face is the person even where the segmenter is unsure (e.g. a face close to the frame edge).
    matte = np.maximum(matte, face_mask(landmarks, matte.shape).astype(np.float32))
    height = body_height_field(matte, face_centre, face_size * np.array([0.62, 0.6]))

    # Sit the face mesh on the proxy: its outline at the proxy's height there.
    oval_height = _sample_nearest(height, oval_xy)
    z_offset = float(np.median(oval_height - pts[topo.face_oval, 2]))
    face_v = np.stack([pts[:, 0], -pts[:, 1], pts[:, 2] + z_offset], 1)

    rig = build_rig(face_v, topo)
    eye_fills = [strip_triangles(eye, face_v) for eye in rig.eyes]
    face_tris = np.concatenate([topo.triangles.astype(np.int64), *eye_fills])

    step = max(2, size // 64)
    proxy = proxy_mesh(matte, height, chin_row_px=float(face_hi[1]), face_height_px=float(face_size[1]), step_px=step)
    # Keep the proxy behind the face so it never pokes through the cheeks when the head turns.
    face_raster = rasterize(np.c_[face_v[:, 0], -face_v[:, 1], face_v[:, 2]], face_tris, size, size)
    under = _sample_nearest(face_raster.depth, proxy.uv_px)
    margin = 0.12 * rig.iod_px
    pz = np.where(np.isfinite(under), np.minimum(proxy.vertices[:, 2], under - margin), proxy.vertices[:, 2])
    proxy = ProxyMesh(np.c_[proxy.vertices[:, :2], pz], proxy.triangles, proxy.uv_px, proxy.head_weight)

    proxy_n = vertex_normals(proxy.vertices, proxy.triangles)
    oval_proxy_n = _proxy_normals_at(proxy, proxy_n, oval_xy, size)
    face_spec = np.full(len(face_v), FACE_SPEC_WEIGHT, np.float32)
    face_spec[topo.face_oval] = BODY_SPEC_WEIGHT
    pivot = np.array([face_centre[0], -face_centre[1], float(face_v[topo.face_oval, 2].mean()) - 0.3 * rig.iod_px])

    # Neutral normals over the whole person, for de-lighting the photo.
    face_n = _blend_oval(vertex_normals(face_v, face_tris), topo.face_oval, oval_proxy_n)
    normals = _neutral_normals(face_v, face_tris, face_n, proxy, proxy_n, size)
    linear = srgb_to_linear(portrait.astype(np.float32) / 255.0)
    skin = skin_mask(landmarks, (size, size)) & (np.linalg.norm(normals, axis=-1) > 0.5)
    albedo, lighting = delight(linear, normals, skin)

    # Soft matte edges blend the texture's colour over the backdrop: give the pixels just outside the person the
    # colour of the nearest person pixel, not the photo's own background.
    outside = matte < 0.5
    if outside.any():
        _, (near_r, near_c) = ndimage.distance_transform_edt(outside, return_indices=True)
        albedo = albedo[near_r, near_c]
    texture = np.concatenate([albedo, matte[..., None]], axis=-1).astype(np.float32)
    return HeadModel(
        size_px=size,
        rig=rig,
        face_triangles=face_tris,
        face_spec_weight=face_spec,
        oval=topo.face_oval.astype(np.int64),
        oval_proxy_normals=oval_proxy_n,
        proxy=proxy,
        proxy_spec_weight=np.full(len(proxy.vertices), BODY_SPEC_WEIGHT, np.float32),
        head_pivot=pivot,
        texture=texture,
        backdrop_albedo=backdrop(seed, size),
        clip_lighting=lighting,
        neutral_landmarks_px=landmarks.points_px.copy(),
    )


def _blend_oval(face_normals: np.ndarray, oval: np.ndarray, proxy_normals: np.ndarray) -> np.ndarray:
    """Face normals with the outline's averaged with the proxy's, so shading has no seam where the two meet."""
    out = face_normals.astype(np.float64).copy()
    mixed = out[oval] + proxy_normals
    out[oval] = mixed / np.maximum(np.linalg.norm(mixed, axis=1, keepdims=True), 1e-9)
    return out.astype(np.float32)


def _proxy_normals_at(proxy: ProxyMesh, proxy_n: np.ndarray, xy: np.ndarray, size: int) -> np.ndarray:
    r = rasterize(np.c_[proxy.vertices[:, 0], -proxy.vertices[:, 1], proxy.vertices[:, 2]], proxy.triangles, size, size)
    n_map = interpolate(proxy_n, r)
    n = _sample_nearest(n_map, xy).astype(np.float64)
    n[np.linalg.norm(n, axis=1) < 0.5] = (0.0, 0.0, 1.0)
    return n / np.linalg.norm(n, axis=1, keepdims=True)


def _neutral_normals(face_v, face_tris, face_n, proxy: ProxyMesh, proxy_n, size: int) -> np.ndarray:
    verts = np.vstack([face_v, proxy.vertices])
    tris = np.vstack([face_tris, proxy.triangles + len(face_v)])
    r = rasterize(np.c_[verts[:, 0], -verts[:, 1], verts[:, 2]], tris, size, size)
    n = interpolate(np.vstack([face_n, proxy_n]), r)
    return n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-6)


def delight(linear: np.ndarray, normals: np.ndarray, skin: np.ndarray) -> tuple[np.ndarray, Lighting]:
    """Split the photo into albedo and a grey order-2 SH lighting, fitted on skin (roughly one albedo).

    Fit luminance Y ~ basis(n) . x on skin; the lighting's shading is k * basis . x with k putting the brightest-lit
    skin (90th percentile) at shading 1, and albedo = photo / max(shading, MIN_DELIGHT_SHADING). That albedo, rendered
    under that lighting, gives the photo back wherever shading was not clamped.
    """
    if skin.sum() < 50:
        raise ValueError("face too small to estimate its lighting (fewer than 50 skin pixels); use a larger portrait")
    basis = sh_basis(normals[skin]).astype(np.float64)
    y = luminance(linear[skin]).astype(np.float64)
    # A small ridge on band 2 keeps the fit from explaining albedo detail (beard, make-up) as lighting.
    ridge = np.diag([0, 0, 0, 0, 1, 1, 1, 1, 1]) * 0.02 * len(y) * float(np.mean(basis[:, 0] ** 2))
    x = np.linalg.solve(basis.T @ basis + ridge, basis.T @ y)
    fitted = basis @ x
    if np.percentile(fitted, 90) <= 1e-6:
        raise ValueError("portrait face is too dark to estimate its lighting")
    k = 1.0 / np.percentile(fitted, 90)
    # Shading S = E / pi = sum_lm A_l L_lm Y_lm / pi = k * basis . x  =>  L_lm = pi * k * x_lm / A_l.
    radiance = math.pi * k * x / np.asarray(IRRADIANCE_GAIN_PER_COEFF)
    sh = np.repeat(radiance[:, None], 3, axis=1)

    person = np.linalg.norm(normals, axis=-1) > 0.5
    shading_map = np.ones(linear.shape[:2])
    shading_map[person] = k * (sh_basis(normals[person]).astype(np.float64) @ x)
    # Outside the geometry (background) nothing is rendered from the texture; divide by the mean so edges blend.
    shading_map[~person] = float(np.mean(shading_map[person]))
    albedo = np.clip(linear / np.maximum(shading_map, MIN_DELIGHT_SHADING)[..., None], 0.0, 1.0)
    # A soft key light from where the fitted light comes from, for a bit of specular in the clip lighting.
    direction = np.array([x[3], x[1], x[2]])
    norm = float(np.linalg.norm(direction))
    direction = direction / norm if norm > 1e-9 else np.array([0.0, 0.0, 1.0])
    lighting = Lighting(sh, direction[None, :], np.full((1, 3), 0.35), name="portrait")
    return albedo.astype(np.float32), lighting
