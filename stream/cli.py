"""The `relitcam` command line: one subcommand per job, each defined in the module that owns the job.

Subcommand modules expose `register(subparsers)`; they are listed here so `relitcam --help` shows them all. Each
module's import stays lazy (inside its handler) so `relitcam lights list` does not pay for torch or aiortc.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# module path -> it defines register(subparsers) adding one or more subcommands
SUBCOMMAND_MODULES = [
    "stream.commands.lights",
    "stream.commands.relight",
]


class UserError(Exception):
    """An error caused by the user's input: printed as one clear line, exit code 2, no traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="relitcam", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except UserError as e:
        print(f"relitcam {args.command}: error: {e}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError, OSError) as e:
        # Input problems raised by library code carry a specific message; show it without a traceback.
        print(f"relitcam {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
