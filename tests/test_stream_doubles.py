"""Test doubles for the live pipeline (no tests here): an analytic avatar renderer and recording sinks.

SphereHeadRenderer is NOT an avatar: it is a Lambertian ellipsoid lit through models.render, with a dark mouth whose
height follows the loudness of the frame's own mel row. That gives tests two measurable responses: the colour
statistics follow the lighting, and the mouth follows the audio.
"""

from __future__ import annotations

import time

import numpy as np

from models.audio import MelSpec
from models.render import render
from stream.avatar import RenderedFrame
from stream.types import AudioChunk, Frame

SKIN_ALBEDO_LINEAR = (0.55, 0.38, 0.30)
# log-mel row maximum above which the mouth starts to open, and the span over which it opens fully
_MOUTH_THRESHOLD = MelSpec().silence_value + 6.0
_MOUTH_SPAN = 8.0


class SphereHeadRenderer:
    """An ellipsoid 'head' filling the crop, shaded by SH + specular, with an audio-driven mouth."""

    def __init__(self, frame_size=(96, 128), fps=30.0, mel_past_frames=4, mel_lookahead_frames=2, delay_s=0.0):
        self.frame_size = frame_size
        self.fps = fps
        self.mel_past_frames = mel_past_frames
        self.mel_lookahead_frames = mel_lookahead_frames
        self.lookahead_ms = mel_lookahead_frames * 10.0
        self.delay_s = delay_s  # simulated compute time, to make the pipeline fall behind
        self.calls = 0
        w, h = frame_size
        x = (np.arange(w) + 0.5) / w * 2 - 1
        y = 1 - (np.arange(h) + 0.5) / h * 2
        xx, yy = np.meshgrid(x, y)
        r2 = xx**2 + yy**2
        inside = r2 < 1.0
        z = np.sqrt(np.clip(1 - r2, 0, 1))
        normals = np.stack([xx, yy, z], -1)
        normals[~inside] = (0, 0, 1)
        self._normals = (normals / np.linalg.norm(normals, axis=-1, keepdims=True)).astype(np.float32)
        self._albedo = np.broadcast_to(np.asarray(SKIN_ALBEDO_LINEAR, np.float32), (h, w, 3)).copy()
        edge = np.clip((1.0 - np.sqrt(r2)) * min(w, h) / 2, 0, 1)  # one-pixel soft edge
        self._matte = edge.astype(np.float32)
        self._xx, self._yy = xx, yy

    @staticmethod
    def mouth_openness(mel_row: np.ndarray) -> float:
        return float(np.clip((mel_row.max() - _MOUTH_THRESHOLD) / _MOUTH_SPAN, 0.0, 1.0))

    def mouth_mask(self, openness: float) -> np.ndarray:
        half_height = 0.02 + 0.25 * openness
        return ((self._xx / 0.35) ** 2 + ((self._yy + 0.45) / half_height) ** 2) < 1.0

    def render(self, mel_window, lighting, frame_index):
        self.calls += 1
        if self.delay_s:
            time.sleep(self.delay_s)
        rgb = render(self._albedo, self._normals, 0.2, lighting).astype(np.float32)
        rgb[self.mouth_mask(self.mouth_openness(mel_window[self.mel_past_frames]))] = 0.01
        return RenderedFrame(rgb_linear=rgb, matte=self._matte)


class RecordingSink:
    """Keeps what it is sent (frames down-sampled to their statistics, to keep memory small)."""

    name = "recording"

    def __init__(self, blocking=False, keep_frames=False):
        self.blocking = blocking
        self.keep_frames = keep_frames
        self.frames: list[Frame] = []
        self.indices: list[int] = []
        self.sizes: list[tuple[int, int]] = []
        self.audio_samples = 0
        self.closed = False

    def send(self, frame: Frame) -> None:
        self.indices.append(frame.frame_index)
        self.sizes.append(frame.size_px)
        if self.keep_frames:
            self.frames.append(frame)

    def send_audio(self, chunk: AudioChunk) -> None:
        self.audio_samples += chunk.samples.size

    def close(self) -> None:
        self.closed = True


def tone_after_silence(silence_s: float, tone_s: float, rate_hz: int = 16000, amplitude: float = 0.5) -> np.ndarray:
    """Silence then a 440 Hz tone: an onset at a known time."""
    t = np.arange(int(tone_s * rate_hz)) / rate_hz
    tone = amplitude * np.sin(2 * np.pi * 440 * t)
    return np.concatenate([np.zeros(int(silence_s * rate_hz)), tone]).astype(np.float32)
