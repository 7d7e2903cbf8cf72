"""Container I/O: round trips, audio/video sync through AAC, variable frame rate, frame folders, errors."""

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from models import media

RATE = media.AUDIO_RATE_HZ


def _smooth_frames(count: int, h: int = 48, w: int = 64) -> list[np.ndarray]:
    y, x = np.mgrid[0:h, 0:w]
    return [
        np.stack([(x * 4 + k * 3) % 256, (y * 5) % 256, np.full_like(x, 40 + k)], axis=-1).astype(np.uint8)
        for k in range(count)
    ]


def _flash_clip(fps: float, flash_frame: int, count: int, h: int = 48, w: int = 64):
    """Black frames with one white frame, and a 1 kHz tone burst starting exactly when that frame is shown."""
    frames = [np.full((h, w, 3), 255 if k == flash_frame else 0, np.uint8) for k in range(count)]
    audio = np.zeros(int(count / fps * RATE), np.float32)
    onset = int(round(flash_frame / fps * RATE))
    audio[onset : onset + 1600] = 0.5 * np.sin(2 * np.pi * 1000 * np.arange(1600) / RATE)
    return frames, audio


def _onset_s(audio: np.ndarray, rate: int) -> float:
    return int(np.argmax(np.abs(audio) > 0.05)) / rate


def test_round_trip_keeps_frames_size_rate_and_timing(tmp_path):
    frames = _smooth_frames(12)
    path = tmp_path / "clip.mp4"
    assert media.write_mp4(path, iter(frames), fps=25) == 12
    clip = media.read_video(path)
    assert clip.frames.shape == (12, 48, 64, 3) and clip.frames.dtype == np.uint8
    assert clip.fps == pytest.approx(25)
    np.testing.assert_allclose(clip.frame_pts_s, np.arange(12) / 25, atol=1e-6)
    assert clip.is_constant_rate
    assert clip.audio is None
    err = np.abs(clip.frames.astype(int) - np.stack(frames).astype(int)).mean()
    assert err < 3  # lossy, but close at crf 18


@pytest.mark.parametrize("fps,flash_frame", [(30, 30), (25, 17), (29.97, 41)])
def test_audio_stays_in_sync_with_video_through_aac(tmp_path, fps, flash_frame):
    frames, audio = _flash_clip(fps, flash_frame, count=60)
    path = tmp_path / "sync.mp4"
    media.write_mp4(path, frames, fps=fps, audio=audio)
    clip = media.read_video(path)
    assert clip.audio is not None and clip.audio.dtype == np.float32
    shown = int(np.argmax(clip.frames.mean(axis=(1, 2, 3))))
    assert shown == flash_frame
    offset_ms = (_onset_s(clip.audio, clip.audio_sample_rate_hz) - clip.frame_pts_s[shown]) * 1000
    assert abs(offset_ms) < 5, f"audio onset is {offset_ms:.2f} ms off the flash frame"


def test_audio_is_resampled_to_16k_mono_with_onset_kept(tmp_path):
    # A 44.1 kHz stereo AAC track written directly with PyAV, onset 0.5 s, tone in the left channel only.
    path = tmp_path / "stereo.mp4"
    src_rate, onset_s = 44100, 0.5
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=25)
        v.width, v.height, v.pix_fmt = 32, 32, "yuv420p"
        a = c.add_stream("aac", rate=src_rate)
        a.layout = "stereo"
        for k in range(25):
            f = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
            f.pts = k
            c.mux(v.encode(f))
        c.mux(v.encode(None))
        n = src_rate
        left = np.zeros(n, np.float32)
        start = int(onset_s * src_rate)
        left[start : start + 4410] = 0.5 * np.sin(2 * np.pi * 440 * np.arange(4410) / src_rate)
        stereo = np.stack([left, np.zeros_like(left)])
        for s in range(0, n, 1024):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(stereo[:, s : s + 1024]), format="fltp",
                                               layout="stereo")
            frame.sample_rate, frame.pts, frame.time_base = src_rate, s, Fraction(1, src_rate)
            c.mux(a.encode(frame))
        c.mux(a.encode(None))
    audio = media.read_audio(path)
    assert audio.ndim == 1 and audio.dtype == np.float32
    assert audio.size == pytest.approx(RATE, abs=2048)  # one second, plus encoder tail padding
    assert abs(_onset_s(audio, RATE) - onset_s) < 0.003
    # FFmpeg's stereo-to-mono downmix weights each channel by 1/sqrt(2)
    assert np.abs(audio).max() == pytest.approx(0.5 / np.sqrt(2), abs=0.05)


