"""Per-series classification metrics with intervals, and host-side per-series aggregation.

One metrics module for every strategy and ablation (DESIGN.md section 3). Everything is
host-side numpy/scipy; no jax, so it runs on results files long after training.

Undefined values: a quantity with a zero denominator (the sensitivity of a phase absent
from y_true, the PPV of a phase never predicted, the AUC of a phase with no positives or no
negatives) is NaN inside the functions below and null in `summarize`'s JSON-ready dict.
Unlabelled series (y_true == -1) are left out of every metric and counted in
`n_unlabelled`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from phasejax.eval.stats import (
    DEFAULT_CONFIDENCE,
    bootstrap_statistic,
    jsonable,
    percentile_interval,
    wilson_interval,
)
from phasejax.phases import LabelSet

DEFAULT_BINS = 10  # 10 equal-width confidence bins: ~29 series per bin on the paper's 288
MAJORITY_EPS = 1e-3  # must equal the epsilon of the model's in-graph majority vote
LOG_FLOOR = 1e-12  # probability floor for the log loss (a hard 0 on the true class)
# Floor of the accepted-set log score of a small labelled set (a real validation set): at most
# -ln(1e-3) = 6.9 nats per series, so that one confident miss does not outweigh the rest.
ACCEPTED_NLL_FLOOR = 1e-3


# --------------------------------------------------------------------------- basics


def _check_inputs(
    y_true: np.ndarray, probs: np.ndarray, classes: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true)
    probs = np.asarray(probs, dtype=np.float64)
    k = len(classes)
    if y_true.ndim != 1:
        raise ValueError(f"y_true must be 1-D, got shape {y_true.shape}")
    if probs.ndim != 2 or probs.shape != (y_true.shape[0], k):
        raise ValueError(
            f"probs must have shape (N, K) = ({y_true.shape[0]}, {k}) for classes "
            f"{list(classes)}, got {probs.shape}"
        )
    if y_true.size and not np.issubdtype(y_true.dtype, np.integer):
        raise ValueError(f"y_true must hold integer class indices, got dtype {y_true.dtype}")
    if y_true.size and (y_true.min() < -1 or y_true.max() >= k):
        raise ValueError(f"y_true values must be in [-1, {k - 1}], got {np.unique(y_true)}")
    if not np.all(np.isfinite(probs)):
        raise ValueError("probs contain NaN or infinite values")
    if probs.size:
        if probs.min() < -1e-6:
            raise ValueError(f"probs must be >= 0, min is {probs.min():.3g}")
        worst = np.abs(probs.sum(1) - 1.0).max()
        if worst > 1e-3:
            raise ValueError(f"probs rows must sum to 1 (a row is off by {worst:.3g})")
    return y_true.astype(np.int64), probs


def accepted_nll(probs: np.ndarray, accepted: np.ndarray) -> np.ndarray:
    """Per-series log score of a set-valued reference: -ln(probability given to the accepted
    classes), floored at ACCEPTED_NLL_FLOOR; probs [N, K], accepted bool [N, K] -> [N].

    The log score is a proper scoring rule: on a small set, where right/wrong moves in large
    steps, it also counts how sure each call was, right or wrong.
    """
    p = np.sum(np.asarray(probs, np.float64) * np.asarray(accepted, bool), axis=-1)
    return -np.log(np.clip(p, ACCEPTED_NLL_FLOOR, 1.0))


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts [K, K]: row = true class, column = predicted class."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    flat = np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def row_normalise(cm: np.ndarray) -> np.ndarray:
    """Each row divided by its total (per-class recall on the diagonal); NaN rows when empty."""
    cm = np.asarray(cm, dtype=np.float64)
    totals = cm.sum(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, cm / np.where(totals > 0, totals, 1), np.nan)


def _ratio(k: float, n: float) -> float:
    return float(k) / float(n) if n else float("nan")


def _f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    # 2TP / (2TP + FP + FN): defined whenever the class occurs in truth or predictions, so a
    # phase that is present but never predicted scores 0 rather than undefined.
    denom = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1), np.nan)


def _macro(f1: np.ndarray) -> np.ndarray:
    """Mean F1 over the classes where it is defined (last axis)."""
    defined = np.isfinite(f1)
    count = defined.sum(-1)
    total = np.where(defined, f1, 0.0).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.where(count > 0, count, 1), np.nan)


def weighted_confusion(
    y_true: np.ndarray, y_pred: np.ndarray, num_classes: int, weights: np.ndarray
) -> np.ndarray:
    """Confusion matrices [B, K, K] for bootstrap weights [B, N]."""
    flat = np.asarray(y_true) * num_classes + np.asarray(y_pred)
    onehot = np.zeros((flat.size, num_classes * num_classes))
    onehot[np.arange(flat.size), flat] = 1.0
    return (np.asarray(weights, dtype=np.float64) @ onehot).reshape(-1, num_classes, num_classes)


def _cm_parts(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    fp = cm.sum(-2) - tp
    fn = cm.sum(-1) - tp
    return tp, fp, fn


# --------------------------------------------------------------------------- ROC / AUC


def weighted_auc(scores: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """One-vs-rest AUC for each row of weights [B, N] (Mann-Whitney, ties count 1/2).

    AUC = P(score of a random positive > score of a random negative); NaN without positives
    or without negatives. Scores are sorted once and shared by every bootstrap replicate.
    """
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    if scores.size == 0:
        return np.full(weights.shape[0], np.nan)
    order = np.argsort(scores, kind="stable")
    s = scores[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    w = weights[:, order]
    pos = positive[order]
    wp = np.add.reduceat(w * pos, starts, axis=1)  # positive weight per tie group
    wn = np.add.reduceat(w * ~pos, starts, axis=1)
    below = np.cumsum(wn, axis=1) - wn  # negative weight strictly below each group
    num = (wp * (below + 0.5 * wn)).sum(1)
    den = wp.sum(1) * wn.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def binary_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC of scores for a binary target (NaN when one class is missing)."""
    scores = np.asarray(scores)
    return float(weighted_auc(scores, positive, np.ones((1, scores.size)))[0])


