"""One-step / two-step series classifiers: output contract, two-step algebra, masks, slices."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from phasejax.config import Config
from phasejax.models import (
    OneStepClassifier,
    Output,
    TwoStepClassifier,
    aggregate_slices,
    build_classifier,
    cross_entropy,
    two_step_log_probs,
)
from phasejax.models.classifiers import VOTE_EPSILON, zoom_centre, zoomed_position
from phasejax.phases import label_set

PAPER4 = label_set("paper4")  # EAP, LAP, PVP, DP; step 1: AP, PVP, DP
FULL5 = label_set("full5")  # NC, EAP, LAP, PVP, DP; step 1: NC, AP, PVP, DP
EAP, LAP, PVP, DP = 0, 1, 2, 3


def _softmax(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _batch(b: int = 4, s: int = 3, size: int = 32, c: int = 1, seed: int = 0) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).normal(size=(b, s, size, size, c)), jnp.float32)


def _model(cls, slice_mode: str = "channels", *, channels: int = 1, seed: int = 0, **kw):
    return cls(
        PAPER4,
        depth="tiny",
        num_slices=3,
        channels=channels,
        slice_mode=slice_mode,
        width=4,
        rngs=nnx.Rngs(seed),
        **kw,
    )


# ------------------------------------------------------------------- output contract
@pytest.mark.parametrize("slice_mode", ["channels", "per_slice"])
@pytest.mark.parametrize("cls", [OneStepClassifier, TwoStepClassifier])
def test_output_shapes_and_normalised_log_probs(cls, slice_mode: str) -> None:
    model = _model(cls, slice_mode)
    out = model(_batch())
    assert isinstance(out, Output)
    assert out.log_probs.shape == (4, 4) and out.log_probs.dtype == jnp.float32
    np.testing.assert_allclose(np.exp(np.asarray(out.log_probs)).sum(axis=1), 1.0, rtol=1e-5)
    per = (3,) if slice_mode == "per_slice" else ()
    if cls is OneStepClassifier:
        assert {k: v.shape for k, v in out.heads.items()} == {"logits": (4, *per, 4)}
        assert model.net.in_channels == (3 if slice_mode == "channels" else 1)
    else:
        assert {k: v.shape for k, v in out.heads.items()} == {
            "step1": (4, *per, 3),
            "step2": (4, *per, 2),
        }
        assert model.step1.num_classes == 3 and model.step2.num_classes == 2
    loss, aux = model.loss(out, jnp.array([EAP, LAP, PVP, DP]), jnp.ones(4))
    assert np.isfinite(float(loss)) and float(loss) > 0
    assert 0.0 <= float(aux["accuracy"]) <= 1.0


def test_wrong_batch_shape_is_a_named_error() -> None:
    model = _model(OneStepClassifier)
    with pytest.raises(
        ValueError, match=r"OneStepClassifier expects a batch \[B, S=3, H, W, C=1\]"
    ):
        model(_batch(s=4))
    with pytest.raises(ValueError, match="unknown slice mode 'stack'"):
        _model(OneStepClassifier, "stack")


def test_channels_mode_stacks_slice_major() -> None:
    model = nnx.eval_shape(lambda: _model(OneStepClassifier, channels=3))
    # Voxel value 10*s + c marks slice s, window c.
    x = np.zeros((1, 3, 2, 2, 3), np.float32)
    for s in range(3):
        for c in range(3):
            x[:, s, :, :, c] = 10 * s + c
    stacked = np.asarray(model._network_input(jnp.asarray(x)))
    assert stacked.shape == (1, 2, 2, 9)
    np.testing.assert_array_equal(stacked[0, 0, 0], [0, 1, 2, 10, 11, 12, 20, 21, 22])


def test_per_slice_mode_classifies_each_slice_alone() -> None:
    model = _model(OneStepClassifier, "per_slice", seed=3)
    model.eval()  # running stats: a slice's logits do not depend on the rest of the batch
    x = _batch(b=2)
    out = model(x)
    for b in range(2):
        for s in range(3):
            alone = model.net(x[b : b + 1, s])
            np.testing.assert_allclose(
                np.asarray(out.heads["logits"][b, s]), np.asarray(alone[0]), rtol=1e-5, atol=1e-5
            )


# ------------------------------------------------------------------ two-step algebra
def test_two_step_combination_equals_hand_computation() -> None:
    l1 = np.array([[2.0, 0.5, -1.0], [-0.3, 1.2, 0.4]])  # AP, PVP, DP
    l2 = np.array([[0.7, -0.2], [-1.5, 2.0]])  # EAP, LAP given AP
    got = np.exp(np.asarray(two_step_log_probs(jnp.asarray(l1), jnp.asarray(l2), PAPER4)))
    p1, p2 = _softmax(l1), _softmax(l2)
    expected = np.stack(
        [p1[:, 0] * p2[:, 0], p1[:, 0] * p2[:, 1], p1[:, 1], p1[:, 2]], axis=1
    )  # EAP, LAP, PVP, DP
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-6)
    # Row 0 by hand: p1(AP) = e^2 / (e^2 + e^0.5 + e^-1) = 0.78560,
    # p2(EAP | AP) = 1 / (1 + e^-0.9) = 0.71095, p(EAP) = 0.55852.
    assert got[0, EAP] == pytest.approx(0.55852, abs=1e-5)


def test_two_step_combination_with_non_contrast() -> None:
    l1 = np.array([[0.1, 1.0, -0.5, 0.3]])  # NC, AP, PVP, DP
    l2 = np.array([[1.0, 0.0]])
    got = np.exp(np.asarray(two_step_log_probs(jnp.asarray(l1), jnp.asarray(l2), FULL5)))
    p1, p2 = _softmax(l1)[0], _softmax(l2)[0]
    expected = [p1[0], p1[1] * p2[0], p1[1] * p2[1], p1[2], p1[3]]  # NC, EAP, LAP, PVP, DP
    np.testing.assert_allclose(got[0], expected, rtol=1e-6)


def _two_step_output(l1: np.ndarray, l2: np.ndarray) -> Output:
    l1, l2 = jnp.asarray(l1, jnp.float32), jnp.asarray(l2, jnp.float32)
    return Output(two_step_log_probs(l1, l2, PAPER4), {"step1": l1, "step2": l2})


def test_two_step_loss_masks_non_arterial_series_out_of_network_2() -> None:
    model = nnx.eval_shape(lambda: _model(TwoStepClassifier))
    rng = np.random.default_rng(0)
    l1, l2 = rng.normal(size=(5, 3)), rng.normal(size=(5, 2))
    out = _two_step_output(l1, l2)
    labels = np.array([EAP, PVP, LAP, DP, PVP])
    weight = jnp.ones(5)
    _, aux = model.loss(out, jnp.asarray(labels), weight)

    lp1, lp2 = np.log(_softmax(l1)), np.log(_softmax(l2))
    step1 = np.array([0, 1, 0, 2, 1])  # AP, PVP, AP, DP, PVP
    ce1 = -lp1[np.arange(5), step1].mean()
    ce2 = -(lp2[0, 0] + lp2[2, 1]) / 2  # arterial series 0 (EAP) and 2 (LAP) only
    assert float(aux["loss_step1"]) == pytest.approx(ce1, rel=1e-5)
    assert float(aux["loss_step2"]) == pytest.approx(ce2, rel=1e-5)
    assert float(aux["loss"]) == pytest.approx(ce1 + ce2, rel=1e-5)
    assert float(aux["arterial_weight"]) == 2.0

    # Swapping the non-arterial labels (PVP <-> DP) leaves network 2's loss unchanged ...
    swapped = np.array([EAP, DP, LAP, PVP, DP])
    _, aux_swapped = model.loss(out, jnp.asarray(swapped), weight)
    assert float(aux_swapped["loss_step2"]) == pytest.approx(float(aux["loss_step2"]), rel=1e-6)
    assert float(aux_swapped["loss_step1"]) != pytest.approx(float(aux["loss_step1"]), rel=1e-3)
    # ... swapping the arterial ones (EAP <-> LAP) does not.
    _, aux_art = model.loss(out, jnp.asarray([LAP, PVP, EAP, DP, PVP]), weight)
    assert float(aux_art["loss_step2"]) != pytest.approx(float(aux["loss_step2"]), rel=1e-3)


def test_two_step_loss_is_safe_without_arterial_series() -> None:
    model = nnx.eval_shape(lambda: _model(TwoStepClassifier))
    rng = np.random.default_rng(1)
    l1, l2 = jnp.asarray(rng.normal(size=(3, 3))), jnp.asarray(rng.normal(size=(3, 2)))
    labels = jnp.asarray([PVP, DP, PVP])

    def loss2(l2):
        return model.loss(_two_step_output(l1, l2), labels, jnp.ones(3))[1]["loss_step2"]

    value, grad = jax.value_and_grad(loss2)(l2)
    assert float(value) == 0.0
    np.testing.assert_array_equal(np.asarray(grad), 0.0)


def test_network_2_gets_no_gradient_from_a_batch_without_arterial_series() -> None:
    """Through the real module under nnx.jit: one compilation, both networks' gradients."""
    model = _model(TwoStepClassifier, "per_slice", seed=1)
    x = _batch(b=4)

    @nnx.jit
    def grads(model, x, label, weight):
        def loss_fn(model):
            return model.loss(model(x), label, weight)[0]

        return nnx.grad(loss_fn)(model)

    def norm(tree) -> float:
        return float(sum(jnp.sum(jnp.abs(g)) for g in jax.tree.leaves(tree)))

    g = grads(model, x, jnp.asarray([PVP, DP, PVP, DP]), jnp.ones(4))
    assert norm(g["step1"]) > 0
    assert norm(g["step2"]) == 0.0
    # An arterial series, even with weight 1 among padding, gives network 2 a gradient.
    g = grads(model, x, jnp.asarray([EAP, DP, -1, PVP]), jnp.asarray([1.0, 1.0, 0.0, 1.0]))
    assert norm(g["step2"]) > 0


