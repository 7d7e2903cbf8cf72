"""The live avatar from an enrollment bundle: an `AvatarRenderer` (stream/avatar.py) following docs/bundle.md.

Per frame:
  mel window -> audio_to_expression -> lip coefficients
  idle frame i (loop order) with its lip-region vertices replaced by the driven shape
  -> coarse normals of the mouth box (only the triangles that can reach it), the mouth mask
  -> mouth net -> its layers blended into frame i's layers with the learned `blend`
  -> relit with the caller's Lighting (models.render's image formation; the `shading` net if the bundle has one)
  -> RenderedFrame (linear RGB + matte).

Everything that depends on neither audio nor lighting is prepared at load: the lookup tables decoding the uint8 idle
layers, the driven lip region as an affine function of the coefficients per idle frame (so driving is one small
tensordot), and the mouth-box triangle subset. The idle layers stay uint8 and are decoded per frame through the
tables (about 1 ms at 256 px): decoded float32 they would take 2.4 MB per frame, about 0.6 GB for a 10 s loop at 256 px
and 2.5 GB at 512 px, which a laptop on a call cannot spare.

Relighting runs only on pixels the matte covers; elsewhere the crop is 0 and the compositor shows the background.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.bundle import AvatarBundle, BundleError, load_bundle
from models.colour import srgb_to_linear
from models.face.masks import clear_border, grown_hulls_mask
from models.face.resources import NUM_LANDMARKS, load_canonical_face
from models.lighting.lighting import Lighting
from models.lighting.sh import (IRRADIANCE_GAIN_PER_COEFF, Y1_CONST, Y2_CROSS_CONST, Y00_CONST, Y20_CONST,
                                Y22_CONST)
from models.raster import interpolate, rasterize, vertex_normals
from models.render import specular
from models.xp import array_module, to_numpy
from stream.avatar import RenderedFrame
from stream.backend import Backend, create_backend

DEFAULT_BUNDLE = Path(__file__).resolve().parents[1] / "models" / "avatars" / "default"
LIVE_NETS = ("audio_to_expression", "mouth")
OPTIONAL_NETS = ("shading",)
ARRAYS = ("idle_albedo", "idle_normals", "idle_spec_weight", "idle_matte", "idle_landmarks", "idle_pose",
          "idle_mouth_box", "expression_mean", "expression_basis", "expression_vertices", "triangles")
INFO_KEYS = ("mouth_px", "n_lip", "shininess", "loop", "mel_past_frames", "mel_lookahead_frames")
LOOP_MODES = ("pingpong", "forward")
N_MELS = 80
# As models/enroll/prepare.py's mouth_region: the hull of the mostly-driven region vertices, grown about its centre.
MOUTH_HULL_MIN_WEIGHT = 0.5
_Y_DOWN = np.array([1.0, -1.0, 1.0])
# A pose whose canonical face lands further than this (in inter-ocular units, median over vertices) from the stored
# landmarks follows another convention; driving lips with it would put them somewhere else.
_POSE_TOLERANCE_IOD = 0.15


def loop_position(frame_index: int, n_frames: int, mode: str) -> int:
    """Idle frame shown at stream frame `frame_index`: forward 0..N-1, 0..; pingpong 0..N-1, N-2..1, 0.."""
    if frame_index < 0:
        raise ValueError(f"frame_index must be >= 0, got {frame_index}")
    if mode == "forward" or n_frames == 1:
        return frame_index % n_frames
    if mode != "pingpong":
        raise ValueError(f"idle loop mode must be one of {LOOP_MODES}, got {mode!r}")
    period = 2 * n_frames - 2
    k = frame_index % period
    return k if k < n_frames else period - k


def sh_shading(normals, sh_coeffs):
    """Diffuse shading max(E(N), 0) / pi (..., 3), the same function as models.render.shading, computed faster.

    models.render.shading builds the (P, 9) SH basis and contracts it with a (P, 9) @ (9, 3) matmul; OpenBLAS then
    wakes its thread pool, which on a loaded 2-core machine measured 32 ms instead of 2 ms for 65k pixels. Here the
    SH constants, irradiance gains and 1/pi are folded into 9 numbers per channel, and each channel is a sum of
    contiguous monomial planes, on the calling thread.
    """
    xp = array_module(normals)
    k = (np.asarray(sh_coeffs, np.float64) * np.asarray(IRRADIANCE_GAIN_PER_COEFF)[:, None] / math.pi).astype(np.float32)
    n = xp.asarray(normals, dtype=xp.float32)
    x, y, z = (xp.ascontiguousarray(n[..., j]) for j in range(3))
    # The basis of models/lighting/sh.py, term by term (constants folded into k below).
    planes = (y, z, x, x * y, y * z, 3.0 * z * z - 1.0, x * z, x * x - y * y)
    consts = (Y1_CONST, Y1_CONST, Y1_CONST, Y2_CROSS_CONST, Y2_CROSS_CONST, Y20_CONST, Y2_CROSS_CONST, Y22_CONST)
    out = xp.empty(n.shape, dtype=xp.float32)
    for c in range(3):
        e = xp.full(x.shape, Y00_CONST * k[0, c], dtype=xp.float32)
        for j, (plane, const) in enumerate(zip(planes, consts)):
            e += plane * np.float32(const * k[j + 1, c])
        out[..., c] = xp.maximum(e, 0.0)
    return out


def relight_pixels(albedo, normals, spec_weight, lighting: Lighting, shininess: float, shading=None):
    """models.render's image formation A * (S_shad + C_spec * S_spec) on pixel lists: albedo, normals (P, 3),
    spec_weight (P, 1). `shading` (P, 3) replaces the analytic S_shad (the bundle's shading net)."""
    shade = sh_shading(normals, lighting.sh_coeffs) if shading is None else shading
    if lighting.num_lights == 0:
        return albedo * shade
    return albedo * (shade + spec_weight * specular(normals, lighting.light_dirs, lighting.light_colours, shininess))


@dataclass(frozen=True)
class IdleLayers:
    """One idle frame decoded: linear albedo, unit normals (S, S, 3), spec weight and matte (S, S), all float32."""

    albedo: np.ndarray
    normals: np.ndarray
    spec_weight: np.ndarray
    matte: np.ndarray


@dataclass(frozen=True)
class MouthGeometry:
    """The part of the mesh that can reach the mouth box, with everything about it that audio does not change.

    vertices: global ids of the subset; faces index into it. raster_faces can cover box pixels (drawn);
    normal_faces are every face touching a vertex of raster_faces (their vertex normals need all of them).
    region_rows: rows of `vertices` in the driven lip region; driven position = base[i] + coeffs @ gain[i].
    hull_rows: rows whose (idle and driven) positions span the mouth mask.
    """

    vertices: np.ndarray  # (V_sub,) int64
    raster_faces: np.ndarray  # (F_r, 3) int64, rows of `vertices`
    normal_faces: np.ndarray  # (F_n, 3) int64
    region_rows: np.ndarray  # (R,) int64
    hull_rows: np.ndarray  # (H,) int64
    base_px: np.ndarray  # (N, R, 3) float32 driven region at zero coefficients, crop px
    gain_px: np.ndarray  # (N, n_lip, R, 3) float32 px per unit coefficient


def _fail(bundle: AvatarBundle, message: str) -> BundleError:
    return BundleError(f"avatar bundle {bundle.path}: {message}")


def _check_contents(bundle: AvatarBundle) -> None:
    missing_nets = [n for n in LIVE_NETS if n not in bundle.nets]
    if missing_nets:
        raise _fail(bundle, f"lacks net(s) {missing_nets} needed live (has {sorted(bundle.nets)})")
    missing = [k for k in ARRAYS if k not in bundle.arrays]
    if missing:
        raise _fail(bundle, f"lacks array(s) {missing}")
    info_missing = [k for k in INFO_KEYS if k not in bundle.info]
    if info_missing:
        raise _fail(bundle, f"manifest info lacks {info_missing}")
    a, s = bundle.arrays, bundle.size_px
    n = a["idle_albedo"].shape[0]
    want = {
        "idle_albedo": ((n, s, s, 3), np.uint8),
        "idle_normals": ((n, s, s, 3), np.uint8),
        "idle_spec_weight": ((n, s, s), np.uint8),
        "idle_matte": ((n, s, s), np.uint8),
        "idle_landmarks": ((n, NUM_LANDMARKS, 3), np.float32),
        "idle_pose": ((n, 4, 4), np.float32),
        "idle_mouth_box": ((n, 2), np.int32),
    }
    for key, (shape, dtype) in want.items():
        if a[key].shape != shape or a[key].dtype != dtype:
            raise _fail(bundle, f"array {key!r} is {a[key].dtype} {a[key].shape}; expected {np.dtype(dtype)} {shape}")
    if n < 1:
        raise _fail(bundle, "the idle loop has no frames")
    if bundle.info["loop"] not in LOOP_MODES:
        raise _fail(bundle, f"info.loop is {bundle.info['loop']!r}; expected one of {LOOP_MODES}")
    m = bundle.info["mouth_px"]
    if not isinstance(m, int) or not 8 <= m <= s:
        raise _fail(bundle, f"info.mouth_px must be an integer in [8, {s}], got {m!r}")
    box = a["idle_mouth_box"]
    if box.min() < 0 or box.max() > s - m:
        raise _fail(bundle, f"idle_mouth_box puts the {m} px mouth box outside the {s} px crop "
                            f"(top-left x, y must lie in [0, {s - m}], got {box.min()}..{box.max()})")
    k = a["expression_vertices"].shape[0]
    n_lip = bundle.info["n_lip"]
    if a["expression_mean"].shape != (k, 3) or a["expression_basis"].shape != (n_lip, k, 3):
        raise _fail(bundle, f"expression arrays disagree: {k} vertices, info.n_lip {n_lip}, mean "
                            f"{a['expression_mean'].shape}, basis {a['expression_basis'].shape}")
    tri, verts = a["triangles"], a["expression_vertices"]
    if tri.ndim != 2 or tri.shape[1] != 3 or tri.min() < 0 or tri.max() >= NUM_LANDMARKS:
        raise _fail(bundle, f"triangles must be (F, 3) indices into the {NUM_LANDMARKS}-point mesh")
    if verts.ndim != 1 or verts.min() < 0 or verts.max() >= NUM_LANDMARKS:
        raise _fail(bundle, f"expression_vertices must be (K,) indices into the {NUM_LANDMARKS}-point mesh")
    for key in ("idle_landmarks", "idle_pose", "expression_mean", "expression_basis"):
        if not np.all(np.isfinite(a[key])):
            raise _fail(bundle, f"array {key!r} holds NaN or inf")


def _region_weights(bundle: AvatarBundle) -> np.ndarray:
    """Blend weights of the lip-region vertices: the bundle's `expression_weights`, else the project's lip region
    (models/enroll/expression.py) when the bundle's vertex set is that region."""
    verts = bundle.arrays["expression_vertices"]
    if "expression_weights" in bundle.arrays:
        w = bundle.arrays["expression_weights"].astype(np.float32)
        if w.shape != verts.shape:
            raise _fail(bundle, f"expression_weights has shape {w.shape}; expected {verts.shape}")
        return w
    from models.enroll.expression import lip_region

    region = lip_region()
    if not np.array_equal(region.indices, verts.astype(np.int64)):
        raise _fail(bundle, "expression_vertices are not this relitcam's lip region and the bundle has no "
                            "expression_weights to blend them with")
    return region.weights


def _poses(bundle: AvatarBundle) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(scale_px (N,), rotation (N, 3, 3), translation_px (N, 3)) from the 4x4 similarities, checked against the
    landmarks they must reproduce (models.face.pose.HeadPose convention: camera y up, then y flipped to px)."""
    m = bundle.arrays["idle_pose"].astype(np.float64)
    sr, t = m[:, :3, :3], m[:, :3, 3]
    det = np.linalg.det(sr)
    if np.any(det <= 0):
        raise _fail(bundle, "idle_pose holds a reflection or a zero scale")
    scale = np.cbrt(det)
    rot = sr / scale[:, None, None]
    if np.abs(rot @ rot.transpose(0, 2, 1) - np.eye(3)).max() > 1e-3:
        raise _fail(bundle, "idle_pose is not rotation * scale + translation")
    canonical = load_canonical_face().vertices.astype(np.float64)
    posed = (scale[:, None, None] * canonical @ rot.transpose(0, 2, 1) + t[:, None, :]) * _Y_DOWN
    err = np.median(np.linalg.norm(posed - bundle.arrays["idle_landmarks"], axis=2), axis=1) / scale
    if err.max() > _POSE_TOLERANCE_IOD:
        raise _fail(bundle, f"idle_pose of frame {int(err.argmax())} does not map the canonical face onto "
                            f"idle_landmarks (median miss {err.max():.2f} inter-ocular distances); it must follow "
                            "models.face.pose.HeadPose (camera y up, then y flipped to px)")
    return scale, rot, t


def _mouth_geometry(bundle: AvatarBundle) -> MouthGeometry:
    a = bundle.arrays
    m = int(bundle.info["mouth_px"])
    faces = a["triangles"].astype(np.int64)
    landmarks = a["idle_landmarks"].astype(np.float64)
    box = a["idle_mouth_box"].astype(np.float64)
    region = a["expression_vertices"].astype(np.int64)
    weights = _region_weights(bundle)

    # Triangles that can cover a box pixel. Driven (region) vertices may move anywhere, so every triangle touching
    # the region is kept; the others are still, and are kept when their bounding box meets the mouth box in some
    # idle frame.
    corners = landmarks[:, faces, :2]  # (N, F, 3, 2)
    lo, hi = corners.min(axis=2) - box[:, None], corners.max(axis=2) - box[:, None]
    meets_box = np.any(np.all((hi >= 0) & (lo <= m), axis=2), axis=0)
    in_region = np.zeros(NUM_LANDMARKS, bool)
    in_region[region] = True
    hull_global = region[weights >= MOUTH_HULL_MIN_WEIGHT]
    if hull_global.size < 3:
        raise _fail(bundle, "fewer than 3 lip-region vertices have blend weight >= 0.5; no mouth mask")
    raster = faces[meets_box | np.any(in_region[faces], axis=1)]
    touched = np.zeros(NUM_LANDMARKS, bool)
    touched[raster.ravel()] = True
    normal = faces[np.any(touched[faces], axis=1)]
    used = np.zeros(NUM_LANDMARKS, bool)
    used[normal.ravel()] = True
    used[hull_global] = True
    vertices = np.flatnonzero(used)
    row_of = np.full(NUM_LANDMARKS, -1, np.int64)
    row_of[vertices] = np.arange(vertices.size)

    # Driving (models.enroll.expression.lip_vertices): in the canonical frame the region becomes
    # idle + w (mean + c @ basis - idle), then is posed back. Posing is affine, so per idle frame the driven
    # region is base + c @ gain; both are computed once here.
    scale, rot, t = _poses(bundle)
    kept = used[region]
    reg, w = region[kept], weights[kept].astype(np.float64)[:, None]
    mean = a["expression_mean"].astype(np.float64)[kept]
    basis = a["expression_basis"].astype(np.float64)[:, kept]
    idle_cam = landmarks[:, reg] * _Y_DOWN
    idle_canon = np.einsum("nkj,nji->nki", idle_cam - t[:, None], rot) / scale[:, None, None]
    blended0 = idle_canon + w * (mean - idle_canon)
    base = (scale[:, None, None] * np.einsum("nki,nji->nkj", blended0, rot) + t[:, None]) * _Y_DOWN
    gain = scale[:, None, None, None] * np.einsum("lki,nji->nlkj", w * basis, rot) * _Y_DOWN
    return MouthGeometry(
        vertices=vertices,
        raster_faces=row_of[raster],
        normal_faces=row_of[normal],
        region_rows=row_of[reg],
        hull_rows=row_of[hull_global],
        base_px=base.astype(np.float32),
        gain_px=gain.astype(np.float32),
    )


CROP_EDGE_FADE_FRAC = 0.06


def fade_crop_edges(matte_u8: np.ndarray, frac: float = CROP_EDGE_FADE_FRAC) -> np.ndarray:
    """(N, S, S) uint8 mattes faded to 0 over `frac` of the crop at its left, right and top edges.

    The crop cuts shoulders and hair with straight lines; scaled up on a canvas those read as the edge of a box.
    The bottom edge is kept: the body goes on below the canvas."""
    s = matte_u8.shape[-1]
    ramp = np.clip((np.arange(s) + 0.5) / max(frac * s, 1.0), 0.0, 1.0)
    across = np.minimum(ramp, ramp[::-1])
    window = (ramp[:, None] * across[None, :]).astype(np.float32)
    out = np.empty_like(matte_u8, dtype=np.uint8)
    for i in range(matte_u8.shape[0]):  # a frame at a time: the whole loop in float would be 8x its size
        out[i] = np.round(matte_u8[i] * window)
    return out


class BundleRenderer:
    """AvatarRenderer over an avatar bundle folder; nets run on `backend` ("onnxruntime", see stream/backend.py).

    use_shading_net: relight with the bundle's learned shading correction (default: when the bundle has one);
    False gives exactly models.render's analytic image formation.
    """

    def __init__(
        self,
        bundle_path: str | os.PathLike = DEFAULT_BUNDLE,
        backend: str = "onnxruntime",
        *,
        use_shading_net: bool | None = None,
        threads: int | None = None,
    ) -> None:
        bundle = load_bundle(bundle_path)
        _check_contents(bundle)
        self.bundle = bundle
        info = bundle.info
        self.size_px = bundle.size_px
        self.frame_size = (bundle.size_px, bundle.size_px)
        self.fps = bundle.fps
        self.lookahead_ms = bundle.lookahead_ms
        self.mel_past_frames = int(info["mel_past_frames"])
        self.mel_lookahead_frames = int(info["mel_lookahead_frames"])
        self.mouth_px = int(info["mouth_px"])
        self.shininess = float(info["shininess"])
        self.loop_mode = str(info["loop"])
        self.n_idle_frames = int(bundle.arrays["idle_albedo"].shape[0])
        if use_shading_net and "shading" not in bundle.nets:
            raise _fail(bundle, "use_shading_net=True but the bundle has no shading net")
        self.use_shading_net = ("shading" in bundle.nets) if use_shading_net is None else bool(use_shading_net)
        nets = LIVE_NETS + (("shading",) if self.use_shading_net else ())
        options = {"nets": nets, "threads": threads}
        if backend == "onnxruntime":
            # A 10 ms window through two small attention layers: splitting it over threads costs more than it saves.
            options["threads_per_net"] = {"audio_to_expression": 1}
        self.backend: Backend = create_backend(backend, bundle, **options)
        self._check_net_shapes()

        a = bundle.arrays
        self._albedo_u8, self._normals_u8 = a["idle_albedo"], a["idle_normals"]
        self._spec_u8 = a["idle_spec_weight"]
        self.idle_matte = fade_crop_edges(a["idle_matte"])
        self._box = a["idle_mouth_box"].astype(np.int64)
        codes = np.arange(256, dtype=np.float32)
        self._srgb_lut = srgb_to_linear(codes / 255.0)
        self._normal_lut = (codes - 127.5) / 127.5
        self._unit_lut = codes / 255.0
        self.geometry = _mouth_geometry(bundle)
        self._subset_landmarks = a["idle_landmarks"][:, self.geometry.vertices].astype(np.float32)
        self._grow_px = float(bundle.info.get("mouth_mask_grow_px", 0.0))
        self._margin_px = int(bundle.info.get("mouth_mask_margin_px", 0))  # absent: a bundle from before v13

    def _check_net_shapes(self) -> None:
        b, t = self.backend, self.mel_past_frames + 1 + self.mel_lookahead_frames
        (mel_spec,) = [s for s in b.inputs("audio_to_expression") if s.name == "mel_window"] or [None]
        if mel_spec is None or len(mel_spec.shape) != 3:
            raise _fail(self.bundle, "audio_to_expression must take mel_window (B, 80, T)")
        if mel_spec.shape[1] not in (None, N_MELS) or mel_spec.shape[2] not in (None, t):
            raise _fail(self.bundle, f"audio_to_expression takes mel_window {mel_spec.shape}; the manifest's window "
                                     f"is {N_MELS} mels x {t} frames (past {self.mel_past_frames} + 1 + lookahead "
                                     f"{self.mel_lookahead_frames})")
        outs = {s.name: s.shape for s in b.outputs("audio_to_expression")}
        n_lip = int(self.bundle.info["n_lip"])
        if outs.get("lip_coeffs", (None, None))[1:] not in ((n_lip,), (None,)):
            raise _fail(self.bundle, f"audio_to_expression outputs {outs}; expected lip_coeffs (B, {n_lip})")
        m = self.mouth_px
        for spec in b.inputs("mouth"):
            if len(spec.shape) != 4 or spec.shape[2:] not in ((m, m), (None, None)):
                raise _fail(self.bundle, f"mouth net input {spec.name!r} is {spec.shape}; expected (B, C, {m}, {m})")
        outputs = {s.name for s in b.outputs("mouth")}
        if outputs != {"albedo", "normals", "spec_weight", "blend"}:
            raise _fail(self.bundle, f"mouth net outputs {sorted(outputs)}; expected albedo, normals, spec_weight, blend")
        if self.use_shading_net:
            shapes = {s.name: s.shape for s in b.inputs("shading")}
            if set(shapes) != {"normals", "sh_shading"}:
                raise _fail(self.bundle, f"shading net takes {sorted(shapes)}; expected normals, sh_shading")
            self._shading_pixel_list = all(d is None for d in shapes["normals"][2:])

    # ------------------------------------------------------------------------------------------------ per frame

    def loop_frame(self, frame_index: int) -> int:
        return loop_position(frame_index, self.n_idle_frames, self.loop_mode)

    def _run(self, net: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        # A CUDA backend (tensorrt, torch-cuda) answers with device arrays; the renderer's own steps run on the host.
        return {name: to_numpy(value) for name, value in self.backend.run(net, inputs).items()}

    def lip_coeffs(self, mel_window: np.ndarray) -> np.ndarray:
        """(n_lip,) coefficients for one (T, 80) log-mel window, oldest first."""
        mel = np.asarray(mel_window, dtype=np.float32)
        t = self.mel_past_frames + 1 + self.mel_lookahead_frames
        if mel.shape != (t, N_MELS):
            raise ValueError(f"mel_window must be ({t}, {N_MELS}) log-mel frames for this avatar, got {mel.shape}")
        out = self._run("audio_to_expression", {"mel_window": mel.T[None]})
        return np.asarray(out["lip_coeffs"][0], np.float32)

    def decode_layers(self, i: int) -> IdleLayers:
        """Idle frame i's layers as float32 (fresh arrays: callers may write into them)."""
        n = self._normal_lut[self._normals_u8[i]]
        n /= np.maximum(np.sqrt(np.einsum("hwc,hwc->hw", n, n)), 1e-6)[..., None]
        return IdleLayers(
            albedo=self._srgb_lut[self._albedo_u8[i]],
            normals=n,
            spec_weight=self._unit_lut[self._spec_u8[i]],
            matte=self._unit_lut[self.idle_matte[i]],
        )

    def driven_vertices(self, i: int, coeffs: np.ndarray) -> np.ndarray:
        """Positions (V_sub, 3) crop px of `geometry.vertices` in idle frame i with the lips driven by `coeffs`."""
        g = self.geometry
        v = self._subset_landmarks[i].copy()
        v[g.region_rows] = g.base_px[i] + np.tensordot(np.asarray(coeffs, np.float32), g.gain_px[i], axes=1)
        return v

    def mouth_inputs(self, i: int, coeffs: np.ndarray, layers: IdleLayers) -> dict[str, np.ndarray]:
        """The mouth net's inputs (docs/bundle.md) for idle frame i driven by `coeffs`."""
        g, m = self.geometry, self.mouth_px
        bx, by = self._box[i]
        local = self.driven_vertices(i, coeffs) - np.array([bx, by, 0], np.float32)
        raster = rasterize(local, g.raster_faces, m, m)
        coarse = interpolate(vertex_normals(local * _Y_DOWN, g.normal_faces), raster)
        # Zero where no triangle covers, as in training (models/enroll/mouth.py: mouth_coarse_normals): the open
        # mouth is a hole, and the hole is what tells the net to paint teeth and cavity. Filled with the idle
        # frame's normals (as before), the net drew closed lips over it: no teeth at all on the real clip.
        coarse /= np.maximum(np.linalg.norm(coarse, axis=2, keepdims=True), 1e-6)
        idle_albedo = layers.albedo[by : by + m, bx : bx + m]
        idle_normals = layers.normals[by : by + m, bx : bx + m]
        idle_local = self._subset_landmarks[i][g.hull_rows] - np.array([bx, by, 0], np.float32)
        # Grown as in training (mouth.py: mouth_region_mask), so the net sees the mask size it learned.
        mask = clear_border(grown_hulls_mask([local[g.hull_rows], idle_local], (m, m), grow_px=self._grow_px),
                            self._margin_px)
        keep = (~mask)[..., None].astype(np.float32)

        def chw(x):
            return np.ascontiguousarray(x.transpose(2, 0, 1))[None]

        return {
            "coarse_normals": chw(coarse),
            "idle_albedo": chw(idle_albedo * keep),
            "idle_normals": chw(idle_normals * keep),
            "mouth_mask": mask.astype(np.float32)[None, None],
        }

    def _blend_mouth(self, i: int, coeffs: np.ndarray, layers: IdleLayers) -> None:
        out = self._run("mouth", self.mouth_inputs(i, coeffs, layers))
        m = self.mouth_px
        bx, by = self._box[i]
        box = (slice(by, by + m), slice(bx, bx + m))
        blend = out["blend"][0, 0][..., None]
        a, n = layers.albedo[box], layers.normals[box]
        a += blend * (out["albedo"][0].transpose(1, 2, 0) - a)
        n += blend * (out["normals"][0].transpose(1, 2, 0) - n)
        n /= np.maximum(np.linalg.norm(n, axis=2, keepdims=True), 1e-6)
        c = layers.spec_weight[box]
        c += blend[..., 0] * (out["spec_weight"][0, 0] - c)

    def relight(self, layers: IdleLayers, lighting: Lighting) -> np.ndarray:
        """(S, S, 3) linear RGB of `layers` under `lighting` where the matte covers, 0 elsewhere."""
        s = self.size_px
        on = np.flatnonzero(layers.matte.reshape(-1) > 0)
        a = layers.albedo.reshape(-1, 3)[on]
        n = layers.normals.reshape(-1, 3)[on]
        c = layers.spec_weight.reshape(-1)[on][:, None]
        shading = None
        if self.use_shading_net:
            sh = sh_shading(n, lighting.sh_coeffs)
            shading = self._shading_net(n, sh, on)
        rgb = np.zeros((s * s, 3), np.float32)
        rgb[on] = relight_pixels(a, n, c, lighting, self.shininess, shading)
        return rgb.reshape(s, s, 3)

    def _shading_net(self, normals: np.ndarray, sh: np.ndarray, on: np.ndarray) -> np.ndarray:
        if self._shading_pixel_list:  # 1x1 convolutions: a (1, 3, 1, P) strip is the same per-pixel function
            out = self._run("shading", {"normals": normals.T[None, :, None], "sh_shading": sh.T[None, :, None]})
            return out["shading"][0, :, 0].T
        s = self.size_px
        full_n, full_sh = np.zeros((s * s, 3), np.float32), np.zeros((s * s, 3), np.float32)
        full_n[on], full_sh[on] = normals, sh
        chw = {"normals": full_n.T.reshape(1, 3, s, s), "sh_shading": full_sh.T.reshape(1, 3, s, s)}
        return self._run("shading", chw)["shading"][0].reshape(3, -1).T[on]

    def render(self, mel_window: np.ndarray, lighting: Lighting, frame_index: int) -> RenderedFrame:
        coeffs = self.lip_coeffs(mel_window)
        i = self.loop_frame(frame_index)
        layers = self.decode_layers(i)
        self._blend_mouth(i, coeffs, layers)
        return RenderedFrame(rgb_linear=self.relight(layers, lighting), matte=layers.matte)