def roc_curve(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) from (0, 0) to (1, 1), one point per distinct threshold, collinear points of
    a run of tied negatives or positives dropped (the curve is unchanged)."""
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return np.array([]), np.array([])
    order = np.argsort(-scores, kind="stable")
    s, p = scores[order], positive[order]
    last = np.r_[np.flatnonzero(s[1:] != s[:-1]), s.size - 1]  # last index of each tie group
    tps = np.cumsum(p)[last]
    fps = np.cumsum(~p)[last]
    tpr = np.r_[0.0, tps / n_pos]
    fpr = np.r_[0.0, fps / n_neg]
    if tpr.size > 2:
        # keep a point only where the direction changes (corners of the staircase)
        d1 = np.diff(fpr)[:-1] * np.diff(tpr)[1:] - np.diff(tpr)[:-1] * np.diff(fpr)[1:]
        keep = np.r_[True, d1 != 0, True]
        fpr, tpr = fpr[keep], tpr[keep]
    return fpr, tpr


# --------------------------------------------------------------------------- calibration


def reliability_curve(
    probs: np.ndarray, y_true: np.ndarray, n_bins: int = DEFAULT_BINS
) -> dict[str, np.ndarray]:
    """Top-label reliability data on equal-width confidence bins (Guo et al., ICML 2017).

    Bin m is ((m-1)/M, m/M] (the first bin also takes confidence 0). Returns arrays lower,
    upper, count, confidence (mean max-probability) and accuracy per bin; NaN in empty bins.
    """
    probs = np.asarray(probs, dtype=np.float64)
    y_true = np.asarray(y_true)
    conf = probs.max(1) if probs.size else np.zeros(0)
    correct = (probs.argmax(1) == y_true) if probs.size else np.zeros(0, bool)
    edges = np.arange(n_bins + 1) / n_bins  # exact decimals (linspace gives 0.30000000000000004)
    idx = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    sum_conf = np.bincount(idx, weights=conf, minlength=n_bins)
    sum_acc = np.bincount(idx, weights=correct.astype(np.float64), minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.where(count > 0, sum_conf / np.maximum(count, 1), np.nan)
        acc = np.where(count > 0, sum_acc / np.maximum(count, 1), np.nan)
    return {
        "lower": edges[:-1],
        "upper": edges[1:],
        "count": count,
        "confidence": mean_conf,
        "accuracy": acc,
    }


def expected_calibration_error(
    probs: np.ndarray, y_true: np.ndarray, n_bins: int = DEFAULT_BINS
) -> float:
    """ECE = sum_m (|B_m| / N) * |accuracy(B_m) - confidence(B_m)| over equal-width bins."""
    curve = reliability_curve(probs, y_true, n_bins)
    n = curve["count"].sum()
    if n == 0:
        return float("nan")
    gap = np.abs(curve["accuracy"] - curve["confidence"])
    return float(np.nansum(curve["count"] * gap) / n)


# --------------------------------------------------------------------------- aggregation


def aggregate_slices(
    slice_log_probs: np.ndarray, method: str = "mean_logprob", *, eps: float = MAJORITY_EPS
) -> np.ndarray:
    """Per-series log-probabilities [B, K] from per-slice log-probabilities [B, S, K].

    Mirrors the model's in-graph aggregation (cfg.model.aggregation), for re-evaluating saved
    slice outputs: "mean_logprob" = log_softmax of the mean slice log-probability (a
    geometric mean of the slice distributions, renormalised); "majority" = vote shares of the
    slices' argmax classes, smoothed by eps so that no class has probability 0:
    p = (votes / S + eps) / (1 + K * eps). Ties in a slice's argmax go to the lower index,
    as with jnp.argmax.
    """
    lp = np.asarray(slice_log_probs, dtype=np.float64)
    if lp.ndim != 3:
        raise ValueError(f"slice_log_probs must be [B, S, K], got shape {lp.shape}")
    _, s, k = lp.shape
    if method == "mean_logprob":
        m = lp.mean(1)
        mx = m.max(1, keepdims=True)
        return m - (mx + np.log(np.exp(m - mx).sum(1, keepdims=True)))
    if method == "majority":
        votes = np.eye(k)[lp.argmax(2)].sum(1) / s
        return np.log((votes + eps) / (1.0 + k * eps))
    raise ValueError(f"unknown aggregation {method!r}; use 'mean_logprob' or 'majority'")


def combine_two_step(log_p1: np.ndarray, log_p2: np.ndarray, label_set: LabelSet) -> np.ndarray:
    """Final log-probabilities [B, K] of strategy B from its two networks' outputs.

    log_p1 [B, K1] over label_set.step1_classes (AP in place of EAP/LAP), log_p2 [B, 2] over
    {EAP, LAP} given AP. log p(EAP) = log p1(AP) + log p2(EAP | AP); a non-arterial phase keeps
    its step-1 log-probability (DESIGN.md section 1, strategy B).
    """
    log_p1 = np.asarray(log_p1, dtype=np.float64)
    log_p2 = np.asarray(log_p2, dtype=np.float64)
    k1, k2 = len(label_set.step1_classes), len(label_set.step2_classes)
    if log_p1.ndim != 2 or log_p1.shape[1] != k1:
        raise ValueError(f"log_p1 must be [B, {k1}] {label_set.step1_classes}, got {log_p1.shape}")
    if log_p2.shape != (log_p1.shape[0], k2):
        raise ValueError(f"log_p2 must be [{log_p1.shape[0]}, {k2}], got {log_p2.shape}")
    cols = [
        log_p1[:, s1] + (log_p2[:, s2] if s2 >= 0 else 0.0) for s1, s2 in label_set.two_step_paths()
    ]
    return np.stack(cols, axis=1)


# --------------------------------------------------------------------------- summaries


def per_site_accuracy(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    sites: Sequence[str],
    confidence: float = DEFAULT_CONFIDENCE,
) -> dict[str, dict]:
    """Accuracy with a Wilson interval per site (labelled series only), sites sorted by name."""
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    sites = np.asarray(sites)
    out: dict[str, dict] = {}
    for site in sorted(set(sites[y_true >= 0].tolist())):
        sel = (sites == site) & (y_true >= 0)
        n = int(sel.sum())
        k = int((y_pred[sel] == y_true[sel]).sum())
        out[site] = {"value": _ratio(k, n), "k": k, "n": n, "ci": list(wilson_interval(k, n))}
    return jsonable(out)  # type: ignore[return-value]


def _proportion(k: int, n: int, confidence: float) -> dict:
    return {
        "value": _ratio(k, n),
        "k": int(k),
        "n": int(n),
        "ci": list(wilson_interval(k, n, confidence)),
    }


def summarize(
    y_true: np.ndarray,
    probs: np.ndarray,
    classes: Sequence[str],
    patient_ids: Sequence[str] | None = None,
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
    confidence: float = DEFAULT_CONFIDENCE,
    n_bins: int = DEFAULT_BINS,
) -> dict:
    """Every per-series metric of one split, JSON-serialisable (undefined values are null).

    y_true (N,) int class indices (-1 = unlabelled, excluded); probs (N, K) rows summing to 1;
    the prediction is argmax(probs). Keys:

    - n, n_unlabelled, n_patients (null without patient_ids), classes
    - accuracy: value, k, n, ci (Wilson), ci_bootstrap (percentile bootstrap)
    - macro_f1: value (mean F1 over the classes occurring in truth or prediction), ci
    - log_loss: mean -log p(true class) (floored at 1e-12)
    - per_class[code]: support, predicted, sensitivity / specificity / ppv / npv (each value,
      k, n, ci Wilson), f1 (value, ci bootstrap), auc (one-vs-rest, value, ci bootstrap)
    - confusion: counts [K][K] (row true, column predicted), row_normalised
    - roc[code]: fpr, tpr lists (null for a class without positives or negatives)
    - calibration: ece, n_bins, bins (lower, upper, count, confidence, accuracy)
    - bootstrap: n_resamples, unit ("patient" when patient_ids given, else "series"), seed,
      confidence, method

    Bootstrap intervals resample patients when patient_ids are given (cluster bootstrap,
    see phasejax.eval.stats), else series.
    """
    classes = [str(c) for c in classes]
    y_all, p_all = _check_inputs(y_true, probs, classes)
    k = len(classes)
    keep = y_all >= 0
    y, p = y_all[keep], p_all[keep]
    groups = None
    if patient_ids is not None:
        pid = np.asarray(patient_ids).reshape(-1)
        if pid.shape[0] != y_all.shape[0]:
            raise ValueError(f"patient_ids has {pid.shape[0]} entries, expected {y_all.shape[0]}")
        groups = pid[keep]
    n = int(y.size)
    pred = p.argmax(1) if n else np.zeros(0, np.int64)
    cm = confusion_matrix(y, pred, k)
    tp, fp, fn = _cm_parts(cm)
    tn = n - tp - fp - fn
    f1 = _f1(tp.astype(float), fp.astype(float), fn.astype(float))
    correct = int(tp.sum())
    auc = np.array([binary_auc(p[:, j], y == j) for j in range(k)]) if n else np.full(k, np.nan)

    # One pass over bootstrap replicates for every interval that needs it.
    nb = n_bootstrap if n else 0
    ok = (pred == y).astype(np.float64)

    def replicate(w: np.ndarray) -> np.ndarray:
        cms = weighted_confusion(y, pred, k, w)
        rf1 = _f1(*_cm_parts(cms))
        wsum = w.sum(1)
        acc = (w * ok).sum(1) / np.where(wsum > 0, wsum, 1)
        raucs = np.stack([weighted_auc(p[:, j], y == j, w) for j in range(k)], axis=1)
        return np.concatenate([acc[:, None], _macro(rf1)[:, None], rf1, raucs], axis=1)

    reps = bootstrap_statistic(replicate, n, n_bootstrap=nb, seed=seed, groups=groups)
    reps = reps.reshape(-1, 2 + 2 * k) if reps.size else np.full((0, 2 + 2 * k), np.nan)

    def ci(col: int, defined: bool = True) -> list[float]:
        if not defined:
            return [float("nan"), float("nan")]
        return list(percentile_interval(reps[:, col], confidence))

    per_class = {}
    roc = {}
    for j, code in enumerate(classes):
        per_class[code] = {
            "support": int(cm[j].sum()),
            "predicted": int(cm[:, j].sum()),
            "sensitivity": _proportion(tp[j], tp[j] + fn[j], confidence),
            "specificity": _proportion(tn[j], tn[j] + fp[j], confidence),
            "ppv": _proportion(tp[j], tp[j] + fp[j], confidence),
            "npv": _proportion(tn[j], tn[j] + fn[j], confidence),
            "f1": {"value": f1[j], "ci": ci(2 + j, bool(np.isfinite(f1[j])))},
            "auc": {"value": auc[j], "ci": ci(2 + k + j, bool(np.isfinite(auc[j])))},
        }
        fpr, tpr = roc_curve(p[:, j], y == j)
        roc[code] = {"fpr": fpr, "tpr": tpr} if fpr.size else None

    macro = float(_macro(f1[None, :])[0])
    true_p = p[np.arange(n), y] if n else np.zeros(0)
    curve = reliability_curve(p, y, n_bins)
    out = {
        "classes": classes,
        "n": n,
        "n_unlabelled": int((~keep).sum()),
        "n_patients": int(np.unique(groups).size) if groups is not None else None,
        "accuracy": {
            **_proportion(correct, n, confidence),
            "ci_bootstrap": ci(0, n > 0),
        },
        "macro_f1": {"value": macro, "ci": ci(1, bool(np.isfinite(macro)))},
        "log_loss": float(-np.log(np.maximum(true_p, LOG_FLOOR)).mean()) if n else float("nan"),
        "per_class": per_class,
        "confusion": {"counts": cm, "row_normalised": row_normalise(cm)},
        "roc": roc,
        "calibration": {
            "ece": expected_calibration_error(p, y, n_bins),
            "n_bins": n_bins,
            "bins": curve,
        },
        "bootstrap": {
            "n_resamples": nb,
            "unit": "patient" if groups is not None else "series",
            "seed": seed,
            "confidence": confidence,
            "method": "percentile",
        },
    }
    return jsonable(out)  # type: ignore[return-value]
