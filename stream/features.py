"""Audio features stage: AudioChunks in, one MelWindow per video frame out, as soon as its audio is complete.

Frame k shows media time k / fps; its window is centred on the mel frame nearest that time (models.audio.window)
and reaches `lookahead_frames` mel frames (10 ms each) into the future. So frame k can be drawn only once the audio
up to k / fps + lookahead (+ half an STFT window) has arrived: that wait is the pipeline's built-in latency, and
the reason the audio sent out with the video is delayed to match.
"""

from __future__ import annotations

import numpy as np

from models.audio import MelRingBuffer, MelSpec
from models.audio.window import mel_frame_for_video_frame
from stream.clock import FrameGrid
from stream.types import AudioChunk, MelWindow
from stream.voice_gate import VoiceGate

# Mel frames kept beyond one window, so a large chunk (files read as fast as possible) cannot push a frame's
# window out of the ring before it is cut.
_HISTORY_SLACK_FRAMES = 400


class MelFeatures:
    """process(chunk) -> the MelWindows that chunk completed (zero, one or several)."""

    def __init__(self, fps: float, past_frames: int, lookahead_frames: int, spec: MelSpec = MelSpec(),
                 gate: VoiceGate | None = None) -> None:
        if past_frames < 0 or lookahead_frames < 0:
            raise ValueError(f"mel past/lookahead frames must be >= 0, got {past_frames} and {lookahead_frames}")
        self.grid = FrameGrid(fps)
        self.spec = spec
        self.past_frames = past_frames
        self.lookahead_frames = lookahead_frames
        self.window_frames = past_frames + 1 + lookahead_frames
        self._ring = MelRingBuffer(spec, history_frames=self.window_frames + _HISTORY_SLACK_FRAMES)
        # The gate's verdict per mel row, for the rows the ring still holds (row index = _gate_first + position).
        self.gate = gate
        self._gate_open = np.zeros(0, bool)
        self._gate_first = 0
        self._next_frame = 0
        self._samples_in = 0
        self._last_arrival_s = 0.0

    @property
    def lookahead_ms(self) -> float:
        """Audio after a frame's pts needed before it can be drawn: mel lookahead plus half an STFT window."""
        return 1000.0 * (self.lookahead_frames * self.spec.hop_length + self.spec.win_length / 2) / self.spec.sample_rate_hz

    @property
    def frames_emitted(self) -> int:
        return self._next_frame

    def process(self, chunk: AudioChunk) -> list[MelWindow]:
        if chunk.sample_rate_hz != self.spec.sample_rate_hz:
            raise ValueError(f"audio chunk is {chunk.sample_rate_hz} Hz; features expect {self.spec.sample_rate_hz} Hz")
        if chunk.start_sample != self._samples_in:
            # Sources fill gaps with silence, so a gap here is a bug upstream, not something to paper over.
            raise ValueError(f"audio chunk starts at sample {chunk.start_sample}, expected {self._samples_in}")
        self._samples_in = chunk.end_sample
        self._last_arrival_s = chunk.arrival_s
        self._push(chunk.samples)
        return self._ready_windows(chunk)

    def _push(self, samples: np.ndarray) -> None:
        rows = self._ring.push(samples)
        if self.gate is not None and len(rows):
            keep = self._ring.history_frames
            self._gate_open = np.concatenate([self._gate_open, self.gate.update(rows)])[-keep:]
            self._gate_first = self._ring.frames_emitted - self._gate_open.size

    def flush(self, now_s: float) -> list[MelWindow]:
        """At end of stream: the frames whose pts lie inside the audio but whose lookahead ran past its end.

        Silence stands in for the missing future, the same padding models.audio.mel_window uses offline.
        """
        end_s = self._samples_in / self.spec.sample_rate_hz
        last_frame = self.grid.frames_until(end_s - 1e-9) if end_s > 0 else 0
        windows: list[MelWindow] = []
        pad = np.zeros(self.spec.hop_length, np.float32)
        while self._next_frame < last_frame:
            self._push(pad)
            windows += self._ready_windows(None, now_s=now_s, limit_frame=last_frame)
        return windows

    def _ready_windows(self, chunk: AudioChunk | None, now_s: float = 0.0, limit_frame: int | None = None):
        windows = []
        emitted = self._ring.frames_emitted
        while limit_frame is None or self._next_frame < limit_frame:
            k = self._next_frame
            centre = mel_frame_for_video_frame(k, self.grid.fps, self.spec)
            last_needed = centre + self.lookahead_frames
            if last_needed >= emitted:
                break
            first_needed = centre - self.past_frames
            recent = self._ring.recent(emitted - first_needed)
            if self.gate is not None:
                rows = np.arange(first_needed, first_needed + recent.shape[0]) - self._gate_first
                known = (rows >= 0) & (rows < self._gate_open.size)
                closed = np.zeros(recent.shape[0], bool)
                closed[known] = ~self._gate_open[rows[known]]
                recent[closed] = self.spec.silence_value
            if chunk is None:
                # Rows past the real audio are padding's frames; the offline windows hold silence there.
                real_rows = self.spec.n_frames(self._samples_in) - first_needed
                recent[max(0, real_rows) :] = self.spec.silence_value
            pts_s = self.grid.pts_s(k)
            if chunk is not None:
                ready_s, arrival_s = chunk.arrival_s, chunk.arrival_of(pts_s)
            else:
                ready_s, arrival_s = now_s, self._last_arrival_s
            windows.append(MelWindow(k, pts_s, recent[: self.window_frames], ready_s, arrival_s))
            self._next_frame += 1
        return windows
