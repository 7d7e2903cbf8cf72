"""Enrollment stage 1: from a talking-head video to aligned face crops with landmarks, pose, masks and coarse normals.

Three resumable stages in the work folder (see models/enroll/workdir.py):

  track   decode at a constant frame rate, track the face every frame (MediaPipe mesh), check there is exactly one
          person, read the audio at 16 kHz mono                  -> track.npz, audio.npy
  align   choose the usable frames, smooth landmarks without lag, and compute per frame a similarity transform
          into the canonical crop, smoothed over time so the crop does not jitter      -> align.npz
  crops   decode again and cut each usable frame's crop; rasterise masks, the person matte and the coarse normal
          map in crop space                                       -> frames/chunk_NNNNN/*.npy

The crops stage writes fixed-size chunks, each renamed into place when complete, so a killed run resumes at the
first missing chunk and a 5-minute video never needs its crops in memory.

Crop layout: a 2-D similarity fitted to stable landmarks (eye corners and nose bridge; never the mouth, which
would make the crop bob with speech) maps the canonical face into the crop with the face oval `face_width_frac`
of the crop wide, centred horizontally and at `face_center_y_frac` of the height, which leaves room for hair
above and the neck below.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter1d

from models.enroll.frame_layers import LAYERS_VERSION, MASK_BITS, FrameLayers
from models.enroll.workdir import WorkDir, atomic_path, atomic_save_npy, atomic_save_npz, file_sha256
from models.face.crop import RotatedRect, sample_crop
from models.face.detector import FaceDetector
from models.face.mesh import FaceMesh
from models.face.pose import HeadPose, estimate_head_pose
from models.face.resources import NUM_LANDMARKS, load_canonical_face, load_topology
from models.face.tracker import FaceTracker, TrackerParams
from models.media import AUDIO_RATE_HZ, iter_video_frames, probe_video, read_audio

# Eye corners (outer, inner of both eyes) and the nose bridge: points that move with the skull, not the expression.
STABLE_LANDMARKS = (33, 133, 362, 263, 168, 6, 197, 195)
FORMAT_VERSION = 1
# Live video runs at 25 or 30 fps and plays one idle-loop frame per video frame; a 60 fps phone recording prepared
# at its own rate would track twice the frames and give an idle loop that plays at half speed.
MAX_AUTO_FPS = 30.0



@dataclass(frozen=True)
class PrepareParams:
    """Everything that changes the prepared frames; it is recorded with each stage, so changing it reruns them.

    fps: output frame rate (None: the video's average rate, at most MAX_AUTO_FPS). Variable-rate video is
    resampled to it.
    align_smoothing_s / landmark_smoothing_s: sigma of the zero-phase Gaussian over time applied to the crop
    transform / the stored landmarks (zero-phase, so no lag, unlike the tracker's causal One-Euro filter).
    max_yaw_deg: frames turned further away are skipped (the frontal mesh and crop break down).
    min_run_s: face-found stretches shorter than this are skipped (flickering detections, not a usable face).
    min_usable_s: fewer usable seconds than this is an error.
    faces_check_every_s: how often the detector looks for other people in the frame.
    """

    size_px: int = 256
    fps: float | None = None
    face_width_frac: float = 0.45
    face_center_y_frac: float = 0.5
    align_smoothing_s: float = 0.05
    landmark_smoothing_s: float = 0.025
    max_yaw_deg: float = 45.0
    min_run_s: float = 0.1
    min_usable_s: float = 20.0
    faces_check_every_s: float = 2.0
    chunk_frames: int = 256
    thumb_px: int = 32

    def __post_init__(self) -> None:
        if self.size_px < 32 or self.size_px % 2:
            raise ValueError(f"size_px must be an even number >= 32, got {self.size_px}")
        if self.fps is not None and not self.fps > 0:
            raise ValueError(f"fps must be positive, got {self.fps}")
        if not 0.1 <= self.face_width_frac <= 0.9:
            raise ValueError(f"face_width_frac must be in [0.1, 0.9], got {self.face_width_frac}")
        if not 0.2 <= self.face_center_y_frac <= 0.8:
            raise ValueError(f"face_center_y_frac must be in [0.2, 0.8], got {self.face_center_y_frac}")
        if self.align_smoothing_s < 0 or self.landmark_smoothing_s < 0:
            raise ValueError("smoothing sigmas must be >= 0 s")
        if self.min_usable_s < 0 or self.min_run_s < 0 or self.faces_check_every_s <= 0:
            raise ValueError("min_usable_s, min_run_s must be >= 0 and faces_check_every_s > 0")
        if self.chunk_frames < 1 or self.thumb_px < 4:
            raise ValueError("chunk_frames must be >= 1 and thumb_px >= 4")


@dataclass(frozen=True)
class PrepareReport:
    """What happened to the frames: counts are frames of the constant-rate grid."""

    video: str
    source_size_px: tuple[int, int]  # (width, height)
    fps: float
    total_frames: int
    usable_frames: int
    skipped_no_face: int
    skipped_yaw: int
    skipped_short_runs: int
    longest_gap_s: float
    detector_runs: int
    track_fps: float  # frames per second of the track stage on this machine
    crops_fps: float

    @property
    def usable_s(self) -> float:
        return self.usable_frames / self.fps


@dataclass(frozen=True)
class PreparedVideo:
    """The prepared frames in a work folder. Per-frame arrays are in memory; images are read from chunk files
    (memory-mapped) on demand, so holding this object costs ~6 KB per frame.

    landmarks_px: (N, 468, 3) crop px (x right, y down, z toward viewer in the same px scale).
    image_to_crop: (N, 2, 3) affine from source-image px to crop px (pixel centres at +0.5 in both).
    pose_*: head pose fitted in crop space (HeadPose conventions); yaw_pitch_roll_deg (N, 3).
    source_frame_index: (N,) index on the constant-rate grid; t_s: (N,) its time on the audio clock.
    """

    root: Path
    size_px: int
    fps: float
    source_frame_index: np.ndarray
    t_s: np.ndarray
    image_to_crop: np.ndarray
    landmarks_px: np.ndarray
    pose_rotation: np.ndarray
    pose_scale_px: np.ndarray
    pose_translation_px: np.ndarray
    yaw_pitch_roll_deg: np.ndarray
    audio: np.ndarray
    audio_rate_hz: int
    chunk_frames: int
    report: PrepareReport
    ran_stages: tuple[str, ...] = field(default=())  # stages this call computed (empty: all reused)
    _maps: dict = field(default_factory=dict, repr=False, compare=False)

    def _open(self, path: Path) -> np.ndarray:
        # Memory maps are cheap to keep and slow to reopen per frame: one per chunk file, opened on first use.
        arr = self._maps.get(path)
        if arr is None:
            arr = self._maps[path] = np.load(path, mmap_mode="r")
        return arr

    @property
    def frame_count(self) -> int:
        return int(self.source_frame_index.size)

    def pose(self, i: int) -> HeadPose:
        return HeadPose(
            rotation=self.pose_rotation[i].astype(np.float64),
            scale_px=float(self.pose_scale_px[i]),
            translation_px=self.pose_translation_px[i].astype(np.float64),
            rms_error_px=0.0,
        )

    def _chunk(self, i: int) -> tuple[Path, int]:
        if not 0 <= i < self.frame_count:
            raise IndexError(f"frame {i} out of range 0..{self.frame_count - 1}")
        return self.root / FRAMES_DIR / _chunk_name(i // self.chunk_frames), i % self.chunk_frames

    def _read(self, name: str, indices) -> np.ndarray:
        single = np.isscalar(indices)
        idx = np.atleast_1d(np.asarray(indices, np.int64))
        rows = []
        for i in idx:
            folder, row = self._chunk(int(i))
            rows.append(np.array(self._open(folder / f"{name}.npy")[row]))
        out = np.stack(rows) if rows else np.zeros((0,), np.uint8)
        return out[0] if single else out

    def crops(self, indices) -> np.ndarray:
        """uint8 sRGB (S, S, 3) for one index, (n, S, S, 3) for several."""
        return self._read("crops", indices)

    def masks(self, indices) -> dict[str, np.ndarray]:
        """Bool masks by name (MASK_BITS), each (S, S) or (n, S, S)."""
        bits = self._read("masks", indices)
        return {name: (bits & bit) != 0 for name, bit in MASK_BITS.items()}

    def person_matte(self, indices) -> np.ndarray:
        """float32 in [0, 1], 1 on the person."""
        return self._read("matte", indices).astype(np.float32) / 255.0

    def coarse_normals(self, indices) -> np.ndarray:
        """float32 (S, S, 3) unit normals (camera space: x right, y up, z toward viewer); zero off the person."""
        return self._read("normals", indices).astype(np.float32)

    def thumbnails(self) -> np.ndarray:
        """(N, t, t, 3) uint8 small crops of every frame (for appearance comparisons)."""
        chunks = -(-self.frame_count // self.chunk_frames)
        return np.concatenate([np.load(self.root / FRAMES_DIR / _chunk_name(c) / "thumbs.npy") for c in range(chunks)])


FRAMES_DIR = "frames"


def _chunk_name(c: int) -> str:
    return f"chunk_{c:05d}"


# ------------------------------------------------------------------------------------------------------ decoding


@dataclass(frozen=True)
class _GridFrame:
    index: int
    t_s: float
    image: np.ndarray


def iter_constant_rate(path: str | os.PathLike, fps: float) -> Iterator[_GridFrame]:
    """Frames on the grid t_k = first_pts + k / fps, each the latest decoded frame shown at t_k (sample-and-hold).

    Streaming equivalent of models.media.resample_to_constant_rate: a variable-rate clip comes out at a constant
    rate without holding it in memory. The last frame lasts one median frame interval.
    """
    prev = None
    first_pts = None
    k = 0
    intervals: list[float] = []
    last_pts = None
    for frame in iter_video_frames(path):
        if first_pts is None:
            first_pts = frame.pts_s
        if last_pts is not None:
            intervals.append(frame.pts_s - last_pts)
        last_pts = frame.pts_s
        # Half a microsecond of slack, as resample_to_constant_rate, so a frame exactly on the grid is not lost.
        while prev is not None and first_pts + k / fps + 5e-7 < frame.pts_s:
            yield _GridFrame(k, first_pts + k / fps, prev)
            k += 1
        prev = frame.image
    if prev is None:
        return
    last_interval = float(np.median(intervals)) if intervals else 1.0 / fps
    count = max(1, int(round((last_pts + last_interval - first_pts) * fps)))
    while k < count:
        yield _GridFrame(k, first_pts + k / fps, prev)
        k += 1


def _progress(enabled: bool):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        disable=not enabled,
    )


def _rate_text(done: int, start: float) -> str:
    return f"{done / max(time.perf_counter() - start, 1e-9):5.1f} frames/s"


# ---------------------------------------------------------------------------------------------------- track stage


def _check_video(path: Path, params: PrepareParams) -> tuple[float, int, tuple[int, int], float]:
    """Container-level checks before any decoding work; returns (fps, expected frames, (w, h), duration_s)."""
    if not path.exists():
        raise ValueError(f"enrollment video '{path}' does not exist")
    info = probe_video(path)  # ValueError for corrupt files and files without a video stream
    if not info.has_audio:
        raise ValueError(
            f"'{path}' has no audio track; enrollment needs the person speaking (it learns lips from the sound)"
        )
    fps = float(params.fps or min(info.fps, MAX_AUTO_FPS))
    if 0 < info.duration_s < params.min_usable_s:
        raise ValueError(
            f"'{path}' is {info.duration_s:.1f} s long; enrollment needs at least {params.min_usable_s:g} s of "
            f"usable video (min_usable_s)"
        )
    expected = int(round(info.duration_s * fps)) if info.duration_s > 0 else 0
    return fps, expected, (info.width_px, info.height_px), info.duration_s


def _count_people(faces) -> int:
    # Faces less than half the width of the largest are background (posters, people far behind); the tracker
    # follows the best-scoring face anyway, what matters is a second comparable person.
    if not faces:
        return 0
    widest = max(f.width_px for f in faces)
    return sum(f.width_px >= 0.5 * widest for f in faces)


def _track(video: Path, params: PrepareParams, fps: float, expected: int, wd: WorkDir, progress: bool) -> dict:
    detector = FaceDetector()
    tracker = FaceTracker(detector=detector, mesh=FaceMesh(), params=TrackerParams(fps=fps))
    check_every = max(1, int(round(params.faces_check_every_s * fps)))
    t_s, found, landmarks, presence = [], [], [], []
    checks = multi = 0
    first_multi_s = None
    detector_runs = 0
    start = time.perf_counter()
    with _progress(progress) as bar:
        task = bar.add_task("tracking face", total=expected or None, rate="")
        for frame in iter_constant_rate(video, fps):
            if frame.index % check_every == 0:
                checks += 1
                if _count_people(detector.detect(frame.image)) > 1:
                    multi += 1
                    first_multi_s = frame.t_s if first_multi_s is None else first_multi_s
            r = tracker.process(frame.image, frame.t_s)
            detector_runs += int(r.detected)
            t_s.append(frame.t_s)
            found.append(r.found)
            presence.append(r.raw_landmarks.presence if r.found else 0.0)
            landmarks.append(r.raw_landmarks.points_px if r.found else np.full((NUM_LANDMARKS, 3), np.nan, np.float32))
            bar.update(task, advance=1, rate=_rate_text(len(t_s), start))
    elapsed = time.perf_counter() - start
    found_arr = np.array(found, bool)
    if not found_arr.any():
        raise ValueError(f"no face found in '{video}' (looked at all {len(found)} frames)")
    # One stray double detection is noise; a second person in a fifth of the checks is not.
    if multi and multi >= max(1, 0.2 * checks):
        raise ValueError(
            f"'{video}' shows more than one person: several faces in {multi} of {checks} checked frames "
            f"(first at {first_multi_s:.2f} s); enrollment needs a video of one person alone"
        )
    audio = read_audio(video, AUDIO_RATE_HZ)
    if audio is None or audio.size == 0:
        raise ValueError(f"'{video}' has an audio track with no decodable samples")
    atomic_save_npz(
        wd.path("track.npz"),
        t_s=np.array(t_s, np.float64),
        found=found_arr,
        presence=np.array(presence, np.float32),
        landmarks_raw=np.stack(landmarks).astype(np.float32),
    )
    atomic_save_npy(wd.path("audio.npy"), audio.astype(np.float32))
    return {
        "frames": len(t_s),
        "found": int(found_arr.sum()),
        "detector_runs": detector_runs,
        "faces_checks": checks,
        "multi_face_checks": multi,
        "fps": fps,
        "elapsed_s": elapsed,
        "frames_per_s": len(t_s) / max(elapsed, 1e-9),
    }


# ---------------------------------------------------------------------------------------------------- align stage


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) runs of True."""
    padded = np.concatenate([[False], mask, [False]])
    d = np.diff(padded.astype(np.int8))
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist()))


