"""Score a stream of (prediction, ground truth) frame pairs in one pass with constant memory.

Per-frame PSNR/SSIM (full frame and inside an optional region-of-interest mask), optional normal-map scores, and
flicker of both streams outside the mask. Frames are consumed as they arrive, so 24 s of 720p never has to sit in
memory; a few downscaled samples are kept for a contact sheet.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from models.metrics.image import mse, normal_angular_error_deg, psnr_from_mse, psnr_grad_db, ssim_map
from models.metrics.temporal import FlickerMeter


@dataclass(frozen=True)
class FramePair:
    """One frame of each stream and, optionally, the region-of-interest mask for it (True = scored region)."""

    index: int
    pred: np.ndarray  # uint8 (H, W, 3)
    gt: np.ndarray  # uint8 (H, W, 3)
    roi_mask: np.ndarray | None = None  # bool (H, W)


@dataclass(frozen=True)
class SheetSample:
    """A downscaled frame pair and its error, for the contact sheet."""

    index: int
    pred: np.ndarray
    gt: np.ndarray
    abs_error: np.ndarray  # mean |pred - gt| over channels, uint8, on the 0..255 scale
    psnr_db: float


@dataclass
class SequenceScores:
    """Per-frame scores of a prediction against ground truth (NaN where a score does not apply)."""

    frame_indices: list[int] = field(default_factory=list)
    psnr_db: list[float] = field(default_factory=list)  # +inf where the frames are identical
    ssim: list[float] = field(default_factory=list)
    roi_psnr_db: list[float] = field(default_factory=list)
    roi_ssim: list[float] = field(default_factory=list)
    psnr_grad_db: list[float] = field(default_factory=list)
    normal_error_deg: list[float] = field(default_factory=list)
    pred_flicker: float = float("nan")  # mean |frame-to-frame change| outside the mask, 0..255
    gt_flicker: float = float("nan")
    flicker_region: str = "full frame"
    frame_size_px: tuple[int, int] = (0, 0)  # (width, height)
    sheet_samples: list[SheetSample] = field(default_factory=list)


class _EvenlySpacedSamples:
    """Keeps about `count` evenly spaced items of a stream of unknown length.

    Items at multiples of a stride are kept; when more than 2 * count are held the stride doubles and every other
    one is dropped, so memory stays bounded and the kept ones stay evenly spread over the whole stream.
    """

    def __init__(self, count: int) -> None:
        self.count = count
        self.stride = 1
        self.items: list[SheetSample] = []

    def wants(self, index: int) -> bool:
        return self.count > 0 and index % self.stride == 0

    def add(self, item: SheetSample) -> None:
        self.items.append(item)
        if len(self.items) > 2 * self.count:
            self.stride *= 2
            self.items = [s for s in self.items if s.index % self.stride == 0]

    def pick(self) -> list[SheetSample]:
        if len(self.items) <= self.count:
            return list(self.items)
        chosen = np.linspace(0, len(self.items) - 1, self.count).round().astype(int)
        return [self.items[i] for i in chosen]


def _downscale(image: np.ndarray, max_width_px: int) -> np.ndarray:
    """Box-average by an integer factor so the width is at most max_width_px (sheet thumbnails)."""
    factor = max(1, int(np.ceil(image.shape[1] / max_width_px)))
    if factor == 1:
        return image.copy()
    h, w = (image.shape[0] // factor) * factor, (image.shape[1] // factor) * factor
    blocks = image[:h, :w].reshape(h // factor, factor, w // factor, factor, *image.shape[2:])
    return blocks.mean(axis=(1, 3)).round().astype(np.uint8)


def score_sequence(
    pairs: Iterable[FramePair],
    normal_maps: bool = False,
    ssim_every: int = 1,
    sheet_count: int = 6,
    sheet_width_px: int = 320,
) -> SequenceScores:
    """Score all pairs. ssim_every > 1 computes SSIM on every n-th frame only (it dominates the run time)."""
    scores = SequenceScores()
    pred_flicker, gt_flicker = FlickerMeter(), FlickerMeter()
    samples = _EvenlySpacedSamples(sheet_count)
    nan = float("nan")
    for pair in pairs:
        pred, gt, roi = pair.pred, pair.gt, pair.roi_mask
        if pred.shape != gt.shape:
            raise ValueError(
                f"frame {pair.index}: prediction is {pred.shape[1]}x{pred.shape[0]} px but ground truth is "
                f"{gt.shape[1]}x{gt.shape[0]} px"
            )
        if not scores.frame_indices:
            scores.frame_size_px = (pred.shape[1], pred.shape[0])
        elif (pred.shape[1], pred.shape[0]) != scores.frame_size_px:
            raise ValueError(f"frame {pair.index} is {pred.shape[1]}x{pred.shape[0]} px; earlier frames differ")
        psnr = psnr_from_mse(mse(pred, gt))
        scores.frame_indices.append(pair.index)
        scores.psnr_db.append(psnr)
        scores.roi_psnr_db.append(psnr_from_mse(mse(pred, gt, roi)) if roi is not None else nan)

        if pair.index % ssim_every == 0:
            full = ssim_map(pred, gt)
            scores.ssim.append(float(full.mean()))
            scores.roi_ssim.append(float(full[roi].mean()) if roi is not None else nan)
        else:
            scores.ssim.append(nan)
            scores.roi_ssim.append(nan)

        if normal_maps:
            scores.psnr_grad_db.append(psnr_grad_db(pred, gt, roi))
            scores.normal_error_deg.append(normal_angular_error_deg(pred, gt, roi))

        # Flicker is measured where the scene should not move: outside the region of interest.
        static = ~roi if roi is not None else None
        if static is not None and not static.any():
            static = None  # an all-foreground mask leaves nothing static; fall back to the full frame
        pred_flicker.add(pred, static)
        gt_flicker.add(gt, static)
        if roi is not None:
            scores.flicker_region = "outside mask"

        if samples.wants(pair.index):
            error = np.abs(pred.astype(np.int16) - gt.astype(np.int16)).mean(axis=-1).astype(np.uint8)
            samples.add(
                SheetSample(
                    index=pair.index,
                    pred=_downscale(pred, sheet_width_px),
                    gt=_downscale(gt, sheet_width_px),
                    abs_error=_downscale(error, sheet_width_px),
                    psnr_db=psnr,
                )
            )
    if not scores.frame_indices:
        raise ValueError("no frames to score")
    scores.pred_flicker = pred_flicker.mean_abs_change
    scores.gt_flicker = gt_flicker.mean_abs_change
    scores.sheet_samples = samples.pick()
    return scores


def zip_frames(
    pred_frames: Iterable[np.ndarray],
    gt_frames: Iterable[np.ndarray],
    masks: Callable[[int], np.ndarray | None] | None = None,
    pred_name: str = "prediction",
    gt_name: str = "ground truth",
) -> Iterator[FramePair]:
    """Pair two frame streams, raising ValueError when one ends before the other (mismatched frame counts)."""
    pred_iter, gt_iter = iter(pred_frames), iter(gt_frames)
    index = 0
    while True:
        pred = next(pred_iter, None)
        gt = next(gt_iter, None)
        if pred is None and gt is None:
            return
        if pred is None or gt is None:
            longer_name, longer = (gt_name, gt_iter) if pred is None else (pred_name, pred_iter)
            extra = 1 + sum(1 for _ in longer)
            shorter_name = pred_name if pred is None else gt_name
            raise ValueError(
                f"mismatched frame counts: {shorter_name} has {index} frames, {longer_name} has {index + extra}"
            )
        yield FramePair(index=index, pred=pred, gt=gt, roi_mask=masks(index) if masks else None)
        index += 1
