"""Video containers in and out: decode frames + audio on one clock, encode H.264 + AAC MP4, frame folders.

Every reader puts frames and audio on the container's presentation clock: `frame_pts_s[k]` is when frame k is shown
and audio sample n plays at `n / audio_sample_rate_hz` seconds. Audio is placed by the pts of its decoded frames, not
by counting samples from the first packet, so AAC encoder priming (the ~1024 samples an encoder emits before the
first real sample) never shifts audio against video, whether the container trims it with an edit list or leaves
negative pts in the stream.

WAV files are `models/audio.py`'s job; this module is only about video containers and image sequences.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from models.hdr_video import HDR_TRANSFERS, hdr_to_srgb8

AUDIO_RATE_HZ = 16000
FRAME_DIR_SUFFIXES = (".png", ".jpg", ".jpeg")

# Frame rates are written as exact fractions; 1001 covers NTSC rates like 29.97 = 30000/1001.
_MAX_RATE_DENOMINATOR = 1001


@dataclass(frozen=True)
class VideoFrame:
    """One decoded picture and when it is shown."""

    image: np.ndarray  # uint8 (H, W, 3) RGB
    pts_s: float


@dataclass(frozen=True)
class VideoInfo:
    """What a container holds, read from its headers (frame_count is 0 where the container does not say)."""

    width_px: int
    height_px: int
    fps: float  # average rate; variable-rate files still have one
    frame_count: int
    duration_s: float
    has_audio: bool
    rotation_deg: int = 0  # how far the decoded pictures are turned counter-clockwise to be shown (phone videos)
    fps_measured: bool = False  # True where the container declares no rate and fps comes from the frames' times


@dataclass
class VideoClip:
    """Decoded frames and (optionally) audio on one clock."""

    frames: np.ndarray  # uint8 (T, H, W, 3) RGB
    fps: float
    frame_pts_s: np.ndarray  # float64 (T,), presentation time of each frame
    audio: np.ndarray | None  # float32 mono; sample n plays at n / audio_sample_rate_hz seconds
    audio_sample_rate_hz: int = AUDIO_RATE_HZ

    @property
    def frame_count(self) -> int:
        return int(self.frames.shape[0])

    @property
    def is_constant_rate(self) -> bool:
        """True when every frame interval is within 1 ms of 1/fps."""
        if self.frame_count < 2:
            return True
        return bool(np.all(np.abs(np.diff(self.frame_pts_s) - 1.0 / self.fps) < 1e-3))


def _open(path: str | os.PathLike) -> av.container.InputContainer:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such video: '{path}'")
    if path.is_dir():
        raise ValueError(f"cannot decode video '{path}': it is a folder (frame folders go through read_clip)")
    try:
        return av.open(str(path))
    except (av.error.FFmpegError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot decode video '{path}': {e}") from e


def _video_stream(container, path) -> av.video.stream.VideoStream:
    if not container.streams.video:
        raise ValueError(f"'{path}' has no video stream")
    return container.streams.video[0]


def _stream_fps(stream) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate:
        raise ValueError("video stream declares no frame rate")
    return float(rate)


# Rates cameras and encoders use; a measured rate within 1 % of one of them is taken to be it.
COMMON_RATES = (
    Fraction(24000, 1001), Fraction(24), Fraction(25), Fraction(30000, 1001), Fraction(30), Fraction(50),
    Fraction(60000, 1001), Fraction(60), Fraction(15), Fraction(12), Fraction(10), Fraction(20), Fraction(48),
    Fraction(90), Fraction(120),
)
RATE_SAMPLE_S = 4.0  # how much of a video's start its rate is measured over


def measured_fps(frame_pts_s: np.ndarray) -> float:
    """Frame rate from frame times: the mean of the typical intervals, snapped to a common rate within 1 %.

    Typical means within a quarter of the median: cameras in browsers deliver a frame late, early or not at all now
    and then, and those intervals would pull a plain mean off. Among the rest the mean, not the median: over a run
    of intervals it is the span over their count, precise enough to tell 29.97 from 30. Raises ValueError with
    fewer than two distinct times.
    """
    intervals_s = np.diff(np.unique(np.asarray(frame_pts_s, dtype=np.float64)))
    if intervals_s.size == 0:
        raise ValueError("a frame rate needs at least two frames with distinct times")
    median_s = float(np.median(intervals_s))
    fps = 1.0 / float(intervals_s[np.abs(intervals_s - median_s) <= 0.25 * median_s].mean())
    nearest = min(COMMON_RATES, key=lambda rate: abs(float(rate) - fps))
    return float(nearest) if abs(float(nearest) - fps) <= 0.01 * float(nearest) else fps


def _packet_times_s(container, stream, max_span_s: float | None) -> np.ndarray:
    """Sorted presentation times of the stream's packets, from its start up to max_span_s after it (None: all).

    Demuxing only: no decoding, so scanning a whole recording for its length is cheap.
    """
    times_s: list[float] = []
    start_s = float("inf")
    try:
        for packet in container.demux(stream):
            if packet.pts is None or packet.time_base is None:
                continue
            t = float(packet.pts * packet.time_base)
            if max_span_s is not None and t - start_s > max_span_s:
                break
            times_s.append(t)
            start_s = min(start_s, t)
    except av.error.FFmpegError:
        pass  # a truncated tail (an interrupted recording) still has the times read before it
    return np.sort(np.array(times_s, np.float64))


def video_seconds(path: str | os.PathLike) -> float:
    """How long a video's frames play, from its packets' times: for files whose headers give no duration.

    Browsers' MediaRecorder writes WebM as a live stream, without a duration; 0.0 where no packet has a time.
    """
    with _open(path) as container:
        times_s = _packet_times_s(container, _video_stream(container, path), None)
    if times_s.size == 0:
        return 0.0
    last_interval_s = float(np.median(np.diff(times_s))) if times_s.size > 1 else 0.0
    return float(times_s[-1] - times_s[0] + last_interval_s)


def _measured_stream_fps(path) -> float:
    with _open(path) as container:
        times_s = _packet_times_s(container, _video_stream(container, path), RATE_SAMPLE_S)
    try:
        return measured_fps(times_s)
    except ValueError as e:
        raise ValueError(f"'{path}' declares no frame rate and its frames' times give none: {e}") from e


def display_quarter_turns(rotation_deg: float, path: str | os.PathLike = "") -> int:
    """np.rot90's k that shows a picture upright, given the display rotation a container asks for.

    Phones record a portrait video as landscape pictures plus a display matrix; every player turns them, and the
    face tracker only finds upright faces, so every reader here turns them too. Only quarter turns occur in
    practice; anything else gets an error rather than a sideways face.
    """
    k = int(round(rotation_deg / 90.0))
    if abs(rotation_deg - 90.0 * k) > 1.0:
        raise ValueError(
            f"'{path}' asks to be shown turned by {rotation_deg:g} degrees; only quarter turns are supported "
            f"(re-encode the video upright)"
        )
    return k % 4


def _picture(frame: av.VideoFrame, path) -> np.ndarray:
    """uint8 sRGB as a player shows the frame: HDR (HLG/PQ) mapped to SDR, display rotation applied."""
    if frame.color_trc in HDR_TRANSFERS:
        image = hdr_to_srgb8(frame.to_ndarray(format="rgb48le"), frame.color_trc, frame.color_primaries)
    else:
        image = frame.to_ndarray(format="rgb24")  # the frame's own YUV matrix and range (BT.601/709) apply
    k = display_quarter_turns(frame.rotation, path)
    return np.ascontiguousarray(np.rot90(image, k)) if k else image


def _first_frame_rotation(container, stream, path) -> int:
    # PyAV exposes the display matrix on decoded frames only; one frame is cheap next to anything that follows.
    try:
        for frame in container.decode(stream):
            return int(frame.rotation)
    except av.error.FFmpegError as e:
        raise ValueError(f"cannot decode video '{path}': {e}") from e
    return 0


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Container facts, and the display rotation from the first decoded frame; sizes are as shown (upright)."""
    with _open(path) as container:
        stream = _video_stream(container, path)
        if stream.duration is not None and stream.time_base is not None:
            duration_s = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration_s = container.duration / av.time_base
        else:
            duration_s = video_seconds(path)
        # A file with no declared average rate (MediaRecorder's WebM) leaves FFmpeg guessing from the timestamps'
        # resolution or a few early frames (1000, 50, 20 fps for a 10 fps camera); the frames' own times say.
        fps_measured = stream.average_rate is None
        fps = _measured_stream_fps(path) if fps_measured else _stream_fps(stream)
        frame_count, has_audio = int(stream.frames or 0), bool(container.streams.audio)
        width_px, height_px = stream.codec_context.width, stream.codec_context.height
        rotation_deg = _first_frame_rotation(container, stream, path)
        if display_quarter_turns(rotation_deg, path) % 2:
            width_px, height_px = height_px, width_px
        return VideoInfo(
            width_px=width_px,
            height_px=height_px,
            fps=fps,
            frame_count=frame_count,
            duration_s=duration_s,
            has_audio=has_audio,
            rotation_deg=rotation_deg,
            fps_measured=fps_measured,
        )