def smooth_zero_phase(x: np.ndarray, sigma_frames: float) -> np.ndarray:
    """Gaussian smoothing along axis 0 without lag.

    Each end is padded with the straight line fitted to its last ~4 sigma samples, so a steady drift (a head
    moving at constant speed) stays exactly where it is instead of being pulled back, and the end samples are
    smoothed like the rest (point reflection would pin them to their noisy values).
    """
    x = np.asarray(x, np.float64)
    n = x.shape[0]
    if sigma_frames <= 0 or n < 3:
        return x.copy()
    r = int(math.ceil(4 * sigma_frames))
    m = min(n, r + 1)
    flat = x.reshape(n, -1)

    def line(seg: np.ndarray, t_fit: np.ndarray, t_out: np.ndarray) -> np.ndarray:
        design = np.stack([np.ones_like(t_fit), t_fit], 1)
        coef, *_ = np.linalg.lstsq(design, seg, rcond=None)
        return np.stack([np.ones_like(t_out), t_out], 1) @ coef

    t = np.arange(m, dtype=np.float64)
    left = line(flat[:m], t, np.arange(-r, 0, dtype=np.float64))
    right = line(flat[n - m :], t, np.arange(m, m + r, dtype=np.float64))
    padded = np.concatenate([left, flat, right])
    return gaussian_filter1d(padded, sigma_frames, axis=0, mode="nearest")[r : r + n].reshape(x.shape)


