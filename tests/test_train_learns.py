"""Training learns: on phantom CT whose organ enhancement follows the phase, the loss
falls and accuracy ends far above chance (0.25 for four phases).

The fast test trains a tiny two-step network at 32 px through the whole `train`
path (pipeline, sharded step on 8 devices, validation, results.json); the slow one
runs the `debug` config itself.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from fake_cache import make_fake_cache

from phasejax.config import Config, DataConfig, ModelConfig, TrainConfig, load_config
from phasejax.data.cache import content_digest
from phasejax.train.loop import train


def _train_curve(workdir: Path) -> tuple[list[float], list[float]]:
    recs = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    loss = [r["loss"] for r in recs if r["split"] == "train"]
    val = [r["accuracy"] for r in recs if r["split"] == "val"]
    return loss, val


def _check_learned(results: dict, workdir: Path, min_acc: float) -> None:
    loss, val = _train_curve(workdir)
    assert loss[-1] < 0.5 * loss[0], loss
    assert results["train"]["best_val_accuracy"] >= min_acc, val
    for split in ("test", "external"):
        acc = results["splits"][split]["metrics"]["accuracy"]
        assert acc["n"] == 16  # 4 patients x 4 phases, each series once
        assert acc["value"] >= min_acc, (split, acc)


def test_tiny_network_learns_phases(tmp_path: Path) -> None:
    cache = make_fake_cache(tmp_path / "cache", patients=24, size=32, slices=8)
    cfg = Config(
        name="learns",
        data=DataConfig(image_size=32, num_slices=3),
        model=ModelConfig(depth="tiny", width=16, strategy="two_step"),
        train=TrainConfig(
            batch_size=16,
            steps=100,
            learning_rate=1e-2,
            warmup_steps=5,
            eval_every=50,
            checkpoint_every=1000,
            log_every=10,
            eval_batch_size=32,
        ),
    )
    results = train(cfg, tmp_path / "run", cache_dir=cache)
    _check_learned(results, tmp_path / "run", min_acc=0.75)
    assert results["classes"] == ["EAP", "LAP", "PVP", "DP"]
    assert results["train"]["steps"] == 100 and results["train"]["images_per_s"] > 0
    preds = results["splits"]["test"]["predictions"]
    assert len({p["series_id"] for p in preds}) == 16
    assert all(abs(sum(p["probs"]) - 1.0) < 1e-5 for p in preds)
    # The host's CPU is recorded: XLA:CPU compiles for its instruction set, so runs on
    # hosts with other vector extensions may round differently.
    env = json.loads((tmp_path / "run" / "env.json").read_text())
    cpu = env["cpu"]
    assert cpu["cores"] == os.cpu_count() and isinstance(cpu["isa"], list)
    if Path("/proc/cpuinfo").is_file():
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        flags = next(line for line in lines if line.startswith("flags")).split()
        assert ("avx2" in cpu["isa"]) == ("avx2" in flags)
        family = next(
            (ln.split(":")[1].strip() for ln in lines if ln.startswith("cpu family")), None
        )
        if family is not None:
            assert cpu["family_model"].split("/")[0] == family
    # ... and so is the cache's content: runs agree across hosts only if their caches do.
    assert env["cache_digest"] == content_digest(cache) and len(env["cache_digest"]) == 64


@pytest.mark.slow
def test_debug_config_learns(tmp_path: Path) -> None:
    cfg = load_config("debug")
    cache = make_fake_cache(tmp_path / "cache", patients=24, size=cfg.data.image_size, slices=12)
    results = train(cfg, tmp_path / "run", cache_dir=cache)
    _check_learned(results, tmp_path / "run", min_acc=0.8)