# ------------------------------------------------------------------ losses, weights
def test_one_step_loss_is_weighted_mean_ignoring_padding_and_unlabelled() -> None:
    model = nnx.eval_shape(lambda: _model(OneStepClassifier))
    logits = np.array([[2.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [5.0, 0, 0, 0], [0, 0, 0, 3.0]])
    out = Output(jax.nn.log_softmax(jnp.asarray(logits)), {"logits": jnp.asarray(logits)})
    labels = jnp.asarray([EAP, PVP, LAP, -1])
    weight = jnp.asarray([1.0, 1.0, 0.0, 1.0])  # series 2 is padding, series 3 unlabelled
    loss, aux = model.loss(out, labels, weight)
    lp = np.log(_softmax(logits))
    assert float(loss) == pytest.approx(-(lp[0, EAP] + lp[1, PVP]) / 2, rel=1e-6)
    assert float(aux["accuracy"]) == pytest.approx(0.5)  # series 0 right, series 1 wrong
    zero, _ = model.loss(out, labels, jnp.zeros(4))
    assert float(zero) == 0.0  # no NaN on an all-padding batch


def test_per_slice_loss_is_mean_cross_entropy_over_slices() -> None:
    logits = np.array([[[1.0, 0.0, -1.0, 0.0], [0.0, 2.0, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0]]])
    lp = np.log(_softmax(logits))
    got = cross_entropy(jnp.asarray(logits), jnp.asarray([LAP]))
    assert float(got[0]) == pytest.approx(-lp[0, :, LAP].mean(), rel=1e-6)


# ----------------------------------------------------------------- slice aggregation
def test_mean_logprob_aggregation_hand_values() -> None:
    # Two slices, three phases: slice log-probs log(0.6,0.3,0.1) and log(0.2,0.5,0.3).
    p = np.array([[[0.6, 0.3, 0.1], [0.2, 0.5, 0.3]]])
    got = np.exp(np.asarray(aggregate_slices(jnp.log(jnp.asarray(p)), "mean_logprob")))
    geo = np.sqrt(p[0, 0] * p[0, 1])
    np.testing.assert_allclose(got[0], geo / geo.sum(), rtol=1e-6)
    assert got[0].argmax() == 1  # geometric mean favours phase 1 (0.387 vs 0.346)


def test_majority_vote_aggregation_hand_values() -> None:
    # Three slices vote 0, 2, 2 -> shares (1/3, 0, 2/3); the confident slice 0 loses the vote.
    p = np.array([[[0.98, 0.01, 0.01], [0.3, 0.3, 0.4], [0.35, 0.3, 0.35 + 1e-3]]])
    p = p / p.sum(axis=-1, keepdims=True)
    got = np.exp(np.asarray(aggregate_slices(jnp.log(jnp.asarray(p)), "majority")))
    eps = VOTE_EPSILON
    expected = (np.array([1 / 3, 0.0, 2 / 3]) + eps) / (1 + 3 * eps)
    np.testing.assert_allclose(got[0], expected, rtol=1e-5)
    assert got[0, 1] == pytest.approx(1e-3 / 1.003, rel=1e-4)  # no vote, still finite
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-6)
    # mean_logprob on the same slices follows the confident slice instead.
    assert np.asarray(aggregate_slices(jnp.log(jnp.asarray(p)), "mean_logprob"))[0].argmax() == 0