@dataclass(frozen=True)
class CropLayout:
    """Where the canonical face sits in the crop: crop px per canonical unit and the crop position of the
    stable landmarks' centroid (the point the per-frame similarity is anchored at)."""

    size_px: int
    px_per_unit: float
    anchor_px: complex
    stable_canonical: np.ndarray  # (K,) complex, canonical (x, y-down), centred on their centroid


def crop_layout(params: PrepareParams) -> CropLayout:
    ref = load_canonical_face().vertices.astype(np.float64)
    oval = ref[load_topology().face_oval]
    width = float(oval[:, 0].max() - oval[:, 0].min())
    # Complex numbers x + i y with y down (image-like), so a similarity is one complex multiply-add.
    centre = complex((oval[:, 0].max() + oval[:, 0].min()) / 2, -(oval[:, 1].max() + oval[:, 1].min()) / 2)
    stable_v = ref[list(STABLE_LANDMARKS)]
    stable = stable_v[:, 0] - 1j * stable_v[:, 1]
    centroid = complex(stable.mean())
    s = params.size_px
    px_per_unit = params.face_width_frac * s / width
    anchor = complex(s / 2, params.face_center_y_frac * s) + px_per_unit * (centroid - centre)
    return CropLayout(size_px=s, px_per_unit=px_per_unit, anchor_px=anchor, stable_canonical=stable - centroid)


