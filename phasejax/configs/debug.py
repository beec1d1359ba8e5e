"""debug: a tiny ResNet on the tiny synthetic cohort; trains in about a minute on CPU.

    phasejax train --config debug --workdir runs/debug

Expected time on a 2-core CPU: about 1 minute of training (200 steps of 16 series at
64 px, ResNet "tiny" of width 16, both networks of strategy B), plus the one-time
generation of the tiny cohort on first use. For checking that the whole path works
(data, sharded step, checkpoints, results.json), not for accuracy numbers.
"""

from phasejax.config import CohortConfig, Config, DataConfig, ModelConfig, TrainConfig


def get_config() -> Config:
    return Config(
        name="debug",
        cohort=CohortConfig(preset="tiny", seed=0),
        data=DataConfig(
            image_size=64,
            num_slices=3,
            window="abdomen",
            cache_size=128,  # the cohort is cached at 128 px: enough for a 64 px input
        ),
        model=ModelConfig(depth="tiny", width=16, strategy="two_step"),
        train=TrainConfig(
            batch_size=16,
            steps=200,
            optimizer="adamw",
            learning_rate=3e-3,
            warmup_steps=10,
            schedule="cosine",
            weight_decay=1e-4,
            eval_every=50,
            checkpoint_every=50,
            log_every=10,
            eval_batch_size=32,
        ),
    )
