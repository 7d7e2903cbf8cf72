#!/usr/bin/env python3
"""Soak test: does the pipeline's memory stay flat over a long run?

    .venv/bin/python scripts/soak.py                          # default avatar, 10 min of media, offline
    .venv/bin/python scripts/soak.py --minutes 1 --out out/soak_short
    .venv/bin/python scripts/soak.py --sink webrtc --out out/soak_webrtc    # real time, to a WebRTC viewer
    .venv/bin/python scripts/soak.py --sink webrtc --viewer chromium --out out/soak_browser   # ... the web page
    .venv/bin/python scripts/soak.py --sink virtualcam --out out/soak_vcam   # real time, into the virtual camera

Runs the live pipeline (stream/pipeline.py) on a file source looped to --minutes of media, offline (every frame, as
fast as the machine allows), into sinks that do real work: the MP4 sink writing H.264 + AAC to a temporary file, and a
memory probe. With --sink webrtc it runs in real time instead, serving the web page's WebRTC endpoint to one viewer
(aiortc in a separate process, so its decoders do not count; with --viewer chromium, the web page itself in
Debian's Chromium, driven by playwright from a separate process) and dropping frames that come late, as a call does.
With --sink virtualcam it runs in real time into the virtual camera sink (stream/virtualcam.py, through pyvirtualcam's
Camera): the real device where one is present, else (or with --camera-backend standin) a stand-in backend that does
the device's user-space work, RGB to I420 into buffers made once, without a device; a camera that stops taking
frames fails the soak. The
probe reads the process's resident set size (RSS) on every frame and keeps a sample every
--sample-s seconds (plus Python's tracemalloc total with --tracemalloc, which slows Python allocations down).

Start = the RSS when the first frame past --warmup-s of media leaves the pipeline (buffers, encoder and caches have
been allocated by then); end = the RSS at the last frame. Writes SOAK.json and SOAK.png (RSS over media time) to
--out; exits 1 when end exceeds start by more than --tolerance (default 5 %).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import sysconfig
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.lighting.sources import preset  # noqa: E402
from stream.backgrounds import BackgroundSet  # noqa: E402
from stream.clock import MonotonicClock  # noqa: E402
from stream.file_source import FileSource  # noqa: E402
from stream.lighting_state import LightingState  # noqa: E402
from stream.mp4_sink import Mp4Sink  # noqa: E402
from stream.pipeline import Pipeline, PipelineConfig  # noqa: E402
from stream.sink import SinkUnavailable  # noqa: E402
from stream.types import AudioChunk, Frame  # noqa: E402
from stream.virtualcam import VirtualCameraSink  # noqa: E402

SPEECH_SAMPLE = ROOT / "models" / "assets" / "speech_sample.wav"
MB = 1024 * 1024
TRACE_FRAMES = 16  # deep enough to reach our code from inside numpy, torch or PyAV
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    """This process's resident set size now (Linux /proc; the soak needs the current value, not the peak)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE_BYTES
    except OSError:
        raise SystemExit("soak.py reads the current RSS from /proc/self/statm: Linux only") from None


class MediaLimit:
    """A source cut off after `duration_s` of media (a looping FileSource becomes a long file)."""

    def __init__(self, source: FileSource, duration_s: float) -> None:
        self.source = source
        self.name = source.name
        self.limit_samples = int(round(duration_s * source.sample_rate_hz))

    async def chunks(self, clock):
        async for chunk in self.source.chunks(clock):
            if chunk.start_sample >= self.limit_samples:
                break
            if chunk.end_sample > self.limit_samples:
                chunk = AudioChunk(chunk.samples[: self.limit_samples - chunk.start_sample], chunk.start_sample,
                                   chunk.arrival_s, chunk.sample_rate_hz)
            yield chunk
        self.source.close()

    def close(self) -> None:
        self.source.close()


