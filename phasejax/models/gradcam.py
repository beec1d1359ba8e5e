"""Grad-CAM for the series classifiers (Selvaraju et al., ICCV 2017, "Grad-CAM: visual
explanations from deep networks via gradient-based localization").

For a target phase t of series b the score is the series' final log-probability
log p(t | x_b) as the classifier reports it: for strategy B the combined two-step
value log p1(step-1 class) + log p2(t | AP), so the map explains the probability the
paper's pipeline outputs, not one network in isolation. With A the last stage's
feature maps [h, w, F] of a network and g = d score / d A:

    alpha_k = mean over (h, w) of g_k,    CAM = relu(sum_k alpha_k A_k)

Strategy B has two networks on the same input and grid; their channels are summed
together (Grad-CAM's map is the first-order expansion of the score over all
feature channels that feed it, and both networks feed the two-step score). For a
non-arterial target network 2 gets no gradient, so the map is network 1's alone.
The per-network maps are returned too.

Slice modes (phasejax.models.classifiers): "channels" fuses the S slices at the first
convolution, so there is one spatial map per series, repeated for every slice
position; "per_slice" runs the network on each slice, so each slice has its own map
(from the gradient of the series score, which the aggregation spreads over slices).
Majority-vote aggregation has zero gradient almost everywhere, so its score is the
mean-log-probability aggregate of the same slice outputs (the vote's smooth relaxation).

Maps are upsampled bilinearly to the input size and normalised per series to [0, 1]
(divided by the series' maximum over all its slices, so a slice that matters less
stays dimmer); a series whose map is zero everywhere stays zero.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from phasejax.models.classifiers import (
    OneStepClassifier,
    TwoStepClassifier,
    aggregate_slices,
    two_step_log_probs,
)
from phasejax.models.resnet import ResNet

Classifier = OneStepClassifier | TwoStepClassifier


class GradCAM(NamedTuple):
    """Grad-CAM of B series with S slices of H x W pixels over K phases (numpy arrays).

    cam: float32 [B, S, H, W] in [0, 1], the combined map of all networks.
    by_network: {network name: float32 [B, S, H, W]} ("net" for strategy A; "step1",
        "step2" for strategy B), each normalised the same way.
    log_probs: float32 [B, K], the classifier's output (eval mode), as model(x) gives it.
    target: int [B], the phase index each map explains.
    """

    cam: np.ndarray
    by_network: dict[str, np.ndarray]
    log_probs: np.ndarray
    target: np.ndarray


def networks(model: Classifier) -> dict[str, ResNet]:
    """The ResNets of a classifier by name, in the order their channels are summed."""
    if isinstance(model, TwoStepClassifier):
        return {"step1": model.step1, "step2": model.step2}
    if isinstance(model, OneStepClassifier):
        return {"net": model.net}
    raise TypeError(f"Grad-CAM needs a OneStepClassifier or TwoStepClassifier, got {type(model)}")


def upsample_matrix(out_size: int, in_size: int, stride: int) -> np.ndarray:
    """Linear interpolation weights [out_size, in_size] from a feature grid to input pixels.

    The networks pad explicitly as PyTorch does, so feature pixel i is centred on input
    pixel stride * i (each stride-2 layer's output i is centred on its input 2i), not on
    stride * (i + 1/2) - 1/2 as a half-pixel resize (jax.image.resize) assumes: that
    would shift every map by (stride - 1) / 2 pixels, 15.5 px for a ResNet-18 (stride
    32). Pixels beyond the outermost centres take the edge value.
    """
    u = np.clip(np.arange(out_size, dtype=np.float64) / stride, 0.0, in_size - 1.0)
    i0 = np.floor(u).astype(np.int64)
    i1 = np.minimum(i0 + 1, in_size - 1)
    w1 = u - i0
    m = np.zeros((out_size, in_size), np.float64)
    rows = np.arange(out_size)
    np.add.at(m, (rows, i0), 1.0 - w1)
    np.add.at(m, (rows, i1), w1)
    return m.astype(np.float32)


def _score_log_probs(model: Classifier, logits_or_lp: jax.Array) -> jax.Array:
    """Series log-probabilities used as the Grad-CAM score (per-slice aware)."""
    if model.slice_mode == "channels":
        return logits_or_lp
    method = "mean_logprob" if model.aggregation == "majority" else model.aggregation
    return aggregate_slices(logits_or_lp, method)


def _log_probs_from_maps(
    model: Classifier, maps: dict[str, jax.Array], batch: int
) -> tuple[jax.Array, jax.Array]:
    """(score log-probs [B, K], the classifier's output log-probs [B, K]) from feature maps.

    Mirrors OneStepClassifier / TwoStepClassifier.__call__ after the networks' convolutions;
    tests/test_gradcam.py checks the output equals model(x).log_probs.
    """
    nets = networks(model)
    logits = {n: model._series_logits(nets[n].classify(maps[n]), batch) for n in nets}
    if isinstance(model, TwoStepClassifier):
        phase_lp = two_step_log_probs(logits["step1"], logits["step2"], model.label_set)
    else:
        phase_lp = jax.nn.log_softmax(logits["net"], axis=-1)
    return _score_log_probs(model, phase_lp), model._series_log_probs(phase_lp)


def _gradcam_fn(
    graphdef: nnx.GraphDef, state: nnx.State, x: jax.Array, target: jax.Array
) -> tuple[dict[str, jax.Array], jax.Array, jax.Array]:
    model = nnx.merge(graphdef, state)
    model.eval()  # BatchNorm running averages: each series' map is independent of the batch
    b = x.shape[0]
    xin = model._network_input(x)
    nets = networks(model)
    # float32 maps: the gradient of a bf16 activation would be rounded to 8 mantissa bits.
    maps = {n: net.feature_map(xin).astype(jnp.float32) for n, net in nets.items()}
    _, out_lp = _log_probs_from_maps(model, maps, b)
    target = jnp.where(target < 0, jnp.argmax(out_lp, axis=-1), target)

    def score(m: dict[str, jax.Array]) -> jax.Array:
        lp, _ = _log_probs_from_maps(model, m, b)
        # Series are independent (eval-mode BatchNorm), so the gradient of the sum gives
        # each series the gradient of its own score.
        return jnp.sum(jnp.take_along_axis(lp, target[:, None], axis=-1))

    grads = jax.grad(score)(maps)
    raw = {n: jnp.einsum("nhwf,nf->nhw", maps[n], jnp.mean(grads[n], axis=(1, 2))) for n in nets}
    return raw, out_lp, target


@functools.lru_cache(maxsize=16)
def _compiled(graphdef: nnx.GraphDef):
    return jax.jit(functools.partial(_gradcam_fn, graphdef))


def _upsample_normalise(raw: np.ndarray, model: Classifier, size: tuple[int, int]) -> np.ndarray:
    """relu'd maps [N, h, w] -> [B, S, H, W] in [0, 1], normalised per series."""
    stride = next(iter(networks(model).values())).total_stride
    my = upsample_matrix(size[0], raw.shape[1], stride)
    mx = upsample_matrix(size[1], raw.shape[2], stride)
    up = np.einsum("yh,nhw,xw->nyx", my, np.maximum(raw, 0.0), mx)
    s = model.num_slices
    if model.slice_mode == "channels":
        up = np.repeat(up[:, None], s, axis=1)
    else:
        up = up.reshape(-1, s, *size)
    peak = up.max(axis=(1, 2, 3), keepdims=True)
    return np.where(peak > 0, up / np.where(peak > 0, peak, 1.0), 0.0).astype(np.float32)


def grad_cam(
    model: Classifier,
    x: np.ndarray | jax.Array,
    target: Sequence[int] | np.ndarray | None = None,
) -> GradCAM:
    """Grad-CAM maps of a batch of series x [B, S, H, W, C] (the pipeline's "image").

    target: phase indices [B] (in the label set) whose log-probability each map
    explains; None or -1 entries use the predicted phase. The model is evaluated in
    eval mode (running BatchNorm statistics); its own train/eval mode is left as it was.
    """
    x = jnp.asarray(x, jnp.float32)
    b = x.shape[0]
    if target is None:
        target = np.full(b, -1, np.int32)
    target = np.asarray(target, np.int32).reshape(-1)
    if target.shape != (b,):
        raise ValueError(f"target has {target.shape[0]} entries for a batch of {b} series")
    k = model.label_set.num_classes
    if np.any(target >= k):
        raise ValueError(
            f"target indices {target.tolist()} outside the {k} phases of the label set"
        )
    graphdef, state = nnx.split(model)
    raw, out_lp, tgt = jax.device_get(_compiled(graphdef)(state, x, jnp.asarray(target)))
    size = (int(x.shape[2]), int(x.shape[3]))
    names = list(raw)
    combined = _upsample_normalise(sum(np.asarray(raw[n]) for n in names), model, size)
    by_network = {n: _upsample_normalise(np.asarray(raw[n]), model, size) for n in names}
    return GradCAM(
        cam=combined,
        by_network=by_network,
        log_probs=np.asarray(out_lp, np.float32),
        target=np.asarray(tgt, np.int64),
    )


def _forward_fn(graphdef: nnx.GraphDef, state: nnx.State, x: jax.Array) -> jax.Array:
    model = nnx.merge(graphdef, state)
    model.eval()
    return model(x).log_probs


@functools.lru_cache(maxsize=16)
def _compiled_forward(graphdef: nnx.GraphDef):
    return jax.jit(functools.partial(_forward_fn, graphdef))


def predict_log_probs(model: Classifier, x: np.ndarray | jax.Array) -> np.ndarray:
    """The classifier's eval-mode log-probabilities [B, K] of a batch x [B, S, H, W, C]."""
    graphdef, state = nnx.split(model)
    return np.asarray(jax.device_get(_compiled_forward(graphdef)(state, jnp.asarray(x))))
