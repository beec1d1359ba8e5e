"""Ablation summaries from hand-made results files: means, SDs, intervals, McNemar p-values.

Test split: 20 series, labels cycle EAP, LAP, PVP, DP; a run is described by the set of
series it gets wrong (a wrong series puts 0.7 on the next phase, 0.1 elsewhere).

    baseline "18":  seed0 wrong {0..5} (70%), seed1 {0..3} (80%), seed2 {0, 1} (90%)
    variant "34":   seed0 none (100%),       seed1 none (100%),  seed2 {10, 11, 12} (85%)
    variant "50":   seed0 {0..3} (80%), seeds 1 and 2 not finished

McNemar (b = baseline right / variant wrong, c = baseline wrong / variant right):
    seed0 b=0 c=6 -> p = 2 * 0.5**6 = 0.03125; seed1 b=0 c=4 -> p = 2 * 0.5**4 = 0.125;
    seed2 b=3 c=2 -> p = min(1, 2 * P(X <= 2 | 5, 1/2)) = 1.
Seed ensembles (mean probabilities): the baseline is wrong where >= 2 of 3 seeds are wrong,
{0..3}; the variant is right everywhere -> b=0, c=4, p = 0.125.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from phasejax.ablate import runner
from phasejax.ablate.suites import expand, parse_suite
from phasejax.ablate.summarize import seed_stats, summarize, summarize_suite
from phasejax.cli import main
from phasejax.config import Config
from phasejax.data.cache import write_manifest

CLASSES = ["EAP", "LAP", "PVP", "DP"]
N = 20
T_975_2 = 4.302652729911275  # Student t, 97.5% quantile, 2 degrees of freedom


def results(wrong: set[int], *, wall: float = 10.0, sites=("A",)) -> dict:
    def split(prefix: str) -> dict:
        preds = []
        for i in range(N):
            label = CLASSES[i % 4]
            guess = CLASSES[(i + 1) % 4] if i in wrong else label
            preds.append(
                {
                    "series_id": f"{prefix}{i:02d}",
                    "patient_id": f"P{i // 4}",
                    "site": sites[i % len(sites)],
                    "label": label,
                    "probs": [0.7 if c == guess else 0.1 for c in CLASSES],
                }
            )
        # one unlabelled series: predicted, but never counted
        preds.append(
            {"series_id": f"{prefix}99", "patient_id": "PX", "site": sites[0], "label": "",
             "probs": [0.25] * 4}
        )  # fmt: skip
        return {"metrics": {}, "predictions": preds}

    return {
        "classes": CLASSES,
        "label_set": "paper4",
        "strategy": "two_step",
        "train": {"steps": 10, "wall_time_s": wall, "images_per_s": 100.0 + wall,
                  "best_step": 10, "best_val_accuracy": 0.5},
        "splits": {"test": split("t"), "external": split("e")},
    }  # fmt: skip


WRONG = {
    "_baseline/seed0": set(range(6)),
    "_baseline/seed1": set(range(4)),
    "_baseline/seed2": {0, 1},
    "depth/34/seed0": set(),
    "depth/34/seed1": set(),
    "depth/34/seed2": {10, 11, 12},
    "depth/50/seed0": set(range(4)),
}


@pytest.fixture
def ablation(tmp_path: Path) -> Path:
    suite = parse_suite(
        {"name": "depth", "question": "Does depth matter?", "axis": "model.depth",
         "values": ["18", "34", "50"], "baseline": "18"},
        "<depth>",
    )  # fmt: skip
    runner.write_plan(expand([suite], Config(), range(3), preset="hand"), tmp_path)
    for k, (rid, wrong) in enumerate(WRONG.items()):
        path = tmp_path / rid / "results.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(results(wrong, wall=10.0 * (k + 1))))
    return tmp_path


def rows_by_value(s) -> dict:
    return {r["value"]: r for r in s.rows}


def test_means_std_and_intervals(ablation):
    plan = runner.read_plan(ablation)
    s = summarize_suite(ablation, "depth", plan["suites"]["depth"], n_bootstrap=0)
    rows = rows_by_value(s)
    base = rows["18"]
    assert base["baseline"] and base["seeds"] == 3 and base["internal_n"] == N
    assert base["internal_acc_mean"] == pytest.approx(0.8)
    assert base["internal_acc_std"] == pytest.approx(0.1)
    half = T_975_2 * 0.1 / math.sqrt(3)
    assert base["internal_acc_lo"] == pytest.approx(0.8 - half)
    assert 0.8 + half > 1 and base["internal_acc_hi"] == 1.0  # clipped to a proportion
    assert base["internal_ci"] == "t over 3 seeds"
    # per-phase sensitivity, mean over seeds: EAP 3/5, 4/5, 4/5; PVP 4/5, 4/5, 5/5
    assert base["internal_sens_EAP"] == pytest.approx((0.6 + 0.8 + 0.8) / 3)
    assert base["internal_sens_PVP"] == pytest.approx((0.8 + 0.8 + 1.0) / 3)
    # EAP/LAP accuracy over the 10 arterial series: 6/10, 8/10, 8/10
    assert base["internal_eaplap_acc"] == pytest.approx((0.6 + 0.8 + 0.8) / 3)
    assert base["wall_time_s"] == pytest.approx(20.0)  # runs 1..3 took 10, 20, 30 s
    var = rows["34"]
    assert var["internal_acc_mean"] == pytest.approx(0.95)
    assert var["internal_acc_std"] == pytest.approx(math.sqrt(0.0075))
    # one finished seed: the Wilson interval of 16/20
    one = rows["50"]
    assert one["seeds"] == 1 and one["internal_ci"] == "Wilson, 1 seed"
    assert math.isnan(one["internal_acc_std"])
    assert (one["internal_acc_lo"], one["internal_acc_hi"]) == pytest.approx(
        (0.583985, 0.919347), abs=1e-5
    )
    assert s.missing == ["depth/50/seed1", "depth/50/seed2"]


def test_mcnemar_per_seed_and_on_the_ensemble(ablation):
    plan = runner.read_plan(ablation)
    s = summarize_suite(ablation, "depth", plan["suites"]["depth"], n_bootstrap=0)
    paired = {(r["value"], r["split"], r["seed"]): r for r in s.paired_rows}
    expect = {"0": (0, 6, 0.03125), "1": (0, 4, 0.125), "2": (3, 2, 1.0), "ensemble": (0, 4, 0.125)}
    for seed, (b, c, p) in expect.items():
        r = paired[("34", "internal", seed)]
        assert (r["n"], r["b"], r["c"]) == (N, b, c), seed
        assert r["p"] == pytest.approx(p), seed
    assert paired[("34", "internal", "0")]["diff"] == pytest.approx(0.3)
    # value 50 has seed 0 only: one per-seed test, and the "ensemble" of that seed
    r = paired[("50", "internal", "ensemble")]
    assert (r["b"], r["c"], r["p"]) == (0, 2, pytest.approx(0.5))
    row = rows_by_value(s)["34"]
    # The seed ensembles themselves: baseline wrong on {0..3}, 34 right everywhere, 50 = seed0.
    ens = {v: (r["internal_ensemble_correct"], r["internal_ensemble_n"]) for v, r in
           rows_by_value(s).items()}  # fmt: skip
    assert ens == {"18": (16, N), "34": (N, N), "50": (16, N)}
    assert row["internal_p"] == pytest.approx(0.125)
    assert row["internal_p_seeds"] == "0.0312;0.125;1"
    assert math.isnan(rows_by_value(s)["18"]["internal_p"])


def test_summarize_writes_tables_and_figures(ablation):
    written = summarize(ablation, n_bootstrap=0)
    dest = ablation / "summary"
    for name in ("depth.csv", "depth_paired.csv", "depth_runs.csv", "depth.md", "depth.png",
                 "depth.pdf", "overview.png", "overview.pdf", "README.md"):  # fmt: skip
        assert (dest / name) in written and (dest / name).stat().st_size > 0, name
    with open(dest / "depth.csv") as f:
        rows = {r["value"]: r for r in csv.DictReader(f)}
    assert float(rows["18"]["internal_acc_mean"]) == pytest.approx(0.8)
    assert rows["18"]["internal_p"] == ""  # undefined for the baseline itself
    md = (dest / "depth.md").read_text()
    assert "| **18** (baseline) | 3 | 80.0 ± 10.0 [55.2, 100.0] |" in md
    assert "| 34 | 3 | 95.0 ± 8.7 [73.5, 100.0] | 0.125 |" in md
    assert "Runs without results yet: depth/50/seed1, depth/50/seed2." in md
    with open(dest / "depth_runs.csv") as f:
        runs = list(csv.DictReader(f))
    assert [(r["run"], r["internal_correct"]) for r in runs][:3] == [
        ("_baseline/seed0", "14"), ("_baseline/seed1", "16"), ("_baseline/seed2", "18")
    ]  # fmt: skip
    png = (dest / "depth.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_summarize_and_missing_plan(ablation, tmp_path, capsys):
    assert main(["ablate", "summarize", str(ablation), "--no-figures", "--n-bootstrap", "0"]) == 0
    assert (ablation / "summary" / "depth.md").is_file()
    assert not (ablation / "summary" / "depth.png").exists()
    empty = tmp_path / "nothing"
    empty.mkdir()
    assert main(["ablate", "summarize", str(empty)]) == 2
    assert "not an ablation directory (no plan.json)" in capsys.readouterr().err


def test_groups_by_site_and_kvp(tmp_path):
    robust = parse_suite(
        {"name": "robustness", "question": "q", "kind": "evaluate", "axis": "noise_hu",
         "values": [0, 20], "baseline": 0, "group_by": ["site", "kvp"]},
        "<robustness>",
    )  # fmt: skip
    plan = expand([robust], Config(), range(2))
    runner.write_plan(plan, tmp_path)
    # seed0 wrong on series 0..3, seed1 on series 1; sites alternate A/B
    for rid, wrong in (("_baseline/seed0", set(range(4))), ("_baseline/seed1", {1}),
                       ("robustness/20/seed0", set(range(8))),
                       ("robustness/20/seed1", set(range(8)))):  # fmt: skip
        path = tmp_path / rid / "results.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(results(wrong, sites=("A", "B"))))
    cache = tmp_path / "cache"
    cache.mkdir()
    base = {"patient_id": "P", "site": "", "phase": "EAP", "num_slices": 1, "spacing_z": 5,
            "spacing_xy": 1, "z_lo": 0, "z_hi": 1, "source": ""}  # fmt: skip
    write_manifest(
        cache,
        [{**base, "series_id": f"t{i:02d}", "split": "test", "kvp": "80" if i < 5 else "120"}
         for i in range(N)]
        + [{**base, "series_id": "x0", "split": "train", "kvp": "100"}],
    )  # fmt: skip
    path = runner.write_groups(plan, tmp_path, "robustness", ("site", "kvp"), cache)
    stored = json.loads(path.read_text())["columns"]
    assert stored["kvp"]["t03"] == "80" and "x0" not in stored["kvp"]
    s = summarize_suite(tmp_path, "robustness", runner.read_plan(tmp_path)["suites"]["robustness"],
                        n_bootstrap=0)  # fmt: skip
    groups = {(g["group_by"], g["group"], g["split"]): g for g in s.group_rows}
    # site A = even series: seed0 wrong 0, 2 (8/10), seed1 none wrong (10/10)
    assert groups[("site", "A", "internal")]["acc_mean"] == pytest.approx(0.9)
    assert groups[("site", "B", "internal")]["acc_mean"] == pytest.approx((0.8 + 0.9) / 2)
    # kVp 80 = series 0..4: seed0 1/5, seed1 4/5; the external split has no kvp column
    assert groups[("kvp", "80", "internal")]["acc_mean"] == pytest.approx(0.5)
    assert groups[("kvp", "80", "internal")]["n"] == 5
    assert groups[("kvp", "120", "internal")]["acc_mean"] == pytest.approx(1.0)
    assert ("kvp", "80", "external") not in groups
    noisy = rows_by_value(s)["20"]
    assert noisy["internal_acc_mean"] == pytest.approx(0.6)
    files = summarize(tmp_path, n_bootstrap=0)
    assert tmp_path / "summary" / "robustness_groups.csv" in files


def test_seed_stats_edge_cases():
    assert seed_stats([]) == {"mean": pytest.approx(math.nan, nan_ok=True),
                              "std": pytest.approx(math.nan, nan_ok=True),
                              "lo": pytest.approx(math.nan, nan_ok=True),
                              "hi": pytest.approx(math.nan, nan_ok=True), "n": 0}  # fmt: skip
    st = seed_stats([0.60, None, float("nan"), 0.62])
    assert st["n"] == 2 and st["mean"] == pytest.approx(0.61)
    assert st["std"] == pytest.approx(0.02 / math.sqrt(2))
    assert st["hi"] - st["mean"] == pytest.approx(12.706204736174707 * 0.01)  # t(0.975, 1)
    assert seed_stats([0.9, 1.0])["hi"] == 1.0


def _real(guesses: list[str]) -> dict:
    """real.json of a run: 6 real series with accepted sets (NC, EAP|LAP, PVP|DP, PVP, DP, NC);
    the model is 4-class, so the NC references are always wrong."""
    accepts = [["NC"], ["EAP", "LAP"], ["PVP", "DP"], ["PVP"], ["DP"], ["NC"]]
    preds = []
    for i, (acc, guess) in enumerate(zip(accepts, guesses)):
        preds.append(
            {
                "series_id": f"r{i}",
                "patient_id": f"R{i // 2}",
                "site": "real",
                "label": acc[0] if len(acc) == 1 and acc[0] in CLASSES else "",
                "accepts": acc,
                "probs": [0.7 if c == guess else 0.1 for c in CLASSES],
            }
        )
    return {"classes": CLASSES, "splits": {"real": {"predictions": preds}}}


def test_real_split_scores_accepted_sets_and_pairs_them(ablation):
    # baseline seed0: right on EAP|LAP (LAP), PVP|DP (DP), DP -> 3/6; NC can never be right.
    # variant 34 seed0: right on EAP|LAP (EAP), PVP|DP (PVP), PVP, DP -> 4/6.
    (ablation / "_baseline/seed0" / runner.REAL_FILE).write_text(
        json.dumps(_real(["EAP", "LAP", "DP", "LAP", "DP", "EAP"]))
    )
    (ablation / "depth/34/seed0" / runner.REAL_FILE).write_text(
        json.dumps(_real(["EAP", "EAP", "PVP", "PVP", "DP", "DP"]))
    )
    plan = runner.read_plan(ablation)
    s = summarize_suite(ablation, "depth", plan["suites"]["depth"], n_bootstrap=0)
    rows = rows_by_value(s)
    assert rows["18"]["real_n"] == 6 and rows["18"]["real_acc_mean"] == pytest.approx(3 / 6)
    assert rows["34"]["real_acc_mean"] == pytest.approx(4 / 6)
    assert rows["34"]["real_ci"] == "Wilson, 1 seed"
    # runs without real.json have no real column value
    assert rows["50"]["real_n"] == 0
    paired = {(r["value"], r["split"], r["seed"]): r for r in s.paired_rows}
    r = paired[("34", "real", "0")]
    # baseline right / variant wrong: none; baseline wrong / variant right: r3 (PVP)
    assert (r["n"], r["b"], r["c"]) == (6, 0, 1) and r["p"] == pytest.approx(1.0)
    assert rows["18"]["real_ensemble_correct"] == 3 and rows["18"]["real_ensemble_n"] == 6
    # Log score: -ln p(accepted), floored at 1e-3 (the 4-class model gives NC nothing).
    floor = -math.log(1e-3)
    base_nll = (2 * floor + 2 * -math.log(0.8) - math.log(0.1) - math.log(0.7)) / 6
    var_nll = (2 * floor + 2 * -math.log(0.8) - 2 * math.log(0.7)) / 6
    assert rows["18"]["real_nll_mean"] == pytest.approx(base_nll)
    assert rows["34"]["real_nll_mean"] == pytest.approx(var_nll)
    assert rows["34"]["real_nll_ensemble"] == pytest.approx(var_nll)
    # One series differs (r3): Wilcoxon's smallest p for one pair is 1.
    assert rows["34"]["real_nll_p"] == pytest.approx(1.0)
    md = (summarize(ablation, figures=False, n_bootstrap=0), ablation / "summary" / "depth.md")[1]
    text = md.read_text()
    assert "real acc" in text and "| 3/6 |" in text
    assert f"| {base_nll:.2f} (ens. {base_nll:.2f}) |" in text


def test_paired_log_score_detects_a_shift_that_flips_no_call() -> None:
    from phasejax.ablate.summarize import SplitEval, paired_nll

    def ev(p_right: float) -> SplitEval:
        n = 8
        probs = np.tile([p_right, 1 - p_right, 0.0, 0.0], (n, 1))
        return SplitEval(tuple(CLASSES), np.array([f"s{i}" for i in range(n)]),
                         np.array([f"P{i}" for i in range(n)]), np.array([""] * n),
                         np.zeros(n, np.int64), probs)  # fmt: skip

    base, better = ev(0.6), ev(0.9)
    assert base.correct == better.correct == 8  # accuracy cannot tell them apart
    r = paired_nll(base, better)
    assert r["diff"] == pytest.approx(math.log(0.6) - math.log(0.9))
    assert r["p"] == pytest.approx(2 / 2**8)  # exact: all 8 pairs improve
    assert math.isnan(paired_nll(base, ev(0.6))["p"])


def test_runs_labelled_differently_are_paired_right_against_right() -> None:
    # A value on a cohort with another labelling rule (cohort.delayed_rule): the same series,
    # two of them relabelled DP -> PVP. Each run counts against its own labels.
    from phasejax.ablate.summarize import SplitEval, paired

    n = 6
    ids, pats, sites = (np.array([f"{c}{i}" for i in range(n)]) for c in ("s", "P", "x"))
    y_base = np.array([3, 3, 2, 2, 2, 2])  # DP DP PVP PVP PVP PVP
    y_var = np.array([2, 2, 2, 2, 2, 2])  # the two DP are PVP under the variant's rule
    says_dp = np.tile(np.eye(4)[3], (n, 1))  # both models call every series DP
    base = SplitEval(tuple(CLASSES), ids, pats, sites, y_base, says_dp)
    variant = SplitEval(tuple(CLASSES), ids, pats, sites, y_var, says_dp)
    r = paired(base, variant, n_bootstrap=0)
    # baseline right on the two DP-labelled series, the variant on none
    assert (r["n"], r["b"], r["c"]) == (6, 2, 0)
    assert r["note"] == "labels differ on 2 series (each run against its own)"


def test_a_categorical_suite_run_in_part_shows_only_the_values_with_results(tmp_path):
    import matplotlib.pyplot as plt

    from phasejax.plotting import ablation

    def row(value, acc=None, baseline=False):
        r = {"value": value, "x": None, "group": "", "baseline": baseline}
        for p in ("internal", "external", "real"):
            r[f"{p}_acc_mean"], r[f"{p}_acc_lo"], r[f"{p}_acc_hi"] = acc, acc, acc
        return r

    rows = [row("off", 0.85, True), row("erase"), row("image_slab", 0.84), row("kidney")]
    assert all(p.is_file() for p in ablation.plot_suite(rows, {"name": "s"}, tmp_path / "s"))
    fig, ax = plt.subplots()
    ablation._draw_axis(ax, rows, {"axis": "a"}, legend=False)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["off", "image_slab"]
    assert ax.get_xticklabels()[0].get_fontweight() == "bold"
    plt.close(fig)


def test_values_without_a_finished_run_leave_the_table(ablation):
    (ablation / "depth/50/seed0" / "results.json").unlink()
    summarize(ablation, n_bootstrap=0, figures=False)
    md = (ablation / "summary" / "depth.md").read_text()
    rows = [line.split(" | ")[0] for line in md.splitlines() if line.startswith("| ")]
    assert rows == ["| value", "| **18** (baseline)", "| 34"]
    assert "Values without a finished run (not in the table): 50." in md
    assert "Runs without results yet" not in md  # 50's runs are named by the line above


def test_a_long_question_is_cut_to_three_lines_with_a_marker():
    from phasejax.plotting import ablation

    short = ablation._title({"name": "depth", "question": "Does depth matter?"})
    assert short == "depth: Does depth matter?"
    long_q = " ".join(f"lever{i}," for i in range(40)) + " or none?"
    title = ablation._title({"name": "quick_defaults", "question": long_q}, width=70)
    lines = title.split("\n")
    assert len(lines) == 3 and all(len(line) <= 70 for line in lines)
    assert lines[0].startswith("quick_defaults: lever0,") and lines[2].endswith(" ...")


def test_a_suite_figure_with_two_groups_puts_its_legend_beside_the_axes(tmp_path):
    """Six entries (two groups x three splits) inside the axes covered the curves."""
    from matplotlib.figure import Figure

    from phasejax.plotting import ablation

    def row(value, x, group, acc):
        r = {"value": value, "x": x, "group": group, "baseline": value == "B_1.0"}
        for p in ("internal", "external", "real"):
            r[f"{p}_acc_mean"], r[f"{p}_acc_lo"], r[f"{p}_acc_hi"] = acc, acc - 0.05, acc + 0.05
        return r

    two = [row(f"{g}_{x}", x, g, 0.8 + x / 10) for g in ("A", "B") for x in (0.1, 0.5, 1.0)]
    one = [r for r in two if r["group"] == "A"]
    for rows, outside in ((two, True), (one, False)):
        fig = Figure(layout="constrained")
        ax = fig.add_subplot()
        ablation._draw_axis(ax, rows, {"axis": "share"}, legend=True, legend_outside=True)
        fig.canvas.draw()
        box = ax.get_legend().get_window_extent()
        assert bool(box.x0 > ax.get_window_extent().x1) is outside
    assert all(p.is_file() for p in ablation.plot_suite(two, {"name": "lc"}, tmp_path / "lc"))
