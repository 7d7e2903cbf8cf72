"""16-bit PCM WAV files through the standard-library `wave` module."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from models.audio.clip import AudioClip
from models.audio.resample import resample

# Integer PCM widths `wave` can hand us, with the scale that maps the most negative code to -1.0.
_PCM_SCALE = {1: 128.0, 2: 32768.0, 3: 8388608.0, 4: 2147483648.0}


def _pcm_to_float(raw: bytes, sample_width_bytes: int) -> np.ndarray:
    if sample_width_bytes == 1:
        # 8-bit WAV is unsigned with 128 as zero.
        return (np.frombuffer(raw, np.uint8).astype(np.float64) - 128.0) / _PCM_SCALE[1]
    if sample_width_bytes == 2:
        return np.frombuffer(raw, "<i2").astype(np.float64) / _PCM_SCALE[2]
    if sample_width_bytes == 3:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        v = np.where(v >= 1 << 23, v - (1 << 24), v)
        return v.astype(np.float64) / _PCM_SCALE[3]
    if sample_width_bytes == 4:
        return np.frombuffer(raw, "<i4").astype(np.float64) / _PCM_SCALE[4]
    raise ValueError(f"unsupported WAV sample width: {sample_width_bytes} bytes")


def read_wav(path: str | Path, target_sample_rate_hz: int | None = 16000) -> AudioClip:
    """Read an integer-PCM WAV as float32 mono (channels averaged), resampled to `target_sample_rate_hz`.

    `target_sample_rate_hz=None` keeps the file's rate. Float WAVs are refused because `wave` cannot parse them.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"WAV file not found: {path}")
    try:
        with wave.open(str(path), "rb") as w:
            n_channels = w.getnchannels()
            width = w.getsampwidth()
            rate_hz = w.getframerate()
            raw = w.readframes(w.getnframes())
    except (wave.Error, EOFError) as e:
        raise ValueError(f"cannot read {path} as integer-PCM WAV: {e}") from e
    x = _pcm_to_float(raw, width)
    usable = len(x) - len(x) % n_channels
    x = x[:usable].reshape(-1, n_channels).mean(axis=1)
    if target_sample_rate_hz is not None and target_sample_rate_hz != rate_hz:
        return AudioClip(resample(x, rate_hz, target_sample_rate_hz), int(target_sample_rate_hz))
    return AudioClip(x.astype(np.float32), int(rate_hz))


def write_wav(path: str | Path, samples: np.ndarray, sample_rate_hz: int) -> None:
    """Write float mono `samples` in [-1, 1] as 16-bit PCM; values outside are clipped."""
    x = np.asarray(samples)
    if x.ndim != 1:
        raise ValueError(f"write_wav expects 1-D mono samples, got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"write_wav expects float samples in [-1, 1], got dtype {x.dtype}")
    if not np.all(np.isfinite(x)):
        raise ValueError("write_wav samples contain NaN or infinity")
    if sample_rate_hz <= 0:
        raise ValueError(f"sample_rate_hz must be positive, got {sample_rate_hz}")
    pcm = np.round(np.clip(x.astype(np.float64), -1.0, 1.0) * 32767.0).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(sample_rate_hz))
        w.writeframes(pcm.tobytes())
