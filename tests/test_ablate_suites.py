"""Ablation suites: loading, expansion into stable run ids, baseline sharing, skip and resume.

Training is a fake here (`FakeTrainer`): it records its calls and writes a plausible
results.json at once, so the runner's logic is tested without JAX.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from phasejax.ablate import runner
from phasejax.ablate.suites import (
    SuiteError,
    expand,
    load_presets,
    load_suites,
    parse_suite,
    select_suites,
    shared_baseline_overrides,
)
from phasejax.cli import main
from phasejax.config import Config

CLASSES = ["EAP", "LAP", "PVP", "DP"]


def _suite(**kw):
    data = {"question": "q?", **kw}
    return parse_suite(data, f"<{kw.get('name')}>")


DEPTH = dict(name="depth", axis="model.depth", values=["10", "18", "34"], baseline="18")
STRATEGY = dict(
    name="strategy", axis="model.strategy", values=["one_step", "two_step"], baseline="two_step"
)
ROBUST = dict(name="robustness", kind="evaluate", axis="noise_hu", values=[0, 20], baseline=0)


class FakeTrainer:
    """train_fn stand-in: records (run dir relative to the ablation dir, resumed?) and writes
    results.json with 8 test and 8 external predictions whose accuracy depends on the config."""

    def __init__(self, out: Path, interrupt: str | None = None):
        self.out = Path(out)
        self.calls: list[tuple[str, bool]] = []
        self.interrupt = interrupt

    def __call__(self, cfg: Config, workdir: Path, *, cache_dir=None) -> dict:
        rel = Path(workdir).relative_to(self.out).as_posix()
        ckpt = Path(workdir) / "checkpoints"
        self.calls.append((rel, ckpt.is_dir()))
        (Path(workdir) / "config.json").write_text(json.dumps(cfg.to_dict()))
        ckpt.mkdir(exist_ok=True)  # as the real trainer's first checkpoint would
        if rel == self.interrupt:
            raise KeyboardInterrupt
        results = fake_results(n_correct=4 + len(rel) % 4)
        (Path(workdir) / "results.json").write_text(json.dumps(results))
        return results


def fake_results(n_correct: int, n: int = 8) -> dict:
    def split(prefix: str) -> dict:
        preds = []
        for i in range(n):
            label = CLASSES[i % 4]
            guess = label if i < n_correct else CLASSES[(i + 1) % 4]
            probs = [0.7 if c == guess else 0.1 for c in CLASSES]
            preds.append(
                {"series_id": f"{prefix}{i}", "patient_id": f"P{i // 4}", "site": "A",
                 "label": label, "probs": probs}
            )  # fmt: skip
        return {"metrics": {}, "predictions": preds}

    return {
        "classes": CLASSES,
        "label_set": "paper4",
        "strategy": "two_step",
        "train": {"steps": 6, "wall_time_s": 1.0, "images_per_s": 10.0, "best_step": 6,
                  "best_val_accuracy": 0.5},
        "splits": {"test": split("t"), "external": split("e")},
    }  # fmt: skip


def fake_eval(calls: list):
    def eval_fn(cfg, model_dir, workdir, perturbation, *, cache_dir=None):
        calls.append((Path(model_dir).name, dict(perturbation)))
        return fake_results(n_correct=3)

    return eval_fn


# --------------------------------------------------------------------------- files


def test_repository_suites_and_presets_load():
    suites = load_suites()
    assert set(suites) >= {
        "strategy", "depth", "windowing", "slices", "resolution", "learning_curve", "robustness",
        "kvp", "sim2real", "balance", "learning_curve_ab", "quick_defaults", "optim",
    }  # fmt: skip
    optim = suites["optim"]
    assert optim.labels == ("lr_1e-3", "lr_2e-3", "lr_4e-3", "lr_8e-3", "wd_0.05")
    got = {v.label: (float(dict(v.overrides)["train.learning_rate"]),
                     float(dict(v.overrides)["train.weight_decay"])) for v in optim.variants}  # fmt: skip
    assert got["lr_8e-3"] == (8e-3, 1e-4) and got["wd_0.05"] == (2e-3, 0.05)
    # The baseline's label names the quick config's own optimiser: it must stay that config.
    quick = load_presets()["quick"].base_config()
    assert got[optim.baseline] == (quick.train.learning_rate, quick.train.weight_decay)
    ab = suites["learning_curve_ab"]
    assert ab.baseline == "B_1.0" and len(ab.variants) == 8
    got = {(dict(v.overrides)["model.strategy"], dict(v.overrides)["data.train_fraction"])
           for v in ab.variants}  # fmt: skip
    assert got == {(s, f) for s in ("one_step", "two_step") for f in ("0.1", "0.25", "0.5", "1.0")}
    balance = suites["balance"]
    assert balance.labels == ("off", "on") and balance.baseline == "off"
    assert [dict(v.overrides)["train.class_balance"] for v in balance.variants] == ["false", "true"]
    assert suites["depth"].labels == ("10", "18", "34", "50")
    assert suites["windowing"].labels == ("raw", "abdomen", "liver", "wide", "multi")
    assert suites["learning_curve"].labels == ("0.1", "0.25", "0.5", "1.0")
    slices = suites["slices"]
    got = {(dict(v.overrides)["data.num_slices"], dict(v.overrides)["data.slice_mode"])
           for v in slices.variants}  # fmt: skip
    assert got == {(n, m) for n in ("1", "3", "5", "9") for m in ("channels", "per_slice")}
    assert suites["robustness"].kind == "evaluate"
    assert suites["kvp"].kind == "evaluate" and suites["kvp"].baseline == "native"
    assert dict(suites["kvp"].variants[1].overrides) == {"kvp": "80"}
    presets = load_presets()
    assert {"smoke", "quick", "paper"} <= set(presets)
    assert presets["smoke"].seeds == 1 and presets["quick"].seeds == 3
    for name, p in presets.items():
        all_suites = [s.for_preset(name) for s in suites.values()]
        plan = expand(all_suites, p.base_config(), range(2), preset=name)
        # every suite's baseline cell is the one shared run, for every preset, except a
        # suite whose `fixed` settings make its baseline another model (sim2real)
        for s in all_suites:
            if s.fixed:
                assert plan.cells[s.name][s.baseline][0].startswith(f"{s.name}/")
                continue
            assert plan.cells[s.name][s.baseline] == {0: "_baseline/seed0", 1: "_baseline/seed1"}


def _full_budget_runs(suites: dict, name: str, seeds: int) -> dict:
    """Run id -> config of one suite's plan at budget `full` (the quick config's own steps)."""
    plan = expand(
        [suites[name]],
        load_presets()["full"].base_config(),
        range(seeds),
        preset="full",
        all_suites=list(suites.values()),
    )
    return {r.run_id: r.config for r in plan.runs}


# Session 23's values: the quick config with one thing changed, every key stated.
SESSION_23 = ("m_jit5", "m_wd05", "m_zoom06", "m_paper_cohort")
# Session 24's: network 2's own batch, the structure-HU head as a second task, a larger step.
SESSION_24 = ("m_step2_own", "m_hu_aux", "m_lr8e-3")
# Session 25's: the arterial series' enhancement decoupled from the portal vein; half the steps.
SESSION_25 = ("m_art_jit", "m_steps1500")
# Session 26's: cheaper ResNet stems (a 7x7 conv of stride 4; a 3x3 conv before the pool).
SESSION_26 = ("m_stem4", "m_stem3")
# Session 28's: more training series from the cohort (m_artx1_jit5 is the quick config since
# session 29, so at budget full it is the shared baseline run, not a run of its own).
SESSION_28 = ("m_artx1", "m_trainx315", "m_trainx315_artx1")
# Session 29: the quick config of sessions 21-28.
SESSION_29 = ("m_quick_s27",)


def test_full_budget_baseline_is_the_quick_config_unchanged():
    # Budget "full" runs the quick config at its own step count: its shared baseline must be
    # that config exactly. No suite has a [presets.full] section: they fall back to their
    # quick one (without it, resolution's generic 224 px baseline would silently change the
    # shared baseline for every suite).
    from phasejax.ablate.suites import for_budget
    from phasejax.config import config_differences, load_config

    suites = for_budget(load_suites(), load_presets()["full"])
    assert suites["resolution"].baseline == "96"
    assert suites["resolution"].labels == ("64", "96", "128")
    runs = _full_budget_runs(suites, "quick_defaults", seeds=1)
    quick = load_config("quick").to_dict()
    assert set(config_differences(quick, runs["_baseline/seed0"].to_dict())) <= {"name"}
    assert runs["_baseline/seed0"].cohort.preset == "medium"
    assert runs["_baseline/seed0"].train.steps == 3000

    # (the baseline, m_multi_3000, is _baseline); the other values keep the step count they were measured at, whatever quick's default
    def per_value(key: str) -> dict:
        """{value label: that run's config value at `key`} over the suite's own runs."""
        section, field = key.split(".")
        return {
            r.split("/")[1]: getattr(getattr(c, section), field)
            for r, c in runs.items()
            if r.startswith("quick_")
        }

    steps = per_value("train.steps")
    assert steps == {
        "q_multi": 1500,
        "m_multi": 1500,
        "m_liver": 1500,
        "m_liver_3000": 3000,
        "m_multi_128px": 1500,
        "m_r10_3000": 3000,
        "m_9sl_3000": 3000,
        "m_multi_3000_dpx": 3000,
        "m_multi_3000_ls0": 3000,
        "m_multi_3000_eq": 3000,
        "m_multi_3000_scan": 3000,
        "m_body": 3000,
        "m_9sl": 3000,
        "m_jit5": 3000,
        "m_wd05": 3000,
        "m_zoom06": 3000,
        "m_paper_cohort": 3000,
        "m_step2_own": 3000,
        "m_hu_aux": 3000,
        "m_lr8e-3": 3000,
        "m_art_jit": 3000,
        "m_steps1500": 1500,
        "m_stem4": 3000,
        "m_stem3": 3000,
        "m_artx1": 3000,
        "m_trainx315": 3000,
        "m_trainx315_artx1": 3000,
        "m_quick_s27": 3000,
    }
    # the value equal to the quick config is the baseline run itself, trained once
    assert "quick_defaults/m_artx1_jit5/seed0" not in runs
    assert runs["_baseline/seed0"].cohort.extra_arterial == 1
    assert runs["_baseline/seed0"].data.intensity_jitter_hu == pytest.approx(5.0)
    # every other value states the extra arterial series and the HU offset it was measured
    # with, so that its row keeps its meaning now that the quick config has changed them
    extra = per_value("cohort.extra_arterial")
    jitter = per_value("data.intensity_jitter_hu")
    assert {k for k, v in extra.items() if v} == {"m_artx1", "m_trainx315_artx1"}
    assert {k: v for k, v in jitter.items() if v != 15.0} == {"m_jit5": 5.0}
    # the quick config smooths its labels (0.1); every other value was measured without, and
    # m_multi_3000_ls0 is session 19's quick config (m_multi_3000_eq) with smoothing off
    assert runs["_baseline/seed0"].train.label_smoothing == pytest.approx(0.1)
    smoothing = per_value("train.label_smoothing")
    # (m_multi_3000_eq: the equilibrium labels with the default's smoothing, stated too; the
    # field-of-view values are the quick config of session 21 with another field)
    for label in (
        "m_multi_3000_eq",
        "m_multi_3000_scan",
        "m_body",
        "m_9sl",
        *SESSION_23,
        *SESSION_24,
        *SESSION_25,
        *SESSION_26,
        *SESSION_28,
        *SESSION_29,
    ):
        assert smoothing.pop(label) == pytest.approx(0.1)
    assert set(smoothing.values()) == {0.0} and len(smoothing) == 9
    # the quick config labels DP by excretion alone; every value measured before that states
    # the rule it was measured on, and only m_multi_3000_dpx and the field-of-view values
    # share the baseline's labels
    assert runs["_baseline/seed0"].cohort.delayed_rule == "excretion"
    rules = per_value("cohort.delayed_rule")
    for label in (
        "m_multi_3000_dpx",
        "m_multi_3000_scan",
        "m_body",
        "m_9sl",
        *SESSION_23,
        *SESSION_24,
        *SESSION_25,
        *SESSION_26,
        *SESSION_28,
        *SESSION_29,
    ):
        assert rules.pop(label) == "excretion"
    assert set(rules.values()) == {"excretion_or_equilibrium"} and len(rules) == 9
    # (against m_quick_s27, the quick config of sessions 21-28: m_multi_3000_eq and _dpx
    # predate session 29's extra arterial series and narrower offset, and state theirs)
    s27 = runs["quick_defaults/m_quick_s27/seed0"].to_dict()
    eq = runs["quick_defaults/m_multi_3000_eq/seed0"]
    assert set(config_differences(s27, eq.to_dict())) <= {
        "name",
        "cohort.delayed_rule",
        "data.crop_mm",
    }
    ls0 = runs["quick_defaults/m_multi_3000_ls0/seed0"]
    assert set(config_differences(eq.to_dict(), ls0.to_dict())) <= {
        "name",
        "train.label_smoothing",
    }
    # the quick config crops a 180 mm square in front of the spine since session 21; every
    # value measured before states the whole field, m_body the body's square instead, and
    # m_9sl (session 22) states the square
    assert runs["_baseline/seed0"].data.crop_mm == pytest.approx(180.0)
    crops = per_value("data.crop_mm")
    for label in (
        "m_9sl",
        *SESSION_23,
        *SESSION_24,
        *SESSION_25,
        *SESSION_26,
        *SESSION_28,
        *SESSION_29,
    ):
        assert crops.pop(label) == pytest.approx(180.0)
    assert set(crops.values()) == {0.0} and len(crops) == 12
    # sessions 21-28 changed one thing against the quick config of their day (m_quick_s27);
    # against today's they differ in that and in the two keys session 29 changed
    base = runs["_baseline/seed0"].to_dict()
    assert set(config_differences(base, s27)) == {
        "name",
        "cohort.extra_arterial",
        "data.intensity_jitter_hu",
    }
    for label, keys in (
        ("m_multi_3000_scan", {"data.crop_mm"}),
        ("m_body", {"data.crop_mm", "data.field_of_view"}),
        ("m_9sl", {"data.num_slices"}),
        # session 23's levers at the main job's budget: one key each
        ("m_jit5", {"data.intensity_jitter_hu"}),
        ("m_wd05", {"train.weight_decay"}),
        ("m_zoom06", {"model.step2_zoom"}),
        ("m_paper_cohort", {"cohort.preset"}),
        ("m_step2_own", {"train.step2_own_batch"}),
        ("m_hu_aux", {"model.hu_head"}),
        ("m_lr8e-3", {"train.learning_rate"}),
        ("m_art_jit", {"data.arterial_jitter"}),
        ("m_steps1500", {"train.steps"}),
        ("m_stem4", {"model.stem"}),
        ("m_stem3", {"model.stem"}),
        # session 28: more training series from the synthetic cohort, tests unchanged
        ("m_artx1", {"cohort.extra_arterial"}),
        ("m_trainx315", {"cohort.extra_train_exams"}),
        ("m_trainx315_artx1", {"cohort.extra_train_exams", "cohort.extra_arterial"}),
    ):
        fov = runs[f"quick_defaults/{label}/seed0"]
        assert set(config_differences(s27, fov.to_dict())) == {"name", *keys}
    assert runs["quick_defaults/m_r10_3000/seed0"].model.depth == "10"
    dpx = runs["quick_defaults/m_multi_3000_dpx/seed0"]
    assert set(config_differences(s27, dpx.to_dict())) <= {
        "name",
        "train.label_smoothing",
        "data.crop_mm",
    }
    assert runs["quick_defaults/m_9sl_3000/seed0"].data.num_slices == 9
    small = runs["quick_defaults/q_multi/seed0"]
    assert small.data.train_fraction == pytest.approx(0.3334) and small.data.window == "multi"
    assert runs["quick_defaults/m_liver/seed0"].data.window == "liver"
    assert runs["quick_defaults/m_multi_128px/seed0"].data.image_size == 128
    # CI's smoke budget runs the baseline and the small training set at its own (tiny) steps
    smoke_suite = load_suites()["quick_defaults"].for_preset("smoke")
    assert smoke_suite.labels == ("q_multi", "m_multi_3000")
    assert smoke_suite.baseline == "m_multi_3000"
    smoke = expand(
        [smoke_suite],
        load_presets()["smoke"].base_config(),
        range(1),
        preset="smoke",
        all_suites=[s.for_preset("smoke") for s in load_suites().values()],
    )
    smoke_steps = load_config("smoke").train.steps
    assert {r.run_id: r.config.train.steps for r in smoke.runs} == {
        "_baseline/seed0": smoke_steps,
        "quick_defaults/q_multi/seed0": smoke_steps,
    }


def test_suite_errors_name_file_and_reason(tmp_path):
    with pytest.raises(SuiteError, match=r"<x>: missing required key 'baseline'"):
        parse_suite({"name": "x", "question": "q", "axis": "model.depth", "values": ["10"]}, "<x>")
    with pytest.raises(SuiteError, match=r"unknown config key 'model\.dept'"):
        _suite(name="d", axis="model.dept", values=["10"], baseline="10")
    with pytest.raises(SuiteError, match=r"baseline '99' is not one of the values"):
        _suite(name="d", axis="model.depth", values=["10"], baseline="99")
    with pytest.raises(SuiteError, match=r"not a valid int"):
        _suite(name="r", axis="data.image_size", values=["big"], baseline="big")
    with pytest.raises(SuiteError, match="not usable as a directory name"):
        _suite(name="w", axis="data.window", values=["a/b"], baseline="a/b")
    with pytest.raises(SuiteError, match="not a known perturbation"):
        _suite(name="r", kind="evaluate", axis="model.depth", values=["10"], baseline="10")
    with pytest.raises(SuiteError, match=r"kvp 200 is outside 70-150 \(0 = as acquired\)"):
        _suite(name="k", kind="evaluate", axis="kvp", values=[0, 200], baseline=0)
    with pytest.raises(SuiteError, match="train.seed is set by --seeds"):
        _suite(name="s", axis="train.seed", values=[1], baseline=1)
    bad = tmp_path / "depth.toml"
    bad.write_text('name = "other"\nquestion = "q"\naxis = "model.depth"\nvalues = ["10"]\n'
                   'baseline = "10"\n')  # fmt: skip
    with pytest.raises(SuiteError, match=r"depth\.toml: suite name 'other' must match"):
        load_suites(tmp_path)
    bad.write_text("name = [")
    with pytest.raises(SuiteError, match=r"depth\.toml: not valid TOML"):
        load_suites(tmp_path)


# --------------------------------------------------------------------------- expansion


def test_expansion_gives_stable_run_ids_and_configs():
    depth, strategy = _suite(**DEPTH), _suite(**STRATEGY)
    plan = expand([depth, strategy], Config(), range(3), preset="t")
    ids = [r.run_id for r in plan.runs]
    assert ids == [
        f"{rid}/seed{k}"
        for k in range(3)
        for rid in ("_baseline", "depth/10", "depth/34", "strategy/one_step")
    ]
    # the same ids whichever suites are selected, and on every expansion
    alone = expand([depth], Config(), range(3), preset="t", all_suites=[depth, strategy])
    assert [r.run_id for r in alone.runs] == [i for i in ids if not i.startswith("strategy")]
    run = plan.run("depth/34/seed2")
    assert run.config.model.depth == "34" and run.config.train.seed == 2
    assert run.config.model.strategy == "two_step"
    # seeds change train.seed and nothing else
    a, b = plan.run("depth/34/seed0").config, plan.run("depth/34/seed1").config
    assert a.replace(train=a.train.__class__(**{**a.train.__dict__, "seed": 1})) == b


def test_compound_values_and_preset_sections():
    slices = parse_suite(
        {
            "name": "slices", "question": "q", "axis": "slices x mode", "baseline": "3_channels",
            "values": [
                {"label": "3_channels", "x": 3, "group": "channels",
                 "set": {"data.num_slices": 3, "data.slice_mode": "channels"}},
                {"label": "5_per_slice", "x": 5, "group": "per_slice",
                 "set": {"data": {"num_slices": 5, "slice_mode": "per_slice"}}},
            ],
            "presets": {"smoke": {"values": ["3_channels", "5_per_slice"], "baseline": "3_channels"},
                        "tiny": {"values": ["3_channels"]}},
        },
        "<slices>",
    )  # fmt: skip
    plan = expand([slices], Config(), [0])
    cfg = plan.run("slices/5_per_slice/seed0").config
    assert (cfg.data.num_slices, cfg.data.slice_mode) == (5, "per_slice")
    assert slices.variant("5_per_slice").x == 5.0
    assert slices.for_preset("tiny").labels == ("3_channels",)
    depth = _suite(**DEPTH, presets={"smoke": {"values": ["tiny", "10"], "baseline": "tiny"}})
    smoke = depth.for_preset("smoke")
    assert smoke.labels == ("tiny", "10") and smoke.baseline == "tiny"
    assert smoke.variant("tiny").overrides == (("model.depth", "tiny"),)


def test_baseline_is_shared_across_suites():
    depth, strategy, robust = _suite(**DEPTH), _suite(**STRATEGY), _suite(**ROBUST)
    assert shared_baseline_overrides([depth, strategy]) == {
        "model.depth": "18",
        "model.strategy": "two_step",
    }
    plan = expand([depth, strategy, robust], Config().override({"model.depth": "50"}), [0, 1])
    base_runs = [r for r in plan.runs if r.run_id.startswith("_baseline/")]
    assert [r.run_id for r in base_runs] == ["_baseline/seed0", "_baseline/seed1"]
    assert base_runs[0].cells == (
        ("depth", "18"), ("strategy", "two_step"), ("robustness", "0")
    )  # fmt: skip
    # the union of the suites' baselines overrides the preset's own depth 50
    assert base_runs[0].config.model.depth == "18"
    ev = plan.run("robustness/20/seed1")
    assert ev.kind == "evaluate" and ev.source == "_baseline/seed1"
    assert ev.perturbation == (("noise_hu", "20"),)


def test_baseline_conflict_and_fixed_overrides():
    other = _suite(name="other", axis="model.depth", values=["10", "34"], baseline="34")
    with pytest.raises(SuiteError, match=r"baselines disagree on model\.depth"):
        shared_baseline_overrides([_suite(**DEPTH), other])
    # a suite that holds another setting fixed cannot use the shared baseline run
    fixed = _suite(**{**STRATEGY, "fixed": {"data.window": "liver"}})
    plan = expand([_suite(**DEPTH), fixed], Config(), [0])
    assert plan.cells["strategy"]["two_step"] == {0: "strategy/two_step/seed0"}
    assert plan.run("strategy/two_step/seed0").config.data.window == "liver"
    assert plan.cells["depth"]["18"] == {0: "_baseline/seed0"}


def test_only_restricts_runs_not_cells():
    depth, robust = _suite(**DEPTH), _suite(**ROBUST)
    plan = expand([depth], Config(), range(2), only=["34"])
    assert [r.run_id for r in plan.runs] == ["depth/34/seed0", "depth/34/seed1"]
    assert set(plan.cells["depth"]) == {"10", "18", "34"}
    # an evaluate value needs the model it evaluates
    plan = expand([robust], Config(), [0], only=["20"])
    assert [r.run_id for r in plan.runs] == ["_baseline/seed0", "robustness/20/seed0"]
    with pytest.raises(SuiteError, match=r"--only \['99'\]"):
        expand([depth], Config(), [0], only=["99"])
    with pytest.raises(SuiteError, match="unknown suite"):
        select_suites({"depth": depth}, ["nope"])


# --------------------------------------------------------------------------- runner


def test_skip_finished_and_resume_interrupted(tmp_path):
    depth = _suite(**DEPTH)
    plan = expand([depth], Config(), range(2), preset="t")
    fake = FakeTrainer(tmp_path, interrupt="depth/34/seed0")
    with pytest.raises(KeyboardInterrupt):
        runner.execute(plan, tmp_path, train_fn=fake, progress=False)
    assert fake.calls == [("_baseline/seed0", False), ("depth/10/seed0", False),
                          ("depth/34/seed0", False)]  # fmt: skip
    statuses = {r["run"]: r["status"] for r in runner.plan_rows(plan, tmp_path)}
    assert statuses == {
        "_baseline/seed0": "done", "depth/10/seed0": "done", "depth/34/seed0": "partial",
        "_baseline/seed1": "todo", "depth/10/seed1": "todo", "depth/34/seed1": "todo",
    }  # fmt: skip
    fake2 = FakeTrainer(tmp_path)
    report = runner.execute(plan, tmp_path, train_fn=fake2, progress=False)
    # the interrupted run is resumed in its own workdir (its checkpoints are there) ...
    assert fake2.calls[0] == ("depth/34/seed0", True)
    assert [c[0] for c in fake2.calls] == ["depth/34/seed0", "_baseline/seed1", "depth/10/seed1",
                                           "depth/34/seed1"]  # fmt: skip
    assert report.skipped == ["_baseline/seed0", "depth/10/seed0"] and not report.failed
    # ... and a third invocation trains nothing new
    fake3 = FakeTrainer(tmp_path)
    report = runner.execute(plan, tmp_path, train_fn=fake3, progress=False)
    assert fake3.calls == [] and len(report.skipped) == 6
    meta = json.loads((tmp_path / "depth/34/seed1/ablation.json").read_text())
    assert meta["config"]["model"]["depth"] == "34" and meta["config"]["train"]["seed"] == 1


def test_baseline_trained_once_across_suites_and_invocations(tmp_path):
    depth, strategy = _suite(**DEPTH), _suite(**STRATEGY)
    fake = FakeTrainer(tmp_path)
    runner.execute(expand([depth], Config(), [0], all_suites=[depth, strategy]), tmp_path,
                   train_fn=fake, progress=False)  # fmt: skip
    runner.execute(expand([strategy], Config(), [0], all_suites=[depth, strategy]), tmp_path,
                   train_fn=fake, progress=False)  # fmt: skip
    runner.execute(expand([depth, strategy], Config(), [0]), tmp_path, train_fn=fake,
                   progress=False)  # fmt: skip
    trained = [c[0] for c in fake.calls]
    assert trained == ["_baseline/seed0", "depth/10/seed0", "depth/34/seed0",
                       "strategy/one_step/seed0"]  # fmt: skip
    # the suites' baseline cells point at the shared run (plan.json and a symlink)
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert set(plan["suites"]) == {"depth", "strategy"}
    cell = [v for v in plan["suites"]["strategy"]["values"] if v["label"] == "two_step"][0]
    assert cell["runs"] == {"0": "_baseline/seed0"}
    link = tmp_path / "strategy" / "two_step" / "seed0"
    assert link.is_symlink() and (link / "results.json").is_file()


def test_evaluate_runs_use_the_baseline_model(tmp_path):
    robust = _suite(**ROBUST)
    calls: list = []
    fake = FakeTrainer(tmp_path)
    report = runner.execute(expand([robust], Config(), [0, 1]), tmp_path, train_fn=fake,
                            eval_fn=fake_eval(calls), progress=False)  # fmt: skip
    assert not report.failed
    assert [c[0] for c in fake.calls] == ["_baseline/seed0", "_baseline/seed1"]
    assert calls == [("seed0", {"noise_hu": 20.0}), ("seed1", {"noise_hu": 20.0})]
    saved = json.loads((tmp_path / "robustness/20/seed1/results.json").read_text())
    assert len(saved["splits"]["test"]["predictions"]) == 8


def test_failed_run_is_reported_and_others_go_on(tmp_path):
    depth = _suite(**DEPTH)

    def flaky(cfg, workdir, *, cache_dir=None):
        if cfg.model.depth == "10":
            raise RuntimeError("out of memory")
        return FakeTrainer(tmp_path)(cfg, workdir)

    log = io.StringIO()
    report = runner.execute(expand([depth], Config(), [0]), tmp_path, train_fn=flaky,
                            progress=False, stream=log)  # fmt: skip
    assert report.failed == {"depth/10/seed0": "RuntimeError: out of memory"}
    assert "run depth/10/seed0 FAILED: RuntimeError: out of memory" in log.getvalue()
    assert report.ran == ["_baseline/seed0", "depth/34/seed0"]


def test_conflicting_run_directory_is_refused(tmp_path):
    depth = _suite(**DEPTH)
    plan = expand([depth], Config(), [0])
    runner.execute(plan, tmp_path, train_fn=FakeTrainer(tmp_path), progress=False)
    # the same directory, planned with another base config: nothing is trained over
    other = expand([depth], Config().override({"data.window": "liver"}), [0])
    assert {r["status"] for r in runner.plan_rows(other, tmp_path)} == {"conflict"}
    fake = FakeTrainer(tmp_path)
    with pytest.raises(runner.AblationError, match=r"differs in data\.window"):
        runner.execute(other, tmp_path, train_fn=fake, progress=False)
    assert fake.calls == []


def test_plan_json_refuses_another_preset(tmp_path):
    depth = _suite(**DEPTH)
    runner.write_plan(expand([depth], Config(), [0], preset="quick"), tmp_path)
    with pytest.raises(runner.AblationError, match="holds budget 'quick'"):
        runner.write_plan(expand([depth], Config(), [0], preset="paper"), tmp_path)


def test_cli_dry_run_lists_the_plan(tmp_path, capsys):
    out = tmp_path / "abl"
    rc = main(["ablate", "--suite", "strategy,depth", "--budget", "smoke", "--seeds", "2",
               "--out", str(out), "--dry-run"])  # fmt: skip
    text = capsys.readouterr().out
    assert rc == 0
    assert "_baseline/seed1" in text and "strategy/one_step/seed0" in text
    assert "model.depth=10" in text
    assert "6 runs: 0 done, 0 partial (resumed), 6 to do" in text
    assert not out.exists()  # a dry run writes nothing
    assert main(["ablate", "--suite", "nope", "--budget", "smoke", "--out", str(out)]) == 2
    assert "unknown suite(s) ['nope']" in capsys.readouterr().err


def test_perturbation_noise_is_per_series_and_level():
    vol = np.zeros((2, 4, 4), np.int16)
    a = runner.perturb_volume(vol, "s1", {"noise_hu": 20.0})
    assert np.array_equal(a, runner.perturb_volume(vol, "s1", {"noise_hu": 20.0}))
    assert not np.array_equal(a, runner.perturb_volume(vol, "s2", {"noise_hu": 20.0}))
    assert np.array_equal(runner.perturb_volume(vol, "s1", {"noise_hu": 0.0}), vol)
    big = runner.perturb_volume(np.zeros((8, 64, 64), np.int16), "s", {"noise_hu": 20.0})
    assert abs(float(big.std()) - 20.0) < 0.5


def test_perturbation_kvp_converts_from_each_series_own_voltage():
    # fat, water, soft tissue, aorta at +300 HU of enhancement, all at 120 kVp
    vol = np.array([[[-100, 0, 40, 340]]], np.int16)
    at80 = runner.perturb_volume(vol, "s", {"kvp": 80.0}, kvp=120.0)
    np.testing.assert_allclose(at80[0, 0], [-112.0, 0.0, 40.0, 40.0 + 300 * 1.6], atol=1e-3)
    # a series acquired at 80 kVp asked to be read at 80 kVp is left alone
    assert np.array_equal(runner.perturb_volume(vol, "s", {"kvp": 80.0}, kvp=80.0), vol)
    assert np.array_equal(runner.perturb_volume(vol, "s", {"kvp": 0.0}), vol)
    with pytest.raises(runner.AblationError, match="series s: a kvp perturbation needs"):
        runner.perturb_volume(vol, "s", {"kvp": 80.0}, kvp=None)
    # voltage first, then the same noise as a noise-only perturbation of that level
    both = runner.perturb_volume(vol, "s", {"kvp": 80.0, "noise_hu": 10.0}, kvp=120.0)
    noise = runner.noise_rng("s", 10.0).normal(0.0, 10.0, vol.shape).astype(np.float32)
    np.testing.assert_allclose(both, at80 + noise, atol=1e-3)


def test_real_set_scores_every_trained_run_once_finished_ones_too(tmp_path, monkeypatch):
    depth = _suite(**DEPTH)
    plan = expand([depth], Config(), range(1), preset="t")
    runner.execute(plan, tmp_path, train_fn=FakeTrainer(tmp_path), progress=False)
    scored: list[str] = []

    def fake_real(run_dir, real):
        scored.append(Path(run_dir).relative_to(tmp_path).as_posix())
        assert real.labels == "labels.csv" and real.paths == ("real_dir",)
        return {"classes": CLASSES, "splits": {"real": {"predictions": []}}}

    monkeypatch.setattr(runner, "evaluate_real", fake_real)
    real = runner.RealSet(paths=("real_dir",), labels="labels.csv")
    fake = FakeTrainer(tmp_path)
    report = runner.execute(plan, tmp_path, train_fn=fake, real=real, progress=False)
    # finished runs are not trained again, only scored on the real set
    assert fake.calls == [] and not report.failed
    assert sorted(scored) == ["_baseline/seed0", "depth/10/seed0", "depth/34/seed0"]
    assert all((tmp_path / r / runner.REAL_FILE).is_file() for r in scored)
    again = runner.execute(plan, tmp_path, train_fn=fake, real=real, progress=False)
    assert len(scored) == 3 and len(again.skipped) == 3


def test_suites_dir_of_your_own_with_a_relative_config_file(tmp_path, capsys):
    mine = tmp_path / "my_suites"
    mine.mkdir()
    (mine / "width.toml").write_text(
        'name = "width"\nquestion = "How wide?"\naxis = "model.width"\nvalues = [8, 16]\n'
        "baseline = 8\n"
    )
    (mine / "base.py").write_text(
        "from phasejax.config import Config, ModelConfig\n"
        "def get_config():\n"
        "    return Config(name='base', model=ModelConfig(depth='tiny', width=8))\n"
    )
    (mine / "presets.toml").write_text('[tiny]\nconfig = "base.py"\nseeds = 1\n')
    assert list(load_suites(mine)) == ["width"]
    assert load_presets(mine)["tiny"].base_config().name == "base"
    out = tmp_path / "abl"
    rc = main(["ablate", "--suites-dir", str(mine), "--suite", "width", "--budget", "tiny",
               "--out", str(out), "--dry-run"])  # fmt: skip
    text = capsys.readouterr().out
    assert rc == 0 and "width/16/seed0" in text and "2 runs:" in text
    # without a presets.toml of its own, the shipped presets apply
    (mine / "presets.toml").unlink()
    rc = main(["ablate", "--suites-dir", str(mine), "--suite", "width", "--budget", "smoke",
               "--out", str(out), "--dry-run"])  # fmt: skip
    assert rc == 0 and "(config smoke)" in capsys.readouterr().out
    assert main(["ablate", "--suites-dir", str(tmp_path / "nope"), "list"]) == 2
    assert "suites directory not found" in capsys.readouterr().err


def test_sim2real_suite_expands_on_the_quick_config_with_label_smoothing():
    # Every sim2real recipe is the quick config (label smoothing 0.1 since session 19, DP by
    # excretion since session 20) on the
    # full5 label set plus its own settings; no_label_smooth is the baseline with smoothing
    # off, so comparing the two isolates the default that the label-smoothing ablation chose.
    from phasejax.ablate.suites import for_budget
    from phasejax.config import config_differences

    suites = for_budget(load_suites(), load_presets()["full"])
    runs = _full_budget_runs(suites, "sim2real", seeds=2)
    off, ls0 = runs["sim2real/off/seed1"], runs["sim2real/no_label_smooth/seed1"]
    assert off.data.label_set == "full5" and off.train.label_smoothing == pytest.approx(0.1)
    assert ls0.train.label_smoothing == 0.0 and ls0.train.seed == off.train.seed
    assert set(config_differences(off.to_dict(), ls0.to_dict())) <= {
        "name",
        "train.label_smoothing",
    }
    assert runs["sim2real/liver_window/seed0"].train.label_smoothing == pytest.approx(0.1)
    # DP labelled by excretion alone since session 20; delayed_equilibrium is the rule before
    eq = runs["sim2real/delayed_equilibrium/seed1"]
    assert off.cohort.delayed_rule == "excretion"
    assert eq.cohort.delayed_rule == "excretion_or_equilibrium"
    assert set(config_differences(off.to_dict(), eq.to_dict())) <= {"name", "cohort.delayed_rule"}
    # quick_s27: the quick config of sessions 21-28, without session 29's extra threshold
    # arterial series and with the wider HU offset (the real-set check of that change)
    s27 = runs["sim2real/quick_s27/seed1"]
    assert (off.cohort.extra_arterial, s27.cohort.extra_arterial) == (1, 0)
    assert (off.data.intensity_jitter_hu, s27.data.intensity_jitter_hu) == (5.0, 15.0)
    assert set(config_differences(off.to_dict(), s27.to_dict())) == {
        "name",
        "cohort.extra_arterial",
        "data.intensity_jitter_hu",
    }
    assert {r.split("/")[1] for r in runs if r.startswith("sim2real/")} == set(
        suites["sim2real"].labels
    )