def test_audio_placed_by_first_chunk_time():
    chunk = np.ones(100, np.float32)
    late = media._place_audio_chunks([(0.01, chunk), (None, chunk)], RATE)
    assert late.size == 160 + 200 and not late[:160].any()
    primed = media._place_audio_chunks([(-0.005, chunk)], RATE)
    assert primed.size == 20  # 80 priming samples before time 0 dropped


def test_odd_sizes_are_padded_to_even(tmp_path):
    frames = [f[:47, :63] for f in _smooth_frames(3)]
    media.write_mp4(tmp_path / "odd.mp4", frames, fps=10)
    info = media.probe_video(tmp_path / "odd.mp4")
    assert (info.width_px, info.height_px) == (64, 48)
    assert info.frame_count == 3 and not info.has_audio


def test_write_is_atomic(tmp_path):
    path = tmp_path / "out.mp4"
    bad = _smooth_frames(3) + [np.zeros((10, 10, 3), np.uint8)]
    with pytest.raises(ValueError, match="frame 3 is 10x10"):
        media.write_mp4(path, bad, fps=10)
    assert list(tmp_path.iterdir()) == []  # neither the target nor a temporary file is left
    media.write_mp4(path, _smooth_frames(3), fps=10)
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


def test_write_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="no frames"):
        media.write_mp4(tmp_path / "x.mp4", [], fps=10)
    with pytest.raises(ValueError, match="uint8"):
        media.write_mp4(tmp_path / "x.mp4", [np.zeros((8, 8, 3), np.float32)], fps=10)
    with pytest.raises(ValueError, match="mono"):
        media.write_mp4(tmp_path / "x.mp4", _smooth_frames(2), fps=10, audio=np.zeros((2, 100), np.float32))


def _write_vfr(path: Path, pts_ms: list[int]) -> None:
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=30)
        v.width, v.height, v.pix_fmt = 32, 32, "yuv420p"
        v.codec_context.time_base = Fraction(1, 1000)
        v.time_base = Fraction(1, 1000)
        for k, t in enumerate(pts_ms):
            f = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 20 * k, np.uint8), format="rgb24")
            f.pts, f.time_base = t, Fraction(1, 1000)
            c.mux(v.encode(f))
        c.mux(v.encode(None))


def test_variable_frame_rate_reports_pts_and_resamples(tmp_path):
    pts_ms = [0, 40, 50, 150, 200]
    path = tmp_path / "vfr.mp4"
    _write_vfr(path, pts_ms)
    clip = media.read_video(path)
    np.testing.assert_allclose(clip.frame_pts_s, np.array(pts_ms) / 1000, atol=1e-3)
    assert not clip.is_constant_rate
    # The last frame lasts one median interval (45 ms), so the clip ends at 245 ms: grid 0, 50, ..., 200 ms.
    fixed = media.read_video(path, constant_fps=20)
    assert fixed.fps == 20 and fixed.is_constant_rate
    levels = np.round(fixed.frames[:, 16, 16, 0] / 20).astype(int)
    # a frame stays on screen until the next one: 0 ms -> #0, 50 -> #2, 100 -> #2, 150 -> #3, 200 -> #4
    assert levels.tolist() == [0, 2, 2, 3, 4]


def test_resample_index_is_sample_and_hold():
    pts = np.array([0.0, 0.1, 0.35])
    assert media.resample_to_constant_rate(pts, 10, duration_s=0.5).tolist() == [0, 1, 1, 1, 2]
    with pytest.raises(ValueError, match="fps"):
        media.resample_to_constant_rate(pts, 0)


def test_iter_video_frames_streams_and_stops(tmp_path):
    media.write_mp4(tmp_path / "c.mp4", _smooth_frames(8), fps=8)
    frames = list(media.iter_video_frames(tmp_path / "c.mp4", max_frames=3))
    assert len(frames) == 3 and frames[2].pts_s == pytest.approx(0.25)


def test_frame_folder_round_trip(tmp_path):
    frames = _smooth_frames(4)
    assert media.write_frame_dir(tmp_path / "f", frames) == 4
    assert sorted(p.name for p in (tmp_path / "f").iterdir())[0] == "000000.png"
    got = list(media.iter_frames(tmp_path / "f", fps_for_frame_dir=10))
    assert [f.pts_s for f in got] == pytest.approx([0, 0.1, 0.2, 0.3])
    np.testing.assert_array_equal(got[3].image, frames[3])  # PNG is lossless
    assert media.count_frames(tmp_path / "f") == 4
    assert media.source_audio(tmp_path / "f") is None


