"""Streaming log-mel: feed audio in chunks of any size, get the frames `log_mel` gives on the whole signal."""

from __future__ import annotations

import numpy as np

from models.audio.mel import MelSpec, log_mel_from_frames


class MelRingBuffer:
    """Incremental log-mel with a bounded history of recent frames for the audio-to-expression window.

    The sample buffer starts with `win_length // 2` zeros, mirroring `log_mel`'s left padding, and after each push keeps
    only the samples the next frame still needs, so memory is O(win_length + chunk) regardless of stream length.
    """

    def __init__(self, spec: MelSpec = MelSpec(), history_frames: int = 200) -> None:
        if history_frames <= 0:
            raise ValueError(f"history_frames must be positive, got {history_frames}")
        self.spec = spec
        self.history_frames = history_frames
        self._pending = np.zeros(spec.left_pad_samples, np.float64)
        self._history = np.full((history_frames, spec.n_mels), spec.silence_value, np.float32)
        self._frames_emitted = 0

    @property
    def frames_emitted(self) -> int:
        """Total frames produced so far; the next frame has this index in offline numbering."""
        return self._frames_emitted

    def push(self, chunk: np.ndarray) -> np.ndarray:
        """Append a 1-D float chunk; return the (k, n_mels) float32 frames it completed (k may be 0)."""
        x = np.asarray(chunk)
        if x.ndim != 1:
            raise ValueError(f"MelRingBuffer.push expects a 1-D chunk, got shape {x.shape}")
        if not np.issubdtype(x.dtype, np.floating):
            raise ValueError(f"MelRingBuffer.push expects float samples in [-1, 1], got dtype {x.dtype}")
        spec = self.spec
        buf = np.concatenate([self._pending, x.astype(np.float64)])
        if len(buf) < spec.win_length:
            self._pending = buf
            return np.zeros((0, spec.n_mels), np.float32)
        k = 1 + (len(buf) - spec.win_length) // spec.hop_length
        frames = np.lib.stride_tricks.sliding_window_view(buf, spec.win_length)[:: spec.hop_length][:k]
        mel = log_mel_from_frames(frames, spec)
        self._pending = buf[k * spec.hop_length :].copy()
        self._remember(mel)
        self._frames_emitted += k
        return mel

    def _remember(self, mel: np.ndarray) -> None:
        k = len(mel)
        if k >= self.history_frames:
            self._history[:] = mel[-self.history_frames :]
        else:
            self._history = np.roll(self._history, -k, axis=0)
            self._history[-k:] = mel

    def recent(self, n_frames: int) -> np.ndarray:
        """The last `n_frames` frames (oldest first); rows before the stream began hold the silence value."""
        if not 0 < n_frames <= self.history_frames:
            raise ValueError(f"recent() needs 0 < n_frames <= history_frames ({self.history_frames}), got {n_frames}")
        return self._history[-n_frames:].copy()
