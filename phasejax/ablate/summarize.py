"""Tables, paired tests and figures of an ablation directory, from its results files alone.

Input: DIR/plan.json (which run fills which suite value and seed) and each run's
results.json. Output in DIR/summary/: per suite `<suite>.csv` (one row per value),
`<suite>_paired.csv` (every variant against the baseline), `<suite>_runs.csv` (one row per
run), `<suite>.md`, figures `<suite>.png/.pdf`; `overview.png/.pdf`; `README.md` (index).

Statistics (documented in ablations/README.md):

- accuracy per run = correct / labelled series of the split (test = internal, external);
  a value's row gives the mean and standard deviation (ddof 1) over seeds and a 95% interval:
  Student-t over seeds (training randomness) when there are >= 2 seeds, else the Wilson
  interval of the single run (test-set sampling). `*_ci` names which.
- per-phase sensitivity and EAP/LAP accuracy (the share of true EAP/LAP series given their
  exact phase; the step-2 task of the paper) are means over seeds.
- paired test against the baseline: exact McNemar (phasejax.eval.stats.compare_paired) on
  the same series, per seed (variant seed k vs baseline seed k), and once on the seed
  ensembles (probabilities averaged over the seeds both have), which counts each series once
  and is the p-value in the main table. Per-seed tests are not pooled into one p-value: the
  seeds share the test series, so their discordant pairs are not independent.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats as sps

from phasejax.ablate.runner import GROUPS_FILE, REAL_FILE, RESULTS_FILE, read_plan
from phasejax.eval.metrics import ACCEPTED_NLL_FLOOR, accepted_nll
from phasejax.safe_text import csv_cell
from phasejax.tables import format_p

# "real": a labelled real set evaluated after training (`phasejax ablate --real`), read from
# each run's real.json; a series is right when the prediction is among its accepted phases.
SPLITS = {"test": "internal", "external": "external", "real": "real"}
ARTERIAL = ("EAP", "LAP")
SUMMARY_DIR = "summary"
CONFIDENCE = 0.95
# A real set is small (the validation set: 12 series), so right/wrong moves in steps of 8
# points and McNemar on a dozen series can detect only large effects; the real split also gets
# the log score of the accepted phases (phasejax.eval.metrics.accepted_nll), which tells two
# recipes apart before either flips a call.


# --------------------------------------------------------------------------- per run


@dataclass(frozen=True)
class SplitEval:
    """One run on one split, labelled series only, in series_id order."""

    classes: tuple[str, ...]
    series_ids: np.ndarray  # str [N]
    patient_ids: np.ndarray  # str [N]
    sites: np.ndarray  # str [N]
    y_true: np.ndarray  # int [N]
    probs: np.ndarray  # float [N, K]
    # bool [N, K]: which predicted classes count as right (a real set's accepted phases);
    # None: only y_true.
    accepted: np.ndarray | None = None

    @property
    def pred(self) -> np.ndarray:
        return self.probs.argmax(1)

    @property
    def n(self) -> int:
        return int(self.y_true.size)

    @property
    def accepts(self) -> np.ndarray:
        """bool [N, K]: the classes that count as right per series (the accepted set, else
        the reference class; none where the model cannot name the reference)."""
        if self.accepted is not None:
            return self.accepted
        return np.arange(self.probs.shape[1])[None, :] == self.y_true[:, None]

    @property
    def right(self) -> np.ndarray:
        """bool [N]: the prediction counts as right."""
        return self.accepts[np.arange(self.n), self.pred]

    @property
    def correct(self) -> int:
        return int(np.sum(self.right))

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else math.nan

    @property
    def series_nll(self) -> np.ndarray:
        """float [N]: the log score of each series' accepted phases (`accepts`; a reference
        the model cannot name gets the floor)."""
        return accepted_nll(self.probs, self.accepts)

    @property
    def nll(self) -> float:
        return float(self.series_nll.mean()) if self.n else math.nan

    def sensitivity(self, code: str) -> float:
        if code not in self.classes:
            return math.nan
        sel = self.y_true == self.classes.index(code)
        return float(np.mean(self.pred[sel] == self.y_true[sel])) if sel.any() else math.nan

    def arterial_accuracy(self) -> float:
        idx = [self.classes.index(c) for c in ARTERIAL if c in self.classes]
        sel = np.isin(self.y_true, idx)
        return float(np.mean(self.pred[sel] == self.y_true[sel])) if sel.any() else math.nan

    def subset(self, mask: np.ndarray) -> SplitEval:
        return SplitEval(
            self.classes,
            self.series_ids[mask],
            self.patient_ids[mask],
            self.sites[mask],
            self.y_true[mask],
            self.probs[mask],
            None if self.accepted is None else self.accepted[mask],
        )


def split_eval(results: Mapping[str, Any], split: str) -> SplitEval | None:
    s = results.get("splits", {}).get(split)
    if not s or not s.get("predictions"):
        return None
    classes = tuple(results["classes"])
    index = {c: i for i, c in enumerate(classes)}
    preds = sorted(
        (p for p in s["predictions"] if p.get("label") or p.get("accepts")),
        key=lambda p: p["series_id"],
    )
    if not preds:
        return None
    accepted = None
    if any("accepts" in p for p in preds):
        accepted = np.array(
            [[c in p.get("accepts", [p.get("label")]) for c in classes] for p in preds], dtype=bool
        )
    return SplitEval(
        classes=classes,
        series_ids=np.array([p["series_id"] for p in preds], dtype=str),
        patient_ids=np.array([p.get("patient_id", "") for p in preds], dtype=str),
        sites=np.array([p.get("site", "") for p in preds], dtype=str),
        # A reference the model cannot name (NC for a 4-class model; an EAP|LAP group) has no
        # class index: len(classes) never equals a prediction.
        y_true=np.array([index.get(p.get("label", ""), len(classes)) for p in preds], np.int64),
        probs=np.array([p["probs"] for p in preds], dtype=np.float64).reshape(len(preds), -1),
        accepted=accepted,
    )


def ensemble(evals: Sequence[SplitEval]) -> SplitEval:
    """Seed ensemble: probabilities averaged over runs on the same series."""
    first = evals[0]
    for e in evals[1:]:
        if not np.array_equal(e.series_ids, first.series_ids):
            raise ValueError("runs of one value were evaluated on different series")
    return SplitEval(
        first.classes,
        first.series_ids,
        first.patient_ids,
        first.sites,
        first.y_true,
        np.mean([e.probs for e in evals], axis=0),
        first.accepted,
    )


def align(a: SplitEval, b: SplitEval) -> tuple[SplitEval, SplitEval, str]:
    """The two runs restricted to the series both have; a note when they differ.

    A value that changes the cohort's labelling (cohort.delayed_rule, label_noise) labels
    some of the same series differently: each run is then scored against its own labels,
    the paired tests compare right against right, and the note says on how many series the
    labels differ."""
    common = np.intersect1d(a.series_ids, b.series_ids)
    notes = []
    if common.size != a.n or common.size != b.n:
        notes.append(f"series differ: {a.n} vs {b.n}, {common.size} in common")
    aa = a.subset(np.isin(a.series_ids, common))
    bb = b.subset(np.isin(b.series_ids, common))
    relabelled = int(np.sum(aa.y_true != bb.y_true))
    if relabelled:
        notes.append(f"labels differ on {relabelled} series (each run against its own)")
    return aa, bb, "; ".join(notes)


# --------------------------------------------------------------------------- statistics


def seed_stats(values: Sequence[float | None]) -> dict[str, float]:
    """mean, std (ddof 1) and the 95% Student-t interval of the mean over seeds (clipped to
    [0, 1]: the values are proportions); None and NaN values are ignored."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return {"mean": math.nan, "std": math.nan, "lo": math.nan, "hi": math.nan, "n": 0}
    mean = float(v.mean())
    if v.size == 1:
        return {"mean": mean, "std": math.nan, "lo": math.nan, "hi": math.nan, "n": 1}
    std = float(v.std(ddof=1))
    half = float(sps.t.ppf(0.5 + CONFIDENCE / 2, v.size - 1)) * std / math.sqrt(v.size)
    # Clipped to [0, 1]: with 2-3 seeds t's interval easily passes 100%, which no proportion can.
    lo, hi = max(0.0, mean - half), min(1.0, mean + half)
    return {"mean": mean, "std": std, "lo": lo, "hi": hi, "n": int(v.size)}


