"""experiments/seed_ensembles.py: ensembles of every k-subset of runs, from results.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from experiment_script import load_script


def _run(root: Path, name: str, probs: list[list[float]], labels: list[str]) -> str:
    preds = [
        {"series_id": f"s{i}", "label": lab, "probs": p}
        for i, (p, lab) in enumerate(zip(probs, labels, strict=True))
    ]
    split = {"predictions": preds}
    d = root / name
    d.mkdir()
    res = {"classes": ["EAP", "LAP"], "splits": {"test": split, "external": split}}
    (d / "results.json").write_text(json.dumps(res))
    return str(d)


def test_pairs_average_probabilities_and_are_scored_on_the_same_series(tmp_path: Path) -> None:
    mod = load_script("experiments/seed_ensembles.py")
    labels = ["EAP", "LAP", "LAP"]
    a = _run(tmp_path, "seed0", [[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]], labels)  # 2/3
    b = _run(tmp_path, "seed1", [[0.4, 0.6], [0.1, 0.9], [0.3, 0.7]], labels)  # 2/3
    c = _run(tmp_path, "seed2", [[0.3, 0.7], [0.45, 0.55], [0.9, 0.1]], labels)  # 1/3
    assert mod.subset_accuracies([a, b, c], "test", 1) == {
        "seed0": 0.6667, "seed1": 0.6667, "seed2": 0.3333,
    }  # fmt: skip
    # seed0+seed1: (0.65, 0.35), (0.35, 0.65), (0.25, 0.75): all right, though each alone
    # misses one; seed0+seed2: (0.6, 0.4) right, (0.525, 0.475) and (0.55, 0.45) wrong
    pairs = mod.subset_accuracies([a, b, c], "test", 2)
    assert pairs == {"seed0+seed1": 1.0, "seed0+seed2": 0.3333, "seed1+seed2": 0.3333}
    got = mod.summarise(pairs)
    assert got["mean"] == pytest.approx(0.5556, abs=1e-4) and got["min"] == 0.3333
    other = _run(tmp_path, "elsewhere", [[0.5, 0.5]], ["EAP"])
    with pytest.raises(ValueError, match="not those of"):
        mod.subset_accuracies([a, other], "test", 2)
