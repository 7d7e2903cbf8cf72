"""How much memory does MP4 muxing hold as a recording grows? Plain vs fragmented MP4, muxer alone.

    .venv/bin/python scripts/mux_memory.py --minutes 30 --out out/mux_memory.json

Muxes --minutes of 30 fps H.264 (tiny 64x48 pictures, so the encoder costs nothing) and 16 kHz AAC into a plain MP4
and into a fragmented one like stream/mp4_sink.py writes, each in its own process, and reads RSS every 5 media minutes.
The index a plain MP4 keeps until it is closed grows with the packets written, whatever their size.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FPS = 30
AUDIO_HZ = 16000
SAMPLE_EVERY_MIN = 5


def mux(fragmented: bool, minutes: float) -> list[float]:
    """RSS in MB after 0, 5, 10, ... media minutes of muxing."""
    import av
    import numpy as np

    from stream.mp4_sink import FRAGMENTED

    options = {"movflags": FRAGMENTED, "flush_packets": "1"} if fragmented else {}
    picture = np.random.default_rng(0).integers(0, 255, (48, 64, 3), np.uint8)
    silence = np.zeros((1, 1024), np.float32)
    rss_mb = []
    with tempfile.TemporaryDirectory() as tmp:
        container = av.open(str(Path(tmp) / "m.mp4"), "w", format="mp4", options=options)
        video = container.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        video.codec_context.gop_size = 2 * FPS
        video.options = {"crf": "20", "preset": "veryfast"}
        audio = container.add_stream("aac", rate=AUDIO_HZ)
        audio.layout = "mono"
        next_sample = 0
        frames = int(minutes * 60 * FPS)
        for k in range(frames + 1):
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts = k
            container.mux(video.encode(frame))
            while next_sample < (k + 1) * AUDIO_HZ // FPS:
                block = av.AudioFrame.from_ndarray(silence, format="fltp", layout="mono")
                block.sample_rate, block.pts = AUDIO_HZ, next_sample
                next_sample += silence.shape[1]
                container.mux(audio.encode(block))
            if k % (SAMPLE_EVERY_MIN * 60 * FPS) == 0:
                with open("/proc/self/statm") as f:
                    rss_mb.append(int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20)
        container.mux(video.encode(None))
        container.close()
    return rss_mb


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--out", type=Path, default=Path("out/mux_memory.json"))
    p.add_argument("--one", choices=("plain", "fragmented"), help=argparse.SUPPRESS)  # the child process
    args = p.parse_args(argv)
    if args.minutes < 2 * SAMPLE_EVERY_MIN:
        raise SystemExit(f"--minutes must be >= {2 * SAMPLE_EVERY_MIN}: the growth is read from {SAMPLE_EVERY_MIN} "
                         "minutes on, over at least one more sample")
    if args.one:
        print(json.dumps(mux(args.one == "fragmented", args.minutes)))
        return 0
    report = {"minutes": args.minutes, "fps": FPS, "audio_hz": AUDIO_HZ, "sample_every_min": SAMPLE_EVERY_MIN,
              "machine": {"platform": platform.platform(), "python": platform.python_version()}}
    for kind in ("plain", "fragmented"):
        done = subprocess.run([sys.executable, __file__, "--one", kind, "--minutes", str(args.minutes)],
                              cwd=ROOT, capture_output=True, text=True, check=True)
        rss = json.loads(done.stdout)
        # From the first reading after 5 minutes: the encoders' own buffers are allocated by then.
        report[kind] = {"rss_mb": rss, "growth_mb_per_min": (rss[-1] - rss[1]) / ((len(rss) - 2) * SAMPLE_EVERY_MIN)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k]["growth_mb_per_min"] for k in ("plain", "fragmented")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
