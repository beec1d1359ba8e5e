"""The `phasejax` console script: one entry point, one subcommand per module.

Each module in `phasejax.commands` defines `register(subparsers)` that adds its
parser with `set_defaults(func=run)`; `run(args) -> int` is the exit status.
Heavy imports (jax, flax) happen inside `run`, so `phasejax --help` stays fast.
Exit status 2 is reserved for bad usage (argparse's convention).
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from collections.abc import Sequence

from phasejax import __version__, commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="phasejax",
        description="Contrast-phase identification of abdominal CT (JAX/Flax).",
    )
    parser.add_argument("--version", action="version", version=f"phasejax {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"phasejax.commands.{info.name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `phasejax inspect --json | head`: the reader left; that is not an error of ours.
        # Point stdout at devnull so the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