def iter_video_frames(path: str | os.PathLike, max_frames: int | None = None) -> Iterator[VideoFrame]:
    """Decode frames one at a time (constant memory for long clips), in presentation order, upright as shown."""
    container = _open(path)
    try:
        stream = _video_stream(container, path)
        stream.thread_type = "AUTO"
        fps = _stream_fps(stream)
        count = 0
        try:
            for frame in container.decode(stream):
                if max_frames is not None and count >= max_frames:
                    return
                # Frames without pts (rare, raw streams) are placed on the nominal grid.
                pts_s = float(frame.time) if frame.time is not None else count / fps
                yield VideoFrame(image=_picture(frame, path), pts_s=pts_s)
                count += 1
        except av.error.FFmpegError as e:
            raise ValueError(f"cannot decode video '{path}': {e}") from e
        if count == 0:
            raise ValueError(f"cannot decode video '{path}': no frames decoded")
    finally:
        container.close()


def read_audio(path: str | os.PathLike, sample_rate_hz: int = AUDIO_RATE_HZ) -> np.ndarray | None:
    """Mono float32 audio of a container at `sample_rate_hz`, sample 0 at container time 0; None without audio.

    Decoded frames are placed by their pts: samples before time 0 (encoder priming left in the stream) are dropped
    and a late-starting track is padded with leading silence, so the result shares the clock of `frame_pts_s`.
    """
    with _open(path) as container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate_hz)
        chunks: list[tuple[float, np.ndarray]] = []
        try:
            for frame in container.decode(stream):
                start_s = float(frame.time) if frame.time is not None else None
                for out in resampler.resample(frame):
                    chunks.append((start_s, out.to_ndarray().reshape(-1)))
                    start_s = None  # the resampler may split one frame; later pieces follow on
            for out in resampler.resample(None):
                chunks.append((None, out.to_ndarray().reshape(-1)))
        except av.error.FFmpegError as e:
            raise ValueError(f"cannot decode audio of '{path}': {e}") from e
        return _place_audio_chunks(chunks, sample_rate_hz)


