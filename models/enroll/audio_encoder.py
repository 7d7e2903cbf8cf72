"""Speaker-independent audio encoder: a log-mel window -> 4 viseme parameters (+ a feature vector) at its anchor frame.

Trained once on the espeak corpus of `audio_corpus.py` and shipped in models/assets; every enrollment then fits only a
small personal head on its features (`a2e.py`).

The net is a stack of *valid* (unpadded) 1-D convolutions whose receptive field is exactly one window of
past_frames + 1 + lookahead_frames mel frames. On a (B, n_mels, window) input it yields one output, the anchor frame's;
on a longer sequence it yields one output per window position. So training runs densely on long crops (every frame's
loss from one pass, no recomputation of overlapping windows), and live inference on one window is the same function.
Normalisation is per frame (LayerNorm over channels), never over time, for the same reason.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from models.audio.mel import MelSpec, log_mel
from models.enroll.audio_corpus import CorpusArrays

N_VISEMES = 4
ASSET_DIR = Path(__file__).resolve().parents[1] / "assets"
ASSET_ONNX = ASSET_DIR / "audio_encoder.onnx"
ASSET_STATE = ASSET_DIR / "audio_encoder.pt"
ASSET_METRICS = ASSET_DIR / "audio_encoder_metrics.json"


@dataclass(frozen=True)
class EncoderConfig:
    n_mels: int = 80
    width: int = 128
    past_frames: int = 24  # 240 ms of context before the anchor
    lookahead_frames: int = 8  # 80 ms after it: the live latency this net adds
    max_dilation: int = 8

    def __post_init__(self) -> None:
        if self.past_frames < 0 or self.lookahead_frames < 0:
            raise ValueError(f"past_frames and lookahead_frames must be >= 0: {self}")
        if self.window_frames < 3:
            raise ValueError(f"window of {self.window_frames} frames is too short for the 3-frame stem: {self}")
        if self.width <= 0 or self.n_mels <= 0:
            raise ValueError(f"width and n_mels must be positive: {self}")

    @property
    def window_frames(self) -> int:
        return self.past_frames + 1 + self.lookahead_frames

    @property
    def lookahead_ms(self) -> float:
        return self.lookahead_frames * 1000.0 / MelSpec().frame_rate_hz

    def dilations(self) -> tuple[int, ...]:
        """Dilations 1, 2, 4, ... of the residual blocks, as many as fit in the window after the 3-frame stem."""
        out: list[int] = []
        d = 1
        while d <= self.max_dilation and 2 + 2 * (sum(out) + d) <= self.window_frames - 1:
            out.append(d)
            d *= 2
        return tuple(out)

    def readout_kernel(self) -> int:
        """Kernel of the last conv: it spans what the blocks leave, so the receptive field is exactly the window."""
        return self.window_frames - 2 - 2 * sum(self.dilations())


class FrameNorm(nn.Module):
    """LayerNorm over channels at each time step (so a frame's value never depends on its neighbours' statistics)."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.transpose(1, 2)).transpose(1, 2)


class _Block(nn.Module):
    def __init__(self, channels: int, dilation: int):
        super().__init__()
        self.dilation = dilation
        self.norm = FrameNorm(channels)
        self.conv = nn.Conv1d(channels, channels, 3, dilation=dilation)
        self.mix = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.dilation
        return x[..., d:-d] + self.mix(F.gelu(self.conv(self.norm(x))))


class SpeakerIndependentEncoder(nn.Module):
    """(B, n_mels, T) log-mel -> features (B, width, T - window + 1) and visemes in [0, 1] (B, 4, T - window + 1)."""

    def __init__(self, config: EncoderConfig = EncoderConfig()):
        super().__init__()
        self.config = config
        c = config.width
        # Corpus statistics, set before training and shipped with the weights.
        self.register_buffer("mel_mean", torch.zeros(config.n_mels))
        self.register_buffer("mel_std", torch.ones(config.n_mels))
        self.stem = nn.Conv1d(config.n_mels, c, 3)
        self.blocks = nn.ModuleList(_Block(c, d) for d in config.dilations())
        self.readout = nn.Conv1d(c, c, config.readout_kernel())
        self.out_norm = FrameNorm(c)
        self.viseme_head = nn.Conv1d(c, N_VISEMES, 1)

    def features(self, mel: torch.Tensor) -> torch.Tensor:
        x = (mel - self.mel_mean[:, None]) / self.mel_std[:, None]
        h = F.gelu(self.stem(x))
        for block in self.blocks:
            h = block(h)
        return self.out_norm(F.gelu(self.readout(h)))

    def visemes_from_features(self, features: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.viseme_head(features))

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.visemes_from_features(self.features(mel))


