"""Runs trained on different cohorts, scored on the same series of one cohort (prints JSON).

    python experiments/cross_cohort.py --cohort CACHE --baseline RUN [RUN ...] \
        --value RUN [RUN ...] [--splits test external] [--value-checkpoint latest]

A value that changes the cohort (e.g. `quick_defaults` m_paper_cohort: the paper-sized
cohort) is scored by `phasejax ablate` on that cohort's own test and external series, so
its summary cannot pair it with the baseline. Both groups' networks classify the
test and external series of CACHE here instead (the input made as in training's
evaluation, `phasejax.data.pipeline.preprocess`, each run's own data config), and are
compared on the same series: per run the accuracy, per seed pair (baseline i against value
i) and for the seed ensembles (probabilities averaged over a group's runs) the exact McNemar
test and the difference value - baseline with its Newcombe interval
(`phasejax.eval.stats.compare_paired`). The cohorts' exams are drawn in the preset's own
namespace, so a network trained on one never saw a patient of the other.

--value-checkpoint latest scores the value runs' last checkpoint instead of the one
validation picked ("best"): given the same runs as --baseline, it asks what the checkpoint
choice changes, on the same series.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np


def _series(cache: Path, splits: list[str], classes: list[str]) -> list[dict[str, str]]:
    with open(cache / "manifest.csv", newline="") as f:
        return [r for r in csv.DictReader(f) if r["split"] in splits and r["phase"] in classes]


def _probs(
    run_dir: Path,
    cache: Path,
    rows: list[dict[str, str]],
    inputs: dict[Any, list[Any]],
    which: str = "best",
) -> tuple[list[str], Any]:
    """(the run's classes, its probabilities [N, K] over `rows`). `inputs` keeps the network
    inputs per data config, so runs that preprocess alike share them."""
    from phasejax.data.pipeline import row_input
    from phasejax.infer import load_classifier
    from phasejax.phases import label_set

    run, clf = load_classifier(run_dir, which, batch_size=32)
    classes = [p.value for p in label_set(run.cfg.data.label_set).phases]
    if run.cfg.data not in inputs:
        inputs[run.cfg.data] = [row_input(cache, r, run.cfg.data) for r in rows]
    return classes, clf.classify_all(inputs[run.cfg.data])


def _compare(y: Any, a: Any, b: Any, patients: Any) -> dict[str, Any]:
    from phasejax.eval.stats import compare_paired

    c = compare_paired(y, a.argmax(1), b.argmax(1), patients)
    return {
        "baseline": c["accuracy_a"]["value"],
        "value": c["accuracy_b"]["value"],
        "b": c["b"],  # baseline right, value wrong
        "c": c["c"],  # baseline wrong, value right
        "mcnemar_p": c["mcnemar_p"],
        "difference": c["difference"]["value"],
        "difference_ci": c["difference"]["ci"],
        "difference_ci_patients": c.get("difference_bootstrap", {}).get("ci"),
    }


def compare_groups(
    y: np.ndarray,
    split: np.ndarray,
    patients: np.ndarray,
    groups: dict[str, list[np.ndarray]],
    splits: list[str],
) -> dict[str, Any]:
    """Per split: each run's accuracy, seed pair i (baseline i vs value i) and the seed
    ensembles (mean probabilities) compared on the same series; groups holds the
    probabilities [N, K] of the "baseline" and "value" runs over the series y [N]."""
    out: dict[str, Any] = {}
    for sp in splits:
        sel = split == sp
        res: dict[str, Any] = {"n": int(sel.sum())}
        for group, probs in groups.items():
            res[f"{group}_accuracy"] = [float(np.mean(p.argmax(1)[sel] == y[sel])) for p in probs]
        res["per_seed"] = [
            _compare(y[sel], a[sel], b[sel], patients[sel])
            for a, b in zip(groups["baseline"], groups["value"], strict=False)
        ]
        ens = {g: np.mean(np.stack(p), axis=0) for g, p in groups.items()}
        res["ensemble"] = _compare(y[sel], ens["baseline"][sel], ens["value"][sel], patients[sel])
        out[sp] = res
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cohort", type=Path, required=True, help="cohort cache (manifest.csv)")
    ap.add_argument("--baseline", type=Path, nargs="+", required=True)
    ap.add_argument("--value", type=Path, nargs="+", required=True)
    ap.add_argument("--splits", nargs="+", default=["test", "external"])
    ap.add_argument(
        "--value-checkpoint",
        choices=("best", "latest"),
        default="best",
        help="the value runs' checkpoint: validation's pick (best) or the last one (latest)",
    )
    args = ap.parse_args(argv)
    from phasejax.phases import label_set

    classes = [p.value for p in label_set("paper4").phases]
    rows = _series(args.cohort, args.splits, classes)
    groups: dict[str, list[Any]] = {"baseline": [], "value": []}
    inputs: dict[Any, list[Any]] = {}
    for group, runs, which in (
        ("baseline", args.baseline, "best"),
        ("value", args.value, args.value_checkpoint),
    ):
        for run in runs:
            got, probs = _probs(run, args.cohort, rows, inputs, which)
            if got != classes:
                raise SystemExit(f"{run}: label set {got}, expected the 4 phases {classes}")
            groups[group].append(probs)
    out: dict[str, Any] = {
        "cohort": str(args.cohort),
        "baseline": [str(r) for r in args.baseline],
        "value": [str(r) for r in args.value],
        "value_checkpoint": args.value_checkpoint,
        "splits": compare_groups(
            np.array([classes.index(r["phase"]) for r in rows]),
            np.array([r["split"] for r in rows]),
            np.array([r["patient_id"] for r in rows]),
            groups,
            args.splits,
        ),
    }
    json.dump(out, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
