"""What a sink is, and how the pipeline feeds several at once without one slow sink holding up the others.

A sink is a small class with `send(frame)` and `close()` (pyvirtualcam's backends are the model). Sinks that also
take the source audio (MP4, WebRTC, the delayed virtual microphone) have `send_audio(chunk)`. Each sink gets its own
bounded queue and task: a virtual camera blocked on a slow reader drops its own frames and counts them, while the
browser and the file keep receiving theirs.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol, runtime_checkable

from stream.queues import DropQueue, QueueClosed
from stream.stats import PipelineStats
from stream.types import AudioChunk, Frame

log = logging.getLogger(__name__)


@runtime_checkable
class Sink(Protocol):
    name: str
    # True when send() does slow work (encoding, device writes): it then runs on a worker thread, off the loop.
    blocking: bool

    def send(self, frame: Frame) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class AudioSink(Protocol):
    def send_audio(self, chunk: AudioChunk) -> None:
        """Source audio as it arrives, on the event loop: must not block (buffer, then do the work in send/close)."""
        ...


class SinkUnavailable(RuntimeError):
    """A sink cannot start here (no device, no PulseAudio...); the message says what to install or load."""


class SinkRunner:
    """One sink's queue and delivery task."""

    def __init__(self, sink: Sink, stats: PipelineStats, queue_frames: int, lossless: bool) -> None:
        self.sink = sink
        self.stats = stats
        self.queue: DropQueue[Frame] = DropQueue(queue_frames, f"sink {sink.name}", lossless=lossless)
        self.error: BaseException | None = None
        self._timer = stats.timer(f"sink:{sink.name}")
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._deliver(), name=f"sink-{self.sink.name}")

    async def put(self, frame: Frame) -> None:
        if self.error is None:
            await self.queue.put(frame)

    def send_audio(self, chunk: AudioChunk) -> None:
        if self.error is None and isinstance(self.sink, AudioSink):
            self.sink.send_audio(chunk)

    async def _deliver(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                try:
                    frame = await self.queue.get()
                except QueueClosed:
                    break
                t0 = loop.time()
                if self.sink.blocking:
                    await asyncio.to_thread(self.sink.send, frame)
                else:
                    self.sink.send(frame)
                self._timer.add_s(loop.time() - t0)
        except Exception as e:  # one broken sink must not take the others down; the error is reported at the end
            self.error = e
            log.error("sink %s failed and was stopped: %s", self.sink.name, e)
        finally:
            self.stats.dropped[f"sink:{self.sink.name}"] = self.queue.dropped

    async def finish(self) -> None:
        """Deliver what is queued, then close the sink."""
        self.queue.close()
        if self._task is not None:
            await self._task
        await asyncio.to_thread(self.sink.close) if self.sink.blocking else self.sink.close()
