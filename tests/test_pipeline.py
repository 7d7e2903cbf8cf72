"""The pipeline's core: queues, clock grid, features, lighting glide, controls, delay line, and whole runs with a
test renderer (offline: every frame; live: drops counted, latency bounded)."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from models.audio import log_mel
from models.audio.window import mel_windows_for_video
from models.lighting.sources import preset
from models.render import render
from stream.backgrounds import BackgroundSet
from stream.clock import FrameGrid
from stream.compose import (Compositor, Placement, composite_scaled, encode_alpha_u8, encode_srgb_u8,
                            fit_avatar)
from stream.avatar import RenderedFrame
from stream.controls import Controls
from stream.delay import AudioDelayLine
from stream.features import MelFeatures
from stream.file_source import FileSource
from stream.lighting_state import LightingControls, LightingState
from stream.pipeline import Pipeline, PipelineConfig, motion_frame_index
from stream.queues import DropQueue, QueueClosed
from stream.types import AudioChunk
from test_stream_doubles import RecordingSink, SphereHeadRenderer, tone_after_silence

CANVAS = (320, 240)


class ManualClock:
    def __init__(self, t=0.0):
        self.t = t

    def now_s(self):
        return self.t

    async def sleep_until(self, t_s):
        self.t = max(self.t, t_s)
        await asyncio.sleep(0)


# -- queues -------------------------------------------------------------------------------------------------------


def test_lossy_queue_drops_oldest_and_counts():
    async def go():
        q = DropQueue(2, "q")
        for i in range(5):
            q.put_nowait(i)
        assert q.dropped == 3 and len(q) == 2
        assert [await q.get(), await q.get()] == [3, 4]
        q.close()
        with pytest.raises(QueueClosed):
            await q.get()

    asyncio.run(go())


def test_lossless_queue_makes_producer_wait():
    async def go():
        q = DropQueue(1, "q", lossless=True)
        await q.put(1)
        second = asyncio.create_task(q.put(2))
        await asyncio.sleep(0.01)
        assert not second.done() and len(q) == 1
        assert await q.get() == 1
        await second
        assert await q.get() == 2 and q.dropped == 0

    asyncio.run(go())


def test_queue_rejects_zero_size():
    with pytest.raises(ValueError, match="maxsize"):
        DropQueue(0, "render")


# -- clock grid and features ---------------------------------------------------------------------------------------


def test_frame_grid_counts_frames_up_to_a_time():
    grid = FrameGrid(30.0)
    assert grid.frames_until(0.0) == 1
    assert grid.frames_until(1.0) == 31
    assert grid.pts_s(15) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="fps"):
        FrameGrid(0)


def test_streaming_windows_equal_offline_windows():
    x = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    feats = MelFeatures(25.0, past_frames=8, lookahead_frames=4)
    windows = []
    for s in range(0, x.size, 333):  # odd chunk size on purpose
        windows += feats.process(AudioChunk(x[s : s + 333], s, s / 16000))
    windows += feats.flush(2.0)
    offline = mel_windows_for_video(log_mel(x), 25.0, 25, 8, 4)
    assert [w.frame_index for w in windows] == list(range(25))
    np.testing.assert_allclose(np.stack([w.mel for w in windows]), offline, atol=1e-4)


def test_features_refuse_a_gap_in_the_audio():
    feats = MelFeatures(30.0, 2, 2)
    feats.process(AudioChunk(np.zeros(320, np.float32), 0, 0.0))
    with pytest.raises(ValueError, match="expected 320"):
        feats.process(AudioChunk(np.zeros(320, np.float32), 640, 0.0))


def test_audio_chunk_validates_its_samples():
    with pytest.raises(ValueError, match="float32"):
        AudioChunk(np.zeros(10, np.int16), 0, 0.0)


# -- compositing -------------------------------------------------------------------------------------------------


def test_compositor_puts_avatar_bottom_centre_and_keeps_background_elsewhere():
    bgs = BackgroundSet(["charcoal"], CANVAS)
    comp = Compositor(CANVAS, (100, 80), height_frac=80 / 240)  # native size
    assert fit_avatar((100, 80), CANVAS, 80 / 240).x_px == 110 and comp.placement.y_px == 160
    white = RenderedFrame(np.ones((80, 100, 3), np.float32), np.ones((80, 100), np.float32))
    canvas = comp.process(white, bgs.current)
    assert canvas.shape == (240, 320, 3) and canvas.dtype == np.uint8
    assert (canvas[160:, 110:210] == 255).all()
    np.testing.assert_array_equal(canvas[:160], bgs.current.srgb[:160])
    np.testing.assert_array_equal(canvas[160:, :110], bgs.current.srgb[160:, :110])


def test_avatar_fills_the_canvas_height_by_default_and_shrinks_to_fit_the_width():
    assert fit_avatar((256, 256), (1280, 720)) == Placement(x_px=280, y_px=0, width_px=720, height_px=720)
    assert fit_avatar((640, 480), CANVAS) == Placement(x_px=0, y_px=0, width_px=320, height_px=240)
    assert fit_avatar((100, 100), (320, 240), 0.5) == Placement(x_px=100, y_px=120, width_px=120, height_px=120)
    with pytest.raises(ValueError, match="fraction of the canvas height"):
        fit_avatar((100, 100), CANVAS, 1.5)


def test_the_avatar_size_control_resizes_it_on_the_canvas():
    clock = ManualClock(1.0)
    comp = Compositor(CANVAS, (100, 100))
    controls = Controls(LightingState(preset("soft_front")), BackgroundSet(["charcoal"], CANVAS), clock, [], comp)
    assert controls.state()["avatar_height"] == 1.0
    reply = asyncio.run(controls.handle({"type": "avatar_height", "value": 0.5}))
    assert reply["state"]["avatar_height"] == 0.5
    assert comp.placement == Placement(x_px=100, y_px=120, width_px=120, height_px=120)
    white = RenderedFrame(np.ones((100, 100, 3), np.float32), np.ones((100, 100), np.float32))
    canvas = comp.process(white, controls.backgrounds.current)
    assert (canvas[120:, 100:220] == 255).all() and not (canvas[:120] == 255).any()
    for bad, error in ((0.05, "must be in"), ("big", "finite number")):
        reply = asyncio.run(controls.handle({"type": "avatar_height", "value": bad}))
        assert reply["type"] == "error" and error in reply["error"] and comp.height_frac == 0.5
    without = _controls(clock)  # a stream without a compositor does not offer it
    assert "avatar_height" not in without.state()
    assert "no compositor" in asyncio.run(without.handle({"type": "avatar_height", "value": 0.5}))["error"]


def test_scaled_compositing_interpolates_premultiplied_colour_as_its_float_definition():
    """A red disc with a soft edge, scaled 2.4x over grey: no dark fringe (straight-colour interpolation would pull
    the black outside the matte in), and Pillow's 8-bit result equals composite_scaled to within 2 grey levels."""
    yy, xx = np.mgrid[0:100, 0:100] / 99.0
    matte = np.clip((0.4 - np.hypot(xx - 0.5, yy - 0.5)) * 15, 0, 1).astype(np.float32)
    rgb = np.zeros((100, 100, 3), np.float32)
    rgb[matte > 0] = (0.8, 0.05, 0.05)
    bg = BackgroundSet(["charcoal"], CANVAS).current
    comp = Compositor(CANVAS, (100, 100))
    assert (comp.placement.width_px, comp.placement.height_px) == (240, 240)
    canvas = comp.process(RenderedFrame(rgb, matte), bg)
    want = composite_scaled(encode_srgb_u8(rgb), encode_alpha_u8(matte), bg.srgb, comp.placement)
    assert np.abs(canvas.astype(int) - want.astype(int)).max() <= 2
    region = canvas[:, 40:280].astype(int)
    grey = bg.srgb[0, 0].astype(int)
    # Every edge pixel lies between the red and the background: its green never drops below both.
    assert region[..., 1].min() >= min(grey[1], int(encode_srgb_u8(np.float32([0.05]))[0])) - 2
    assert (region[120, 120] == encode_srgb_u8(np.float32([0.8, 0.05, 0.05]))).all()