def paired_nll(base: SplitEval, variant: SplitEval) -> dict[str, Any]:
    """Wilcoxon signed-rank test of the per-series log score, variant vs baseline, on their
    common series (diff = mean NLL of variant - baseline: negative = the variant is better).
    Series the two give the same score drop out (Wilcoxon's zero rule); p is NaN when none
    differ."""
    b, v, note = align(base, variant)
    d = v.series_nll - b.series_nll
    p = math.nan
    if np.any(d != 0):
        p = float(sps.wilcoxon(v.series_nll, b.series_nll, zero_method="wilcox").pvalue)
    return {"n": b.n, "diff": float(d.mean()) if b.n else math.nan, "p": p, "note": note}


def paired(base: SplitEval, variant: SplitEval, *, n_bootstrap: int = 1000) -> dict[str, Any]:
    """Exact McNemar of variant vs baseline on their common series (difference = variant -
    baseline)."""
    from phasejax.eval.stats import compare_paired

    b, v, note = align(base, variant)
    # Right/wrong coded as class 0/1 against a truth of 0: the same test for single labels
    # and for accepted sets of phases.
    res = compare_paired(
        np.zeros(b.n, np.int64),
        (~b.right).astype(np.int64),
        (~v.right).astype(np.int64),
        b.patient_ids,
        n_bootstrap=n_bootstrap,
    )
    out = {
        "n": res["n"],
        "b": res["b"],  # baseline right, variant wrong
        "c": res["c"],  # baseline wrong, variant right
        "p": res["mcnemar_p"],
        "diff": res["difference"]["value"],
        "diff_lo": res["difference"]["ci"][0],
        "diff_hi": res["difference"]["ci"][1],
        "note": note,
    }
    return out


