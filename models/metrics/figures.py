"""Pictures for an evaluation report: a contact sheet of frames and plots of the per-frame and sync curves.

matplotlib (Agg, no display) is imported only here, and only when a picture is asked for.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from models.metrics.lipsync import SyncEstimate
from models.metrics.sequence import SheetSample


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | os.PathLike) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


def save_contact_sheet(samples: Sequence[SheetSample], path: str | os.PathLike) -> None:
    """Columns are frames; rows are prediction, ground truth and |pred - gt| (brightened 4x to show small errors)."""
    if not samples:
        raise ValueError("no frames for the contact sheet")
    plt = _pyplot()
    h, w = samples[0].pred.shape[:2]
    cols = len(samples)
    fig, axes = plt.subplots(3, cols, figsize=(2.2 * cols * w / h + 0.6, 3 * 2.2 + 0.4), squeeze=False)
    row_names = ("prediction", "ground truth", "|error| x4")
    for c, sample in enumerate(samples):
        error = np.clip(sample.abs_error.astype(np.float32) * 4, 0, 255).astype(np.uint8)
        for r, image in enumerate((sample.pred, sample.gt, error)):
            ax = axes[r][c]
            ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(row_names[r])
        psnr = "identical" if not np.isfinite(sample.psnr_db) else f"{sample.psnr_db:.1f} dB"
        axes[0][c].set_title(f"frame {sample.index}\n{psnr}", fontsize=9)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def save_plots(
    path: str | os.PathLike,
    frame_indices: Sequence[int] | None = None,
    psnr_db: Sequence[float] | None = None,
    psnr_cap_db: float = 100.0,
    sync: dict[str, SyncEstimate] | None = None,
) -> None:
    """Per-frame PSNR (if given) and correlation vs lag for each named sync estimate (if given), side by side."""
    panels = int(psnr_db is not None) + int(bool(sync))
    if panels == 0:
        raise ValueError("nothing to plot: no per-frame scores and no lip-sync curve")
    plt = _pyplot()
    fig, axes = plt.subplots(1, panels, figsize=(6.4 * panels, 3.6), squeeze=False)
    axes = list(axes[0])
    if psnr_db is not None:
        ax = axes.pop(0)
        values = np.minimum(np.asarray(psnr_db, dtype=float), psnr_cap_db)
        ax.plot(frame_indices, values, lw=1)
        ax.set_xlabel("frame")
        ax.set_ylabel("PSNR (dB)")
        ax.set_title(f"PSNR per frame (identical frames drawn at {psnr_cap_db:.0f} dB)", fontsize=10)
        ax.grid(alpha=0.3)
    if sync:
        ax = axes.pop(0)
        for name, estimate in sync.items():
            ax.plot(estimate.lags_ms, estimate.correlation, lw=1, label=f"{name}: {estimate.offset_ms:+.1f} ms")
            ax.axvline(estimate.offset_ms, lw=0.8, ls="--", color=ax.lines[-1].get_color())
        ax.set_xlabel("lag (ms; > 0 = audio lags video)")
        ax.set_ylabel("correlation")
        ax.set_title("mouth opening vs audio loudness", fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