def test_srgb_lut_matches_the_curve():
    from models.colour import linear_to_srgb

    x = np.linspace(0, 1, 1001, dtype=np.float32)
    exact = np.round(linear_to_srgb(x) * 255)
    assert np.abs(encode_srgb_u8(x.copy()).astype(int) - exact).max() <= 1


def test_odd_canvas_is_refused():
    with pytest.raises(ValueError, match="even"):
        Compositor((321, 240), (10, 10))


# -- lighting state and controls ------------------------------------------------------------------------------------


def test_lighting_glides_to_target_over_the_glide_time():
    state = LightingState(preset("soft_front"), glide_ms=250, now_s=0.0)
    start = state.current(10.0).sh_coeffs.copy()
    state.set_base(preset("warm_sunset"), now_s=10.0)
    target = state.target.sh_coeffs
    np.testing.assert_allclose(state.current(10.0).sh_coeffs, start, atol=1e-6)
    mid = state.current(10.125).sh_coeffs
    assert np.abs(mid - start).sum() > 0.1 and np.abs(mid - target).sum() > 0.1
    np.testing.assert_allclose(state.current(10.3).sh_coeffs, target, atol=1e-6)


def test_light_yaw_moves_the_key_light_toward_image_right():
    state = LightingState(preset("top"), glide_ms=0)
    state.set_direction(0.0, -60.0, 0.0)  # bring the overhead light down to the front
    front = state.current(0.0).light_dirs[0].copy()
    state.set_direction(45.0, -60.0, 0.0)
    assert state.current(0.0).light_dirs[0][0] > front[0] + 0.3


