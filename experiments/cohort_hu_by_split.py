"""How the cohort's series spread over one structure's HU, per split and phase (JSON).

    python experiments/cohort_hu_by_split.py --cohort CACHE [--phases EAP,LAP] \
        [--structure portal_vein] [--bins 40,60,70,80,90,100,120,160]

Each series of the cohort cache CACHE whose label is one of --phases is planned again as the
generator planned it (phasejax.cohort.exam.replan_series), and the structure's mean HU at
120 kVp is read from the kinetics (the HU the labelling rule reads, as in
cohort_accuracy_by_hu.py). Printed: per split (train / val / test / external) and phase, the
series count per HU bin.

What it is for: seeing how densely the training series cover a label threshold. Where few
training series lie near it (the early/late arterial threshold of 80 HU on the portal vein),
a network may put its decision anywhere in the gap and still fit every training series.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cohort_accuracy_by_hu import STRUCTURES  # noqa: E402  the structures the labels read


def bin_counts(hu: dict[tuple[str, str], list[float]], edges: list[float]) -> list[dict[str, Any]]:
    """Per (split, phase): the count per HU bin, the bins half-open ([a, b): a value on an
    edge counts in the bin above it) and open-ended below the first edge and above the last."""
    full = [-np.inf, *edges, np.inf]
    names = [
        f"<{b:g}" if a == -np.inf else (f">={a:g}" if b == np.inf else f"{a:g}-{b:g}")
        for a, b in zip(full[:-1], full[1:])
    ]
    return [
        {
            "split": split,
            "phase": phase,
            "n": len(values),
            "counts": dict(zip(names, np.histogram(values, full)[0].tolist())),
        }
        for (split, phase), values in sorted(hu.items())
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cohort", type=Path, required=True, help="the cohort cache (manifest.csv)")
    ap.add_argument("--phases", default="EAP,LAP")
    ap.add_argument("--structure", default="portal_vein", choices=STRUCTURES)
    ap.add_argument("--bins", default="40,60,70,80,90,100,120,160", help="bin edges in HU")
    args = ap.parse_args(argv)

    from phasejax.cohort.exam import replan_series
    from phasejax.cohort.kinetics import compartment_hu
    from phasejax.cohort.structures import Label

    info = json.loads((args.cohort.parent / "cohort.json").read_text())
    wanted = set(args.phases.split(","))
    with open(args.cohort / "manifest.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["phase"] in wanted]
    label = Label[args.structure.upper()]
    plans: dict[tuple[str, int], Any] = {}
    hu: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        plan, s = replan_series(r, info, plans)
        hu.setdefault((r["split"], r["phase"]), []).append(
            float(compartment_hu(plan.patient, s.t, 120.0)[label])
        )
    edges = [float(x) for x in args.bins.split(",") if x]
    counts = bin_counts(hu, edges)
    json.dump({"cohort": str(args.cohort), "structure": args.structure, "bins": counts},
              sys.stdout, indent=1)  # fmt: skip
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
