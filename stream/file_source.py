"""Audio from a file (WAV, or the audio track of any container PyAV reads), cut into 20 ms chunks.

realtime=True releases each chunk when its last sample would have been heard had the file been playing since the
start, so the live pipeline sees exactly what a microphone would give it; realtime=False yields as fast as the
consumer takes them (offline rendering; arrival times are then just "now").
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np

from stream.clock import Clock
from stream.types import AUDIO_RATE_HZ, AudioChunk

CHUNK_MS = 20.0


def read_audio_file(path: str | Path, sample_rate_hz: int = AUDIO_RATE_HZ) -> np.ndarray:
    """float32 mono at `sample_rate_hz` from a WAV or a media container; ValueError when there is no audio."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such audio file: '{path}'")
    if path.suffix.lower() == ".wav":
        from models.audio import read_wav

        return read_wav(path, sample_rate_hz).samples.astype(np.float32, copy=False)
    from models.media import read_audio

    audio = read_audio(path, sample_rate_hz)
    if audio is None:
        raise ValueError(f"'{path}' has no audio track")
    return audio


class FileSource:
    def __init__(
        self,
        samples: np.ndarray,
        realtime: bool,
        name: str = "file",
        loop: bool = False,
        chunk_ms: float = CHUNK_MS,
        sample_rate_hz: int = AUDIO_RATE_HZ,
    ) -> None:
        samples = np.asarray(samples)
        if samples.ndim != 1 or samples.size == 0:
            raise ValueError(f"{name}: audio must be non-empty mono (N,), got shape {samples.shape}")
        self.samples = samples.astype(np.float32, copy=False)
        self.realtime = realtime
        self.name = name
        self.loop = loop
        self.sample_rate_hz = sample_rate_hz
        self.chunk_samples = max(1, int(round(chunk_ms * sample_rate_hz / 1000.0)))
        self._closed = False

    @classmethod
    def from_path(cls, path: str | Path, realtime: bool, loop: bool = False) -> FileSource:
        return cls(read_audio_file(path), realtime=realtime, name=Path(path).name, loop=loop)

    @property
    def duration_s(self) -> float:
        return self.samples.size / self.sample_rate_hz

    async def chunks(self, clock: Clock) -> AsyncIterator[AudioChunk]:
        start_s = clock.now_s()
        sample = 0  # on the media clock: keeps counting across loops
        n = self.samples.size
        while not self._closed:
            offset = sample % n
            if offset == 0 and sample > 0 and not self.loop:
                return
            piece = self.samples[offset : offset + self.chunk_samples]
            end = sample + piece.size
            if self.realtime:
                arrival_s = start_s + end / self.sample_rate_hz
                await clock.sleep_until(arrival_s)
            else:
                arrival_s = clock.now_s()
                await asyncio.sleep(0)  # as fast as possible, but let the other stages run between chunks
            yield AudioChunk(piece, sample, arrival_s, self.sample_rate_hz)
            sample = end

    def close(self) -> None:
        self._closed = True