def _fit_stable(layout: CropLayout, xy: np.ndarray) -> np.ndarray:
    """Per-frame (log scale, angle, x, y) of the 2-D similarity image = a * canonical + b (complex least squares)."""
    q = layout.stable_canonical
    d = xy[:, list(STABLE_LANDMARKS), 0] + 1j * xy[:, list(STABLE_LANDMARKS), 1]
    b = d.mean(1)
    a = ((d - b[:, None]) * np.conj(q)).sum(1) / (np.abs(q) ** 2).sum()
    return np.stack([np.log(np.abs(a)), np.unwrap(np.angle(a)), b.real, b.imag], axis=1)


def _image_to_crop(layout: CropLayout, sim: np.ndarray) -> np.ndarray:
    """(N, 4) similarity params -> (N, 2, 3) image->crop affines: u = (s_c / a) (x - b) + anchor."""
    a = np.exp(sim[:, 0] + 1j * sim[:, 1])
    b = sim[:, 2] + 1j * sim[:, 3]
    m = layout.px_per_unit / a
    t = layout.anchor_px - m * b
    return np.stack(
        [np.stack([m.real, -m.imag, t.real], 1), np.stack([m.imag, m.real, t.imag], 1)], axis=1
    ).astype(np.float64)


def crop_upsampling(image_to_crop: np.ndarray) -> float:
    """Median crop px per source px over the frames (N, 2, 3): above 1 the crops are enlarged from the video, as
    for a face that is small in the picture, and the avatar is that much softer than its crop size."""
    scale = np.sqrt(np.abs(np.linalg.det(np.asarray(image_to_crop, np.float64)[:, :, :2])))
    return float(np.median(scale)) if scale.size else 0.0


