"""A run's accuracy on the cohort's test series, binned by the true HU of one structure (JSON).

    python experiments/cohort_accuracy_by_hu.py RUN_DIR --cohort CACHE \
        [--phases PVP,DP] [--structure aorta] [--bins 100,120,140,170]

For every test and external series of the cohort cache CACHE whose label is one of --phases,
the exam is planned again exactly as the cohort generator planned it
(phasejax.cohort.exam.plan_exam: the same patient and scan time), the structure's mean HU at
120 kVp is read from the kinetics (phasejax.cohort.kinetics.compartment_hu; the HU the
labelling rule reads), and the run classifies the series' network input. Printed: per phase
and HU bin, the series count, the accuracy and the predicted classes; and per series its HU of
the rule's structures (aorta, portal vein - liver, medulla - cortex, collecting system) with
the prediction.

What it is for: telling a model that cannot read a structure's HU from one that reads it but
fails on something else. If the cohort's series with the HU profile of a misread real series
(e.g. a portal-venous aorta of ~110 HU) are classified right, the real error is not in that
HU but in what the real image looks like.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

STRUCTURES = (
    "aorta",
    "portal_vein",
    "liver",
    "kidney_cortex",
    "kidney_medulla",
    "kidney_collecting",
)


def binned(
    phases: list[str], hu: np.ndarray, predicted: list[str], edges: list[float]
) -> list[dict[str, Any]]:
    """Per phase and HU bin [edges[i], edges[i+1]) (open-ended at both ends): n, accuracy and
    the predicted classes."""
    bounds = [-np.inf, *edges, np.inf]
    out = []
    for phase in sorted(set(phases)):
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            sel = [i for i, p in enumerate(phases) if p == phase and lo <= hu[i] < hi]
            if not sel:
                continue
            out.append(
                {
                    "phase": phase,
                    "hu_from": None if np.isinf(lo) else lo,
                    "hu_to": None if np.isinf(hi) else hi,
                    "n": len(sel),
                    "accuracy": float(np.mean([predicted[i] == phase for i in sel])),
                    "predicted": dict(Counter(predicted[i] for i in sel).most_common()),
                }
            )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--cohort", type=Path, required=True, help="the cohort cache (manifest.csv)")
    ap.add_argument("--phases", default="PVP,DP")
    ap.add_argument("--structure", default="aorta", choices=STRUCTURES)
    ap.add_argument("--bins", default="100,120,140,170", help="bin edges in HU")
    args = ap.parse_args(argv)

    from phasejax.cohort.exam import replan_series
    from phasejax.cohort.kinetics import compartment_hu
    from phasejax.cohort.structures import Label
    from phasejax.data.pipeline import row_input
    from phasejax.infer import load_classifier
    from phasejax.phases import label_set

    run, clf = load_classifier(args.run_dir, batch_size=32)
    classes = [p.value for p in label_set(run.cfg.data.label_set).phases]
    info = json.loads((args.cohort.parent / "cohort.json").read_text())
    wanted = set(args.phases.split(","))
    with open(args.cohort / "manifest.csv", newline="") as f:
        rows = [
            r
            for r in csv.DictReader(f)
            if r["split"] in ("test", "external") and r["phase"] in wanted
        ]
    plans: dict[tuple[str, int], Any] = {}
    series, images = [], []
    for r in rows:
        plan, s = replan_series(r, info, plans)
        hu = compartment_hu(plan.patient, s.t, 120.0)
        series.append(
            {
                "series_id": r["series_id"],
                "phase": r["phase"],
                "hu": round(hu[Label[args.structure.upper()]], 1),
                "aorta": round(hu[Label.AORTA], 1),
                "portal_minus_liver": round(hu[Label.PORTAL_VEIN] - hu[Label.LIVER], 1),
                "medulla_minus_cortex": round(
                    hu[Label.KIDNEY_MEDULLA] - hu[Label.KIDNEY_CORTEX], 1
                ),
                "collecting": round(hu[Label.KIDNEY_COLLECTING], 1),
            }
        )
        images.append(row_input(args.cohort, r, run.cfg.data))
    probs = clf.classify_all(images) if images else np.zeros((0, len(classes)))
    predicted = [classes[int(i)] for i in probs.argmax(1)]
    for s, p in zip(series, predicted):
        s["predicted"] = p
    edges = [float(x) for x in args.bins.split(",") if x]
    out = {
        "run_dir": str(args.run_dir),
        "cohort": str(args.cohort),
        "structure": args.structure,
        "bins": binned(
            [s["phase"] for s in series], np.array([s["hu"] for s in series]), predicted, edges
        ),
        "series": series,
    }
    json.dump(out, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
