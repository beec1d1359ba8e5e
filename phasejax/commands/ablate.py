"""`phasejax ablate`: run ablation suites (phasejax/ablations/*.toml) and summarise them.

phasejax ablate --suite NAME|all [--budget smoke|quick|paper] [--seeds N] --out DIR
                [--dry-run] [--only VALUE] [--shard K/N] [--parallel P]
phasejax ablate summarize DIR
phasejax ablate list
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from phasejax.commands._aliases import add_alias

if TYPE_CHECKING:
    from phasejax.ablate.shard import Shard
    from phasejax.child_devices import Slot


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "ablate",
        help="run ablation suites over seeds and summarise them (resumable)",
        description=(
            "Expand suites x seeds into training runs with stable ids DIR/<suite>/<value>/seed<k>/ "
            "(the shared baseline lives once in DIR/_baseline/seed<k>/), skip finished runs, resume "
            "interrupted ones from their checkpoints, then write tables and figures to "
            "DIR/summary/. Suites are TOML files shipped in phasejax/ablations/ or a --suites-dir "
            "of your own (see ablations/README.md)."
        ),
    )
    p.add_argument(
        "--suite",
        action="append",
        default=[],
        metavar="NAME",
        help="suite name, or 'all' (repeatable; comma-separated lists work too)",
    )
    p.add_argument(
        "--budget",
        default="quick",
        metavar="NAME",
        help="smoke | quick | paper (the entries of the suites' presets.toml): base config, "
        "steps and seeds every run shares (default: quick)",
    )
    p.add_argument(
        "--seeds",
        type=int,
        default=None,
        metavar="N",
        help="seeds 0..N-1 per value (default: the budget's, 3 for quick and paper)",
    )
    p.add_argument("--out", type=Path, default=None, metavar="DIR", help="ablation directory")
    p.add_argument(
        "--dry-run", action="store_true", help="show the plan (run id, overrides, status) only"
    )
    p.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="VALUE",
        help="run only these values of the selected suites (repeatable; comma-separated)",
    )
    p.add_argument(
        "--cache", default=None, metavar="DIR", help="prepared cache (overrides data.cache_dir)"
    )
    p.add_argument(
        "--real",
        action="append",
        default=[],
        metavar="PATH",
        help="a labelled set of real studies (folders or files; repeatable) that every trained "
        "run is also scored on: the 'real' columns of the summary (needs --real-labels)",
    )
    p.add_argument(
        "--real-labels",
        default=None,
        metavar="CSV",
        help="labels CSV of --real, as `phasejax evaluate --labels` (accepted phases per series)",
    )
    p.add_argument("--no-summary", action="store_true", help="do not summarise at the end")
    p.add_argument(
        "--shard",
        default=None,
        metavar="K/N",
        help="run only share K (0..N-1) of N of the plan, into the shared --out: the i-th "
        "training run goes to shard i %% N, an evaluate run with its model. Default: from a "
        "SLURM job array (SLURM_ARRAY_TASK_ID / _COUNT) or a Kubernetes Indexed Job "
        "(JOB_COMPLETION_INDEX with PHASEJAX_SHARD_COUNT), else the whole plan",
    )
    p.add_argument(
        "--parallel",
        type=int,
        default=1,
        metavar="P",
        help="run P plan entries at once on this host: P child processes, each a shard pinned "
        "to its own GPU(s) / TPU chip / CPU cores; logs in DIR/_logs/",
    )
    p.add_argument(
        "--suites-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="a folder of suite files (*.toml) of your own, instead of the shipped ones; its "
        "presets.toml (the budgets) is used when it has one, else the shipped one",
    )
    add_alias(p, "--preset", "--budget")
    sub = p.add_subparsers(
        dest="ablate_action",
        metavar="ACTION",
        required=False,
        help="optional: 'summarize DIR' or 'list'; without one, the suites are run",
    )
    s = sub.add_parser(
        "summarize",
        help="redraw tables and figures of an ablation directory from its results files",
        description="Write DIR/summary/: per suite CSV + Markdown tables, paired McNemar tests "
        "against the baseline, a figure per suite and an overview figure.",
    )
    s.add_argument("dir", type=Path, metavar="DIR")
    s.add_argument("--no-figures", action="store_true")
    s.add_argument(
        "--n-bootstrap",
        type=int,
        default=1000,
        help="patient bootstrap resamples of the paired accuracy difference (0 = none)",
    )
    sub.add_parser("list", help="list the suites and budgets")
    p.set_defaults(func=run)


def _split(values: list[str]) -> list[str]:
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


def run(args: argparse.Namespace) -> int:
    from phasejax.ablate.runner import AblationError
    from phasejax.ablate.shard import ShardError
    from phasejax.ablate.suites import SuiteError
    from phasejax.child_devices import DeviceSlotError
    from phasejax.config import ConfigError
    from phasejax.data.prepare import LabelsError

    try:
        if args.ablate_action == "summarize":
            return _summarize(args.dir, figures=not args.no_figures, n_bootstrap=args.n_bootstrap)
        if args.ablate_action == "list":
            return _list(args)
        return _run(args)
    except (
        SuiteError,
        AblationError,
        ShardError,
        DeviceSlotError,
        LabelsError,
        ConfigError,
        FileNotFoundError,
    ) as e:
        print(f"phasejax ablate: {e}", file=sys.stderr)
        return 2


def _dirs(args: argparse.Namespace) -> Path | None:
    """The suites folder (None: the suites shipped with phasejax)."""
    return args.suites_dir


def _presets_dir(args: argparse.Namespace) -> Path | None:
    from phasejax.ablate.suites import PRESETS_FILE

    if args.suites_dir is not None and (args.suites_dir / PRESETS_FILE).is_file():
        return args.suites_dir
    return None


def _list(args: argparse.Namespace) -> int:
    from phasejax.ablate.suites import load_presets, load_suites

    for name, s in load_suites(_dirs(args)).items():
        print(f"{name} ({s.kind}; axis {s.axis}; baseline {s.baseline})")
        print(f"    values: {', '.join(s.labels)}")
        print(f"    {s.question}")
    print()
    for name, p in load_presets(_presets_dir(args)).items():
        print(f"budget {name}: config {p.config}, {p.seeds} seed(s). {p.description}")
    return 0


def _summarize(out: Path, *, figures: bool = True, n_bootstrap: int = 1000) -> int:
    from phasejax.ablate.summarize import summarize

    paths = summarize(out, figures=figures, n_bootstrap=n_bootstrap)
    print(f"wrote {len(paths)} files to {out / 'summary'}; index: {out / 'summary' / 'README.md'}")
    return 0


def _run(args: argparse.Namespace) -> int:
    from phasejax.ablate import runner
    from phasejax.ablate.suites import (
        SuiteError,
        expand,
        for_budget,
        load_presets,
        load_suites,
        select_suites,
    )

    if args.out is None:
        raise SuiteError("--out DIR is required (or use: phasejax ablate summarize DIR | list)")
    suites_names = _split(args.suite)
    if not suites_names:
        raise SuiteError("--suite NAME|all is required")
    if args.seeds is not None and args.seeds < 1:
        raise SuiteError(f"--seeds must be >= 1, got {args.seeds}")
    if bool(args.real) != bool(args.real_labels):
        raise SuiteError("--real PATH and --real-labels CSV go together")
    real = None
    if args.real:
        from phasejax.eval.labels import read_eval_labels

        for path in [*args.real, args.real_labels]:
            if not Path(path).exists():
                raise SuiteError(f"--real / --real-labels: {path} does not exist")
        read_eval_labels(args.real_labels)  # a bad CSV fails now, not after the first run
        real = runner.RealSet(paths=tuple(args.real), labels=str(args.real_labels))
    presets = load_presets(_presets_dir(args))
    if args.budget not in presets:
        raise SuiteError(f"unknown budget {args.budget!r}; known: {', '.join(sorted(presets))}")
    preset = presets[args.budget]
    suites = for_budget(load_suites(_dirs(args)), preset)
    selected = select_suites(suites, suites_names)
    seeds = range(args.seeds or preset.seeds)
    plan = expand(
        selected,
        preset.base_config(),
        seeds,
        preset=preset.name,
        all_suites=list(suites.values()),
        only=_split(args.only),
    )
    from phasejax.ablate.shard import assign, resolve_shard, shard_plan
    from phasejax.child_devices import device_slots

    shard = resolve_shard(args.shard)
    if args.parallel < 1:
        raise SuiteError(f"--parallel must be >= 1, got {args.parallel}")
    mine = shard_plan(plan, shard)
    rows = runner.plan_rows(mine, args.out)
    if args.parallel > 1:
        # The dry-run table shows which child would run what (as a shard of the whole plan).
        owner = assign(plan.runs, shard.count * args.parallel)
        for r in rows:
            r["shard"] = f"{owner[r['run']]}/{shard.count * args.parallel}"
    counts = {k: sum(r["status"] == k for r in rows) for k in ("done", "partial", "todo")}
    conflicts = sum(r["status"] == "conflict" for r in rows)
    print(
        f"ablate: budget {preset.name} (config {preset.config}), suites "
        f"{', '.join(s.name for s in selected)}, seeds {list(seeds)}, out {args.out}"
        + ("" if shard.is_whole else f"; shard {shard} ({shard.origin}), {len(rows)} of "
           f"{len(plan.runs)} runs")
    )  # fmt: skip
    print(runner.format_table(rows))
    print(
        f"{len(rows)} runs: {counts['done']} done, {counts['partial']} partial (resumed), "
        f"{counts['todo']} to do" + (f", {conflicts} CONFLICT" if conflicts else "")
    )
    if args.dry_run:
        return 1 if conflicts else 0
    if args.parallel > 1:
        slots = device_slots(args.parallel)
        return _run_parallel(args, shard, slots)

    from phasejax import parallel

    parallel.maybe_initialize_distributed()
    report = runner.execute(mine, args.out, cache_dir=args.cache, real=real)
    print(
        f"ablate: {len(report.ran)} run(s) done now, {len(report.skipped)} already done, "
        f"{len(report.failed)} failed"
        + (f", {len(report.waiting)} waiting for another shard" if report.waiting else "")
    )
    for rid, why in report.failed.items():
        print(f"  FAILED {rid}: {why}", file=sys.stderr)
    for rid, why in report.waiting.items():
        print(f"  waiting {rid}: {why}; run this command again once it is", file=sys.stderr)
    if not args.no_summary:
        if shard.is_whole:
            _summarize(args.out)
        else:
            # Other shards are still writing: a summary now would be partial, and several
            # shards summarising at once would overwrite each other's files.
            print(f"shard {shard} done; when every shard is: phasejax ablate summarize {args.out}")
    return 1 if report.failed else 0


def _child_argv(args: argparse.Namespace, shard: str) -> list[str]:
    """The command line of one `--parallel` child: this command for one shard, no summary."""
    from phasejax.child_cli import command

    argv = command("ablate", "--suite", ",".join(args.suite))
    argv += ["--budget", args.budget, "--out", str(args.out), "--shard", shard, "--no-summary"]
    if args.seeds is not None:
        argv += ["--seeds", str(args.seeds)]
    for value in args.only:
        argv += ["--only", value]
    if args.cache is not None:
        argv += ["--cache", str(args.cache)]
    for path in args.real:
        argv += ["--real", str(path)]
    if args.real_labels is not None:
        argv += ["--real-labels", str(args.real_labels)]
    if args.suites_dir is not None:
        argv += ["--suites-dir", str(args.suites_dir)]
    return argv


def _run_parallel(args: argparse.Namespace, shard: Shard, slots: list[Slot]) -> int:
    from phasejax.ablate.shard import LOG_DIR, launch

    shards = [shard.split(len(slots), k) for k in range(len(slots))]
    commands = [_child_argv(args, str(s)) for s in shards]
    children = launch(commands, shards, slots, Path(args.out) / LOG_DIR)
    failed = [c for c in children if c.returncode != 0]
    print(
        f"ablate --parallel {len(slots)}: {len(children) - len(failed)} of {len(children)} "
        "shard(s) finished cleanly" + (f"; see {failed[0].log}" if failed else "")
    )
    if not args.no_summary:
        if shard.is_whole:
            _summarize(args.out)
        else:
            print(f"shard {shard} done; when every shard is: phasejax ablate summarize {args.out}")
    return 1 if failed else 0
