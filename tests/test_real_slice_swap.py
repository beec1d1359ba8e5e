"""experiments/real_slice_swap.py finds the real slice that pulls cohort series to a phase."""

from __future__ import annotations

import numpy as np
from experiment_script import load_script


def _module():
    return load_script("experiments/real_slice_swap.py")


class _SpotClassifier:
    """Class 1 ("DP") when slice 1 holds a bright spot, else class 0 ("AP")."""

    def classify_all(self, items) -> np.ndarray:
        cue = np.array([float(a[1, 8:12, 8:12, 0].mean() > 0.5) for a in items])
        return np.stack([1.0 - cue, cue], axis=1)


def test_only_the_slice_with_the_cue_moves_cohort_series_and_to_its_class():
    cohort = np.zeros((4, 3, 16, 16, 1), np.float32)
    cohort[3, 1, 8:12, 8:12, 0] = 1.0  # one cohort series already shows the cue
    real = np.zeros((3, 16, 16, 1), np.float32)
    real[1, 8:12, 8:12, 0] = 1.0
    swap = _module().slice_swap
    got = swap(_SpotClassifier(), real, cohort, ["AP", "DP"])
    assert [s["changed"] for s in got] == [0.0, 0.75, 0.0]  # only the slice with the cue
    assert got[1]["moved_to"] == {"DP": 0.75}  # the three "AP" series become "DP"
    assert got[0]["moved_to"] == {} and got[2]["moved_to"] == {}
    # A real slice without the cue moves the one cohort series that had it, the other way.
    got = swap(_SpotClassifier(), np.zeros_like(real), cohort, ["AP", "DP"])
    assert got[1] == {"changed": 0.25, "moved_to": {"AP": 0.25}}
