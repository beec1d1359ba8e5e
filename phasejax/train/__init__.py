"""Training: optax optimizers, the jit-compiled steps, Orbax checkpoints and the run loop.

    from phasejax.train import train
    results = train(cfg, workdir)

Attributes are imported on first use, so `import phasejax.train.step` does not pull
in Orbax (phasejax.train.checkpoint is the only module that imports it).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "train": "phasejax.train.loop",
    "predict_split": "phasejax.train.loop",
    "build_model_and_optimizer": "phasejax.train.loop",
    "Trainer": "phasejax.train.step",
    "train_step": "phasejax.train.step",
    "eval_step": "phasejax.train.step",
    "create_optimizer": "phasejax.train.optim",
    "make_tx": "phasejax.train.optim",
    "make_schedule": "phasejax.train.optim",
    "Checkpointer": "phasejax.train.checkpoint",
    "load_trained": "phasejax.train.restore",
    "load_run": "phasejax.train.restore",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'phasejax.train' has no attribute {name!r}")