def crop_rect(image_to_crop: np.ndarray, size_px: int) -> RotatedRect:
    """The crop as a rotated square in image px (for models.face.crop.sample_crop)."""
    inv = np.linalg.inv(np.vstack([image_to_crop, [0.0, 0.0, 1.0]]))[:2]
    centre = inv @ np.array([size_px / 2, size_px / 2, 1.0])
    step = inv[:, 0]  # image displacement per crop px along u
    side = float(np.hypot(*step) * size_px)
    return RotatedRect(float(centre[0]), float(centre[1]), side, side, float(math.atan2(step[1], step[0])))


def _align(wd: WorkDir, params: PrepareParams, fps: float, video: Path) -> dict:
    with np.load(wd.path("track.npz")) as z:
        t_s, found, raw = z["t_s"], z["found"], z["landmarks_raw"].astype(np.float64)
    total = found.size
    ref = load_canonical_face()
    yaw = np.full(total, np.nan)
    for i in np.flatnonzero(found):
        yaw[i] = estimate_head_pose(raw[i], ref.vertices, ref.rigid_mask).yaw_pitch_roll_deg()[0]
    yaw_ok = found & (np.abs(np.nan_to_num(yaw)) <= params.max_yaw_deg)
    min_run = max(1, int(round(params.min_run_s * fps)))
    usable = np.zeros(total, bool)
    for a, b in _runs(yaw_ok):
        if b - a >= min_run:
            usable[a:b] = True
    gaps = [b - a for a, b in _runs(~usable)]
    facts = {
        "total_frames": int(total),
        "usable_frames": int(usable.sum()),
        "skipped_no_face": int((~found).sum()),
        "skipped_yaw": int((found & ~yaw_ok).sum()),
        "skipped_short_runs": int((yaw_ok & ~usable).sum()),
        "longest_gap_s": float(max(gaps, default=0) / fps),
    }
    usable_s = usable.sum() / fps
    if usable_s < params.min_usable_s:
        raise ValueError(
            f"only {usable.sum()} of {total} frames ({usable_s:.1f} s) of '{video}' are usable; enrollment needs "
            f"at least {params.min_usable_s:g} s (min_usable_s). Skipped: {facts['skipped_no_face']} frames without "
            f"a face, {facts['skipped_yaw']} turned more than {params.max_yaw_deg:g} deg, "
            f"{facts['skipped_short_runs']} in stretches shorter than {params.min_run_s:g} s; longest gap "
            f"{facts['longest_gap_s']:.1f} s"
        )

    layout = crop_layout(params)
    smoothed = np.zeros_like(raw)
    sim = np.zeros((total, 4))
    for a, b in _runs(usable):
        smoothed[a:b] = smooth_zero_phase(raw[a:b], params.landmark_smoothing_s * fps)
        # The crop follows the raw stable points through a heavier smoothing than the stored landmarks get:
        # jitter of the crop moves the whole picture, jitter of a landmark only itself.
        sim[a:b] = smooth_zero_phase(_fit_stable(layout, raw[a:b]), params.align_smoothing_s * fps)
    idx = np.flatnonzero(usable)
    affine = _image_to_crop(layout, sim[idx])
    pts = smoothed[idx]
    crop_xy = np.einsum("nij,nkj->nki", affine[:, :, :2], pts[:, :, :2]) + affine[:, None, :, 2]
    scale = np.sqrt(np.abs(np.linalg.det(affine[:, :, :2])))
    crop_pts = np.concatenate([crop_xy, pts[:, :, 2:3] * scale[:, None, None]], axis=2)
    poses = [estimate_head_pose(p, ref.vertices, ref.rigid_mask) for p in crop_pts]
    atomic_save_npz(
        wd.path("align.npz"),
        source_frame_index=idx.astype(np.int64),
        t_s=t_s[idx],
        image_to_crop=affine,
        landmarks_px=crop_pts.astype(np.float32),
        pose_rotation=np.stack([p.rotation for p in poses]).astype(np.float32),
        pose_scale_px=np.array([p.scale_px for p in poses], np.float32),
        pose_translation_px=np.stack([p.translation_px for p in poses]).astype(np.float32),
        yaw_pitch_roll_deg=np.array([p.yaw_pitch_roll_deg() for p in poses], np.float32),
    )
    return facts


