"""Virtual camera sink through pyvirtualcam, with a recording backend registered the way real ones are."""

from __future__ import annotations

import asyncio
import glob

import numpy as np
import pyvirtualcam
import pytest

from models.lighting.sources import preset
from stream.backgrounds import BackgroundSet
from stream.file_source import FileSource
from stream.lighting_state import LightingState
from stream.pipeline import Pipeline, PipelineConfig
from stream.sink import SinkUnavailable
from stream.types import Frame
from stream.virtualcam import VirtualCameraSink
from test_stream_doubles import SphereHeadRenderer, tone_after_silence


class RecordingBackend:
    """A pyvirtualcam backend (see pyvirtualcam.camera.Backend) that keeps what it is sent."""

    opened: list["RecordingBackend"] = []

    def __init__(self, *, width, height, fps, fourcc, device, **kw):
        self.width, self.height, self.fps, self.fourcc = width, height, fps, fourcc
        self.frames: list[np.ndarray] = []
        self.closed = False
        RecordingBackend.opened.append(self)

    def send(self, frame):
        self.frames.append(frame.copy())

    def close(self):
        self.closed = True

    def device(self):
        return "recording-camera"

    def native_fourcc(self):
        return self.fourcc


@pytest.fixture
def recording_backend():
    pyvirtualcam.register_backend("relitcam-recording", RecordingBackend)
    RecordingBackend.opened.clear()
    yield RecordingBackend
    pyvirtualcam.camera.BACKENDS.pop("relitcam-recording", None)


@pytest.mark.parametrize("fps", [25.0, 30.0])
def test_virtual_camera_gets_canvas_sized_frames_at_the_configured_rate(recording_backend, fps):
    canvas = (256, 144)
    sink = VirtualCameraSink(canvas, fps, backend="relitcam-recording")
    assert sink.device == "recording-camera"
    pipeline = Pipeline(
        FileSource(tone_after_silence(0.2, 0.8), realtime=False),
        SphereHeadRenderer(fps=fps),
        LightingState(preset("studio_key")),
        BackgroundSet(None, canvas),
        [sink],
        PipelineConfig(fps=fps, canvas_size_px=canvas, realtime=False),
    )
    asyncio.run(pipeline.run())
    (camera,) = recording_backend.opened
    assert (camera.width, camera.height, camera.fps) == (256, 144, fps)
    assert len(camera.frames) == int(fps)  # one second of audio
    assert all(f.size == 256 * 144 * 3 and f.dtype == np.uint8 for f in camera.frames)
    picture = camera.frames[-1].reshape(144, 256, 3)
    assert picture[100:, 100:156].mean() != picture[:20, :20].mean()  # the avatar is there, not just background
    assert camera.closed


def test_wrong_frame_size_is_refused(recording_backend):
    sink = VirtualCameraSink((64, 48), 30.0, backend="relitcam-recording")
    with pytest.raises(ValueError, match="64x48"):
        sink.send(Frame(np.zeros((48, 80, 3), np.uint8), 0, 0.0, 0.0))
    sink.close()


def test_unknown_backend_lists_the_registered_ones():
    with pytest.raises(ValueError, match="registered backends"):
        VirtualCameraSink((64, 48), 30.0, backend="no-such-backend")


@pytest.mark.skipif(bool(glob.glob("/dev/video*")), reason="a video device exists here; nothing to refuse")
def test_missing_virtual_camera_says_how_to_get_one():
    with pytest.raises(SinkUnavailable, match="v4l2loopback|OBS"):
        VirtualCameraSink((64, 48), 30.0)
