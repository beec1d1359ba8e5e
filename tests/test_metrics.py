"""Metrics, aggregation and results files against hand-computed values."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from phasejax.eval.metrics import (
    aggregate_slices,
    binary_auc,
    combine_two_step,
    confusion_matrix,
    expected_calibration_error,
    per_site_accuracy,
    reliability_curve,
    roc_curve,
    summarize,
    weighted_auc,
    weighted_confusion,
)
from phasejax.eval.results import (
    ResultsError,
    ensemble_results,
    load_results,
    make_results,
    paired_comparison,
    predictions_arrays,
    predictions_from_rows,
    split_results,
    write_results,
)
from phasejax.eval.stats import wilson_interval
from phasejax.phases import label_set

CLASSES = ["EAP", "LAP", "PVP", "DP"]
# rows = true phase, columns = predicted phase; 60 series, 54 correct
KNOWN_CM = np.array(
    [
        [8, 2, 0, 0],
        [1, 9, 0, 0],
        [0, 0, 18, 2],
        [0, 0, 1, 19],
    ]
)


def _from_confusion(cm: np.ndarray, confidence: float = 0.7) -> tuple[np.ndarray, np.ndarray]:
    """y_true and probs whose argmax reproduces the confusion matrix."""
    y, pred = [], []
    for t in range(cm.shape[0]):
        for p in range(cm.shape[1]):
            y += [t] * int(cm[t, p])
            pred += [p] * int(cm[t, p])
    k = cm.shape[0]
    probs = np.full((len(y), k), (1 - confidence) / (k - 1))
    probs[np.arange(len(y)), pred] = confidence
    return np.array(y), probs


# --------------------------------------------------------------------------- confusion


def test_known_confusion_matrix_gives_hand_computed_metrics():
    y, probs = _from_confusion(KNOWN_CM)
    s = summarize(y, probs, CLASSES, n_bootstrap=0)
    assert s["confusion"]["counts"] == KNOWN_CM.tolist()
    assert s["confusion"]["row_normalised"][0] == pytest.approx([0.8, 0.2, 0.0, 0.0])
    assert s["accuracy"]["k"] == 54 and s["accuracy"]["n"] == 60
    assert s["accuracy"]["value"] == pytest.approx(0.9)
    assert s["accuracy"]["ci"] == pytest.approx(list(wilson_interval(54, 60)))
    # hand counts per phase: (TP, FN, FP, TN)
    expected = {
        "EAP": (8, 2, 1, 49),
        "LAP": (9, 1, 2, 48),
        "PVP": (18, 2, 1, 39),
        "DP": (19, 1, 2, 38),
    }
    for code, (tp, fn, fp, tn) in expected.items():
        c = s["per_class"][code]
        assert c["support"] == tp + fn and c["predicted"] == tp + fp
        assert (c["sensitivity"]["k"], c["sensitivity"]["n"]) == (tp, tp + fn)
        assert c["sensitivity"]["value"] == pytest.approx(tp / (tp + fn))
        assert c["specificity"]["value"] == pytest.approx(tn / (tn + fp))
        assert c["ppv"]["value"] == pytest.approx(tp / (tp + fp))
        assert c["npv"]["value"] == pytest.approx(tn / (tn + fn))
        assert c["ppv"]["ci"] == pytest.approx(list(wilson_interval(tp, tp + fp)))
    f1 = {c: s["per_class"][c]["f1"]["value"] for c in CLASSES}
    assert f1 == pytest.approx({"EAP": 16 / 19, "LAP": 6 / 7, "PVP": 12 / 13, "DP": 38 / 41})
    assert s["macro_f1"]["value"] == pytest.approx(np.mean([16 / 19, 6 / 7, 12 / 13, 38 / 41]))
    # log loss: every series puts 0.7 on its prediction and 0.1 elsewhere
    assert s["log_loss"] == pytest.approx(-(54 * np.log(0.7) + 6 * np.log(0.1)) / 60)
    json.dumps(s, allow_nan=False)


def test_absent_class_gives_null_not_a_number():
    # no EAP in truth and none predicted: EAP's sensitivity, PPV, F1, AUC are undefined
    cm = KNOWN_CM.copy()
    cm[0] = 0
    cm[:, 0] = 0
    y, probs = _from_confusion(cm)
    s = summarize(y, probs, CLASSES, n_bootstrap=50)
    eap = s["per_class"]["EAP"]
    assert eap["support"] == 0 and eap["predicted"] == 0
    assert eap["sensitivity"]["value"] is None and eap["sensitivity"]["ci"] == [None, None]
    assert eap["ppv"]["value"] is None
    assert eap["f1"] == {"value": None, "ci": [None, None]}
    assert eap["auc"]["value"] is None
    assert eap["specificity"]["value"] == 1.0  # every series is a true negative
    assert s["roc"]["EAP"] is None
    assert s["confusion"]["row_normalised"][0] == [None, None, None, None]
    # macro-F1 averages the three phases that occur
    lap_f1 = 1.0  # LAP row is now [0, 9, 0, 0] and its column lost the EAP row's 2
    assert s["per_class"]["LAP"]["f1"]["value"] == pytest.approx(lap_f1)
    assert s["macro_f1"]["value"] == pytest.approx(np.mean([lap_f1, 12 / 13, 38 / 41]))
    json.dumps(s, allow_nan=False)


def test_unlabelled_series_are_excluded_and_counted():
    y, probs = _from_confusion(KNOWN_CM)
    y2 = np.r_[y, -1, -1, -1]
    probs2 = np.r_[probs, np.full((3, 4), 0.25)]
    s = summarize(y2, probs2, CLASSES, n_bootstrap=0)
    assert s["n"] == 60 and s["n_unlabelled"] == 3
    assert s["accuracy"]["k"] == 54


def test_summarize_rejects_bad_inputs():
    y, probs = _from_confusion(KNOWN_CM)
    with pytest.raises(ValueError, match=r"shape \(N, K\) = \(60, 3\)"):
        summarize(y, probs, CLASSES[:3])
    with pytest.raises(ValueError, match="sum to 1"):
        summarize(y, probs * 2, CLASSES)
    with pytest.raises(ValueError, match=r"\[-1, 3\]"):
        summarize(np.r_[y[:-1], 4], probs, CLASSES)


def test_empty_split_summarises_to_nulls():
    s = summarize(np.zeros(0, np.int64), np.zeros((0, 4)), CLASSES, [], n_bootstrap=20)
    assert s["n"] == 0 and s["accuracy"]["value"] is None and s["macro_f1"]["value"] is None
    json.dumps(s, allow_nan=False)


def test_weighted_confusion_equals_confusion_of_resampled_series():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 30)
    pred = rng.integers(0, 4, 30)
    w = rng.integers(0, 3, (5, 30))
    cms = weighted_confusion(y, pred, 4, w)
    for b in range(5):
        idx = np.repeat(np.arange(30), w[b])
        assert np.array_equal(cms[b], confusion_matrix(y[idx], pred[idx], 4))


# --------------------------------------------------------------------------- AUC / ROC


def test_auc_of_known_rankings():
    pos = np.array([1, 1, 0, 0, 0], bool)
    assert binary_auc(np.array([0.9, 0.8, 0.3, 0.2, 0.1]), pos) == 1.0  # perfect
    assert binary_auc(np.array([0.1, 0.2, 0.3, 0.8, 0.9]), pos) == 0.0  # reversed
    # hand count: positives 0.9 and 0.7 vs negatives 0.8, 0.6, 0.5 -> 3 + 2 of 6 pairs
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    mixed = np.array([1, 0, 1, 0, 0], bool)
    assert binary_auc(scores, mixed) == pytest.approx(5 / 6)
    # a tie between a positive and a negative counts one half: (0.5 + 1) / 2
    assert binary_auc(np.array([0.5, 0.5, 0.2]), np.array([1, 0, 0], bool)) == 0.75
    assert math.isnan(binary_auc(scores, np.ones(5, bool)))


def test_roc_curve_corners_of_hand_example():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    fpr, tpr = roc_curve(scores, np.array([1, 0, 1, 0, 0], bool))
    # (2/3, 1) lies on the segment (1/3, 1) -> (1, 1) and is dropped
    assert fpr == pytest.approx([0, 0, 1 / 3, 1 / 3, 1])
    assert tpr == pytest.approx([0, 0.5, 0.5, 1, 1])
    area = np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2)
    assert area == pytest.approx(5 / 6)


def test_weighted_auc_equals_auc_of_resampled_series():
    rng = np.random.default_rng(1)
    scores = np.round(rng.random(40), 1)  # rounding creates ties
    pos = rng.random(40) < 0.4
    w = rng.integers(0, 3, (6, 40))
    aucs = weighted_auc(scores, pos, w)
    for b in range(6):
        idx = np.repeat(np.arange(40), w[b])
        assert aucs[b] == pytest.approx(binary_auc(scores[idx], pos[idx]))


# --------------------------------------------------------------------------- calibration


def _calibration_example() -> tuple[np.ndarray, np.ndarray]:
    # 4 series at confidence 0.95 with 3 correct; 6 at 0.65, all correct
    conf = np.r_[np.full(4, 0.95), np.full(6, 0.65)]
    probs = np.zeros((10, 4))
    probs[:, 0] = conf
    probs[:, 1:] = ((1 - conf) / 3)[:, None]
    y = np.r_[0, 0, 0, 2, np.zeros(6, int)]
    return probs, y


def test_ece_of_hand_made_example():
    probs, y = _calibration_example()
    # 0.4 * |0.75 - 0.95| + 0.6 * |1.0 - 0.65| = 0.08 + 0.21
    assert expected_calibration_error(probs, y, n_bins=10) == pytest.approx(0.29)
    curve = reliability_curve(probs, y, n_bins=10)
    assert curve["count"].tolist() == [0, 0, 0, 0, 0, 0, 6, 0, 0, 4]
    assert curve["accuracy"][9] == pytest.approx(0.75) and curve["accuracy"][6] == 1.0
    assert np.isnan(curve["confidence"][0])
    s = summarize(y, probs, CLASSES, n_bootstrap=0)
    assert s["calibration"]["ece"] == pytest.approx(0.29)
    assert s["calibration"]["bins"]["count"][9] == 4


# --------------------------------------------------------------------------- bootstrap


def test_bootstrap_intervals_by_patient_are_wider_for_clustered_errors():
    # 40 patients x 3 series; a patient's three series are all right or all wrong, so the
    # effective sample is 40 patients, not 120 series.
    rng = np.random.default_rng(2)
    patient_ok = rng.random(40) < 0.8
    y = np.zeros(120, np.int64)
    ok = np.repeat(patient_ok, 3)
    probs = np.where(ok[:, None], [0.7, 0.1, 0.1, 0.1], [0.1, 0.7, 0.1, 0.1])
    pids = np.repeat([f"p{i}" for i in range(40)], 3)
    by_patient = summarize(y, probs, CLASSES, pids, n_bootstrap=500, seed=0)
    by_series = summarize(y, probs, CLASSES, None, n_bootstrap=500, seed=0)
    assert by_patient["bootstrap"]["unit"] == "patient" and by_patient["n_patients"] == 40
    assert by_series["bootstrap"]["unit"] == "series" and by_series["n_patients"] is None
    width = lambda s: s["accuracy"]["ci_bootstrap"][1] - s["accuracy"]["ci_bootstrap"][0]  # noqa: E731
    assert width(by_patient) > 1.4 * width(by_series)
    # same seed -> same intervals
    again = summarize(y, probs, CLASSES, pids, n_bootstrap=500, seed=0)
    assert again["accuracy"]["ci_bootstrap"] == by_patient["accuracy"]["ci_bootstrap"]


def test_auc_and_f1_intervals_bracket_the_estimate():
    rng = np.random.default_rng(3)
    y = np.tile(np.arange(4), 30)
    logits = rng.normal(size=(120, 4))
    logits[np.arange(120), y] += 2.0
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    pids = [f"p{i // 4}" for i in range(120)]
    s = summarize(y, probs, CLASSES, pids, n_bootstrap=300)
    for code in CLASSES:
        for key in ("auc", "f1"):
            v = s["per_class"][code][key]
            assert v["ci"][0] <= v["value"] <= v["ci"][1]
            assert v["ci"][1] - v["ci"][0] > 0


# --------------------------------------------------------------------------- aggregation


def test_mean_logprob_aggregation_is_renormalised_geometric_mean():
    p = np.array([[[0.5, 0.3, 0.2], [0.2, 0.5, 0.3], [0.6, 0.2, 0.2]]])
    out = np.exp(aggregate_slices(np.log(p), "mean_logprob"))
    g = np.array([0.06, 0.03, 0.012]) ** (1 / 3)  # products of each class's three slice probs
    assert out[0] == pytest.approx(g / g.sum())


def test_majority_aggregation_is_smoothed_vote_share():
    p = np.array([[[0.5, 0.3, 0.2], [0.2, 0.5, 0.3], [0.6, 0.2, 0.2]]])
    eps = 1e-3
    out = np.exp(aggregate_slices(np.log(p), "majority", eps=eps))
    votes = np.array([2 / 3, 1 / 3, 0.0])
    assert out[0] == pytest.approx((votes + eps) / (1 + 3 * eps))
    assert out.sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="unknown aggregation"):
        aggregate_slices(np.log(p), "median")


def test_two_step_combination_of_hand_made_table():
    ls = label_set("paper4")  # step 1: (AP, PVP, DP); step 2: (EAP, LAP) given AP
    p1 = np.array([[0.6, 0.3, 0.1], [0.1, 0.2, 0.7]])
    p2 = np.array([[0.25, 0.75], [0.9, 0.1]])
    out = np.exp(combine_two_step(np.log(p1), np.log(p2), ls))
    assert out == pytest.approx(np.array([[0.15, 0.45, 0.3, 0.1], [0.09, 0.01, 0.2, 0.7]]))
    ls5 = label_set("full5")  # step 1: (NC, AP, PVP, DP)
    out5 = np.exp(combine_two_step(np.log([[0.1, 0.5, 0.2, 0.2]]), np.log([[0.4, 0.6]]), ls5))
    assert out5[0] == pytest.approx([0.1, 0.2, 0.3, 0.2, 0.2])
    with pytest.raises(ValueError, match="log_p1 must be"):
        combine_two_step(np.log(p1[:, :2]), np.log(p2), ls)


# --------------------------------------------------------------------------- results files


def _rows(n_pat: int, site: str = "internal") -> list[dict[str, str]]:
    return [
        {"series_id": f"s{site[:2]}{i}{ph}", "patient_id": f"P{i}", "site": site, "phase": ph}
        for i in range(n_pat)
        for ph in ("LAP", "PVP", "DP")
    ]


def _results(strategy: str, wrong: set[int], conf: float = 0.7) -> dict:
    rows = _rows(6) + [{**r, "phase": ""} for r in _rows(1, "extra")]
    probs = np.full((len(rows), 4), (1 - conf) / 3)
    for i, r in enumerate(rows):
        t = CLASSES.index(r["phase"]) if r["phase"] else 0
        probs[i, (t + 1) % 4 if i in wrong else t] = conf
    test = split_results(predictions_from_rows(rows, probs, CLASSES), CLASSES, n_bootstrap=50)
    train = {"steps": 10, "wall_time_s": 1.5, "images_per_s": 3.0, "best_step": 10,
             "best_val_accuracy": None}  # fmt: skip
    return make_results(classes=CLASSES, label_set="paper4", strategy=strategy, train=train,
                        splits={"test": test})  # fmt: skip


def test_results_round_trip_and_arrays(tmp_path):
    res = _results("two_step", wrong={0, 4})
    path = write_results(tmp_path, res)
    assert path == tmp_path / "results.json"
    back = load_results(tmp_path)
    assert back == res
    y, probs, pids, sites, sids = predictions_arrays(back["splits"]["test"], CLASSES)
    assert y.tolist()[:3] == [1, 2, 3] and y.tolist()[-3:] == [-1, -1, -1]
    assert probs.shape == (21, 4) and pids[0] == "P0" and sites[-1] == "extra"
    m = back["splits"]["test"]["metrics"]
    assert m["n"] == 18 and m["n_unlabelled"] == 3 and m["accuracy"]["k"] == 16
    assert m["per_site"] == {
        "internal": {"value": 16 / 18, "k": 16, "n": 18, "ci": list(wilson_interval(16, 18))}
    }


def test_validation_names_the_problem(tmp_path):
    res = _results("one_step", wrong=set())
    res["splits"]["test"]["predictions"][2]["probs"] = [0.5, 0.5]
    res["splits"]["test"]["predictions"][3]["label"] = "XX"
    del res["train"]["steps"]
    with pytest.raises(ResultsError) as e:
        write_results(tmp_path, res)
    msg = str(e.value)
    assert "splits.test.predictions[2].probs has 2 values, expected 4" in msg
    assert "splits.test.predictions[3].label 'XX'" in msg
    assert "train.steps is missing" in msg
    assert not (tmp_path / "results.json").exists()
    (tmp_path / "results.json").write_text("{not json")
    with pytest.raises(ResultsError, match="not valid JSON"):
        load_results(tmp_path)
    with pytest.raises(FileNotFoundError, match="is the run complete"):
        load_results(tmp_path / "nothing")


def test_predictions_from_rows_rejects_phase_outside_label_set():
    rows = [{"series_id": "s1", "patient_id": "P1", "site": "x", "phase": "NC"}]
    with pytest.raises(ValueError, match="'NC', not in classes"):
        predictions_from_rows(rows, np.full((1, 4), 0.25), CLASSES)


def test_paired_comparison_of_two_runs():
    a = _results("one_step", wrong={0, 1, 4, 7})
    b = _results("two_step", wrong={1})
    out = paired_comparison(a, b, "test", n_bootstrap=100)
    assert out["n"] == 18 and (out["b"], out["c"]) == (0, 3)
    assert out["mcnemar_p"] == pytest.approx(2 / 8)
    assert out["difference"]["value"] == pytest.approx(3 / 18)
    b["splits"]["test"]["predictions"][0]["series_id"] = "other"
    with pytest.raises(ValueError, match="different series"):
        paired_comparison(a, b, "test")


def test_ensemble_averages_the_members_probabilities_series_by_series(tmp_path):
    # Member a is wrong on series 0 and 4 at 0.7, member b on 4 and 7 at 0.55. Averaged,
    # series 0 stays wrong (true 0.325, wrong 0.425), series 7 is right (0.425 vs 0.325),
    # series 4 is wrong in both: 16 of 18 right where a alone has 16 and b alone 16.
    a = _results("two_step", wrong={0, 4})
    b = _results("two_step", wrong={4, 7}, conf=0.55)
    b["splits"]["test"]["predictions"].reverse()  # matched by series, not by position
    ens = ensemble_results([a, b])
    preds = ens["splits"]["test"]["predictions"]
    assert [p["series_id"] for p in preds] == [
        p["series_id"] for p in a["splits"]["test"]["predictions"]
    ]
    assert preds[0]["probs"] == pytest.approx([0.125, 0.325, 0.425, 0.125])  # LAP, said PVP
    assert preds[7]["probs"] == pytest.approx([0.125, 0.125, 0.425, 0.325])  # PVP, said PVP
    m = ens["splits"]["test"]["metrics"]
    assert m["accuracy"]["k"] == 16 and m["n"] == 18
    said = [CLASSES[int(np.argmax(p["probs"]))] for p in preds[:18]]
    assert [i for i, p in enumerate(preds[:18]) if said[i] != p["label"]] == [0, 4]
    assert ens["train"]["members"] == 2 and ens["train"]["wall_time_s"] == 3.0
    assert ens["train"]["best_step"] is None and ens["strategy"] == "two_step"
    assert load_results(write_results(tmp_path, ens)) == ens  # a valid results file
    # Members of another strategy or on other series are refused by name.
    with pytest.raises(ValueError, match="member 1 has strategy 'one_step'"):
        ensemble_results([a, _results("one_step", wrong=set())])
    other = _results("two_step", wrong=set())
    other["splits"]["test"]["predictions"][3]["series_id"] = "elsewhere"
    with pytest.raises(ValueError, match="other series or labels in split 'test'"):
        ensemble_results([a, other])


def test_per_site_accuracy_counts():
    y = np.array([0, 1, 2, 0, 1, -1])
    pred = np.array([0, 1, 0, 0, 2, 0])
    sites = ["A", "A", "A", "B", "B", "C"]
    out = per_site_accuracy(y, pred, sites)
    assert sorted(out) == ["A", "B"]  # site C only holds an unlabelled series
    assert (out["A"]["k"], out["A"]["n"], out["B"]["k"], out["B"]["n"]) == (2, 3, 1, 2)
