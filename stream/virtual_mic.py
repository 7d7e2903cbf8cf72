"""Delayed virtual microphone: the source audio, held back by the pipeline latency, as a PulseAudio microphone.

Video-call apps take the avatar from the virtual camera and the voice from a microphone; if that microphone were
the real one, the voice would lead the lips by the pipeline latency. This sink plays the audio into a PulseAudio
null sink (`relitcam_mic`) through `pacat`, delayed like the WebRTC audio, and exposes the sink's monitor as a
source named `relitcam_mic_source` ("relitcam microphone") to pick in the call app. Works with PulseAudio and
PipeWire's pulse server; without them the sink refuses to start with a message saying so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import subprocess


from stream.clock import Clock
from stream.delay import AudioDelayLine
from stream.sink import SinkUnavailable
from stream.types import AUDIO_RATE_HZ, AudioChunk, Frame

log = logging.getLogger(__name__)

BLOCK_MS = 20.0


def _pactl(*args: str) -> str:
    result = subprocess.run(["pactl", *args], capture_output=True, text=True, timeout=10)
    if result.returncode != 0:
        raise SinkUnavailable(f"pactl {' '.join(args)} failed: {result.stderr.strip() or result.stdout.strip()}")
    return result.stdout.strip()


class VirtualMicSink:
    blocking = False

    def __init__(self, clock: Clock, sink_name: str = "relitcam_mic", sample_rate_hz: int = AUDIO_RATE_HZ) -> None:
        missing = [tool for tool in ("pactl", "pacat") if shutil.which(tool) is None]
        if missing:
            raise SinkUnavailable(f"virtual microphone needs {' and '.join(missing)} (Debian: apt install "
                                  "pulseaudio-utils) and a running PulseAudio or PipeWire-pulse server")
        try:
            _pactl("info")
        except (SinkUnavailable, subprocess.TimeoutExpired):
            raise SinkUnavailable("virtual microphone needs a running PulseAudio (or PipeWire-pulse) server; "
                                  "start one with: pulseaudio --daemon") from None
        self.name = "virtual-mic"
        self.clock = clock
        self.sink_name = sink_name
        self.source_name = f"{sink_name}_source"
        self.sample_rate_hz = sample_rate_hz
        self.line = AudioDelayLine(sample_rate_hz)
        self._modules = [
            _pactl("load-module", "module-null-sink", f"sink_name={sink_name}",
                   f"sink_properties=device.description={sink_name}"),
        ]
        try:
            self._modules.append(_pactl("load-module", "module-remap-source", f"master={sink_name}.monitor",
                                        f"source_name={self.source_name}",
                                        "source_properties=device.description=relitcam-microphone"))
        except SinkUnavailable as e:
            log.warning("virtual microphone: no remapped source (%s); use %s.monitor instead", e, sink_name)
        self._writer: asyncio.Task | None = None
        self._player: asyncio.subprocess.Process | None = None

    def set_delay_ms(self, delay_ms: float) -> None:
        if abs(delay_ms - 1000.0 * self.line.delay_s) > 15.0:
            self.line.set_delay_ms(delay_ms)

    def send(self, frame: Frame) -> None:
        pass  # audio only; the video goes to the virtual camera

    def send_audio(self, chunk: AudioChunk) -> None:
        self.line.push(chunk)
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._play())

    async def _play(self) -> None:
        self._player = await asyncio.create_subprocess_exec(
            "pacat", "--playback", f"--device={self.sink_name}", "--format=float32le", f"--rate={self.sample_rate_hz}",
            "--channels=1", "--latency-msec=40", "--client-name=relitcam", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )
        block = int(BLOCK_MS * self.sample_rate_hz / 1000)
        start_s, sent = self.clock.now_s(), 0
        try:
            while True:
                await self.clock.sleep_until(start_s + (sent + block) / self.sample_rate_hz)
                samples = self.line.pull(block, self.clock.now_s())
                self._player.stdin.write(samples.astype("<f4").tobytes())
                await self._player.stdin.drain()
                sent += block
        except (BrokenPipeError, ConnectionResetError):
            log.warning("virtual microphone: pacat exited; the virtual microphone is silent from now on")

    @property
    def pending_samples(self) -> int:
        return self.line.buffered_samples

    def close(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
        if self._player is not None and self._player.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._player.kill()
        for module in reversed(self._modules):
            with contextlib.suppress(SinkUnavailable, subprocess.TimeoutExpired):
                _pactl("unload-module", module)
        self._modules.clear()
