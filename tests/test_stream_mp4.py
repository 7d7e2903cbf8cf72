"""File source -> pipeline -> MP4 sink: the written file keeps audio and video in sync."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from models.audio import audio_envelope, envelope_onsets
from models.lighting.sources import preset
from models.media import read_video
from stream.backgrounds import BackgroundSet
from stream.file_source import FileSource
from stream.lighting_state import LightingState
from stream.mp4_sink import Mp4Sink
from stream.pipeline import Pipeline, PipelineConfig
from stream.types import Frame
from test_stream_doubles import SphereHeadRenderer, tone_after_silence

CANVAS = (320, 240)
FPS = 25.0


def test_mp4_round_trip_keeps_mouth_onset_on_the_audio_onset(tmp_path):
    audio = tone_after_silence(1.0, 1.0)
    out = tmp_path / "talk.mp4"
    sink = Mp4Sink(out, FPS, CANVAS)
    pipeline = Pipeline(
        FileSource(audio, realtime=False),
        SphereHeadRenderer(fps=FPS),
        LightingState(preset("soft_front")),
        BackgroundSet(["charcoal"], CANVAS),
        [sink],
        PipelineConfig(fps=FPS, canvas_size_px=CANVAS, realtime=False),
    )
    asyncio.run(pipeline.run())
    clip = read_video(out)
    assert clip.frame_count == 50 and clip.fps == pytest.approx(FPS)
    assert clip.audio is not None and abs(clip.audio.size - audio.size) < 1024
    audio_onset = envelope_onsets(audio_envelope(clip.audio, 16000, FPS, clip.frame_count), -30.0)[0]
    dark = np.array([(f[195:235, 120:200].max(axis=2) < 40).sum() for f in clip.frames])
    mouth_onset = int(np.argmax(dark > (dark[:10].max() + dark.max()) / 2))
    assert audio_onset == 25  # the tone starts at 1.0 s
    assert abs(mouth_onset - audio_onset) <= 1


def test_dropped_frames_are_filled_so_the_file_stays_constant_rate(tmp_path):
    out = tmp_path / "gaps.mp4"
    sink = Mp4Sink(out, 30.0, (64, 48), with_audio=False)
    for k in (2, 3, 7):
        sink.send(Frame(np.full((48, 64, 3), 30 * k, np.uint8), k, k / 30, 0.0))
    sink.close()
    clip = read_video(out, with_audio=False)
    assert clip.frame_count == 8 and sink.frames_repeated == 5
    levels = clip.frames.reshape(8, -1).mean(axis=1)
    np.testing.assert_allclose(levels, [60, 60, 60, 90, 90, 90, 90, 210], atol=3)


def test_mp4_sink_refuses_bad_paths_and_empty_output(tmp_path):
    with pytest.raises(ValueError, match=".mp4"):
        Mp4Sink(tmp_path / "x.avi", 30.0, (64, 48))
    sink = Mp4Sink(tmp_path / "empty.mp4", 30.0, (64, 48))
    with pytest.raises(ValueError, match="no frames"):
        sink.close()
    assert not (tmp_path / "empty.mp4").exists()
    assert not list(tmp_path.glob(".*.tmp"))
