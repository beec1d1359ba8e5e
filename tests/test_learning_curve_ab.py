"""experiments/learning_curve_ab.py: A vs B seed ensembles per share, paired on the same series."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from experiment_script import load_script

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


def _write(root: Path, run: str, seed: int, res: dict) -> None:
    d = root / run / f"seed{seed}"
    d.mkdir(parents=True)
    (d / "results.json").write_text(json.dumps(res))


def test_a_and_b_are_compared_per_share_on_their_seed_ensembles(tmp_path: Path) -> None:
    mod = load_script("experiments/learning_curve_ab.py")
    all_right, first_8 = [True] * 10, [True] * 8 + [False] * 2
    for share in mod.SHARES:
        for seed in range(2):
            # A gets series 8 and 9 wrong in every seed; B gets them right, and at 0.1 B
            # also misses series 0 with one seed only (the other seed outvotes it).
            b = list(all_right)
            if share == "0.1" and seed == 0:
                b[0] = False
            b_res = _results(b, confidence=0.6 if not b[0] else 0.9)
            _write(tmp_path, f"learning_curve_ab/A_{share}", seed, _results(first_8))
            run = "_baseline" if share == "1.0" else f"learning_curve_ab/B_{share}"
            _write(tmp_path, run, seed, b_res)
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