# ---------------------------------------------------------------------------------------------------- crops stage


def _crops(wd: WorkDir, video: Path, params: PrepareParams, fps: float, progress: bool) -> dict:
    with np.load(wd.path("align.npz")) as z:
        index = z["source_frame_index"]
        affine = z["image_to_crop"]
        landmarks = z["landmarks_px"]
        rot, scale, trans = z["pose_rotation"], z["pose_scale_px"], z["pose_translation_px"]
    frames_dir = wd.path(FRAMES_DIR)
    # Chunks from other parameters, an older align or an older per-frame computation must not be mixed in: the
    # folder carries what it was cut for.
    stamp = frames_dir / "cut_for.txt"
    cut_for = (f"align {wd.record('align').key} layers_version {LAYERS_VERSION} chunk_frames {params.chunk_frames} "
               f"thumb_px {params.thumb_px}")
    if frames_dir.exists() and (not stamp.is_file() or stamp.read_text().strip() != cut_for):
        shutil.rmtree(frames_dir)
    frames_dir.mkdir(parents=True, exist_ok=True)
    stamp.write_text(cut_for + "\n")
    for leftover in frames_dir.glob(".chunk_*.tmp"):  # temporary folders of a killed run
        shutil.rmtree(leftover, ignore_errors=True)

    n = index.size
    c = params.chunk_frames
    n_chunks = -(-n // c)
    todo = [k for k in range(n_chunks) if not (frames_dir / _chunk_name(k)).is_dir()]
    layers = FrameLayers(params.size_px)
    s = params.size_px
    start = time.perf_counter()
    done = 0
    with _progress(progress) as bar:
        task = bar.add_task("cropping frames", total=sum(min(c, n - k * c) for k in todo), rate="")
        if todo:
            # Usable frame positions per grid index, for the chunks still to write.
            wanted = {int(index[i]): i for k in todo for i in range(k * c, min((k + 1) * c, n))}
            last = max(wanted.values())
            writer = None
            try:
                for frame in iter_constant_rate(video, fps):
                    i = wanted.get(frame.index)
                    if i is None:
                        continue
                    k, row = divmod(i, c)
                    if writer is None or writer.chunk != k:
                        writer = _ChunkWriter(frames_dir, k, min(c, n - k * c), s, params.thumb_px)
                    pose = HeadPose(rot[i].astype(np.float64), float(scale[i]), trans[i].astype(np.float64), 0.0)
                    writer.put(row, frame.image, affine[i], landmarks[i], pose, layers)
                    done += 1
                    bar.update(task, advance=1, rate=_rate_text(done, start))
                    if row == writer.rows - 1:
                        writer.finish()
                    if i == last:
                        break
            finally:
                if writer is not None and not writer.finished:
                    writer.abort()
            if done < sum(min(c, n - k * c) for k in todo):
                raise ValueError(f"'{video}' ended before grid frame {index[last]} while cutting crops (file changed?)")
    elapsed = time.perf_counter() - start
    return {"chunks": n_chunks, "frames_cut": done, "elapsed_s": elapsed, "frames_per_s": done / max(elapsed, 1e-9)}


class _ChunkWriter:
    """Fills one chunk's arrays (memory-mapped, in a temporary folder) and renames the folder when complete."""

    def __init__(self, frames_dir: Path, chunk: int, rows: int, size_px: int, thumb_px: int) -> None:
        self.chunk, self.rows, self.finished = chunk, rows, False
        self.final = frames_dir / _chunk_name(chunk)
        self._ctx = atomic_path(self.final)
        self.tmp = self._ctx.__enter__()
        self.tmp.mkdir()
        s, t = size_px, thumb_px

        def mk(name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
            return np.lib.format.open_memmap(self.tmp / f"{name}.npy", "w+", dtype, shape)

        self.arrays = {
            "crops": mk("crops", (rows, s, s, 3), np.uint8),
            "masks": mk("masks", (rows, s, s), np.uint8),
            "matte": mk("matte", (rows, s, s), np.uint8),
            "normals": mk("normals", (rows, s, s, 3), np.float16),
            "thumbs": mk("thumbs", (rows, t, t, 3), np.uint8),
        }
        self.size_px, self.thumb_px = s, t

    def put(self, row: int, image: np.ndarray, affine: np.ndarray, landmarks: np.ndarray, pose: HeadPose,
            layers: FrameLayers) -> None:
        s, t = self.size_px, self.thumb_px
        crop = np.clip(np.rint(sample_crop(image, crop_rect(affine, s), s, s)), 0, 255).astype(np.uint8)
        matte = layers.person_matte(crop)
        a = self.arrays
        a["crops"][row] = crop
        a["masks"][row] = layers.masks(landmarks)
        a["matte"][row] = np.clip(np.rint(matte * 255.0), 0, 255).astype(np.uint8)
        a["normals"][row] = layers.coarse_normals(landmarks, pose, matte).astype(np.float16)
        thumb = sample_crop(crop, RotatedRect(s / 2, s / 2, float(s), float(s)), t, t)
        a["thumbs"][row] = np.clip(np.rint(thumb), 0, 255).astype(np.uint8)

    def abort(self) -> None:
        self.arrays.clear()
        try:
            self._ctx.__exit__(RuntimeError, RuntimeError("chunk aborted"), None)
        except RuntimeError:
            pass  # atomic_path re-raises what it was given after removing the temporary folder

    def finish(self) -> None:
        for arr in self.arrays.values():
            arr.flush()
        self.arrays.clear()
        self._ctx.__exit__(None, None, None)
        self.finished = True


# ------------------------------------------------------------------------------------------------------- driver


def track_stage_identity(video: Path, params: PrepareParams, fps: float | None = None
                         ) -> tuple[str, dict[str, str], dict]:
    """The track stage's (name, inputs, params) as its record keys them; `fps` defaults to the video's own rate.

    Shared with `scripts/eval_relight_synth.py --true-mesh`, which writes that stage from a synthetic clip's own
    mesh instead of the tracker's, so the later stages run on it unchanged."""
    if fps is None:
        fps = _check_video(video, params)[0]
    return ("track", {"video": file_sha256(video)},
            {"fps": fps, "faces_check_every_s": params.faces_check_every_s, "version": FORMAT_VERSION})


def prepare_video(
    video_path: str | os.PathLike,
    workdir: WorkDir | str | os.PathLike,
    size_px: int | None = None,
    progress: bool = True,
    params: PrepareParams | None = None,
    **overrides,
) -> PreparedVideo:
    """Run (or reuse) the track, align and crops stages for `video_path` in `workdir`; return the prepared frames.

    `params` gives every setting (default PrepareParams(): 256 px); `size_px` and keyword overrides (e.g.
    min_usable_s=3) replace single fields. Raises ValueError for a missing/corrupt video, no video stream, no
    audio, no face, several people, or too few usable seconds.
    """
    params = params or PrepareParams()
    if size_px is not None:
        overrides["size_px"] = size_px
    if overrides:
        unknown = set(overrides) - set(PrepareParams.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown prepare settings {sorted(unknown)}; see PrepareParams")
        params = PrepareParams(**{**asdict(params), **overrides})
    wd = workdir if isinstance(workdir, WorkDir) else WorkDir(workdir)
    video = Path(video_path)
    fps, expected, size, _ = _check_video(video, params)
    p = asdict(params)
    ran: list[str] = []

    track_rec, did = wd.run_stage(
        *track_stage_identity(video, params, fps),
        lambda: (["track.npz", "audio.npy"], _track(video, params, fps, expected, wd, progress)),
    )
    ran += ["track"] if did else []
    align_keys = ("size_px", "face_width_frac", "face_center_y_frac", "align_smoothing_s", "landmark_smoothing_s",
                  "max_yaw_deg", "min_run_s", "min_usable_s")
    align_rec, did = wd.run_stage(
        "align",
        {"track": track_rec.key},
        {k: p[k] for k in align_keys},
        lambda: (["align.npz"], _align(wd, params, fps, video)),
    )
    ran += ["align"] if did else []
    crops_rec, did = wd.run_stage(
        "crops",
        {"align": align_rec.key},
        {"chunk_frames": p["chunk_frames"], "thumb_px": p["thumb_px"], "layers_version": LAYERS_VERSION},
        lambda: ([FRAMES_DIR], _crops(wd, video, params, fps, progress)),
    )
    ran += ["crops"] if did else []
    return load_prepared(wd, ran_stages=tuple(ran), video=str(video), source_size_px=size)


def load_prepared(workdir: WorkDir | str | os.PathLike, ran_stages: tuple[str, ...] = (), video: str = "",
                  source_size_px: tuple[int, int] = (0, 0)) -> PreparedVideo:
    """The prepared frames of a work folder whose prepare stages have all finished."""
    wd = workdir if isinstance(workdir, WorkDir) else WorkDir(workdir)
    recs = {name: wd.record(name) for name in ("track", "align", "crops")}
    missing = [name for name, rec in recs.items() if rec is None]
    if missing:
        raise ValueError(f"work folder '{wd.root}' has not finished prepare stages {missing}; run prepare_video")
    track, align, crops = recs["track"].extra, recs["align"].extra, recs["crops"].extra
    with np.load(wd.path("align.npz")) as z:
        arrays = {k: z[k] for k in z.files}
    fps = float(track["fps"])
    report = PrepareReport(
        video=video,
        source_size_px=tuple(source_size_px),
        fps=fps,
        total_frames=int(align["total_frames"]),
        usable_frames=int(align["usable_frames"]),
        skipped_no_face=int(align["skipped_no_face"]),
        skipped_yaw=int(align["skipped_yaw"]),
        skipped_short_runs=int(align["skipped_short_runs"]),
        longest_gap_s=float(align["longest_gap_s"]),
        detector_runs=int(track["detector_runs"]),
        track_fps=float(track["frames_per_s"]),
        crops_fps=float(crops["frames_per_s"]),
    )
    return PreparedVideo(
        root=wd.root,
        size_px=int(recs["align"].params["size_px"]),
        fps=fps,
        audio=np.load(wd.path("audio.npy"), mmap_mode="r"),
        audio_rate_hz=AUDIO_RATE_HZ,
        chunk_frames=int(recs["crops"].params["chunk_frames"]),
        report=report,
        ran_stages=ran_stages,
        **arrays,
    )
