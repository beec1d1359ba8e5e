"""Does a run's accuracy on the cohort predict its accuracy on real scans? (prints JSON)

    python experiments/cohort_vs_real.py SUMMARY_DIR [SUMMARY_DIR ...]

Each SUMMARY_DIR is an ablation summary (`phasejax ablate ... --real DATA --real-labels CSV`
writes one per output folder; e.g. `docs/ablate_quick`) whose `*_runs.csv` files list every
trained run with its internal, external and real scores. A run that several suites share
(the baseline) counts once; runs without a real score (the kvp and robustness suites, which
re-evaluate the baseline on altered inputs) are left out. Per folder, and over all folders
together, the script reports the Spearman rank correlation (with its two-sided p) between a
run's cohort accuracy (internal, external) and the number of real series it names right, and
the range of that number: if the recipes that win on the cohort also won on real scans, the
correlation would be clearly positive.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from scipy import stats


def runs_of(summary: Path) -> dict[str, dict]:
    """run id -> its scores, from every *_runs.csv of one summary folder (real-scored only)."""
    files = sorted(summary.glob("*_runs.csv"))
    if not files:
        raise ValueError(f"{summary}: no *_runs.csv (not an ablation summary folder)")
    out: dict[str, dict] = {}
    for path in files:
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                n = int(row.get("real_n") or 0)
                if n == 0:
                    continue
                out[row["run"]] = {
                    "internal_acc": float(row["internal_acc"]),
                    "external_acc": float(row["external_acc"]),
                    "real_correct": int(row["real_correct"]),
                    "real_n": n,
                }
    return out


def correlate(runs: dict[str, dict]) -> dict:
    real = [r["real_correct"] for r in runs.values()]
    doc: dict = {"runs": len(runs)}
    if not runs:
        return doc
    doc["real_correct"] = {"min": min(real), "max": max(real), "mean": sum(real) / len(real)}
    doc["real_n"] = sorted({r["real_n"] for r in runs.values()})
    if len(runs) >= 3:
        for split in ("internal", "external"):
            res = stats.spearmanr([r[f"{split}_acc"] for r in runs.values()], real)
            doc[f"spearman_{split}_vs_real"] = {
                "rho": round(float(res.statistic), 4),
                "p": round(float(res.pvalue), 4),
            }
    return doc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("summaries", nargs="+", type=Path)
    args = ap.parse_args(argv)
    pooled: dict[str, dict] = {}
    doc: dict = {"folders": {}}
    for folder in args.summaries:
        runs = runs_of(folder)
        doc["folders"][str(folder)] = correlate(runs)
        pooled.update({f"{folder}:{k}": v for k, v in runs.items()})
    doc["all"] = correlate(pooled)
    json.dump(doc, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
