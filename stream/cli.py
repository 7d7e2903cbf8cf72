"""The `relitcam` command line: one subcommand per job, each defined in the module that owns the job.

The table below names every subcommand and its module; a module is imported only when its subcommand runs, so
`relitcam lights list` does not pay for torch or aiortc. Each module exposes `main(argv: list[str]) -> int` with its
own argparse parser (prog "relitcam NAME").
"""

from __future__ import annotations

import importlib
import sys

# subcommand -> (module with main(argv), one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "lights": ("stream.commands.lights", "list lighting presets; make L.json from an HDR map or a photo"),
    "relight": ("stream.commands.relight", "render albedo + normal maps under a lighting; preset contact sheet"),
    "synth": ("stream.commands.synth", "render a synthetic talking head with exact ground truth"),
    "eval": ("stream.commands.eval", "score a rendered video against ground truth (PSNR, SSIM, flicker, lip sync)"),
    "run": ("stream.commands.run", "the live avatar: mic/file/browser audio -> virtual camera, web page, MP4, virtual mic"),
    "enroll": ("stream.commands.enroll", "train an avatar from a video of yourself"),
}


class UserError(Exception):
    """An error caused by the user's input: printed as one clear line, exit code 2, no traceback."""


def _usage() -> str:
    width = max(len(n) for n in SUBCOMMANDS)
    lines = ["usage: relitcam COMMAND [options]   (relitcam COMMAND --help for each)", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in SUBCOMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"relitcam: unknown command {name!r}; valid commands: {', '.join(SUBCOMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(SUBCOMMANDS[name][0])
    try:
        return int(module.main(rest) or 0)
    except (UserError, ValueError, FileNotFoundError, PermissionError, IsADirectoryError) as e:
        # Input problems carry a specific message; show it without a traceback.
        print(f"relitcam {name}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