def test_in_graph_aggregation_agrees_with_the_metrics_module() -> None:
    metrics = pytest.importorskip("phasejax.eval.metrics")
    assert metrics.MAJORITY_EPS == VOTE_EPSILON
    lp = jax.nn.log_softmax(jnp.asarray(np.random.default_rng(4).normal(size=(6, 5, 4)) * 2))
    for method in ("mean_logprob", "majority"):
        np.testing.assert_allclose(
            np.asarray(aggregate_slices(lp, method)),
            metrics.aggregate_slices(np.asarray(lp), method),
            rtol=1e-5,
            atol=1e-6,
        )


def test_model_aggregation_mode_is_applied_to_slice_log_probs() -> None:
    model = _model(OneStepClassifier, "per_slice", aggregation="majority", seed=2)
    out = model(_batch(b=2))
    slice_lp = jax.nn.log_softmax(out.heads["logits"], axis=-1)
    np.testing.assert_allclose(
        np.asarray(out.log_probs), np.asarray(aggregate_slices(slice_lp, "majority")), rtol=1e-6
    )


# ---------------------------------------------------------------------- from config
def _cfg(**model) -> Config:
    return Config().override({"model.depth": "tiny", "model.width": 4, **model})


def test_build_classifier_from_config() -> None:
    def build(cfg: Config, shape=(3, 32, 32, 3)):
        return nnx.eval_shape(lambda: build_classifier(cfg, rngs=nnx.Rngs(0), input_shape=shape))

    two = build(_cfg())
    assert isinstance(two, TwoStepClassifier)
    assert two.step1.in_channels == 9 and two.step1.num_classes == 3  # AP, PVP, DP
    one = build(_cfg(**{"model.strategy": "one_step"}).override(["data.slice_mode=per_slice"]))
    assert isinstance(one, OneStepClassifier)
    assert one.net.in_channels == 3 and one.net.num_classes == 4
    five = build(_cfg().override(["data.label_set=full5", "model.dtype=bfloat16"]))
    assert five.step1.num_classes == 4 and five.step1.dtype == jnp.bfloat16  # NC, AP, PVP, DP
    # A config cannot name an unknown strategy or dtype: refused when it is built.
    with pytest.raises(ValueError, match="model.strategy='three_step' is not one of one_step"):
        _cfg(**{"model.strategy": "three_step"})
    with pytest.raises(ValueError, match="model.dtype='int8' is not one of float32, bfloat16"):
        _cfg(**{"model.dtype": "int8"})


