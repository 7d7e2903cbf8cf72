"""HDR video in: HLG and PQ (BT.2020, 10-bit HEVC, as phones record) decode to the SDR sRGB picture of the same
scene. The files are made here from a known sRGB picture with the standards' forward curves and the BT.2087
BT.709 -> BT.2020 matrix (the reader uses the published reverse matrix and the inverse curves)."""

from pathlib import Path

import av
import numpy as np
import pytest

from models import media
from models.colour import srgb_to_linear
from models.hdr_video import TRC_HLG, TRC_PQ, hdr_to_srgb8, hlg_to_scene_linear, pq_to_nits

BT709_TO_BT2020 = np.array([[0.6274, 0.3293, 0.0433], [0.0691, 0.9195, 0.0114], [0.0164, 0.0880, 0.8956]])
LUMA_2020 = np.array([0.2627, 0.6780, 0.0593])
A, B, C = 0.17883277, 0.28466892, 0.55991073  # BT.2100 HLG constants as published
M1, M2, C1, C2, C3 = 0.1593017578125, 78.84375, 0.8359375, 18.8515625, 18.6875  # ST 2084 as published


def _picture(h: int = 48, w: int = 64) -> np.ndarray:
    """Skin-like gradients, a saturated red and blue, a dark corner and pure white: sRGB uint8."""
    y, x = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
    rgb = np.stack([0.35 + 0.6 * x, 0.2 + 0.45 * x * (1 - 0.3 * y), 0.15 + 0.35 * y], -1)
    rgb[:8, :8] = (0.9, 0.1, 0.1)
    rgb[:8, -8:] = (0.1, 0.2, 0.9)
    rgb[-8:, :8] = 0.02
    rgb[-8:, -8:] = 1.0
    return np.round(rgb * 255).astype(np.uint8)


def _hlg_signal(relative_2020: np.ndarray) -> np.ndarray:
    """Display light (1 = 203 cd/m2) -> HLG signal: inverse OOTF (1000 cd/m2, gamma 1.2) then the OETF."""
    fd = relative_2020 * 203.0 / 1000.0
    ys = np.maximum(fd @ LUMA_2020, 1e-12) ** (1 / 1.2)
    e = fd / ys[..., None] ** 0.2
    return np.where(e <= 1 / 12, np.sqrt(3 * e), A * np.log(np.maximum(12 * e - B, 1e-12)) + C)


def _pq_signal(relative_2020: np.ndarray) -> np.ndarray:
    y = (relative_2020 * 203.0 / 10000.0) ** M1
    return ((C1 + C2 * y) / (1 + C3 * y)) ** M2


