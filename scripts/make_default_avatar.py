#!/usr/bin/env python3
"""Train the default avatar shipped as models/avatars/default, and the speech sample `make run` plays without a mic.

    .venv/bin/python scripts/make_default_avatar.py            # synth clip -> relitcam enroll -> models/avatars/default

1. `relitcam synth` makes a seeded talking-head clip of the default portrait (skimage's astronaut photograph, public
   domain) with espeak-ng speech: a clip anyone can regenerate bit for bit, unlike a recorded person.
2. The ordinary enrollment (models/enroll/enroll.py, the same code as `relitcam enroll`) trains on it.
3. The bundle must stay under --max-mb (it is committed to the repository); the script fails otherwise.
4. models/assets/speech_sample.wav: a seeded espeak-ng passage (16 kHz mono) for `make run` on machines without a
   microphone.

Prints and writes (out/default_avatar/summary.json) the time each step took; README quotes the training time.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

AVATARS_DIR = ROOT / "models" / "avatars"
SPEECH_SAMPLE = ROOT / "models" / "assets" / "speech_sample.wav"


def bundle_megabytes(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def write_speech_sample(path: Path, seed: int, sentences: int) -> float:
    """A seeded English passage as 16 kHz mono WAV; returns its length in s."""
    from models.audio import write_wav
    from models.speech.espeak import synthesize
    from models.speech.script import random_script

    clip = synthesize(random_script(seed, sentences), sample_rate_hz=16000)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_wav(path, clip.samples, 16000)
    return clip.samples.size / 16000


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=60.0, help="length of the synthetic enrollment clip")
    p.add_argument("--clip-size", type=int, default=512, help="synthetic clip frame side in px")
    p.add_argument("--fps", type=int, choices=(25, 30), default=30)
    p.add_argument("--seed", type=int, default=7, help="seed of the clip's speech, head motion and blinks")
    p.add_argument("--size", type=int, choices=(256, 512), default=256, help="avatar crop size")
    p.add_argument("--name", default="default")
    p.add_argument("--work", type=Path, default=ROOT / "out" / "default_avatar", help="clip + enrollment work folder")
    p.add_argument("--max-mb", type=float, default=30.0, help="largest bundle allowed in the repository")
    p.add_argument("--resume", action="store_true", help="continue interrupted training from checkpoints")
    p.add_argument("--skip-speech-sample", action="store_true")
    args = p.parse_args(argv)

    from models.enroll.enroll import EnrollOptions, enroll
    from models.synth.clip import SynthConfig, synth_clip

    summary: dict = {"seed": args.seed, "clip_seconds": args.seconds, "clip_size_px": args.clip_size,
                     "fps": args.fps, "size_px": args.size}
    clip_dir = args.work / "clip"
    video = clip_dir / "video.mp4"
    t0 = time.perf_counter()
    if not video.is_file():
        # One extra lighting is the least synth renders; enrollment only reads the clip under its own lighting.
        synth_clip(SynthConfig(out_dir=clip_dir, seconds=args.seconds, size_px=args.clip_size, fps=args.fps,
                               seed=args.seed, lightings=1))
    summary["synth_s"] = round(time.perf_counter() - t0, 1)

    t1 = time.perf_counter()
    result = enroll(EnrollOptions(video=video, name=args.name, out_dir=AVATARS_DIR, size_px=args.size,
                                  resume=args.resume, work_dir=args.work / "enroll"))
    summary["training_s"] = round(time.perf_counter() - t1, 1)
    summary["stage_s"] = result.stage_seconds
    summary["figures"] = result.figures

    size_mb = bundle_megabytes(result.bundle_path)
    summary["bundle_mb"] = round(size_mb, 2)
    if size_mb > args.max_mb:
        shutil.rmtree(result.bundle_path)
        print(f"error: the bundle is {size_mb:.1f} MB, over the {args.max_mb:g} MB allowed in the repository; "
              "removed it (shorten the idle loop or the nets)", file=sys.stderr)
        return 1
    if not args.skip_speech_sample:
        summary["speech_sample_s"] = round(write_speech_sample(SPEECH_SAMPLE, args.seed, 5), 1)

    args.work.mkdir(parents=True, exist_ok=True)
    (args.work / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(f"default avatar: {result.bundle_path} ({size_mb:.1f} MB)")
    print(f"synthetic clip: {summary['synth_s'] / 60:.1f} min; training (enrollment) on this machine: "
          f"{summary['training_s'] / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
