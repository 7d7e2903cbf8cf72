"""`relitcam eval`: score a rendered video against ground truth, or measure the lip sync of one video.

    relitcam eval PRED GT -o report.json [--sheet sheet.png] [--plots plots.png] [--mask-dir MASKS]
    relitcam eval --sync VIDEO [-o report.json] [--plots plots.png]

PRED and GT are video files or folders of frames (000000.png, ...). The report is JSON; see docs/eval.md for every
field. Infinite PSNR (identical frames) is written as the cap PSNR_CAP_DB with a count of capped frames, since JSON
has no infinity.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models import media
from models.metrics.image import PSNR_CAP_DB
from models.metrics.landmarks import landmark_distance_px, load_landmarks_npz
from models.metrics.lipsync import SyncEstimate, mouth_audio_offset
from models.metrics.mouth import MouthTracker, face_mesh_mouth_tracker, mouth_landmark_indices
from models.metrics.sequence import SequenceScores, score_sequence, zip_frames


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="relitcam eval",
        description="Score a rendered video against ground truth (PSNR, SSIM, flicker, lip sync, landmarks), "
        "or with --sync measure the audio-video offset of one video.",
    )
    p.add_argument("pred", nargs="?", help="predicted video or frame folder")
    p.add_argument("gt", nargs="?", help="ground-truth video or frame folder")
    p.add_argument("--sync", metavar="VIDEO", help="only measure lip sync (audio-video offset) of this video")
    p.add_argument("-o", "--output", metavar="JSON", help="write the report here (default: print it)")
    p.add_argument("--sheet", metavar="PNG", help="contact sheet: prediction / ground truth / error for a few frames")
    p.add_argument("--plots", metavar="PNG", help="per-frame PSNR and lip-sync correlation vs lag")
    p.add_argument(
        "--mask-dir",
        metavar="PATH",
        help="region of interest (e.g. the face): a folder of per-frame masks (000000.png, ...) or one mask image; "
        "adds masked PSNR/SSIM, and flicker is then measured outside it",
    )
    p.add_argument("--fps", type=float, default=30.0, help="frame rate of frame folders (default 30)")
    p.add_argument("--max-frames", type=int, metavar="N", help="score only the first N frames")
    p.add_argument("--ssim-every", type=int, default=1, metavar="N", help="SSIM on every N-th frame (it is slow)")
    p.add_argument("--normals", action="store_true", help="inputs are normal maps: add PSNR_grad and angular error")
    p.add_argument("--gt-landmarks", metavar="NPZ", help="ground-truth landmarks (frames, points, 2): adds LMD")
    p.add_argument("--pred-landmarks", metavar="NPZ", help="predicted landmarks (default: tracked on PRED)")
    p.add_argument("--no-sync", action="store_true", help="skip lip sync in PRED GT mode")
    p.add_argument("--max-lag-ms", type=float, default=500.0, help="lip-sync search range +-ms (default 500)")
    return p


# ---------------------------------------------------------------------------------------------------------- inputs


def _check_input(path: str, role: str) -> str:
    if not Path(path).exists():
        raise FileNotFoundError(f"{role} '{path}' does not exist")
    return path


class MaskSource:
    """Region-of-interest masks: one image for every frame, or one per frame from a folder."""

    def __init__(self, path: str) -> None:
        self.path = Path(_check_input(path, "mask"))
        self.files = media.list_frame_files(self.path) if self.path.is_dir() else [self.path]
        self._single = None if self.path.is_dir() else self._load(self.path)

    @staticmethod
    def _load(path: Path) -> np.ndarray:
        mask = media.read_image_rgb(path)[..., 0] > 127
        if not mask.any():
            raise ValueError(f"mask '{path}' selects no pixels")
        return mask

    def check_count(self, frame_count: int) -> None:
        if self._single is None and frame_count and len(self.files) != frame_count:
            raise ValueError(f"mismatched frame counts: mask folder '{self.path}' has {len(self.files)} masks "
                             f"for {frame_count} frames")

    def __call__(self, index: int) -> np.ndarray:
        if self._single is not None:
            return self._single
        if index >= len(self.files):
            raise ValueError(f"mismatched frame counts: mask folder '{self.path}' has only {len(self.files)} masks")
        return self._load(self.files[index])


@dataclass
class _MouthLog:
    """Mouth measurements and frame times collected while frames stream past."""

    tracker: MouthTracker
    opening: list[float] = field(default_factory=list)
    landmarks: list[np.ndarray | None] = field(default_factory=list)
    pts_s: list[float] = field(default_factory=list)

    def add(self, frame: media.VideoFrame) -> None:
        m = self.tracker.measure(frame.image, frame.pts_s)
        self.opening.append(m.opening)
        self.landmarks.append(m.landmarks_px)
        self.pts_s.append(frame.pts_s)

    def landmark_array(self) -> np.ndarray:
        """(T, K, 2), NaN rows for frames without a face."""
        found = [lm for lm in self.landmarks if lm is not None]
        if not found:
            raise ValueError("the face tracker found no face on any frame")
        blank = np.full_like(found[0], np.nan, dtype=np.float64)
        return np.stack([blank if lm is None else lm for lm in self.landmarks])


def _images(frames: Iterator[media.VideoFrame], log: _MouthLog | None) -> Iterator[np.ndarray]:
    for frame in frames:
        if log is not None:
            log.add(frame)
        yield frame.image


def make_mouth_tracker() -> MouthTracker:
    """Seam for tests: the product uses the face mesh tracker."""
    return face_mesh_mouth_tracker()


# ---------------------------------------------------------------------------------------------------------- report


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _summary(values: list[float], cap: float | None = None) -> dict:
    """Mean / min / max over the frames where the score was computed (NaN = skipped), +inf capped at `cap`."""
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[~np.isnan(arr)]
    if arr.size == 0:
        return {"mean": None, "min": None, "max": None, "frames": 0}
    out: dict = {}
    if cap is not None:
        out["frames_at_cap"] = int(np.sum(arr >= cap))
        arr = np.minimum(arr, cap)
    out.update(mean=float(arr.mean()), min=float(arr.min()), max=float(arr.max()), frames=int(arr.size))
    return out


def _sync_report(estimate: SyncEstimate) -> dict:
    return {
        "offset_ms": round(estimate.offset_ms, 2),
        "peak_correlation": round(estimate.peak_correlation, 4),
        "at_search_edge": estimate.at_search_edge,
    }


def _frames_report(scores: SequenceScores, args) -> dict:
    psnr_capped = [min(v, PSNR_CAP_DB) for v in scores.psnr_db]
    report = {
        "frames": len(scores.frame_indices),
        "width_px": scores.frame_size_px[0],
        "height_px": scores.frame_size_px[1],
        "psnr_cap_db": PSNR_CAP_DB,
        "psnr_db": _summary(scores.psnr_db, PSNR_CAP_DB),
        "ssim": _summary(scores.ssim),
        "psnr_db_per_frame": [round(v, 3) for v in psnr_capped],
        "flicker": {
            "region": scores.flicker_region,
            "pred_mean_abs_change": _finite_or_none(scores.pred_flicker),
            "gt_mean_abs_change": _finite_or_none(scores.gt_flicker),
        },
    }
    if args.mask_dir:
        report["roi"] = {
            "psnr_db": _summary(scores.roi_psnr_db, PSNR_CAP_DB),
            "ssim": _summary(scores.roi_ssim),
        }
    if args.normals:
        report["normals"] = {
            "psnr_grad_db": _summary(scores.psnr_grad_db, PSNR_CAP_DB),
            "angular_error_deg": _summary(scores.normal_error_deg),
        }
    return report


def _write_report(report: dict, output: str | None) -> None:
    text = json.dumps(report, indent=2)
    if output is None:
        print(text)
        return
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text + "\n")
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------------------- modes


def _measure_sync(log: _MouthLog, audio: np.ndarray | None, max_lag_ms: float, name: str) -> SyncEstimate:
    if audio is None:
        raise ValueError(f"'{name}' has no audio; lip sync needs it")
    return mouth_audio_offset(
        np.asarray(log.opening), np.asarray(log.pts_s), audio, media.AUDIO_RATE_HZ, max_lag_ms=max_lag_ms
    )


def run_sync(args) -> dict:
    path = _check_input(args.sync, "video")
    if media.is_frame_dir(path):
        raise ValueError(f"'{path}' is a frame folder; lip sync needs a video with audio")
    audio = media.read_audio(path)
    if audio is None:
        raise ValueError(f"'{path}' has no audio; lip sync needs it")
    log = _MouthLog(make_mouth_tracker())
    for frame in media.iter_video_frames(path, args.max_frames):
        log.add(frame)
    estimate = _measure_sync(log, audio, args.max_lag_ms, path)
    if args.plots:
        from models.metrics.figures import save_plots

        save_plots(args.plots, sync={Path(path).name: estimate})
    report = {
        "video": path,
        "frames": len(log.opening),
        "frames_with_face": int(np.isfinite(log.opening).sum()),
        "lip_sync": _sync_report(estimate),
        "sign_convention": "offset_ms > 0: audio lags video",
    }
    return report


def run_compare(args) -> dict:
    pred_path = _check_input(args.pred, "prediction")
    gt_path = _check_input(args.gt, "ground truth")
    pred_count, gt_count = media.count_frames(pred_path), media.count_frames(gt_path)
    if args.max_frames is not None:
        pred_count, gt_count = min(pred_count, args.max_frames), min(gt_count, args.max_frames)
    # Headers can be absent (0); then the streaming pass catches a mismatch when one input runs out.
    if pred_count and gt_count and pred_count != gt_count:
        raise ValueError(f"mismatched frame counts: prediction has {pred_count} frames, ground truth has {gt_count}")
    masks = MaskSource(args.mask_dir) if args.mask_dir else None
    if masks is not None:
        masks.check_count(pred_count or gt_count)

    gt_landmarks = load_landmarks_npz(args.gt_landmarks) if args.gt_landmarks else None
    pred_landmarks = load_landmarks_npz(args.pred_landmarks) if args.pred_landmarks else None

    pred_audio = None if args.no_sync else media.source_audio(pred_path)
    gt_audio = None if args.no_sync else media.source_audio(gt_path)
    need_pred_track = pred_audio is not None or (gt_landmarks is not None and pred_landmarks is None)
    need_gt_track = gt_audio is not None
    sync_skipped = None
    tracker_error = None
    pred_log = gt_log = None
    if need_pred_track or need_gt_track:
        try:
            pred_log = _MouthLog(make_mouth_tracker()) if need_pred_track else None
            gt_log = _MouthLog(make_mouth_tracker()) if need_gt_track else None
        except ValueError as e:
            tracker_error = str(e)
            pred_log = gt_log = None
    if gt_landmarks is not None and pred_landmarks is None and pred_log is None:
        raise ValueError(f"--gt-landmarks needs --pred-landmarks or the face tracker ({tracker_error})")

    pred_frames = media.iter_frames(pred_path, args.fps, args.max_frames)
    gt_frames = media.iter_frames(gt_path, args.fps, args.max_frames)
    pairs = zip_frames(_images(pred_frames, pred_log), _images(gt_frames, gt_log), masks)
    scores = score_sequence(pairs, normal_maps=args.normals, ssim_every=max(1, args.ssim_every))

    report = {"pred": pred_path, "gt": gt_path, **_frames_report(scores, args)}

    sync: dict[str, SyncEstimate] = {}
    if args.no_sync:
        sync_skipped = "--no-sync"
    elif tracker_error is not None:
        sync_skipped = tracker_error
    elif pred_audio is None and gt_audio is None:
        sync_skipped = "neither input has audio"
    else:
        for name, log, audio in (("pred", pred_log, pred_audio), ("gt", gt_log, gt_audio)):
            if log is not None and audio is not None:
                try:
                    sync[name] = _measure_sync(log, audio, args.max_lag_ms, name)
                except ValueError as e:  # e.g. no face or silence in one input: report it, keep the rest
                    report.setdefault("lip_sync_errors", {})[name] = str(e)
    lip_sync: dict = {"sign_convention": "offset_ms > 0: audio lags video"}
    if sync_skipped:
        lip_sync["skipped"] = sync_skipped
    lip_sync.update({name: _sync_report(est) for name, est in sync.items()})
    if "pred" in sync and "gt" in sync:
        lip_sync["pred_minus_gt_offset_ms"] = round(sync["pred"].offset_ms - sync["gt"].offset_ms, 2)
    report["lip_sync"] = lip_sync

    if gt_landmarks is not None:
        tracked = pred_landmarks if pred_landmarks is not None else pred_log.landmark_array()
        frames = report["frames"]
        if gt_landmarks.shape[0] < frames or tracked.shape[0] < frames:
            raise ValueError(f"mismatched frame counts: {frames} frames but landmarks for "
                             f"{gt_landmarks.shape[0]} (ground truth) and {tracked.shape[0]} (prediction)")
        indices = mouth_landmark_indices() if pred_landmarks is None else None
        report["landmarks"] = {
            "lmd_px": landmark_distance_px(tracked[:frames], gt_landmarks[:frames], indices),
            "points": "mouth" if indices is not None else "all",
        }

    if args.sheet:
        from models.metrics.figures import save_contact_sheet

        save_contact_sheet(scores.sheet_samples, args.sheet)
    if args.plots:
        from models.metrics.figures import save_plots

        save_plots(args.plots, scores.frame_indices, scores.psnr_db, PSNR_CAP_DB, sync or None)
    return report


def _print_summary(report: dict) -> None:
    lines = []
    if "psnr_db" in report:
        psnr = report["psnr_db"]
        capped = f" ({psnr['frames_at_cap']} identical frames at the {PSNR_CAP_DB:.0f} dB cap)" if psnr.get(
            "frames_at_cap") else ""
        lines.append(f"frames {report['frames']}  PSNR {psnr['mean']:.2f} dB{capped}  SSIM {report['ssim']['mean']:.4f}")
        fl = report["flicker"]
        if fl["pred_mean_abs_change"] is not None:
            lines.append(f"flicker ({fl['region']}): pred {fl['pred_mean_abs_change']:.3f}  "
                         f"gt {fl['gt_mean_abs_change']:.3f}")
    for name in ("pred", "gt"):
        s = report.get("lip_sync", {}).get(name)
        if s:
            lines.append(f"lip sync {name}: offset {s['offset_ms']:+.1f} ms (audio lags video when > 0), "
                         f"correlation {s['peak_correlation']:.3f}")
    if "lip_sync" in report and "offset_ms" in report["lip_sync"]:
        s = report["lip_sync"]
        lines.append(f"lip sync: offset {s['offset_ms']:+.1f} ms (audio lags video when > 0), "
                     f"correlation {s['peak_correlation']:.3f}")
    print("\n".join(lines))


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.max_frames is not None and args.max_frames < 1:
        parser.error("--max-frames must be at least 1")
    if args.ssim_every < 1:
        parser.error("--ssim-every must be at least 1")
    if args.sync:
        if args.pred or args.gt:
            parser.error("--sync takes one video; do not also give PRED GT")
        if args.sheet:
            parser.error("--sheet needs PRED and GT")
        report = run_sync(args)
    else:
        if not (args.pred and args.gt):
            parser.error("give PRED and GT, or --sync VIDEO")
        report = run_compare(args)
    _write_report(report, args.output)
    if args.output:
        _print_summary(report)
        print(f"report: {args.output}", file=sys.stderr)
    return 0
