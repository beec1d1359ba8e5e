"""A tiny end-to-end reproduce: fake cache, debug preset, a few steps."""

import json

import numpy as np
import pytest
from fake_cache import make_fake_cache

from phasejax.reproduce import render_report, reproduce

STEPS = ["train.steps=12", "train.eval_every=6", "train.checkpoint_every=6", "train.log_every=3"]


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory):
    root = tmp_path_factory.mktemp("reproduce")
    cache = make_fake_cache(
        root / "cache", patients=12, size=48, slices=10, phases=("NC", "EAP", "LAP", "PVP", "DP")
    )
    out = root / "out"
    summary = reproduce(out, preset="debug", data=cache, overrides=STEPS)
    return out, summary


def test_writes_report_results_and_every_figure(reproduced):
    out, summary = reproduced
    saved = json.loads((out / "results.json").read_text())
    assert saved["comparison"]["test"]["n"] == summary["comparison"]["test"]["n"] == 8
    for key, strategy in (("A", "one_step"), ("B", "two_step")):
        assert saved["strategies"][key]["strategy"] == strategy
        test = saved["strategies"][key]["splits"]["test"]
        assert test["n"] == 8 and 0 <= test["accuracy"]["value"] <= 1
        assert (out / f"strategy_{key}" / "results.json").is_file()
    report = (out / "report.md").read_text()
    assert "| Internal test, two-step (B) | 98.3% (283/288)" in report
    assert "External sensitivity EAP" in report
    stems = {"accuracy", "confusion", "roc", "sensitivity", "reliability", "site_accuracy"}
    for stem in stems:
        for ext in ("png", "pdf"):
            path = out / "figures" / f"{stem}.{ext}"
            assert path.stat().st_size > 1000, path
        assert f"figures/{stem}.png" in report
    # The model for `phasejax predict`: two-step over NC + the four phases.
    pm = saved["predict_model"]
    assert pm["label_set"] == "full5" and pm["classes"] == ["NC", "EAP", "LAP", "PVP", "DP"]
    # The fake cache holds NC series too: 2 test patients x 5 phases.
    assert pm["splits"]["test"]["n"] == 10
    full5 = json.loads((out / "full5" / "config.json").read_text())
    assert full5["data"]["label_set"] == "full5" and full5["model"]["strategy"] == "two_step"
    assert "## The model for `phasejax predict`" in report
    # Grad-CAM overlays for each strategy (the fake cache has no organ masks, so no share plot).
    for slug in ("A_one_step", "B_two_step"):
        assert (out / "figures" / f"saliency_{slug}_overlays.png").stat().st_size > 1000
        assert f"figures/saliency_{slug}_overlays.png" in report


def test_rerun_trains_nothing_and_rewrites_the_same_numbers(reproduced):
    out, summary = reproduced
    logs = {k: (out / f"strategy_{k}" / "metrics.jsonl").read_text() for k in "AB"}
    again = reproduce(out, preset="debug", data=out.parent / "cache", overrides=STEPS)
    assert again["comparison"] == summary["comparison"]
    for k in "AB":
        assert (out / f"strategy_{k}" / "metrics.jsonl").read_text() == logs[k]


def test_report_states_mcnemar_counts(reproduced):
    _, summary = reproduced
    text = render_report(summary)
    comp = summary["comparison"]["test"]
    assert f"b={comp['b']}, c={comp['c']}" in text


def test_figures_command_redraws_every_figure_of_the_reproduce_directory(reproduced, tmp_path):
    # README: "`phasejax figures runs/quick` redraws every figure from the results files".
    from phasejax.cli import main

    out, _ = reproduced
    assert main(["figures", str(out), "--out", str(tmp_path / "figs")]) == 0
    drawn = sorted(p.name for p in (tmp_path / "figs").iterdir())
    assert drawn == sorted(p.name for p in (out / "figures").iterdir())
    assert "saliency_B_two_step_overlays.png" in drawn


def test_jobs_train_in_child_processes_bitwise_as_in_one_process(reproduced, tmp_path, monkeypatch):
    """--jobs 2: the three trainings run as children, two at a time, and give the runs this
    process trained, loss for loss, hence the same comparison."""
    out1, single = reproduced
    # The children's JAX sees the 8 fake devices this process has (conftest), so they run
    # the same sharded program, only single-threaded.
    monkeypatch.setenv("JAX_NUM_CPU_DEVICES", "8")
    out = tmp_path / "jobs"
    summary = reproduce(
        out, preset="debug", data=out1.parent / "cache", overrides=STEPS, figures=False, jobs=2
    )
    assert summary["timing"]["jobs"] == 2
    for run in ("strategy_A", "strategy_B", "full5"):
        assert _losses(out / run) == _losses(out1 / run), run
        log = (out / run / "train.log").read_text()
        assert "on 8 cpu device(s)" in log and "val accuracy" in log  # the child's output
    assert summary["comparison"] == single["comparison"]
    assert summary["predict_model"]["splits"] == single["predict_model"]["splits"]


def test_a_failing_child_stops_the_others_and_names_its_log(reproduced, tmp_path):
    from phasejax.config import load_config
    from phasejax.train.children import TrainJob, last_logged_step, train_all

    out1, _ = reproduced
    # A run that would not finish for hours beside one whose cache does not exist.
    endless = load_config(str(out1 / "strategy_A" / "config.json"), ["train.steps=1000000"])
    bad = TrainJob(endless, tmp_path / "bad", tmp_path / "no_such_cache")
    slow = TrainJob(endless, tmp_path / "slow", out1.parent / "cache")
    with pytest.raises(RuntimeError, match=r"training .*bad failed \(exit 1\)") as err:
        train_all([slow, bad], 2, poll_s=0.2)
    assert "no_such_cache" in str(err.value)  # the child's own message, from its log
    # The slow run was stopped (SIGINT: it leaves as on Ctrl-C) long before its last step.
    assert 0 <= last_logged_step(tmp_path / "slow" / "metrics.jsonl") < 1000000
    assert not (tmp_path / "slow" / "results.json").exists()