def test_shine_scales_the_highlights_and_nothing_else():
    base = preset("studio_key")
    rng = np.random.default_rng(3)
    normals = rng.normal(size=(16, 16, 3)) + np.array([0.0, 0.0, 3.0])
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
    albedo = rng.uniform(0.2, 0.8, (16, 16, 3))
    spec = rng.uniform(0.0, 0.3, (16, 16))
    diffuse = render(albedo, normals, 0.0, base)
    highlights = render(albedo, normals, spec, base) - diffuse
    assert highlights.max() > 0.05  # the preset has a key light whose lobe the face catches
    for shine in (0.0, 0.5, 2.0):
        lit = LightingState(base, glide_ms=0, controls=LightingControls(shine=shine)).current(0.0)
        np.testing.assert_array_equal(lit.sh_coeffs, base.sh_coeffs)
        np.testing.assert_allclose(render(albedo, normals, spec, lit), diffuse + shine * highlights, atol=1e-5)


def test_shine_glides_and_stays_within_its_range():
    state = LightingState(preset("studio_key"), glide_ms=200, now_s=0.0)
    full = state.current(0.0).light_colours.sum()
    state.set_shine(0.0, 1.0)
    half_way = state.current(1.1).light_colours.sum()  # (the glide pairs lights by direction: compare totals)
    assert 0.3 * full < half_way < 0.7 * full
    np.testing.assert_allclose(state.current(1.3).light_colours, 0.0, atol=1e-7)
    state.set_shine(7.0, 2.0)
    assert state.describe()["shine"] == 2.0


def _controls(clock):
    return Controls(LightingState(preset("soft_front"), now_s=clock.now_s()), BackgroundSet(None, CANVAS), clock, [])


@pytest.mark.parametrize(
    "message, error",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"kind": "preset"}', "'type'"),
        ('{"type": "explode"}', "unknown control type"),
        ('{"type": "preset", "name": "disco"}', "unknown preset"),
        ('{"type": "intensity", "value": "bright"}', "finite number"),
        ('{"type": "intensity", "value": 99}', "must be in"),
        ('{"type": "shine", "value": "oily"}', "finite number"),
        ('{"type": "shine", "value": -1}', "must be in"),
        ('{"type": "shine_step"}', "steps"),
        ('{"type": "colour", "rgb": "red"}', "#rrggbb"),
        ('{"type": "colour", "rgb": "#000000"}', "black"),
        ('{"type": "background", "name": "moon"}', "unknown background"),
        ('{"type": "next_hdr"}', "no HDR maps"),
        ("x" * 5000, "too long"),
    ],
)
def test_malformed_control_messages_get_specific_errors_and_change_nothing(message, error):
    clock = ManualClock(1.0)
    controls = _controls(clock)
    before = controls.state()
    reply = asyncio.run(controls.handle(message))
    assert reply["type"] == "error" and error in reply["error"]
    assert controls.state() == before


def test_control_messages_change_lighting_and_background():
    clock = ManualClock(1.0)
    controls = _controls(clock)
    reply = asyncio.run(controls.handle(json.dumps({"type": "preset", "name": "warm_sunset", "id": 7})))
    assert reply == {"type": "state", "state": controls.state(), "id": 7}
    assert controls.lighting.target.name == "warm_sunset"
    asyncio.run(controls.handle({"type": "intensity", "value": 2.0}))
    asyncio.run(controls.handle({"type": "colour", "rgb": "#ff8000"}))
    asyncio.run(controls.handle({"type": "background", "name": "office_blue"}))
    asyncio.run(controls.handle({"type": "rotate", "dyaw_deg": 15, "dpitch_deg": -15}))
    asyncio.run(controls.handle({"type": "shine", "value": 0.5}))
    asyncio.run(controls.handle({"type": "shine_step", "steps": -1}))
    state = controls.state()
    assert state["shine"] == 0.25
    assert state["intensity"] == 2.0 and state["background"] == "office_blue"
    assert state["tint_rgb"][0] == 1.0 and state["tint_rgb"][2] == 0.0
    assert (state["yaw_deg"], state["pitch_deg"]) == (15.0, -15.0)
    np.testing.assert_allclose(
        controls.lighting.target.sh_coeffs[0, 2], 0.0, atol=1e-6
    )  # a pure orange tint has no blue


