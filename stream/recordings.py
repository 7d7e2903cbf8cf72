"""Videos recorded on the web page for enrollment: received, checked as enrollment would, kept.

The page records camera and microphone with the browser's MediaRecorder (WebM; MP4 in Safari) and POSTs the file to
/recording?name=NAME. It is streamed to disk through a partial file (a recording of several minutes never sits in
memory), then checked: a file that does not decode, has no sound or is silent, or is shorter than enrollment
accepts is removed and the reason given; no face or a second face in its first seconds is a warning (the person may
have stepped in late), and the file is kept. Kept files are NAME-DATE-TIME.webm in the recordings folder; the reply
names the enroll command for them.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.enroll.enroll import check_avatar_name
from models.media import iter_video_frames, probe_video, read_audio

RECORDINGS_DIR = Path(os.environ.get("XDG_DATA_HOME", "~/.local/share")) / "relitcam" / "recordings"
MAX_RECORDING_BYTES = 1024 * 1024 * 1024  # 5 minutes of browser video is ~100-200 MB; 1 GB is a runaway upload
MIN_SECONDS = 20.0  # what enrollment needs (models.enroll.prepare.PrepareParams.min_usable_s)
SILENCE_DBFS = -55.0  # quieter than this over the whole file is a muted or missing microphone
FACE_CHECK_S = 10.0  # how much of the start is looked at for a face
SUFFIXES = {"video/webm": ".webm", "video/mp4": ".mp4", "video/x-matroska": ".mkv"}


@dataclass(frozen=True)
class Recording:
    path: Path
    name: str
    seconds: float
    fps: float
    size_px: tuple[int, int]
    warnings: list[str] = field(default_factory=list)

    def reply(self) -> dict:
        return {"type": "recording", "file": str(self.path), "name": self.name, "seconds": round(self.seconds, 1),
                "fps": self.fps, "size": list(self.size_px), "warnings": self.warnings,
                "command": f"relitcam enroll {self.path} --name {self.name}"}


def check_name(name: str) -> str:
    """An avatar name typed on the page: as enrollment takes it, and also no hidden file and not overlong (it
    becomes a file name in the recordings folder)."""
    check_avatar_name(name)
    if name.startswith(".") or len(name) > 64:
        raise ValueError(f"avatar name must be a plain folder name (no '/', not starting with '.'), got {name!r}")
    return name


def recording_path(folder: Path, name: str, content_type: str, now: float | None = None) -> Path:
    suffix = SUFFIXES.get(content_type.split(";")[0].strip().lower())
    if suffix is None:
        raise ValueError(f"a recording must be video/webm or video/mp4, got {content_type or 'no content type'!r}")
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    return Path(folder).expanduser() / f"{check_name(name)}-{stamp}{suffix}"


def audio_level_dbfs(samples: np.ndarray) -> float:
    """RMS level of the loudest second (a long pause must not make a good recording look silent)."""
    if samples.size == 0:
        return float("-inf")
    seconds = max(1, samples.size // 16000)
    per_second = np.array_split(samples.astype(np.float64), seconds)
    rms = max(float(np.sqrt(np.mean(chunk**2))) for chunk in per_second)
    return 20.0 * np.log10(rms) if rms > 0 else float("-inf")


def count_faces(path: Path, seconds: float = FACE_CHECK_S, detector=None) -> list[int]:
    """Faces found in one frame a second over the first `seconds`."""
    if detector is None:
        from models.face.detector import FaceDetector

        detector = FaceDetector()
    counts, next_s, start_s = [], 0.0, None
    for frame in iter_video_frames(path):
        start_s = frame.pts_s if start_s is None else start_s
        t = frame.pts_s - start_s
        if t > seconds:
            break
        if t >= next_s:
            counts.append(len(detector.detect(frame.image)))
            next_s += 1.0
    return counts


def check_recording(path: Path, name: str, min_seconds: float = MIN_SECONDS, detector=None) -> Recording:
    """ValueError (the reason enrollment would refuse it) or the Recording with its warnings."""
    try:
        info = probe_video(path)
    except ValueError as e:
        raise ValueError(f"the recording cannot be read ({e}); record again") from None
    if not info.has_audio:
        raise ValueError("the recording has no sound: allow the microphone and record again "
                         "(enrollment learns the lips from your voice)")
    if info.duration_s < min_seconds:
        raise ValueError(f"the recording is {info.duration_s:.1f} s long; enrollment needs at least {min_seconds:g} s "
                         "of you speaking")
    audio = read_audio(path)
    level = audio_level_dbfs(audio if audio is not None else np.zeros(0, np.float32))
    if level < SILENCE_DBFS:
        raise ValueError(f"the recording is silent (loudest second {level:.0f} dBFS): check that the right "
                         "microphone is chosen and not muted, and record again")
    warnings = []
    faces = count_faces(path, detector=detector)
    if faces and max(faces) == 0:
        warnings.append(f"no face found in the first {FACE_CHECK_S:g} s: enrollment needs your face in view, "
                        "facing the camera")
    elif sum(n > 1 for n in faces) > len(faces) // 3:
        warnings.append("more than one face in the first seconds: enrollment needs you alone in the picture")
    return Recording(path=path, name=name, seconds=info.duration_s, fps=info.fps,
                     size_px=(info.width_px, info.height_px), warnings=warnings)


class PartialFile:
    """Writes to NAME.partial and becomes NAME only when kept: an interrupted upload never looks like a recording."""

    def __init__(self, path: Path, max_bytes: int = MAX_RECORDING_BYTES) -> None:
        self.path = path
        self.partial = path.with_name(path.name + ".partial")
        self.max_bytes = max_bytes
        self.size = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.partial, "wb")

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.max_bytes:
            raise ValueError(f"the recording is larger than {self.max_bytes // (1024 * 1024)} MB; record less than "
                             "5 minutes")
        self._file.write(chunk)

    def close(self) -> None:
        self._file.close()

    def keep(self) -> Path:
        self.close()
        os.replace(self.partial, self.path)
        return self.path

    def discard(self) -> None:
        self.close()
        self.partial.unlink(missing_ok=True)
