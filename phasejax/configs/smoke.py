"""smoke: the smallest config that runs the whole training path; base of `ablate --preset smoke`.

    phasejax ablate --suite all --preset smoke --out runs/ablate_smoke

A "tiny" ResNet (two stages) of width 8 at 32 px on the tiny synthetic cohort, 6 steps of
8 series (8 = the fake device count of the tests, so the batch splits evenly there too),
validated and checkpointed at step 3 and 6 so that resuming has something to resume from.
Its accuracy is meaningless: it exists so that CI exercises every ablation suite end to end
(config -> data -> sharded step -> checkpoints -> results.json -> summary) in a few minutes on
2 CPU cores. Expected time: ~10-20 s per run, mostly XLA compilation; see ablations/README.md
for the whole smoke ablation.
"""

from phasejax.config import CohortConfig, Config, DataConfig, ModelConfig, TrainConfig


def get_config() -> Config:
    return Config(
        name="smoke",
        cohort=CohortConfig(preset="tiny", seed=0),
        data=DataConfig(
            image_size=32,
            num_slices=3,
            window="abdomen",
            cache_size=128,  # the same cohort cache as the debug config: generated once
        ),
        model=ModelConfig(depth="tiny", width=8, strategy="two_step"),
        train=TrainConfig(
            batch_size=8,
            steps=6,
            optimizer="adamw",
            learning_rate=3e-3,
            warmup_steps=1,
            schedule="cosine",
            eval_every=3,
            checkpoint_every=3,
            log_every=3,
            eval_batch_size=16,
        ),
    )