def test_build_classifier_takes_input_shape_from_the_pipeline() -> None:
    pipeline = pytest.importorskip("phasejax.data.pipeline")
    cfg = _cfg().override(["data.window=multi", "data.num_slices=5"])
    s, _, _, c = pipeline.input_shape(cfg.data)
    model = nnx.eval_shape(lambda: build_classifier(cfg, rngs=nnx.Rngs(0)))
    assert model.step1.in_channels == s * c == 15


# ------------------------------------------------------------------- network 2's zoom
def test_zoom_centre_samples_the_central_square_bilinearly() -> None:
    size, zoom = 32, 0.5
    rows = np.arange(size, dtype=np.float32)
    ramp = jnp.asarray(np.broadcast_to(rows[None, :, None, None], (1, size, size, 2)))
    out = np.asarray(zoom_centre(ramp, zoom))
    # Output row o samples input row (o + 1/2 - 16) / 2 + 16 - 1/2: rows 7.75 ... 23.25,
    # and a ramp interpolates exactly.
    assert out[0, 0, 0, 0] == pytest.approx(7.75) and out[0, -1, 5, 1] == pytest.approx(23.25)
    sampled = (np.arange(size) + 0.5 - size / 2) * zoom + size / 2 - 0.5
    np.testing.assert_allclose(out[0, :, 3, 1], sampled, atol=1e-5)
    np.testing.assert_allclose(zoomed_position(sampled, size, zoom), np.arange(size), atol=1e-9)
    np.testing.assert_array_equal(np.asarray(zoom_centre(ramp, 1.0)), np.asarray(ramp))


