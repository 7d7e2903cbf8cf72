"""The live pipeline: source -> features -> avatar renderer -> compositor -> sinks, on one clock.

    source.chunks() ──AudioChunk──► MelFeatures ──MelWindow──► [render queue] ──► renderer ──► compositor ──Frame──►
        │                                                       (bounded)        (thread)     (thread)
        └──AudioChunk──► audio sinks (MP4, WebRTC / virtual-mic delay lines)         [one queue per sink] ──► sinks

The renderer and the compositor each have a thread, so frame n is composited while frame n+1 renders: the frame
rate is bounded by the slower of the two, not by their sum, and a frame still leaves as soon as it is composited.

Time: every frame carries the wall time its audio arrived. A frame that could not even start rendering within
`latency_budget_ms` of its audio being complete is dropped and counted ("late"); a full render queue drops its
oldest entry ("render_queue"). So when compute falls behind, frames go missing but the ones shown are never older
than the budget: latency stays put. Offline runs (`realtime=False`) instead make every queue wait for room, so
every frame is rendered.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from stream.avatar import AvatarRenderer, check_rendered, check_renderer
from stream.backgrounds import BackgroundSet
from stream.clock import Clock, MonotonicClock
from stream.compose import Compositor
from stream.features import MelFeatures
from stream.heap import HeapTrimmer
from stream.lighting_state import LightingState
from stream.queues import DropQueue, QueueClosed
from stream.sink import Sink, SinkRunner
from stream.stats import PipelineStats
from stream.types import AudioChunk, Frame, MelWindow
from stream.voice_gate import VoiceGate

log = logging.getLogger(__name__)


class AudioSource(Protocol):
    """Yields 16 kHz mono AudioChunks with contiguous sample numbering, stamped on the pipeline's clock."""

    name: str

    def chunks(self, clock: Clock) -> AsyncIterator[AudioChunk]: ...

    def close(self) -> None: ...


def motion_frame_index(stream_frame: int, stream_fps: float, renderer_fps: float) -> int:
    """The renderer's own frame number at a stream frame's time.

    An avatar enrolled at 25 fps streamed at 30 fps (or the other way round) would otherwise play its idle motion
    (sway, blinks) 1.2x too fast or too slow; this way a recorded frame is now and then shown twice or skipped.
    """
    return int(math.floor(stream_frame * renderer_fps / stream_fps + 1e-9))


@dataclass(frozen=True)
class PipelineConfig:
    fps: float = 30.0
    canvas_size_px: tuple[int, int] = (1280, 720)
    realtime: bool = True  # False: offline, lossless, as fast as possible
    latency_budget_ms: float = 100.0  # longest a frame may wait, after its audio is complete, to start rendering
    queue_frames: int = 2  # depth of the render queue and of each sink's queue
    avatar_height_frac: float = 1.0  # the avatar's height on the canvas, as a fraction of it (checked by fit_avatar)
    heap_trim_s: float = 5.0  # hand freed heap memory back to the OS this often (stream/heap.py); 0: never
    voice_gate_db: float | None = None  # treat audio this far under the speaker's loud level as silence (voice_gate)

    def __post_init__(self) -> None:
        if self.fps not in (25.0, 30.0):
            raise ValueError(f"fps must be 25 or 30 (the rates video calls use), got {self.fps}")
        if self.latency_budget_ms <= 0:
            raise ValueError(f"latency_budget_ms must be positive, got {self.latency_budget_ms}")
        if self.queue_frames < 1:
            raise ValueError(f"queue_frames must be >= 1, got {self.queue_frames}")
        if self.heap_trim_s < 0:
            raise ValueError(f"heap_trim_s must be >= 0 (0: never), got {self.heap_trim_s}")
        if self.voice_gate_db is not None and not self.voice_gate_db > 0:
            raise ValueError(f"voice_gate_db must be positive (dB under the speaker's level), got {self.voice_gate_db}")


