"""optax optimizers and learning-rate schedules from TrainConfig."""

from __future__ import annotations

import typing
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from phasejax.config import Optimizer, Schedule, TrainConfig

OPTIMIZERS: tuple[str, ...] = typing.get_args(Optimizer)
SCHEDULES: tuple[str, ...] = typing.get_args(Schedule)


def make_schedule(train_cfg: TrainConfig) -> optax.Schedule:
    """Linear warmup from 0 to the peak rate, then cosine decay to 0 at `steps` (or constant).

    Warmup matters for BatchNorm ResNets trained from scratch with Adam: the first
    updates, driven by unnormalised second moments, are otherwise the largest.
    """
    if train_cfg.schedule not in SCHEDULES:
        raise ValueError(f"train.schedule={train_cfg.schedule!r}; choose one of {SCHEDULES}")
    if train_cfg.learning_rate <= 0:
        raise ValueError(f"train.learning_rate must be > 0, got {train_cfg.learning_rate}")
    peak = float(train_cfg.learning_rate)
    warmup = max(0, min(int(train_cfg.warmup_steps), int(train_cfg.steps)))
    if train_cfg.schedule == "constant":
        after: optax.Schedule = optax.constant_schedule(peak)
    else:
        after = optax.cosine_decay_schedule(peak, decay_steps=max(1, train_cfg.steps - warmup))
    if warmup == 0:
        return after
    # Step 0 gets peak/warmup, not 0: a zero first step would waste a batch.
    ramp = optax.linear_schedule(peak / warmup, peak, transition_steps=max(1, warmup - 1))
    return optax.join_schedules([ramp, after], boundaries=[warmup])


def decay_mask(params: Any) -> Any:
    """True for the leaves weight decay applies to: conv and dense kernels (ndim > 1).

    Biases and BatchNorm scale/offset (1-D) are excluded: decaying a BatchNorm scale
    shrinks the layer towards zero output without any regularising effect on the
    function (it is undone by the next normalisation), the standard ResNet practice
    since Goyal et al. 2017.
    """
    return jax.tree.map(lambda p: jnp.ndim(p) > 1, params)


def make_tx(train_cfg: TrainConfig) -> optax.GradientTransformation:
    """AdamW (decoupled weight decay) or SGD with momentum (+ L2 decay added to the gradient)."""
    schedule = make_schedule(train_cfg)
    wd = float(train_cfg.weight_decay)
    parts: list[optax.GradientTransformation] = []
    if train_cfg.grad_clip > 0:
        parts.append(optax.clip_by_global_norm(float(train_cfg.grad_clip)))
    if train_cfg.optimizer == "adamw":
        parts.append(optax.adamw(schedule, weight_decay=wd, mask=decay_mask))
    elif train_cfg.optimizer == "sgd":
        if wd > 0:
            parts.append(optax.add_decayed_weights(wd, mask=decay_mask))
        parts.append(optax.sgd(schedule, momentum=float(train_cfg.momentum), nesterov=False))
    else:
        raise ValueError(f"train.optimizer={train_cfg.optimizer!r}; choose one of {OPTIMIZERS}")
    return optax.chain(*parts) if len(parts) > 1 else parts[0]


def create_optimizer(model: nnx.Module, train_cfg: TrainConfig) -> nnx.Optimizer:
    """nnx.Optimizer over the model's nnx.Param leaves (BatchNorm statistics are not trained)."""
    return nnx.Optimizer(model, make_tx(train_cfg), wrt=nnx.Param)
