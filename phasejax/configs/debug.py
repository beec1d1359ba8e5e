"""debug: the quick config shrunk to a tiny ResNet on the tiny synthetic cohort; trains in
about a minute on CPU.

    phasejax train --config debug --out runs/debug

Expected time on a 2-core CPU: about 1 minute of training (200 steps of 16 series at
64 px, ResNet "tiny" of width 16, both networks of strategy B), plus the one-time
generation of the tiny cohort on first use. For checking that the whole path works
(data, sharded step, checkpoints, results.json), not for accuracy numbers.

Derived from `quick`: only what makes it small is set here, so everything else (optimizer,
schedule, augmentation, label set, ...) follows quick.
"""

from phasejax.config import Config
from phasejax.configs import quick


def get_config() -> Config:
    return quick.get_config().override(
        {
            "name": "debug",
            "cohort.preset": "tiny",
            # quick's extra threshold arterial series add a third to the training series and
            # their generation time; debug checks the path, not the EAP/LAP boundary
            "cohort.extra_arterial": 0,
            "data.image_size": 64,
            "data.num_slices": 3,
            "data.window": "abdomen",
            "data.cache_size": 128,  # the cohort is cached at 128 px: enough for a 64 px input
            "model.depth": "tiny",
            "train.steps": 200,
            "train.learning_rate": 3e-3,
            "train.warmup_steps": 10,
            "train.eval_every": 50,
            "train.checkpoint_every": 50,
        }
    )
