"""Test-time slab shifts on a labelled real set: does averaging over shifted inputs help?

    python experiments/real_tta.py RUN [RUN ...] --data ../shared/data/validation \
        --labels ../shared/data/validation/labels.csv [--shifts -1 0 1] > tta.json

For every trained RUN (e.g. the seeds of a sim2real ablation value, `.../off/seed*`) and
every labelled real series, the network input is made as `phasejax predict` makes it, and
again with the liver-to-kidney slab moved by each of --shifts cache slices (5 mm each on the
default grid); the shifted inputs' probabilities are averaged. Prints JSON: per run, the
calls right and the log score (NLL: -ln of the probability given to the accepted phases,
floored at 1e-3, as `phasejax evaluate`) without (shift 0 alone) and with the average;
paired over runs, a Wilcoxon signed-rank test on the per-run NLL. Training already moves
each input slice by up to `data.slice_jitter` slices, so the shifted inputs are inputs the
networks were trained on: the question is whether the decisions that rest on one real
slice (the kidney hilum, `experiments/real_occlusion.py`) average out. Measure only: never
tune to the real set series by series.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

NLL_FLOOR = 1e-3


def _series(data: str, labels_csv: str) -> list[tuple[Any, Any]]:
    """(plan, label row) of every labelled series under `data`, in label-file order."""
    from phasejax.data.discover import discover
    from phasejax.eval.labels import match_eval_labels, read_eval_labels

    rows = read_eval_labels(labels_csv)
    disc = discover([data])
    folders = [data if os.path.isdir(data) else os.path.dirname(os.path.abspath(data))]
    matched, missing = match_eval_labels(disc.plans, rows, folders)
    if missing:
        raise SystemExit(f"{len(missing)} label rows match no series under {data}")
    plans = {p.series_id: p for p in disc.plans}
    out = [(plans[sid], lab) for sid, lab in matched.items()]
    return sorted(out, key=lambda t: t[1].line)


def shifted_probabilities(clf: Any, cached: Any, data_cfg: Any, shifts: list[int]) -> np.ndarray:
    """Probabilities [len(shifts), K] of one cached series (phasejax.data.prepare.CachedVolume)
    with its slab moved by each shift (cache slices; 0 is the input `predict` makes)."""
    from phasejax.data.pipeline import preprocess

    images = [
        preprocess(
            cached.volume, cached.z_lo + k, cached.z_hi + k, data_cfg, pixel_mm=cached.pixel_mm
        )
        for k in shifts
    ]
    return np.asarray(clf.classify_all(images))


def score(probs: np.ndarray, classes: list[str], accepts: frozenset[str]) -> tuple[bool, float]:
    """(argmax among the accepted phases, -ln of their probability floored at NLL_FLOOR)."""
    right = classes[int(np.argmax(probs))] in accepts
    p = float(sum(probs[i] for i, c in enumerate(classes) if c in accepts))
    return right, -math.log(max(p, NLL_FLOOR))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--data", required=True)
    ap.add_argument("--labels", required=True)
    ap.add_argument("--shifts", type=int, nargs="+", default=[-1, 0, 1])
    args = ap.parse_args(argv)
    if 0 not in args.shifts:
        ap.error("--shifts must include 0 (the input predict makes)")

    from scipy.stats import wilcoxon

    from phasejax.data.discover import load_plan
    from phasejax.data.prepare import cache_volume
    from phasejax.infer import load_classifier
    from phasejax.phases import label_set
    from phasejax.predict.inputs import model_grid

    items = _series(args.data, args.labels)
    volumes: dict[tuple[Any, str], Any] = {}  # (cache grid, series id) -> CachedVolume
    runs_out: dict[str, Any] = {}
    for run_dir in args.runs:
        run, clf = load_classifier(run_dir)
        cfg = run.cfg
        classes = list(label_set(cfg.data.label_set).codes)
        spec, _ = model_grid(cfg)
        per_series = []
        for plan, lab in items:
            key = (spec, plan.series_id)
            if key not in volumes:
                series, _ = load_plan(plan)
                if series is None:
                    raise SystemExit(f"cannot read {plan.series_id}")
                volumes[key] = cache_volume(series, spec)
            probs = shifted_probabilities(clf, volumes[key], cfg.data, args.shifts)
            plain = probs[args.shifts.index(0)]
            mean = probs.mean(axis=0)
            r0, n0 = score(plain, classes, lab.accepts)
            r1, n1 = score(mean, classes, lab.accepts)
            per_series.append({
                "name": Path(lab.path).name if lab.path else plan.series_id,
                "accepts": "|".join(sorted(lab.accepts)),
                "plain": {"call": classes[int(np.argmax(plain))], "right": r0, "nll": round(n0, 4)},
                "shifted": {"call": classes[int(np.argmax(mean))], "right": r1, "nll": round(n1, 4)},
                "calls_per_shift": [classes[int(np.argmax(p))] for p in probs],
            })  # fmt: skip
        runs_out[str(run_dir)] = {
            "plain": {
                "correct": sum(s["plain"]["right"] for s in per_series),
                "nll": round(float(np.mean([s["plain"]["nll"] for s in per_series])), 4),
            },
            "shifted": {
                "correct": sum(s["shifted"]["right"] for s in per_series),
                "nll": round(float(np.mean([s["shifted"]["nll"] for s in per_series])), 4),
            },
            "n": len(per_series),
            "series": per_series,
        }
        print(
            f"{run_dir}: plain {runs_out[str(run_dir)]['plain']}, "
            f"shifted {runs_out[str(run_dir)]['shifted']}",
            file=sys.stderr,
            flush=True,
        )
    a = np.array([r["plain"]["nll"] for r in runs_out.values()])
    b = np.array([r["shifted"]["nll"] for r in runs_out.values()])
    paired: dict[str, Any] = {
        "runs": len(a),
        "calls_plain": int(sum(r["plain"]["correct"] for r in runs_out.values())),
        "calls_shifted": int(sum(r["shifted"]["correct"] for r in runs_out.values())),
        "series": int(sum(r["n"] for r in runs_out.values())),
        "nll_plain_mean": round(float(a.mean()), 4),
        "nll_shifted_mean": round(float(b.mean()), 4),
    }
    if len(a) >= 2 and np.any(a != b):
        paired["nll_wilcoxon_p"] = round(float(wilcoxon(a, b).pvalue), 4)
    json.dump(
        {"shifts": args.shifts, "data": args.data, "paired": paired, "runs": runs_out},
        sys.stdout,
        indent=1,
    )
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
