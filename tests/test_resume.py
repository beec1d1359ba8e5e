"""Resume: N steps straight == N/2 steps, checkpoint, a FRESH process, restore, N/2 steps.

Bitwise on CPU: every step's loss (so the data order and the augmentations), the
final parameters, BatchNorm statistics, optimizer state and data-iterator state.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest
from fake_cache import make_fake_cache

from phasejax import parallel
from phasejax.config import Config, DataConfig, ModelConfig, TrainConfig
from phasejax.train.checkpoint import Checkpointer
from phasejax.train.loop import build_model_and_optimizer, train
from phasejax.train.step import Trainer
from phasejax.train.workdir import WorkdirError

REPO = Path(__file__).resolve().parents[1]
N = 8

RUNNER = textwrap.dedent(
    """
    import os, sys
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax
    jax.config.update("jax_num_cpu_devices", 8)
    from phasejax.config import Config
    from phasejax.train.loop import train
    cfg = Config.from_json_file(sys.argv[1])
    stop = None if sys.argv[4] == "none" else int(sys.argv[4])
    train(cfg, sys.argv[2], cache_dir=sys.argv[3], stop_at=stop)
    """
)


def _cfg() -> Config:
    return Config(
        name="resume",
        data=DataConfig(image_size=32, num_slices=3, augment=True, slice_jitter=1),
        model=ModelConfig(depth="tiny", width=8, strategy="two_step"),
        train=TrainConfig(
            batch_size=16,
            steps=N,
            learning_rate=3e-3,
            warmup_steps=2,
            log_every=1,
            eval_every=4,
            checkpoint_every=3,  # not a divisor of N/2: the stop itself must checkpoint
            eval_batch_size=16,
        ),
    )


def _run_fresh_process(tmp: Path, cfg_json: Path, workdir: Path, cache: Path, stop: str) -> None:
    script = tmp / "runner.py"
    script.write_text(RUNNER)
    env = {
        **os.environ,
        "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        # The second fresh process reuses the first one's executables (and so
        # also checks that a cached executable computes the same bits).
        "JAX_COMPILATION_CACHE_DIR": str(tmp.parent / "xla_cache"),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    }
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run(
        [sys.executable, str(script), str(cfg_json), str(workdir), str(cache), stop],
        env=env,
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def _train_records(workdir: Path) -> list[dict]:
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    recs = [json.loads(line) for line in lines]
    for r in recs:
        r.pop("images_per_s", None)  # wall-clock rate: the one field that may differ
    return recs


def _final_state(cfg: Config, workdir: Path):
    model, opt = build_model_and_optimizer(cfg)
    t = Trainer(model, opt, parallel.make_mesh())
    with Checkpointer(workdir / "checkpoints") as ck:
        return ck.restore(t.model_state, t.opt_state)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_fake_cache(tmp_path_factory.mktemp("cache"), patients=12, size=32, slices=8)


def test_resume_in_fresh_process_is_bitwise(tmp_path: Path, cache: Path) -> None:
    cfg = _cfg()
    cfg_json = tmp_path / "cfg.json"
    cfg_json.write_text(cfg.to_json())
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"

    _run_fresh_process(tmp_path, cfg_json, straight, cache, "none")
    results_straight = json.loads((straight / "results.json").read_text())
    _run_fresh_process(tmp_path, cfg_json, resumed, cache, str(N // 2))
    assert not (resumed / "results.json").exists()
    half = _train_records(resumed)
    assert [r["step"] for r in half if r["split"] == "train"] == list(range(1, N // 2 + 1))
    _run_fresh_process(tmp_path, cfg_json, resumed, cache, "none")

    a, b = _train_records(straight), _train_records(resumed)
    assert [r["step"] for r in a if r["split"] == "train"] == list(range(1, N + 1))
    assert a == b  # every step's loss/accuracy/grad norm and the val records, bitwise
    losses = [r["loss"] for r in a if r["split"] == "train"]
    assert len(set(losses)) == N  # different batches every step

    sa, sb = _final_state(cfg, straight), _final_state(cfg, resumed)
    assert sa.step == sb.step == N
    assert sa.data_state == sb.data_state and sa.data_state is not None
    for x, y in zip(jax.tree.leaves(sa.model_state), jax.tree.leaves(sb.model_state)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    for x, y in zip(jax.tree.leaves(sa.opt_state), jax.tree.leaves(sb.opt_state)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))

    results_resumed = json.loads((resumed / "results.json").read_text())
    for split in ("val", "test", "external"):
        pa = results_straight["splits"][split]["predictions"]
        pb = results_resumed["splits"][split]["predictions"]
        assert [p["probs"] for p in pa] == [p["probs"] for p in pb]
    assert results_resumed["train"]["best_step"] == results_straight["train"]["best_step"]

    # A finished run returns its results without training again.
    before = (resumed / "metrics.jsonl").read_text()
    again = train(cfg, resumed, cache_dir=cache)
    assert again == results_resumed
    assert (resumed / "metrics.jsonl").read_text() == before


def test_restart_with_other_config_is_refused(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from phasejax.cli import main

    monkeypatch.setenv("PHASEJAX_COMPILATION_CACHE", "off")  # no cache dir in $HOME from tests
    cfg = _cfg()
    cfg_json = tmp_path / "cfg.json"
    cfg_json.write_text(cfg.to_json())
    run = tmp_path / "run"
    argv = ["train", "--config", str(cfg_json), "--out", str(run), "--cache", str(cache)]
    assert main([*argv, "--stop-at", "1"]) == 0
    assert "stopped at step 1" in capsys.readouterr().out
    assert main([*argv, "--set", "train.learning_rate=0.1"]) == 1
    assert "train.learning_rate: 0.003 -> 0.1" in capsys.readouterr().err
    with pytest.raises(WorkdirError, match=r"model.width: 8 -> 16"):
        train(cfg.override(["model.width=16"]), run, cache_dir=cache)
    # Logging cadence may change on restart.
    out = train(cfg.override(["train.log_every=2"]), run, cache_dir=cache, stop_at=2)
    assert out["train"]["steps"] == 2
    steps = [r["step"] for r in _train_records(run) if r["split"] == "train"]
    assert steps == [1, 2]


def _damage(step_dir: Path) -> None:
    """Cut every array file of the model item short, as a disk that filled up would."""
    files = [f for f in (step_dir / "model").rglob("*") if f.is_file() and f.parent.name == "d"]
    assert files
    for f in files:
        f.write_bytes(f.read_bytes()[:10])


@pytest.fixture(scope="module")
def stopped_at_4(cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run stopped at step 4 of 8 with checkpoints at steps 2 and 4 (copied per test)."""
    root = tmp_path_factory.mktemp("stopped")
    cfg = _cfg().override(["train.checkpoint_every=2"])
    (root / "cfg.json").write_text(cfg.to_json())
    train(cfg, root / "run", cache_dir=cache, stop_at=4)
    latest = root / "run" / "checkpoints" / "latest"
    assert sorted(int(p.name) for p in latest.iterdir() if p.name.isdigit()) == [2, 4]
    return root


