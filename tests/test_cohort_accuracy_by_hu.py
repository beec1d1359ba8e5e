"""experiments/cohort_accuracy_by_hu.py: accuracy per phase and HU bin."""

from __future__ import annotations

import numpy as np
from experiment_script import load_script


def test_bins_are_half_open_and_open_ended() -> None:
    mod = load_script("experiments/cohort_accuracy_by_hu.py")
    phases = ["PVP", "PVP", "PVP", "PVP", "DP", "DP"]
    hu = np.array([95.0, 100.0, 119.9, 130.0, 90.0, 125.0])
    pred = ["DP", "PVP", "DP", "PVP", "DP", "PVP"]
    rows = mod.binned(phases, hu, pred, [100.0, 120.0])
    got = {(r["phase"], r["hu_from"], r["hu_to"]): r for r in rows}
    assert set(got) == {
        ("PVP", None, 100.0), ("PVP", 100.0, 120.0), ("PVP", 120.0, None),
        ("DP", None, 100.0), ("DP", 120.0, None),
    }  # fmt: skip
    mid = got[("PVP", 100.0, 120.0)]  # 100.0 falls in [100, 120), 119.9 too
    assert mid["n"] == 2 and mid["accuracy"] == 0.5 and mid["predicted"] == {"PVP": 1, "DP": 1}
    assert got[("PVP", None, 100.0)]["accuracy"] == 0.0
    assert got[("DP", 120.0, None)]["predicted"] == {"PVP": 1}
