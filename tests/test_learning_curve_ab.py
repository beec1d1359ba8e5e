"""experiments/learning_curve_ab.py: A vs B seed ensembles per share, paired on the same series."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from experiment_script import load_script

from phasejax.ablate.runner import read_plan, write_plan
from phasejax.ablate.suites import expand, load_suites
from phasejax.config import Config

CLASSES = ["EAP", "LAP", "PVP", "DP"]
LABELS = ["EAP", "LAP", "PVP", "DP", "PVP", "DP", "LAP", "EAP", "PVP", "DP"]


def _results(right: list[bool], confidence: float = 0.7) -> dict:
    """results.json whose test predictions are right exactly where `right` says."""
    preds = []
    for i, (label, ok) in enumerate(zip(LABELS, right)):
        k = CLASSES.index(label) if ok else (CLASSES.index(label) + 1) % 4
        probs = [(1 - confidence) / 3] * 4
        probs[k] = confidence
        preds.append({"series_id": f"s{i:02d}", "patient_id": f"P{i}", "site": "INT",
                      "label": label, "probs": probs})  # fmt: skip
    return {"classes": CLASSES, "splits": {"test": {"predictions": preds}}}


def _write(root: Path, run: str, res: dict) -> None:
    d = root / run
    d.mkdir(parents=True)
    (d / "results.json").write_text(json.dumps(res))


def test_a_and_b_are_compared_per_share_on_their_seed_ensembles(tmp_path: Path) -> None:
    mod = load_script("experiments/learning_curve_ab.py")
    suite = load_suites()["learning_curve_ab"].for_preset("quick")
    plan = expand([suite], Config(), range(2), preset="quick")
    write_plan(plan, tmp_path)
    runs = {v["label"]: v["runs"] for v in read_plan(tmp_path)["suites"][mod.SUITE]["values"]}
    assert runs["B_1.0"]["0"] == "_baseline/seed0"  # the shared baseline, as the runner lays out
    all_right, first_8 = [True] * 10, [True] * 8 + [False] * 2
    for share in mod.SHARES:
        for seed in range(2):
            # A gets series 8 and 9 wrong in every seed; B gets them right, and at 0.1 B
            # also misses series 0 with one seed only (the other seed outvotes it).
            b = list(all_right)
            if share == "0.1" and seed == 0:
                b[0] = False
            b_res = _results(b, confidence=0.6 if not b[0] else 0.9)
            _write(tmp_path, runs[f"A_{share}"][str(seed)], _results(first_8))
            _write(tmp_path, runs[f"B_{share}"][str(seed)], b_res)
    out = mod.compare(tmp_path, ("test",))
    rows = {r["share"]: r["internal"] for r in out["shares"]}
    assert set(rows) == {0.1, 0.25, 0.5, 1.0}
    for r in rows.values():
        assert r["A_per_seed"] == [0.8, 0.8] and r["A_ensemble"] == 0.8
        assert r["B_ensemble"] == 1.0
        assert (r["n"], r["b_A_right_B_wrong"], r["c_A_wrong_B_right"]) == (10, 0, 2)
        assert r["B_minus_A"][0] == pytest.approx(0.2)
        assert r["mcnemar_p"] == pytest.approx(0.5)  # 2 discordant pairs: exact p = 0.5
    assert rows[0.1]["B_per_seed"] == [0.9, 1.0]
    assert mod.main([str(tmp_path), "--splits", "test"]) == 0


def test_a_directory_without_the_suite_is_refused(tmp_path: Path, capsys) -> None:
    mod = load_script("experiments/learning_curve_ab.py")
    with pytest.raises(SystemExit):
        mod.main([str(tmp_path)])
    assert "not an ablation directory" in capsys.readouterr().err
