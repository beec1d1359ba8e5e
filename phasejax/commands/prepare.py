"""`phasejax prepare --root DIR --labels CSV --out CACHE`: real CT -> prepared cache.

Decodes every labelled series (DICOM or NIfTI) under --root once, resamples it to
the cache grid (--cache-spacing-z mm between slices, --cache-size pixels in plane,
as `phasejax cohort generate` names them), and writes
the cache and its manifest with patient-level train/val/test splits (seeded by
--split-seed; a `split` column in the CSV fixes a patient's split, e.g.
"external"). Reruns skip finished series, so an interrupted run resumes. The
labels CSV format is described in phasejax.data.prepare.

Exit status: 0 when every selected series is in the cache, 1 when some could not
be prepared (they are listed) or nothing was selected, 2 on bad usage or an
unusable labels CSV.
"""

from __future__ import annotations

import argparse
import sys

from phasejax.commands._aliases import add_alias
from phasejax.config import DataConfig


def register(subparsers: argparse._SubParsersAction) -> None:
    d = DataConfig()
    p = subparsers.add_parser(
        "prepare",
        help="decode real CT under a root into a prepared cache with patient-level splits",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    p.add_argument("--root", required=True, help="folder with DICOM series and/or NIfTI files")
    p.add_argument("--labels", default=None, help="labels CSV (series_id/path/series_uid, phase)")
    p.add_argument("--out", required=True, help="cache directory (created or resumed)")
    p.add_argument(
        "--cache-spacing-z", type=float, default=d.cache_spacing_z, help="mm between slices"
    )
    p.add_argument("--cache-size", type=int, default=d.cache_size, help="in-plane pixels per side")
    add_alias(p, "--spacing-z", "--cache-spacing-z")
    add_alias(p, "--size", "--cache-size")
    p.add_argument("--workers", type=int, default=1, help="decoding processes (default 1)")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the patient-level split")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--test-fraction", type=float, default=0.1)
    p.add_argument(
        "--include-unlabelled",
        action="store_true",
        help="also prepare series not in the labels CSV (phase left empty)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def _err(msg: str) -> int:
    print(f"phasejax prepare: {msg}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    from phasejax.data.cache import CacheError, CacheSpec
    from phasejax.data.prepare import LabelsError, prepare

    if args.cache_spacing_z <= 0 or args.cache_size < 8:
        return _err("--cache-spacing-z must be > 0 and --cache-size >= 8")
    if args.workers < 1:
        return _err("--workers must be >= 1")
    if not (0 <= args.val_fraction < 1 and 0 <= args.test_fraction < 1) or (
        args.val_fraction + args.test_fraction >= 1
    ):
        return _err("--val-fraction and --test-fraction must be in [0, 1) and sum below 1")
    try:
        report = prepare(
            args.root,
            args.labels,
            args.out,
            spec=CacheSpec(spacing_z=args.cache_spacing_z, size=args.cache_size),
            workers=args.workers,
            split_seed=args.split_seed,
            val_fraction=args.val_fraction,
            test_fraction=args.test_fraction,
            include_unlabelled=args.include_unlabelled,
            progress=not args.quiet,
            log=lambda m: print(m, file=sys.stderr),
        )
    except (LabelsError, FileNotFoundError, CacheError) as e:
        return _err(str(e))

    print(
        f"cache {report.out}: {report.prepared} prepared, {report.reused} already cached"
        f" ({report.refreshed} rows updated), {len(report.failed_series)} failed; splits "
        + (", ".join(f"{k} {v}" for k, v in sorted(report.splits.items())) or "-")
    )
    if report.unlabelled:
        what = "included unlabelled" if args.include_unlabelled else "not in the labels, skipped"
        print(f"{report.unlabelled} series {what}")
    for row in report.unmatched_labels:
        ident = row.series_id or row.path or row.series_uid
        print(f"labels line {row.line}: {ident} matches no series found under --root")
    if report.skipped:
        reasons: dict[str, int] = {}
        for s in report.skipped:
            reasons[s.reason] = reasons.get(s.reason, 0) + 1
        print(
            f"{len(report.skipped)} files/series skipped ("
            + ", ".join(f"{k}: {v}" for k, v in sorted(reasons.items()))
            + "); `phasejax inspect` lists them"
        )
    if report.stale:
        print(
            f"{len(report.stale)} cache entries are not selected by this run and were kept "
            "(use a new --out to drop them)"
        )
    for s in report.failed:
        print(f"FAILED {s}", file=sys.stderr)
    print(f"manifest: {report.manifest}")
    return 0 if report.ok else 1