def _place_audio_chunks(chunks: list[tuple[float | None, np.ndarray]], sample_rate_hz: int) -> np.ndarray:
    """Lay decoded chunks on a sample grid starting at time 0, trusting only the first chunk's timestamp.

    Later chunks are appended contiguously: AAC frame pts are exact multiples of the frame size, so re-placing
    each one would only add resampler rounding jitter; the first pts is what carries the priming offset.
    """
    if not chunks:
        return np.zeros(0, np.float32)
    samples = np.concatenate([c for _, c in chunks]).astype(np.float32, copy=False)
    first_s = chunks[0][0] or 0.0
    offset = int(round(first_s * sample_rate_hz))
    if offset > 0:
        samples = np.concatenate([np.zeros(offset, np.float32), samples])
    elif offset < 0:
        samples = samples[-offset:]
    return samples


def resample_to_constant_rate(frame_pts_s: np.ndarray, fps: float, duration_s: float | None = None) -> np.ndarray:
    """For a constant-rate output grid k / fps, the index of the source frame on screen at each output time.

    A frame stays on screen until the next one's pts, so each output time takes the latest frame whose pts is not
    after it (sample-and-hold, what a player shows); output times before the first frame take frame 0.
    """
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    pts = np.asarray(frame_pts_s, dtype=np.float64)
    if pts.size == 0:
        return np.zeros(0, np.int64)
    if duration_s is None:
        # The last frame lasts about one median interval.
        last_interval_s = float(np.median(np.diff(pts))) if pts.size > 1 else 1.0 / fps
        duration_s = pts[-1] + last_interval_s - pts[0]
    count = max(1, int(round(duration_s * fps)))
    times_s = pts[0] + np.arange(count) / fps
    # Half a microsecond of slack so a frame exactly on the grid is not lost to float rounding.
    return np.clip(np.searchsorted(pts, times_s + 5e-7, side="right") - 1, 0, pts.size - 1)