def test_unreadable_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such video"):
        media.read_video(tmp_path / "missing.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video" * 100)
    with pytest.raises(ValueError, match="cannot decode video '.*junk.mp4'"):
        media.read_video(junk)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no"):
        list(media.iter_frames(tmp_path / "empty"))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "000000.png").write_bytes(b"nope")
    with pytest.raises(ValueError, match="cannot read image"):
        list(media.iter_frames(tmp_path / "bad"))


def test_audio_only_file_has_no_video_stream(tmp_path):
    path = tmp_path / "voice.m4a"
    with av.open(str(path), "w", format="mp4") as c:
        a = c.add_stream("aac", rate=RATE)
        a.layout = "mono"
        for s in range(0, RATE, 1024):
            f = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            f.sample_rate, f.pts, f.time_base = RATE, s, Fraction(1, RATE)
            c.mux(a.encode(f))
        c.mux(a.encode(None))
    with pytest.raises(ValueError, match="has no video stream"):
        media.read_video(path)


def _corner_frames(count: int) -> list[np.ndarray]:
    """64x32 landscape pictures, white in the top-left 10x10 corner only: which way a turn went is plain to see."""
    frames = []
    for _ in range(count):
        frame = np.zeros((32, 64, 3), np.uint8)
        frame[:10, :10] = 255
        frames.append(frame)
    return frames


def _white_centre_xy(image: np.ndarray) -> tuple[float, float]:
    yx = np.argwhere(image[..., 0] > 128).mean(axis=0)
    return float(yx[1]), float(yx[0])


# Where Chromium draws the white corner of such a file (a <video> drawn to a canvas, measured once here):
# a 90 deg display rotation puts it bottom-left of a 32x64 picture, -90 top-right, 180 bottom-right of 64x32.
@pytest.mark.parametrize(
    "rotation_deg, size_wh, white_xy",
    [(90, (32, 64), (4.5, 58.5)), (-90, (32, 64), (26.5, 4.5)), (180, (64, 32), (58.5, 26.5))],
)
def test_phone_rotation_is_applied_as_players_show_it(tmp_path, rotation_deg, size_wh, white_xy):
    path = tmp_path / "phone.mp4"
    media.write_mp4(path, _corner_frames(5), fps=25, display_rotation_deg=rotation_deg)
    info = media.probe_video(path)
    assert (info.width_px, info.height_px) == size_wh
    assert media.display_quarter_turns(info.rotation_deg) == {90: 1, -90: 3, 180: 2}[rotation_deg]
    frames = list(media.iter_video_frames(path))
    assert len(frames) == 5
    for frame in frames:
        assert frame.image.shape == (size_wh[1], size_wh[0], 3) and frame.image.flags.c_contiguous
        assert _white_centre_xy(frame.image) == pytest.approx(white_xy, abs=0.6)
    clip = media.read_video(path, with_audio=False)
    assert clip.frames.shape == (5, size_wh[1], size_wh[0], 3)


def test_upright_video_is_left_as_is(tmp_path):
    path = tmp_path / "plain.mp4"
    media.write_mp4(path, _corner_frames(3), fps=25)
    info = media.probe_video(path)
    assert (info.width_px, info.height_px, info.rotation_deg) == (64, 32, 0)
    assert _white_centre_xy(next(media.iter_video_frames(path)).image) == pytest.approx((4.5, 4.5), abs=0.6)


def test_a_turn_other_than_a_quarter_is_refused_by_name(tmp_path):
    assert [media.display_quarter_turns(a) for a in (0, 90, 180, -180, 270, -90, 90.4)] == [0, 1, 2, 2, 3, 3, 1]
    path = tmp_path / "tilted.mp4"
    media.write_mp4(path, _corner_frames(2), fps=25, display_rotation_deg=45)
    with pytest.raises(ValueError, match=r"tilted.mp4' asks to be shown turned by 45 degrees; only quarter turns"):
        media.probe_video(path)
    with pytest.raises(ValueError, match="only quarter turns"):
        list(media.iter_video_frames(path))


