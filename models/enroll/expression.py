"""The person's expression space, split as in ReliTalk into a lip-related part (driven by audio) and the rest
(brows, eyes, head pose), which comes from an idle loop of the enrollment video.

Meshes are compared in the canonical face frame: each frame's landmarks are mapped through the inverse of its
head pose (a similarity fitted to the rigid upper-face vertices), so what remains is expression, in inter-ocular
units. The lip part is PCA over the mouth/jaw region: every vertex below the nose base of the canonical face (lips,
philtrum, chin, lower cheeks, jaw line). Its top edge borders unchanged vertices, so each region vertex carries a
weight that ramps from 0 at the nose base to 1 at the top of the upper lip; driven lips are blended into an idle
frame with those weights, which leaves no crease where the region ends.

The idle loop is a stretch of frames with the mouth closed and still and ordinary head motion. It loops either by a
cut (the frame after the stretch looks like its first frame, so jumping back is invisible) or, when no stretch of
the asked length closes well enough, by playing forward then backward ("pingpong": no jump, only a reversal).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from models.face.measures import INNER_LIP_PAIRS
from models.face.pose import HeadPose, estimate_head_pose
from models.face.resources import LEFT_EYE_OUTER, NUM_LANDMARKS, RIGHT_EYE_OUTER, load_canonical_face
from models.xp import smoothstep

_Y_DOWN = np.array([1.0, -1.0, 1.0])

# Canonical-frame heights (y up, inter-ocular units) bounding the blend ramp: the region starts just under the
# nostrils (nose base vertex 2 is at -0.144, the alae at -0.10) and is fully driven from the top of the upper lip
# (-0.235) down.
LIP_REGION_TOP_Y = -0.12
LIP_REGION_FULL_Y = -0.235
DEFAULT_N_LIP = 14


@dataclass(frozen=True)
class LipRegion:
    indices: np.ndarray  # (K,) int64 vertex indices of the 468-point mesh
    weights: np.ndarray  # (K,) float32 in (0, 1]: how much of the driven shape each vertex takes


@lru_cache(maxsize=1)
def lip_region() -> LipRegion:
    """Mouth/jaw vertices of the 468-point mesh, from the canonical face: everything below the nose base."""
    y = load_canonical_face().vertices[:, 1].astype(np.float64)
    indices = np.flatnonzero(y < LIP_REGION_TOP_Y)
    # smoothstep: no slope jump where the ramp meets 0 or 1
    weights = smoothstep(y[indices], LIP_REGION_TOP_Y, LIP_REGION_FULL_Y)
    # Vertices exactly at the top edge would get weight 0; keep them in the region with a tiny weight instead of
    # dropping them so the index set is exactly "below the cut".
    return LipRegion(indices=indices.astype(np.int64), weights=np.maximum(weights, 1e-3).astype(np.float32))


def _check_landmarks(landmarks: np.ndarray, what: str = "landmarks") -> np.ndarray:
    landmarks = np.asarray(landmarks, np.float64)
    if landmarks.shape[-2:] != (NUM_LANDMARKS, 3):
        raise ValueError(f"{what} must be (..., {NUM_LANDMARKS}, 3), got {landmarks.shape}")
    if not np.isfinite(landmarks).all():
        raise ValueError(f"{what} contain non-finite values")
    return landmarks


def fit_pose(landmarks_px: np.ndarray) -> HeadPose:
    """Head pose of one (468, 3) mesh (same fit as the tracker: canonical rigid vertices)."""
    ref = load_canonical_face()
    return estimate_head_pose(_check_landmarks(landmarks_px), ref.vertices, ref.rigid_mask)


def unpose(landmarks_px: np.ndarray, pose: HeadPose) -> np.ndarray:
    """(468, 3) px -> canonical frame (inter-ocular units, y up): the exact inverse of `pose.apply`."""
    cam = np.asarray(landmarks_px, np.float64) * _Y_DOWN
    return (cam - pose.translation_px) @ pose.rotation / pose.scale_px


def repose(canonical: np.ndarray, pose: HeadPose) -> np.ndarray:
    return (pose.scale_px * np.asarray(canonical, np.float64) @ pose.rotation.T + pose.translation_px) * _Y_DOWN


@dataclass(frozen=True)
class ExpressionSpace:
    """PCA of the lip region in the canonical frame: region shape = mean + coeffs @ basis.

    basis rows are orthonormal (in the flattened (K*3,) space); stddev_iod is each coefficient's standard
    deviation over the training frames (use it to normalise regression targets); explained_variance_ratio is
    each component's share of the region's total variance.
    """

    indices: np.ndarray  # (K,) int64
    weights: np.ndarray  # (K,) float32 blend weights
    mean: np.ndarray  # (K, 3) float32, canonical units
    basis: np.ndarray  # (n_lip, K, 3) float32
    stddev_iod: np.ndarray  # (n_lip,) float32
    explained_variance_ratio: np.ndarray  # (n_lip,) float32

    @property
    def n_lip(self) -> int:
        return int(self.basis.shape[0])

    def shape_of(self, coeffs: np.ndarray) -> np.ndarray:
        """Region vertices (K, 3) in canonical units for coefficients (n_lip,)."""
        coeffs = np.asarray(coeffs, np.float64)
        if coeffs.shape != (self.n_lip,):
            raise ValueError(f"expected {self.n_lip} lip coefficients, got shape {coeffs.shape}")
        return self.mean + np.tensordot(coeffs, self.basis, axes=1)

    def project(self, region_canonical: np.ndarray) -> np.ndarray:
        """Coefficients (..., n_lip) of region shapes (..., K, 3) in canonical units."""
        centred = np.asarray(region_canonical, np.float64) - self.mean
        return np.tensordot(centred, self.basis, axes=([-2, -1], [1, 2]))

    def save(self, path: str | os.PathLike) -> None:
        from models.enroll.workdir import atomic_save_npz

        atomic_save_npz(
            path,
            indices=self.indices,
            weights=self.weights,
            mean=self.mean,
            basis=self.basis,
            stddev_iod=self.stddev_iod,
            explained_variance_ratio=self.explained_variance_ratio,
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> ExpressionSpace:
        path = Path(path)
        try:
            with np.load(path) as z:
                space = cls(**{name: z[name] for name in cls.__dataclass_fields__})
        except (OSError, KeyError, ValueError) as e:
            raise ValueError(f"'{path}' is not an expression space file: {e}") from e
        k = space.indices.shape[0]
        if space.mean.shape != (k, 3) or space.basis.shape[1:] != (k, 3) or space.weights.shape != (k,):
            raise ValueError(f"'{path}': inconsistent shapes mean {space.mean.shape} basis {space.basis.shape}")
        return space


def normalised_region(landmarks_px: np.ndarray, pose: HeadPose | None = None) -> np.ndarray:
    """Lip-region vertices (K, 3) of one posed mesh, in the canonical frame."""
    landmarks_px = _check_landmarks(landmarks_px)
    pose = pose or fit_pose(landmarks_px)
    return unpose(landmarks_px[lip_region().indices], pose)


def fit_expression_space(
    landmarks_px: np.ndarray, poses: list[HeadPose] | None = None, n_lip: int = DEFAULT_N_LIP
) -> ExpressionSpace:
    """PCA of the lip region over frames (N, 468, 3) (any pixel frame: image or crop, with poses fitted there)."""
    landmarks_px = _check_landmarks(landmarks_px)
    if landmarks_px.ndim != 3:
        raise ValueError(f"fit_expression_space needs a stack of meshes (N, 468, 3), got {landmarks_px.shape}")
    n = landmarks_px.shape[0]
    if n_lip < 1:
        raise ValueError(f"n_lip must be >= 1, got {n_lip}")
    if n <= n_lip:
        raise ValueError(f"need more frames than lip coefficients to fit them: {n} frames for n_lip={n_lip}")
    if poses is not None and len(poses) != n:
        raise ValueError(f"got {len(poses)} poses for {n} meshes")
    region = lip_region()
    data = np.stack(
        [normalised_region(landmarks_px[i], poses[i] if poses is not None else None) for i in range(n)]
    )  # (N, K, 3)
    mean = data.mean(0)
    flat = (data - mean).reshape(n, -1)
    _, sing, vt = np.linalg.svd(flat, full_matrices=False)
    var = sing**2 / max(n - 1, 1)
    total = float(var.sum())
    if total <= 0:
        raise ValueError("the lip region never moves in these frames (zero variance); cannot fit an expression space")
    k = region.indices.size
    return ExpressionSpace(
        indices=region.indices,
        weights=region.weights,
        mean=mean.astype(np.float32),
        basis=vt[:n_lip].reshape(n_lip, k, 3).astype(np.float32),
        stddev_iod=np.sqrt(var[:n_lip]).astype(np.float32),
        explained_variance_ratio=(var[:n_lip] / total).astype(np.float32),
    )


def lip_coeffs(space: ExpressionSpace, landmarks_posed: np.ndarray, pose: HeadPose | None = None) -> np.ndarray:
    """Lip coefficients (n_lip,) of one posed mesh (468, 3); `pose` defaults to a fit on the mesh itself."""
    return space.project(normalised_region(landmarks_posed, pose)).astype(np.float32)


def lip_vertices(
    space: ExpressionSpace, coeffs: np.ndarray, idle_landmarks: np.ndarray, idle_pose: HeadPose | None = None
) -> np.ndarray:
    """The idle frame's mesh (468, 3) with its lip region replaced by the driven shape, in the idle frame's px.

    The replacement happens in the canonical frame (so it follows the idle head pose) and is blended by the
    region weights; vertices outside the region are returned unchanged.
    """
    idle = _check_landmarks(idle_landmarks)
    if idle.ndim != 2:
        raise ValueError(f"idle_landmarks must be one mesh (468, 3), got {idle.shape}")
    pose = idle_pose or fit_pose(idle)
    idle_region = unpose(idle[space.indices], pose)
    blended = idle_region + space.weights[:, None] * (space.shape_of(coeffs) - idle_region)
    out = idle.copy()
    out[space.indices] = repose(blended, pose)
    return out.astype(np.float32)


# ------------------------------------------------------------------------------------------------------ idle loop


@dataclass(frozen=True)
class IdleLoop:
    """Frames to play on repeat while the avatar is not speaking.

    frame_indices: positions in the prepared frames, in playback order; playing them cyclically is seamless.
    mode: "cut" (stretch start..end-1, then jump back; the frame after the stretch resembles the first) or
    "pingpong" (start..end-1 then back down to start+1).
    seam_cost: distance across the loop's seam in units of the clip's median frame-to-frame change (1 = as
    smooth as an ordinary frame step; 0 for pingpong).
    """

    frame_indices: np.ndarray
    start: int
    end: int  # exclusive
    mode: str
    seam_cost: float
    mouth_opening_mean: float
    fps: float

    @property
    def duration_s(self) -> float:
        return self.frame_indices.size / self.fps


def mouth_openings(landmarks_px: np.ndarray) -> np.ndarray:
    """Inner-lip gap over inter-ocular distance per frame (N,), as models.face.measures.mouth_opening."""
    p = _check_landmarks(landmarks_px).reshape(-1, NUM_LANDMARKS, 3)
    upper = [a for a, _ in INNER_LIP_PAIRS]
    lower = [b for _, b in INNER_LIP_PAIRS]
    gap = np.linalg.norm(p[:, lower] - p[:, upper], axis=2).mean(1)
    iod = np.linalg.norm(p[:, LEFT_EYE_OUTER] - p[:, RIGHT_EYE_OUTER], axis=1)
    return gap / np.maximum(iod, 1e-6)


def _runs(contiguous_next: np.ndarray, n: int) -> list[tuple[int, int]]:
    """[start, end) runs of frames where each frame's successor follows it directly."""
    breaks = np.flatnonzero(~contiguous_next) + 1
    edges = np.concatenate([[0], breaks, [n]])
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def select_idle_loop(
    landmarks_px: np.ndarray,
    fps: float,
    length_s: float = 10.0,
    source_frame_index: np.ndarray | None = None,
    thumbnails: np.ndarray | None = None,
    end_slack_s: float = 1.0,
    max_seam_cost: float = 2.0,
    candidates: int = 200,
) -> IdleLoop:
    """Pick the idle loop from per-frame meshes (N, 468, 3) (crop px).

    source_frame_index: each frame's index on the video's constant-rate grid; frames are contiguous only where
    it steps by one (skipped frames break stretches). thumbnails: optional (N, h, w, 3) uint8 small crops, so the
    seam also compares appearance (lighting, blinks), not only geometry.

    Cost per frame = mouth opening (in units of 0.05, about lips just apart) + lip-region speed (in units of the
    clip's median) + head speed above the clip's 90th percentile (natural motion is free, jerks are not). The
    `candidates` cheapest stretches then get their seam measured for every end within +-end_slack_s of the
    asked length; the best cut is taken if its seam costs at most `max_seam_cost` frame steps, else the cheapest
    stretch plays pingpong.
    """
    landmarks_px = _check_landmarks(landmarks_px)
    n = landmarks_px.shape[0]
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    length = int(round(length_s * fps))
    slack = int(round(end_slack_s * fps))
    if length < 2:
        raise ValueError(f"idle loop length {length_s} s is under two frames at {fps} fps")
    index = np.arange(n) if source_frame_index is None else np.asarray(source_frame_index, np.int64)
    if index.shape != (n,):
        raise ValueError(f"source_frame_index has shape {index.shape}; expected ({n},)")
    runs = _runs(np.diff(index) == 1, n)
    longest = max(b - a for a, b in runs)
    if longest < length:
        raise ValueError(
            f"no stretch of {length_s:g} s ({length} frames) without skipped frames for the idle loop; "
            f"the longest is {longest / fps:.1f} s. Ask for a shorter idle loop or record a steadier video."
        )

    poses = [fit_pose(landmarks_px[i]) for i in range(n)]
    canon = np.stack([unpose(landmarks_px[i], poses[i]) for i in range(n)])  # (N, 468, 3) iod units
    region = lip_region().indices
    opening = mouth_openings(landmarks_px)
    # Speeds to the next frame, per frame.
    lip_step = np.sqrt(((canon[1:, region] - canon[:-1, region]) ** 2).sum(2).mean(1))
    rot_step = np.array([_rotation_angle(poses[i].rotation.T @ poses[i + 1].rotation) for i in range(n - 1)])
    trans_step = np.array(
        [
            np.linalg.norm(poses[i + 1].translation_px - poses[i].translation_px) / poses[i].scale_px
            for i in range(n - 1)
        ]
    )
    same = np.diff(index) == 1
    steps = []
    for arr in (lip_step, rot_step, trans_step):
        arr[~same] = np.median(arr[same]) if same.any() else 0.0  # a skipped stretch is not motion
        steps.append(np.append(arr, arr[-1]))  # the last frame gets its predecessor's speed
    lip_step, rot_step, trans_step = steps
    head = rot_step / max(np.percentile(rot_step, 90), 1e-9) + trans_step / max(np.percentile(trans_step, 90), 1e-9)
    cost = opening / 0.05 + lip_step / max(np.median(lip_step), 1e-9) + np.maximum(head / 2.0 - 1.0, 0.0)
    csum = np.concatenate([[0.0], np.cumsum(cost)])

    starts = np.concatenate([np.arange(a, b - length + 1) for a, b in runs if b - a >= length])
    window_cost = (csum[starts + length] - csum[starts]) / length
    chosen = starts[np.argsort(window_cost, kind="stable")[:candidates]]

    # Seam distance between frame `end` (what would naturally follow the stretch) and frame `start`, in units of
    # the median distance between consecutive frames. Posed meshes, not canonical ones: a jump in head pose is
    # exactly what the seam must not show.
    flat = landmarks_px.reshape(n, -1)
    step = np.sqrt(((flat[1:] - flat[:-1]) ** 2).mean(1))[same]
    geo_unit = max(float(np.median(step)) if step.size else 1e-3, 1e-6)
    thumbs = None if thumbnails is None else np.asarray(thumbnails, np.float32).reshape(n, -1)
    if thumbs is not None:
        t_step = np.abs(thumbs[1:] - thumbs[:-1]).mean(1)[same]
        app_unit = max(float(np.median(t_step)) if t_step.size else 1.0, 1e-3)

    def seam(a: int, b: int) -> float:
        d = float(np.sqrt(((flat[a] - flat[b]) ** 2).mean())) / geo_unit
        if thumbs is not None:
            d = 0.5 * (d + float(np.abs(thumbs[a] - thumbs[b]).mean()) / app_unit)
        return d

    run_end = np.empty(n, np.int64)
    for a, b in runs:
        run_end[a:b] = b
    best = None  # (total, start, end, seam)
    for s in chosen:
        s = int(s)
        # `end` must exist as a real next frame inside the run for the seam comparison.
        ends = range(max(s + length - slack, s + 2), min(s + length + slack, int(run_end[s]) - 1) + 1)
        for e in ends:
            c_seam = seam(e, s)
            total = (csum[e] - csum[s]) / (e - s) + c_seam
            if best is None or total < best[0]:
                best = (total, s, e, c_seam)
    if best is not None and best[3] <= max_seam_cost:
        _, s, e, seam_cost = best
        frames, mode = np.arange(s, e), "cut"
    else:
        s = int(chosen[0])
        e = s + length
        frames = np.concatenate([np.arange(s, e), np.arange(e - 2, s, -1)])
        mode, seam_cost = "pingpong", 0.0
    return IdleLoop(
        frame_indices=frames.astype(np.int64),
        start=int(s),
        end=int(e),
        mode=mode,
        seam_cost=float(seam_cost),
        mouth_opening_mean=float(opening[s:e].mean()),
        fps=float(fps),
    )


