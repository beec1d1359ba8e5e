"""`phasejax ablate`: run ablation suites (phasejax/ablations/*.toml) and summarise them.

phasejax ablate --suite NAME|all [--preset smoke|quick|paper] [--seeds N] --out DIR
                [--dry-run] [--only VALUE]
phasejax ablate summarize DIR
phasejax ablate list
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


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
        "--preset",
        default="quick",
        help="smoke | quick | paper (presets.toml of the suites): base config and budget "
        "(default: quick)",
    )
    p.add_argument(
        "--seeds",
        type=int,
        default=None,
        metavar="N",
        help="seeds 0..N-1 per value (default: the preset's, 3 for quick and paper)",
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
    p.add_argument("--cache", default=None, help="prepared cache (overrides data.cache_dir)")
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
        "--suites-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="a folder of suite files (*.toml) of your own, instead of the shipped ones; its "
        "presets.toml is used when it has one, else the shipped presets",
    )
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
    sub.add_parser("list", help="list the suites and presets")
    p.set_defaults(func=run)


def _split(values: list[str]) -> list[str]:
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


def run(args: argparse.Namespace) -> int:
    from phasejax.ablate.runner import AblationError
    from phasejax.ablate.suites import SuiteError
    from phasejax.data.prepare import LabelsError

    try:
        if args.ablate_action == "summarize":
            return _summarize(args.dir, figures=not args.no_figures, n_bootstrap=args.n_bootstrap)
        if args.ablate_action == "list":
            return _list(args)
        return _run(args)
    except (SuiteError, AblationError, LabelsError, FileNotFoundError) as e:
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
        print(f"preset {name}: config {p.config}, {p.seeds} seed(s). {p.description}")
    return 0


def _summarize(out: Path, *, figures: bool = True, n_bootstrap: int = 1000) -> int:
    from phasejax.ablate.summarize import summarize

    paths = summarize(out, figures=figures, n_bootstrap=n_bootstrap)
    print(f"wrote {len(paths)} files to {out / 'summary'}; index: {out / 'summary' / 'README.md'}")
    return 0


def _run(args: argparse.Namespace) -> int:
    from phasejax.ablate import runner
    from phasejax.ablate.suites import SuiteError, expand, load_presets, load_suites, select_suites

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
    if args.preset not in presets:
        raise SuiteError(f"unknown preset {args.preset!r}; known: {sorted(presets)}")
    preset = presets[args.preset]
    suites = {k: s.for_preset(preset.name) for k, s in load_suites(_dirs(args)).items()}
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
    from phasejax.config_check import choice_problems

    for r in plan.runs:
        problems = choice_problems(r.config)
        if problems:
            raise SuiteError(f"run {r.run_id}: {'; '.join(problems)}")
    rows = runner.plan_rows(plan, args.out)
    counts = {k: sum(r["status"] == k for r in rows) for k in ("done", "partial", "todo")}
    conflicts = sum(r["status"] == "conflict" for r in rows)
    print(
        f"ablate: preset {preset.name} (config {preset.config}), suites "
        f"{', '.join(s.name for s in selected)}, seeds {list(seeds)}, out {args.out}"
    )
    print(runner.format_table(rows))
    print(
        f"{len(rows)} runs: {counts['done']} done, {counts['partial']} partial (resumed), "
        f"{counts['todo']} to do" + (f", {conflicts} CONFLICT" if conflicts else "")
    )
    if args.dry_run:
        return 1 if conflicts else 0

    from phasejax import parallel

    parallel.maybe_initialize_distributed()
    report = runner.execute(plan, args.out, cache_dir=args.cache, real=real)
    print(
        f"ablate: {len(report.ran)} run(s) done now, {len(report.skipped)} already done, "
        f"{len(report.failed)} failed"
    )
    for rid, why in report.failed.items():
        print(f"  FAILED {rid}: {why}", file=sys.stderr)
    if not args.no_summary:
        _summarize(args.out)
    return 1 if report.failed else 0
