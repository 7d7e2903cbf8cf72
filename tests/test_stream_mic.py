"""Microphone source and the delayed virtual microphone, against a real PulseAudio null sink; plus the vanishing
microphone and device choice against a fake PortAudio."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time

import numpy as np
import pytest

from models.lighting.sources import preset
from stream import mic
from stream.backgrounds import BackgroundSet
from stream.clock import MonotonicClock
from stream.lighting_state import LightingState
from stream.mic import InputDevice, MicrophoneSource, find_input_device
from stream.pipeline import Pipeline, PipelineConfig
from stream.types import AudioChunk
from test_stream_doubles import RecordingSink, SphereHeadRenderer

CANVAS = (320, 240)


def _pactl(*args):
    return subprocess.run(["pactl", *args], capture_output=True, text=True, timeout=10)


@pytest.fixture(scope="module")
def pulse():
    """A PulseAudio server: the running one, or one started here (and stopped again afterwards)."""
    if shutil.which("pactl") is None or shutil.which("pulseaudio") is None:
        pytest.skip("PulseAudio (pulseaudio, pactl) is not installed")
    started = False
    if _pactl("info").returncode != 0:
        # As root PulseAudio warns but runs per-user; --system would need a system-wide setup and D-Bus.
        subprocess.run(["pulseaudio", "--daemon", "--exit-idle-time=-1"], capture_output=True, timeout=20)
        for _ in range(50):
            if _pactl("info").returncode == 0:
                started = True
                break
            time.sleep(0.1)
        else:
            pytest.skip("PulseAudio could not be started here")
    yield
    if started:
        subprocess.run(["pulseaudio", "--kill"], capture_output=True, timeout=20)


@pytest.fixture
def null_source(pulse):
    """A null sink whose monitor is the default source: what is played into it is what 'the microphone' hears."""
    module = _pactl("load-module", "module-null-sink", "sink_name=relitcam_test_voice").stdout.strip()
    previous = _pactl("get-default-source").stdout.strip()
    _pactl("set-default-source", "relitcam_test_voice.monitor")
    yield "relitcam_test_voice"
    if previous:
        _pactl("set-default-source", previous)
    _pactl("unload-module", module)


def test_microphone_through_pulseaudio_drives_the_mouth(null_source, tmp_path):
    # 1 s of silence, then 2 s of tone, played into the null sink the microphone listens to.
    rate = 16000
    t = np.arange(3 * rate) / rate
    voice = (0.5 * np.sin(2 * np.pi * 440 * t) * (t >= 1.0)).astype("<f4")
    try:
        source = MicrophoneSource("pulse")
    except ValueError as e:
        pytest.skip(f"PortAudio has no 'pulse' input here: {e}")
    renderer = SphereHeadRenderer()
    sink = RecordingSink(keep_frames=True)
    pipeline = Pipeline(source, renderer, LightingState(preset("soft_front")), BackgroundSet(None, CANVAS), [sink],
                        PipelineConfig(canvas_size_px=CANVAS, realtime=True))

    raw = tmp_path / "voice.f32"
    raw.write_bytes(voice.tobytes())

    async def go():
        run = asyncio.create_task(pipeline.run())
        try:
            await asyncio.sleep(0.3)  # let capture open before the sound starts
            # pacat reads the file itself: once (in a full run on a busy machine) pacat fed through a pipe spun at
            # full CPU after the pipe closed and never finished; a stuck player now fails the test, it cannot hang it.
            player = await asyncio.create_subprocess_exec(
                "pacat", "--playback", f"--device={null_source}", "--format=float32le", "--rate=16000",
                "--channels=1", str(raw))
            try:
                await asyncio.wait_for(player.wait(), 15)
            finally:
                if player.returncode is None:
                    player.kill()
                    await player.wait()
        finally:
            pipeline.stop()
            await run

    asyncio.run(go())
    dark = np.array([(f.rgb[195:235, 120:200].max(axis=2) < 40).sum() for f in sink.frames])
    assert len(sink.frames) > 30
    closed, opened = dark.min(), dark.max()
    assert opened > 3 * max(closed, 1), "the mouth never opened: no tone came through the microphone"
    assert (dark[: len(dark) // 5] < (closed + opened) / 2).all(), "the mouth was open during the silence"


def test_delayed_virtual_microphone_plays_into_pulseaudio(pulse):
    from stream.virtual_mic import VirtualMicSink

    async def go():
        clock = MonotonicClock()
        sink = VirtualMicSink(clock, sink_name="relitcam_test_mic")
        try:
            assert "relitcam_test_mic" in _pactl("list", "short", "sinks").stdout
            assert sink.source_name in _pactl("list", "short", "sources").stdout
            sink.set_delay_ms(100)
            recorder = await asyncio.create_subprocess_exec(
                "parec", "--device=relitcam_test_mic.monitor", "--format=float32le", "--rate=16000", "--channels=1",
                "--latency-msec=20", "--raw", stdout=asyncio.subprocess.PIPE)
            start = clock.now_s()
            tone = (0.5 * np.sin(2 * np.pi * 440 * np.arange(320) / 16000)).astype(np.float32)
            for i in range(60):  # 1.2 s of tone, pushed in real time as a source would
                await clock.sleep_until(start + (i + 1) * 0.02)
                sink.send_audio(AudioChunk(tone, i * 320, clock.now_s()))
            # parec hands its data over in large blocks; read a fixed amount rather than stopping it early.
            raw = await asyncio.wait_for(recorder.stdout.readexactly(16000 * 4), 10)
            recorder.kill()
            await recorder.wait()
            heard = np.frombuffer(raw, "<f4")
        finally:
            sink.close()
        assert heard.size > 0 and np.abs(heard).max() > 0.3
        assert "relitcam_test_mic" not in _pactl("list", "short", "sinks").stdout

    asyncio.run(go())


# -- device choice and a vanishing microphone, against a fake PortAudio ----------------------------------------------

DEVICES = [InputDevice(0, "HDA Intel PCH: ALC257 Analog", 2, 48000.0), InputDevice(3, "USB Headset Mic", 1, 16000.0)]


def test_device_choice_by_index_or_name_and_a_clear_error_listing_devices():
    assert find_input_device(DEVICES, "3").name == "USB Headset Mic"
    assert find_input_device(DEVICES, "headset").index == 3
    assert find_input_device(DEVICES, None) is None  # the system default
    with pytest.raises(ValueError, match="(?s)no input device named 'webcam'.*3: USB Headset Mic"):
        find_input_device(DEVICES, "webcam")
    with pytest.raises(ValueError, match="no input device with index 7"):
        find_input_device(DEVICES, 7)
    with pytest.raises(ValueError, match="no input devices found"):
        find_input_device([], None)


class FakePortAudio:
    """Devices and streams under test control: `present` says whether the headset is plugged in."""

    present = True
    reads = 0

    def get_device_count(self):
        return 1 if FakePortAudio.present else 0

    def get_device_info_by_index(self, i):
        return {"name": "USB Headset Mic", "maxInputChannels": 1, "defaultSampleRate": 16000.0}

    def open(self, **kw):
        if not FakePortAudio.present:
            raise OSError("Invalid device")
        return FakeStream()

    def terminate(self):
        pass


class FakeStream:
    def read(self, n, exception_on_overflow=True):
        if not FakePortAudio.present:
            raise OSError("Stream closed: device unplugged")
        time.sleep(n / 16000)
        FakePortAudio.reads += 1
        return np.full(n, 0.25, np.float32).tobytes()

    def close(self):
        pass


def test_vanished_microphone_gives_silence_then_recovers(monkeypatch, caplog):
    monkeypatch.setattr(mic, "open_portaudio", FakePortAudio)
    monkeypatch.setattr(mic, "REOPEN_INTERVAL_S", 0.05)
    FakePortAudio.present, FakePortAudio.reads = True, 0
    source = MicrophoneSource("headset")
    levels: list[float] = []

    async def go():
        clock = MonotonicClock()
        async for chunk in source.chunks(clock):
            levels.append(float(np.abs(chunk.samples).max()))
            if len(levels) == 15:
                FakePortAudio.present = False  # unplugged
            if len(levels) == 35:
                FakePortAudio.present = True  # plugged back in
            if len(levels) >= 70:
                source.close()

    with caplog.at_level("WARNING", logger="stream.mic"):
        asyncio.run(go())
    assert len(levels) >= 70  # the stream never stopped
    assert max(levels[:15]) == pytest.approx(0.25)
    assert max(levels[22:35]) == 0.0  # silence while unplugged
    assert max(levels[55:]) == pytest.approx(0.25)  # and sound again after
    assert source.vanished_count == 1
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "unavailable" in messages and "is back" in messages