# --------------------------------------------------------------------------- per suite


@dataclass
class SuiteSummary:
    name: str
    meta: dict[str, Any]
    classes: tuple[str, ...]
    rows: list[dict[str, Any]] = field(default_factory=list)  # one per value
    paired_rows: list[dict[str, Any]] = field(default_factory=list)
    run_rows: list[dict[str, Any]] = field(default_factory=list)
    group_rows: list[dict[str, Any]] = field(default_factory=list)  # evaluate suites
    missing: list[str] = field(default_factory=list)  # run ids without results


def _load(out: Path, run_id: str, cache: dict[str, dict | None]) -> dict | None:
    """A run's results.json, with the splits of its real.json (if any) added."""
    if run_id not in cache:
        path = out / run_id / RESULTS_FILE
        res = json.loads(path.read_text()) if path.is_file() else None
        real = out / run_id / REAL_FILE
        if res is not None and real.is_file():
            res.setdefault("splits", {}).update(json.loads(real.read_text())["splits"])
        cache[run_id] = res
    return cache[run_id]


def summarize_suite(
    out: str | Path,
    name: str,
    meta: Mapping[str, Any],
    *,
    n_bootstrap: int = 1000,
    _cache: dict[str, dict | None] | None = None,
) -> SuiteSummary:
    out = Path(out)
    cache = {} if _cache is None else _cache
    values = meta["values"]
    base_label = meta["baseline"]
    # run evals per value, per seed
    evals: dict[str, dict[int, dict[str, SplitEval | None]]] = {}
    trains: dict[str, dict[int, Mapping[str, Any]]] = {}
    missing: list[str] = []
    classes: tuple[str, ...] = ()
    for v in values:
        evals[v["label"]] = {}
        trains[v["label"]] = {}
        for seed_text, rid in v["runs"].items():
            res = _load(out, rid, cache)
            if res is None:
                missing.append(rid)
                continue
            seed = int(seed_text)
            classes = classes or tuple(res["classes"])
            evals[v["label"]][seed] = {s: split_eval(res, s) for s in SPLITS}
            trains[v["label"]][seed] = res.get("train", {})
    summary = SuiteSummary(
        name=name, meta={"name": name, **meta}, classes=classes, missing=sorted(set(missing))
    )
    base_evals = evals.get(base_label, {})
    for v in values:
        label = v["label"]
        row: dict[str, Any] = {
            "value": label,
            "group": v.get("group", ""),
            "x": v.get("x"),
            "baseline": label == base_label,
            "seeds": len(evals[label]),
        }
        for split, prefix in SPLITS.items():
            runs = [e[split] for e in evals[label].values() if e.get(split) is not None]
            accs = [r.accuracy for r in runs]
            st = seed_stats(accs)
            row[f"{prefix}_n"] = runs[0].n if runs else 0
            row[f"{prefix}_acc_mean"] = st["mean"]
            row[f"{prefix}_acc_std"] = st["std"]
            if st["n"] >= 2:
                lo, hi, how = st["lo"], st["hi"], f"t over {st['n']} seeds"
            elif st["n"] == 1:
                from phasejax.eval.stats import wilson_interval

                lo, hi = wilson_interval(runs[0].correct, runs[0].n, CONFIDENCE)
                how = "Wilson, 1 seed"
            else:
                lo, hi, how = math.nan, math.nan, ""
            row[f"{prefix}_acc_lo"], row[f"{prefix}_acc_hi"] = lo, hi
            row[f"{prefix}_ci"] = how
            for code in classes:
                row[f"{prefix}_sens_{code}"] = seed_stats([r.sensitivity(code) for r in runs])[
                    "mean"
                ]
            row[f"{prefix}_eaplap_acc"] = seed_stats([r.arterial_accuracy() for r in runs])["mean"]
            # The seeds' mean probabilities: what `phasejax predict --ensemble` would say.
            try:
                ens = ensemble(runs) if runs else None
            except ValueError:  # seeds evaluated on different series
                ens = None
            row[f"{prefix}_ensemble_correct"] = ens.correct if ens else 0
            row[f"{prefix}_ensemble_n"] = ens.n if ens else 0
            if prefix == "real":
                nlls = [r.nll for r in runs]
                row["real_nll_mean"] = float(np.mean(nlls)) if nlls else math.nan
                row["real_nll_std"] = float(np.std(nlls, ddof=1)) if len(nlls) > 1 else math.nan
                row["real_nll_ensemble"] = ens.nll if ens else math.nan
                row["real_nll_p"] = math.nan
            # paired tests against the baseline
            row[f"{prefix}_p"] = math.nan
            row[f"{prefix}_p_seeds"] = ""
            if label == base_label:
                continue
            seeds = sorted(
                s
                for s in evals[label]
                if evals[label][s].get(split) is not None
                and base_evals.get(s, {}).get(split) is not None
            )
            ps = []
            for s in seeds:
                pr = paired(base_evals[s][split], evals[label][s][split], n_bootstrap=n_bootstrap)
                ps.append(pr["p"])
                summary.paired_rows.append({"value": label, "split": prefix, "seed": str(s), **pr})
            if seeds:
                pr = paired(
                    ensemble([base_evals[s][split] for s in seeds]),
                    ensemble([evals[label][s][split] for s in seeds]),
                    n_bootstrap=n_bootstrap,
                )
                summary.paired_rows.append(
                    {"value": label, "split": prefix, "seed": "ensemble", **pr}
                )
                row[f"{prefix}_p"] = pr["p"]
                row[f"{prefix}_p_seeds"] = ";".join(f"{p:.3g}" for p in ps)
                if prefix == "real":
                    row["real_nll_p"] = paired_nll(
                        ensemble([base_evals[s][split] for s in seeds]),
                        ensemble([evals[label][s][split] for s in seeds]),
                    )["p"]
        # An evaluate run re-uses a trained model: its training time is the baseline's.
        evaluated = meta.get("kind") == "evaluate" and label != base_label
        tr = [] if evaluated else list(trains[label].values())
        row["wall_time_s"] = seed_stats([t.get("wall_time_s") for t in tr])["mean"]
        row["images_per_s"] = seed_stats([t.get("images_per_s") for t in tr])["mean"]
        summary.rows.append(row)
        for seed in sorted(evals[label]):
            rr: dict[str, Any] = {"value": label, "seed": seed, "run": v["runs"][str(seed)]}
            for split, prefix in SPLITS.items():
                e = evals[label][seed].get(split)
                rr[f"{prefix}_correct"] = e.correct if e else 0
                rr[f"{prefix}_n"] = e.n if e else 0
                rr[f"{prefix}_acc"] = e.accuracy if e else math.nan
            rr["wall_time_s"] = trains[label][seed].get("wall_time_s")
            rr["images_per_s"] = trains[label][seed].get("images_per_s")
            summary.run_rows.append(rr)
    if meta.get("kind") == "evaluate" and meta.get("group_by"):
        summary.group_rows = _group_rows(out, name, meta, base_evals)
    return summary


