"""`phasejax reproduce`: the paper's strategy A vs B experiment, with report and figures."""

from __future__ import annotations

import argparse
import sys

from phasejax.commands._aliases import add_alias


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reproduce",
        help="train one-step and two-step models and compare them as in Liu et al. 2025",
        description=(
            "Build (or reuse) the synthetic cohort, train strategy A (one step) and B (two "
            "steps) with the same budget, evaluate on the internal test set and the external "
            "sites, and write OUT/report.md, OUT/results.json and OUT/figures/. Resumable: "
            "rerun the same command after an interruption."
        ),
    )
    p.add_argument(
        "--config",
        default="quick",
        choices=["debug", "quick", "paper"],  # phasejax.reproduce.CONFIGS, without importing it
        help="the named config both strategies train with (default: quick)",
    )
    p.add_argument(
        "--cache",
        default=None,
        metavar="DIR",
        help="a prepared cache (phasejax prepare) instead of the config's synthetic cohort",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, e.g. train.steps=100 (repeatable)")  # fmt: skip
    p.add_argument(
        "--members",
        type=int,
        default=1,
        metavar="N",
        help="networks per strategy (seeds train.seed, +1, ...), their probabilities "
        "averaged; the same for A and B (default: 1)",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=None,
        metavar="J",
        help="trainings at once, each in a child process with its own accelerator (default: "
        "one per GPU or TPU chip, at most the 2 x members + 1 trainings; 1 on a CPU host, "
        "where it barely pays); 1 trains them in turn in this process. The runs are the same "
        "either way",
    )
    p.add_argument("--no-figures", action="store_true", help="skip the figures")
    add_alias(p, "--preset", "--config")
    add_alias(p, "--data", "--cache")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from phasejax.reproduce import check_layout, reproduce, reproduce_config

    try:
        # Every enumerated setting is checked here (phasejax.config's Literals); the
        # strategies then only change model.strategy, to another allowed value.
        reproduce_config(args.config, args.overrides)
    except (FileNotFoundError, ValueError) as e:
        return _usage_error(str(e))
    if args.members < 1:
        return _usage_error(f"--members must be at least 1, got {args.members}")
    if args.jobs is not None and args.jobs < 1:
        return _usage_error(f"--jobs must be at least 1, got {args.jobs}")
    try:
        check_layout(args.out, args.members)
    except ValueError as e:
        return _usage_error(str(e))
    from phasejax.child_devices import DeviceSlotError, device_slots
    from phasejax.train.children import auto_jobs

    trainings = 2 * args.members + 1  # A's and B's members, and full5
    jobs = args.jobs or auto_jobs(trainings)
    if jobs > 1:
        # More children than accelerators: said before the cohort is generated, not after.
        try:
            device_slots(min(jobs, trainings), pin_cpus=False)
        except DeviceSlotError as e:
            return _usage_error(f"--jobs {jobs}: {e}")
    summary = reproduce(
        args.out,
        preset=args.config,
        data=args.cache,
        overrides=args.overrides,
        figures=not args.no_figures,
        members=args.members,
        jobs=jobs,
    )
    st = summary["strategies"]
    for key in ("A", "B"):
        for split in ("test", "external"):
            acc = st[key]["splits"].get(split, {}).get("accuracy")
            if acc:
                print(f"strategy {key} {split:8s} accuracy {100 * acc['value']:.1f}% "
                      f"({acc['k']}/{acc['n']})")  # fmt: skip
    print(f"report: {args.out}/report.md")
    return 0


def _usage_error(msg: str) -> int:
    print(f"phasejax reproduce: {msg}", file=sys.stderr)
    return 2
