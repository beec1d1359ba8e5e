"""Intervals, exact McNemar and the paired comparison against hand-computed values."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from phasejax.eval import paper
from phasejax.eval.stats import (
    bootstrap_weights,
    compare_paired,
    jsonable,
    mcnemar_exact,
    newcombe_paired_interval,
    percentile_interval,
    wilson_interval,
)

Z95 = 1.959963984540054  # standard normal 97.5% quantile


def test_wilson_283_of_288_matches_closed_form():
    # The paper's internal two-step accuracy. Closed form evaluated with mpmath at 30 digits:
    # centre (p + z^2/2n) / (1 + z^2/n) -/+ z sqrt(p(1-p)/n + z^2/4n^2) / (1 + z^2/n).
    lo, hi = wilson_interval(283, 288)
    assert lo == pytest.approx(0.9600098428901799, abs=1e-12)
    assert hi == pytest.approx(0.9925621498738837, abs=1e-12)


def test_wilson_edges_have_closed_forms():
    n = 61
    # k = 0: [0, z^2 / (n + z^2)]; k = n: [n / (n + z^2), 1]
    assert wilson_interval(0, n) == (0.0, pytest.approx(Z95**2 / (n + Z95**2), rel=1e-12))
    assert wilson_interval(n, n) == (pytest.approx(n / (n + Z95**2), rel=1e-12), 1.0)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
    with pytest.raises(ValueError, match="0 <= k <= n"):
        wilson_interval(5, 3)


def test_wilson_wider_at_higher_confidence():
    lo95, hi95 = wilson_interval(58, 61, 0.95)
    lo99, hi99 = wilson_interval(58, 61, 0.99)
    assert lo99 < lo95 < 58 / 61 < hi95 < hi99


def test_mcnemar_exact_on_known_discordant_counts():
    # b = 1, c = 20: p = 2 * P(Bin(21, 1/2) <= 1) = 2 * (1 + 21) / 2^21
    assert mcnemar_exact(1, 20) == pytest.approx(2 * 22 / 2**21, rel=1e-12)
    assert mcnemar_exact(20, 1) == mcnemar_exact(1, 20)
    # b = 0, c = 19 (the smallest table consistent with the paper's 283 vs 264): 2 / 2^19
    assert mcnemar_exact(0, 19) == pytest.approx(2 / 2**19, rel=1e-12)
    # 2 * P(Bin(6, 1/2) <= 3) = 2 * 42/64 > 1 -> capped at 1
    assert mcnemar_exact(3, 3) == 1.0
    # b = 2, c = 8: 2 * (1 + 10 + 45) / 1024
    assert mcnemar_exact(2, 8) == pytest.approx(112 / 1024, rel=1e-12)
    assert mcnemar_exact(0, 0) == 1.0


def test_newcombe_paired_matches_published_example():
    # Cavo et al. 2012 table [[59, 6], [16, 80]] as worked in Fagerland, Lydersen & Laake,
    # "Statistical Analysis of Contingency Tables" (2017), ch. 8: -0.0621 (-0.1186 to -0.0046).
    lo, hi = newcombe_paired_interval(59, 6, 16, 80)
    assert lo == pytest.approx(-0.1186, abs=5e-5)
    assert hi == pytest.approx(-0.0046, abs=5e-5)


def test_newcombe_perfect_agreement_has_closed_form():
    # Every pair a success: phi = 0 and each side is the Wilson distance z^2 / (n + z^2).
    n = 288
    lo, hi = newcombe_paired_interval(n, 0, 0, 0)
    assert lo == pytest.approx(-(Z95**2) / (n + Z95**2), rel=1e-12)
    assert hi == pytest.approx(Z95**2 / (n + Z95**2), rel=1e-12)


def _paired_arrays(n11: int, b: int, c: int, n00: int) -> tuple[np.ndarray, ...]:
    """y_true all 0; A right on n11 + b series, B right on n11 + c."""
    a_ok = np.r_[np.ones(n11), np.ones(b), np.zeros(c), np.zeros(n00)].astype(bool)
    b_ok = np.r_[np.ones(n11), np.zeros(b), np.ones(c), np.zeros(n00)].astype(bool)
    y = np.zeros(a_ok.size, np.int64)
    return y, np.where(a_ok, 0, 1), np.where(b_ok, 0, 2)


def test_compare_paired_counts_p_and_difference():
    # The paper's internal numbers with b = 1, c = 20: A (one-step) 264/288, B (two-step) 283/288.
    y, pa, pb = _paired_arrays(263, 1, 20, 4)
    out = compare_paired(y, pa, pb)
    assert (out["n"], out["both_correct"], out["b"], out["c"], out["both_wrong"]) == (
        288, 263, 1, 20, 4,
    )  # fmt: skip
    assert out["accuracy_a"]["k"] == 264 and out["accuracy_b"]["k"] == 283
    assert out["mcnemar_p"] == pytest.approx(2 * 22 / 2**21, rel=1e-12)
    assert out["difference"]["value"] == pytest.approx(19 / 288)
    # B - A with the table oriented (both, B only, A only, neither)
    assert out["difference"]["ci"] == pytest.approx(list(newcombe_paired_interval(263, 20, 1, 4)))
    assert out["accuracy_b"]["ci"] == pytest.approx(list(wilson_interval(283, 288)))
    assert "difference_bootstrap" not in out
    json.dumps(out, allow_nan=False)


def test_compare_paired_ignores_unlabelled_and_bootstraps_by_patient():
    y, pa, pb = _paired_arrays(20, 2, 8, 0)
    y = np.r_[y, -1, -1]
    pa, pb = np.r_[pa, 0, 0], np.r_[pb, 0, 0]
    patients = [f"p{i // 3}" for i in range(y.size)]
    out = compare_paired(y, pa, pb, patients, n_bootstrap=400, seed=1)
    assert out["n"] == 30 and (out["b"], out["c"]) == (2, 8)
    boot = out["difference_bootstrap"]
    assert boot["n_patients"] == 10  # the last patient holds only the 2 unlabelled series
    assert boot["ci"][0] < 6 / 30 < boot["ci"][1]
    again = compare_paired(y, pa, pb, patients, n_bootstrap=400, seed=1)
    assert again["difference_bootstrap"]["ci"] == boot["ci"]


def test_compare_paired_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="equal length"):
        compare_paired(np.zeros(3, int), np.zeros(3, int), np.zeros(2, int))


def test_cluster_bootstrap_keeps_patients_whole():
    groups = np.array(["a", "a", "a", "b", "b", "c"])
    for w in bootstrap_weights(6, 50, seed=3, groups=groups, chunk=20):
        assert w.shape[1] == 6
        # each patient's series share one count, and 3 patients are drawn per replicate
        assert np.all(w[:, 0] == w[:, 1]) and np.all(w[:, 1] == w[:, 2])
        assert np.all(w[:, 3] == w[:, 4])
        assert np.all(w[:, [0, 3, 5]].sum(1) == 3)
    total = sum(w.shape[0] for w in bootstrap_weights(6, 50, seed=3, groups=groups, chunk=20))
    assert total == 50


def test_percentile_interval_ignores_undefined_replicates():
    reps = np.r_[np.arange(101, dtype=float), np.nan, np.nan]
    assert percentile_interval(reps) == pytest.approx((2.5, 97.5))
    assert all(math.isnan(v) for v in percentile_interval(np.array([np.nan])))


def test_jsonable_turns_nan_into_null():
    out = jsonable({"a": np.float32(0.5), "b": float("nan"), "c": np.arange(2), "d": np.bool_(1)})
    assert out == {"a": 0.5, "b": None, "c": [0, 1], "d": True}


def test_paper_counts_reproduce_printed_percentages():
    counts = [
        *paper.INTERNAL_ACCURACY.values(),
        *paper.EXTERNAL_ACCURACY.values(),
        *paper.EXTERNAL_SENSITIVITY["two_step"].values(),
    ]
    for c in counts:
        assert round(100 * c.value, 1) == c.printed_percent
    sens = paper.EXTERNAL_SENSITIVITY["two_step"]
    ext = paper.EXTERNAL_ACCURACY["two_step"]
    # per-phase counts add up to the external total: 645 series, 639 correct, 215 exams x 3
    assert sum(c.n for c in sens.values()) == ext.n == 3 * paper.EXTERNAL_EXAMS
    assert sum(c.k for c in sens.values()) == ext.k
    # 19 net wins for the two-step method; with few discordant pairs (b = 0 or 1) the exact
    # McNemar p is below the paper's bound of 0.001
    internal = paper.INTERNAL_ACCURACY
    assert internal["two_step"].k - internal["one_step"].k == 19
    assert mcnemar_exact(0, 19) < paper.INTERNAL_P_VALUE_BOUND
    assert mcnemar_exact(1, 20) < paper.INTERNAL_P_VALUE_BOUND
    json.dumps(paper.published(), allow_nan=False)
