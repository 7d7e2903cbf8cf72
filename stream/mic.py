"""Microphone source through PyAudio (PortAudio): 16 kHz mono, device chosen by name or index.

Capture runs on its own thread (PortAudio reads block) and hands blocks to the event loop; the pipeline pulls them
on its clock (see live_audio.py). When the device vanishes (USB headset unplugged) the thread warns once, the
pipeline keeps getting silence, and the thread keeps looking for a device of the same name; when it is back,
audio flows again with no restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np

from stream.clock import Clock
from stream.live_audio import TICK_MS, ClockedCapture
from stream.types import AUDIO_RATE_HZ, AudioChunk

log = logging.getLogger(__name__)

REOPEN_INTERVAL_S = 1.0


@dataclass(frozen=True)
class InputDevice:
    index: int
    name: str
    channels: int
    default_rate_hz: float


@contextlib.contextmanager
def _quiet_stderr():
    """PortAudio probes ALSA/JACK on start-up and prints pages of harmless complaints to fd 2; hide them."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def open_portaudio():
    import pyaudio

    with _quiet_stderr():
        return pyaudio.PyAudio()


def list_input_devices(pa) -> list[InputDevice]:
    devices = []
    for i in range(pa.get_device_count()):
        info = pa.get_device_info_by_index(i)
        if int(info.get("maxInputChannels", 0)) > 0:
            devices.append(InputDevice(i, str(info["name"]), int(info["maxInputChannels"]), float(info["defaultSampleRate"])))
    return devices


def describe_devices(devices: list[InputDevice]) -> str:
    if not devices:
        return "no input devices found (is a microphone connected, or PulseAudio/PipeWire running?)"
    return "input devices:\n" + "\n".join(f"  {d.index}: {d.name} ({d.channels} ch, {d.default_rate_hz:g} Hz)" for d in devices)


def find_input_device(devices: list[InputDevice], spec: str | int | None) -> InputDevice | None:
    """spec: an index, a (case-insensitive) name or part of one, or None for the system default (returns None)."""
    if spec is None or spec == "":
        if not devices:
            raise ValueError(f"no microphone: {describe_devices(devices)}")
        return None
    text = str(spec).strip()
    if text.isdigit():
        for d in devices:
            if d.index == int(text):
                return d
        raise ValueError(f"no input device with index {text}; {describe_devices(devices)}")
    exact = [d for d in devices if d.name.lower() == text.lower()]
    partial = [d for d in devices if text.lower() in d.name.lower()]
    if exact or partial:
        return (exact or partial)[0]
    raise ValueError(f"no input device named {text!r}; {describe_devices(devices)}")


class MicrophoneSource(ClockedCapture):
    def __init__(self, device: str | int | None = None, sample_rate_hz: int = AUDIO_RATE_HZ) -> None:
        super().__init__("microphone", sample_rate_hz=sample_rate_hz)
        pa = open_portaudio()
        try:
            chosen = find_input_device(list_input_devices(pa), device)
        finally:
            pa.terminate()
        self.device_spec = device
        # Reopen by name, not index: indices shift when devices come and go.
        self.device_name = chosen.name if chosen else None
        self.vanished_count = 0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    async def chunks(self, clock: Clock) -> AsyncIterator[AudioChunk]:
        loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._capture, args=(loop, clock), name="mic-capture", daemon=True)
        self._thread.start()
        async for chunk in super().chunks(clock):
            yield chunk

    def _open(self, pa):
        """A 16 kHz mono stream, or the device's native rate plus a resampler where it will not do 16 kHz."""
        import av
        import pyaudio

        devices = list_input_devices(pa)
        index = None
        if self.device_name is not None:
            match = [d for d in devices if d.name == self.device_name]
            if not match:
                return None, None, 0
            index = match[0].index
        elif not devices:
            return None, None, 0
        block = int(TICK_MS * self.sample_rate_hz / 1000)
        try:
            stream = pa.open(format=pyaudio.paFloat32, channels=1, rate=self.sample_rate_hz, input=True,
                             input_device_index=index, frames_per_buffer=block)
            return stream, None, block
        except (OSError, ValueError):
            info = pa.get_device_info_by_index(index) if index is not None else pa.get_default_input_device_info()
            rate = int(info["defaultSampleRate"])
            block = int(TICK_MS * rate / 1000)
            stream = pa.open(format=pyaudio.paFloat32, channels=1, rate=rate, input=True, input_device_index=index,
                             frames_per_buffer=block)
            return stream, (av.AudioResampler(format="flt", layout="mono", rate=self.sample_rate_hz), rate), block

    def _capture(self, loop: asyncio.AbstractEventLoop, clock: Clock) -> None:
        import av

        name = self.device_name or "default input"
        warned = False
        while not self._stop.is_set():
            pa = open_portaudio()
            stream = None
            try:
                with _quiet_stderr():
                    stream, resample, block = self._open(pa)
                if stream is None:
                    raise OSError("device not present")
                if warned:
                    log.warning("microphone %r is back", name)
                    warned = False
                while not self._stop.is_set():
                    raw = stream.read(block, exception_on_overflow=False)
                    samples = np.frombuffer(raw, np.float32)
                    if resample is not None:
                        resampler, rate = resample
                        frame = av.AudioFrame.from_ndarray(samples[None, :], format="flt", layout="mono")
                        frame.sample_rate = rate
                        samples = np.concatenate([f.to_ndarray().reshape(-1) for f in resampler.resample(frame)] or
                                                 [np.zeros(0, np.float32)])
                    loop.call_soon_threadsafe(self.push, samples.copy(), clock.now_s())
            except (OSError, ValueError) as e:
                if not warned:
                    self.vanished_count += 1
                    log.warning("microphone %r unavailable (%s); sending silence until it returns", name, e)
                    warned = True
                self._stop.wait(REOPEN_INTERVAL_S)
            except RuntimeError:  # the event loop closed under us: the pipeline is gone
                return
            finally:
                if stream is not None:
                    with contextlib.suppress(Exception):
                        stream.close()
                pa.terminate()

    def close(self) -> None:
        super().close()
        self._stop.set()
