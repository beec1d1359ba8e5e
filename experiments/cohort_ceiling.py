"""How separable are the cohort's phase labels from what a reader can measure? (prints JSON)

    python experiments/cohort_ceiling.py [--exams 3000] [--train-exams N] [--roi-noise 5]
        [--delayed-rule excretion_or_equilibrium|excretion]
    python experiments/cohort_ceiling.py --cache CACHE [--observers 5] [--runs RUN ...]

The paper's 98% rests on labels that radiologists assigned from the images, so they are
visible by construction. The synthetic cohort labels each series with a written rule on the
absolute HU of that series' vessels, liver, kidneys and collecting system
(phasejax.cohort.kinetics.phase_from_hu; since cohort v6, before which it read each patient's
own baseline and liver peak), so its labels are visible by construction too, up to ROI noise
and the physiological spread at each threshold. This script measures how far: it plans
exams of every site exactly as the cohort does (phasejax.cohort.exam.plan_exam: protocols,
bolus tracking, kVp, patients; no pixels), reads each contrast series as an ideal observer
would, i.e. the mean absolute HU of every structure in the liver-kidney slab at the series'
voltage plus ROI measurement noise, and the voltage itself (from the header, exact), and
trains a small MLP on those numbers (internal site; evaluated on held-out internal exams and
on the external sites). Its accuracy approximates the best a perfect feature extractor
could do on this cohort, and its confusions show which boundaries are ambiguous by design.

With --cache (a generated cohort's cache, e.g. the main job's), the observer reads the very
series of that cohort instead of freshly planned ones: it trains on the cache's training
split (the series the networks learn from) and is scored on its test and external splits,
the series the networks are scored on, so the ceiling and a network's accuracy are paired
by series. The ROI noise and the MLP's start are random, so --observers of them are drawn
(seeds 0..N-1) and summarised. --runs: trained runs on that cohort (their results.json
predictions), each compared with the observers on the same series: accuracy, the gap, and
the exact McNemar test against every observer.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from phasejax.cohort.exam import plan_exam, replan_series
from phasejax.cohort.kinetics import DEFAULT_DELAYED_RULE, DELAYED_RULES, compartment_hu
from phasejax.cohort.sites import EXTERNAL_SITES, INTERNAL_SITE, SITES
from phasejax.cohort.structures import Label
from phasejax.eval.metrics import confusion_matrix
from phasejax.phases import Phase

# Structures a reader sees between liver dome and kidneys (the model's input slab).
VISIBLE = (
    Label.AORTA, Label.IVC, Label.PORTAL_VEIN, Label.SPLENIC_VEIN, Label.HEPATIC_VEIN,
    Label.RENAL_VEIN, Label.LIVER, Label.SPLEEN, Label.PANCREAS, Label.KIDNEY_CORTEX,
    Label.KIDNEY_MEDULLA, Label.KIDNEY_COLLECTING, Label.MUSCLE,
)  # fmt: skip
CLASSES = (Phase.EAP, Phase.LAP, Phase.PVP, Phase.DP)


def observations(
    site: str,
    n: int,
    roi_noise: float,
    rng: np.random.Generator,
    delayed_rule: str = DEFAULT_DELAYED_RULE,
    *,
    structures: tuple[Label, ...] = VISIBLE,
    classes: tuple[Phase, ...] = CLASSES,
    kvp: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features, class index, exam index) of every series of n exams whose phase is in
    `classes`, labelled with the cohort's `delayed_rule` (cohort.delayed_rule). Features:
    the mean HU of each of `structures` and the tube voltage, read at `kvp` instead of the
    exam's own when given (the label does not change: the rule reads HU at 120 kVp)."""
    xs, ys, exams = [], [], []
    for i in range(n):
        plan = plan_exam(
            SITES[site], i, cohort_seed=0, namespace="ceiling", delayed_rule=delayed_rule
        )
        v = plan.kvp if kvp is None else kvp
        for s in plan.series:
            if s.phase not in classes:
                continue
            hu = compartment_hu(plan.patient, s.t, v)
            xs.append([hu[lab] for lab in structures] + [v])
            ys.append(classes.index(s.phase))
            exams.append(i)
    x = roi_reading(np.asarray(xs, np.float32), roi_noise, rng)
    return x, np.asarray(ys), np.asarray(exams)


def roi_reading(x: np.ndarray, roi_noise: float, rng: np.random.Generator) -> np.ndarray:
    """Exact features [N, structures + kVp] as a reader measures them: each structure's mean
    with ROI noise of SD `roi_noise`; the tube voltage, from the header, exactly."""
    noise = rng.normal(0.0, roi_noise, x.shape).astype(np.float32)
    noise[:, -1] = 0.0
    return x + noise