def _copy_run(stopped: Path, tmp_path: Path, cache: Path) -> tuple[Path, list[str]]:
    import shutil

    shutil.copytree(stopped, tmp_path, dirs_exist_ok=True)
    run = tmp_path / "run"
    cfg_json = tmp_path / "cfg.json"
    return run, ["train", "--config", str(cfg_json), "--out", str(run), "--cache", str(cache)]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # see below
def test_corrupt_latest_checkpoint_falls_back_to_the_newest_that_restores(
    tmp_path: Path,
    cache: Path,
    stopped_at_4: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    from phasejax.cli import main

    monkeypatch.setenv("PHASEJAX_COMPILATION_CACHE", "off")
    run, argv = _copy_run(stopped_at_4, tmp_path, cache)
    latest = run / "checkpoints" / "latest"
    _damage(latest / "4")
    damaged = sorted(p.relative_to(latest / "4") for p in (latest / "4").rglob("*"))

    assert main(argv) == 0
    err = capsys.readouterr().err
    kept = run / "checkpoints" / "corrupt" / "latest_4"
    (line,) = [x for x in err.splitlines() if x.startswith("checkpoint step 4")]
    assert "does not restore (cannot restore" in line
    assert line.endswith(f"; resuming from step 2; the damaged one is kept in {kept}")
    assert "Traceback" not in err
    # Kept as found, and out of the way of the step-4 save the resumed run made.
    assert sorted(p.relative_to(kept) for p in kept.rglob("*")) == damaged
    assert (run / "results.json").is_file()
    steps = [r["step"] for r in _train_records(run) if r["split"] == "train"]
    assert steps == list(range(1, N + 1))
    with Checkpointer(run / "checkpoints") as ck:
        assert ck.latest_step() == N


# Orbax's failed restores leave a tensorstore callback that fires after its event loop
# closed; it is reported at garbage collection and harmless.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_no_restorable_checkpoint_is_one_line_and_exit_1(
    tmp_path: Path,
    cache: Path,
    stopped_at_4: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    from phasejax.cli import main

    monkeypatch.setenv("PHASEJAX_COMPILATION_CACHE", "off")
    run, argv = _copy_run(stopped_at_4, tmp_path, cache)
    for step in (2, 4):
        _damage(run / "checkpoints" / "latest" / str(step))
    assert main(argv) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("phasejax train: no checkpoint under ")
    assert "restores (steps 4, 2); newest: cannot restore" in line
    # Nothing was moved or deleted: both are still there to inspect.
    latest = run / "checkpoints" / "latest"
    assert sorted(p.name for p in latest.iterdir() if p.name.isdigit()) == ["2", "4"]
