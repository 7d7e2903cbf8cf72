"""WebRTC: a real headless Chromium watches the avatar, hears its audio and drives the lighting; the server refuses
bad offers, bad control messages, missing tokens and sessions over the cap while the stream goes on."""

from __future__ import annotations

import asyncio
import json
import shutil
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from models.lighting.sources import preset
from stream.avatar_choice import AvatarChoice
from stream.backgrounds import BackgroundSet
from stream.controls import Controls
from stream.file_source import FileSource
from stream.lighting_state import LightingState
from stream.pipeline import Pipeline, PipelineConfig
from stream.webrtc import WebRtcServer
from test_stream_doubles import SphereHeadRenderer

CANVAS = (320, 240)
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--use-fake-ui-for-media-stream", "--autoplay-policy=no-user-gesture-required",
    # WebRTC between the browser and a server on 127.0.0.1: allow loopback candidates, show plain IPs (not mDNS).
    "--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns",
]


def syllables(seconds: float, rate_hz: int = 16000) -> np.ndarray:
    """Tone bursts, 200 ms on / 200 ms off, so there is always audio to hear and a mouth to move."""
    t = np.arange(int(seconds * rate_hz)) / rate_hz
    return (0.4 * np.sin(2 * np.pi * 300 * t) * ((t % 0.4) < 0.2)).astype(np.float32)


@asynccontextmanager
async def serving(token=None, max_sessions=4):
    lighting = LightingState(preset("flat"), glide_ms=250)
    backgrounds = BackgroundSet(["charcoal", "office_blue"], CANVAS)
    pipeline = Pipeline(
        FileSource(syllables(2.0), realtime=True, loop=True),
        SphereHeadRenderer(),
        lighting,
        backgrounds,
        [],
        PipelineConfig(canvas_size_px=CANVAS, realtime=True),
    )
    controls = Controls(lighting, backgrounds, pipeline.clock, hdr_maps=[], compositor=pipeline.compositor,
                        avatars=TwoSpheres(pipeline, "narrow"))
    server = WebRtcServer(pipeline, controls, port=0, token=token, max_sessions=max_sessions)
    await server.start()
    run = asyncio.create_task(pipeline.run())
    try:
        yield server, pipeline
    finally:
        await server.close()
        pipeline.stop()
        await run


class TwoSpheres(AvatarChoice):
    """Two sphere-head avatars, narrow (the one running) and wide, in place of enrolled bundles."""

    def available(self):
        return {"narrow": Path("narrow"), "wide": Path("wide")}

    def __init__(self, pipeline, current):
        super().__init__(pipeline, current, load=lambda path: SphereHeadRenderer(
            frame_size=(128, 128) if path.name == "wide" else (96, 128)))


async def python_offer() -> tuple[RTCPeerConnection, dict]:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("video", direction="recvonly")
    pc.createDataChannel("controls")
    await pc.setLocalDescription(await pc.createOffer())
    return pc, {"type": "offer", "sdp": pc.localDescription.sdp}


async def post_offer(server, body, token=None) -> tuple[int, dict]:
    url = f"http://127.0.0.1:{server.port}/offer" + (f"?token={token}" if token else "")
    async with aiohttp.ClientSession() as http:
        async with http.post(url, data=body if isinstance(body, (str, bytes)) else json.dumps(body)) as r:
            return r.status, await r.json()


# -- server-side refusals (no browser needed) ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, error",
    [
        ("not json", "must be JSON"),
        ('["offer"]', "JSON object"),
        ({"type": "answer", "sdp": "v=0"}, "'type': 'offer'"),
        ({"type": "offer", "sdp": 42}, "SDP text"),
        ({"type": "offer", "sdp": "v=0\r\nthis is not SDP\r\n"}, "no video section"),
        ({"type": "offer", "sdp": "v=0\r\nm=video port UDP/TLS/RTP/SAVPF 96\r\n"}, "cannot use this offer"),
    ],
)
def test_malformed_offers_get_error_replies_and_the_stream_goes_on(body, error):
    async def go():
        async with serving() as (server, pipeline):
            status, reply = await post_offer(server, body)
            assert status == 400 and reply["type"] == "error" and error in reply["error"]
            assert not server.sessions
            before = pipeline.stats.frames_out
            await asyncio.sleep(0.3)
            assert pipeline.stats.frames_out > before

    asyncio.run(go())


