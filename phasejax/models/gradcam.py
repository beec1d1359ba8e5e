"""Grad-CAM for the series classifiers (Selvaraju et al., ICCV 2017, "Grad-CAM: visual
explanations from deep networks via gradient-based localization").

For a target phase t of series b the score is the series' final log-probability
log p(t | x_b) as the classifier reports it: for strategy B the combined two-step
value log p1(step-1 class) + log p2(t | AP), so the map explains the probability the
paper's pipeline outputs, not one network in isolation. With A the last stage's
feature maps [h, w, F] of a network (or an earlier stage's, see below) and g = d score / d A:

    alpha_k = mean over (h, w) of g_k,    CAM = relu(sum_k alpha_k A_k)

Strategy B has two networks on the same input and grid; their channels are summed
together (Grad-CAM's map is the first-order expansion of the score over all
feature channels that feed it, and both networks feed the two-step score). For a
non-arterial target network 2 gets no gradient, so the map is network 1's alone.
The per-network maps are returned too. When network 2 sees a zoomed centre
(`model.step2_zoom` < 1) the grids differ: each network's weighted map is taken to
input pixels first (network 2's only inside its square), then summed and rectified.

Slice modes (phasejax.models.classifiers): "channels" fuses the S slices at the first
convolution, so there is one spatial map per series, repeated for every slice
position; "per_slice" runs the network on each slice, so each slice has its own map
(from the gradient of the series score, which the aggregation spreads over slices).
Majority-vote aggregation has zero gradient almost everywhere, so its score is the
mean-log-probability aggregate of the same slice outputs (the vote's smooth relaxation).

Layer: Grad-CAM's map is as coarse as the layer it is taken at. ResNet-18's last stage
has stride 32, so a 96-px input (the quick preset) gives a 3 x 3 map whose cells are a
third of the image wide; the usual remedy is an earlier stage (Selvaraju et al. section
3 discuss the resolution / semantics trade-off of earlier layers). `layer` picks the
stage: "last" (the classic choice), "stageK" (1-based, torchvision's layerK) or "auto",
the deepest stage whose map has at least AUTO_MIN_CELLS pixels on its shorter side for
the given input. The score is then differentiated through the later stages as well.

Maps are upsampled bilinearly to the input size (see `upsample_matrix`) and normalised
per series to [0, 1] (divided by the series' maximum over all its slices, so a slice that
matters less stays dimmer); a series whose map is zero everywhere stays zero.
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
    zoomed_position,
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
    layer: the stage the maps were taken at ("stage3", ...).
    stride: input pixels per feature pixel of that stage.
    grid: (h, w) of that stage's feature map.
    """

    cam: np.ndarray
    by_network: dict[str, np.ndarray]
    log_probs: np.ndarray
    target: np.ndarray
    layer: str = ""
    stride: int = 0
    grid: tuple[int, int] = (0, 0)


# "auto" takes the deepest stage with at least this many feature pixels per side: with
# fewer, a map cell covers a sixth of the image or more and the shares of structures
# a few cm across approach their area baselines.
AUTO_MIN_CELLS = 6


def networks(model: Classifier) -> dict[str, ResNet]:
    """The ResNets of a classifier by name, in the order their channels are summed."""
    if isinstance(model, TwoStepClassifier):
        return {"step1": model.step1, "step2": model.step2}
    if isinstance(model, OneStepClassifier):
        return {"net": model.net}
    raise TypeError(f"Grad-CAM needs a OneStepClassifier or TwoStepClassifier, got {type(model)}")