class StandInCameraBackend:
    """A pyvirtualcam backend for machines without v4l2loopback: what the v4l2loopback backend does in user space
    for each frame (RGB to I420, BT.601 limited range, into buffers allocated once), minus the write to a device.

    Fixed-point arithmetic with libyuv's 8-bit coefficients, as the real backend's C code uses: float NumPy took
    16 ms a 720p frame, half a core at 30 fps, which is not what a camera costs. Counts the frames it takes, so
    that a camera that stops taking them shows in the report."""

    NAME = "relitcam-soak-standin"
    taken = 0

    def __init__(self, *, width, height, fps, fourcc, device, **kw):
        self.width, self.height = width, height
        self._wide = np.empty((height, width, 3), np.uint16)
        self._acc = np.empty((height, width), np.uint16)
        self._term = np.empty((height, width), np.uint16)
        self._chroma = np.empty((3, height // 2, width // 2), np.int32)
        self._chroma_acc = np.empty((height // 2, width // 2), np.int32)
        self._chroma_term = np.empty((height // 2, width // 2), np.int32)
        self._i420 = np.empty(width * height * 3 // 2, np.uint8)
        StandInCameraBackend.taken = 0

    def _weighted(self, planes, weights, acc, term) -> None:
        """acc = ((sum of weight * plane + 128) >> 8): one 8-bit fixed-point row of the colour matrix."""
        np.multiply(planes[0], weights[0], out=acc)
        for plane, weight in zip(planes[1:], weights[1:]):
            np.multiply(plane, weight, out=term)
            acc += term
        acc += 128
        acc >>= 8

    def send(self, frame: np.ndarray) -> None:
        w, h = self.width, self.height
        np.copyto(self._wide, frame.reshape(h, w, 3))  # pyvirtualcam hands the frame on flattened
        self._weighted([self._wide[..., c] for c in range(3)], (66, 129, 25), self._acc, self._term)
        self._acc += 16
        self._i420[: w * h].reshape(h, w)[:] = self._acc
        # Chroma from the top-left sample of each 2x2 block (libyuv's fast path), signed.
        np.copyto(self._chroma, np.moveaxis(self._wide[::2, ::2], -1, 0))
        quarter = (w // 2) * (h // 2)
        for k, weights in enumerate(((-38, -74, 112), (112, -94, -18))):
            self._weighted(self._chroma, weights, self._chroma_acc, self._chroma_term)
            self._chroma_acc += 128
            self._i420[w * h + k * quarter: w * h + (k + 1) * quarter].reshape(h // 2, w // 2)[:] = self._chroma_acc
        StandInCameraBackend.taken += 1

    def close(self) -> None:
        pass

    def device(self) -> str:
        return "stand-in (no device)"

    def native_fourcc(self):
        return None


def open_camera(args) -> VirtualCameraSink:
    """The virtual camera for --sink virtualcam: --camera-backend's, else the real one, else the stand-in."""
    import pyvirtualcam

    if args.camera_backend != "standin":
        try:
            return VirtualCameraSink(args.canvas, args.fps, backend=args.camera_backend)
        except SinkUnavailable as e:
            if args.camera_backend is not None:
                raise
            print(f"{e}\nsoaking into the stand-in camera backend instead", file=sys.stderr)
    # Registered only while the camera opens: left in pyvirtualcam's registry, it would be the "device" any later
    # camera in this process found.
    pyvirtualcam.register_backend(StandInCameraBackend.NAME, StandInCameraBackend)
    try:
        return VirtualCameraSink(args.canvas, args.fps, backend=StandInCameraBackend.NAME)
    finally:
        pyvirtualcam.camera.BACKENDS.pop(StandInCameraBackend.NAME, None)


class MemoryProbe:
    """A sink that reads RSS on every frame: keeps the peak, the last reading, the reading at the end of warm-up,
    and one sample (wall s, media s, RSS bytes, tracemalloc bytes or None) every `sample_s` of wall time."""

    name = "memory"
    blocking = False

    def __init__(self, clock, warmup_s: float, sample_s: float) -> None:
        self.clock = clock
        self.warmup_s = warmup_s
        self.sample_s = sample_s
        self.t0_s = clock.now_s()
        self.frames = 0
        self.peak_bytes = 0
        self.samples: list[tuple[float, float, int, int | None]] = []
        self.start: tuple[float, float, int, int | None] | None = None
        self.last: tuple[float, float, int, int | None] | None = None
        self.start_snapshot: tracemalloc.Snapshot | None = None

    def _reading(self, frame: Frame) -> tuple[float, float, int, int | None]:
        traced = tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else None
        return self.clock.now_s() - self.t0_s, frame.frame_pts_s, rss_bytes(), traced

    def send(self, frame: Frame) -> None:
        reading = self._reading(frame)
        self.frames += 1
        self.peak_bytes = max(self.peak_bytes, reading[2])
        self.last = reading
        if self.start is None and frame.frame_pts_s >= self.warmup_s:
            self.start = reading
            self.samples.append(reading)
            if tracemalloc.is_tracing():
                self.start_snapshot = tracemalloc.take_snapshot()
        elif not self.samples or reading[0] - self.samples[-1][0] >= self.sample_s:
            self.samples.append(reading)

    def close(self) -> None:
        if self.last is not None and (not self.samples or self.samples[-1] is not self.last):
            self.samples.append(self.last)


# The viewer of --sink webrtc, in its own process so that its decoders do not count in the soak's RSS: offers to
# receive video and audio, reads both tracks until the server ends the session, prints what it got as JSON.
WEBRTC_VIEWER = """
import asyncio, json, sys
import aiohttp
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

async def main(url):
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("audio", direction="recvonly")
    counts = {"video_frames": 0, "audio_frames": 0}
    readers = []
    @pc.on("track")
    def on_track(track):
        async def read():
            try:
                while True:
                    await track.recv()
                    counts[track.kind + "_frames"] += 1
            except MediaStreamError:
                pass
        readers.append(asyncio.ensure_future(read()))
    await pc.setLocalDescription(await pc.createOffer())
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json={"type": "offer", "sdp": pc.localDescription.sdp}) as r:
            answer = await r.json()
    if "sdp" not in answer:
        sys.exit("offer refused: " + json.dumps(answer))
    await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))
    while not readers:
        await asyncio.sleep(0.05)
    await asyncio.gather(*readers)
    await pc.close()
    print(json.dumps(counts))

asyncio.run(main(sys.argv[1]))
"""


# The --viewer chromium viewer, in its own process: opens the web page (which connects by itself), counts the frames
# the <video> element presents, prints "ready", and on a line on stdin prints the page's receive statistics as JSON.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_VIEWER = '''
import asyncio, json, sys
from playwright.async_api import async_playwright

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--autoplay-policy=no-user-gesture-required",
        "--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns"]
COUNT = """() => {
  const v = document.getElementById('video');
  window.presented = 0;
  const tick = () => { window.presented++; v.requestVideoFrameCallback(tick); };
  v.requestVideoFrameCallback(tick);
}"""
REPORT = """async () => {
  const out = {presented_frames: window.presented, connection: window.relitcam.pc.connectionState};
  (await window.relitcam.pc.getStats()).forEach((s) => {
    if (s.type !== 'inbound-rtp') return;
    if (s.kind === 'video') Object.assign(out, {video_frames: s.framesDecoded, video_frames_dropped: s.framesDropped,
                                                video_packets_lost: s.packetsLost});
    if (s.kind === 'audio') Object.assign(out, {audio_frames: s.packetsReceived, audio_packets_lost: s.packetsLost,
                                                audio_samples: s.totalSamplesReceived});
  });
  return out;
}"""

async def main(url, exe):
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=exe, args=ARGS)
        page = await browser.new_page()
        await page.goto(url)
        await page.wait_for_function("document.getElementById('video').readyState >= 2", timeout=60000)
        await page.evaluate(COUNT)
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        report = await page.evaluate(REPORT)
        await browser.close()
    print(json.dumps(report), flush=True)

asyncio.run(main(sys.argv[1], sys.argv[2]))
'''


async def _chromium_viewer(url: str, run: asyncio.Task):
    """Starts the Chromium viewer on `url`, waits for `run` (the pipeline) to finish, returns (its stats, the page's
    receive report); the session must still be open when the page is asked, so the caller closes the server after."""
    viewer = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHROMIUM_VIEWER, url, CHROMIUM, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        stats = await run
        viewer.stdin.write(b"report\n")
        await viewer.stdin.drain()
        out, err = await asyncio.wait_for(viewer.communicate(), timeout=60)
    finally:
        if viewer.returncode is None:
            viewer.kill()
    lines = out.decode().strip().splitlines()
    if viewer.returncode != 0 or not lines or not lines[-1].startswith("{"):
        raise SystemExit(f"the Chromium viewer failed: {err.decode().strip()[-2000:]}")
    return stats, json.loads(lines[-1])


async def soak(renderer, args, mp4_path: Path) -> tuple[MemoryProbe, dict, Mp4Sink | None, float, dict | None]:
    """Offline into the MP4 sink (--sink mp4), or in real time to one WebRTC viewer (--sink webrtc) or into the
    virtual camera (--sink virtualcam)."""
    clock = MonotonicClock()
    realtime = args.sink in ("webrtc", "virtualcam")
    source = MediaLimit(FileSource.from_path(args.audio, realtime=realtime, loop=True), 60.0 * args.minutes)
    probe = MemoryProbe(clock, args.warmup_s, args.sample_s)
    lighting = LightingState(preset(args.light), now_s=clock.now_s())
    backgrounds = BackgroundSet(None, args.canvas)
    mp4 = Mp4Sink(mp4_path, args.fps, args.canvas) if args.sink == "mp4" else None
    camera = open_camera(args) if args.sink == "virtualcam" else None
    pipeline = Pipeline(
        source,
        renderer,
        lighting,
        backgrounds,
        [sink for sink in (mp4, camera) if sink is not None] + [probe],
        PipelineConfig(fps=args.fps, canvas_size_px=args.canvas, realtime=realtime,
                       avatar_height_frac=args.avatar_height, heap_trim_s=args.heap_trim_s),
        clock,
    )
    t0 = time.monotonic()
    if mp4 is not None:
        stats = await pipeline.run()
        return probe, stats.report(), mp4, time.monotonic() - t0, None
    if camera is not None:
        try:
            stats = await pipeline.run()
        finally:
            camera.close()
        taken = StandInCameraBackend.taken if camera.backend == StandInCameraBackend.NAME else camera.frames_sent
        return probe, stats.report(), None, time.monotonic() - t0, {
            "backend": camera.backend, "device": camera.device, "frames_sent": camera.frames_sent,
            "frames_taken": taken}

    from stream.controls import Controls
    from stream.webrtc import WebRtcServer

    server = WebRtcServer(pipeline, Controls(lighting, backgrounds, clock, hdr_maps=[]), port=0)
    await server.start()
    run = asyncio.create_task(pipeline.run())
    if args.viewer == "chromium":
        try:
            stats, received = await _chromium_viewer(server.url, run)
        finally:
            await server.close()
        return probe, stats.report(), None, time.monotonic() - t0, received
    viewer = await asyncio.create_subprocess_exec(
        sys.executable, "-c", WEBRTC_VIEWER, f"http://127.0.0.1:{server.port}/offer",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        stats = await run
    finally:
        await server.close()  # ends the session: the viewer's tracks end and it reports
    out, err = await asyncio.wait_for(viewer.communicate(), timeout=60)
    if viewer.returncode != 0:
        raise SystemExit(f"the WebRTC viewer failed: {err.decode().strip()[-2000:]}")
    return probe, stats.report(), None, time.monotonic() - t0, json.loads(out.decode().strip().splitlines()[-1])


_LIBRARY_DIRS = tuple(sysconfig.get_paths()[k] for k in ("stdlib", "purelib", "platlib"))


def _own_frame(traceback: tracemalloc.Traceback) -> tracemalloc.Frame:
    """The innermost frame outside the interpreter's and the installed packages' files: the line in our code that
    asked for the memory (np.ones allocates inside numpy; the leak is whoever keeps the result)."""
    for frame in reversed(traceback):  # most recent call first
        if not frame.filename.startswith(_LIBRARY_DIRS):
            return frame
    return traceback[-1]


def traced_growth(start: tracemalloc.Snapshot, end: tracemalloc.Snapshot, top: int = 15) -> list[dict]:
    """The call sites whose live Python allocations grew most between two snapshots: where a leak in Python (or in
    numpy arrays, which tracemalloc also sees) would show; growth in RSS that is not here is native."""
    grown: dict[tuple[str, str], list[int]] = {}
    for st in end.compare_to(start, "traceback"):
        own, inner = _own_frame(st.traceback), st.traceback[-1]
        acc = grown.setdefault((f"{own.filename}:{own.lineno}", f"{inner.filename}:{inner.lineno}"), [0, 0, 0])
        acc[0] += st.size_diff
        acc[1] += st.count_diff
        acc[2] += st.size
    ranked = sorted(((k, v) for k, v in grown.items() if v[0] > 0), key=lambda kv: kv[1][0], reverse=True)[:top]
    return [{"where": where, "allocated_in": inner, "grew_kb": v[0] / 1024.0, "count_diff": v[1],
             "now_kb": v[2] / 1024.0} for (where, inner), v in ranked]


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = report["samples"]
    minutes = [m / 60.0 for m in s["media_s"]]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    ax.plot(minutes, s["rss_mb"], marker=".", lw=1, label="RSS")
    if any(v is not None for v in s["traced_mb"]):
        ax.plot(minutes, s["traced_mb"], marker=".", lw=1, label="tracemalloc (Python + numpy)")
    start = report["start_rss_mb"]
    ax.axhline(start, color="k", lw=0.8, ls=":", label=f"start (after {report['warmup_s']:.0f} s warm-up)")
    ax.axhline(start * (1 + report["tolerance"]), color="r", lw=0.8, ls="--",
               label=f"start + {100 * report['tolerance']:.0f} %")
    ax.axvline(report["warmup_s"] / 60.0, color="grey", lw=0.8)
    ax.set_xlabel("media time (min)")
    ax.set_ylabel("MB")
    ax.set_title(f"soak: {report['frames']} frames in {report['wall_s']:.0f} s · end/start "
                 f"{report['end_over_start']:.3f} · {'PASS' if report['passed'] else 'FAIL'}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def camera_kept_up(camera: dict | None, frames_out: int) -> bool:
    """The virtual camera took every frame the pipeline sent it, and was sent nearly every frame that came out
    (a camera whose writes block would make the sink drop them)."""
    if camera is None:
        return True
    return camera["frames_taken"] == camera["frames_sent"] and camera["frames_sent"] >= 0.99 * frames_out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--avatar", help="avatar bundle folder or renderer as module.path:factory "
                                    "(default: the shipped avatar models/avatars/default)")
    p.add_argument("--backend", default="onnxruntime", help="where a bundle's nets run")
    p.add_argument("--audio", type=Path, default=SPEECH_SAMPLE, help="audio file, looped to --minutes")
    p.add_argument("--minutes", type=float, default=10.0, help="media time to run (default 10)")
    p.add_argument("--warmup-s", type=float, default=30.0, help="media seconds before the start reading")
    p.add_argument("--sample-s", type=float, default=2.0, help="wall seconds between kept samples")
    p.add_argument("--tolerance", type=float, default=0.05, help="allowed growth end/start - 1 (default 0.05)")
    p.add_argument("--tracemalloc", action="store_true", help="also trace Python allocations (slower)")
    p.add_argument("--heap-trim-s", type=float, default=PipelineConfig.heap_trim_s,
                   help="the pipeline's malloc_trim interval (stream/heap.py; 0: never)")
    p.add_argument("--fps", type=float, choices=(25.0, 30.0), default=30.0)
    p.add_argument("--canvas", type=lambda s: tuple(int(v) for v in s.split("x")), default=(1280, 720))
    p.add_argument("--avatar-height", type=float, default=1.0, help="as relitcam run: fraction of the canvas height")
    p.add_argument("--light", default="studio_key")
    p.add_argument("--sink", choices=("mp4", "webrtc", "virtualcam"), default="mp4",
                   help="mp4: offline, every frame, into the MP4 sink; webrtc: in real time to one WebRTC viewer (a "
                        "separate aiortc process) through the web server, frames dropped when late; virtualcam: in "
                        "real time into the virtual camera")
    p.add_argument("--camera-backend", help="with --sink virtualcam: a pyvirtualcam backend by name, or 'standin' "
                                            "(default: the real camera where there is one, else the stand-in)")
    p.add_argument("--viewer", choices=("aiortc", "chromium"), default="aiortc",
                   help="with --sink webrtc: an aiortc client, or the web page in Debian's Chromium (playwright)")
    p.add_argument("--keep-mp4", action="store_true", help="keep the MP4 in --out instead of a temporary folder")
    p.add_argument("--out", type=Path, default=Path("out/soak"))
    return p


def main(argv=None) -> int:
    from stream.commands.run import load_avatar

    args = build_parser().parse_args(argv)
    if args.viewer == "chromium":
        if args.sink != "webrtc":
            raise SystemExit("--viewer chromium needs --sink webrtc")
        if not Path(CHROMIUM).is_file():
            raise SystemExit(f"--viewer chromium needs Debian's chromium at {CHROMIUM} (apt install chromium)")
    if args.camera_backend is not None and args.sink != "virtualcam":
        raise SystemExit("--camera-backend needs --sink virtualcam")
    if args.warmup_s >= 60.0 * args.minutes:
        raise SystemExit(f"--warmup-s {args.warmup_s} must be shorter than the run ({60.0 * args.minutes} s)")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.tracemalloc:
        tracemalloc.start(TRACE_FRAMES)
    load0 = os.getloadavg()
    renderer = load_avatar(args.avatar, args.backend)
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        mp4_path = (args.out if args.keep_mp4 else Path(tmp)) / "soak.mp4"
        probe, stats, mp4, wall_s, receiver = asyncio.run(soak(renderer, args, mp4_path))
        end_snapshot = tracemalloc.take_snapshot() if tracemalloc.is_tracing() else None
        mp4_mb = mp4_path.stat().st_size / MB if mp4 is not None else None
    if probe.start is None or probe.last is None:
        raise SystemExit("no frame came out after the warm-up: nothing to compare")
    start, end = probe.start[2], probe.last[2]
    media_s = probe.last[1] + 1.0 / args.fps
    report = {
        "avatar": args.avatar or "models/avatars/default",
        "audio": str(args.audio),
        "minutes": args.minutes,
        "media_s": media_s,
        "frames": probe.frames,
        "frames_expected": int(round(60.0 * args.minutes * args.fps)),
        "sink": args.sink,
        "mp4_frames_written": mp4.frames_written if mp4 is not None else None,
        "mp4_mb": mp4_mb,
        "webrtc_viewer": args.viewer if args.sink == "webrtc" else None,
        "webrtc_viewer_received": receiver if args.sink == "webrtc" else None,
        "virtualcam": receiver if args.sink == "virtualcam" else None,
        "wall_s": wall_s,
        "speed_x_realtime": media_s / wall_s,
        "fps": probe.frames / wall_s,
        "canvas_px": list(args.canvas),
        "warmup_s": args.warmup_s,
        "start_rss_mb": start / MB,
        "start_at_media_s": probe.start[1],
        "end_rss_mb": end / MB,
        "peak_rss_mb": probe.peak_bytes / MB,
        "end_over_start": end / start,
        "tolerance": args.tolerance,
        "passed": end <= start * (1.0 + args.tolerance) and camera_kept_up(receiver if args.sink == "virtualcam"
                                                                            else None, probe.frames),
        "tracemalloc": args.tracemalloc,
        "heap_trim_s": args.heap_trim_s,
        "start_traced_mb": None if probe.start[3] is None else probe.start[3] / MB,
        "end_traced_mb": None if probe.last[3] is None else probe.last[3] / MB,
        "traced_growth_top": (traced_growth(probe.start_snapshot, end_snapshot)
                              if probe.start_snapshot is not None and end_snapshot is not None else None),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "machine": platform.machine(),
                    "python": platform.python_version(), "load_average_1m_before": load0[0],
                    "load_average_1m_after": os.getloadavg()[0]},
        "pipeline": stats,
        "samples": {
            "wall_s": [s[0] for s in probe.samples],
            "media_s": [s[1] for s in probe.samples],
            "rss_mb": [s[2] / MB for s in probe.samples],
            "traced_mb": [None if s[3] is None else s[3] / MB for s in probe.samples],
        },
    }
    (args.out / "SOAK.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(report, args.out / "SOAK.png")
    print(json.dumps({k: report[k] for k in ("frames", "wall_s", "speed_x_realtime", "start_rss_mb", "end_rss_mb",
                                             "peak_rss_mb", "end_over_start", "passed")}, indent=2))
    print(f"wrote {args.out / 'SOAK.json'} and {args.out / 'SOAK.png'}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
