"""experiments/sim2real_compare.py: two recipes' seed ensembles paired on one real set."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from experiment_script import load_script

CLASSES = ["NC", "EAP", "LAP", "PVP", "DP"]
ACCEPTS = [["NC"], ["EAP", "LAP"], ["PVP", "DP"], ["PVP"], ["DP"], ["EAP", "LAP"]]


def _write(root: Path, seed: int, p_right: list[float]) -> None:
    """real.json of one seed: series i puts p_right[i] on its first accepted phase, the rest
    on NC (or on DP for the NC series)."""
    preds = []
    for i, (acc, p) in enumerate(zip(ACCEPTS, p_right)):
        probs = [0.0] * 5
        probs[CLASSES.index(acc[0])] = p
        probs[CLASSES.index("DP" if acc == ["NC"] else "NC")] += 1 - p
        preds.append({"series_id": f"r{i}", "name": f"series_{i}", "patient_id": f"R{i}",
                      "site": "real", "label": acc[0] if len(acc) == 1 else "",
                      "accepts": acc, "probs": probs})  # fmt: skip
    path = root / "sim2real" / "off" / f"seed{seed}" / "real.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"classes": CLASSES, "splits": {"real": {"predictions": preds}}}))


def test_two_recipes_are_paired_per_series_on_their_ensembles(tmp_path: Path, capsys) -> None:
    mod = load_script("experiments/sim2real_compare.py")
    base, variant = tmp_path / "base", tmp_path / "variant"
    # base: series 3 wrong in both seeds; variant: right in both; both 0.6/0.8 elsewhere
    _write(base, 0, [0.6, 0.6, 0.6, 0.2, 0.6, 0.6])
    _write(base, 1, [0.8, 0.8, 0.8, 0.4, 0.8, 0.8])
    _write(variant, 0, [0.9, 0.9, 0.9, 0.9, 0.9, 0.9])
    _write(variant, 1, [0.9, 0.9, 0.9, 0.9, 0.9, 0.9])
    assert mod.main([str(base), str(variant)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["base"]["seeds"]["seed0"]["correct"] == 5 and out["base"]["ensemble"]["correct"] == 5
    assert out["variant"]["ensemble"] == {
        "correct": 6,
        "n": 6,
        "nll": pytest.approx(-math.log(0.9), abs=1e-4),
    }
    base_nll = (5 * -math.log(0.7) - math.log(0.3)) / 6
    assert out["base"]["ensemble"]["nll"] == pytest.approx(base_nll, abs=1e-4)
    pe = out["paired_ensembles"]
    assert (pe["n"], pe["base_right_variant_wrong"], pe["base_wrong_variant_right"]) == (6, 0, 1)
    assert pe["mcnemar_p"] == pytest.approx(1.0)
    # every one of the 6 series scores better under the variant: exact p = 2 / 2**6
    assert pe["nll_wilcoxon_p"] == pytest.approx(2 / 64)
    s3 = next(s for s in out["series"] if s["series"] == "series_3")
    assert s3["accepts"] == ["PVP"]
    assert s3["base"] == {"seeds": ["NC", "NC"], "ensemble": "NC", "right": False,
                          "nll": pytest.approx(-math.log(0.3), abs=1e-3)}  # fmt: skip
    assert s3["variant"]["ensemble"] == "PVP" and s3["variant"]["right"]
    # the folder of one value is accepted as well
    assert mod.main([str(base / "sim2real" / "off"), str(variant)]) == 0


def test_a_folder_without_real_results_is_refused(tmp_path: Path) -> None:
    mod = load_script("experiments/sim2real_compare.py")
    with pytest.raises(SystemExit, match="no real.json"):
        mod.main([str(tmp_path), str(tmp_path)])
