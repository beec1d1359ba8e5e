"""The jit-compiled train / eval steps and the optimizer.

Parity is the data-parallel guarantee: the same global batch on 8 devices (batch
sharded on 'data') and on 1 device gives the same loss, parameters and BatchNorm
statistics, because the step is one global program (no per-device BatchNorm as
with pmap).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from phasejax import parallel
from phasejax.config import Config, DataConfig, ModelConfig, TrainConfig
from phasejax.models import build_classifier
from phasejax.train import optim, step

B = 16


def _cfg(strategy: str = "two_step", optimizer: str = "sgd", **train: object) -> Config:
    return Config(
        data=DataConfig(image_size=32, num_slices=3, window="abdomen"),
        model=ModelConfig(depth="tiny", width=8, strategy=strategy),
        train=TrainConfig(
            batch_size=B, optimizer=optimizer, learning_rate=0.1, warmup_steps=0, **train
        ),
    )


def _batch(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    label = np.arange(B, dtype=np.int32) % 4  # every phase, arterial ones included
    # Class-dependent brightness so the gradients are far from zero everywhere.
    image = rng.normal(size=(B, 3, 32, 32, 1)).astype(np.float32) + label[:, None, None, None, None]
    return {"image": image, "label": label, "weight": np.ones(B, np.float32)}


def _one_step(cfg: Config, devices: list, batch: dict) -> tuple[dict, nnx.State]:
    mesh = parallel.make_mesh(devices)
    model = build_classifier(cfg, rngs=nnx.Rngs(0))
    opt = optim.create_optimizer(model, cfg.train)
    metrics = step.train_step(model, opt, batch, mesh=mesh)
    return jax.device_get(metrics), jax.device_get(nnx.state(model))


@pytest.mark.parametrize(("strategy", "optimizer"), [("two_step", "sgd"), ("one_step", "adamw")])
def test_parity_8_devices_vs_1(strategy: str, optimizer: str) -> None:
    assert jax.device_count() == 8
    cfg = _cfg(strategy, optimizer=optimizer)
    batch = _batch()
    m1, s1 = _one_step(cfg, jax.devices()[:1], batch)
    m8, s8 = _one_step(cfg, jax.devices(), batch)
    assert m1["loss"] > 0.5
    np.testing.assert_allclose(m8["loss"], m1["loss"], rtol=1e-5)
    np.testing.assert_allclose(m8["grad_norm"], m1["grad_norm"], rtol=1e-4)
    assert m8["accuracy"] == m1["accuracy"]
    params1, params8 = nnx.state(s1, nnx.Param), nnx.state(s8, nnx.Param)
    stats1, stats8 = nnx.state(s1, nnx.BatchStat), nnx.state(s8, nnx.BatchStat)
    assert len(jax.tree.leaves(stats1)) >= 4
    moved = 0
    for a, b in zip(jax.tree.leaves(params1), jax.tree.leaves(params8)):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-5)
    # BatchNorm running statistics over the GLOBAL batch: a per-device BatchNorm (pmap
    # without axis_name) would give each device's mean of 2 series instead.
    for a, b in zip(jax.tree.leaves(stats1), jax.tree.leaves(stats8)):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-5)
        moved += int(np.any(np.abs(np.asarray(a) - np.round(np.asarray(a))) > 1e-6))
    assert moved > 0  # the statistics did move away from their init (0 and 1)


def test_step_shardings_and_state_update() -> None:
    cfg = _cfg()
    mesh = parallel.make_mesh()
    model = build_classifier(cfg, rngs=nnx.Rngs(0))
    opt = optim.create_optimizer(model, cfg.train)
    before = jax.tree.map(np.asarray, nnx.state(model, nnx.Param))
    trainer = step.Trainer(model, opt, mesh)
    metrics = trainer.step(_batch())
    assert trainer.step_count == 1
    trainer.step(_batch(2))
    assert trainer.step_count == 2
    for leaf in jax.tree.leaves(trainer.model_state):
        assert leaf.sharding.is_fully_replicated
    assert float(metrics["count"]) == B
    after = jax.tree.map(np.asarray, nnx.state(trainer.model(), nnx.Param))
    changed = [
        not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after))
    ]
    assert sum(changed) > len(changed) // 2
    lp = trainer.predict(_batch()["image"])
    assert lp.shape == (B, 4)
    assert lp.sharding.spec == jax.sharding.PartitionSpec("data")
    np.testing.assert_allclose(np.exp(np.asarray(lp)).sum(1), 1.0, rtol=1e-5)


def test_eval_step_matches_direct_call_and_ignores_batch_composition() -> None:
    cfg = _cfg()
    model = build_classifier(cfg, rngs=nnx.Rngs(3))
    opt = optim.create_optimizer(model, cfg.train)
    step.train_step(model, opt, _batch(), mesh=parallel.make_mesh())  # BatchNorm stats move
    batch = _batch(5)
    lp8 = np.asarray(step.eval_step(model, batch, mesh=parallel.make_mesh()))
    model.eval()
    direct = np.asarray(model(jnp.asarray(batch["image"])).log_probs)
    np.testing.assert_allclose(lp8, direct, rtol=1e-5, atol=1e-5)
    # Inference BatchNorm uses running statistics: a series' prediction does not depend
    # on the rest of its batch (the padded eval batches rely on this).
    half = {k: v.copy() for k, v in batch.items()}
    half["image"][8:] = 0.0
    lp_half = np.asarray(step.eval_step(model, half, mesh=parallel.make_mesh()))
    np.testing.assert_allclose(lp_half[:8], lp8[:8], rtol=1e-5, atol=1e-6)


def test_schedule_warmup_cosine_and_constant() -> None:
    tc = TrainConfig(learning_rate=1e-2, warmup_steps=10, steps=110, schedule="cosine")
    s = optim.make_schedule(tc)
    assert float(s(0)) == pytest.approx(1e-3)  # peak / warmup
    assert float(s(9)) == pytest.approx(1e-2)
    assert float(s(10)) == pytest.approx(1e-2)
    assert float(s(60)) == pytest.approx(0.5e-2, rel=1e-4)  # half way down the cosine
    assert float(s(110)) == pytest.approx(0.0, abs=1e-9)
    c = optim.make_schedule(TrainConfig(learning_rate=1e-2, warmup_steps=0, schedule="constant"))
    assert float(c(0)) == float(c(500)) == pytest.approx(1e-2)
    with pytest.raises(ValueError, match="train.schedule"):
        optim.make_schedule(TrainConfig(schedule="linear"))
    with pytest.raises(ValueError, match="train.optimizer"):
        optim.make_tx(TrainConfig(optimizer="lamb"))


@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_weight_decay_only_on_kernels(name: str) -> None:
    """With zero gradients the only change is weight decay: kernels shrink, biases and
    BatchNorm scales do not."""
    tc = TrainConfig(optimizer=name, learning_rate=0.1, weight_decay=0.5, warmup_steps=0)
    tx = optim.make_tx(tc)
    params = {
        "kernel": jnp.full((3, 3, 2, 2), 2.0),
        "bias": jnp.full((2,), 2.0),
        "scale": jnp.ones(2),
    }
    state = tx.init(params)
    grads = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(grads, state, params)
    new = optax.apply_updates(params, updates)
    # AdamW: p - lr * wd * p = 2 - 0.1 * 0.5 * 2; SGD: same step through the L2 gradient.
    np.testing.assert_allclose(np.asarray(new["kernel"]), 1.9, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(new["bias"]), 2.0)
    np.testing.assert_array_equal(np.asarray(new["scale"]), 1.0)


def test_grad_clip_limits_update() -> None:
    tc = TrainConfig(
        optimizer="sgd",
        learning_rate=1.0,
        momentum=0.0,
        weight_decay=0.0,
        grad_clip=1.0,
        warmup_steps=0,
    )
    tx = optim.make_tx(tc)
    params = {"w": jnp.zeros((4, 4))}
    grads = {"w": jnp.full((4, 4), 10.0)}  # global norm 40
    updates, _ = tx.update(grads, tx.init(params), params)
    assert float(optax.tree.norm(updates)) == pytest.approx(1.0, rel=1e-5)


def test_trainer_leaves_the_callers_model_usable() -> None:
    """The steps donate their buffers; the Trainer must own copies, or on one device
    (where device_put aliases) the caller's model would hold deleted arrays."""
    cfg = _cfg()
    model = build_classifier(cfg, rngs=nnx.Rngs(0))
    before = jax.tree.map(np.array, nnx.state(model))
    trainer = step.Trainer(
        model, optim.create_optimizer(model, cfg.train), parallel.make_mesh(jax.devices()[:1])
    )
    trainer.step(_batch())
    trainer.step(_batch(1))
    after = jax.tree.map(np.array, nnx.state(model))  # raises on a deleted array
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)):
        np.testing.assert_array_equal(a, b)


