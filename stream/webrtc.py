"""WebRTC: a page on 127.0.0.1 shows the avatar with its audio in sync and sends lighting controls back.

Per browser session: a video track fed by the pipeline (newest frame only), an audio track carrying the source audio
through a delay line set to the measured pipeline latency (so the browser, which lines tracks up by their send
times, plays the mouth and the sound together), and a data channel whose JSON messages go to `Controls`. With
`browser_mic`, audio the page sends becomes the pipeline's source. The page can also record the user for enrollment
(POST /recording, stream/recordings.py) and run `relitcam enroll` on it (POST|GET /enroll, POST /enroll/stop,
stream/enroll_jobs.py).

Safety: the server binds 127.0.0.1 unless told otherwise, and any other address requires a token; sessions are
capped; a malformed offer or control message gets an error reply and the stream carries on.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import fractions
import hmac
import ipaddress
import json
import logging
import secrets
from pathlib import Path

import av
import numpy as np
from aiohttp import web
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from stream import recordings
from stream.clock import Clock
from stream.controls import MAX_BACKGROUND_BYTES, MAX_HDR_BYTES, Controls
from stream.delay import AudioDelayLine
from stream.enroll_jobs import EnrollJobs, JobConflict
from stream.live_audio import ClockedCapture
from stream.queues import DropQueue, QueueClosed
from stream.sink import SinkUnavailable
from stream.types import AUDIO_RATE_HZ, AudioChunk, Frame

log = logging.getLogger(__name__)

WEB_DIR = Path(__file__).parent / "web"
MAX_OFFER_BYTES = 64 * 1024
VIDEO_CLOCK_HZ = 90000
AUDIO_PTIME_S = 0.020
DELAY_RETUNE_MS = 15.0


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def restrict_ice_to_loopback() -> None:
    """Make aiortc offer only 127.0.0.1 as its media address.

    aioice gathers every interface address except loopback; a server meant to be reachable only from this machine
    should not open media ports on the others. aioice looks the function up at call time, so replacing it works.
    """
    import aioice.ice

    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"] if use_ipv4 else []


# -------------------------------------------------------------------------------------------------------- tracks


class CanvasVideoTrack(MediaStreamTrack):
    """Pipeline frames to the encoder; holds only the newest, so a slow encoder skips rather than lags."""

    kind = "video"

    def __init__(self) -> None:
        super().__init__()
        self.queue: DropQueue[Frame] = DropQueue(1, "webrtc video")
        self._last_pts = -1

    async def recv(self) -> av.VideoFrame:
        try:
            frame = await self.queue.get()
        except QueueClosed:
            self.stop()
            raise MediaStreamError from None
        out = av.VideoFrame.from_ndarray(frame.rgb, format="rgb24")
        # Media-time pts: the browser spaces frames by these, and they step exactly 1/fps between rendered frames.
        out.pts = max(self._last_pts + 1, int(round(frame.frame_pts_s * VIDEO_CLOCK_HZ)))
        out.time_base = fractions.Fraction(1, VIDEO_CLOCK_HZ)
        self._last_pts = out.pts
        return out


class DelayedAudioTrack(MediaStreamTrack):
    """Source audio, held back by the pipeline latency, paced in 20 ms frames on the pipeline clock."""

    kind = "audio"

    def __init__(self, clock: Clock, delay_ms: float, sample_rate_hz: int = AUDIO_RATE_HZ) -> None:
        super().__init__()
        self.clock = clock
        self.sample_rate_hz = sample_rate_hz
        self.line = AudioDelayLine(sample_rate_hz, delay_ms)
        self._samples_per_frame = int(AUDIO_PTIME_S * sample_rate_hz)
        self._start_s: float | None = None
        self._sent = 0

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start_s is None:
            self._start_s = self.clock.now_s()
        await self.clock.sleep_until(self._start_s + (self._sent + self._samples_per_frame) / self.sample_rate_hz)
        block = self.line.pull(self._samples_per_frame, self.clock.now_s())
        pcm = (np.clip(block, -1, 1) * 32767).astype(np.int16)[None, :]
        out = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        out.sample_rate = self.sample_rate_hz
        out.pts = self._sent
        out.time_base = fractions.Fraction(1, self.sample_rate_hz)
        self._sent += self._samples_per_frame
        return out


class WebRtcSessionSink:
    """One browser's share of the pipeline output: frames to its video track, audio to its delayed audio track."""

    blocking = False

    def __init__(self, session_id: str, video: CanvasVideoTrack, audio: DelayedAudioTrack) -> None:
        self.name = f"webrtc-{session_id}"
        self.video = video
        self.audio = audio

    def send(self, frame: Frame) -> None:
        self.video.queue.put_nowait(frame)

    def send_audio(self, chunk: AudioChunk) -> None:
        self.audio.line.push(chunk)

    def set_delay_ms(self, delay_ms: float) -> None:
        # Every retune slips the audio a little (a skip or a gap); follow only changes a listener could notice.
        if abs(delay_ms - 1000.0 * self.audio.line.delay_s) > DELAY_RETUNE_MS:
            self.audio.line.set_delay_ms(delay_ms)

    def close(self) -> None:
        self.video.queue.close()
        self.audio.stop()


