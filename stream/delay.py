"""A delay line for audio that leaves the machine beside the video: sample s plays at arrival(s) + delay.

The video of media time t reaches its sinks `latency` after the audio of t arrived, so audio sent out next to it
(WebRTC, the virtual microphone) must be held back by the same amount for lips to match. Consumers pull fixed-size
blocks at their own steady pace; the line gives silence until a sample's release time comes (start-up, gaps) and
skips ahead when it has fallen more than `max_backlog_ms` behind, so drift between clocks never accumulates.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from stream.types import AudioChunk


class AudioDelayLine:
    def __init__(self, sample_rate_hz: int, delay_ms: float = 0.0, max_backlog_ms: float = 120.0) -> None:
        self.sample_rate_hz = sample_rate_hz
        self.delay_s = delay_ms / 1000.0
        self.max_backlog_s = max_backlog_ms / 1000.0
        self.dropped_samples = 0
        self.underrun_samples = 0
        # (samples, wall time the first of them arrived); the head entry is consumed from `_offset`
        self._chunks: deque[tuple[np.ndarray, float]] = deque()
        self._offset = 0
        self._started = False

    def set_delay_ms(self, delay_ms: float) -> None:
        self.delay_s = max(0.0, delay_ms / 1000.0)

    def push(self, chunk: AudioChunk) -> None:
        if chunk.sample_rate_hz != self.sample_rate_hz:
            raise ValueError(f"delay line runs at {self.sample_rate_hz} Hz, got a {chunk.sample_rate_hz} Hz chunk")
        first_arrival_s = chunk.arrival_s - chunk.samples.size / self.sample_rate_hz
        self._chunks.append((chunk.samples, first_arrival_s))

    def _head_release_s(self) -> float:
        samples, first_arrival_s = self._chunks[0]
        return first_arrival_s + self._offset / self.sample_rate_hz + self.delay_s

    def pull(self, n_samples: int, now_s: float) -> np.ndarray:
        """The next `n_samples` to play at `now_s`: released samples, silence where none are due yet."""
        out = np.zeros(n_samples, np.float32)
        filled = 0
        # Too far behind (consumer stalled, or the delay shrank): skip to keep latency from growing.
        while self._chunks and self._head_release_s() < now_s - self.max_backlog_s:
            self._skip(int((now_s - self.max_backlog_s - self._head_release_s()) * self.sample_rate_hz) + 1)
        while filled < n_samples and self._chunks:
            if self._head_release_s() > now_s + 0.5 * n_samples / self.sample_rate_hz:
                break  # not due yet
            samples, _ = self._chunks[0]
            take = min(n_samples - filled, samples.size - self._offset)
            out[filled : filled + take] = samples[self._offset : self._offset + take]
            filled += take
            self._advance(take)
            self._started = True
        if self._started:
            self.underrun_samples += n_samples - filled
        return out

    def _advance(self, n: int) -> None:
        self._offset += n
        if self._offset >= self._chunks[0][0].size:
            self._chunks.popleft()
            self._offset = 0

    def _skip(self, n: int) -> None:
        while n > 0 and self._chunks:
            take = min(n, self._chunks[0][0].size - self._offset)
            self._advance(take)
            self.dropped_samples += take
            n -= take

    @property
    def buffered_samples(self) -> int:
        return sum(c.size for c, _ in self._chunks) - self._offset