def _group_rows(
    out: Path, name: str, meta: Mapping[str, Any], base_evals: Mapping[int, Mapping]
) -> list[dict[str, Any]]:
    """Accuracy of the clean baseline per value of each group_by column (per split)."""
    from phasejax.eval.stats import wilson_interval

    stored = {}
    path = out / name / GROUPS_FILE
    if path.is_file():
        stored = json.loads(path.read_text()).get("columns", {})
    rows = []
    for col in meta["group_by"]:
        for split, prefix in SPLITS.items():
            per_value: dict[str, list[tuple[int, int]]] = {}
            for seed in sorted(base_evals):
                e = base_evals[seed].get(split)
                if e is None:
                    continue
                if col == "site":
                    keys = e.sites
                elif col in stored:
                    keys = np.array([stored[col].get(s, "") for s in e.series_ids], dtype=str)
                else:
                    continue
                for key in sorted(set(keys.tolist())):
                    sel = keys == key
                    k = int(np.sum(e.pred[sel] == e.y_true[sel]))
                    per_value.setdefault(key, []).append((k, int(sel.sum())))
            for key, counts in sorted(per_value.items(), key=lambda kv: _natural(kv[0])):
                st = seed_stats([k / n for k, n in counts])
                k_mean = sum(k for k, _ in counts) / len(counts)
                n = counts[0][1]
                lo, hi = wilson_interval(int(round(k_mean)), n, CONFIDENCE)
                rows.append(
                    {
                        "group_by": col,
                        "group": key or "(none)",
                        "split": prefix,
                        "n": n,
                        "seeds": st["n"],
                        "acc_mean": st["mean"],
                        "acc_std": st["std"],
                        "acc_lo": st["lo"] if st["n"] >= 2 else lo,
                        "acc_hi": st["hi"] if st["n"] >= 2 else hi,
                        "ci": f"t over {st['n']} seeds" if st["n"] >= 2 else "Wilson, 1 seed",
                    }
                )
    return rows


