"""The smoke preset end to end with the REAL trainer (phasejax.train.loop.train).

On the small fake cache of tests/fake_cache.py (no cohort generation), 8 fake CPU devices.
The default run has the strategy + robustness smoke run (baseline, one-step variant, one
noise evaluation, interrupted and resumed, then summarised by the command); every suite
of the smoke preset (about 3-4 minutes on 2 cores) is marked slow (`pytest -m slow`).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
from fake_cache import make_fake_cache

from phasejax.ablate import runner
from phasejax.ablate.suites import expand, load_presets, load_suites, select_suites
from phasejax.cli import main


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return make_fake_cache(tmp_path_factory.mktemp("cache"), patients=12, size=64, slices=12)


def smoke_plan(names: list[str]):
    preset = load_presets()["smoke"]
    suites = {k: s.for_preset("smoke") for k, s in load_suites().items()}
    return expand(
        select_suites(suites, names),
        preset.base_config(),
        range(preset.seeds),
        preset="smoke",
        all_suites=list(suites.values()),
    )


def test_smoke_interrupted_runs_resume_and_finish(tmp_path, cache, capsys):
    from phasejax.train.loop import train

    out = tmp_path / "abl"
    plan = smoke_plan(["strategy", "robustness"])
    assert [r.run_id for r in plan.runs] == [
        "_baseline/seed0", "strategy/one_step/seed0", "robustness/40/seed0"
    ]  # fmt: skip
    # 1) every training run is stopped at step 3 of 6 (as a preemption would): nothing done
    first = runner.execute(
        plan, out, train_fn=functools.partial(train, stop_at=3), cache_dir=cache, progress=False
    )
    assert set(first.failed) == {r.run_id for r in plan.runs}
    assert [r["status"] for r in runner.plan_rows(plan, out)] == ["partial", "partial", "todo"]

    # 2) the next invocation resumes both from their step-3 checkpoints, then evaluates
    seen = []

    def recording_train(cfg, workdir, **kw):
        ckpts = sorted(p.name for p in (Path(workdir) / "checkpoints" / "latest").iterdir())
        seen.append((Path(workdir).relative_to(out).as_posix(), ckpts))
        return train(cfg, workdir, **kw)

    second = runner.execute(plan, out, train_fn=recording_train, cache_dir=cache, progress=False)
    assert not second.failed, second.failed
    assert seen == [("_baseline/seed0", ["3"]), ("strategy/one_step/seed0", ["3"])]
    log = [json.loads(line) for line in (out / "_baseline/seed0/metrics.jsonl").open()]
    assert [r["step"] for r in log if r["split"] == "train"] == [3, 6]  # step 3 not redone
    noisy = json.loads((out / "robustness/40/seed0/results.json").read_text())
    clean = json.loads((out / "_baseline/seed0/results.json").read_text())
    assert [p["series_id"] for p in noisy["splits"]["test"]["predictions"]] == [
        p["series_id"] for p in clean["splits"]["test"]["predictions"]
    ]
    assert noisy["splits"]["test"]["predictions"] != clean["splits"]["test"]["predictions"]

    # 3) the command: everything done already, so it trains nothing and summarises
    capsys.readouterr()
    argv = ["ablate", "--suite", "strategy,robustness", "--budget", "smoke", "--out", str(out),
            "--cache", str(cache)]  # fmt: skip
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "ablate: 0 run(s) done now, 3 already done, 0 failed" in text
    summary = out / "summary"
    for name in ("strategy.md", "strategy.png", "robustness.md", "robustness_groups.csv",
                 "overview.png"):  # fmt: skip
        assert (summary / name).is_file(), name
    assert "| **two_step** (baseline) | 1 |" in (summary / "strategy.md").read_text()


@pytest.mark.slow
def test_smoke_preset_every_suite(tmp_path, cache, capsys):
    out = tmp_path / "abl"
    argv = ["ablate", "--suite", "all", "--budget", "smoke", "--out", str(out),
            "--cache", str(cache)]  # fmt: skip
    assert main(argv) == 0
    plan = smoke_plan(["all"])
    assert {r["status"] for r in runner.plan_rows(plan, out)} == {"done"}
    names = {s.name for s in plan.suites}
    assert names == {p.stem for p in (out / "summary").glob("*.md")} - {"README"}
    assert (out / "summary" / "overview.pdf").stat().st_size > 0
