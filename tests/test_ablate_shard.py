"""Sharded and parallel ablations: the assignment rule, shards into one shared directory,
shard resolution from job-array environments, device pinning of `--parallel` children.

Training is the FakeTrainer of test_ablate_suites (no JAX) except in the slow test, which runs
`--parallel 2` end to end with the real trainer on the fake cache.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from pathlib import Path

import pytest
from test_ablate_suites import DEPTH, ROBUST, STRATEGY, FakeTrainer, _suite, fake_eval

from phasejax.ablate import runner
from phasejax.ablate.shard import (
    Shard,
    ShardError,
    assign,
    parse_shard,
    resolve_shard,
    shard_plan,
)
from phasejax.ablate.suites import expand
from phasejax.ablate.summarize import summarize
from phasejax.cli import main
from phasejax.config import Config


def _plan(seeds=range(2)):
    suites = [_suite(**DEPTH), _suite(**STRATEGY), _suite(**ROBUST)]
    return expand(suites, Config(), seeds, preset="t")


def test_assignment_deals_training_runs_and_keeps_evaluations_with_their_model():
    plan = _plan(range(3))
    train_ids = [r.run_id for r in plan.runs if r.kind == "train"]
    assert len(train_ids) == 12 and len(plan.runs) == 15
    for n in (1, 2, 3, 4, 5):
        owner = assign(plan.runs, n)
        # the i-th training run goes to shard i % n
        assert [owner[rid] for rid in train_ids] == [i % n for i in range(len(train_ids))]
        # an evaluate run goes where its model is trained
        for r in plan.runs:
            if r.kind == "evaluate":
                assert owner[r.run_id] == owner[r.source]
        shards = [shard_plan(plan, Shard(k, n)) for k in range(n)]
        ids = [r.run_id for s in shards for r in s.runs]
        assert sorted(ids) == sorted(r.run_id for r in plan.runs)  # every run exactly once
        trainings = [sum(r.kind == "train" for r in s.runs) for s in shards]
        assert max(trainings) - min(trainings) <= 1  # balanced
        for s in shards:  # plan order kept; the suites and cells stay whole
            assert [r.run_id for r in s.runs] == [r.run_id for r in plan.runs if r in s.runs]
            assert s.cells == plan.cells
    # composable: part k of P of shard K/N is shard K + N*k of N*P
    whole = [r.run_id for r in shard_plan(plan, Shard(1, 2)).runs]
    parts = [shard_plan(plan, Shard(1, 2).split(2, k)) for k in range(2)]
    assert sorted(r.run_id for p in parts for r in p.runs) == sorted(whole)
    assert [str(Shard(1, 2).split(2, k)) for k in range(2)] == ["1/4", "3/4"]


def _fake(out: Path):
    trainer, evals = FakeTrainer(out), []
    return trainer, evals, fake_eval(evals)


def test_two_shards_run_exactly_the_runs_of_one_process(tmp_path):
    plan = _plan()
    one, two = tmp_path / "one", tmp_path / "two"
    trainer, evals, eval_fn = _fake(one)
    runner.execute(plan, one, train_fn=trainer, eval_fn=eval_fn, progress=False)
    expected = Counter(c[0] for c in trainer.calls)
    assert len(expected) == 8 and len(evals) == 2

    calls: Counter = Counter()
    eval_calls: list = []
    plan_files = []
    for k in range(2):
        t, e, fn = _fake(two)
        report = runner.execute(
            shard_plan(plan, Shard(k, 2)), two, train_fn=t, eval_fn=fn, progress=False
        )
        assert not report.failed and not report.waiting and not report.skipped
        calls.update(c[0] for c in t.calls)
        eval_calls += e
        plan_files.append((two / "plan.json").read_bytes())
    assert calls == expected  # the same runs, none twice
    assert sorted(eval_calls, key=str) == sorted(evals, key=str)
    # every shard wrote the same plan.json, and it is the unsharded one
    assert plan_files[0] == plan_files[1] == (one / "plan.json").read_bytes()
    # a second pass of either shard finds its runs done
    t, _, fn = _fake(two)
    again = runner.execute(shard_plan(plan, Shard(1, 2)), two, train_fn=t, eval_fn=fn,
                           progress=False)  # fmt: skip
    assert t.calls == [] and len(again.skipped) == len(shard_plan(plan, Shard(1, 2)).runs)
    # the union summarises as the unsharded directory does
    summarize(one, figures=False, n_bootstrap=0)
    summarize(two, figures=False, n_bootstrap=0)
    for name in ("depth.csv", "strategy.csv", "robustness.csv", "depth_paired.csv"):
        assert (two / "summary" / name).read_text() == (one / "summary" / name).read_text()


def test_concurrent_shards_share_one_directory(tmp_path):
    plan = _plan()
    out = tmp_path / "abl"
    trainers = [FakeTrainer(out) for _ in range(3)]
    reports: list = [None] * 3

    def work(k: int) -> None:
        reports[k] = runner.execute(shard_plan(plan, Shard(k, 3)), out, train_fn=trainers[k],
                                    eval_fn=fake_eval([]), progress=False)  # fmt: skip

    threads = [threading.Thread(target=work, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    trained = Counter(c[0] for t in trainers for c in t.calls)
    assert set(trained.values()) == {1}
    assert set(trained) == {r.run_id for r in plan.runs if r.kind == "train"}
    assert all(not r.failed for r in reports)
    assert {r["status"] for r in runner.plan_rows(plan, out)} == {"done"}
    assert json.loads((out / "plan.json").read_text()) == runner.plan_document(plan)
    assert not list(out.glob(".plan.json*"))  # no temporary file left behind


def test_evaluate_run_of_a_model_in_another_shard_waits(tmp_path):
    plan = _plan(range(1))
    evaluate = [r for r in plan.runs if r.kind == "evaluate"]
    # a hand-made share holding the evaluation but not the model it evaluates
    import dataclasses

    alone = dataclasses.replace(plan, runs=tuple(evaluate))
    calls: list = []
    report = runner.execute(alone, tmp_path, train_fn=FakeTrainer(tmp_path),
                            eval_fn=fake_eval(calls), progress=False)  # fmt: skip
    assert not report.failed and calls == []
    assert report.waiting == {
        "robustness/20/seed0": "its model _baseline/seed0 is not finished (another shard)"
    }
    runner.execute(plan, tmp_path, train_fn=FakeTrainer(tmp_path), eval_fn=fake_eval([]),
                   progress=False)  # fmt: skip
    report = runner.execute(alone, tmp_path, train_fn=FakeTrainer(tmp_path),
                            eval_fn=fake_eval(calls), progress=False)  # fmt: skip
    assert report.skipped == ["robustness/20/seed0"] and not report.waiting


def test_shard_from_flag_slurm_array_and_indexed_job():
    assert resolve_shard(None, {}) == Shard(0, 1)
    assert resolve_shard("2/5", {"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "2"}) == (
        Shard(2, 5)
    )
    # --array=4-7: task 5 is the second of four
    slurm = {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "4"}
    got = resolve_shard(None, slurm)
    assert (got.index, got.count) == (1, 4) and "SLURM" in got.origin
    # --array=0-6:2 (tasks 0, 2, 4, 6)
    stepped = {"SLURM_ARRAY_TASK_ID": "6", "SLURM_ARRAY_TASK_COUNT": "4",
               "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_STEP": "2"}  # fmt: skip
    assert (resolve_shard(None, stepped).index, resolve_shard(None, stepped).count) == (3, 4)
    k8s = {"JOB_COMPLETION_INDEX": "3", "PHASEJAX_SHARD_COUNT": "8"}
    assert (resolve_shard(None, k8s).index, resolve_shard(None, k8s).count) == (3, 8)
    with pytest.raises(ShardError, match="set PHASEJAX_SHARD_COUNT"):
        resolve_shard(None, {"JOB_COMPLETION_INDEX": "3"})
    with pytest.raises(ShardError, match="need 0 <= K < N"):
        parse_shard("4/4")
    with pytest.raises(ShardError, match="expected K/N"):
        parse_shard("1of4")


def test_cli_shard_and_parallel_dry_run(tmp_path, capsys, monkeypatch):
    out = tmp_path / "abl"
    base = ["ablate", "--suite", "strategy,depth", "--budget", "smoke", "--seeds", "2",
            "--out", str(out), "--dry-run"]  # fmt: skip
    assert main([*base, "--shard", "1/2"]) == 0
    text = capsys.readouterr().out
    assert "shard 1/2 (--shard), 3 of 6 runs" in text
    assert "strategy/one_step/seed0" in text and "_baseline/seed0" not in text
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "0")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "2")
    assert main(base) == 0
    text = capsys.readouterr().out
    assert "shard 0/2 (SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT)" in text
    assert "_baseline/seed0" in text and "strategy/one_step/seed0" not in text
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID")
    assert main([*base, "--parallel", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    row = next(line for line in lines if line.startswith("strategy/one_step/seed0"))
    assert row.rstrip().endswith("1/2")
    assert main([*base, "--shard", "2/2"]) == 2
    assert "need 0 <= K < N" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slow
def test_parallel_two_children_train_the_smoke_plan(tmp_path, capsys):
    from fake_cache import make_fake_cache

    cache = make_fake_cache(tmp_path / "cache", patients=12, size=64, slices=12)
    out = tmp_path / "abl"
    rc = main(["ablate", "--suite", "strategy", "--budget", "smoke", "--out", str(out),
               "--cache", str(cache), "--parallel", "2", "--no-summary"])  # fmt: skip
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "2 of 2 shard(s) finished cleanly" in text
    for rid in ("_baseline/seed0", "strategy/one_step/seed0"):
        assert (out / rid / "results.json").is_file()
    logs = sorted(p.name for p in (out / "_logs").iterdir())
    assert logs == ["shard-0-of-2.log", "shard-1-of-2.log"]
    assert "1 run(s) done now" in (out / "_logs" / "shard-0-of-2.log").read_text()
