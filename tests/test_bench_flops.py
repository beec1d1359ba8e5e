"""FLOP counting of the training benchmarks (experiments/benchmarks/train_throughput.py,
check_mfu.py): a step's FLOPs come from the step lowered for the CPU, because on NVIDIA
GPUs the compiled program's cuDNN convolutions are invisible to XLA's cost analysis."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "experiments" / "benchmarks"
sys.path.insert(0, str(BENCH))

import check_mfu  # noqa: E402
import train_throughput as T  # noqa: E402


def test_step_flops_count_the_convolutions_and_scale_with_the_batch():
    import jax
    from flax import nnx

    from phasejax import parallel
    from phasejax.models import build_classifier
    from phasejax.train import optim
    from phasejax.train.step import Trainer

    cfg = T._config("10", 8, 32, 4, "float32")
    flops = T.step_flops(cfg, T.synthetic_batch(4, 32))
    model = build_classifier(cfg, rngs=nnx.Rngs(0))
    mesh = parallel.make_mesh(jax.devices("cpu")[:1])
    trainer = Trainer(model, optim.create_optimizer(model, cfg.train), mesh)
    compiled = T._flops(
        trainer.lower_train(parallel.to_global(T.synthetic_batch(4, 32), mesh)).compile()
    )
    assert flops == pytest.approx(compiled, rel=0.1)
    # Forward + backward of the convolutions dominate: twice the batch, ~twice the FLOPs
    # (the optimizer update's share does not grow with the batch).
    double = T.step_flops(T._config("10", 8, 32, 8, "float32"), T.synthetic_batch(8, 32))
    assert 1.8 < double / flops < 2.0


def test_check_mfu_recounts_flops_and_keeps_the_measured_step_times(tmp_path, capsys):
    run = {
        "depth": "10",
        "dtype": "bfloat16",
        "batch": 4,
        "images_per_s": 400.0,
        "step_ms": 10.0,
        "flops_per_step": 1.0,  # a count as a GPU's compiled program reports it: too small
        "peak_tflops": 0.5,
        "torch": {"images_per_s": 200.0, "step_ms": 20.0},
    }
    check = {
        "stages": {
            "throughput": {
                "result": {
                    "settings": {"size": 32, "width": 8},
                    "peak": {"device_kind": "test"},
                    "runs": [run],
                }
            }
        }
    }
    path = tmp_path / "accelerator_check.json"
    path.write_text(json.dumps(check))
    sys.argv = ["check_mfu.py", str(path)]
    assert check_mfu.main() == 0
    (out,) = json.loads(capsys.readouterr().out)
    (r,) = out["runs"]
    flops = T.step_flops(T._config("10", 8, 32, 4, "bfloat16"), T.synthetic_batch(4, 32))
    assert r["flops_per_step"] == flops and r["flops_per_step_reported"] == 1.0
    assert r["phasejax"]["tflops_per_s"] == round(flops / 0.010 / 1e12, 2)
    assert r["torch"]["mfu"] == round(flops / 0.020 / 1e12 / 0.5, 4)