class BrowserMicSource(ClockedCapture):
    """The pipeline source when users talk into the page: audio tracks browsers send, as 16 kHz mono."""

    def __init__(self) -> None:
        super().__init__("browser-mic")
        self._readers: set[asyncio.Task] = set()

    def attach(self, track: MediaStreamTrack, clock: Clock) -> None:
        task = asyncio.create_task(self._read(track, clock))
        self._readers.add(task)
        task.add_done_callback(self._readers.discard)

    async def _read(self, track: MediaStreamTrack, clock: Clock) -> None:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=self.sample_rate_hz)
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            for out in resampler.resample(frame):
                self.push(out.to_ndarray().reshape(-1), clock.now_s())

    def close(self) -> None:
        super().close()
        for task in list(self._readers):
            task.cancel()


# -------------------------------------------------------------------------------------------------------- server


def error_response(message: str, status: int = 400) -> web.Response:
    """The JSON every route answers a refused request with: {"type": "error", "error": message}."""
    return web.json_response({"type": "error", "error": message}, status=status)


class WebRtcServer:
    """aiohttp app: the page, /offer (SDP exchange), /hdr (map upload), /background (picture upload); one
    RTCPeerConnection per session."""

    def __init__(
        self,
        pipeline,
        controls: Controls,
        host: str = "127.0.0.1",
        port: int = 8080,
        token: str | None = None,
        max_sessions: int = 4,
        browser_mic: BrowserMicSource | None = None,
        recordings_dir: Path | None = None,
        enroll_jobs=None,
    ) -> None:
        if not is_loopback(host) and not token:
            raise ValueError(f"serving on {host} (not loopback) needs an access token (--token); "
                             "anyone on the network could otherwise watch and control the stream")
        if max_sessions < 1:
            raise ValueError(f"max_sessions must be >= 1, got {max_sessions}")
        self.pipeline = pipeline
        self.controls = controls
        self.host = host
        self.port = port
        self.token = token
        self.max_sessions = max_sessions
        self.browser_mic = browser_mic
        self.recordings_dir = Path(recordings_dir or recordings.RECORDINGS_DIR).expanduser()
        self.enroll_jobs = enroll_jobs or EnrollJobs(self.recordings_dir)
        self.sessions: dict[str, tuple[RTCPeerConnection, object]] = {}
        self._runner: web.AppRunner | None = None
        self.app = web.Application(client_max_size=max(MAX_HDR_BYTES, MAX_BACKGROUND_BYTES) + 1024)
        self.app.router.add_get("/", self._index)
        self.app.router.add_get("/app.js", self._static("app.js", "text/javascript"))
        self.app.router.add_get("/state", self._state)
        self.app.router.add_post("/offer", self._offer)
        self.app.router.add_post("/hdr", self._hdr)
        self.app.router.add_post("/background", self._background)
        self.app.router.add_post("/recording", self._recording)
        self.app.router.add_get("/enroll", self._enroll_status)
        self.app.router.add_post("/enroll", self._enroll_start)
        self.app.router.add_post("/enroll/stop", self._enroll_stop)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        query = f"?token={self.token}" if self.token else ""
        return f"http://{host}:{self.port}/{query}"

    async def start(self) -> None:
        if is_loopback(self.host):
            restrict_ice_to_loopback()
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        try:
            await site.start()
        except OSError as e:
            await self._runner.cleanup()
            self._runner = None
            why = ("the port is in use (another relitcam, or another program; --port picks another)"
                   if e.errno == errno.EADDRINUSE else (e.strerror or str(e)))
            raise SinkUnavailable(f"cannot serve the page on {self.host}:{self.port}: {why}") from None
        if self.port == 0:  # an ephemeral port was asked for: report the real one
            self.port = site._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        await self.enroll_jobs.close()
        for session_id in list(self.sessions):
            await self._end_session(session_id)
        if self._runner is not None:
            await self._runner.cleanup()

    # -- auth -------------------------------------------------------------------------------------------------
    def _authorised(self, request: web.Request, body_token: str | None = None) -> bool:
        if not self.token:
            return True
        given = body_token or request.query.get("token") or request.headers.get("Authorization", "").removeprefix(
            "Bearer ")
        return hmac.compare_digest(str(given), self.token)

    def _deny(self) -> web.Response:
        return error_response("missing or wrong access token", 401)

    # -- routes -----------------------------------------------------------------------------------------------
    async def _index(self, request: web.Request) -> web.StreamResponse:
        if not self._authorised(request):
            return self._deny()
        return web.FileResponse(WEB_DIR / "index.html", headers={"Cache-Control": "no-store"})

    def _static(self, name: str, content_type: str):
        async def handler(request: web.Request) -> web.Response:
            return web.Response(body=(WEB_DIR / name).read_bytes(), content_type=content_type)

        return handler

    async def _state(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._deny()
        return web.json_response({"type": "state", "state": self.controls.state(), "sessions": len(self.sessions)})

    async def _upload(self, request: web.Request, load) -> web.Response:
        if not self._authorised(request):
            return self._deny()
        reply = await load(await request.read(), request.query.get("name", ""))
        return web.json_response(reply, status=200 if reply["type"] == "state" else 400)

    async def _hdr(self, request: web.Request) -> web.Response:
        return await self._upload(request, self.controls.load_hdr_bytes)

    async def _background(self, request: web.Request) -> web.Response:
        return await self._upload(request, self.controls.load_background_bytes)

    async def _recording(self, request: web.Request) -> web.Response:
        """A video recorded on the page, streamed to disk, checked as enrollment would (stream/recordings.py)."""
        if not self._authorised(request):
            return self._deny()
        name = request.query.get("name", "me")
        try:
            path = recordings.recording_path(self.recordings_dir, name, request.content_type)
        except ValueError as e:
            return error_response(str(e))
        upload = recordings.PartialFile(path)
        try:
            async for chunk in request.content.iter_chunked(1 << 20):
                upload.write(chunk)
            upload.close()
            recording = await asyncio.to_thread(recordings.check_recording, upload.partial, name)
        except ValueError as e:
            upload.discard()
            return error_response(str(e))
        except BaseException:  # the page went away mid-upload: nothing half-written is left behind
            upload.discard()
            raise
        return web.json_response(dataclasses.replace(recording, path=upload.keep()).reply())

    async def _enroll_status(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._deny()
        return web.json_response(self.enroll_jobs.status.reply())

    async def _enroll_start(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._deny()
        try:
            body = json.loads(await request.read() or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        if not isinstance(body, dict):
            return error_response("the body must be a JSON object")
        file, name = body.get("file"), body.get("name")
        if not isinstance(file, str) or not isinstance(name, str):
            return error_response("enroll needs 'file' and 'name' (strings)")
        try:
            status = await self.enroll_jobs.start(file, name)
        except JobConflict as e:
            return error_response(str(e), 409)
        except ValueError as e:
            return error_response(str(e))
        return web.json_response(status.reply())

    async def _enroll_stop(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._deny()
        try:
            status = await self.enroll_jobs.stop()
        except JobConflict as e:
            return error_response(str(e), 409)
        return web.json_response(status.reply())

    async def _offer(self, request: web.Request) -> web.Response:
        raw = await request.read()
        if len(raw) > MAX_OFFER_BYTES:
            return error_response(f"offer too large ({len(raw)} bytes, limit {MAX_OFFER_BYTES})", 413)
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return error_response("offer must be JSON: {\"sdp\": ..., \"type\": \"offer\"}")
        if not isinstance(body, dict):
            return error_response("offer must be a JSON object with 'sdp' and 'type'")
        if not self._authorised(request, body.get("token") if isinstance(body.get("token"), str) else None):
            return self._deny()
        if body.get("type") != "offer" or not isinstance(body.get("sdp"), str) or "v=0" not in body["sdp"]:
            return error_response("offer needs 'type': 'offer' and 'sdp': an SDP text starting with v=0")
        if len(self.sessions) >= self.max_sessions:
            return error_response(f"session limit reached ({self.max_sessions}); close another viewer first", 503)
        session_id = secrets.token_hex(4)
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # no STUN: loopback/LAN needs none, and no internet
        try:
            answer = await self._negotiate(session_id, pc, body["sdp"])
        except Exception as e:  # aiortc raises ValueError/AssertionError/etc. on malformed SDP
            await pc.close()
            self.sessions.pop(session_id, None)
            return error_response(f"cannot use this offer: {type(e).__name__}: {e}".rstrip(": "))
        return web.json_response({"type": answer.type, "sdp": answer.sdp, "session": session_id})

    async def _negotiate(self, session_id: str, pc: RTCPeerConnection, sdp: str) -> RTCSessionDescription:
        clock = self.pipeline.clock
        video = CanvasVideoTrack()
        audio = DelayedAudioTrack(clock, self.pipeline.latency.ms)
        sink = WebRtcSessionSink(session_id, video, audio)
        self.sessions[session_id] = (pc, None)

        @pc.on("datachannel")
        def on_datachannel(channel) -> None:
            @channel.on("message")
            async def on_message(message) -> None:
                if isinstance(message, bytes):
                    reply = {"type": "error", "error": "control messages must be text (JSON), not binary"}
                else:
                    reply = await self.controls.handle(message)
                if channel.readyState == "open":
                    channel.send(json.dumps(reply))

        @pc.on("track")
        def on_track(track) -> None:
            if track.kind == "audio" and self.browser_mic is not None:
                self.browser_mic.attach(track, clock)

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                await self._end_session(session_id)

        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        if not any(t.kind == "video" for t in pc.getTransceivers()):
            raise ValueError("the offer has no video section (m=video); the avatar is sent as video")
        for transceiver in pc.getTransceivers():
            if transceiver.kind == "video":
                pc.addTrack(video)
            elif transceiver.kind == "audio":
                pc.addTrack(audio)
        answer = await pc.createAnswer()
        await pc.setLocalDescription(answer)
        runner = self.pipeline.add_sink(sink)
        self.sessions[session_id] = (pc, (runner, sink))
        return pc.localDescription

    async def _end_session(self, session_id: str) -> None:
        entry = self.sessions.pop(session_id, None)
        if entry is None:
            return
        pc, attached = entry
        if attached is not None:
            runner, _ = attached
            await self.pipeline.remove_sink(runner)
        await pc.close()
