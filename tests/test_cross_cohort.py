"""experiments/cross_cohort.py: two groups of runs compared on the same series."""

from __future__ import annotations

import numpy as np
import pytest
from experiment_script import load_script


def _onehot(pred: list[int], k: int = 4, p: float = 0.7) -> np.ndarray:
    out = np.full((len(pred), k), (1.0 - p) / (k - 1))
    out[np.arange(len(pred)), pred] = p
    return out


def test_seed_pairs_and_ensembles_are_compared_series_by_series() -> None:
    mod = load_script("experiments/cross_cohort.py")
    y = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    split = np.array(["test"] * 4 + ["external"] * 4)
    patients = np.array(["a", "a", "b", "b", "c", "c", "d", "d"])
    base = [_onehot([0, 1, 2, 3, 1, 0, 2, 3]), _onehot([0, 1, 2, 2, 1, 1, 2, 3])]
    value = [_onehot([0, 1, 2, 3, 0, 1, 2, 3]), _onehot([0, 1, 2, 3, 0, 1, 2, 2])]
    got = mod.compare_groups(y, split, patients, {"baseline": base, "value": value},
                             ["test", "external"])  # fmt: skip
    ext = got["external"]
    assert ext["n"] == 4
    assert ext["baseline_accuracy"] == [0.5, 0.75] and ext["value_accuracy"] == [1.0, 0.75]
    # seed 0: the value is right on the two series the baseline missed; seed 1: one each way
    assert (ext["per_seed"][0]["b"], ext["per_seed"][0]["c"]) == (0, 2)
    assert (ext["per_seed"][1]["b"], ext["per_seed"][1]["c"]) == (1, 1)
    assert ext["per_seed"][0]["difference"] == pytest.approx(0.5)
    # ensembles average probabilities: where two seeds disagree the classes tie at 0.4 and
    # argmax takes the lower one (baseline series 5: class 0, wrong; value series 7: class
    # 2, wrong), so both ensembles lose a series a seed had right
    assert ext["ensemble"]["baseline"] == pytest.approx(0.5)
    assert ext["ensemble"]["value"] == pytest.approx(0.75)
    assert (ext["ensemble"]["b"], ext["ensemble"]["c"]) == (1, 2)  # series 7; series 4 and 5
    assert got["test"]["per_seed"][1]["c"] == 1 and got["test"]["per_seed"][1]["b"] == 0


def test_value_checkpoint_scores_the_value_runs_last_checkpoint(
    tmp_path, monkeypatch, capsys
) -> None:
    import json

    mod = load_script("experiments/cross_cohort.py")
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "manifest.csv").write_text(
        "series_id,patient_id,split,phase\na,P1,test,EAP\nb,P2,test,LAP\n"
    )
    asked = []

    def fake_probs(run_dir, cache_dir, rows, inputs, which="best"):
        asked.append((run_dir.name, which))
        return ["EAP", "LAP", "PVP", "DP"], np.tile([0.7, 0.1, 0.1, 0.1], (len(rows), 1))

    monkeypatch.setattr(mod, "_probs", fake_probs)
    argv = ["--cohort", str(cache), "--baseline", "r0", "--value", "r0", "--splits", "test"]
    assert mod.main([*argv, "--value-checkpoint", "latest"]) == 0
    assert asked == [("r0", "best"), ("r0", "latest")]
    out = json.loads(capsys.readouterr().out)
    assert out["value_checkpoint"] == "latest"
    assert out["splits"]["test"]["baseline_accuracy"] == [0.5]
