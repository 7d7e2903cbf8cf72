"""Values that travel between pipeline stages, each on one media clock.

Media time is the source's own timeline: audio sample n sits at n / sample_rate_hz seconds and video frame k at
k / fps seconds, so frame k shows the mouth for the audio at k / fps. Wall time is `Clock.now_s()` (monotonic
seconds); a value carries the wall time its audio arrived so that latency is measured from the moment sound reached
the machine, not from a media timestamp that drifts with the sound card's crystal.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

AUDIO_RATE_HZ = 16000


@dataclass(frozen=True)
class AudioChunk:
    """A run of mono audio from a source, placed on the source's sample clock."""

    samples: np.ndarray  # float32 (N,), linear amplitude in [-1, 1]
    start_sample: int  # media-clock index of samples[0]
    arrival_s: float  # wall time when the last sample became available
    sample_rate_hz: int = AUDIO_RATE_HZ

    def __post_init__(self) -> None:
        s = self.samples
        if not isinstance(s, np.ndarray) or s.ndim != 1 or s.dtype != np.float32:
            raise ValueError(f"AudioChunk.samples must be a float32 (N,) array, got {getattr(s, 'dtype', type(s))} "
                             f"{getattr(s, 'shape', '')}")
        if self.start_sample < 0:
            raise ValueError(f"AudioChunk.start_sample must be >= 0, got {self.start_sample}")
        if self.sample_rate_hz <= 0:
            raise ValueError(f"AudioChunk.sample_rate_hz must be positive, got {self.sample_rate_hz}")

    @property
    def end_sample(self) -> int:
        return self.start_sample + int(self.samples.size)

    @property
    def start_s(self) -> float:
        return self.start_sample / self.sample_rate_hz

    @property
    def end_s(self) -> float:
        return self.end_sample / self.sample_rate_hz

    def arrival_of(self, media_s: float) -> float:
        """Wall time at which the sample at `media_s` arrived (earlier samples of a chunk arrived earlier)."""
        return self.arrival_s - (self.end_s - media_s)


@dataclass(frozen=True)
class MelWindow:
    """The log-mel context for one video frame: past frames, the frame's own, and lookahead."""

    frame_index: int
    frame_pts_s: float  # media time this frame shows
    mel: np.ndarray  # float32 (mel_past_frames + 1 + mel_lookahead_frames, n_mels), oldest first
    ready_s: float  # wall time the last audio the window needs arrived: rendering could start then
    audio_arrival_s: float  # wall time the audio at frame_pts_s arrived: latency is measured from here


@dataclass(frozen=True)
class Frame:
    """One composited canvas picture, ready for sinks."""

    rgb: np.ndarray  # uint8 (H, W, 3) sRGB
    frame_index: int
    frame_pts_s: float  # media time, k / fps
    audio_arrival_s: float  # wall time the audio at frame_pts_s arrived

    @property
    def size_px(self) -> tuple[int, int]:
        """(width, height)"""
        return int(self.rgb.shape[1]), int(self.rgb.shape[0])
