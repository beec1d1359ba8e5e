"""Two trained recipes on the same labelled real set, paired, as JSON.

    python experiments/sim2real_compare.py BASE VARIANT [--suite sim2real] [--value off]

BASE and VARIANT are `phasejax ablate ... --real DATA --real-labels CSV` output folders
(or the folder of one value, holding seed*/real.json). A cohort change cannot be a value of
one suite (the cohort is code), so two cohorts are compared by running the same suite value
on each and pairing the results here: per recipe, the accuracy of every seed and of the seed
ensemble (mean probabilities) and the real log score (NLL: -ln of the probability given to
the accepted phases, floored at 1e-3; phasejax.ablate.summarize); paired on the ensembles,
exact McNemar on right/wrong and a Wilcoxon signed-rank test on the per-series NLL; and
every series' accepted phases, per-seed calls, ensemble call and NLL under both.

On a dozen real series right/wrong moves in steps of 8 points; the NLL also counts how sure
each call was, so it separates recipes that accuracy cannot. Both are measurements on the
real validation set: never train on it or tune to it series by series.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from phasejax.ablate.runner import REAL_FILE
from phasejax.ablate.summarize import SplitEval, align, ensemble, paired, paired_nll, split_eval


def seed_evals(root: Path, suite: str, value: str) -> tuple[dict[str, SplitEval], dict[str, str]]:
    """(seed folder name -> the real split of that run, sorted by seed; series id -> name)."""
    base = root / suite / value if (root / suite / value).is_dir() else root
    out, names = {}, {}
    for path in sorted(base.glob(f"seed*/{REAL_FILE}")):
        results = json.loads(path.read_text())
        ev = split_eval(results, "real")
        if ev is not None:
            out[path.parent.name] = ev
            for p in results["splits"]["real"]["predictions"]:
                names[p["series_id"]] = p.get("name", p["series_id"])
    if not out:
        raise SystemExit(f"no {REAL_FILE} with a labelled real split under {base}")
    return out, names


def describe(evals: dict[str, SplitEval]) -> dict[str, Any]:
    ens = ensemble(list(evals.values()))
    return {
        "seeds": {
            s: {"correct": e.correct, "n": e.n, "nll": round(e.nll, 4)} for s, e in evals.items()
        },
        "ensemble": {"correct": ens.correct, "n": ens.n, "nll": round(ens.nll, 4)},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("base", type=Path)
    ap.add_argument("variant", type=Path)
    ap.add_argument("--suite", default="sim2real")
    ap.add_argument("--value", default="off")
    args = ap.parse_args(argv)

    a, names = seed_evals(args.base, args.suite, args.value)
    b, _ = seed_evals(args.variant, args.suite, args.value)
    ea, eb, note = align(ensemble(list(a.values())), ensemble(list(b.values())))
    mc = paired(ea, eb, n_bootstrap=0)
    wx = paired_nll(ea, eb)

    def calls(evals: dict[str, SplitEval], sid: str) -> list[str]:
        return [e.classes[int(e.pred[list(e.series_ids).index(sid)])] for e in evals.values()]

    series = []
    for i, sid in enumerate(ea.series_ids):
        series.append(
            {
                "series": names.get(sid, sid),
                "accepts": [c for c, yes in zip(ea.classes, ea.accepts[i]) if yes],
                "base": {"seeds": calls(a, sid), "ensemble": ea.classes[int(ea.pred[i])],
                         "right": bool(ea.right[i]), "nll": round(float(ea.series_nll[i]), 3)},
                "variant": {"seeds": calls(b, sid), "ensemble": eb.classes[int(eb.pred[i])],
                            "right": bool(eb.right[i]), "nll": round(float(eb.series_nll[i]), 3)},
            }
        )  # fmt: skip
    out = {
        "base": {"path": str(args.base), **describe(a)},
        "variant": {"path": str(args.variant), **describe(b)},
        "paired_ensembles": {
            "n": mc["n"],
            "base_right_variant_wrong": mc["b"],
            "base_wrong_variant_right": mc["c"],
            "mcnemar_p": mc["p"],
            "nll_diff": round(wx["diff"], 4),
            "nll_wilcoxon_p": wx["p"],
            "note": note,
        },
        "series": series,
    }
    json.dump(out, sys.stdout, indent=1, allow_nan=True)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
