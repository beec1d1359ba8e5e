"""`phasejax predict PATH... --model RUN_DIR`: the contrast phase of every CT series under PATHs.

    phasejax predict /archive/study1 /archive/study2 --model runs/paper_B --out phases.csv
    phasejax predict scans/ --model runs/paper_B --json > phases.jsonl
    phasejax predict scans/ --model runs/paper_B --out phases.csv --resume   # after a stop
    phasejax predict scans/ --model runs/paper_B --qc                         # + header QC

Discovers series like `phasejax inspect` (acquisitions sharing a SeriesInstanceUID are
separate series), prepares each exactly as the model was trained (grid, slab, slices,
window and size from the run's config.json), classifies them in fixed-size batches and
writes one row per series (and per skipped file) with the columns of
`phasejax.predict.schema.report_columns`: predicted phase, the probability of every phase, a
confidence flag with its reasons, the header's phase hint with its evidence, whether they
agree, and the loader's problems.

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
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from phasejax.config import Config

DEVICE_PLATFORMS = {"cpu": "cpu", "gpu": "cuda"}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "predict",
        help="classify the contrast phase of every CT series (DICOM/NIfTI) under paths",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or folders to walk")
    p.add_argument("--model", required=True, metavar="RUN_DIR", help="a training run directory")
    p.add_argument(
        "--checkpoint", choices=("best", "latest"), default="best", help="which checkpoint"
    )
    p.add_argument("--out", default=None, help="report file (CSV; JSON lines with --json)")
    p.add_argument("--json", action="store_true", help="JSON lines (to --out, else stdout)")
    p.add_argument("--device", choices=sorted(DEVICE_PLATFORMS), default=None, help="JAX platform")
    p.add_argument(
        "--min-confidence",
        type=float,
        default=0.6,
        help="top probability under which a prediction is flagged low confidence (0.6)",
    )
    p.add_argument("--batch-size", type=int, default=16, help="series per model call (16)")
    p.add_argument("--workers", type=int, default=1, help="decoding processes (default 1)")
    p.add_argument(
        "--resume", action="store_true", help="keep the series already classified in --out"
    )
    p.add_argument("--qc", action="store_true", help="also print `phasejax qc` of the report")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def _usage_error(msg: str) -> int:
    print(f"phasejax predict: {msg}", file=sys.stderr)
    return 2


def select_device(device: str | None) -> str | None:
    """Point JAX at the requested platform before its backend starts; an error text or None."""
    if device is None:
        return None
    platform = DEVICE_PLATFORMS[device]
    os.environ["JAX_PLATFORMS"] = platform
    import jax

    # The environment variable is read when jax is imported; the config covers a jax
    # imported earlier whose backend has not started yet.
    jax.config.update("jax_platforms", platform)
    try:
        backend = jax.default_backend()
    except (RuntimeError, AssertionError) as e:
        # jax raises RuntimeError for a platform that fails to start, and (0.10) trips an
        # assertion when the CUDA plugin is installed but no NVIDIA GPU is visible.
        detail = str(e) or f"{type(e).__name__} while starting the {platform} backend"
        return f"--device {device}: no usable {device} here ({detail})"
    if (backend == "cpu") != (device == "cpu"):
        return f"--device {device}: JAX already runs on {backend} in this process"
    return None


def run(args: argparse.Namespace) -> int:
    missing = [p for p in args.paths if not os.path.exists(p)]
    if missing:
        return _usage_error(f"no such file or folder: {', '.join(missing)}")
    if args.workers < 1 or args.batch_size < 1:
        return _usage_error("--workers and --batch-size must be >= 1")
    if not 0.0 <= args.min_confidence <= 1.0:
        return _usage_error(f"--min-confidence {args.min_confidence} is not in [0, 1]")
    if args.resume and not args.out:
        return _usage_error("--resume needs --out (the report to continue)")
    error = select_device(args.device)
    if error:
        return _usage_error(error)

    from phasejax import parallel
    from phasejax.data.cache import CacheError
    from phasejax.predict.driver import PredictOptions, predict_paths
    from phasejax.predict.inputs import model_grid
    from phasejax.predict.report_io import ReportError, ReportWriter, classified_ids, read_report
    from phasejax.predict.schema import STATUS_OK, report_columns, sort_key
    from phasejax.predict.text import format_summary, format_table
    from phasejax.safe_text import path_text
    from phasejax.train.restore import ModelDirError, load_run

    parallel.enable_compilation_cache()  # the eval step's compilation, paid once per machine
    try:
        run_ = load_run(args.model, args.checkpoint)
    except ModelDirError as e:
        return _usage_error(str(e))
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

    print(
        f"model {args.model}: {cfg.model.strategy} {cfg.model.depth} over "
        f"{','.join(_classes(cfg))}, '{args.checkpoint}' checkpoint step {run_.step}",
        file=sys.stderr,
    )
    writer = None
    if args.out:
        writer = ReportWriter(args.out, columns, "jsonl" if args.json else "csv")
    elif args.json:
        writer = ReportWriter(sys.stdout, columns, "jsonl")
    for r in previous:
        writer.write(r)  # type: ignore[union-attr]
    options = PredictOptions(
        min_confidence=args.min_confidence,
        batch_size=args.batch_size,
        workers=args.workers,
        progress=not args.quiet,
        skip_series=frozenset(classified_ids(previous)),
    )
    try:
        report = predict_paths(
            args.paths,
            cfg,
            run_.model,
            options=options,
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
