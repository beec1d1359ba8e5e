"""What the ResNet stem costs on the quick config's input: one JSON document.

    python experiments/benchmarks/stem_cost.py [--config quick] [--steps 20] [--repeats 3]

For each stem (`model.stem`: "standard", the 7x7/2 conv + 3x3/2 max pool; "stride4", one 7x7/4
conv; "conv3", a 3x3/2 conv + the max pool) and each strategy (A one-step, B two-step): the FLOPs of one training step from XLA's
cost analysis (`train_throughput.step_flops`), and its time on a fixed synthetic batch of the
config's input shape already on the device (the real `phasejax.train.step.Trainer` step; the
input pipeline excluded, so the saving is an upper bound of what a run gains). Times are the
best of --repeats runs of --steps steps after one warm-up step; compare them within one run of
this script only. The stem's share of a step is the difference of the two FLOP counts over
3/4 of the standard's, since the stride-4 stem does a quarter of its multiply-adds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import train_throughput as T  # noqa: E402


def measure(cfg, steps: int, repeats: int) -> dict[str, float]:
    import jax
    import numpy as np
    from flax import nnx

    from phasejax import parallel
    from phasejax.data.pipeline import input_shape
    from phasejax.models import build_classifier
    from phasejax.train import optim
    from phasejax.train.step import Trainer

    shape = input_shape(cfg.data)
    b = cfg.train.batch_size
    rng = np.random.default_rng(0)
    batch = {
        "image": rng.standard_normal((b, *shape)).astype(np.float32),
        "label": (np.arange(b) % 4).astype(np.int32),
        "weight": np.ones(b, np.float32),
    }
    model = build_classifier(cfg, rngs=nnx.Rngs(0))
    trainer = Trainer(model, optim.create_optimizer(model, cfg.train), parallel.make_mesh())
    jax.block_until_ready(trainer.step(batch))
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(steps):
            metrics = trainer.step(batch)
        jax.block_until_ready(metrics)
        best = min(best, (time.perf_counter() - t) / steps)
    return {
        "step_ms": round(best * 1e3, 2),
        "gflops_per_step": round(T.step_flops(cfg, batch) / 1e9, 3),
        "input_shape": list(shape),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="quick")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    from phasejax.config import load_config

    base = load_config(args.config)
    from phasejax.models.resnet import STEMS

    runs = []
    for strategy in ("one_step", "two_step"):
        row: dict[str, object] = {"strategy": strategy}
        for stem in STEMS:
            cfg = base.override({"model.strategy": strategy, "model.stem": stem})
            row[stem] = measure(cfg, args.steps, args.repeats)
            print(json.dumps({strategy: {stem: row[stem]}}), file=sys.stderr, flush=True)
        std = row["standard"]
        for stem in STEMS[1:]:
            row[stem]["speedup"] = round(std["step_ms"] / row[stem]["step_ms"], 2)
        saved = std["gflops_per_step"] - row["stride4"]["gflops_per_step"]
        row["standard_stem_flop_share"] = round(saved / 0.75 / std["gflops_per_step"], 3)
        runs.append(row)
    print(
        json.dumps(
            {
                "benchmark": "stem_cost",
                "config": args.config,
                "batch": base.train.batch_size,
                "cpu_count": os.cpu_count(),
                "machine": platform.machine(),
                "runs": runs,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