def _rotation_angle(r: np.ndarray) -> float:
    return float(np.arccos(np.clip((np.trace(r) - 1.0) / 2.0, -1.0, 1.0)))


# ---------------------------------------------------------------------------------------------------------- stage


def build_expression(
    workdir, prepared, n_lip: int = DEFAULT_N_LIP, idle_length_s: float = 10.0
) -> tuple[ExpressionSpace, IdleLoop, bool]:
    """Enrollment stage "expression": fit the lip space and pick the idle loop from prepared frames
    (models.enroll.prepare.PreparedVideo); writes expression.npz and idle_loop.json. Returns (space, loop, ran)."""
    import json

    from models.enroll.workdir import atomic_write_json

    def work():
        poses = [prepared.pose(i) for i in range(prepared.frame_count)]
        space = fit_expression_space(prepared.landmarks_px, poses, n_lip=n_lip)
        space.save(workdir.path("expression.npz"))
        loop = select_idle_loop(
            prepared.landmarks_px, prepared.fps, idle_length_s, prepared.source_frame_index, prepared.thumbnails()
        )
        atomic_write_json(
            workdir.path("idle_loop.json"),
            {
                "frame_indices": loop.frame_indices.tolist(),
                "start": loop.start,
                "end": loop.end,
                "mode": loop.mode,
                "seam_cost": loop.seam_cost,
                "mouth_opening_mean": loop.mouth_opening_mean,
                "fps": loop.fps,
            },
        )
        extra = {
            "explained_variance_ratio": [round(float(v), 5) for v in space.explained_variance_ratio],
            "explained_variance_total": float(space.explained_variance_ratio.sum()),
            "idle_mode": loop.mode,
            "idle_frames": int(loop.frame_indices.size),
        }
        return ["expression.npz", "idle_loop.json"], extra

    align = workdir.record("align")
    if align is None:
        raise ValueError(f"work folder '{workdir.root}' has no align stage; run prepare_video first")
    _, ran = workdir.run_stage(
        "expression", {"align": align.key}, {"n_lip": n_lip, "idle_length_s": idle_length_s}, work
    )
    space = ExpressionSpace.load(workdir.path("expression.npz"))
    raw = json.loads(workdir.path("idle_loop.json").read_text())
    loop = IdleLoop(**{**raw, "frame_indices": np.asarray(raw["frame_indices"], np.int64)})
    return space, loop, ran
