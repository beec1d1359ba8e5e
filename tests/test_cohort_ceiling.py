"""experiments/cohort_ceiling.py: the ideal observer on a cohort's own series (--cache)."""

from __future__ import annotations

import numpy as np
import pytest
from experiment_script import load_script

from phasejax.cohort.exam import plan_exam
from phasejax.cohort.kinetics import compartment_hu
from phasejax.cohort.sites import SITES
from phasejax.cohort.structures import Label

INFO = {"seed": 3, "preset": "tiny", "delayed_rule": "excretion"}


def _rows(site: str, index: int) -> tuple[list[dict[str, str]], object]:
    plan = plan_exam(SITES[site], index, cohort_seed=3, namespace="tiny", delayed_rule="excretion")
    rows = [
        {"series_id": s.series_id, "patient_id": f"{site}-{index:04d}", "site": site,
         "phase": s.phase.value, "true_phase": s.phase.value}
        for s in plan.series
        if s.phase.value in ("EAP", "LAP", "PVP", "DP")
    ]  # fmt: skip
    return rows, plan


def test_cache_observations_read_each_series_of_its_replanned_exam() -> None:
    mod = load_script("experiments/cohort_ceiling.py")
    rows, plan = _rows("EXT-B", 2)
    assert rows
    x, y = mod.cache_observations(rows, INFO)
    aorta = mod.VISIBLE.index(Label.AORTA)
    for i, r in enumerate(rows):
        s = next(s for s in plan.series if s.series_id == r["series_id"])
        assert x[i, aorta] == pytest.approx(
            compartment_hu(plan.patient, s.t, plan.kvp)[Label.AORTA]
        )
        assert x[i, -1] == plan.kvp
        assert [c.value for c in mod.CLASSES][y[i]] == r["phase"]
    noisy = mod.roi_reading(x, 5.0, np.random.default_rng(0))
    assert np.all(noisy[:, -1] == x[:, -1])  # the header's voltage is read exactly
    assert 1.0 < float(np.std(noisy[:, :-1] - x[:, :-1])) < 10.0
    # A manifest whose labels the generator does not give (another version) is refused.
    bad = [dict(rows[0], true_phase="DP" if rows[0]["true_phase"] != "DP" else "EAP")]
    with pytest.raises(ValueError, match="another generator version"):
        mod.cache_observations(bad, INFO)


def test_paired_counts_the_discordant_series() -> None:
    mod = load_script("experiments/cohort_ceiling.py")
    run = np.array([True, True, False, False, False, True])
    observer = np.array([True, False, True, True, True, True])
    got = mod.paired(run, observer)
    assert (got["b"], got["c"]) == (1, 3)
    assert got["run"] == 0.5 and got["observer"] == pytest.approx(0.8333)
    assert got["gap_points"] == pytest.approx(33.33)
    assert got["p"] == 0.625  # exact two-sided binomial, 4 discordant pairs