def test_zoomed_network_2_sees_only_the_centre_and_network_1_the_whole_input() -> None:
    x = _batch(b=2, size=32)
    model = _model(TwoStepClassifier, step2_zoom=0.5)
    model.eval()
    out = model(x)
    xin = model._network_input(x)
    np.testing.assert_allclose(out.heads["step1"], model.step1(xin), atol=1e-6)
    np.testing.assert_allclose(out.heads["step2"], model.step2(zoom_centre(xin, 0.5)), atol=1e-6)
    # Rows and columns 0-6 and 25-31 lie outside the rows 7.75 ... 23.25 that network 2
    # samples: changing them moves network 1's logits, not network 2's.
    edit = np.asarray(x).copy()
    edit[:, :, :7] += 3.0
    edit[:, :, :, 25:] -= 3.0
    moved = model(jnp.asarray(edit))
    np.testing.assert_array_equal(np.asarray(moved.heads["step2"]), np.asarray(out.heads["step2"]))
    assert not np.allclose(moved.heads["step1"], out.heads["step1"], atol=1e-3)
    # Zoom 1 (the default, the paper) gives network 2 the same input as network 1.
    plain = _model(TwoStepClassifier)
    plain.eval()
    np.testing.assert_allclose(plain(x).heads["step2"], plain.step2(xin), atol=1e-6)


def test_step2_zoom_is_checked() -> None:
    with pytest.raises(ValueError, match=r"step2_zoom must be in \(0, 1\], got 1.5"):
        _model(TwoStepClassifier, step2_zoom=1.5)
    with pytest.raises(ValueError, match=r"step2_zoom must be in \(0, 1\], got 0.0"):
        _model(TwoStepClassifier, step2_zoom=0.0)
    with pytest.raises(ValueError, match="needs model.hu_head 'none'"):
        _model(TwoStepClassifier, step2_zoom=0.5, hu_head="auxiliary")
    # A (reproduce trains it from B's config) has no network 2 and ignores the zoom.
    one = _cfg(**{"model.strategy": "one_step", "model.step2_zoom": 0.5})
    a = build_classifier(one, rngs=nnx.Rngs(0), input_shape=(3, 32, 32, 3))
    assert isinstance(a, OneStepClassifier) and not hasattr(a, "step2_zoom")
    two = build_classifier(_cfg(**{"model.step2_zoom": 0.6}), rngs=nnx.Rngs(0),
                           input_shape=(3, 32, 32, 3))  # fmt: skip
    assert two.step2_zoom == 0.6
