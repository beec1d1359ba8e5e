"""train.class_balance: per-head inverse-frequency class weights of the loss."""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from fake_cache import make_fake_cache
from flax import nnx

from phasejax.config import Config, DataConfig, ModelConfig, TrainConfig
from phasejax.data.pipeline import class_counts
from phasejax.models import OneStepClassifier, TwoStepClassifier, cross_entropy
from phasejax.models.classifiers import inverse_frequency
from phasejax.phases import label_set

PAPER4 = label_set("paper4")
FULL5 = label_set("full5")


def _model(cls, labels=PAPER4):
    return cls(labels, depth="tiny", num_slices=3, channels=1, width=4, rngs=nnx.Rngs(0))


def test_inverse_frequency_weights_average_one_over_the_training_series() -> None:
    counts = [10, 20, 0, 30]
    w = inverse_frequency(counts)
    assert w == pytest.approx((2.0, 1.0, 1.0, 2.0 / 3.0))  # an absent class keeps 1
    assert np.dot(counts, w) / 60 == pytest.approx(1.0)


def test_each_head_is_balanced_over_its_own_classes() -> None:
    one = _model(OneStepClassifier)
    one.set_class_counts([5, 10, 20, 20])  # EAP, LAP, PVP, DP
    assert len(one.class_weights) == 1
    assert one.class_weights[0] == pytest.approx((2.75, 1.375, 0.6875, 0.6875))
    two = _model(TwoStepClassifier)
    two.set_class_counts([5, 10, 20, 20])
    # step 1 sees AP (15) / PVP (20) / DP (20); step 2 sees EAP (5) / LAP (10)
    assert two.class_weights[0] == pytest.approx((55 / 45, 55 / 60, 55 / 60))
    assert two.class_weights[1] == pytest.approx((1.5, 0.75))
    five = _model(TwoStepClassifier, FULL5)
    five.set_class_counts([8, 2, 6, 10, 10])  # NC, EAP, LAP, PVP, DP
    assert five.class_weights[0] == pytest.approx((1.125, 1.125, 0.9, 0.9))
    assert five.class_weights[1] == pytest.approx((2.0, 2.0 / 3.0))
    with pytest.raises(ValueError, match="need 4 class counts"):
        two.set_class_counts([1, 2, 3])


def test_balanced_loss_is_the_class_weighted_mean_cross_entropy() -> None:
    model = _model(TwoStepClassifier)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(6, 3, 32, 32, 1)), jnp.float32)
    label = jnp.asarray([0, 1, 1, 2, 3, -1])  # EAP, LAP, LAP, PVP, DP, padding
    weight = jnp.asarray([1, 1, 1, 1, 1, 0], jnp.float32)
    out = model(x)
    _, plain = model.loss(out, label, weight)
    model.set_class_counts([1, 1, 2, 2])  # step 1: AP 2, PVP 2, DP 2; step 2: 1, 1
    _, equal = model.loss(out, label, weight)
    np.testing.assert_allclose(float(equal["loss"]), float(plain["loss"]), rtol=1e-6)

    model.set_class_counts([5, 10, 20, 20])
    _, aux = model.loss(out, label, weight)
    y1, y2 = np.array([0, 0, 0, 1, 2, -1]), np.array([0, 1, 1, -1, -1, -1])
    for head, y, cw in (
        ("step1", y1, model.class_weights[0]),
        ("step2", y2, model.class_weights[1]),
    ):
        ce = np.asarray(cross_entropy(out.heads[head], jnp.asarray(y)))
        w = np.where(y >= 0, np.asarray(cw)[np.maximum(y, 0)], 0.0) * np.asarray(weight)
        np.testing.assert_allclose(
            float(aux[f"loss_{head}"]), np.sum(w * ce) / np.sum(w), rtol=1e-5
        )
    assert abs(float(aux["loss"]) - float(plain["loss"])) > 1e-4  # the weights change it
    # the accuracy metrics stay unweighted
    assert float(aux["accuracy"]) == float(plain["accuracy"])


def test_class_counts_and_a_balanced_training_run(tmp_path: Path, capsys) -> None:
    cache = make_fake_cache(tmp_path / "cache", patients=12, size=32, slices=6)
    cfg = Config(
        name="balance",
        data=DataConfig(image_size=32, num_slices=3, label_set="full5"),
        model=ModelConfig(depth="tiny", width=4, strategy="two_step"),
        train=TrainConfig(batch_size=8, steps=2, warmup_steps=1, eval_every=2,
                          checkpoint_every=2, log_every=1, class_balance=True),
    )  # fmt: skip
    assert class_counts(cache, cfg).tolist() == [0, 6, 6, 6, 6]  # 6 training patients, no NC
    from phasejax.train.loop import train

    results = train(cfg, tmp_path / "run", cache_dir=cache)
    assert results["splits"]["test"]["metrics"]["accuracy"]["n"] == 8
    err = capsys.readouterr().err
    assert "class balance: {'NC': 0, 'EAP': 6, 'LAP': 6, 'PVP': 6, 'DP': 6}" in err
    # step 1 over NC (absent: 1) / AP (12) / PVP (6) / DP (6); step 2 over EAP / LAP
    assert "((1.0, 0.6666666666666666, 1.3333333333333333, 1.3333333333333333), (1.0, 1.0))" in err
