"""experiments/cohort_hu_by_split.py: series per split, phase and HU bin."""

from __future__ import annotations

from experiment_script import load_script


def test_bins_are_half_open_open_ended_and_grouped_by_split_and_phase() -> None:
    mod = load_script("experiments/cohort_hu_by_split.py")
    hu = {
        ("train", "LAP"): [80.0, 85.0, 99.9, 100.0, 250.0],
        ("train", "EAP"): [-5.0, 60.0, 79.9],
        ("external", "EAP"): [70.0],
    }
    rows = mod.bin_counts(hu, [60.0, 80.0, 100.0])
    assert [(r["split"], r["phase"], r["n"]) for r in rows] == [
        ("external", "EAP", 1), ("train", "EAP", 3), ("train", "LAP", 5),
    ]  # fmt: skip
    lap = rows[2]["counts"]
    assert lap == {"<60": 0, "60-80": 0, "80-100": 3, ">=100": 2}  # 80 and 100 count upwards
    assert rows[1]["counts"] == {"<60": 1, "60-80": 2, "80-100": 0, ">=100": 0}