def upsample_matrix(out_size: int, in_size: int, stride: int, zoom: float = 1.0) -> np.ndarray:
    """Linear interpolation weights [out_size, in_size] from a feature grid to input pixels.

    The networks pad explicitly as PyTorch does, so feature pixel i is centred on input
    pixel stride * i (each stride-2 layer's output i is centred on its input 2i), not on
    stride * (i + 1/2) - 1/2 as a half-pixel resize (jax.image.resize) assumes: that
    would shift every map by (stride - 1) / 2 pixels, 15.5 px for a ResNet-18 (stride
    32). Between centres the weights are bilinear; every centre lies inside the input
    (ResNet.feature_size), the first on pixel 0.

    Beyond the last centre the map fades linearly to zero at stride * in_size, one cell
    further on (each cell spreads its value over a tent of half-width `stride`, clipped by
    the image). Holding the edge value instead copied the last row and column over the
    last stride - 1 pixels (31 of 96 at stride 32): vertical and horizontal stripes from
    each edge cell to the image border, and 1.5 times the mass of any other cell for the
    last row / column in the anatomical shares.

    zoom < 1: the network saw `classifiers.zoom_centre(x, zoom)`; input pixels outside
    that centre square get weight 0.
    """
    if out_size < 1 or in_size < 1 or stride < 1:
        raise ValueError(f"bad upsampling sizes: out {out_size}, in {in_size}, stride {stride}")
    if stride * (in_size - 1) >= out_size:
        raise ValueError(
            f"{in_size} feature pixels at stride {stride} reach past {out_size} input pixels"
        )
    o = zoomed_position(np.arange(out_size), out_size, zoom)
    seen = (o >= -0.5) & (o <= out_size - 0.5)
    u = np.clip(o, 0.0, out_size - 1.0) / stride
    i0 = np.floor(u).astype(np.int64)
    w1 = u - i0
    # A fractional index past the last cell interpolates towards a zero cell in_size.
    m = np.zeros((out_size, in_size + 1), np.float64)
    rows = np.arange(out_size)
    np.add.at(m, (rows, i0), 1.0 - w1)
    np.add.at(m, (rows, np.minimum(i0 + 1, in_size)), w1)
    m[~seen] = 0.0
    return m[:, :in_size].astype(np.float32)


def resolve_layer(model: Classifier, layer: str | int, size: tuple[int, int]) -> int:
    """The 1-based stage that `layer` names for inputs of `size` (H, W) pixels.

    layer: "last"; "stageK" or K (1..number of stages); "auto" = the deepest stage whose
    feature map has at least AUTO_MIN_CELLS pixels on its shorter side (stage 1 when
    none has). Raises ValueError for anything else.
    """
    nets = list(networks(model).values())
    net = nets[0]
    n = net.num_stages
    if any(m.num_stages != n for m in nets):  # not built by this project, but be explicit
        raise ValueError("Grad-CAM across networks needs the same number of stages")
    if isinstance(layer, str) and layer.startswith("stage") and layer[5:].isdigit():
        layer = int(layer[5:])
    if layer == "last":
        return n
    if layer == "auto":
        for stage in range(n, 0, -1):
            if min(net.feature_size(size[0], stage), net.feature_size(size[1], stage)) >= (
                AUTO_MIN_CELLS
            ):
                return stage
        return 1
    if isinstance(layer, (int, np.integer)) and not isinstance(layer, bool) and 1 <= layer <= n:
        return int(layer)
    raise ValueError(
        f"Grad-CAM layer {layer!r}: use 'last', 'auto' or 'stage1'..'stage{n}' "
        f"(ResNet-{net.depth} has {n} stages)"
    )


def _score_log_probs(model: Classifier, logits_or_lp: jax.Array) -> jax.Array:
    """Series log-probabilities used as the Grad-CAM score (per-slice aware)."""
    if model.slice_mode == "channels":
        return logits_or_lp
    method = "mean_logprob" if model.aggregation == "majority" else model.aggregation
    return aggregate_slices(logits_or_lp, method)


def _log_probs_from_maps(
    model: Classifier, maps: dict[str, jax.Array], batch: int, stage: int
) -> tuple[jax.Array, jax.Array]:
    """(score log-probs [B, K], the classifier's output log-probs [B, K]) from feature maps.

    Mirrors OneStepClassifier / TwoStepClassifier.__call__ after the networks' convolutions;
    tests/test_gradcam.py checks the output equals model(x).log_probs.
    """
    nets = networks(model)
    logits = {
        n: model._series_logits(model._readout(n, nets[n].classify(maps[n], stage))[0], batch)
        for n in nets
    }
    if isinstance(model, TwoStepClassifier):
        phase_lp = two_step_log_probs(logits["step1"], logits["step2"], model.label_set)
    else:
        phase_lp = jax.nn.log_softmax(logits["net"], axis=-1)
    return _score_log_probs(model, phase_lp), model._series_log_probs(phase_lp)