class EncoderWindow(nn.Module):
    """ONNX face of the encoder: mel_window (B, n_mels, window) -> visemes (B, 4), features (B, width)."""

    def __init__(self, encoder: SpeakerIndependentEncoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, mel_window: torch.Tensor):
        f = self.encoder.features(mel_window)[..., 0]
        return torch.sigmoid(self.encoder.viseme_head(f[..., None]))[..., 0], f


def save_encoder(encoder: SpeakerIndependentEncoder, path: Path) -> None:
    torch.save({"config": asdict(encoder.config), "state": encoder.state_dict()}, path)


def load_encoder(path: Path = ASSET_STATE) -> SpeakerIndependentEncoder:
    """The shipped (or a given) encoder in eval mode with frozen weights."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"audio encoder weights not found at {path}; train them with scripts/train_audio_encoder.py")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    encoder = SpeakerIndependentEncoder(EncoderConfig(**blob["config"]))
    encoder.load_state_dict(blob["state"])
    encoder.eval()
    for p in encoder.parameters():
        p.requires_grad_(False)
    return encoder


def pad_for_dense(mel: np.ndarray, config: EncoderConfig, spec: MelSpec = MelSpec()) -> np.ndarray:
    """(n, n_mels) -> (n_mels, past + n + lookahead) padded with silence like `models.audio.window.mel_window`."""
    pad_before = np.full((config.past_frames, mel.shape[1]), spec.silence_value, np.float32)
    pad_after = np.full((config.lookahead_frames, mel.shape[1]), spec.silence_value, np.float32)
    return np.concatenate([pad_before, mel.astype(np.float32), pad_after]).T


@torch.no_grad()
def encode_mel(encoder: SpeakerIndependentEncoder, mel: np.ndarray, chunk_frames: int = 6000):
    """(n, n_mels) log-mel -> features (n, width) and visemes (n, 4): output i is the window anchored at mel frame i."""
    if mel.ndim != 2 or mel.shape[1] != encoder.config.n_mels:
        raise ValueError(f"mel must be (n, {encoder.config.n_mels}), got {mel.shape}")
    encoder.eval()
    padded = torch.from_numpy(pad_for_dense(mel, encoder.config))
    w = encoder.config.window_frames
    feats, vis = [], []
    for lo in range(0, len(mel), chunk_frames):
        hi = min(len(mel), lo + chunk_frames)
        f = encoder.features(padded[None, :, lo : hi + w - 1])
        feats.append(f[0].T.numpy())
        vis.append(encoder.visemes_from_features(f)[0].T.numpy())
    if not feats:
        return np.zeros((0, encoder.config.width), np.float32), np.zeros((0, N_VISEMES), np.float32)
    return np.concatenate(feats), np.concatenate(vis)


def encode_audio(encoder: SpeakerIndependentEncoder, samples_16k: np.ndarray):
    """16 kHz float audio -> features (n, width), visemes (n, 4) at the 100 Hz mel rate."""
    return encode_mel(encoder, log_mel(np.asarray(samples_16k, np.float32)))


# ---------------------------------------------------------------- training


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 2400
    batch: int = 24
    crop_out_frames: int = 160  # supervised frames per crop
    lr: float = 2e-3
    weight_decay: float = 1e-2
    warmup_steps: int = 100
    derivative_weight: float = 2.0  # weight of the loss on frame-to-frame changes: keeps closures crisp
    gain_jitter_nats: float = 1.0  # random level added to log-mel per crop (1 nat = 4.3 dB)
    max_freq_mask_bins: int = 8  # SpecAugment-style band masks: robustness to EQ and narrow-band noise
    checkpoint_every_s: float = 180.0
    eval_every_steps: int = 500
    log_every_steps: int = 100
    seed: int = 0


def lr_at(step: int, tc: TrainConfig) -> float:
    """Linear warm-up then cosine decay to 5 %: a pure function of the step, so resuming needs no scheduler state."""
    if step < tc.warmup_steps:
        return tc.lr * (step + 1) / tc.warmup_steps
    progress = (step - tc.warmup_steps) / max(1, tc.steps - tc.warmup_steps)
    return tc.lr * (0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0))))


def sample_batch(data: CorpusArrays, config: EncoderConfig, tc: TrainConfig, rng: np.random.Generator):
    """Random crops: mel (B, n_mels, crop + window - 1) and labels (B, 4, crop) for the anchors inside."""
    length = tc.crop_out_frames + config.window_frames - 1
    starts = rng.integers(0, len(data.mel) - length, tc.batch)
    idx = starts[:, None] + np.arange(length)[None, :]
    mel = data.mel[idx].astype(np.float32)  # (B, L, n_mels)
    mel += rng.uniform(-tc.gain_jitter_nats, tc.gain_jitter_nats, (tc.batch, 1, 1)).astype(np.float32)
    for b in range(tc.batch):
        width = int(rng.integers(0, tc.max_freq_mask_bins + 1))
        if width:
            lo = int(rng.integers(0, config.n_mels - width))
            mel[b, :, lo : lo + width] = mel[b].mean()
    label_idx = idx[:, config.past_frames : config.past_frames + tc.crop_out_frames]
    labels = data.visemes[label_idx].astype(np.float32)
    return torch.from_numpy(mel).transpose(1, 2), torch.from_numpy(labels).transpose(1, 2)


def viseme_loss(pred: torch.Tensor, target: torch.Tensor, derivative_weight: float) -> torch.Tensor:
    loss = F.mse_loss(pred, target)
    if derivative_weight:
        loss = loss + derivative_weight * F.mse_loss(pred.diff(dim=-1), target.diff(dim=-1))
    return loss


def set_input_stats(encoder: SpeakerIndependentEncoder, data: CorpusArrays, n_sample: int = 200_000) -> None:
    rows = data.mel[np.linspace(0, len(data.mel) - 1, min(n_sample, len(data.mel))).astype(np.int64)]
    rows = rows.astype(np.float32)
    encoder.mel_mean.copy_(torch.from_numpy(rows.mean(0)))
    encoder.mel_std.copy_(torch.from_numpy(rows.std(0) + 1e-3))


def train_encoder(
    train: CorpusArrays,
    heldout: CorpusArrays | None,
    run_dir: Path,
    config: EncoderConfig = EncoderConfig(),
    tc: TrainConfig = TrainConfig(),
    resume: bool = False,
    log=print,
    stop_after_steps: int | None = None,
) -> SpeakerIndependentEncoder:
    """AdamW training with checkpoints (run_dir/checkpoint.pt) every tc.checkpoint_every_s; `resume` continues exactly
    (weights, optimiser moments, step, and the batch sampler's random state), so a resumed run equals an unbroken one.
    `stop_after_steps` ends the session early after a checkpoint, as an interruption would (for testing resume).
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = run_dir / "checkpoint.pt"
    torch.manual_seed(tc.seed)
    encoder = SpeakerIndependentEncoder(config)
    optimiser = torch.optim.AdamW(encoder.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    rng = np.random.default_rng(tc.seed)
    step = 0
    history: list[dict] = []
    if resume and ckpt_path.exists():
        blob = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if blob["config"] != asdict(config) or blob["train_config"] != asdict(tc):
            raise ValueError(f"{ckpt_path} was made with other settings; resume with the same ones or start afresh")
        encoder.load_state_dict(blob["model"])
        optimiser.load_state_dict(blob["optimiser"])
        rng.bit_generator.state = blob["rng"]
        torch.set_rng_state(blob["torch_rng"])
        step, history = blob["step"], blob["history"]
        log(f"resumed from step {step}")
    else:
        set_input_stats(encoder, train)

    def checkpoint() -> None:
        tmp = ckpt_path.with_suffix(".tmp")
        torch.save({"config": asdict(config), "train_config": asdict(tc), "model": encoder.state_dict(),
                    "optimiser": optimiser.state_dict(), "rng": rng.bit_generator.state,
                    "torch_rng": torch.get_rng_state(), "step": step, "history": history}, tmp)
        tmp.replace(ckpt_path)

    last_ckpt = last_log = time.monotonic()
    last_log_step = step
    running = None
    columns = (TextColumn("[bold]encoder"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
               TimeRemainingColumn())
    with Progress(*columns, refresh_per_second=1) as progress:
        task = progress.add_task("train", total=tc.steps, completed=step, info="")
        end_step = tc.steps if stop_after_steps is None else min(tc.steps, stop_after_steps)
        while step < end_step:
            encoder.train()
            mel, labels = sample_batch(train, config, tc, rng)
            for group in optimiser.param_groups:
                group["lr"] = lr_at(step, tc)
            loss = viseme_loss(encoder(mel), labels, tc.derivative_weight)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(encoder.parameters(), 1.0)
            optimiser.step()
            step += 1
            running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
            info = f"loss {running:.4f}"
            if heldout is not None and (step % tc.eval_every_steps == 0 or step == tc.steps):
                m = quick_heldout_metrics(encoder, heldout)
                history.append({"step": step, "train_loss": running, **m})
                log(json.dumps(history[-1]))
            if history:
                info += f" | held-out jaw r {history[-1]['jaw_open_r']:.3f}"
            if step % tc.log_every_steps == 0:
                # A plain line as well as the bar: under nohup the log file is the only progress there is.
                rate = (step - last_log_step) / max(time.monotonic() - last_log, 1e-9)
                log(f"step {step}/{tc.steps} {info} | {rate:.2f} steps/s")
                last_log, last_log_step = time.monotonic(), step
            progress.update(task, completed=step, info=info)
            if time.monotonic() - last_ckpt > tc.checkpoint_every_s or step == end_step:
                checkpoint()
                last_ckpt = time.monotonic()
    encoder.eval()
    save_encoder(encoder, run_dir / "encoder.pt")
    return encoder


# ---------------------------------------------------------------- measurement


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, np.float64) - np.mean(a)
    b = np.asarray(b, np.float64) - np.mean(b)
    denom = math.sqrt(float(np.dot(a, a) * np.dot(b, b)))
    return float(np.dot(a, b) / denom) if denom > 0 else float("nan")


def lag_of_peak_ms(a: np.ndarray, b: np.ndarray, rate_hz: float, max_lag_ms: float = 200.0) -> tuple[float, float]:
    """(lag_ms, correlation) at the peak of Pearson(a[t], b[t + lag]): lag > 0 means b happens after a."""
    max_lag = int(round(max_lag_ms * rate_hz / 1000.0))
    n = len(a)
    best = (0.0, -2.0)
    for lag in range(-max_lag, max_lag + 1):
        x, y = (a[: n - lag], b[lag:]) if lag >= 0 else (a[-lag:], b[: n + lag])
        r = pearson(x, y)
        if np.isfinite(r) and r > best[1]:
            best = (lag * 1000.0 / rate_hz, r)
    return best


def _split_predictions(encoder: SpeakerIndependentEncoder, data: CorpusArrays, max_recordings: int | None = None):
    preds, labels = [], []
    for k in range(len(data.offsets) - 1)[:max_recordings]:
        lo, hi = data.offsets[k], data.offsets[k + 1]
        preds.append(encode_mel(encoder, data.mel[lo:hi].astype(np.float32))[1])
        labels.append(data.visemes[lo:hi].astype(np.float32))
    return np.concatenate(preds), np.concatenate(labels)


def quick_heldout_metrics(encoder: SpeakerIndependentEncoder, heldout: CorpusArrays) -> dict:
    pred, label = _split_predictions(encoder, heldout, max_recordings=12)
    encoder.train()
    return {"jaw_open_r": pearson(pred[:, 0], label[:, 0]), "mse": float(np.mean((pred - label) ** 2))}


def heldout_metrics(encoder: SpeakerIndependentEncoder, heldout: CorpusArrays) -> dict:
    """Per-parameter Pearson r and MAE on held-out voices, and the lag of the jaw_open cross-correlation peak."""
    from models.speech.visemes import VISEME_PARAMS

    pred, label = _split_predictions(encoder, heldout)
    lag_ms, r_peak = lag_of_peak_ms(label[:, 0], pred[:, 0], 100.0, 100.0)
    return {
        "hours": heldout.hours,
        "n_recordings": len(heldout.offsets) - 1,
        "voices": sorted(set(heldout.voices)),
        "pearson_r": {n: pearson(pred[:, i], label[:, i]) for i, n in enumerate(VISEME_PARAMS)},
        "mae": {n: float(np.mean(np.abs(pred[:, i] - label[:, i]))) for i, n in enumerate(VISEME_PARAMS)},
        "jaw_open_lag_ms": lag_ms,  # > 0: the prediction is late
        "jaw_open_r_at_peak": r_peak,
    }


def jaw_vs_audio_envelope(encoder: SpeakerIndependentEncoder, samples_16k: np.ndarray) -> dict:
    """Predicted jaw_open against the speech-band loudness of real speech (no labels needed) via the lip-sync meter.

    offset_ms > 0 means the audio comes after the predicted mouth motion (real mouths lead slightly).
    """
    from models.metrics.lipsync import mouth_audio_offset

    _, vis = encode_audio(encoder, samples_16k)
    pts_s = np.arange(len(vis)) / 100.0 - 0.005  # the meter centres frame k on pts + interval / 2
    est = mouth_audio_offset(vis[:, 0], pts_s, samples_16k, 16000, max_lag_ms=300.0)
    zero = int(np.argmin(np.abs(est.lags_ms)))
    return {"offset_ms": est.offset_ms, "peak_correlation": est.peak_correlation,
            "correlation_at_0_ms": float(est.correlation[zero]), "at_search_edge": est.at_search_edge}


def band_limited_lag_ms(
    a: np.ndarray, b: np.ndarray, pts_s: np.ndarray, band_hz: tuple[float, float] = (0.5, 8.0), max_lag_ms: float = 200.0
) -> tuple[float, float]:
    """(lag_ms, r) of the cross-correlation peak of two series sampled at `pts_s` (NaN allowed: bridged).

    Both go onto a 1 kHz grid (lag resolution finer than the frame interval) and are band-passed to speech-syllable
    motion (not head drift or tracker jitter). lag_ms > 0 means b happens after a.
    """
    from scipy import signal

    a, b, pts = (np.asarray(x, np.float64) for x in (a, b, pts_s))
    known = np.isfinite(a) & np.isfinite(b)
    grid = np.arange(pts[known][0], pts[known][-1], 0.001)
    sos = signal.butter(2, list(band_hz), "bandpass", fs=1000.0, output="sos")
    ga = signal.sosfiltfilt(sos, np.interp(grid, pts[known], a[known]))
    gb = signal.sosfiltfilt(sos, np.interp(grid, pts[known], b[known]))
    return lag_of_peak_ms(ga, gb, 1000.0, max_lag_ms)


def jaw_vs_tracked_mouth(
    encoder: SpeakerIndependentEncoder, samples_16k: np.ndarray, mouth_opening: np.ndarray, frame_pts_s: np.ndarray
) -> dict:
    """Predicted jaw_open against a real video's tracked mouth opening (one value per frame, NaN where lost).

    lag_ms > 0 means the prediction is late relative to the real mouth.
    """
    _, vis = encode_audio(encoder, samples_16k)
    mouth = np.asarray(mouth_opening, np.float64)
    pts = np.asarray(frame_pts_s, np.float64)
    known = np.isfinite(mouth)
    jaw_at_frames = np.interp(pts, np.arange(len(vis)) / 100.0, vis[:, 0])
    lag_ms, r_peak = band_limited_lag_ms(mouth, jaw_at_frames, pts)
    return {"pearson_r_per_frame": pearson(jaw_at_frames[known], mouth[known]), "lag_ms": lag_ms,
            "band_r_at_peak": r_peak, "n_frames": int(known.sum())}


# ---------------------------------------------------------------- export


def export_onnx(encoder: SpeakerIndependentEncoder, path: Path) -> float:
    """Write the window net (mel_window -> visemes, features) to `path`; returns max |ORT - torch| on random input."""
    import onnxruntime as ort

    wrapper = EncoderWindow(encoder).eval()
    c = encoder.config
    torch.manual_seed(1)
    probe = torch.randn(4, c.n_mels, c.window_frames) * 3.0 - 6.0
    torch.onnx.export(wrapper, (probe[:1],), str(path), input_names=["mel_window"],
                      output_names=["visemes", "features"], dynamic_axes={"mel_window": {0: "batch"}},
                      dynamo=False, opset_version=17)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        want = wrapper(probe)
    got = sess.run(None, {"mel_window": probe.numpy()})
    return float(max(np.abs(g - w.numpy()).max() for g, w in zip(got, want)))
