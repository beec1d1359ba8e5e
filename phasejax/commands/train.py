"""`phasejax train --config NAME --out DIR [--set a.b=value ...]`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from phasejax.commands._aliases import add_alias


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a classifier (resumable; multi-host aware)",
        description=(
            "Train the classifier a config describes. The run directory (--out) gets "
            "config.json, env.json, "
            "metrics.jsonl, checkpoints/ and results.json; running the same command again "
            "resumes from the latest checkpoint, or returns at once when the run is finished. "
            "On several hosts, start the same command on each (JAX_COORDINATOR_ADDRESS, "
            "JAX_NUM_PROCESSES, JAX_PROCESS_ID, or a SLURM / Open MPI launch)."
        ),
    )
    p.add_argument(
        "--config",
        required=True,
        help="a named config (phasejax/configs/NAME.py: debug, smoke, quick, paper), a .py file "
        "with get_config() or a run's config.json",
    )
    p.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="run directory (created; resumed if present); required",
    )
    add_alias(p, "--workdir", "--out")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override, e.g. --set train.steps=200 (repeatable)",
    )
    p.add_argument(
        "--cache", default=None, metavar="DIR", help="prepared cache (overrides data.cache_dir)"
    )
    p.add_argument(
        "--stop-at",
        type=int,
        default=None,
        help="leave after this step with a checkpoint (time-sliced jobs); rerun to continue",
    )
    p.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved config (after --set) as JSON and exit without training",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from phasejax.config import load_config

    try:
        # Every enumerated setting is checked here (phasejax.config's Literals).
        cfg = load_config(args.config, args.overrides)
    except (FileNotFoundError, ValueError) as e:
        print(f"phasejax train: {e}", file=sys.stderr)
        return 2
    if args.print_config:
        print(cfg.to_json())
        return 0
    if args.out is None:
        print("phasejax train: --out DIR is required", file=sys.stderr)
        return 2

    from phasejax import parallel

    # Before anything touches a JAX backend: the device list is fixed at first use,
    # and the compilation cache is consulted from the first compilation on.
    parallel.enable_compilation_cache()
    parallel.maybe_initialize_distributed()

    from phasejax.train.checkpoint import CheckpointError
    from phasejax.train.loop import train
    from phasejax.train.workdir import WorkdirError

    try:
        results = train(cfg, args.out, cache_dir=args.cache, stop_at=args.stop_at)
    except (WorkdirError, FileNotFoundError, CheckpointError) as e:
        print(f"phasejax train: {e}", file=sys.stderr)
        return 1
    if not parallel.is_main_process():
        return 0
    if "splits" not in results:
        steps = results.get("train", {}).get("steps")
        print(f"stopped at step {steps}; run the same command to continue")
        return 0
    from phasejax.train import workdir as wd
    from phasejax.train.summary import run_summary

    log = wd.MetricsLog(Path(args.out) / wd.METRICS_FILE).read()
    print(run_summary(args.out, results, log))
    return 0