def read_video(
    path: str | os.PathLike,
    max_frames: int | None = None,
    constant_fps: float | None = None,
    with_audio: bool = True,
    audio_sample_rate_hz: int = AUDIO_RATE_HZ,
) -> VideoClip:
    """Decode a whole video into memory (use iter_video_frames for long clips).

    constant_fps: resample variable-rate video to this constant rate (sample-and-hold); frame_pts_s then lies on the
    grid first_pts + k / constant_fps. Without it, frames are returned as decoded with their own pts.
    """
    fps = probe_video(path).fps
    decoded = list(iter_video_frames(path, max_frames=max_frames))
    frames = np.stack([f.image for f in decoded])
    pts_s = np.array([f.pts_s for f in decoded], dtype=np.float64)
    if constant_fps is not None:
        index = resample_to_constant_rate(pts_s, constant_fps)
        frames, fps = frames[index], float(constant_fps)
        pts_s = pts_s[0] + np.arange(index.size) / constant_fps
    audio = read_audio(path, audio_sample_rate_hz) if with_audio else None
    return VideoClip(frames=frames, fps=fps, frame_pts_s=pts_s, audio=audio, audio_sample_rate_hz=audio_sample_rate_hz)


# ---------------------------------------------------------------------------------------------------------- frame folders


