"""Personal audio-to-expression head, fitted at enrollment on top of the frozen speaker-independent encoder.

The encoder (`audio_encoder.py`) already knows *when* the mouth opens, rounds and closes for any voice; what differs
per person is *how* that looks in their lip expression coefficients (PCA of their own lip shapes, `n_lip` ~12-16,
at the video fps). So enrollment fits only a small map from the encoder's anchor-frame features and visemes to those
coefficients, on the first 80 % of the enrollment video, validated on the last 20 %: a ridge-regression linear layer
whose strength is chosen by blocked cross-validation inside the training span, plus a 2-layer MLP on its residual that
is kept only when the same cross-validation says it helps. A 2-minute video gives ~2400 training frames, too few for an
unregularised MLP on 164 inputs: on the real 24 s test clip the MLP alone lost to ridge (mouth-opening r 0.29 vs 0.41). The encoder features are computed on the clean enrollment audio and on a few copies
with the corpus augmentation (noise, EQ, reverb, level), so the head does not latch onto this one microphone.

Output spread calibration (`A2EConfig.calibrate_spread`, on by default): a least-squares fit on features that explain
only part of the target (audio features are noisy, and the tracked lips carry tracker noise) predicts the conditional
mean, whose spread is the target's times roughly the correlation: on the real 24 s clip the predicted mouth opening
moved 1/3.7 as much as the measured one, and the rendered mouth barely opened. After the fit, each coefficient's
prediction is scaled about its mean by gain = std(measured) / std(predicted), both on the clean training rows only
(never the held-back part), clipped to `spread_gain_range` so a coefficient the audio hardly predicts is not blown
up into noise (the calibrated spread never exceeds the measured one). The gain is folded into the head's last layers
(linear and MLP output), so the exported ONNX has the same inputs, outputs and ops. Correlations are unchanged by a
positive per-coefficient gain; RMSE rises (the conditional mean minimises it); the report gives the held-out std
ratio before and after.

The exported chain (mel window -> lip coefficients) is one ONNX file, the bundle's "audio_to_expression" net:
input `mel_window` (1, n_mels, window_frames), output `lip_coeffs` (1, n_lip).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from models.audio.mel import MelSpec, log_mel
from models.audio.window import mel_frame_for_video_frame
from models.enroll.audio_corpus import augment_audio, draw_augment
from models.enroll.audio_encoder import SpeakerIndependentEncoder, band_limited_lag_ms, encode_mel, load_encoder, pearson


@dataclass(frozen=True)
class A2EConfig:
    hidden: int = 64
    steps: int = 800  # MLP residual training steps
    batch: int = 2048  # frames per step; bounds the fit time whatever the video length
    cv_folds: int = 5
    ridge_grid: tuple[float, ...] = (1e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0)
    try_mlp: bool = True
    lr: float = 3e-3
    weight_decay: float = 1e-2
    dropout: float = 0.2
    train_fraction: float = 0.8
    n_augmented_copies: int = 3  # augmented renditions of the enrollment audio besides the clean one
    augment_strength: float = 0.7
    # Variance matching of the head's output on the training span (see the module docstring): undoes the ridge's
    # shrinkage toward the mean so the mouth opens as far as the person's does. Gains clipped to this range.
    calibrate_spread: bool = True
    spread_gain_range: tuple[float, float] = (1.0, 4.0)
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.train_fraction < 1.0:
            raise ValueError(f"train_fraction must be in (0, 1), got {self.train_fraction}")
        if self.hidden <= 0 or self.steps <= 0 or self.n_augmented_copies < 0:
            raise ValueError(f"A2EConfig sizes must be positive: {self}")
        lo, hi = self.spread_gain_range
        if not 0.0 < lo <= hi:
            raise ValueError(f"spread_gain_range must be (lo, hi) with 0 < lo <= hi, got {self.spread_gain_range}")


@dataclass(frozen=True)
class A2EReport:
    """Validation on the held-back last part of the enrollment video (frames the head never trained on)."""

    n_train_frames: int
    n_val_frames: int
    per_coeff_r: list[float]  # Pearson r of predicted vs measured coefficient, per coefficient
    mean_r: float
    variance_weighted_r: float  # r averaged with each coefficient's variance as weight (PCA: the big motions count most)
    val_rmse: float  # in coefficient units
    # Lip-sync meter (models.metrics.lipsync) on the validation span, applied to a mouth-opening projection of the
    # coefficients: offset_ms > 0 means audio after mouth. Predicted should read like the real one.
    lipsync_offset_pred_ms: float | None
    lipsync_offset_true_ms: float | None
    lipsync_r_pred: float | None
    opening_r: float  # Pearson r of predicted vs measured mouth-opening projection (see opening_direction)
    lag_pred_vs_true_ms: float | None  # > 0: predicted lips are late against the measured ones
    fit_seconds: float
    notes: list[str] = field(default_factory=list)
    # Output spread calibration (A2EConfig.calibrate_spread): per-coefficient gains folded into the head (all 1.0
    # when off), measured on the clean training rows; and the held-out std(predicted) / std(measured), per
    # coefficient and for the opening projection, with the calibrated head and with the raw ridge/MLP head.
    spread_gain: list[float] = field(default_factory=list)
    val_std_ratio: list[float] = field(default_factory=list)
    val_std_ratio_uncalibrated: list[float] = field(default_factory=list)
    val_opening_std_ratio: float | None = None
    val_opening_std_ratio_uncalibrated: float | None = None
    val_rmse_uncalibrated: float | None = None


class PersonalHead(nn.Module):
    """[features, visemes] -> lip coefficients: standardise, linear (ridge) + optional MLP residual, de-standardise."""

    def __init__(self, n_in: int, n_lip: int, hidden: int, dropout: float, use_mlp: bool):
        super().__init__()
        self.register_buffer("in_mean", torch.zeros(n_in))
        self.register_buffer("in_std", torch.ones(n_in))
        self.linear = nn.Linear(n_in, n_lip)
        self.mlp = (nn.Sequential(nn.Linear(n_in, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, n_lip))
                    if use_mlp else None)
        self.register_buffer("coeff_mean", torch.zeros(n_lip))
        self.register_buffer("coeff_std", torch.ones(n_lip))

    def standardised(self, x: torch.Tensor) -> torch.Tensor:
        """Output in standardised coefficient units (what the losses compare)."""
        z = (x - self.in_mean) / self.in_std
        out = self.linear(z)
        if self.mlp is not None:
            out = out + self.mlp(z)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.standardised(x) * self.coeff_std + self.coeff_mean

    @torch.no_grad()
    def fold_output_gain(self, gain: np.ndarray, centre: np.ndarray) -> None:
        """Make the standardised output centre + gain * (old - centre) per coefficient, by scaling the last linear
        layers (linear and MLP output) in place: the same modules and ops, so the ONNX export is unchanged in form."""
        g = torch.as_tensor(np.asarray(gain, np.float32))
        c = torch.as_tensor(np.asarray(centre, np.float32))
        self.linear.weight.mul_(g[:, None])
        self.linear.bias.copy_(g * self.linear.bias + (1.0 - g) * c)
        if self.mlp is not None:
            last = self.mlp[-1]
            last.weight.mul_(g[:, None])
            last.bias.mul_(g)


def spread_gains(pred: np.ndarray, target: np.ndarray, gain_range: tuple[float, float]) -> np.ndarray:
    """Per-column std(target) / std(pred), clipped to gain_range: the variance-matching gain for predictions that
    regression shrank toward their mean."""
    sp = np.asarray(pred, np.float64).std(0)
    st = np.asarray(target, np.float64).std(0)
    return np.clip(st / np.maximum(sp, 1e-9), *gain_range)


class AudioToLipCoeffs(nn.Module):
    """The exported chain: mel_window (B, n_mels, window_frames) -> lip_coeffs (B, n_lip) at the anchor frame."""

    def __init__(self, encoder: SpeakerIndependentEncoder, head: PersonalHead):
        super().__init__()
        self.encoder = encoder
        self.head = head

    @property
    def window_frames(self) -> int:
        return self.encoder.config.window_frames

    def forward(self, mel_window: torch.Tensor) -> torch.Tensor:
        features = self.encoder.features(mel_window)[..., 0]
        visemes = torch.sigmoid(self.encoder.viseme_head(features[..., None]))[..., 0]
        return self.head(torch.cat([features, visemes], dim=1))


def _inputs_at_frames(encoder: SpeakerIndependentEncoder, samples_16k: np.ndarray, mel_rows: np.ndarray) -> np.ndarray:
    features, visemes = encode_mel(encoder, log_mel(samples_16k))
    rows = np.clip(mel_rows, 0, len(features) - 1)
    return np.concatenate([features[rows], visemes[rows]], axis=1)


def opening_direction(lip_coeffs: np.ndarray, jaw_open: np.ndarray) -> np.ndarray:
    """Least-squares w with (lip - mean) @ w ~ jaw_open - mean: which coefficient mix opens this person's mouth.

    PCA order and sign are arbitrary per person, so the lip-sync meter cannot assume "coefficient 0 = opening".
    """
    x = lip_coeffs - lip_coeffs.mean(0)
    y = jaw_open - jaw_open.mean()
    w, *_ = np.linalg.lstsq(x, y, rcond=1e-6)
    return w


def _lipsync(opening: np.ndarray, pts_s: np.ndarray, samples_16k: np.ndarray) -> tuple[float, float] | None:
    from models.metrics.lipsync import mouth_audio_offset

    try:
        est = mouth_audio_offset(opening, pts_s, samples_16k, 16000, max_lag_ms=300.0)
    except ValueError:
        return None  # validation span too short or silent: the report says None rather than guessing
    return est.offset_ms, est.peak_correlation


def fit_personal_a2e(
    samples_16k: np.ndarray,
    lip_coeffs: np.ndarray,
    fps: float,
    encoder: SpeakerIndependentEncoder | None = None,
    config: A2EConfig = A2EConfig(),
) -> tuple[AudioToLipCoeffs, A2EReport]:
    """Fit the personal head on an enrollment video's audio (16 kHz, sample 0 at frame 0's clock) and its (T, n_lip)
    per-frame lip coefficients at `fps`; returns the exported-ready chain and the validation report.
    """
    t0 = time.monotonic()
    audio = np.asarray(samples_16k, np.float32)
    coeffs = np.asarray(lip_coeffs, np.float32)
    if audio.ndim != 1 or len(audio) == 0:
        raise ValueError(f"samples_16k must be non-empty 1-D audio, got shape {audio.shape}")
    if coeffs.ndim != 2 or coeffs.shape[0] < 10:
        raise ValueError(f"lip_coeffs must be (T >= 10, n_lip), got shape {coeffs.shape}")
    if not np.all(np.isfinite(coeffs)):
        raise ValueError("lip_coeffs contain NaN or infinity (frames without a face must be filled before fitting)")
    encoder = encoder if encoder is not None else load_encoder()
    n_frames, n_lip = coeffs.shape
    n_train = int(round(config.train_fraction * n_frames))
    mel_rows = mel_frame_for_video_frame(np.arange(n_frames), fps, MelSpec())

    rng = np.random.default_rng(config.seed)
    clean = _inputs_at_frames(encoder, audio, mel_rows)
    train_x = [clean[:n_train]]
    for _ in range(config.n_augmented_copies):
        noisy = augment_audio(audio, draw_augment(rng, config.augment_strength), rng)
        train_x.append(_inputs_at_frames(encoder, noisy, mel_rows)[:n_train])
    x_np = np.concatenate(train_x)
    frame_of_row = np.tile(np.arange(n_train), 1 + config.n_augmented_copies)
    clean_row = np.arange(len(x_np)) < n_train
    in_mean, in_std = x_np.mean(0), x_np.std(0) + 1e-6
    y_mean, y_std = coeffs[:n_train].mean(0), coeffs[:n_train].std(0) + 1e-6
    z = (x_np - in_mean) / in_std
    t = (np.tile(coeffs[:n_train], (1 + config.n_augmented_copies, 1)) - y_mean) / y_std
    # Contiguous blocks, not shuffled frames: neighbouring frames are nearly equal, so shuffled folds would reward
    # memorising them. Augmented copies of a frame share its fold; scores use the clean rows, as deployed.
    fold = frame_of_row * config.cv_folds // n_train
    lam, cv_ridge = _choose_ridge(z, t, fold, clean_row, config)
    w, b = _ridge(z, t, lam)

    head = PersonalHead(z.shape[1], n_lip, config.hidden, config.dropout, use_mlp=False)
    cv_mlp = None
    if config.try_mlp:
        scores = []
        for k in range(config.cv_folds - 2, config.cv_folds):  # the last two folds: enough to tell, half the cost
            fit, test = fold != k, (fold == k) & clean_row
            wk, bk = _ridge(z[fit], t[fit], lam)
            mlp = _fit_mlp_residual(z[fit], t[fit] - (z[fit] @ wk + bk), z.shape[1], n_lip, config)
            with torch.no_grad():
                res = mlp(torch.from_numpy(z[test])).numpy()
            scores.append(float(np.mean((z[test] @ wk + bk + res - t[test]) ** 2)))
        cv_mlp = float(np.mean(scores))
        ridge_same_folds = float(np.mean([_fold_mse(z, t, fold, clean_row, lam, k)
                                          for k in range(config.cv_folds - 2, config.cv_folds)]))
        if cv_mlp < 0.98 * ridge_same_folds:
            head = PersonalHead(z.shape[1], n_lip, config.hidden, config.dropout, use_mlp=True)
            head.mlp = _fit_mlp_residual(z, t - (z @ w + b), z.shape[1], n_lip, config)
    with torch.no_grad():
        head.in_mean.copy_(torch.from_numpy(in_mean))
        head.in_std.copy_(torch.from_numpy(in_std))
        head.coeff_mean.copy_(torch.from_numpy(y_mean))
        head.coeff_std.copy_(torch.from_numpy(y_std))
        head.linear.weight.copy_(torch.from_numpy(w.T.astype(np.float32)))
        head.linear.bias.copy_(torch.from_numpy(b.astype(np.float32)))
    head.eval()

    with torch.no_grad():
        pred_raw = head(torch.from_numpy(clean)).numpy()
        # Spread calibration from the clean training rows only (as deployed; the held-back part stays unseen).
        train_std = head.standardised(torch.from_numpy(clean[:n_train])).numpy()
    gain = np.ones(n_lip)
    if config.calibrate_spread:
        gain = spread_gains(train_std, t[:n_train], config.spread_gain_range)
        head.fold_output_gain(gain, train_std.mean(0))
    chain = AudioToLipCoeffs(encoder, head).eval()

    with torch.no_grad():
        pred = head(torch.from_numpy(clean)).numpy()
    report = _validate(audio, coeffs, pred, clean[:, -4], fps, n_train, time.monotonic() - t0, pred_raw)
    report.spread_gain.extend(float(g) for g in gain)
    if config.calibrate_spread:
        report.notes.append("output spread calibrated on the training span: gain per coefficient "
                            + " ".join(f"{g:.2f}" for g in gain) + f" (clipped to {config.spread_gain_range})")
    report.notes.append(f"ridge strength {lam:g} (blocked-CV mse {cv_ridge:.3f} in standardised units); "
                        f"MLP residual {'kept' if head.mlp is not None else 'not kept'}"
                        + (f" (CV mse {cv_mlp:.3f})" if cv_mlp is not None else ""))
    return chain, report


def _ridge(z: np.ndarray, t: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """Ridge regression with an unpenalised intercept: returns (W (d, n_out), b (n_out,))."""
    zm, tm = z.mean(0), t.mean(0)
    zc = (z - zm).astype(np.float64)
    w = np.linalg.solve(zc.T @ zc + lam * len(z) * np.eye(z.shape[1]), zc.T @ (t - tm))
    return w, tm - zm @ w


def _fold_mse(z, t, fold, clean_row, lam, k) -> float:
    fit, test = fold != k, (fold == k) & clean_row
    w, b = _ridge(z[fit], t[fit], lam)
    return float(np.mean((z[test] @ w + b - t[test]) ** 2))


def _choose_ridge(z, t, fold, clean_row, config: A2EConfig) -> tuple[float, float]:
    """Strength (per sample, so it does not depend on the video length) with the lowest blocked-CV error."""
    best = (float("inf"), config.ridge_grid[0])
    for lam in config.ridge_grid:
        mse = float(np.mean([_fold_mse(z, t, fold, clean_row, lam, k) for k in range(config.cv_folds)]))
        best = min(best, (mse, lam))
    return best[1], best[0]


def _fit_mlp_residual(z: np.ndarray, residual: np.ndarray, n_in: int, n_out: int, config: A2EConfig) -> nn.Module:
    torch.manual_seed(config.seed)
    mlp = nn.Sequential(nn.Linear(n_in, config.hidden), nn.GELU(), nn.Dropout(config.dropout),
                        nn.Linear(config.hidden, n_out))
    x = torch.from_numpy(z.astype(np.float32))
    y = torch.from_numpy(residual.astype(np.float32))
    optimiser = torch.optim.AdamW(mlp.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(config.seed)
    mlp.train()
    for step in range(config.steps):
        for group in optimiser.param_groups:
            group["lr"] = config.lr * 0.5 * (1.0 + np.cos(np.pi * step / config.steps))
        pick = torch.randperm(len(x), generator=generator)[: config.batch] if len(x) > config.batch else slice(None)
        loss = F.mse_loss(mlp(x[pick]), y[pick])
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    return mlp.eval()


def _std_ratio(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    return np.asarray(pred, np.float64).std(0) / np.maximum(np.asarray(true, np.float64).std(0), 1e-12)


def _validate(audio, coeffs, pred, jaw_open, fps, n_train, fit_seconds, pred_raw=None) -> A2EReport:
    """Figures on the held-back frames; `pred_raw` (the head before spread calibration) only adds the "before"
    std ratios and RMSE."""
    pred_raw = pred if pred_raw is None else pred_raw
    raw_val = pred_raw[n_train:]
    val_true, val_pred = coeffs[n_train:], pred[n_train:]
    per_r = [pearson(val_pred[:, i], val_true[:, i]) for i in range(coeffs.shape[1])]
    var = val_true.var(0)
    finite = np.isfinite(per_r)
    weighted = float(np.sum(np.array(per_r)[finite] * var[finite]) / max(var[finite].sum(), 1e-12))
    w = opening_direction(coeffs[:n_train], jaw_open[:n_train])
    pts_s = np.arange(n_train, len(coeffs)) / fps
    val_audio = audio  # the meter takes the whole track on the same clock and uses the frames' span of it
    true_sync = _lipsync(val_true @ w, pts_s, val_audio)
    pred_sync = _lipsync(val_pred @ w, pts_s, val_audio)
    notes = []
    if true_sync is None or pred_sync is None:
        notes.append("validation span too short or silent for the lip-sync meter")
    lag = None
    if len(pts_s) >= 2 * fps:
        lag, _ = band_limited_lag_ms(val_true @ w, val_pred @ w, pts_s)
    return A2EReport(
        n_train_frames=n_train,
        n_val_frames=len(coeffs) - n_train,
        per_coeff_r=[float(r) for r in per_r],
        mean_r=float(np.nanmean(per_r)),
        variance_weighted_r=weighted,
        val_rmse=float(np.sqrt(np.mean((val_pred - val_true) ** 2))),
        lipsync_offset_pred_ms=None if pred_sync is None else pred_sync[0],
        lipsync_offset_true_ms=None if true_sync is None else true_sync[0],
        lipsync_r_pred=None if pred_sync is None else pred_sync[1],
        opening_r=pearson(val_pred @ w, val_true @ w),
        lag_pred_vs_true_ms=lag,
        fit_seconds=fit_seconds,
        notes=notes,
        val_std_ratio=[float(v) for v in _std_ratio(val_pred, val_true)],
        val_std_ratio_uncalibrated=[float(v) for v in _std_ratio(raw_val, val_true)],
        val_opening_std_ratio=float(_std_ratio(val_pred @ w, val_true @ w)),
        val_opening_std_ratio_uncalibrated=float(_std_ratio(raw_val @ w, val_true @ w)),
        val_rmse_uncalibrated=float(np.sqrt(np.mean((raw_val - val_true) ** 2))),
    )


def export_a2e_onnx(chain: AudioToLipCoeffs, path: str | Path) -> float:
    """Write the chain as the bundle's audio_to_expression net; returns max |ORT - torch| on a probe batch."""
    import onnxruntime as ort

    chain.eval()
    c = chain.encoder.config
    torch.manual_seed(2)
    probe = torch.randn(3, c.n_mels, c.window_frames) * 3.0 - 6.0
    torch.onnx.export(chain, (probe[:1],), str(path), input_names=["mel_window"], output_names=["lip_coeffs"],
                      dynamic_axes={"mel_window": {0: "batch"}, "lip_coeffs": {0: "batch"}}, dynamo=False,
                      opset_version=17)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        want = chain(probe).numpy()
    got = sess.run(["lip_coeffs"], {"mel_window": probe.numpy()})[0]
    return float(np.abs(got - want).max())
