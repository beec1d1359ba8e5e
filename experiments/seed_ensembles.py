"""Seed ensembles of every size-k subset of trained runs, from their results files (JSON).

    python experiments/seed_ensembles.py --group m_multi_3000=RUN0,RUN1,RUN2 \
        --group m_steps1500=RUN0,RUN1,RUN2 [--size 2] > ensembles.json

For every group (the seeds of one recipe) and every k-subset of its runs, the subset's
ensemble averages the runs' class probabilities per series (as the ablation summaries'
seed ensembles do) and is scored on the test and external splits of results.json; single
runs are the subsets of size 1. Printed per group and split: each subset's accuracy and
their mean, SD and minimum. What it is for: whether k networks trained for 1/k of the steps
are a better single draw (a higher mean, a narrower spread) than one network at the full
step count, at the same training cost, before a job is changed to train them.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np

SPLITS = ("test", "external")


def subset_accuracies(runs: list[str], split: str, size: int) -> dict[str, float]:
    """Accuracy of the ensemble of every `size`-subset of `runs` (all on the same series)."""
    from phasejax.ablate.summarize import ensemble, split_eval

    evals = []
    for r in runs:
        ev = split_eval(json.loads((Path(r) / "results.json").read_text()), split)
        if ev is None:
            raise ValueError(f"{r}: no labelled {split} predictions")
        if evals and not np.array_equal(ev.series_ids, evals[0].series_ids):
            raise ValueError(f"{r}: its {split} series are not those of {runs[0]}")
        evals.append(ev)
    out = {}
    for subset in itertools.combinations(range(len(runs)), size):
        name = "+".join(Path(runs[i]).name for i in subset)
        out[name] = round(ensemble([evals[i] for i in subset]).accuracy, 4)
    return out


def summarise(accs: dict[str, float]) -> dict[str, Any]:
    v = np.array(list(accs.values()))
    return {
        "subsets": accs,
        "mean": round(float(v.mean()), 4),
        "sd": round(float(v.std(ddof=1)), 4) if len(v) > 1 else 0.0,
        "min": round(float(v.min()), 4),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--group", action="append", required=True, help="LABEL=RUN,RUN,...")
    ap.add_argument("--size", type=int, default=2, help="runs per ensemble (default 2)")
    args = ap.parse_args(argv)
    out: dict[str, Any] = {"size": args.size, "groups": {}}
    for group in args.group:
        label, _, runs_text = group.partition("=")
        runs = [r for r in runs_text.split(",") if r]
        if not label or len(runs) < args.size:
            ap.error(f"--group {group!r}: LABEL=RUN,... with at least --size runs")
        out["groups"][label] = {
            split: {
                "single": summarise(subset_accuracies(runs, split, 1)),
                "ensembles": summarise(subset_accuracies(runs, split, args.size)),
            }
            for split in SPLITS
        }
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
