"""MP4 sink: canvas frames as H.264 and the source audio as AAC, muxed as they arrive.

Both tracks are stamped on the media clock (video frame k at k / fps, audio sample n at n / 16 kHz), so the file is
in sync whatever the pipeline's latency was. Frames the live pipeline dropped are filled by repeating the previous
picture, keeping the file constant-rate (players and editors handle that best).

The file is fragmented MP4 (a header up front, then a self-describing fragment per 2-second group of pictures), written
straight to its path: if relitcam is killed or the machine stops mid-call, the recording plays up to its last
whole fragment instead of being an unreadable file without an index. It also keeps memory flat: a plain MP4's index
stays in memory until the file is closed (~0.2 MB per recorded minute, measured), a fragment's only until the fragment
is written.
"""

from __future__ import annotations

import os
import threading
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from stream.types import AUDIO_RATE_HZ, AudioChunk, Frame


FRAGMENTED = "frag_keyframe+empty_moov+delay_moov+default_base_moof+global_sidx"
FRAGMENT_S = 2.0


class Mp4Sink:
    name = "mp4"
    blocking = True  # encoding

    def __init__(self, path: str | os.PathLike, fps: float, size_px: tuple[int, int], crf: int = 20,
                 with_audio: bool = True, audio_rate_hz: int = AUDIO_RATE_HZ) -> None:
        self.path = Path(path)
        if self.path.suffix.lower() != ".mp4":
            raise ValueError(f"MP4 sink path must end in .mp4, got '{self.path}'")
        self._created_file = not self.path.exists()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # FFmpeg opens the file only at the first encoded packet, on the sink's thread: fail here instead,
            # before the call starts, naming the path. Appending writes nothing: a recording already there is
            # only replaced once this one has a frame, not by a run that fails to start.
            self.path.open("ab").close()
        except OSError as e:
            raise ValueError(f"cannot write the MP4 '{self.path}': {e.strerror or e}") from None
        self.size_px = tuple(size_px)
        self.audio_rate_hz = audio_rate_hz
        # flush_packets: each fragment reaches the file when it is cut, not when a 32 kB write buffer fills.
        self._container = av.open(str(self.path), mode="w", format="mp4",
                                  options={"movflags": FRAGMENTED, "flush_packets": "1"})
        rate = Fraction(fps).limit_denominator(1001)
        self._video = self._container.add_stream("libx264", rate=rate)
        self._video.width, self._video.height = self.size_px
        self._video.pix_fmt = "yuv420p"
        self._video.codec_context.time_base = 1 / rate
        # A fragment ends at each key frame: one every FRAGMENT_S bounds what a crash can lose.
        self._video.codec_context.gop_size = max(1, round(FRAGMENT_S * fps))
        self._video.options = {"crf": str(crf), "preset": "veryfast"}
        self._audio = None
        if with_audio:
            self._audio = self._container.add_stream("aac", rate=audio_rate_hz)
            self._audio.layout = "mono"
        self._audio_frame_size = 1024
        # send_audio runs on the event loop, encoding on the sink's thread: the lock guards the hand-over list.
        self._lock = threading.Lock()
        self._pending_audio: list[np.ndarray] = []
        self._audio_carry = np.zeros(0, np.float32)
        self._audio_next_sample = 0
        self._next_frame = 0
        self._last_picture: av.VideoFrame | None = None
        self.frames_written = 0
        self.frames_repeated = 0

    def send_audio(self, chunk: AudioChunk) -> None:
        if self._audio is None:
            return
        if chunk.sample_rate_hz != self.audio_rate_hz:
            raise ValueError(f"MP4 sink takes {self.audio_rate_hz} Hz audio, got {chunk.sample_rate_hz} Hz")
        with self._lock:
            self._pending_audio.append(chunk.samples)

    def send(self, frame: Frame) -> None:
        if frame.size_px != self.size_px:
            raise ValueError(f"frame is {frame.size_px[0]}x{frame.size_px[1]} px; MP4 was opened at "
                             f"{self.size_px[0]}x{self.size_px[1]}")
        if frame.frame_index < self._next_frame:
            return  # out of order or repeated: the file already has a picture for that time
        picture = av.VideoFrame.from_ndarray(frame.rgb, format="rgb24")
        # A gap (frames dropped upstream): hold the previous picture, or this one if the gap is at the start.
        filler = self._last_picture or picture
        while self._next_frame < frame.frame_index:
            self._encode_video(filler)
            self.frames_repeated += 1
        self._encode_video(picture)
        self._last_picture = picture
        self._encode_audio(final=False)

    def _encode_video(self, picture: av.VideoFrame) -> None:
        picture.pts = self._next_frame
        self._container.mux(self._video.encode(picture))
        self._next_frame += 1
        self.frames_written += 1

    def _encode_audio(self, final: bool) -> None:
        if self._audio is None:
            return
        with self._lock:
            pending, self._pending_audio = self._pending_audio, []
        samples = np.concatenate([self._audio_carry, *pending]) if pending else self._audio_carry
        n = self._audio_frame_size
        whole = samples.size if final else samples.size - samples.size % n
        for start in range(0, whole, n):
            block = np.clip(samples[start : start + n], -1.0, 1.0)
            out = av.AudioFrame.from_ndarray(block[None, :], format="fltp", layout="mono")
            out.sample_rate = self.audio_rate_hz
            out.time_base = Fraction(1, self.audio_rate_hz)
            out.pts = self._audio_next_sample
            self._audio_next_sample += block.size
            self._container.mux(self._audio.encode(out))
        self._audio_carry = samples[whole:]

    def close(self) -> None:
        if self.frames_written == 0:
            self._container.close()
            if self._created_file:  # an earlier recording at this path is left as it was
                self.path.unlink(missing_ok=True)
            raise ValueError(f"MP4 sink '{self.path}' received no frames; nothing written")
        try:
            self._container.mux(self._video.encode(None))
            if self._audio is not None:
                self._encode_audio(final=True)
                self._container.mux(self._audio.encode(None))
        finally:
            # Even if flushing the encoders failed, the fragments already written stay a playable file.
            self._container.close()