def test_predict_split_counts_every_series_once_on_any_device_count(tmp_path) -> None:
    """Padded last batches (weight 0) are dropped: 24 series in batches of 16 on 8 devices
    (8 padded rows) and of 10 on 1 device (6 padded rows) give the same predictions."""
    from fake_cache import make_fake_cache

    from phasejax.data.pipeline import split_rows
    from phasejax.train.loop import predict_split

    cache = make_fake_cache(tmp_path / "cache", patients=12, size=32, slices=8)
    cfg = _cfg().override(["train.eval_batch_size=10"])
    model = build_classifier(cfg, rngs=nnx.Rngs(0))
    opt = optim.create_optimizer(model, cfg.train)
    out = {}
    for n in (8, 1):
        trainer = step.Trainer(model, opt, parallel.make_mesh(jax.devices()[:n]))
        out[n] = predict_split(trainer, cache, "train", cfg)
    rows = split_rows(cache, "train", cfg)
    assert len(rows) == 24
    assert [r["series_id"] for r in out[8].rows] == [r["series_id"] for r in rows]
    phases = ("EAP", "LAP", "PVP", "DP")
    np.testing.assert_array_equal(out[8].labels, [phases.index(r["phase"]) for r in rows])
    assert np.isfinite(out[8].log_probs).all()
    np.testing.assert_allclose(out[8].log_probs, out[1].log_probs, rtol=1e-5, atol=1e-5)


