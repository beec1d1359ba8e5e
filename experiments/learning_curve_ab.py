"""One-step (A) against two-step (B) at each share of training patients (prints JSON).

    python experiments/learning_curve_ab.py DIR [--splits test external]

DIR is an ablation directory holding the `learning_curve_ab` suite
(`phasejax ablate --suite learning_curve_ab --out DIR`); its runs are found through
DIR/plan.json. The suite's summary draws both curves in one figure; this adds the paired
test the figure cannot show: at each share, the seed ensembles of A and B (probabilities
averaged over seeds) compared on the same series by exact McNemar (b = A right and B wrong,
c = A wrong and B right; difference = B - A with its Newcombe interval), and each strategy's
accuracy per seed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from phasejax.ablate.runner import RESULTS_FILE, AblationError, read_plan
from phasejax.ablate.summarize import SPLITS, ensemble, paired, split_eval

SUITE = "learning_curve_ab"
SHARES = ("0.1", "0.25", "0.5", "1.0")


def _results(out: Path, runs: dict[str, dict[str, str]], label: str) -> list[dict]:
    """results.json of every finished seed of one value, by the run ids of plan.json (which
    knows that B at 100% is the shared baseline)."""
    paths = (out / rid / RESULTS_FILE for rid in runs.get(label, {}).values())
    return [json.loads(p.read_text()) for p in paths if p.is_file()]


def compare(out: Path, splits: tuple[str, ...]) -> dict:
    suite = read_plan(out)["suites"].get(SUITE)
    if suite is None:
        raise ValueError(f"{out}: its plan.json has no {SUITE} suite")
    runs = {v["label"]: v["runs"] for v in suite["values"]}
    rows = []
    for share in SHARES:
        a_runs, b_runs = _results(out, runs, f"A_{share}"), _results(out, runs, f"B_{share}")
        row: dict = {"share": float(share), "seeds": [len(a_runs), len(b_runs)]}
        if not a_runs or not b_runs:
            rows.append(row)
            continue
        for split in splits:
            a = [e for e in (split_eval(r, split) for r in a_runs) if e is not None]
            b = [e for e in (split_eval(r, split) for r in b_runs) if e is not None]
            if not a or not b:
                continue
            ea, eb = ensemble(a), ensemble(b)
            test = paired(ea, eb)
            row[SPLITS[split]] = {
                "A_per_seed": [round(float(e.right.mean()), 4) for e in a],
                "B_per_seed": [round(float(e.right.mean()), 4) for e in b],
                "A_ensemble": round(float(ea.right.mean()), 4),
                "B_ensemble": round(float(eb.right.mean()), 4),
                "n": test["n"],
                "b_A_right_B_wrong": test["b"],
                "c_A_wrong_B_right": test["c"],
                "mcnemar_p": round(float(test["p"]), 4),
                "B_minus_A": [round(float(test[k]), 4) for k in ("diff", "diff_lo", "diff_hi")],
            }
        rows.append(row)
    return {"dir": str(out), "suite": SUITE, "shares": rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", type=Path)
    ap.add_argument("--splits", nargs="+", default=["test", "external"], choices=list(SPLITS))
    args = ap.parse_args(argv)
    try:
        out = compare(args.dir, tuple(args.splits))
    except (AblationError, ValueError) as e:
        ap.error(str(e))
    json.dump(out, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