def test_report_says_when_network_2_has_its_own_batch(reproduced):
    _, summary = reproduced
    assert summary["step2_own_batch"] is False  # the debug config, as the quick one
    assert "batch of its own" not in render_report(summary)
    assert "batch of its own" in render_report({**summary, "step2_own_batch": True})


@pytest.fixture(scope="module")
def ensembled(reproduced):
    """The same reproduce with two networks per strategy; full5 copied from the single run
    (a finished training is reused, not retrained)."""
    import shutil

    out1, _ = reproduced
    out = out1.parent / "out_members"
    shutil.copytree(out1 / "full5", out / "full5")
    summary = reproduce(out, preset="debug", data=out1.parent / "cache", overrides=STEPS, members=2)
    return out, summary


def _losses(run) -> list[tuple]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r.get("loss"), r.get("accuracy")) for r in rows]


def test_members_train_one_run_per_seed_and_score_their_mean(ensembled, reproduced):
    from phasejax.eval.results import load_results

    out, summary = ensembled
    out1, single = reproduced
    assert summary["members"] == 2
    for key in "AB":
        run = out / f"strategy_{key}"
        seeds = [json.loads((run / f"seed{s}" / "config.json").read_text()) for s in (0, 1)]
        assert [c["train"]["seed"] for c in seeds] == [0, 1]
        # Member seed 0 is the single run of the same config, loss for loss.
        assert _losses(run / "seed0") == _losses(out1 / f"strategy_{key}")
        assert _losses(run / "seed1") != _losses(run / "seed0")
        ens, m0, m1 = (load_results(p) for p in (run, run / "seed0", run / "seed1"))
        assert ens["train"]["members"] == 2
        for split, s in ens["splits"].items():
            by_id = [
                {p["series_id"]: p["probs"] for p in m["splits"][split]["predictions"]}
                for m in (m0, m1)
            ]
            for p in s["predictions"]:
                mean = (np.asarray(by_id[0][p["series_id"]]) + by_id[1][p["series_id"]]) / 2
                np.testing.assert_allclose(p["probs"], mean, rtol=0, atol=1e-12)
        test = summary["strategies"][key]["splits"]["test"]
        assert test["accuracy"] == ens["splits"]["test"]["metrics"]["accuracy"]
    assert summary["comparison"]["test"]["n"] == single["comparison"]["test"]["n"] == 8
    report = (out / "report.md").read_text()
    assert "Each strategy is a seed ensemble of 2 networks" in report
    assert "seed ensemble" not in (out1 / "report.md").read_text()
    # Grad-CAM of the first member, drawn under the strategy's name.
    assert (out / "strategy_B" / "seed0" / "saliency.npz").is_file()
    assert (out / "figures" / "saliency_B_two_step_overlays.png").stat().st_size > 1000


def test_members_refuse_a_directory_of_the_other_layout(ensembled, reproduced, capsys):
    from phasejax.cli import main

    out, _ = ensembled
    out1, _ = reproduced
    cache = str(out1.parent / "cache")
    with pytest.raises(ValueError, match="holds a seed ensemble"):
        reproduce(out, preset="debug", data=cache, overrides=STEPS, members=1)
    with pytest.raises(ValueError, match="holds a single network's run"):
        reproduce(out1, preset="debug", data=cache, overrides=STEPS, members=2)
    args = ["reproduce", "--config", "debug", "--cache", cache, "--out", str(out), "--members", "0"]
    assert main(args) == 2
    assert "--members must be at least 1, got 0" in capsys.readouterr().err


def test_members_layout_is_checked_for_both_strategies_before_training(
    reproduced, tmp_path, capsys
):
    """Only B's directory holds a single run: the usage error names it and A trains nothing."""
    import shutil

    from phasejax.cli import main

    out1, _ = reproduced
    out = tmp_path / "mixed"
    shutil.copytree(out1 / "strategy_B", out / "strategy_B")
    args = ["reproduce", "--config", "debug", "--cache", str(out1.parent / "cache"),
            "--out", str(out), "--members", "2", *sum((["--set", s] for s in STEPS), [])]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert main([*args[:-2], "--jobs", "0"]) == 2
    assert "--jobs must be at least 1, got 0" in capsys.readouterr().err
    assert f"{out / 'strategy_B'} holds a single network's run" in err
    assert not (out / "strategy_A").exists()
    assert sorted(p.name for p in out.iterdir()) == ["strategy_B"]


def test_more_jobs_than_gpus_is_a_usage_error_before_anything_runs(tmp_path, capsys, monkeypatch):
    """Three children on a host with two GPUs: refused before the cohort step (exit 2)."""
    from phasejax.cli import main

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.delenv("JAX_PLATFORMS", raising=False)
    out = tmp_path / "r"
    args = [
        "reproduce",
        "--config",
        "debug",
        "--cache",
        str(tmp_path / "no_cache"),
        "--out",
        str(out),
    ]
    assert main([*args, "--jobs", "3"]) == 2
    assert "--jobs 3: 3 children, but only 2 GPU(s) visible" in capsys.readouterr().err
    assert not out.exists()
