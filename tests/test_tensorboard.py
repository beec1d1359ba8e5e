"""TensorBoard scalars next to metrics.jsonl (train.tensorboard, the [tensorboard] extra), and
the summary `phasejax train` prints when a run ends.

The event files are read back by phasejax.train.tensorboard.read_scalars, a TFRecord reader
on tensorboardX's protobuf definitions that applies TensorBoard's purge rule; it was checked
once against TensorBoard's own EventAccumulator (same tags, steps and values).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from fake_cache import make_fake_cache

from phasejax.cli import main
from phasejax.train import tensorboard

pytest.importorskip("tensorboardX")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_fake_cache(tmp_path_factory.mktemp("cache"), patients=12, size=32, slices=8)


def test_train_writes_readable_scalars_and_prints_a_summary(
    tmp_path: Path, cache: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PHASEJAX_COMPILATION_CACHE", "off")
    run = tmp_path / "run"
    argv = ["train", "--config", "smoke", "--out", str(run), "--cache", str(cache),
            "--set", "train.tensorboard=true", "--set", "train.log_every=1"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out

    scalars = tensorboard.read_scalars(run / "tensorboard")
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_steps = [r["step"] for r in records if r["split"] == "train"]
    assert train_steps == [1, 2, 3, 4, 5, 6]
    for key in ("loss", "accuracy", "learning_rate", "images_per_s"):
        # the same numbers as metrics.jsonl, at the same steps (float32 in the event file)
        want = [(r["step"], r[key]) for r in records if r["split"] == "train"]
        got = scalars[f"train/{key}"]
        assert [s for s, _ in got] == [s for s, _ in want]
        assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-6)
    val = [(r["step"], r["accuracy"]) for r in records if r["split"] == "val"]
    assert [s for s, _ in scalars["val/accuracy"]] == [3, 6] == [s for s, _ in val]
    results = json.loads((run / "results.json").read_text())
    for split in ("test", "external"):
        final = scalars[f"{split}/final_accuracy"]
        assert final == [
            (6, pytest.approx(results["splits"][split]["metrics"]["accuracy"]["value"]))
        ]
    assert "test/final_sensitivity_EAP" in scalars
    assert "train/count" not in scalars and "train/step" not in scalars

    # the end-of-run summary: accuracies, time, throughput and where the files are
    assert f"run finished: {run}" in out
    best = results["train"]["best_val_accuracy"]
    assert f"best {best:.4f} (step {results['train']['best_step']})" in out
    assert f"final {val[-1][1]:.4f} (step 6)" in out
    test_acc = results["splits"]["test"]["metrics"]["accuracy"]
    assert f"{test_acc['value']:.4f} ({test_acc['k']}/{test_acc['n']})" in out
    assert "external accuracy" in out and "training images/s" in out
    assert f"tensorboard --logdir {run / 'tensorboard'}" in out
    assert len(out.splitlines()) <= 20  # one screen

    # run again: finished, nothing trained, the same summary
    assert main(argv) == 0
    assert f"run finished: {run}" in capsys.readouterr().out


def test_resumed_writer_purges_what_the_interrupted_run_logged_after_its_checkpoint(
    tmp_path: Path,
) -> None:
    logdir = tmp_path / "tb"
    first = tensorboard.ScalarWriter(logdir)
    for step in range(1, 6):  # checkpoint at 3, then 4 and 5 logged before the crash
        first.add_record({"step": step, "split": "train", "loss": float(step), "count": 8})
    first.close()
    resumed = tensorboard.ScalarWriter(logdir, purge_step=4)
    for step in range(4, 7):
        resumed.add_record({"step": step, "split": "train", "loss": 10.0 * step})
    resumed.close()
    assert len(list(logdir.glob("events.out.tfevents.*"))) == 2
    assert tensorboard.read_scalars(logdir)["train/loss"] == [
        (1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0), (5, 50.0), (6, 60.0)
    ]  # fmt: skip


def test_missing_extra_is_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # as if not installed
    assert tensorboard.open_writer(tmp_path) is None
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'phasejax[tensorboard]'" in err
    assert not (tmp_path / "tensorboard").exists()
