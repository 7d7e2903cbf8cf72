"""relitcam enroll: train an avatar from a video of yourself (one person, speaking, at least 20 s usable).

Stages run in a work folder (~/.cache/relitcam/enroll/NAME, or $RELITCAM_ENROLL_DIR/NAME); finished stages are
reused when you run the command again, and --resume continues a training stage from its last checkpoint."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from stream.cli import UserError


def build_parser() -> argparse.ArgumentParser:
    from models.enroll.enroll import DEFAULT_AVATARS_DIR

    p = argparse.ArgumentParser(prog="relitcam enroll", description=__doc__)
    p.add_argument("video", type=Path, help="talking-head video with sound (mp4, mov, mkv, webm, ...)")
    p.add_argument("--name", required=True, help="avatar name (a plain folder name)")
    p.add_argument("--out", type=Path, default=DEFAULT_AVATARS_DIR,
                   help=f"folder that receives the bundle folder NAME (default {DEFAULT_AVATARS_DIR})")
    p.add_argument("--size", type=int, choices=(256, 512), default=256, help="avatar crop size in px")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where training runs")
    p.add_argument("--resume", action="store_true", help="continue training stages from their checkpoints")
    p.add_argument("--train-fraction", type=float, default=0.8,
                   help="share of the video used for training; the rest measures quality (default 0.8)")
    p.add_argument("--work-dir", type=Path, help="work folder (default ~/.cache/relitcam/enroll/NAME)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv: list[str]) -> int:
    from models.enroll.enroll import EnrollOptions, enroll

    args = build_parser().parse_args(argv)
    try:
        options = EnrollOptions(video=args.video, name=args.name, out_dir=args.out, size_px=args.size,
                                device=args.device, resume=args.resume, train_fraction=args.train_fraction,
                                work_dir=args.work_dir, progress=not args.quiet)
    except ValueError as e:
        raise UserError(str(e)) from None
    try:
        result = enroll(options)
    except KeyboardInterrupt:
        print("relitcam enroll: interrupted; run the same command with --resume to continue", file=sys.stderr)
        return 130
    print(f"avatar bundle: {result.bundle_path}")
    print(f"total time: {result.total_s / 60:.1f} min ({', '.join(f'{k} {v:.0f} s' for k, v in result.stage_seconds.items())})")
    for stage, figures in result.figures.items():
        print(f"  {stage}: " + ", ".join(f"{k} {v}" for k, v in figures.items()))
    from models.enroll.enroll import enrolled_avatars

    by_name = enrolled_avatars().get(args.name) == result.bundle_path
    print(f"run it: relitcam run --avatar {args.name if by_name else result.bundle_path}")
    return 0