class LatencyEstimate:
    """Median audio-to-frame latency over recent frames: how long delayed-audio sinks hold audio back."""

    def __init__(self, initial_ms: float, window: int = 60) -> None:
        self._ms: deque[float] = deque([initial_ms], maxlen=window)
        self.listeners: list = []  # callables taking the new estimate in ms

    def add_ms(self, latency_ms: float) -> None:
        self._ms.append(latency_ms)
        value = self.ms
        for listener in self.listeners:
            listener(value)

    @property
    def ms(self) -> float:
        return float(np.median(self._ms))


class Pipeline:
    def __init__(
        self,
        source: AudioSource,
        renderer: AvatarRenderer,
        lighting: LightingState,
        backgrounds: BackgroundSet,
        sinks: list[Sink],
        config: PipelineConfig = PipelineConfig(),
        clock: Clock | None = None,
    ) -> None:
        check_renderer(renderer)
        self.source = source
        self.renderer = renderer
        self.lighting = lighting
        self.backgrounds = backgrounds
        self.config = config
        self.clock = clock or MonotonicClock()
        self.stats = PipelineStats()
        gate = VoiceGate(below_peak_db=config.voice_gate_db) if config.voice_gate_db is not None else None
        self.features = MelFeatures(config.fps, renderer.mel_past_frames, renderer.mel_lookahead_frames, gate=gate)
        self.compositor = Compositor(config.canvas_size_px, renderer.frame_size, config.avatar_height_frac)
        self.latency = LatencyEstimate(self.features.lookahead_ms + 1000.0 / config.fps)
        self._sinks = [SinkRunner(s, self.stats, config.queue_frames, lossless=not config.realtime) for s in sinks]
        for sink in sinks:
            self._follow_latency(sink)
        self._render_queue: DropQueue[MelWindow] = DropQueue(config.queue_frames, "render", lossless=not config.realtime)
        # One render thread (renders are sequential by contract) and one compose thread: two stages in flight.
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="render")
        self._compose_worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="compose")
        self._heap = HeapTrimmer(config.heap_trim_s)
        self._stop = asyncio.Event()
        self._next_renderer: AvatarRenderer | None = None

    def switch_renderer(self, renderer: AvatarRenderer) -> None:
        """Render with `renderer` from the next frame on (another avatar, live).

        The audio window must be the one the mel features are cut for: every bundle enrolled with the default
        settings has the same, and a different one is refused with the reason rather than fed the wrong window."""
        check_renderer(renderer)
        have = (self.renderer.mel_past_frames, self.renderer.mel_lookahead_frames)
        want = (renderer.mel_past_frames, renderer.mel_lookahead_frames)
        if want != have:
            raise ValueError(f"this avatar reads {want[0]} mel frames before and {want[1]} after each video frame; "
                             f"the running one {have[0]} and {have[1]}: start relitcam run with it instead")
        self._next_renderer = renderer

    def add_sink(self, sink: Sink) -> SinkRunner:
        """Attach a sink while running (a browser joining); it gets frames from the next one on."""
        runner = SinkRunner(sink, self.stats, self.config.queue_frames, lossless=not self.config.realtime)
        self._sinks.append(runner)
        self._follow_latency(sink)
        runner.start()
        return runner

    async def remove_sink(self, runner: SinkRunner) -> None:
        setter = getattr(runner.sink, "set_delay_ms", None)
        if setter in self.latency.listeners:
            self.latency.listeners.remove(setter)
        if runner in self._sinks:
            self._sinks.remove(runner)
            await runner.finish()

    def _follow_latency(self, sink: Sink) -> None:
        """Sinks that send audio beside the video (set_delay_ms) hold it back by the measured latency."""
        setter = getattr(sink, "set_delay_ms", None)
        if setter is not None:
            setter(self.latency.ms)
            self.latency.listeners.append(setter)

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> PipelineStats:
        for runner in self._sinks:
            runner.start()
        feed = asyncio.create_task(self._feed(), name="feed")
        render = asyncio.create_task(self._render_loop(), name="render")
        stop = asyncio.create_task(self._stop.wait(), name="stop-wait")
        try:
            await asyncio.wait({feed, stop}, return_when=asyncio.FIRST_COMPLETED)
            if not feed.done():
                feed.cancel()
                self.source.close()
                self._render_queue.close()
            await asyncio.gather(feed, return_exceptions=True)
            if feed.done() and not feed.cancelled() and feed.exception() is not None:
                render.cancel()
                raise feed.exception()
            await render
        finally:
            stop.cancel()
            for runner in list(self._sinks):
                await runner.finish()
            self._worker.shutdown(wait=True)
            self._compose_worker.shutdown(wait=True)
            self.stats.dropped["render_queue"] = self._render_queue.dropped
        errors = [r for r in self._sinks if r.error is not None]
        for r in errors:
            log.error("sink %s stopped early: %s", r.sink.name, r.error)
        return self.stats

    async def _feed(self) -> None:
        timer = self.stats.timer("features")
        try:
            async for chunk in self.source.chunks(self.clock):
                for runner in self._sinks:
                    runner.send_audio(chunk)
                t0 = self.clock.now_s()
                windows = self.features.process(chunk)
                timer.add_s(self.clock.now_s() - t0)
                for window in windows:
                    await self._render_queue.put(window)
            for window in self.features.flush(self.clock.now_s()):
                await self._render_queue.put(window)
        finally:
            self.source.close()
            self._render_queue.close()

    async def _render_loop(self) -> None:
        loop = asyncio.get_running_loop()
        budget_s = self.config.latency_budget_ms / 1000.0
        render_timer = self.stats.timer("render")
        emitting: asyncio.Task | None = None  # the previous frame: compositing, then out to the sinks
        try:
            while True:
                try:
                    window = await self._render_queue.get()
                except QueueClosed:
                    break
                now_s = self.clock.now_s()
                if self.config.realtime and now_s - window.ready_s > budget_s:
                    self.stats.count_drop("late")
                    continue
                if self._next_renderer is not None:
                    if emitting is not None:
                        await emitting  # the old avatar's last frame is composited at its own size first
                        emitting = None
                    self.renderer, self._next_renderer = self._next_renderer, None
                    self.compositor.set_avatar_size(self.renderer.frame_size)
                lighting = self.lighting.current(now_s)
                background = self.backgrounds.current
                rendered, render_s = await loop.run_in_executor(self._worker, self._render, window, lighting)
                render_timer.add_s(render_s)
                if emitting is not None:
                    await emitting  # frames leave in order; its error, if any, stops the loop here
                compose = loop.run_in_executor(self._compose_worker, self._compose, rendered, background)
                emitting = asyncio.create_task(self._emit(window, compose), name="emit")
            if emitting is not None:
                await emitting
        finally:
            if emitting is not None and not emitting.done():
                emitting.cancel()

    async def _emit(self, window: MelWindow, compose: asyncio.Future) -> None:
        canvas, compose_s = await compose
        self.stats.timer("compose").add_s(compose_s)
        frame = Frame(canvas, window.frame_index, window.frame_pts_s, window.audio_arrival_s)
        done_s = self.clock.now_s()
        latency_ms = 1000.0 * (done_s - window.audio_arrival_s)
        self.stats.timer("audio_to_frame").add_s(latency_ms / 1000.0)
        if self.config.realtime:
            self.latency.add_ms(latency_ms)
        self.stats.frame_sent(done_s)
        for runner in self._sinks:
            await runner.put(frame)

    def _render(self, window: MelWindow, lighting):
        # Runs on the render thread: nothing that touches the event loop.
        t0 = self.clock.now_s()
        rendered = self.renderer.render(
            window.mel, lighting, motion_frame_index(window.frame_index, self.config.fps, self.renderer.fps)
        )
        check_rendered(rendered, self.renderer.frame_size)
        return rendered, self.clock.now_s() - t0

    def _compose(self, rendered, background):
        # Runs on the compose thread, which has time to spare (its frame time is half the renderer's): the heap
        # trim goes here, after the frame is timed, rather than on the event loop.
        t0 = self.clock.now_s()
        canvas = self.compositor.process(rendered, background)
        t1 = self.clock.now_s()
        if self._heap.maybe_trim(t1):
            self.stats.timer("heap_trim").add_s(self.clock.now_s() - t1)
        return canvas, t1 - t0