def test_photo_exif_orientation_is_applied(tmp_path):
    from PIL import Image

    picture = Image.fromarray(_corner_frames(1)[0])
    exif = picture.getexif()
    exif[0x0112] = 6  # EXIF Orientation 6: the viewer turns the stored picture 90 deg clockwise
    picture.save(tmp_path / "phone.jpg", exif=exif.tobytes(), quality=95)
    image = media.read_image_rgb(tmp_path / "phone.jpg")
    assert image.shape == (64, 32, 3)
    assert _white_centre_xy(image) == pytest.approx((27, 4.5), abs=1.0)  # the top-left corner went top-right


# ---------------------------------------------------------------------------- files that declare no rate (browsers)

MEDIARECORDER_WEBM = Path(__file__).parent / "data" / "mediarecorder" / "canvas10_uneven.webm"


def test_a_browser_recording_is_read_at_the_rate_its_frames_came(tmp_path):
    # Chromium's MediaRecorder, 10 fps with some frames 50 or 150 ms apart (tests/data/mediarecorder/make.py): the
    # file declares neither rate nor duration, and FFmpeg's own guess is about twice the real rate.
    with av.open(str(MEDIARECORDER_WEBM)) as container:
        stream = container.streams.video[0]
        assert stream.average_rate is None and container.duration is None
        assert abs(float(stream.guessed_rate) - 10.0) > 5.0
    info = media.probe_video(MEDIARECORDER_WEBM)
    assert info.fps == 10.0 and info.fps_measured
    assert 2.9 < info.duration_s < 3.2 and info.has_audio
    # On the 10 fps grid each frame is shown once, save those a late frame holds for an extra tick.
    clip = media.read_video(MEDIARECORDER_WEBM, constant_fps=info.fps)
    held = int(np.sum(np.all(clip.frames[1:] == clip.frames[:-1], axis=(1, 2, 3))))
    assert abs(clip.frame_count - 30) <= 1 and held <= 4


def test_measured_rate_is_the_typical_interval_snapped_to_a_common_rate():
    ntsc_in_ms = np.round(np.arange(120) * 1001 / 30) / 1000  # 29.97 fps in WebM's millisecond times
    assert media.measured_fps(ntsc_in_ms) == pytest.approx(30000 / 1001)
    assert media.measured_fps(np.round(np.arange(120) * 100 / 3) / 1000) == 30.0
    late_and_dropped = np.cumsum([0.04] * 50 + [0.08, 0.12] * 5)  # 25 fps, a sixth of the intervals long
    assert media.measured_fps(late_and_dropped) == 25.0
    assert media.measured_fps(np.arange(10) * 0.07) == pytest.approx(1 / 0.07)  # no common rate near: as measured
    with pytest.raises(ValueError, match="at least two frames"):
        media.measured_fps(np.array([0.5, 0.5]))


def _without_declared_rate(path: Path) -> None:
    """Void the Matroska DefaultDuration and Duration elements, as MediaRecorder writes files (EBML Void, same size)."""
    data = bytearray(path.read_bytes())
    for element_id in (b"\x23\xe3\x83", b"\x44\x89"):
        at = data.find(element_id)
        size_byte = data[at + len(element_id)]
        width = 8 - size_byte.bit_length() + 1  # EBML variable-size integer: leading zeros say its length
        value = int.from_bytes(bytes([size_byte & (0xFF >> width)]) + data[at + len(element_id) + 1:at + len(element_id) + width], "big")
        total = len(element_id) + width + value
        data[at:at + total] = bytes([0xEC, 0x80 | (total - 2)]) + bytes(total - 2)
    path.write_bytes(data)


def test_a_webm_without_declared_rate_or_duration_gets_both_from_its_packets(tmp_path):
    path = tmp_path / "uneven.webm"
    with av.open(str(path), "w", format="webm") as container:
        stream = container.add_stream("libvpx", rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)  # millisecond times, as browsers
        t_ms, gaps = 0, [40, 40, 40, 40, 80, 40, 40, 120]  # 25 fps, late frames; the encoder was told 30
        for k in range(50):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 4 * k, np.uint8), format="rgb24")
            frame.pts, frame.time_base = t_ms, Fraction(1, 1000)
            last_ms, t_ms = t_ms, t_ms + gaps[k % len(gaps)]
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    declared = media.probe_video(path)
    assert declared.fps == 30.0 and not declared.fps_measured  # a declared rate is taken as declared
    _without_declared_rate(path)
    info = media.probe_video(path)
    assert info.fps == 25.0 and info.fps_measured
    assert info.duration_s == pytest.approx((last_ms + 40) / 1000, abs=1e-3)  # the last frame lasts 40 ms
    assert media.video_seconds(path) == pytest.approx(info.duration_s)
