"""`phasejax predict PATH... --model RUN_DIR`: the contrast phase of every CT series under PATHs.

    phasejax predict /archive/study1 /archive/study2 --model runs/paper_B --out phases.csv
    phasejax predict scans/ --model runs/paper_B --json > phases.jsonl
    phasejax predict scans/ --model runs/paper_B --out phases.csv --resume   # after a stop
    phasejax predict scans/ --model runs/paper_B --qc                         # + header QC
    phasejax predict scans/ --model runs/B_seed0 --ensemble runs/B_seed1      # mean of runs

Discovers series like `phasejax inspect` (acquisitions sharing a SeriesInstanceUID are
separate series), prepares each exactly as the model was trained (grid, slab, slices,
window and size from the run's config.json), classifies them in fixed-size batches and
writes one row per series (and per skipped file) with the columns of
`phasejax.predict.schema.report_columns`: the call (the image network weighed by the aorta's
and kidneys' HU read from anatomy) and the probability of every phase, a confidence flag with
its reasons, the network's own phase and probabilities, the header's phase hint with its
evidence, the anatomy's readings and call, whether each agrees, and the loader's problems.

Output: --out FILE writes CSV (JSON lines with --json), streamed row by row and sorted
at the end; --json alone streams JSON lines to stdout; neither prints a table. The
summary (counts per phase, header disagreements, failures) goes to stdout, or stderr
when stdout carries JSON.

Exit status: 0 when every readable series was classified (skipped files such as scouts
or non-DICOM files do not count), 1 when some series failed, 2 on bad usage: a missing
path, a missing or incomplete model directory, an unknown label set, a device that is
not there.
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from phasejax.commands import _trained_model as trained

if TYPE_CHECKING:
    from phasejax.config import Config


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "predict",
        help="classify the contrast phase of every CT series (DICOM/NIfTI) under paths",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or folders to walk")
    p.add_argument("--model", required=True, metavar="RUN_DIR", help="a training run directory")
    p.add_argument("--out", default=None, help="report file (CSV; JSON lines with --json)")
    p.add_argument("--json", action="store_true", help="JSON lines (to --out, else stdout)")
    trained.add_model_options(p)
    p.add_argument(
        "--resume", action="store_true", help="keep the series already classified in --out"
    )
    p.add_argument("--qc", action="store_true", help="also print `phasejax qc` of the report")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


_usage_error = functools.partial(trained.usage_error, "predict")


def run(args: argparse.Namespace) -> int:
    error = trained.check_inputs(args, args.paths)
    if error:
        return _usage_error(error)
    if args.resume and not args.out:
        return _usage_error("--resume needs --out (the report to continue)")
    run_ = trained.load_model(args, args.model)
    if isinstance(run_, str):
        return _usage_error(run_)

    from phasejax.data.cache import CacheError
    from phasejax.predict.driver import predict_paths
    from phasejax.predict.inputs import model_grid
    from phasejax.predict.report_io import ReportError, ReportWriter, classified_ids, read_report
    from phasejax.predict.schema import STATUS_OK, report_columns, sort_key
    from phasejax.predict.text import format_summary, format_table
    from phasejax.safe_text import path_text

    cfg = run_.cfg
    try:
        model_grid(cfg)  # the training cache's cache.json, read now rather than mid-run
    except CacheError as e:
        return _usage_error(f"--model {args.model}: the grid the model was trained on: {e}")
    columns = report_columns(_classes(cfg))
    json_stdout = args.json and not args.out
    log = sys.stderr if json_stdout else sys.stdout

    previous: list[dict] = []
    if args.resume and Path(args.out).exists():
        try:
            old = read_report(args.out)
        except ReportError as e:
            return _usage_error(f"--resume: {e}")
        old_probs = [c for c in old[0] if c.startswith("p_")]
        new_probs = [c for c in columns if c.startswith("p_")]
        if old_probs != new_probs:
            return _usage_error(
                f"--resume: {args.out} has phases {old_probs}, the model {new_probs}: "
                "a report of another model; use a new --out"
            )
        previous = [r for r in old if r.get("status") == STATUS_OK]

    print(trained.model_line(args.model, run_, ",".join(_classes(cfg))), file=sys.stderr)
    ensemble = trained.load_ensemble(args, run_, args.batch_size)
    if isinstance(ensemble, str):
        return _usage_error(ensemble)
    members, classifier = ensemble
    for run_dir, member in zip(args.ensemble, members, strict=True):
        print("  + " + trained.model_line(run_dir, member, ",".join(_classes(member.cfg))),
              file=sys.stderr)  # fmt: skip
    writer = None
    if args.out:
        writer = ReportWriter(args.out, columns, "jsonl" if args.json else "csv")
    elif args.json:
        writer = ReportWriter(sys.stdout, columns, "jsonl")
    for r in previous:
        writer.write(r)  # type: ignore[union-attr]
    options = trained.predict_options(args, skip_series=frozenset(classified_ids(previous)))
    try:
        report = predict_paths(
            args.paths,
            cfg,
            run_.model,
            options=options,
            classifier=classifier,
            on_row=writer.write if writer is not None else None,
        )
    except BaseException:
        if writer is not None:
            writer.finish()  # what was streamed stays a valid report for --resume
        raise
    rows = previous + report.rows
    if writer is not None:
        writer.finish(rows)
    else:
        print(format_table(sorted(rows, key=sort_key), report.classes))
        print()
    print(f"input grid: {report.grid} ({report.grid_source})", file=sys.stderr)
    print(format_summary(report), file=log)
    if args.out:
        print(f"report: {path_text(args.out)}", file=log)
    if args.qc:
        from phasejax.qc import check_rows, format_findings

        print(format_findings(check_rows(rows), rows), file=log)
    return report.exit_status


def _classes(cfg: Config) -> tuple[str, ...]:
    from phasejax.phases import label_set

    return label_set(cfg.data.label_set).codes
