"""`phasejax evaluate RUN_DIR DATA... --labels CSV --out DIR`: score a model on labelled real data.

    phasejax evaluate runs/quick/strategy_B ../shared/data/validation \\
        --labels ../shared/data/validation/labels.csv --out runs/quick/validation

Every series under DATA is classified exactly as `phasejax predict` does (with
`--ensemble RUN_DIR`, repeatable: by the mean of the runs' probabilities); the labels CSV
(format: `phasejax.eval.labels`; a series is named as for `phasejax prepare`, with `file`
as an alias of `path`, and an optional `accepts` column such as `EAP|LAP`) says which
predicted phases count as right. Writes to --out:

    series.csv           one row per labelled series (columns: phasejax.evaluate)
    summary.json         accuracy with 95% Wilson intervals (all, contrast-enhanced only),
                         per-reference sensitivity, confusion counts, missing / unlabelled
    confusion.png/.pdf   reference labels x model classes, accepted cells outlined
    contact_sheets/NAME.png, contact_sheet.png
                         the slices and windows the network received, per series and all
                         series one row each; title green when right, red when wrong

and prints the accuracy and a per-series table. Series under DATA that the CSV does not
name are listed as unlabelled, CSV rows that name nothing as missing; neither is scored.

Exit status: 0 when it ran, 1 when some labelled series could not be read (the others are
still scored), 2 on bad usage: a missing path, a bad labels CSV (the message names the
file and line), a CSV that names no series under DATA, an unusable model directory.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys

from phasejax.commands import _trained_model as trained


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="score a trained model on labelled real CT (accuracy, confusion, contact sheets)",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a training run directory")
    p.add_argument("data", nargs="+", metavar="DATA", help="files or folders to walk")
    p.add_argument("--labels", required=True, metavar="CSV", help="the labels CSV")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    trained.add_model_options(p)
    p.add_argument("--no-sheets", action="store_true", help="skip the contact sheets")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


_usage_error = functools.partial(trained.usage_error, "evaluate")


def run(args: argparse.Namespace) -> int:
    error = trained.check_inputs(args, [args.run_dir, *args.data])
    if error:
        return _usage_error(error)

    from phasejax.data.prepare import LabelsError
    from phasejax.eval.labels import read_eval_labels, search_folders

    # The CSV is checked before the model loads: a typo costs no compilation.
    try:
        labels = read_eval_labels(args.labels)
    except LabelsError as e:
        return _usage_error(str(e))
    if not labels:
        return _usage_error(f"{args.labels}: no labelled rows")
    run_ = trained.load_model(args, args.run_dir)
    if isinstance(run_, str):
        return _usage_error(run_)

    from phasejax.evaluate import (
        evaluate_paths,
        evaluation_summary,
        format_evaluation,
        write_evaluation,
    )

    cfg = run_.cfg
    print(trained.model_line(args.run_dir, run_, cfg.data.label_set), file=sys.stderr)
    ensemble = trained.load_ensemble(args, run_, args.batch_size)
    if isinstance(ensemble, str):
        return _usage_error(ensemble)
    members, classifier = ensemble
    for run_dir, member in zip(args.ensemble, members, strict=True):
        print("  + " + trained.model_line(run_dir, member, member.cfg.data.label_set),
              file=sys.stderr)  # fmt: skip
    options = trained.predict_options(args)
    try:
        ev = evaluate_paths(
            args.data,
            labels,
            cfg,
            run_.model,
            folders=search_folders(args.labels, args.data),
            options=options,
            classifier=classifier,
        )
    except LabelsError as e:
        return _usage_error(f"{args.labels}: {e}")
    if not ev.rows:
        return _usage_error(
            f"no series under {' '.join(args.data)} matches a row of {args.labels} "
            f"({len(ev.missing)} rows, {len(ev.unlabelled)} series found)"
        )
    summary = evaluation_summary(
        ev,
        model={
            "run_dir": os.path.abspath(args.run_dir),
            "checkpoint": args.checkpoint,
            "step": run_.step,
            "strategy": cfg.model.strategy,
            "depth": cfg.model.depth,
            "ensemble": [os.path.abspath(d) for d in args.ensemble],
        },
        labels_csv=os.path.abspath(args.labels),
    )
    written = write_evaluation(ev, summary, args.out, sheets=not args.no_sheets)
    print(format_evaluation(ev, summary))
    print(f"wrote {', '.join(str(p) for p in written.values())}", file=sys.stderr)
    return ev.exit_status
