"""smoke: the smallest config that runs the whole training path; base of `ablate --budget smoke`.

    phasejax ablate --suite all --budget smoke --out runs/ablate_smoke

A "tiny" ResNet (two stages) of width 8 at 32 px on the tiny synthetic cohort, 6 steps of
8 series (8 = the fake device count of the tests, so the batch splits evenly there too),
validated and checkpointed at step 3 and 6 so that resuming has something to resume from.
Its accuracy is meaningless: it exists so that CI exercises every ablation suite end to end
(config -> data -> sharded step -> checkpoints -> results.json -> summary) in a few minutes on
2 CPU cores. Expected time: ~10-20 s per run, mostly XLA compilation; see ablations/README.md
for the whole smoke ablation.

Derived from `debug` (itself `quick` shrunk), so it shares debug's cohort and its cache
(tiny cohort at 128 px, generated once) and quick's everything else; only its input size,
width and budget are set here.
"""

from phasejax.config import Config
from phasejax.configs import debug


def get_config() -> Config:
    return debug.get_config().override(
        {
            "name": "smoke",
            "data.image_size": 32,
            "model.width": 8,
            "train.batch_size": 8,
            "train.steps": 6,
            "train.warmup_steps": 1,
            "train.eval_every": 3,
            "train.checkpoint_every": 3,
            "train.log_every": 3,
            "train.eval_batch_size": 16,
        }
    )