def _write_hdr(path, rgb_signal: np.ndarray, transfer: str, frames: int = 3) -> None:
    """RGB signal in [0, 1] -> BT.2020 non-constant-luminance YUV 4:4:4, 10-bit limited range, lossless HEVC."""
    yp = rgb_signal @ LUMA_2020
    cb, cr = (rgb_signal[..., 2] - yp) / 1.8814, (rgb_signal[..., 0] - yp) / 1.4746
    planes = [np.round(64 + 876 * yp), np.round(512 + 896 * cb), np.round(512 + 896 * cr)]
    h, w = yp.shape
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx265", rate=25)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv444p10le"
        stream.options = {"x265-params": f"lossless=1:colorprim=bt2020:transfer={transfer}:colormatrix=bt2020nc:"
                          "log-level=error"}
        for _ in range(frames):
            frame = av.VideoFrame(w, h, "yuv444p10le")
            for plane, values in zip(frame.planes, planes):
                row = np.zeros((h, plane.line_size // 2), np.uint16)
                row[:, :w] = values
                plane.update(row.tobytes())
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


@pytest.mark.parametrize("transfer, signal, code", [("arib-std-b67", _hlg_signal, TRC_HLG),
                                                   ("smpte2084", _pq_signal, TRC_PQ)])
def test_hdr_video_decodes_to_the_sdr_picture_of_the_scene(tmp_path, transfer, signal, code):
    srgb = _picture()
    relative_2020 = srgb_to_linear(srgb / 255.0).astype(np.float64) @ BT709_TO_BT2020.T
    path = tmp_path / "hdr.mp4"
    _write_hdr(path, signal(relative_2020), transfer)
    frames = list(media.iter_video_frames(path))
    assert len(frames) == 3
    got = frames[0].image
    assert got.dtype == np.uint8 and got.shape == srgb.shape
    diff = np.abs(got.astype(int) - srgb.astype(int))
    # FFmpeg's 10-bit YUV -> 16-bit RGB is off by up to 0.004 of full scale (measured on these lossless files),
    # a few 8-bit codes where PQ is steep.
    assert diff.max() <= 5 and diff.mean() < 1.2
    # What the reader did before: the same file taken as SDR is far off (flat, desaturated).
    with av.open(str(path)) as c:
        raw = next(c.decode(video=0))
        assert raw.color_trc == code
        as_sdr = raw.to_ndarray(format="rgb24")
    assert np.abs(as_sdr.astype(int) - srgb.astype(int)).mean() > 10  # HLG white comes out at 191 of 255


def test_reference_white_anchors_of_bt2408():
    # HLG 75 % signal and PQ 58 % signal are both HDR reference white (203 cd/m2): SDR white.
    assert hlg_to_scene_linear(np.array([0.75]))[0] == pytest.approx(0.26499, abs=1e-4)
    assert pq_to_nits(np.array([0.5807]))[0] == pytest.approx(203.0, rel=0.01)
    assert hlg_to_scene_linear(np.array([0.0, 0.5, 1.0])) == pytest.approx([0.0, 1 / 12, 1.0], abs=1e-6)
    assert pq_to_nits(np.array([1.0]))[0] == pytest.approx(10000.0)
    for transfer, white in ((TRC_HLG, 0.75), (TRC_PQ, 0.5807)):
        grey = np.full((2, 2, 3), round(white * 65535), np.uint16)
        assert np.abs(hdr_to_srgb8(grey, transfer, 9).astype(int) - 255).max() <= 1


def test_highlights_above_reference_white_keep_their_hue():
    bright_orange = np.array([[[1.0, 0.6, 0.2]]]) * 4.0  # 4x reference white, in linear BT.709
    signal = _hlg_signal(bright_orange @ BT709_TO_BT2020.T)
    out = hdr_to_srgb8(np.round(signal * 65535).astype(np.uint16), TRC_HLG, 9).astype(float)[0, 0]
    linear = srgb_to_linear(out / 255.0)
    assert out[0] == 255
    np.testing.assert_allclose(linear / linear[0], [1.0, 0.6, 0.2], atol=0.02)


@pytest.mark.parametrize("transfer, signal", [(TRC_HLG, _hlg_signal), (TRC_PQ, _pq_signal)])
def test_the_way_back_for_test_recordings_matches_the_standards_curves(transfer, signal):
    from models.hdr_video import relative_linear_to_signal

    rgb = srgb_to_linear(_picture() / 255.0).astype(np.float64)
    np.testing.assert_allclose(relative_linear_to_signal(rgb, transfer), signal(rgb @ BT709_TO_BT2020.T), atol=2e-4)


def _write_av1_hdr(path, rgb_signal: np.ndarray, trc: int) -> None:
    """10-bit AV1 (what Chromium decodes without an HEVC licence), tagged BT.2020 + trc, 4:2:0."""
    h, w = rgb_signal.shape[:2]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libsvtav1", rate=25)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p10le"
        cc = stream.codec_context
        cc.color_primaries, cc.color_trc, cc.colorspace = 9, trc, 9
        stream.options = {"crf": "10", "preset": "8"}
        rgb16 = np.round(np.clip(rgb_signal, 0, 1) * 65535).astype(np.uint16)
        frame = av.VideoFrame.from_ndarray(rgb16, format="rgb48le").reformat(format="yuv420p10le",
                                                                            dst_colorspace="bt2020")
        frame.color_primaries, frame.color_trc, frame.colorspace = 9, trc, 9
        for k in range(5):
            frame.pts = k
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="needs Debian's chromium at /usr/bin/chromium")
@pytest.mark.parametrize("transfer, signal", [(TRC_HLG, _hlg_signal), (TRC_PQ, _pq_signal)])
def test_chromium_decodes_the_same_hdr_picture_up_to_its_exposure(tmp_path, transfer, signal):
    # An independent HDR -> SDR conversion: Chromium drawing the video to a canvas. Measured: its linear values are
    # ours x 0.50 (it keeps a stop of headroom above HDR reference white, where BT.2408, which we follow, puts SDR
    # white), the same factor for every colour and level below white; so curves and primaries agree.
    import base64

    from playwright.sync_api import sync_playwright
    from test_webrtc import CHROMIUM, CHROMIUM_ARGS

    srgb = np.repeat(np.repeat(_picture(), 4, axis=0), 4, axis=1)  # 192 x 256: room for 4:2:0 and the codec
    path = tmp_path / "hdr.mp4"
    _write_av1_hdr(path, signal(srgb_to_linear(srgb / 255.0).astype(np.float64) @ BT709_TO_BT2020.T), transfer)
    ours = next(media.iter_video_frames(path)).image
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            data = browser.new_page().evaluate("""async (b64) => {
                const v = document.createElement('video'); v.muted = true; v.src = 'data:video/mp4;base64,' + b64;
                document.body.appendChild(v);
                await new Promise((ok, no) => { v.onloadeddata = ok; v.onerror = () => no('cannot play'); });
                // Draw only once a frame has been presented (after a seek alone the canvas may still be black).
                const shown = new Promise(ok => v.requestVideoFrameCallback(ok));
                await v.play(); await shown; v.pause();
                const c = document.createElement('canvas'); c.width = v.videoWidth; c.height = v.videoHeight;
                const g = c.getContext('2d'); g.drawImage(v, 0, 0);
                return Array.from(g.getImageData(0, 0, c.width, c.height).data); }""",
                base64.b64encode(path.read_bytes()).decode())
        finally:
            browser.close()
    chromium = np.array(data, np.uint8).reshape(srgb.shape[0], srgb.shape[1], 4)[..., :3]
    lit_ours, lit_chromium = srgb_to_linear(ours / 255.0), srgb_to_linear(chromium / 255.0)
    usable = (lit_ours > 0.02) & (ours < 250)  # above the dark codes' rounding, below our white
    ratio = lit_chromium[usable] / lit_ours[usable]
    factor = np.median(ratio)
    assert 0.3 < factor < 1.0
    assert np.percentile(ratio, 5) > 0.85 * factor and np.percentile(ratio, 95) < 1.2 * factor