def cache_observations(
    rows: list[dict[str, str]],
    info: dict,
    *,
    structures: tuple[Label, ...] = VISIBLE,
    classes: tuple[Phase, ...] = CLASSES,
) -> tuple[np.ndarray, np.ndarray]:
    """(exact features, class index) of cache manifest `rows` (all with phases in `classes`),
    each series' exam planned again as the generator planned it (cohort.json `info`: seed,
    preset, delayed_rule), read as `observations` reads a series before its ROI noise
    (`roi_reading`). The replanned label must be the manifest's: a cohort of another
    generator version is refused."""
    plans: dict = {}
    xs, ys = [], []
    for r in rows:
        plan, s = replan_series(r, info, plans)
        if s.phase.value != r["true_phase"]:
            raise ValueError(
                f"series {r['series_id']}: planned as {s.phase.value}, the cache says "
                f"{r['true_phase']} (a cohort of another generator version?)"
            )
        hu = compartment_hu(plan.patient, s.t, plan.kvp)
        xs.append([hu[lab] for lab in structures] + [plan.kvp])
        ys.append([c.value for c in classes].index(r["phase"]))
    return np.asarray(xs, np.float32), np.asarray(ys)


def paired(run_right: np.ndarray, observer_right: np.ndarray) -> dict:
    """A run against an observer on the same series: accuracies, the gap (observer - run, in
    points), the discordant counts and the exact McNemar p."""
    from phasejax.eval.stats import mcnemar_exact

    b = int((run_right & ~observer_right).sum())  # the run right, the observer wrong
    c = int((~run_right & observer_right).sum())
    return {
        "run": round(float(run_right.mean()), 4),
        "observer": round(float(observer_right.mean()), 4),
        "gap_points": round(100.0 * float(observer_right.mean() - run_right.mean()), 2),
        "b": b,
        "c": c,
        "p": round(mcnemar_exact(b, c), 4),
    }


def run_correct(run_dir: str, split: str, series_ids: list[str]) -> np.ndarray:
    """Whether a run's argmax is its label, for `series_ids` of one split (results.json)."""
    from phasejax.ablate.summarize import split_eval

    ev = split_eval(json.loads((Path(run_dir) / "results.json").read_text()), split)
    at = {} if ev is None else {sid: i for i, sid in enumerate(ev.series_ids)}
    missing = [s for s in series_ids if s not in at]
    if missing:
        raise ValueError(f"{run_dir}: no {split} prediction for {len(missing)} series")
    return ev.right[[at[s] for s in series_ids]]


def main_cache(args: argparse.Namespace) -> dict:
    cache = Path(args.cache)
    info = json.loads((cache.parent / "cohort.json").read_text())
    with open(cache / "manifest.csv", newline="") as f:
        wanted = {c.value for c in CLASSES}
        rows = [r for r in csv.DictReader(f) if r["phase"] in wanted]
    splits = {k: [r for r in rows if r["split"] == k] for k in ("train", "test", "external")}
    out: dict = {
        "what": "the ideal observer on the cohort's own series (paired with its networks)",
        "cache": str(cache),
        "cohort": {k: info.get(k) for k in ("preset", "seed", "version", "delayed_rule")},
        "visible_structures": [lab.name for lab in VISIBLE] + ["kVp (header)"],
        "roi_noise_hu": args.roi_noise,
        "series": {k: len(v) for k, v in splits.items()},
        "observers": [],
    }
    # Each series is read once; the observers differ in their ROI noise and start only.
    exact = {k: cache_observations(v, info) for k, v in splits.items()}
    correct: dict[str, list[np.ndarray]] = {"test": [], "external": []}
    for seed in range(args.observers):
        rng = np.random.default_rng(seed)
        x, y = exact["train"]
        probs = train_mlp(roi_reading(x, args.roi_noise, rng), y, seed)
        one: dict = {"seed": seed}
        for split in ("test", "external"):
            xs, ys = exact[split]
            xs = roi_reading(xs, args.roi_noise, rng)
            pred = np.argmax(np.asarray(probs(xs)), -1)
            correct[split].append(pred == ys)
            one[split] = report(pred, ys)
            if split == "external":
                sites = np.array([r["site"] for r in splits[split]])
                one["external_by_site"] = {
                    s: round(float((pred == ys)[sites == s].mean()), 4) for s in sorted(set(sites))
                }
        out["observers"].append(one)
    out["summary"] = {
        split: {
            "mean": round(float(np.mean([c.mean() for c in cs])), 4),
            "sd": round(float(np.std([c.mean() for c in cs], ddof=1)), 4) if len(cs) > 1 else 0.0,
            "per_observer": [round(float(c.mean()), 4) for c in cs],
        }
        for split, cs in correct.items()
    }
    out["runs"] = {}
    for run_dir in args.runs:
        out["runs"][run_dir] = {
            split: [
                paired(run_correct(run_dir, split, [r["series_id"] for r in splits[split]]), obs)
                for obs in correct[split]
            ]
            for split in ("test", "external")
        }
    return out


