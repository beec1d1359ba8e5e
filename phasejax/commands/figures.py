"""`phasejax figures RUN_DIR [--out DIR]`: redraw every figure from results files alone."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "figures",
        help="redraw the figures of a training run or a reproduce directory",
        description=(
            "Redraw every figure (PNG and PDF) from results.json files, without retraining. "
            "RUN_DIR is a training run (holds results.json) or a directory of runs, e.g. a "
            "reproduce directory with strategy_A/ and strategy_B/."
        ),
    )
    p.add_argument("run_dir", metavar="RUN_DIR", type=Path)
    p.add_argument(
        "--out", type=Path, default=None, help="output directory (default: RUN_DIR/figures)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from phasejax.eval.results import ResultsError
    from phasejax.plotting.figures import draw_all, find_runs

    out = args.out or args.run_dir / "figures"
    try:
        runs = find_runs(args.run_dir)
        paths = draw_all(runs, out)
    except (FileNotFoundError, ResultsError) as e:
        print(f"phasejax figures: {e}", file=sys.stderr)
        return 1
    print(f"runs: {', '.join(f'{k} ({v})' for k, v in runs.items())}")
    for path in paths:
        print(path)
    print(f"{len(paths)} files written to {out}")
    return 0
