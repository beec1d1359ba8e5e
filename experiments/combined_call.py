"""The combined call against the image network and the anatomy reader alone, over runs (JSON).

    python experiments/sim2real.py RUN --shared ../shared/data > RUN.json    # per run
    python experiments/combined_call.py RUN.json... [--rates 0 0.05 0.1333 0.25 0.5]

Each input is the output of `experiments/sim2real.py` for one trained run (its series carry
the network's probabilities and the aorta and kidney readings). Per run, set (validation,
examples) and in total it counts the series that each reader names right: the image network
alone, the anatomy alone, and `predict`'s call (the network's posterior times the anatomy's
likelihood, `phasejax.cohort.anatomy_reference.combine_with_network`) at the default
`MISREAD_RATE` and at each of `--rates` (how much the call doubts the anatomy: 1 is the
network alone), so that the default is seen not to be the one value that happens to work.
The paired comparison of call and network over all runs and series is an exact McNemar test
(b = network right and call wrong, c = network wrong and call right); the series of one set
recur in every run, so read its p-value as descriptive, not as independent evidence.

    python experiments/combined_call.py RUN... --cohort CACHE [--splits test external]

instead scores trained runs (their folders) on their own cohort test splits: the network's
probabilities from RUN/results.json, the anatomy read from the cohort cache's volumes as
predict reads a real series (image-based slab, the series' kVp): whether the call that helps
on real scans costs anything on the phantom, where the readers read worse (README).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from phasejax.cohort.anatomy_reference import (
    MISREAD_RATE,
    call_accepted,
    call_from_anatomy,
    combine_with_network,
)
from phasejax.eval.stats import mcnemar_exact
from phasejax.predict.schema import reference_kvp

SETS = ("validation", "examples")


def _num(x: Any) -> float | None:
    return None if x in (None, "") else float(x)


def score(doc: dict[str, Any], rates: list[float]) -> dict[str, Any]:
    """Per set: series, right by network, anatomy and the call at each rate; per series the
    three verdicts at the default rate."""
    out: dict[str, Any] = {}
    for name in SETS:
        part = doc.get(name) or {}
        series = part.get("series") or []
        if not series:
            continue
        classes = [k.removeprefix("network_p_") for k in series[0] if k.startswith("network_p_")]
        counts = {"n": 0, "network": 0, "anatomy": 0, "call": {str(r): 0 for r in rates}}
        verdicts = []
        for s in series:
            if s.get("network_phase") in (None, ""):  # failed: not scored
                continue
            accepts = set(str(s["accepts"]).split("|"))
            net = np.array([float(s[f"network_p_{c}"]) for c in classes])
            anatomy = call_from_anatomy(
                _num(s["aorta_hu"]),
                _num(s["kidney_cortex_hu"]),
                _num(s["kidney_medulla_hu"]),
                kvp=reference_kvp({"KVP": str(s.get("kvp") or "")}),
            )
            counts["n"] += 1
            net_ok = classes[int(np.argmax(net))] in accepts
            counts["network"] += net_ok
            counts["anatomy"] += call_accepted(anatomy.call, accepts)
            for r in rates:
                call = classes[int(np.argmax(combine_with_network(net, classes, anatomy, r)))]
                counts["call"][str(r)] += call in accepts
            default = classes[int(np.argmax(combine_with_network(net, classes, anatomy)))]
            verdicts.append(
                {
                    "name": s["name"],
                    "network": bool(net_ok),
                    "anatomy": call_accepted(anatomy.call, accepts),
                    "call": default in accepts,
                }
            )
        out[name] = {**counts, "series": verdicts}
    return out


def cohort(run: Path, cache: Path, splits: list[str], rates: list[float]) -> dict[str, Any]:
    """The same three readers on the run's own cohort test series: the network's
    probabilities from its results.json, the anatomy read from the cached volumes (the
    image-based slab, as predict finds it; the series' kVp)."""
    from real_anatomy import hu_of, read_all
    from tqdm import tqdm

    from phasejax.data.cache import load_volume, read_manifest
    from phasejax.data.prepare import find_slab

    results = json.loads((run / "results.json").read_text())
    classes = results["classes"]
    manifest = {r["series_id"]: r for r in read_manifest(cache)}
    out: dict[str, Any] = {"run": str(run), "cache": str(cache)}
    for split in splits:
        preds = results["splits"][split]["predictions"]
        counts = {"n": 0, "network": 0, "anatomy": 0, "anatomy_read": 0}
        call_right = {str(r): 0 for r in rates}
        per_phase: dict[str, dict[str, int]] = {}
        b = c = 0
        for pr in tqdm(preds, desc=f"{run.name} {split}", unit="series"):
            m = manifest[pr["series_id"]]
            vol = load_volume(cache, pr["series_id"])
            px = float(m["spacing_xy"])
            slab = find_slab(vol, float(m["spacing_z"]), px)
            got = hu_of(*read_all(vol, slab.z_lo, slab.z_hi, slab.landmarks, px, slab.anatomy))
            anatomy = call_from_anatomy(
                got["aorta"], got["cortex"], got["medulla"], kvp=reference_kvp({"KVP": m["kvp"]})
            )
            net = np.asarray(pr["probs"], dtype=np.float64)
            label = pr["label"]
            net_ok = classes[int(np.argmax(net))] == label
            call_ok = classes[int(np.argmax(combine_with_network(net, classes, anatomy)))] == label
            counts["n"] += 1
            counts["network"] += net_ok
            counts["anatomy_read"] += bool(anatomy.call)
            counts["anatomy"] += call_accepted(anatomy.call, {label})
            for r in rates:
                got = classes[int(np.argmax(combine_with_network(net, classes, anatomy, r)))]
                call_right[str(r)] += got == label
            b += net_ok and not call_ok
            c += call_ok and not net_ok
            ph = per_phase.setdefault(label, {"n": 0, "network": 0, "call": 0})
            ph["n"] += 1
            ph["network"] += net_ok
            ph["call"] += call_ok
        out[split] = {
            **counts,
            "call": call_right,
            "call_vs_network": {"b": b, "c": c, "p": mcnemar_exact(b, c)},
            "per_phase": per_phase,
        }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", type=Path, nargs="+", help="sim2real.py JSON, one per run")
    ap.add_argument("--rates", type=float, nargs="+", default=[0.0, 0.05, 0.25, 0.5, 1.0])
    ap.add_argument("--cohort", type=Path, default=None, help="a cohort cache: score RUNS on it")
    ap.add_argument("--splits", nargs="+", default=["test", "external"])
    args = ap.parse_args(argv)
    rates = sorted({*args.rates, MISREAD_RATE})
    if args.cohort is not None:
        doc = {str(r): cohort(r, args.cohort, args.splits, rates) for r in args.runs}
        json.dump({"misread_rate": MISREAD_RATE, "rates": rates, "runs": doc}, sys.stdout, indent=1)
        print()
        return 0
    runs = {str(p): score(json.loads(p.read_text()), rates) for p in args.runs}
    total: dict[str, Any] = {}
    for name in SETS:
        per = [r[name] for r in runs.values() if name in r]
        if not per:
            continue
        b = sum(v["network"] and not v["call"] for r in per for v in r["series"])
        c = sum(v["call"] and not v["network"] for r in per for v in r["series"])
        total[name] = {
            "runs": len(per),
            "n": sum(r["n"] for r in per),
            "network": sum(r["network"] for r in per),
            "anatomy": sum(r["anatomy"] for r in per),
            "call": {str(x): sum(r["call"][str(x)] for r in per) for x in rates},
            "call_vs_network": {"b": b, "c": c, "p": mcnemar_exact(b, c)},
        }
    out = {"misread_rate": MISREAD_RATE, "rates": rates, "total": total, "runs": runs}
    json.dump(out, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
