"""Live audio sources (microphone, a browser's microphone) share one shape: capture pushes blocks whenever they
come; the pipeline pulls exactly one 20 ms chunk per 20 ms tick of the pipeline's clock.

Pulling on the clock, through a short jitter buffer (AudioDelayLine), means the media clock never stops: when the
device vanishes or the browser goes quiet the pipeline gets silence and the avatar keeps idling; when capture
comes back its audio simply flows again; and the capture device's own crystal drifting against the monotonic clock
is absorbed by the buffer instead of slowly piling up latency.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np

from stream.clock import Clock
from stream.delay import AudioDelayLine
from stream.types import AUDIO_RATE_HZ, AudioChunk

TICK_MS = 20.0
# One tick of slack: capture blocks and pipeline ticks are not aligned, and without it every misaligned tick would
# play a block of silence.
JITTER_MS = 20.0


class ClockedCapture:
    """push(samples, arrival_s) from capture (on the event loop); chunks(clock) for the pipeline."""

    def __init__(self, name: str, jitter_ms: float = JITTER_MS, sample_rate_hz: int = AUDIO_RATE_HZ) -> None:
        self.name = name
        self.sample_rate_hz = sample_rate_hz
        self.line = AudioDelayLine(sample_rate_hz, delay_ms=jitter_ms, max_backlog_ms=4 * TICK_MS)
        self.tick_samples = int(round(TICK_MS * sample_rate_hz / 1000.0))
        self._pushed = 0
        self._closed = False

    def push(self, samples: np.ndarray, arrival_s: float) -> None:
        samples = np.asarray(samples, np.float32).reshape(-1)
        if samples.size:
            self.line.push(AudioChunk(samples, self._pushed, arrival_s, self.sample_rate_hz))
            self._pushed += samples.size

    async def chunks(self, clock: Clock) -> AsyncIterator[AudioChunk]:
        start_s = clock.now_s()
        sample = 0
        tick_s = self.tick_samples / self.sample_rate_hz
        while not self._closed:
            due_s = start_s + (sample + self.tick_samples) / self.sample_rate_hz
            await clock.sleep_until(due_s)
            now_s = clock.now_s()
            if now_s - due_s > 10 * tick_s:
                # The loop stalled (machine suspended, debugger): restart the tick grid rather than burst to catch up.
                start_s = now_s - (sample + self.tick_samples) / self.sample_rate_hz
            block = self.line.pull(self.tick_samples, now_s)
            yield AudioChunk(block, sample, now_s, self.sample_rate_hz)
            sample += self.tick_samples

    def close(self) -> None:
        self._closed = True
