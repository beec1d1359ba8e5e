"""train.label_smoothing: every head's cross-entropy against (1 - e) one-hot + e / K."""

from __future__ import annotations

import math
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from fake_cache import make_fake_cache
from flax import nnx

from phasejax.config import Config, DataConfig, ModelConfig, TrainConfig
from phasejax.models import TwoStepClassifier, cross_entropy
from phasejax.phases import label_set
from phasejax.train.loop import train


def test_smoothed_cross_entropy_against_hand_values() -> None:
    logits = jnp.asarray([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    labels = jnp.asarray([0, 2])
    lp = np.log(np.exp([2.0, 0.0, -1.0]) / np.exp([2.0, 0.0, -1.0]).sum())
    plain = cross_entropy(logits, labels)
    assert np.allclose(plain, [-lp[0], math.log(3)], atol=1e-6)
    smooth = cross_entropy(logits, labels, 0.3)
    # (1 - e) * -log p(label) + e * mean_k -log p(k); uniform logits are unchanged.
    assert np.allclose(smooth, [0.7 * -lp[0] + 0.3 * -lp.mean(), math.log(3)], atol=1e-6)
    # The smoothed loss has its minimum at p(label) = 1 - e + e / K, not at 1: a network
    # cannot be rewarded for driving another class to 0.
    k, e = 3, 0.3
    target = 1 - e + e / k

    def loss_at(p_label: float) -> float:
        rest = (1 - p_label) / (k - 1)
        x = jnp.log(jnp.asarray([[p_label, rest, rest]]))
        return float(cross_entropy(x, jnp.asarray([0]), e)[0])

    assert loss_at(target) < loss_at(0.99) and loss_at(target) < loss_at(0.7)
    # Padding (label -1) still gives 0; per-slice logits average over slices.
    assert float(cross_entropy(logits[:1], jnp.asarray([-1]), 0.3)[0]) == 0.0
    per_slice = jnp.stack([logits, logits], axis=1)
    assert np.allclose(cross_entropy(per_slice, labels, 0.3), smooth, atol=1e-6)


def test_two_step_loss_uses_the_smoothing_on_both_heads() -> None:
    model = TwoStepClassifier(
        label_set("paper4"), depth="tiny", num_slices=3, channels=1, width=4, rngs=nnx.Rngs(0)
    )
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 3, 32, 32, 1)), jnp.float32)
    label, weight = jnp.asarray([0, 1, 2, 3]), jnp.ones(4)
    out = model(x)
    _, plain = model.loss(out, label, weight)
    model.label_smoothing = 0.2
    _, smooth = model.loss(out, label, weight)
    y1, y2 = model.step_labels(label)
    for head, y, key in (
        (out.heads["step1"], y1, "loss_step1"),
        (out.heads["step2"], y2, "loss_step2"),
    ):
        w = (y >= 0).astype(jnp.float32)
        expect = float(jnp.sum(cross_entropy(head, y, 0.2) * w) / jnp.sum(w))
        assert float(smooth[key]) == pytest.approx(expect, rel=1e-5)
        assert float(smooth[key]) != pytest.approx(float(plain[key]), rel=1e-3)


def test_training_rejects_a_smoothing_outside_0_1(tmp_path: Path) -> None:
    cache = make_fake_cache(tmp_path / "cache", patients=4, size=32, slices=4)
    cfg = Config(
        data=DataConfig(image_size=32, num_slices=3),
        model=ModelConfig(depth="tiny", width=4),
        train=TrainConfig(batch_size=8, steps=1, label_smoothing=1.0),
    )
    with pytest.raises(ValueError, match="label_smoothing must be in"):
        train(cfg, tmp_path / "run", cache_dir=cache)