def _natural(text: str) -> tuple:
    """Numbers in numeric order (kVp 80 < 100 < 120), then text."""
    try:
        return (0, float(text), "")
    except ValueError:
        return (1, 0.0, text)


# --------------------------------------------------------------------------- writing


def _fmt(v: Any, pct: bool = False, digits: int = 1) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    if pct:
        return f"{100 * v:.{digits}f}"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if _is_nan(r.get(k)) else csv_cell(r.get(k, ""))) for k in cols})
    return path


def _is_nan(v: Any) -> bool:
    return isinstance(v, float) and not math.isfinite(v)


def _acc_cell(row: Mapping[str, Any], prefix: str) -> str:
    m = row[f"{prefix}_acc_mean"]
    if not np.isfinite(m):
        return "n/a"
    sd = row[f"{prefix}_acc_std"]
    sd_txt = f" ± {_fmt(sd, True)}" if np.isfinite(sd) else ""
    return (
        f"{_fmt(m, True)}{sd_txt} [{_fmt(row[f'{prefix}_acc_lo'], True)}, "
        f"{_fmt(row[f'{prefix}_acc_hi'], True)}]"
    )


def _nll_cell(row: Mapping[str, Any]) -> str:
    """Mean ± SD over seeds of the real set's log score, and the seed ensemble's."""
    m = row.get("real_nll_mean", math.nan)
    if not np.isfinite(m):
        return "n/a"
    sd = row.get("real_nll_std", math.nan)
    sd_txt = f" ± {sd:.2f}" if np.isfinite(sd) else ""
    return f"{m:.2f}{sd_txt} (ens. {row['real_nll_ensemble']:.2f})"


