"""`phasejax cohort`: generate and validate the built-in synthetic multiphase cohort.

phasejax cohort generate --size {tiny,quick,medium,paper} --out DIR [--seed S]
                         [--format dicom|cache|both] [--workers N] [--label-noise R]
phasejax cohort validate DIR [--out DIR]
"""

from __future__ import annotations

import argparse
import sys
import typing
from pathlib import Path

from phasejax.commands._aliases import add_alias
from phasejax.config import CohortSize, DelayedRule

# cohort.preset's values (phasejax.cohort.generate.PRESETS has one entry per name), read
# from the config's Literal: parsing the command line should not import the renderer.
SIZES: tuple[str, ...] = typing.get_args(CohortSize)
DELAYED_RULE_CHOICES: tuple[str, ...] = typing.get_args(DelayedRule)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "cohort",
        help="generate / validate the synthetic multi-site abdominal CT cohort",
        description=(
            "A procedural abdominal phantom whose enhancement follows contrast kinetics, scanned "
            "by one internal and five external simulated hospitals."
        ),
    )
    sub = p.add_subparsers(dest="cohort_action", metavar="ACTION")
    g = sub.add_parser(
        "generate",
        help="write DICOM series, labels.csv, organ masks and/or the training cache",
        description=(
            "Generate a cohort into DIR (resumable: rerun the same command after an "
            "interruption). Sizes: tiny: tests; quick: fits a 2-core CPU pipeline; medium: 3x "
            "quick's internal exams; paper: 1175 internal exams (96 test) + 215 external exams "
            "from 5 sites."
        ),
    )
    g.add_argument(
        "--size",
        choices=SIZES,
        default="tiny",
        help="cohort size, as the config's cohort.preset (default: tiny)",
    )
    add_alias(g, "--preset", "--size")
    g.add_argument("--out", type=Path, required=True, metavar="DIR")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument(
        "--format",
        dest="fmt",
        choices=("dicom", "cache", "both"),
        default="dicom",
        help="dicom: DICOM + organ masks; cache: training cache only (fast); both",
    )
    g.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    g.add_argument(
        "--label-noise",
        type=float,
        default=0.0,
        metavar="R",
        help="share of series whose label is flipped to the neighbouring phase (EAP<->LAP, "
        "PVP<->DP), as readers disagree (default 0)",
    )
    g.add_argument(
        "--delayed-rule",
        choices=DELAYED_RULE_CHOICES,
        default=DELAYED_RULE_CHOICES[0],
        help="what makes a series delayed (DP): iodine in the renal collecting system "
        "(excretion, the default), or that or the equilibrium image (the default up to cohort v8)",
    )
    g.add_argument(
        "--extra-arterial",
        type=int,
        default=0,
        metavar="N",
        help="N arterial series added to each training exam, scanned when the portal vein is "
        "within 30 HU of the EAP/LAP threshold (default 0; other splits unchanged)",
    )
    g.add_argument(
        "--extra-train-exams",
        type=int,
        default=0,
        metavar="N",
        help="N internal training exams added to the preset's (default 0; the test, "
        "validation and external exams are unchanged)",
    )
    g.add_argument("--cache-spacing-z", type=float, default=5.0, help="cache slice spacing, mm")
    g.add_argument("--cache-size", type=int, default=256, help="cache in-plane matrix")
    g.add_argument("--no-progress", action="store_true")
    g.set_defaults(func=run_generate)

    v = sub.add_parser(
        "validate",
        help="ROI median HU table, time-attenuation curves and per-site montages",
        description=(
            "Write DIR/validation/ (or --out): hu_table.csv/.md (median HU per structure and "
            "phase, marked against the DESIGN.md reference ranges), curves.png/.pdf and "
            "montage_<site>.png/.pdf."
        ),
    )
    v.add_argument("dir", type=Path, metavar="DIR")
    v.add_argument("--out", type=Path, default=None, metavar="DIR")
    v.set_defaults(func=run_validate)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def run_generate(args: argparse.Namespace) -> int:
    from phasejax.cohort.generate import CohortError, generate
    from phasejax.data.cache import CacheSpec

    try:
        out = generate(
            args.size,
            args.out,
            seed=args.seed,
            fmt=args.fmt,
            workers=args.workers,
            cache_spec=CacheSpec(spacing_z=args.cache_spacing_z, size=args.cache_size),
            label_noise=args.label_noise,
            delayed_rule=args.delayed_rule,
            extra_arterial=args.extra_arterial,
            extra_train_exams=args.extra_train_exams,
            progress=not args.no_progress,
        )
    except (CohortError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"cohort written to {out} (labels: {out / 'labels.csv'})")
    return 0


def run_validate(args: argparse.Namespace) -> int:
    from phasejax.cohort.validate import ValidationError, validate

    try:
        report = validate(args.dir, out=args.out)
    except ValidationError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(report.summary())
    return 0
