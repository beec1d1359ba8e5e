"""The one train step and the one eval step, jit-compiled over the device mesh.

Both are pure functions of the split NNX state (`nnx.split` -> graphdef + State)
compiled with `jax.jit` and explicit shardings: parameters, BatchNorm statistics
and optimizer state replicated, the batch sharded on 'data'. Written in global view:
the loss is a mean over the GLOBAL batch, so XLA inserts the gradient all-reduce
and the BatchNorm statistics reduction itself (what pmap code did with lax.pmean).

`Trainer` is what the loop uses (state kept on the mesh, buffers donated);
`train_step(model, optimizer, batch)` and `eval_step(model, batch)` are the same
compiled programs for callers that hold NNX objects (tests, notebooks); inference over
many series goes through `phasejax.infer.Classifier`, which runs `compiled_eval`.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh

from phasejax import parallel

Batch = Mapping[str, Any]


def _train_fn(
    model_def: nnx.GraphDef, opt_def: nnx.GraphDef, model_state: Any, opt_state: Any, batch: Any
) -> tuple[Any, Any, dict[str, jax.Array]]:
    model = nnx.merge(model_def, model_state)
    optimizer = nnx.merge(opt_def, opt_state)
    model.train()  # BatchNorm: batch statistics, running averages updated

    def loss_fn(m: nnx.Module) -> tuple[jax.Array, dict[str, jax.Array]]:
        if "image2" in batch:  # network 2's own batch (train.step2_own_batch)
            heads = m.own_batch_heads(batch["image"], batch["image2"])
            own = (batch["label"], batch["weight"], batch["label2"], batch["weight2"])
            return m.own_batch_loss(heads, *own)
        out = m(batch["image"])
        return m.loss(
            out,
            batch["label"],
            batch["weight"],
            hu=batch.get("hu"),
            hu_present=batch.get("hu_present"),
            seg=batch.get("seg"),
        )

    (loss, aux), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
    optimizer.update(model, grads)
    metrics = {
        "loss": loss,
        # The classifier's own weighted accuracy (labelled series only); with network 2's
        # own batch, network 1's.
        "accuracy": aux["accuracy"],
        "grad_norm": optax.tree.norm(nnx.state(grads, nnx.Param)),
        "count": jnp.sum(batch["weight"]),
        **{k: jnp.asarray(v) for k, v in aux.items() if k not in ("loss", "accuracy")},
    }
    return nnx.state(model), nnx.state(optimizer), metrics


def _eval_fn(model_def: nnx.GraphDef, model_state: Any, image: jax.Array) -> jax.Array:
    model = nnx.merge(model_def, model_state)
    model.eval()  # BatchNorm: running averages
    return model(image).log_probs


@functools.lru_cache(maxsize=32)
def _compiled_train(model_def: nnx.GraphDef, opt_def: nnx.GraphDef, mesh: Mesh, donate: bool):
    repl, data = parallel.replicated(mesh), parallel.batch_sharding(mesh)
    return jax.jit(
        functools.partial(_train_fn, model_def, opt_def),
        in_shardings=(repl, repl, data),
        out_shardings=(repl, repl, repl),
        donate_argnums=(0, 1) if donate else (),
    )


@functools.lru_cache(maxsize=32)
def compiled_eval(model_def: nnx.GraphDef, mesh: Mesh):
    """The eval step of `model_def` on `mesh`: (replicated state, batch sharded on 'data')
    -> log-probabilities sharded like the batch; one compilation per (graphdef, mesh)."""
    repl, data = parallel.replicated(mesh), parallel.batch_sharding(mesh)
    return jax.jit(
        functools.partial(_eval_fn, model_def), in_shardings=(repl, data), out_shardings=data
    )


def _as_global(batch: Batch, mesh: Mesh, keys: tuple[str, ...]) -> dict[str, jax.Array]:
    """numpy (this process's rows) -> global sharded arrays; jax arrays pass through."""
    local = {k: batch[k] for k in keys if not isinstance(batch[k], jax.Array)}
    out = parallel.to_global(local, mesh) if local else {}
    return {k: out.get(k, batch[k]) for k in keys}


TRAIN_KEYS = ("image", "label", "weight")
# Optional keys of training batches: the structure-HU head's targets (model.hu_head) and
# network 2's own batch (train.step2_own_batch).
OPTIONAL_KEYS = ("hu", "hu_present", "seg", "image2", "label2", "weight2")


def _train_keys(batch: Batch) -> tuple[str, ...]:
    return TRAIN_KEYS + tuple(k for k in OPTIONAL_KEYS if k in batch)


class Trainer:
    """Model + optimizer state living on the mesh, and the compiled steps over it."""

    def __init__(self, model: nnx.Module, optimizer: nnx.Optimizer, mesh: Mesh) -> None:
        self.mesh = mesh
        self.model_def, model_state = nnx.split(model)
        self.opt_def, opt_state = nnx.split(optimizer)
        repl = parallel.replicated(mesh)
        # Copies (may_alias=False): the steps donate their state buffers, and a
        # device_put that aliases would leave `model` / `optimizer` pointing at
        # deleted arrays after the first step.
        self.model_state = jax.device_put(model_state, repl, may_alias=False)
        self.opt_state = jax.device_put(opt_state, repl, may_alias=False)
        self._train = _compiled_train(self.model_def, self.opt_def, mesh, True)
        self._eval = compiled_eval(self.model_def, mesh)

    def step(self, batch: Batch) -> dict[str, jax.Array]:
        """One optimisation step on a global batch; metrics stay on device (no host sync)."""
        g = _as_global(batch, self.mesh, _train_keys(batch))
        self.model_state, self.opt_state, metrics = self._train(self.model_state, self.opt_state, g)
        return metrics

    def predict(self, image: np.ndarray | jax.Array) -> jax.Array:
        """log-probabilities [B, K] of a global batch, sharded on 'data' like the batch."""
        g = _as_global({"image": image}, self.mesh, ("image",))
        return self._eval(self.model_state, g["image"])

    @property
    def step_count(self) -> int:
        return int(jax.device_get(nnx.merge(self.opt_def, self.opt_state).step[...]))

    def model(self) -> nnx.Module:
        return nnx.merge(self.model_def, self.model_state)

    def lower_train(self, batch: Batch) -> Any:
        """The lowered train step (for cost analysis: FLOPs of one step)."""
        g = _as_global(batch, self.mesh, _train_keys(batch))
        return self._train.lower(self.model_state, self.opt_state, g)


def _default_mesh(mesh: Mesh | None) -> Mesh:
    return parallel.make_mesh() if mesh is None else mesh


def train_step(
    model: nnx.Module, optimizer: nnx.Optimizer, batch: Batch, *, mesh: Mesh | None = None
) -> dict[str, jax.Array]:
    """One optimisation step; updates `model` and `optimizer` in place, returns metrics.

    The batch is global (numpy rows of this process, or already-global jax arrays).
    """
    mesh = _default_mesh(mesh)
    model_def, model_state = nnx.split(model)
    opt_def, opt_state = nnx.split(optimizer)
    repl = parallel.replicated(mesh)
    fn = _compiled_train(model_def, opt_def, mesh, False)
    new_model, new_opt, metrics = fn(
        jax.device_put(model_state, repl),
        jax.device_put(opt_state, repl),
        _as_global(batch, mesh, _train_keys(batch)),
    )
    nnx.update(model, new_model)
    nnx.update(optimizer, new_opt)
    return metrics


def eval_step(model: nnx.Module, batch: Batch, *, mesh: Mesh | None = None) -> jax.Array:
    """log-probabilities [B, K] over the label set, BatchNorm in inference mode."""
    mesh = _default_mesh(mesh)
    model_def, model_state = nnx.split(model)
    fn = compiled_eval(model_def, mesh)
    image = _as_global(batch, mesh, ("image",))["image"]
    return fn(jax.device_put(model_state, parallel.replicated(mesh)), image)
