"""A tiny end-to-end reproduce: fake cache, debug preset, a few steps."""

import json

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


def test_report_says_when_network_2_has_its_own_batch(reproduced):
    _, summary = reproduced
    assert summary["step2_own_batch"] is False  # the debug config, as the quick one
    assert "batch of its own" not in render_report(summary)
    assert "batch of its own" in render_report({**summary, "step2_own_batch": True})
