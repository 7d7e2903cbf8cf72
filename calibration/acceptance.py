"""The INT8 acceptance rule: per net, INT8 is kept only if it stays within 40 dB PSNR of FP16 on held-out frames.

PSNR here compares the INT8 engine's outputs to the FP16 engine's on the same held-out inputs (frames of the user's
enrollment that calibration never saw). Peak = the FP16 output's own range over the whole held-out set (max - min),
so outputs in [0, 1] (albedo, blend), [-1, 1] (normals) and unbounded ones (lip coefficients) are judged alike;
a constant output gets peak 1. The worst output of the worst frame decides: one bad frame is a visible glitch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

INT8_MIN_PSNR_DB = 40.0


def psnr_db(reference: np.ndarray, test: np.ndarray, peak: float) -> float:
    """10 log10(peak^2 / MSE); inf when identical."""
    ref = np.asarray(reference, np.float64)
    got = np.asarray(test, np.float64)
    if ref.shape != got.shape:
        raise ValueError(f"PSNR of arrays with different shapes {ref.shape} and {got.shape}")
    if not (math.isfinite(peak) and peak > 0):
        raise ValueError(f"PSNR peak must be a finite number > 0, got {peak}")
    if not np.all(np.isfinite(got)):
        return -math.inf  # NaN/inf from an overflowing INT8 path is the worst possible result
    mse = float(np.mean((ref - got) ** 2))
    return math.inf if mse == 0.0 else 10.0 * math.log10(peak * peak / mse)


@dataclass(frozen=True)
class PrecisionDecision:
    net: str
    precision: str  # "int8" or "fp16"
    worst_psnr_db: float  # over held-out frames and outputs (INT8 vs FP16)
    worst_output: str
    threshold_db: float
    frames: int

    def describe(self) -> str:
        verdict = "INT8 kept" if self.precision == "int8" else "INT8 rejected, FP16 used"
        return (f"{self.net}: {verdict} (worst PSNR {self.worst_psnr_db:.1f} dB on {self.worst_output!r} over "
                f"{self.frames} held-out frames; threshold {self.threshold_db:.0f} dB)")


def worst_psnr_db(net: str, reference: Sequence[Mapping[str, np.ndarray]],
                  test: Sequence[Mapping[str, np.ndarray]]) -> tuple[float, str]:
    """(worst PSNR, the output it was on) of `test`'s per-frame outputs against `reference`'s, peak = each output's
    range over all of `reference` (the module doc)."""
    if len(reference) != len(test):
        raise ValueError(f"net {net!r}: {len(reference)} reference frames but {len(test)} to judge")
    if not reference:
        raise ValueError(f"net {net!r}: no frames to judge")
    names = list(reference[0])
    worst, worst_name = math.inf, names[0]
    for name in names:
        refs = [np.asarray(f[name], np.float64) for f in reference]
        lo = min(float(r.min()) for r in refs)
        hi = max(float(r.max()) for r in refs)
        peak = hi - lo if hi > lo else 1.0
        for ref, frame in zip(refs, test):
            if name not in frame:
                raise ValueError(f"net {net!r}: outputs lack {name!r}")
            p = psnr_db(ref, frame[name], peak)
            if p < worst:
                worst, worst_name = p, name
    return worst, worst_name


def choose_precision(
    net: str,
    fp16_outputs: Sequence[Mapping[str, np.ndarray]],
    int8_outputs: Sequence[Mapping[str, np.ndarray]],
    threshold_db: float = INT8_MIN_PSNR_DB,
) -> PrecisionDecision:
    """Apply the rule to per-frame outputs of both engines (same frames, same order)."""
    if len(fp16_outputs) != len(int8_outputs):
        raise ValueError(f"{len(fp16_outputs)} FP16 frames but {len(int8_outputs)} INT8 frames")
    if not fp16_outputs:
        raise ValueError(f"net {net!r}: no held-out frames to judge INT8 on; keeping it unjudged is not allowed")
    worst, worst_name = worst_psnr_db(net, fp16_outputs, int8_outputs)
    keep = worst >= threshold_db
    return PrecisionDecision(net, "int8" if keep else "fp16", worst, worst_name, threshold_db, len(fp16_outputs))
