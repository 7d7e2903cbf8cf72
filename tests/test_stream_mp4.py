"""File source -> pipeline -> MP4 sink: the written file keeps audio and video in sync."""

from __future__ import annotations

import asyncio
import functools
import http.server
import shutil
import subprocess
import sys
import threading
from pathlib import Path

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
from stream.types import AudioChunk, Frame
from test_stream_doubles import SphereHeadRenderer, tone_after_silence
from test_webrtc import CHROMIUM, CHROMIUM_ARGS

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
    (tmp_path / "a_file").write_text("")
    with pytest.raises(ValueError, match="cannot write the MP4 '.*a_file/x.mp4'"):
        Mp4Sink(tmp_path / "a_file" / "x.mp4", 30.0, (64, 48))  # its folder is a file
    if Path("/proc/self").is_dir():
        with pytest.raises(ValueError, match="cannot write the MP4 '/proc/x.mp4'"):
            Mp4Sink("/proc/x.mp4", 30.0, (64, 48))  # /proc takes no new files, even from root
    sink = Mp4Sink(tmp_path / "empty.mp4", 30.0, (64, 48))
    with pytest.raises(ValueError, match="no frames"):
        sink.close()
    assert not (tmp_path / "empty.mp4").exists()


CRASHING_WRITER = """
import os, sys
import numpy as np
from stream.mp4_sink import Mp4Sink
from stream.types import AudioChunk, Frame
sink = Mp4Sink(sys.argv[1], 25.0, (64, 48))
for k in range(175):  # 7 s
    sink.send_audio(AudioChunk(np.full(640, 0.1, np.float32), 640 * k, k / 25, 16000))
    sink.send(Frame(np.full((48, 64, 3), k, np.uint8), k, k / 25, 0.0))
os._exit(0)  # killed mid-call: no close, no flush
"""


def test_a_recording_cut_off_mid_call_still_plays_up_to_its_last_fragment(tmp_path):
    out = tmp_path / "call.mp4"
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", CRASHING_WRITER, str(out)], cwd=repo, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    clip = read_video(out)
    # Fragments end every 2 s of pictures; the last one or two are lost (open, or still in the encoder's look-ahead,
    # which grows with its thread count).
    assert 100 <= clip.frame_count < 175
    levels = clip.frames.reshape(clip.frame_count, -1).mean(axis=1)
    np.testing.assert_allclose(levels, np.arange(clip.frame_count), atol=3)
    assert clip.audio is not None and clip.audio.size >= 16000 * (clip.frame_count / 25 - 0.5)


@pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="needs Debian's chromium at /usr/bin/chromium")
def test_chromium_shows_the_recordings_duration_seeks_and_plays_it_through(tmp_path):
    from playwright.async_api import async_playwright

    sink = Mp4Sink(tmp_path / "rec.mp4", 30.0, (64, 48))
    for k in range(300):  # 10 s: five fragments
        sink.send_audio(AudioChunk(np.full(16000 // 30, 0.1, np.float32), 16000 // 30 * k, k / 30, 16000))
        sink.send(Frame(np.full((48, 64, 3), k % 256, np.uint8), k, k / 30, 0.0))
    sink.close()
    page_path = tmp_path / "play.html"
    page_path.write_text('<video id="v" src="rec.mp4" muted></video>')
    # Served without range requests, as a player streaming the file sees it: only what is up front can say how
    # long it is (the index written at the front on close; without it Chromium showed the first fragment's 2.9 s).
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    async def go():
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page()
                await page.goto(f"http://127.0.0.1:{server.server_address[1]}/play.html")
                await page.wait_for_function("document.getElementById('v').readyState >= 1", timeout=20000)
                streamed_duration = await page.evaluate("document.getElementById('v').duration")
                await page.goto(page_path.as_uri())  # a file: seekable
                await page.wait_for_function("document.getElementById('v').readyState >= 1", timeout=20000)
                seeked = await page.evaluate("new Promise(r => { const v = document.getElementById('v'); "
                                             "v.addEventListener('seeked', () => r(v.currentTime), {once: true}); "
                                             "v.currentTime = 7.5; })")
                await page.evaluate("document.getElementById('v').play()")
                await page.wait_for_function("document.getElementById('v').ended", timeout=20000)
                return streamed_duration, seeked, await page.evaluate("document.getElementById('v').error")
            finally:
                await browser.close()
                server.shutdown()

    duration, seeked, error = asyncio.run(go())
    assert duration == pytest.approx(10.0, abs=0.1)
    assert seeked == pytest.approx(7.5, abs=0.05)
    assert error is None