def markdown(summary: SuiteSummary) -> str:
    meta = summary.meta
    lines = [
        f"## {summary.name}",
        "",
        f"**Question.** {meta.get('question', '')}",
        "",
        f"Axis: `{meta.get('axis', '')}`; baseline: `{meta.get('baseline', '')}`."
        + (f" Held fixed: `{meta['fixed']}`." if meta.get("fixed") else ""),
        "",
        "Accuracy in % (mean ± SD over seeds [95% interval: t over seeds, or Wilson for one "
        "seed]); p = exact McNemar vs baseline on the seed ensembles (per-seed p in "
        f"{summary.name}_paired.csv); a seed ensemble averages the seeds' probabilities.",
        "",
    ]
    sens = [f"sens {c} (int.)" for c in summary.classes]
    real = any(r.get("real_n") for r in summary.rows)
    if real:
        lines[-1:-1] = [
            "",
            "Real NLL: mean over the real series of -ln(probability given to the accepted "
            f"phases, floored at {ACCEPTED_NLL_FLOOR:g}), in nats, lower is better (mean ± SD over "
            "seeds, and of the seed ensemble); p (real NLL) = Wilcoxon signed-rank test of "
            "the ensembles' per-series values vs baseline. It tells recipes apart before "
            "either flips a call on a small real set.",
        ]
    header = [
        "value",
        "seeds",
        "internal acc",
        "p (int.)",
        "external acc",
        "p (ext.)",
        *(
            ["real acc", "p (real)", "real, seed ensemble", "real NLL", "p (real NLL)"]
            if real
            else []
        ),
        *sens,
        "EAP/LAP acc (int.)",
        "EAP/LAP acc (ext.)",
        "wall time (s)",
        "images/s",
    ]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join("---" for _ in header) + "|")
    # A suite run in part (`--only`): values without any finished run leave the table.
    shown = [r for r in summary.rows if r["seeds"]] or summary.rows
    not_run = [r["value"] for r in summary.rows if r not in shown]
    for r in shown:
        value = f"**{r['value']}** (baseline)" if r["baseline"] else r["value"]
        cells = [
            value,
            str(r["seeds"]),
            _acc_cell(r, "internal"),
            format_p(r.get("internal_p"), missing=""),
            _acc_cell(r, "external"),
            format_p(r.get("external_p"), missing=""),
            *(
                [
                    _acc_cell(r, "real"),
                    format_p(r.get("real_p"), missing=""),
                    f"{r['real_ensemble_correct']}/{r['real_ensemble_n']}"
                    if r["real_n"]
                    else "n/a",
                    _nll_cell(r),
                    format_p(r.get("real_nll_p"), missing=""),
                ]
                if real
                else []
            ),
            *(_fmt(r.get(f"internal_sens_{c}"), True) for c in summary.classes),
            _fmt(r.get("internal_eaplap_acc"), True),
            _fmt(r.get("external_eaplap_acc"), True),
            _fmt(
                r.get("wall_time_s") if r.get("wall_time_s") is None else round(r["wall_time_s"], 1)
            ),
            _fmt(
                r.get("images_per_s")
                if r.get("images_per_s") is None
                else round(r["images_per_s"], 1)
            ),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if summary.group_rows:
        lines += ["", "Clean baseline accuracy (%) per group:", ""]
        lines.append("| by | group | split | series | accuracy [95% interval] |")
        lines.append("|---|---|---|---|---|")
        for g in summary.group_rows:
            acc = (
                f"{_fmt(g['acc_mean'], True)} [{_fmt(g['acc_lo'], True)}, "
                f"{_fmt(g['acc_hi'], True)}]"
            )
            lines.append(f"| {g['group_by']} | {g['group']} | {g['split']} | {g['n']} | {acc} |")
    if not_run:
        lines += ["", f"Values without a finished run (not in the table): {', '.join(not_run)}."]
    unrun = {
        rid
        for v in summary.meta.get("values", [])
        if v["label"] in not_run
        for rid in v["runs"].values()
    }
    partial = [rid for rid in summary.missing if rid not in unrun]
    if partial:
        lines += ["", f"Runs without results yet: {', '.join(partial)}."]
    return "\n".join(lines) + "\n"


def summarize(
    out: str | Path,
    *,
    figures: bool = True,
    n_bootstrap: int = 1000,
) -> list[Path]:
    """Write every table and figure of DIR/summary/ from DIR/plan.json and the results files."""
    out = Path(out)
    plan = read_plan(out)
    dest = out / SUMMARY_DIR
    dest.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    summaries: list[SuiteSummary] = []
    cache: dict[str, dict | None] = {}
    for name, meta in plan["suites"].items():
        s = summarize_suite(out, name, meta, n_bootstrap=n_bootstrap, _cache=cache)
        summaries.append(s)
        written.append(_write_csv(dest / f"{name}.csv", s.rows))
        written.append(_write_csv(dest / f"{name}_paired.csv", s.paired_rows))
        written.append(_write_csv(dest / f"{name}_runs.csv", s.run_rows))
        if s.group_rows:
            written.append(_write_csv(dest / f"{name}_groups.csv", s.group_rows))
        md = dest / f"{name}.md"
        md.write_text(markdown(s))
        written.append(md)
    if figures:
        from phasejax.plotting.ablation import plot_overview, plot_suite

        for s in summaries:
            if any(r["seeds"] for r in s.rows):
                written += plot_suite(s.rows, s.meta, dest / s.name, groups=s.group_rows)
        drawable = [(s.rows, s.meta) for s in summaries if any(r["seeds"] for r in s.rows)]
        if drawable:
            written += plot_overview(drawable, dest / "overview")
    index = dest / "README.md"
    parts = [f"# Ablation summary: {out.name} (preset {plan.get('preset') or 'custom'})", ""]
    for s in summaries:
        parts.append(markdown(s))
        if figures and (dest / f"{s.name}.png").exists():
            parts.append(f"![{s.name}]({s.name}.png)\n")
    if figures and (dest / "overview.png").exists():
        parts.append("![overview](overview.png)\n")
    index.write_text("\n".join(parts))
    written.append(index)
    return written