def train_mlp(
    x: np.ndarray, y: np.ndarray, seed: int, steps: int = 3000, num_classes: int = len(CLASSES)
):
    """Full-batch MLP; returns a jitted function from features to class probabilities."""
    mu, sd = x.mean(0), x.std(0) + 1e-6
    key = jax.random.key(seed)
    sizes = (x.shape[1], 128, 128, num_classes)
    params = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        key, k = jax.random.split(key)
        params.append((jax.random.normal(k, (a, b)) * np.sqrt(2.0 / a), jnp.zeros(b)))

    def logits(p, xb):
        h = (xb - mu) / sd
        for w, b in p[:-1]:
            h = jax.nn.relu(h @ w + b)
        return h @ p[-1][0] + p[-1][1]

    def loss(p, xb, yb):
        return optax.softmax_cross_entropy_with_integer_labels(logits(p, xb), yb).mean()

    opt = optax.adamw(optax.cosine_decay_schedule(3e-3, steps), weight_decay=1e-4)
    state = opt.init(params)

    @jax.jit
    def step(p, s, xb, yb):
        g = jax.grad(loss)(p, xb, yb)
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s

    xj, yj = jnp.asarray(x), jnp.asarray(y)
    for _ in range(steps):  # full batch: a few thousand rows
        params, state = step(params, state, xj, yj)
    return jax.jit(lambda xb: jax.nn.softmax(logits(params, xb), -1))


def report(pred: np.ndarray, y: np.ndarray) -> dict:
    cm = confusion_matrix(y, pred, len(CLASSES))
    return {
        "n": int(len(y)),
        "accuracy": round(float((pred == y).mean()), 4),
        "sensitivity": {
            c.value: round(float(cm[i, i] / max(cm[i].sum(), 1)), 4) for i, c in enumerate(CLASSES)
        },
        "confusion": {"rows_true_cols_pred": [c.value for c in CLASSES], "counts": cm.tolist()},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--exams", type=int, default=3000, help="internal exams (train + test)")
    ap.add_argument(
        "--train-exams", type=int, default=None, help="default: 4/5 of --exams (the rest test)"
    )
    ap.add_argument("--external-per-site", type=int, default=200)
    ap.add_argument("--roi-noise", type=float, default=5.0, help="SD (HU) of an ROI mean")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--delayed-rule",
        choices=DELAYED_RULES,
        default=DEFAULT_DELAYED_RULE,
        help="the cohort's labelling rule for DP (config cohort.delayed_rule)",
    )
    ap.add_argument("--cache", default=None, help="a generated cohort's cache: its own series")
    ap.add_argument("--observers", type=int, default=5, help="with --cache: observer seeds")
    ap.add_argument("--runs", nargs="*", default=[], help="with --cache: runs on that cohort")
    args = ap.parse_args()
    t0 = time.perf_counter()
    if args.cache:
        out = main_cache(args)
        out["seconds"] = round(time.perf_counter() - t0, 1)
        print(json.dumps(out, indent=1))
        return 0
    rng = np.random.default_rng(args.seed)
    train_exams = args.train_exams if args.train_exams is not None else args.exams * 4 // 5
    if not 0 < train_exams < args.exams:
        ap.error(f"--train-exams must be between 1 and {args.exams - 1}")
    x, y, exam = observations(INTERNAL_SITE, args.exams, args.roi_noise, rng, args.delayed_rule)
    # One exam per patient: split by exam, so no patient is on both sides.
    tr, te = exam < train_exams, exam >= train_exams
    probs = train_mlp(x[tr], y[tr], args.seed)

    def predict(xb):
        return np.argmax(np.asarray(probs(xb)), -1)

    out = {
        "what": "accuracy of an MLP on ideal ROI measurements (upper bound of image models)",
        "visible_structures": [lab.name for lab in VISIBLE] + ["kVp (header)"],
        "roi_noise_hu": args.roi_noise,
        "delayed_rule": args.delayed_rule,
        "train_exams": train_exams,
        "train_series": int(tr.sum()),
        "internal_test": report(np.asarray(predict(x[te])), y[te]),
        "train_fit": report(np.asarray(predict(x[tr])), y[tr]),
        "external": {},
    }
    for site in EXTERNAL_SITES:
        xe, ye, _ = observations(
            site, args.external_per_site, args.roi_noise, rng, args.delayed_rule
        )
        out["external"][site] = report(np.asarray(predict(xe)), ye)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
