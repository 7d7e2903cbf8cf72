"""Mel context windows for the audio-to-expression net, aligned to video frames.

Video frame j is shown at j / fps; mel frame i is centred at i * hop / sample_rate (see `mel.py`), so the mel frame
for video frame j is round(j / fps * mel_rate). At 25 fps that is every 4th mel frame; at 30 fps 3 or 4 apart.
"""

from __future__ import annotations

import numpy as np

from models.audio.mel import MelSpec


def mel_frame_for_video_frame(video_frame_idx: int | np.ndarray, fps: float, spec: MelSpec = MelSpec()):
    """Index of the mel frame centred closest to the display time of `video_frame_idx` (int or int array)."""
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    idx = np.rint(np.asarray(video_frame_idx, np.float64) / fps * spec.frame_rate_hz).astype(np.int64)
    return int(idx) if idx.ndim == 0 else idx


def mel_window(
    mel: np.ndarray,
    center_frame_idx: int,
    past_frames: int,
    lookahead_frames: int,
    pad_value: float = MelSpec().silence_value,
) -> np.ndarray:
    """Rows [center - past, center + lookahead] of (n, n_mels) `mel`: shape (past + 1 + lookahead, n_mels).

    Rows outside the clip are `pad_value` (log-mel of silence by default): before the start the stream really was
    silent, and past the end the net must not see a repeated frame that looks like a held sound.
    """
    if mel.ndim != 2:
        raise ValueError(f"mel must be (n_frames, n_mels), got shape {mel.shape}")
    if past_frames < 0 or lookahead_frames < 0:
        raise ValueError(f"past_frames and lookahead_frames must be >= 0, got {past_frames} and {lookahead_frames}")
    lo, hi = center_frame_idx - past_frames, center_frame_idx + lookahead_frames + 1
    out = np.full((hi - lo, mel.shape[1]), pad_value, mel.dtype)
    src_lo, src_hi = max(lo, 0), min(hi, len(mel))
    if src_lo < src_hi:
        out[src_lo - lo : src_hi - lo] = mel[src_lo:src_hi]
    return out


def mel_windows_for_video(
    mel: np.ndarray,
    fps: float,
    n_video_frames: int,
    past_frames: int,
    lookahead_frames: int,
    spec: MelSpec = MelSpec(),
) -> np.ndarray:
    """(n_video_frames, past + 1 + lookahead, n_mels) windows, one per video frame, for batched training."""
    if n_video_frames < 0:
        raise ValueError(f"n_video_frames must be >= 0, got {n_video_frames}")
    if mel.ndim != 2:
        raise ValueError(f"mel must be (n_frames, n_mels), got shape {mel.shape}")
    centres = mel_frame_for_video_frame(np.arange(n_video_frames), fps, spec)
    offsets = np.arange(-past_frames, lookahead_frames + 1)
    rows = centres[:, None] + offsets[None, :]
    padded = np.concatenate([mel, np.full((1, mel.shape[1]), spec.silence_value, mel.dtype)])
    # Out-of-range rows point at the appended silence row.
    rows = np.where((rows >= 0) & (rows < len(mel)), rows, len(mel))
    return padded[rows]