def test_token_is_required_and_checked():
    async def go():
        async with serving(token="s3cret") as (server, _):
            pc, offer = await python_offer()
            status, reply = await post_offer(server, offer)
            assert status == 401 and "token" in reply["error"]
            status, _ = await post_offer(server, offer, token="wrong")
            assert status == 401
            status, reply = await post_offer(server, {**offer, "token": "s3cret"})
            assert status == 200 and reply["type"] == "answer"
            async with aiohttp.ClientSession() as http:
                async with http.get(f"http://127.0.0.1:{server.port}/") as r:
                    assert r.status == 401
                async with http.get(f"http://127.0.0.1:{server.port}/?token=s3cret") as r:
                    assert r.status == 200 and "relitcam" in await r.text()
            await pc.close()

    asyncio.run(go())


def test_background_upload_is_offered_and_bad_pictures_are_refused():
    import io

    from PIL import Image

    picture = io.BytesIO()
    Image.fromarray(np.full((30, 40, 3), (200, 120, 60), np.uint8)).save(picture, format="PNG")

    async def go():
        async with serving(token="s3cret") as (server, pipeline):
            base = f"http://127.0.0.1:{server.port}/background"
            async with aiohttp.ClientSession() as http:
                async with http.post(f"{base}?name=beach.png", data=picture.getvalue()) as r:
                    assert r.status == 401  # the token guards uploads too
                async with http.post(f"{base}?name=beach.png&token=s3cret", data=b"not a picture") as r:
                    reply = await r.json()
                    assert r.status == 400 and "not a readable picture" in reply["error"]
                async with http.post(f"{base}?name=beach.gif&token=s3cret", data=picture.getvalue()) as r:
                    assert r.status == 400 and ".png" in (await r.json())["error"]
                assert server.controls.state()["backgrounds"] == ["charcoal", "office_blue"]
                async with http.post(f"{base}?name=beach.png&token=s3cret", data=picture.getvalue()) as r:
                    reply = await r.json()
                    assert r.status == 200 and reply["state"]["background"] == "beach"
                    assert reply["state"]["backgrounds"] == ["charcoal", "office_blue", "beach"]
            # What the pipeline composites over is now the picture, at canvas size.
            assert pipeline.backgrounds.current.srgb.shape == (CANVAS[1], CANVAS[0], 3)
            assert tuple(pipeline.backgrounds.current.srgb[0, 0]) == (200, 120, 60)

    asyncio.run(go())


def test_non_loopback_address_requires_a_token():
    with pytest.raises(ValueError, match="token"):
        WebRtcServer(pipeline=None, controls=None, host="0.0.0.0")


def test_sessions_over_the_cap_are_refused():
    async def go():
        async with serving(max_sessions=1) as (server, _):
            first, offer1 = await python_offer()
            second, offer2 = await python_offer()
            assert (await post_offer(server, offer1))[0] == 200
            status, reply = await post_offer(server, offer2)
            assert status == 503 and "session limit" in reply["error"]
            await first.close()
            await second.close()

    asyncio.run(go())


# -- a real browser -------------------------------------------------------------------------------------------------

PAGE_HELPERS = """
() => {
  const v = document.getElementById('video');
  window.frameCount = 0;
  const tick = () => { window.frameCount++; v.requestVideoFrameCallback(tick); };
  v.requestVideoFrameCallback(tick);
  window.avatarColour = () => {
    const c = document.createElement('canvas');
    c.width = v.videoWidth; c.height = v.videoHeight;
    const g = c.getContext('2d');
    g.drawImage(v, 0, 0);
    // the avatar's forehead/cheeks (it fills the canvas height): upper middle of the canvas, above the mouth
    const d = g.getImageData(c.width / 2 - 40, Math.round(c.height * 0.15), 80, 70).data;
    let r = 0, gr = 0, b = 0;
    for (let i = 0; i < d.length; i += 4) { r += d[i]; gr += d[i + 1]; b += d[i + 2]; }
    const n = d.length / 4;
    return [r / n, gr / n, b / n];
  };
  window.audioStats = async () => {
    let packets = 0, samples = 0;
    (await window.relitcam.pc.getStats()).forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'audio') { packets = s.packetsReceived; samples = s.totalSamplesReceived || 0; }
    });
    return [packets, samples];
  };
}
"""


@pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="needs Debian's chromium at /usr/bin/chromium")
def test_browser_receives_video_and_audio_and_a_preset_click_relights_it():
    from playwright.async_api import async_playwright

    async def go():
        async with serving() as (server, pipeline), async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page()
                await page.goto(server.url)
                await page.wait_for_function("document.getElementById('video').readyState >= 2", timeout=20000)
                await page.evaluate(PAGE_HELPERS)
                # Decoded video frames keep arriving and the clock of the element advances.
                await page.wait_for_function("window.frameCount >= 15", timeout=15000)
                t0 = await page.evaluate("document.getElementById('video').currentTime")
                await page.wait_for_function(f"document.getElementById('video').currentTime > {t0} + 0.3", timeout=10000)
                assert await page.evaluate("[document.getElementById('video').videoWidth, "
                                           "document.getElementById('video').videoHeight]") == list(CANVAS)
                # Audio arrives and is decoded.
                await page.wait_for_function("window.audioStats().then(([p, s]) => p > 20 && s > 0)", timeout=10000)
                assert len(server.sessions) == 1

                # The controls arrive over the data channel: wait for the preset buttons, then click one.
                await page.wait_for_selector("button[data-preset='warm_sunset']", timeout=10000)
                before = await page.evaluate("window.avatarColour()")
                await page.click("button[data-preset='warm_sunset']")
                # Low orange sun, blue ambient: the face darkens and turns redder within a second of the click.
                red_over_blue = before[0] / before[2]
                await page.wait_for_function(
                    f"(() => {{ const [r, g, b] = window.avatarColour(); return r / b > {red_over_blue} + 0.2 && r < {before[0]} - 20; }})()",
                    timeout=1000,
                    polling=50,
                )

                # The shine slider sends its value; the state that comes back moves the slider.
                await page.evaluate("(() => { const s = document.getElementById('shine'); s.value = '0.3'; "
                                    "s.dispatchEvent(new Event('input')); })()")
                await page.wait_for_function("window.relitcam.state.shine === 0.3", timeout=5000)
                assert pipeline.lighting.controls.shine == pytest.approx(0.3)
                # The size slider shrinks the avatar on the canvas.
                await page.evaluate("(() => { const s = document.getElementById('avatarheight'); s.value = '0.6'; "
                                    "s.dispatchEvent(new Event('input')); })()")
                await page.wait_for_function("window.relitcam.state.avatar_height === 0.6", timeout=5000)
                assert pipeline.compositor.placement.height_px == round(0.6 * CANVAS[1])
                # "light me like the background": the base lighting becomes the background's.
                await page.check("#bglight")
                await page.wait_for_function("window.relitcam.state.light_from_background === true", timeout=5000)
                assert pipeline.lighting.base.name.startswith("background:")

                # The avatar list switches avatars; the stream goes on with the new one.
                assert await page.is_visible("#avatar")
                assert not await page.is_visible("#selfview")  # the recording's self view only while recording
                assert await page.is_visible("#record") and not await page.is_visible("#enroll")
                await page.select_option("#avatar", "wide")
                await page.wait_for_function("window.relitcam.state.avatar === 'wide'", timeout=5000)
                count = await page.evaluate("window.frameCount")
                await page.wait_for_function(f"window.frameCount > {count} + 5", timeout=10000)
                assert pipeline.renderer.frame_size == (128, 128) == pipeline.compositor.avatar_size_px

                # A malformed control message gets an error reply; the video keeps going.
                await page.evaluate("window.relitcam.send('{\"type\": \"intensity\", \"value\": \"loud\"}')")
                await page.wait_for_function("window.relitcam.errors.length > 0", timeout=5000)
                assert "finite number" in (await page.evaluate("window.relitcam.errors[0]"))
                count = await page.evaluate("window.frameCount")
                await page.wait_for_function(f"window.frameCount > {count} + 5", timeout=10000)
            finally:
                await browser.close()

    asyncio.run(go())
