"""Copy a video with its audio delayed (positive ms) or advanced (negative ms): the lip-sync meter's test input.

    python scripts/shift_audio.py IN.mp4 OUT.mp4 --ms 100

Delaying pads the start with silence and keeps the length; advancing drops the first samples and pads the end.
"""

from __future__ import annotations

import argparse

import numpy as np

from models.media import AUDIO_RATE_HZ, iter_video_frames, probe_video, read_audio, write_mp4


def shift_samples(audio: np.ndarray, shift_ms: float, rate_hz: int = AUDIO_RATE_HZ) -> np.ndarray:
    """`audio` moved later by `shift_ms` (earlier if negative), same length, silence filling the gap."""
    n = int(round(shift_ms * rate_hz / 1000.0))
    out = np.zeros_like(audio)
    if n >= 0:
        out[n:] = audio[: len(audio) - n]
    else:
        out[: len(audio) + n] = audio[-n:]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("--ms", type=float, required=True, help="delay of the audio in ms (negative: earlier)")
    args = parser.parse_args(argv)
    info = probe_video(args.input)
    audio = read_audio(args.input)
    if audio is None:
        raise SystemExit(f"{args.input} has no audio track to shift")
    frames = (f.image for f in iter_video_frames(args.input))
    write_mp4(args.output, frames, info.fps, audio=shift_samples(audio, args.ms), audio_rate=AUDIO_RATE_HZ)
    print(f"wrote {args.output}: audio shifted by {args.ms:+.0f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