# -- delay line ----------------------------------------------------------------------------------------------------


def test_delay_line_holds_audio_back_by_the_delay():
    line = AudioDelayLine(16000, delay_ms=100)
    chunk = np.ones(320, np.float32)
    line.push(AudioChunk(chunk, 0, arrival_s=1.02))  # samples arrived over 1.00..1.02
    assert not line.pull(320, now_s=1.05).any()  # not due before 1.10
    np.testing.assert_array_equal(line.pull(320, now_s=1.10), chunk)
    assert line.buffered_samples == 0


def test_delay_line_skips_ahead_when_far_behind():
    line = AudioDelayLine(16000, delay_ms=0, max_backlog_ms=100)
    for i in range(50):  # one second of audio, all arrived by t=1
        line.push(AudioChunk(np.full(320, i, np.float32), i * 320, arrival_s=(i + 1) * 0.02))
    out = line.pull(320, now_s=1.0)
    assert out[0] >= 44  # only the last ~100 ms is still worth playing
    assert line.dropped_samples >= 44 * 320


# -- whole runs ---------------------------------------------------------------------------------------------------


def _pipeline(audio, renderer, sinks, realtime, **config):
    cfg = PipelineConfig(canvas_size_px=CANVAS, realtime=realtime, **config)
    return Pipeline(
        FileSource(audio, realtime=realtime),
        renderer,
        LightingState(preset("studio_key")),
        BackgroundSet(None, CANVAS),
        sinks,
        cfg,
    )


def test_offline_run_renders_every_frame_and_the_mouth_follows_the_audio():
    renderer = SphereHeadRenderer()
    sink = RecordingSink(keep_frames=True)
    stats = asyncio.run(_pipeline(tone_after_silence(0.5, 0.5), renderer, [sink], realtime=False).run())
    assert sink.indices == list(range(30)) and sink.closed
    assert set(sink.sizes) == {CANVAS}
    assert sink.audio_samples == 16000
    assert stats.report()["dropped_total"] == 0
    # The mouth (dark pixels around its place on the canvas) is closed in the silence and open in the tone.
    dark = [int((f.rgb[195:235, 120:200].max(axis=2) < 40).sum()) for f in sink.frames]
    assert max(dark[:14]) < min(dark[17:])