def list_frame_files(folder: str | os.PathLike) -> list[Path]:
    """Image files of a frame folder (000000.png, 000001.png, ...) in name order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no such frame folder: '{folder}'")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in FRAME_DIR_SUFFIXES and not p.name.startswith("."))
    if not files:
        raise ValueError(f"frame folder '{folder}' holds no {'/'.join(FRAME_DIR_SUFFIXES)} images")
    return files


def imread_upright(path: str | os.PathLike) -> np.ndarray:
    """The pixels of an ordinary image file (PNG, JPEG, ...) as a viewer shows them.

    Phone photos store the camera's sensor rows plus an EXIF orientation; viewers turn them, so a background or
    portrait read without it would come out sideways. The decoder's own errors pass through.
    """
    import imageio.v3 as iio

    return np.asarray(iio.imread(path, plugin="pillow", rotate=True))


def read_image_rgb(path: str | os.PathLike) -> np.ndarray:
    """uint8 (H, W, 3) RGB, upright as shown (EXIF orientation applied); grey is expanded and alpha dropped."""
    try:
        image = imread_upright(path)
    except Exception as e:  # the decoder raises assorted types for bad files
        raise ValueError(f"cannot read image '{path}': {e}") from e
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    if image.dtype != np.uint8:
        raise ValueError(f"image '{path}' has dtype {image.dtype}; expected 8- or 16-bit")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"image '{path}' has shape {image.shape}; expected (H, W, 3) or (H, W, 4)")
    return np.ascontiguousarray(image[:, :, :3])


def iter_frame_dir(folder: str | os.PathLike, fps: float, max_frames: int | None = None) -> Iterator[VideoFrame]:
    """Frames of an image folder; frame k is shown at k / fps (folders carry no timing of their own)."""
    for k, path in enumerate(list_frame_files(folder)[:max_frames]):
        yield VideoFrame(image=read_image_rgb(path), pts_s=k / fps)


def write_frame_dir(folder: str | os.PathLike, frames: Iterable[np.ndarray]) -> int:
    """Write frames as folder/000000.png, ...; returns the number written."""
    import imageio.v3 as iio

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    count = 0
    for count, frame in enumerate(frames, start=1):
        iio.imwrite(folder / f"{count - 1:06d}.png", _check_rgb_frame(frame))
    return count


# ------------------------------------------------------------------------------------------------- videos or folders


def is_frame_dir(path: str | os.PathLike) -> bool:
    return Path(path).is_dir()


def iter_frames(path: str | os.PathLike, fps_for_frame_dir: float = 30.0, max_frames: int | None = None):
    """Frames of a video file or a frame folder."""
    if is_frame_dir(path):
        return iter_frame_dir(path, fps_for_frame_dir, max_frames)
    return iter_video_frames(path, max_frames)


def count_frames(path: str | os.PathLike) -> int:
    """Frame count from a folder listing or the container header (0 where the header does not say)."""
    if is_frame_dir(path):
        return len(list_frame_files(path))
    return probe_video(path).frame_count


def source_fps(path: str | os.PathLike, fps_for_frame_dir: float = 30.0) -> float:
    return fps_for_frame_dir if is_frame_dir(path) else probe_video(path).fps


def source_audio(path: str | os.PathLike, sample_rate_hz: int = AUDIO_RATE_HZ) -> np.ndarray | None:
    """Audio of a video file; frame folders have none."""
    return None if is_frame_dir(path) else read_audio(path, sample_rate_hz)


# ---------------------------------------------------------------------------------------------------------- writing


def _check_rgb_frame(frame: np.ndarray) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frames must be uint8 (H, W, 3) RGB, got {frame.dtype} {frame.shape}")
    return frame


def _pad_to_even(frame: np.ndarray) -> np.ndarray:
    """yuv420p halves chroma resolution, so H.264 needs even sizes; repeat the last row/column to get them."""
    pad_h, pad_w = frame.shape[0] % 2, frame.shape[1] % 2
    if pad_h or pad_w:
        frame = np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return frame


def write_mp4(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray],
    fps: float,
    audio: np.ndarray | None = None,
    audio_rate: int = AUDIO_RATE_HZ,
    crf: int = 18,
    display_rotation_deg: int = 0,
) -> int:
    """Encode frames (uint8 (H, W, 3) RGB, any iterable) as H.264 yuv420p + optional AAC mono; returns frame count.

    Frame k is shown at k / fps; audio sample 0 plays at time 0. Odd frame sizes are padded by one repeated
    row/column (yuv420p needs even sizes). The file appears at `path` only when complete: it is written to a
    temporary file in the same folder and renamed. `display_rotation_deg` stores the frames as given and asks
    players to turn them counter-clockwise by that much, as phones do (readers here turn them back upright).
    """
    path = Path(path)
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if audio is not None:
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim != 1:
            raise ValueError(f"audio must be mono (N,), got shape {audio.shape}")
    rate = Fraction(fps).limit_denominator(_MAX_RATE_DENOMINATOR)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Hidden name in the same folder, so the rename is atomic and a half-written file is never mistaken for output.
    tmp_name = str(path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"))
    try:
        count = _encode(tmp_name, frames, rate, audio, audio_rate, crf, display_rotation_deg)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return count


def _encode(filename: str, frames: Iterable[np.ndarray], rate: Fraction, audio, audio_rate: int, crf: int,
            display_rotation_deg: int) -> int:
    container = av.open(filename, mode="w", format="mp4")
    try:
        video = None
        audio_stream = None
        count = 0
        for frame in frames:
            frame = _pad_to_even(_check_rgb_frame(frame))
            if video is None:
                video = container.add_stream("libx264", rate=rate)
                video.width, video.height = frame.shape[1], frame.shape[0]
                video.pix_fmt = "yuv420p"
                video.codec_context.time_base = 1 / rate
                video.options = {"crf": str(crf), "preset": "veryfast"}
                if display_rotation_deg:
                    video.set_display_rotation(display_rotation_deg)
                # Streams must all exist before the first packet is muxed.
                if audio is not None and audio.size:
                    audio_stream = container.add_stream("aac", rate=audio_rate)
                    audio_stream.layout = "mono"
            elif frame.shape[:2] != (video.height, video.width):
                raise ValueError(
                    f"frame {count} is {frame.shape[1]}x{frame.shape[0]} px; earlier frames are {video.width}x{video.height}"
                )
            out = av.VideoFrame.from_ndarray(frame, format="rgb24")
            out.pts = count
            container.mux(video.encode(out))
            count += 1
        if video is None:
            raise ValueError("write_mp4 got no frames")
        container.mux(video.encode(None))
        if audio_stream is not None:
            encode_audio(container, audio_stream, audio, audio_rate)
    finally:
        container.close()
    return count


def encode_audio(container, stream, audio: np.ndarray, audio_rate: int) -> None:
    """Mono float audio into an opened output stream (AAC here), sample 0 at time 0, then the encoder flushed."""
    # The encoder takes fixed-size frames; pts in samples tells the muxer where each starts, and the encoder's
    # priming packets (negative pts) become an edit list, so readers see sample 0 at time 0.
    frame_size = stream.codec_context.frame_size or 1024
    for start in range(0, audio.size, frame_size):
        chunk = np.clip(audio[start : start + frame_size], -1.0, 1.0)
        frame = av.AudioFrame.from_ndarray(chunk[None, :], format="fltp", layout="mono")
        frame.sample_rate = audio_rate
        frame.pts = start
        frame.time_base = Fraction(1, audio_rate)
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))
