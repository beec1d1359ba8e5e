"""experiments/cohort_vs_real.py: cohort accuracy against real-set accuracy per trained run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from experiment_script import load_script

HEADER = "value,seed,run,internal_correct,internal_n,internal_acc,external_correct,external_n,external_acc,real_correct,real_n,real_acc\n"  # noqa: E501


def _runs_csv(path: Path, rows: list[tuple[str, float, float, int, int]]) -> None:
    lines = [HEADER]
    for run, internal, external, real, n in rows:
        acc = real / n if n else ""
        lines.append(f"v,0,{run},0,270,{internal},0,224,{external},{real},{n},{acc}\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(lines))


def test_runs_are_deduplicated_unscored_ones_dropped_and_ranks_correlated(
    tmp_path: Path, capsys
) -> None:
    mod = load_script("experiments/cohort_vs_real.py")
    a = tmp_path / "a"
    # the baseline appears in two suites' files: counted once
    _runs_csv(a / "depth_runs.csv", [("_baseline/seed0", 0.80, 0.70, 4, 12),
                                     ("depth/10/seed0", 0.85, 0.75, 6, 12)])  # fmt: skip
    _runs_csv(a / "slices_runs.csv", [("_baseline/seed0", 0.80, 0.70, 4, 12),
                                      ("slices/9/seed0", 0.90, 0.60, 7, 12)])  # fmt: skip
    # a re-evaluation without a real score is not a run of the comparison
    _runs_csv(a / "kvp_runs.csv", [("kvp/80/seed0", 0.99, 0.99, 0, 0)])
    b = tmp_path / "b"
    # a higher cohort accuracy with fewer real series right: a negative rank correlation
    _runs_csv(b / "x_runs.csv", [("r0", 0.70, 0.70, 7, 12), ("r1", 0.80, 0.80, 5, 12),
                                 ("r2", 0.90, 0.90, 3, 12)])  # fmt: skip
    assert mod.main([str(a), str(b)]) == 0
    doc = json.loads(capsys.readouterr().out)
    fa = doc["folders"][str(a)]
    assert fa["runs"] == 3
    assert fa["real_correct"] == {"min": 4, "max": 7, "mean": pytest.approx(17 / 3)}
    assert fa["spearman_internal_vs_real"]["rho"] == pytest.approx(1.0)
    # external ranks 2, 3, 1 against real ranks 1, 2, 3: rho = 1 - 6 * 6 / 24 = -0.5
    assert fa["spearman_external_vs_real"]["rho"] == pytest.approx(-0.5)
    fb = doc["folders"][str(b)]
    assert fb["spearman_internal_vs_real"]["rho"] == pytest.approx(-1.0)
    # pooled: the same run id in two folders stays two runs
    assert doc["all"]["runs"] == 6 and doc["all"]["real_n"] == [12]


def test_a_folder_that_is_not_a_summary_is_named(tmp_path: Path) -> None:
    mod = load_script("experiments/cohort_vs_real.py")
    with pytest.raises(ValueError, match="no \\*_runs.csv"):
        mod.main([str(tmp_path)])
