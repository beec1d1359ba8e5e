"""Confidence intervals, the exact McNemar test and bootstrap helpers (host-side numpy/scipy).

Conventions used throughout phasejax.eval:

- Proportions (accuracy, sensitivity, ...) get the Wilson score interval without continuity
  correction (Wilson 1927; recommended over Wald by Newcombe, Stat Med 1998;17:857). It
  stays inside [0, 1] and is sensible at 283/288-like proportions near 1, where the Wald
  interval overshoots.
- Quantities that are not a single proportion (F1, AUC, macro-F1) get percentile bootstrap
  intervals. When patient ids are given the bootstrap resamples PATIENTS (cluster
  bootstrap): the paper's series are three phases of one exam, which share anatomy and
  circulation, so series are not independent and a series-level bootstrap would be too
  narrow.
- A bootstrap resample is represented as integer weights (how often each series was
  drawn), so statistics are computed as weighted sums without copying arrays.
- Undefined values (0/0) are NaN here; phasejax.eval.metrics turns them into JSON null.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
from scipy import stats as sps

DEFAULT_CONFIDENCE = 0.95


def _z(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return float(sps.norm.ppf(0.5 + confidence / 2.0))


def wilson_interval(k: int, n: int, confidence: float = DEFAULT_CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval of the proportion k/n; (nan, nan) when n == 0."""
    k, n = int(k), int(n)
    if n < 0 or not 0 <= k <= max(n, 0):
        raise ValueError(f"wilson_interval needs 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return (float("nan"), float("nan"))
    z = _z(confidence)
    p = k / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # Clamp only float rounding: at k == 0 / k == n the exact bound is 0 / 1.
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return (float(lo), float(hi))


def mcnemar_exact(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value from the discordant counts b and c.

    Under H0 the b + c discordant pairs split 50:50, so the p-value is the two-sided binomial
    tail 2 * P(X <= min(b, c)), X ~ Bin(b + c, 1/2), capped at 1. No discordant pairs -> 1.
    """
    b, c = int(b), int(c)
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got b={b}, c={c}")
    n = b + c
    if n == 0:
        return 1.0
    return float(min(1.0, 2.0 * sps.binom.cdf(min(b, c), n, 0.5)))


def newcombe_paired_interval(
    n11: int, n10: int, n01: int, n00: int, confidence: float = DEFAULT_CONFIDENCE
) -> tuple[float, float]:
    """Interval for p1 - p2 of two paired proportions (Newcombe 1998, method 10).

    Table: n11 both successes, n10 success under 1 only, n01 success under 2 only, n00 neither;
    p1 = (n11 + n10) / n, p2 = (n11 + n01) / n. Combines the Wilson intervals of p1 and p2 with
    the correlation phi of the paired table (Newcombe, Stat Med 1998;17:2635, method 10 as
    worked in Altman et al., "Statistics with Confidence", 2nd ed., p. 52: phi's numerator
    n11*n00 - n10*n01 is reduced by n/2 when positive and set to 0 when in (0, n/2]).
    """
    n11, n10, n01, n00 = (int(v) for v in (n11, n10, n01, n00))
    n = n11 + n10 + n01 + n00
    if n == 0:
        return (float("nan"), float("nan"))
    p1, p2 = (n11 + n10) / n, (n11 + n01) / n
    l1, u1 = wilson_interval(n11 + n10, n, confidence)
    l2, u2 = wilson_interval(n11 + n01, n, confidence)
    marg = float(n11 + n10) * (n01 + n00) * (n11 + n01) * (n10 + n00)
    phi = 0.0
    if marg > 0:
        num = n11 * n00 - n10 * n01
        num = num - n / 2 if num > n / 2 else (num if num < 0 else 0.0)
        phi = num / np.sqrt(marg)
    d = p1 - p2
    lo = d - np.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    hi = d + np.sqrt(max(0.0, (p2 - l2) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1) + (u1 - p1) ** 2))
    return (float(max(-1.0, lo)), float(min(1.0, hi)))


# --------------------------------------------------------------------------- bootstrap


def bootstrap_weights(
    n: int,
    n_bootstrap: int,
    *,
    seed: int = 0,
    groups: Sequence[str] | np.ndarray | None = None,
    chunk: int = 250,
) -> Iterator[np.ndarray]:
    """Yield bootstrap resamples as int32 weight matrices [chunk, n] (times each item drawn).

    Without `groups`, n items are drawn with replacement. With `groups` (one label per item,
    e.g. patient ids), the distinct groups are drawn with replacement and every item of a
    drawn group gets that group's count (cluster bootstrap). Deterministic for a given
    (n, n_bootstrap, seed, groups, chunk).
    """
    if n_bootstrap < 0:
        raise ValueError(f"n_bootstrap must be >= 0, got {n_bootstrap}")
    rng = np.random.default_rng(seed)
    if groups is None:
        inverse = np.arange(n)
        n_units = n
    else:
        groups = np.asarray(groups)
        if groups.shape != (n,):
            raise ValueError(f"groups has shape {groups.shape}, expected ({n},)")
        _, inverse = np.unique(groups, return_inverse=True)
        inverse = inverse.reshape(-1)
        n_units = int(inverse.max()) + 1 if n else 0
    if n_units == 0:
        return
    pvals = np.full(n_units, 1.0 / n_units)
    done = 0
    while done < n_bootstrap:
        size = min(chunk, n_bootstrap - done)
        counts = rng.multinomial(n_units, pvals, size=size).astype(np.int32)
        yield counts[:, inverse]
        done += size


def percentile_interval(
    values: np.ndarray, confidence: float = DEFAULT_CONFIDENCE
) -> tuple[float, float]:
    """Percentile interval of bootstrap replicates, ignoring NaN (undefined) replicates."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return (float("nan"), float("nan"))
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(values, [alpha, 1.0 - alpha])
    return (float(lo), float(hi))


def bootstrap_statistic(
    statistic: Callable[[np.ndarray], np.ndarray],
    n: int,
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
    groups: Sequence[str] | np.ndarray | None = None,
) -> np.ndarray:
    """Replicates of a weighted statistic: `statistic(weights [B, n]) -> [B]` or [B, ...].

    Returns the concatenated replicates (first axis n_bootstrap); pass them to
    `percentile_interval` (per column for a vector statistic).
    """
    parts = [
        np.asarray(statistic(w))
        for w in bootstrap_weights(n, n_bootstrap, seed=seed, groups=groups)
    ]
    if not parts:
        return np.full((0,), np.nan)
    return np.concatenate(parts, axis=0)


# --------------------------------------------------------------------------- paired comparison


def compare_paired(
    y_true: np.ndarray,
    pred_a: np.ndarray,
    pred_b: np.ndarray,
    patient_ids: Sequence[str] | np.ndarray | None = None,
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
    confidence: float = DEFAULT_CONFIDENCE,
) -> dict:
    """Paired comparison of two classifiers' predictions on the same series.

    b = series A got right and B got wrong, c = A wrong and B right; the exact McNemar test
    uses only these. `difference` = accuracy(B) - accuracy(A) (so with A = one-step and
    B = two-step a positive value favours the two-step method, as in the paper) with the
    Newcombe paired interval, which treats series as independent. When `patient_ids` are
    given, `difference_bootstrap` adds a percentile interval from a bootstrap over patients,
    which respects the correlation of one patient's series; report that one when each
    patient contributes several series. Series with y_true < 0 (unlabelled) are ignored.
    """
    y_true = np.asarray(y_true).reshape(-1)
    pred_a = np.asarray(pred_a).reshape(-1)
    pred_b = np.asarray(pred_b).reshape(-1)
    if not (y_true.shape == pred_a.shape == pred_b.shape):
        raise ValueError(
            f"y_true, pred_a, pred_b must have equal length, got "
            f"{y_true.shape[0]}, {pred_a.shape[0]}, {pred_b.shape[0]}"
        )
    keep = y_true >= 0
    groups = None
    if patient_ids is not None:
        groups = np.asarray(patient_ids).reshape(-1)
        if groups.shape != y_true.shape:
            raise ValueError(f"patient_ids has {groups.shape[0]} entries, expected {y_true.size}")
        groups = groups[keep]
    y, a, bb = y_true[keep], pred_a[keep], pred_b[keep]
    ok_a, ok_b = a == y, bb == y
    n = int(y.size)
    n11 = int(np.sum(ok_a & ok_b))
    n_b = int(np.sum(ok_a & ~ok_b))
    n_c = int(np.sum(~ok_a & ok_b))
    n00 = int(np.sum(~ok_a & ~ok_b))
    acc_a = (n11 + n_b) / n if n else float("nan")
    acc_b = (n11 + n_c) / n if n else float("nan")
    out = {
        "n": n,
        "accuracy_a": {
            "value": acc_a,
            "k": n11 + n_b,
            "n": n,
            "ci": list(wilson_interval(n11 + n_b, n, confidence)),
        },
        "accuracy_b": {
            "value": acc_b,
            "k": n11 + n_c,
            "n": n,
            "ci": list(wilson_interval(n11 + n_c, n, confidence)),
        },
        "both_correct": n11,
        "b": n_b,
        "c": n_c,
        "both_wrong": n00,
        "mcnemar_p": mcnemar_exact(n_b, n_c),
        "test": "exact McNemar: two-sided binomial test of b vs c, p = 0.5",
        "difference": {
            "value": acc_b - acc_a,
            "ci": list(newcombe_paired_interval(n11, n_c, n_b, n00, confidence)),
            "method": "accuracy(B) - accuracy(A); Newcombe 1998 paired score interval",
        },
        "confidence": confidence,
    }
    if groups is not None and n:
        diff = (ok_b.astype(np.float64) - ok_a.astype(np.float64))[None, :]

        def stat(w: np.ndarray) -> np.ndarray:
            return (w * diff).sum(1) / w.sum(1)

        reps = bootstrap_statistic(stat, n, n_bootstrap=n_bootstrap, seed=seed, groups=groups)
        out["difference_bootstrap"] = {
            "ci": list(percentile_interval(reps, confidence)),
            "method": "percentile bootstrap over patients",
            "n_bootstrap": n_bootstrap,
            "n_patients": int(np.unique(groups).size),
            "seed": seed,
        }
    return jsonable(out)


def jsonable(obj: object) -> object:
    """Deep copy with numpy scalars/arrays as Python values and NaN/inf as None (JSON null).

    json.dumps would write NaN as the non-standard token NaN, which strict JSON readers
    (browsers, jq) reject; null is the documented "undefined" in phasejax results.
    """
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if np.isfinite(v) else None
    return obj