def _own_batch(seed: int = 0, seed2: int = 1) -> dict[str, np.ndarray]:
    """A shared batch plus network 2's own batch of arterial series (train.step2_own_batch)."""
    batch = _batch(seed)
    rng = np.random.default_rng(seed2)
    label2 = (np.arange(B, dtype=np.int32) % 2).astype(np.int32)  # EAP, LAP in paper4
    image2 = (
        rng.normal(size=(B, 3, 32, 32, 1)).astype(np.float32) + label2[:, None, None, None, None]
    )
    return {**batch, "image2": image2, "label2": label2, "weight2": np.ones(B, np.float32)}


def _network_leaves(state: nnx.State, name: str) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(state[name])]


def test_own_batch_trains_each_network_on_its_own_batch() -> None:
    cfg = _cfg("two_step")
    devices = jax.devices()[:1]
    m, s = _one_step(cfg, devices, _own_batch(0, 1))
    assert m["arterial_weight"] == B  # every series of network 2's batch counts
    np.testing.assert_allclose(m["loss"], m["loss_step1"] + m["loss_step2"], rtol=1e-6)
    assert m["accuracy"] == m["accuracy_step1"]
    _, other_shared = _one_step(cfg, devices, _own_batch(2, 1))
    _, other_own = _one_step(cfg, devices, _own_batch(0, 3))
    # parameters and BatchNorm statistics: network 1 moves with the shared batch only,
    # network 2 with its own only
    for a, b in zip(_network_leaves(s, "step2"), _network_leaves(other_shared, "step2")):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(_network_leaves(s, "step1"), _network_leaves(other_own, "step1")):
        np.testing.assert_array_equal(a, b)
    assert any(
        not np.array_equal(a, b)
        for a, b in zip(_network_leaves(s, "step1"), _network_leaves(other_shared, "step1"))
    )
    assert any(
        not np.array_equal(a, b)
        for a, b in zip(_network_leaves(s, "step2"), _network_leaves(other_own, "step2"))
    )
    # network 1's loss is the shared step's step-1 loss on the same batch
    shared, _ = _one_step(cfg, devices, _batch(0))
    np.testing.assert_allclose(m["loss_step1"], shared["loss_step1"], rtol=1e-6)
    # and the whole step is one global program: 8 devices give what 1 gives
    m8, s8 = _one_step(cfg, jax.devices(), _own_batch(0, 1))
    np.testing.assert_allclose(m8["loss"], m["loss"], rtol=1e-5)
    for a, b in zip(
        jax.tree.leaves(nnx.state(s, nnx.Param)), jax.tree.leaves(nnx.state(s8, nnx.Param))
    ):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-5)