def _gradcam_fn(
    graphdef: nnx.GraphDef, stage: int, state: nnx.State, x: jax.Array, target: jax.Array
) -> tuple[dict[str, jax.Array], jax.Array, jax.Array]:
    model = nnx.merge(graphdef, state)
    model.eval()  # BatchNorm running averages: each series' map is independent of the batch
    b = x.shape[0]
    xin = model.network_inputs(x)
    nets = networks(model)
    # float32 maps: the gradient of a bf16 activation would be rounded to 8 mantissa bits
    # (an earlier stage's gradient still passes through the later stages' compute dtype).
    maps = {n: net.feature_map(xin[n], stage).astype(jnp.float32) for n, net in nets.items()}
    _, out_lp = _log_probs_from_maps(model, maps, b, stage)
    target = jnp.where(target < 0, jnp.argmax(out_lp, axis=-1), target)

    def score(m: dict[str, jax.Array]) -> jax.Array:
        lp, _ = _log_probs_from_maps(model, m, b, stage)
        # Series are independent (eval-mode BatchNorm), so the gradient of the sum gives
        # each series the gradient of its own score.
        return jnp.sum(jnp.take_along_axis(lp, target[:, None], axis=-1))

    grads = jax.grad(score)(maps)
    raw = {n: jnp.einsum("nhwf,nf->nhw", maps[n], jnp.mean(grads[n], axis=(1, 2))) for n in nets}
    return raw, out_lp, target


@functools.lru_cache(maxsize=16)
def _compiled(graphdef: nnx.GraphDef, stage: int):
    return jax.jit(functools.partial(_gradcam_fn, graphdef, stage))


def zoom_of(model: Classifier, name: str) -> float:
    """The zoom of network `name`'s input (`classifiers.zoom_centre`)."""
    return float(getattr(model, "step2_zoom", 1.0)) if name == "step2" else 1.0


def _upsample_normalise(
    raw: dict[str, np.ndarray], model: Classifier, size: tuple[int, int], stride: int
) -> np.ndarray:
    """The summed, relu'd maps of networks {name: [N, h, w]} -> [B, S, H, W] in [0, 1],
    normalised per series. On one grid the sum is rectified before upsampling (the classic
    Grad-CAM); with a zoomed network 2, after it (the grids differ)."""

    def to_pixels(r: np.ndarray, zoom: float) -> np.ndarray:
        my = upsample_matrix(size[0], r.shape[1], stride, zoom)
        mx = upsample_matrix(size[1], r.shape[2], stride, zoom)
        return np.einsum("yh,nhw,xw->nyx", my, r, mx)

    zooms = {zoom_of(model, n) for n in raw}
    if zooms == {1.0}:
        up = to_pixels(np.maximum(sum(raw.values()), 0.0), 1.0)
    else:
        up = np.maximum(sum(to_pixels(r, zoom_of(model, n)) for n, r in raw.items()), 0.0)
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
    *,
    layer: str | int = "last",
) -> GradCAM:
    """Grad-CAM maps of a batch of series x [B, S, H, W, C] (the pipeline's "image").

    target: phase indices [B] (in the label set) whose log-probability each map
    explains; None or -1 entries use the predicted phase. layer: the stage whose
    feature maps are explained, "last", "stageK" / K or "auto" (`resolve_layer`); the
    result's layer / stride / grid say which was used. The model is evaluated in
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
    size = (int(x.shape[2]), int(x.shape[3]))
    stage = resolve_layer(model, layer, size)
    stride = next(iter(networks(model).values())).stage_stride(stage)
    graphdef, state = nnx.split(model)
    raw, out_lp, tgt = jax.device_get(_compiled(graphdef, stage)(state, x, jnp.asarray(target)))
    names = list(raw)
    up = functools.partial(_upsample_normalise, model=model, size=size, stride=stride)
    combined = up({n: np.asarray(raw[n]) for n in names})
    by_network = {n: up({n: np.asarray(raw[n])}) for n in names}
    grid = np.asarray(raw[names[0]]).shape[1:3]
    return GradCAM(
        cam=combined,
        by_network=by_network,
        log_probs=np.asarray(out_lp, np.float32),
        target=np.asarray(tgt, np.int64),
        layer=f"stage{stage}",
        stride=stride,
        grid=(int(grid[0]), int(grid[1])),
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