def test_an_avatar_enrolled_at_25_fps_keeps_its_motion_speed_in_a_30_fps_stream():
    seen = []

    class Recording25(SphereHeadRenderer):
        def render(self, mel_window, lighting, frame_index):
            seen.append(frame_index)
            return super().render(mel_window, lighting, frame_index)

    sink = RecordingSink()
    asyncio.run(_pipeline(np.zeros(16000, np.float32), Recording25(fps=25.0), [sink], realtime=False).run())
    assert sink.indices == list(range(30))
    assert seen == [k * 25 // 30 for k in range(30)]  # one second of stream shows the avatar's first 25 frames
    assert seen[-1] == 24 and len(set(seen)) == 25
    assert motion_frame_index(30, 25.0, 30.0) == 36 and motion_frame_index(7, 30.0, 30.0) == 7


def test_with_the_voice_gate_the_mouth_still_follows_the_speakers_tone():
    renderer = SphereHeadRenderer()
    sink = RecordingSink(keep_frames=True)
    pipeline = _pipeline(tone_after_silence(0.5, 0.5), renderer, [sink], realtime=False, voice_gate_db=20.0)
    assert pipeline.features.gate is not None
    asyncio.run(pipeline.run())
    dark = [int((f.rgb[195:235, 120:200].max(axis=2) < 40).sum()) for f in sink.frames]
    assert sink.indices == list(range(30)) and max(dark[:14]) < min(dark[17:])


def test_frame_n_composites_while_frame_n_plus_1_renders_and_frames_leave_in_order():
    import threading
    import time

    spans = {"render": [], "compose": []}
    renderer = SphereHeadRenderer(delay_s=0.02)
    sink = RecordingSink()
    pipeline = _pipeline(np.zeros(8000, np.float32), renderer, [sink], realtime=False)
    render, compose = pipeline._render, pipeline.compositor.process

    def timed(kind, fn):
        def run(*args):
            t0 = time.monotonic()
            out = fn(*args)
            if kind == "compose":
                time.sleep(0.02)
            spans[kind].append((t0, time.monotonic(), threading.current_thread().name))
            return out
        return run

    pipeline._render = timed("render", render)
    pipeline.compositor.process = timed("compose", compose)
    asyncio.run(pipeline.run())
    assert sink.indices == list(range(15))
    assert {name.split("_")[0] for *_, name in spans["render"]} == {"render"}
    assert {name.split("_")[0] for *_, name in spans["compose"]} == {"compose"}
    # Compose n and render n+1 overlap in time: the two stages run side by side, not one after the other.
    overlaps = sum(c0 < r1 and r0 < c1 for (c0, c1, _), (r0, r1, _) in zip(spans["compose"], spans["render"][1:]))
    assert overlaps >= 10


def test_live_run_behind_schedule_drops_frames_and_latency_stays_bounded():
    # Rendering takes 4 frame intervals: without dropping, the last frame would come ~3 s after its audio.
    renderer = SphereHeadRenderer(delay_s=4 / 30)
    sink = RecordingSink()
    pipeline = _pipeline(np.zeros(32000, np.float32), renderer, [sink], realtime=True, latency_budget_ms=50)
    stats = asyncio.run(pipeline.run())
    report = stats.report()
    assert report["dropped"].get("late", 0) + report["dropped"]["render_queue"] > 30
    assert len(sink.indices) < 30
    assert sink.indices == sorted(sink.indices)
    # Latency = wait (<= budget) + one render; generous slack for a loaded machine, far below the ~3 s of a backlog.
    assert stats.timers["audio_to_frame"].percentiles_ms()["p99"] < 1000


def test_one_failing_sink_does_not_stop_the_others():
    class Broken(RecordingSink):
        name = "broken"

        def send(self, frame):
            raise OSError("device unplugged")

    good = RecordingSink()
    asyncio.run(_pipeline(np.zeros(8000, np.float32), SphereHeadRenderer(), [Broken(), good], realtime=False).run())
    assert good.indices == list(range(15))


def test_pipeline_refuses_unsupported_fps():
    with pytest.raises(ValueError, match="25 or 30"):
        PipelineConfig(fps=60)


def test_a_switched_avatar_takes_the_next_frame_without_a_gap():
    # Offline, 1 s: at frame 10 the sink asks for a wider avatar; frames keep coming, every index once, and the
    # canvas shows the new avatar's width from the frame after the one being rendered when it was asked.
    first, second = SphereHeadRenderer(frame_size=(96, 128)), SphereHeadRenderer(frame_size=(128, 128))

    class SwitchingSink(RecordingSink):
        def send(self, frame):
            super().send(frame)
            if frame.frame_index == 10:
                pipeline.switch_renderer(second)

    sink = SwitchingSink(keep_frames=True)
    pipeline = _pipeline(tone_after_silence(0.5, 0.5), first, [sink], realtime=False)
    stats = asyncio.run(pipeline.run())
    assert sink.indices == list(range(30)) and stats.report()["dropped_total"] == 0
    assert pipeline.renderer is second and pipeline.compositor.avatar_size_px == (128, 128)
    assert first.calls + second.calls == 30 and first.calls >= 11 and second.calls >= 15

    def head_width(frame):  # columns where the canvas differs from the wall's colour at its left edge
        row = frame.rgb[frame.rgb.shape[0] // 2].astype(int)
        return int((np.abs(row - row[0]).max(axis=1) > 12).sum())

    widths = [head_width(f) for f in sink.frames]
    assert widths[0] < widths[-1]
    assert widths[:11] == [widths[0]] * 11 and widths[-15:] == [widths[-1]] * 15


def test_an_avatar_with_another_audio_window_is_refused():
    pipeline = _pipeline(tone_after_silence(0.1, 0.1), SphereHeadRenderer(), [RecordingSink()], realtime=False)
    with pytest.raises(ValueError, match="reads 6 mel frames before and 2 after .* the running one 4 and 2"):
        pipeline.switch_renderer(SphereHeadRenderer(mel_past_frames=6))
    assert pipeline._next_renderer is None
