"""Series classifiers of Liu et al. 2025: strategy A (one step) and strategy B (two steps).

Both take a batch of series [B, S, H, W, C] (S slices, C windows per slice) and
return one `Output`: normalised per-phase log-probabilities over the label set
plus the logits each loss needs. Slices enter the network in one of two modes
(`data.slice_mode`):

- "channels" (2.5D): the S*C planes of a series are stacked as input channels,
  slice-major (slice 0's windows first), one forward pass per series.
- "per_slice": the network sees each slice alone ([B*S, H, W, C]); slice
  log-probabilities are aggregated per series by `model.aggregation`
  ("mean_logprob": log_softmax of the mean log-probability; "majority": vote
  shares as probabilities), and the loss is the mean cross-entropy over slices.

Strategy B (paper's two steps): network 1 classifies the step-1 classes of the
label set (AP / PVP / DP, + NC), network 2 splits AP into EAP / LAP and learns
from arterial series only. log p(phase) = log p1(step-1 class) + log p2(phase | AP)
along `LabelSet.two_step_paths()`, so p(EAP) = p1(AP) * p2(EAP | AP). Both
networks live in one module: one train step, one optimizer, one checkpoint. With
`model.step2_zoom` < 1 network 2 sees only the centre of the input, enlarged
(`zoom_centre`); the paper gives both networks the same input (zoom 1).

Losses are weighted means over the global batch, sum(w * ce) / max(sum(w), 1);
under a jit sharded on 'data' the sums run over every device's rows. Labels -1
(unlabelled) and weight 0 (padding) rows contribute nothing.
"""

from __future__ import annotations

import typing
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from phasejax.config import Aggregation, Config, HuHead, SliceMode, Strategy
from phasejax.data.pipeline import HU_STRUCTURES, HU_TARGET_CENTER, HU_TARGET_SCALE
from phasejax.data.windowing import hu_range, window_names
from phasejax.models.resnet import ResNet, resolve_dtype
from phasejax.phases import LabelSet, label_set

SLICE_MODES: tuple[str, ...] = typing.get_args(SliceMode)
AGGREGATIONS: tuple[str, ...] = typing.get_args(Aggregation)
STRATEGIES: tuple[str, ...] = typing.get_args(Strategy)
HU_HEADS: tuple[str, ...] = typing.get_args(HuHead)
# Hidden units of the bottleneck's phase classifier on the structure-HU estimates: the
# ideal observer of experiments/cohort_ceiling.py reads the phase from such numbers with
# an MLP of this size.
BOTTLENECK_HIDDEN = 32

# Majority vote: the vote shares get an epsilon of probability mass so no phase
# has log-probability -inf (which would make the loss and log-loss metrics
# infinite). Must equal phasejax.eval.metrics.MAJORITY_EPS, which re-aggregates
# saved slice outputs the same way (tests/test_classifiers.py checks both agree).
VOTE_EPSILON = 1e-3


class Output(NamedTuple):
    """What a classifier returns for a batch of B series over K phases.

    log_probs: [B, K] float32 log-probabilities over the label set (rows logsumexp to 0).
    heads: logits each loss needs, float32; one step: {"logits"}; two steps:
        {"step1", "step2"}. Shapes [B, K_head] in channels mode, [B, S, K_head] per slice.
        With a structure-HU head (model.hu_head) also each network's HU estimates
        [B, len(HU_STRUCTURES)], scaled as the pipeline's targets: {"hu"} one step,
        {"hu_step1", "hu_step2"} two steps.
    """

    log_probs: jax.Array
    heads: dict[str, jax.Array]


class HuReadout(nnx.Module):
    """A network's head outputs -> (phase logits, structure-HU estimates).

    "auxiliary": the head has num_classes + num_hu outputs, the last num_hu are the HU
    estimates (a second task on the same pooled features). "bottleneck": the head outputs
    only the HU estimates and a small MLP classifies the phase from them (a concept
    bottleneck, Koh et al., ICML 2020), so every decision passes through numbers a
    reader can check against ROI measurements.
    """

    def __init__(self, mode: str, num_classes: int, num_hu: int, *, rngs: nnx.Rngs) -> None:
        if mode not in ("auxiliary", "bottleneck"):
            raise ValueError(f"unknown structure-HU head {mode!r}; known: {HU_HEADS}")
        self.mode = mode
        self.num_classes = num_classes
        self.num_hu = num_hu
        if mode == "bottleneck":
            self.hidden = nnx.Linear(num_hu, BOTTLENECK_HIDDEN, rngs=rngs)
            self.out = nnx.Linear(BOTTLENECK_HIDDEN, num_classes, rngs=rngs)

    @staticmethod
    def head_outputs(mode: str, num_classes: int, num_hu: int) -> int:
        """Outputs the network's linear head needs for `mode` ("none": num_classes; "roi": 0,
        no head: RoiReadout classifies from the segmentation of the feature maps)."""
        if mode == "none":
            return num_classes
        if mode == "roi":
            return 0
        return num_hu if mode == "bottleneck" else num_classes + num_hu

    def __call__(self, raw: jax.Array) -> tuple[jax.Array, jax.Array]:
        if self.mode == "auxiliary":
            return raw[..., : self.num_classes], raw[..., self.num_classes :]
        return self.out(nnx.relu(self.hidden(raw))).astype(jnp.float32), raw


class RoiReadout(nnx.Module):
    """Segment, then measure: a network's feature maps -> (phase logits, HU estimates, seg).

    A 1x1 convolution on the first stage's map (stride 4), plus the last stage's map through
    its own 1x1 convolution upsampled onto that grid (context: which bright disc is the
    aorta), gives per-slice logits over HU_STRUCTURES + "rest" (a light feature-pyramid
    head, Lin et al., CVPR 2017). Each structure's HU is then MEASURED: the mean of the
    input's HU (from its wide window) weighted by the structure's soft mask, upsampled to
    the input's pixels, over all slices. The phase comes from those measurements and each structure's
    share of the image only, as a reader's ROIs would give it, so a network that segments
    real anatomy reads real HU, whatever the textures around it.
    """

    def __init__(
        self,
        num_classes: int,
        num_hu: int,
        num_slices: int,
        fine_channels: int,
        coarse_channels: int,
        *,
        rngs: nnx.Rngs,
    ) -> None:
        self.num_hu = num_hu
        self.num_slices = num_slices
        k = num_slices * (num_hu + 1)
        self.fine = nnx.Conv(fine_channels, k, (1, 1), param_dtype=jnp.float32, rngs=rngs)
        self.coarse = nnx.Conv(coarse_channels, k, (1, 1), param_dtype=jnp.float32, rngs=rngs)
        self.hidden = nnx.Linear(2 * num_hu, BOTTLENECK_HIDDEN, rngs=rngs)
        self.out = nnx.Linear(BOTTLENECK_HIDDEN, num_classes, rngs=rngs)

    def __call__(
        self, fine: jax.Array, coarse: jax.Array, hu_image: jax.Array
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """fine [B, g, g, F1], coarse [B, h, h, F], hu_image [B, S, H, W] (HU of the input)
        -> logits [B, K_phase], HU estimates [B, num_hu] (target scale), segmentation logits
        [B, S, g, g, num_hu + 1]."""
        b, g = fine.shape[0], fine.shape[1]
        k = self.num_hu + 1
        up = jax.image.resize(
            self.coarse(coarse.astype(jnp.float32)), (b, g, g, self.num_slices * k), "linear"
        )
        seg = self.fine(fine.astype(jnp.float32)) + up
        seg = seg.reshape(b, g, g, self.num_slices, k).transpose(0, 3, 1, 2, 4)
        # Measured at the input's resolution: the aorta is ~1.5 cells of the stride-4 grid,
        # so a grid-level mean would mix it with the fat around it. Logits are upsampled
        # (not probabilities) so that the boundaries stay sharp.
        h, w = hu_image.shape[2], hu_image.shape[3]
        fine_seg = jax.image.resize(seg, (b, self.num_slices, h, w, k), "linear")
        p = jax.nn.softmax(fine_seg, axis=-1)[..., : self.num_hu]
        mass = jnp.sum(p, axis=(1, 2, 3))  # [B, num_hu], pixels
        hu = jnp.einsum("bsxyk,bsxy->bk", p, hu_image.astype(jnp.float32)) / (mass + 1e-3)
        est = (hu - HU_TARGET_CENTER) / HU_TARGET_SCALE
        share = mass / float(self.num_slices * h * w)
        # Share scaled so that a structure of ~1-10% of the image gives an input of order 1.
        feats = jnp.concatenate([est, 20.0 * share], axis=-1)
        return self.out(nnx.relu(self.hidden(feats))), est, seg


def segmentation_loss(seg: jax.Array, target: jax.Array, weight: jax.Array) -> jax.Array:
    """Soft cross-entropy of seg logits [B, S, g, g, K + 1] against structure fractions.

    Pixels covered by a structure weigh 10x the rest: the structures are a few percent of
    the image, and "everything is rest" would otherwise be a cheap minimum.
    """
    lp = jax.nn.log_softmax(seg.astype(jnp.float32), axis=-1)
    t = target.astype(jnp.float32)
    ce = -jnp.sum(t * lp, axis=-1)  # [B, S, g, g]
    pix = 1.0 + 9.0 * (1.0 - t[..., -1])
    per_series = jnp.sum(pix * ce, axis=(1, 2, 3)) / jnp.sum(pix, axis=(1, 2, 3))
    return weighted_mean(per_series, weight.astype(jnp.float32))


def hu_regression_loss(
    pred: jax.Array, target: jax.Array, present: jax.Array, weight: jax.Array
) -> jax.Array:
    """Huber loss (delta 1 = 100 HU) of HU estimates [B, K], mean over weighted present cells.

    Huber rather than squared error: a structure cut by the slab edge or by a lesion can
    give a mean far from its blood pool value, and should not dominate the gradient.
    """
    w = weight.astype(jnp.float32)[:, None] * present.astype(jnp.float32)
    err = optax.losses.huber_loss(pred.astype(jnp.float32), target.astype(jnp.float32), delta=1.0)
    return jnp.sum(w * err) / jnp.maximum(jnp.sum(w), 1.0)


# --------------------------------------------------------------------------- helpers
def aggregate_slices(slice_log_probs: jax.Array, method: str) -> jax.Array:
    """Series log-probabilities [B, K] from per-slice log-probabilities [B, S, K].

    "mean_logprob": log_softmax(mean over slices), i.e. the normalised geometric
    mean of the slice probabilities. "majority": p = (v + eps) / (1 + K * eps), with
    v the share of slices whose argmax is each phase (ties within a slice go to the
    lower index, as jnp.argmax; a tie between phases with equal vote shares does
    too, so an odd slice count avoids ties).
    """
    if method not in AGGREGATIONS:
        raise ValueError(f"unknown slice aggregation {method!r}; known: {AGGREGATIONS}")
    if method == "mean_logprob":
        return jax.nn.log_softmax(jnp.mean(slice_log_probs, axis=1), axis=-1)
    k = slice_log_probs.shape[-1]
    votes = jnp.mean(jax.nn.one_hot(jnp.argmax(slice_log_probs, axis=-1), k), axis=1)
    return jnp.log((votes + VOTE_EPSILON) / (1.0 + k * VOTE_EPSILON))


def two_step_log_probs(step1_logits: jax.Array, step2_logits: jax.Array, labels: LabelSet):
    """Per-phase log-probabilities [..., K] from network 1 and network 2 logits.

    log p(phase) = log p1(step-1 class of phase) + (log p2(phase | AP) if arterial).
    The rows stay normalised: the arterial phases share p1(AP) as p2 sums to 1.
    """
    paths = labels.two_step_paths()
    s1 = jnp.asarray([p[0] for p in paths], dtype=jnp.int32)
    s2 = jnp.asarray([max(p[1], 0) for p in paths], dtype=jnp.int32)
    arterial = jnp.asarray([p[1] >= 0 for p in paths])
    lp1 = jax.nn.log_softmax(step1_logits.astype(jnp.float32), axis=-1)
    lp2 = jax.nn.log_softmax(step2_logits.astype(jnp.float32), axis=-1)
    return jnp.take(lp1, s1, axis=-1) + jnp.where(arterial, jnp.take(lp2, s2, axis=-1), 0.0)


def cross_entropy(logits: jax.Array, labels: jax.Array, smoothing: float = 0.0) -> jax.Array:
    """Per-series cross-entropy [B] for logits [B, K] or per-slice logits [B, S, K].

    Per-slice logits give the mean cross-entropy over slices (every slice carries
    its series' label). Labels < 0 give 0 (callers mask them out of the weights).
    `smoothing` e: against the target (1 - e) one-hot + e / K (train.label_smoothing).
    """
    lp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    safe = jnp.maximum(labels, 0)
    if logits.ndim == 3:
        safe = jnp.broadcast_to(safe[:, None], logits.shape[:2])
    ce = -jnp.take_along_axis(lp, safe[..., None], axis=-1)[..., 0]
    if smoothing:
        ce = (1.0 - smoothing) * ce - smoothing * jnp.mean(lp, axis=-1)
    if logits.ndim == 3:
        ce = jnp.mean(ce, axis=1)
    return jnp.where(labels >= 0, ce, 0.0)


def weighted_mean(values: jax.Array, weight: jax.Array) -> jax.Array:
    """sum(w * v) / max(sum(w), 1): 0 (not NaN) when nothing is weighted."""
    return jnp.sum(weight * values) / jnp.maximum(jnp.sum(weight), 1.0)


def balanced_mean(
    values: jax.Array, labels: jax.Array, weight: jax.Array, class_weights: typing.Sequence[float]
) -> jax.Array:
    """weighted_mean with each sample's weight times its class's weight (labels < 0: 0),
    normalised by the batch's total weight, so that the loss stays a mean."""
    cw = jnp.asarray(class_weights, jnp.float32)[jnp.maximum(labels, 0)]
    w = weight * cw * (labels >= 0)
    return jnp.sum(w * values) / jnp.maximum(jnp.sum(w), 1e-6)


def inverse_frequency(counts: typing.Sequence[float] | np.ndarray) -> tuple[float, ...]:
    """Class weights n / (K n_c) of class counts (1 for an absent class): their mean over
    the training series is 1."""
    c = np.asarray(counts, np.float64)
    present = c > 0
    k = max(int(present.sum()), 1)
    w = np.where(present, c.sum() / (k * np.maximum(c, 1.0)), 1.0)
    return tuple(float(x) for x in w)


def _head_accuracy(logits: jax.Array, labels: jax.Array, weight: jax.Array) -> jax.Array:
    if logits.ndim == 3:  # per slice: accuracy of the mean log-prob vote of the head
        logits = jnp.mean(jax.nn.log_softmax(logits, axis=-1), axis=1)
    return weighted_mean((jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32), weight)


# ------------------------------------------------------------------------ classifiers
def _check_zoom(zoom: float) -> None:
    if not 0.0 < zoom <= 1.0:
        raise ValueError(f"model.step2_zoom must be in (0, 1], got {zoom}")


def zoom_centre(x: jax.Array, zoom: float) -> jax.Array:
    """The central `zoom` fraction of every image's side, resampled bilinearly to the full
    size: x [N, H, W, C] -> [N, H, W, C]; zoom 1 returns x.

    jax.image samples output position p (pixel centres at i + 1/2) from input position
    (p - t) / s; with s = 1 / zoom and t = side * (1 - s) / 2 the two centres coincide.
    `zoomed_position` is the inverse map, for Grad-CAM.
    """
    _check_zoom(zoom)
    if zoom == 1.0:
        return x
    h, w = x.shape[1], x.shape[2]
    s = 1.0 / zoom
    # Upsampling only (s > 1), so antialiasing would change nothing but the cost.
    return jax.image.scale_and_translate(
        x,
        x.shape,
        spatial_dims=(1, 2),
        scale=jnp.array([s, s], jnp.float32),
        translation=jnp.array([h * (1.0 - s) / 2.0, w * (1.0 - s) / 2.0], jnp.float32),
        method="linear",
        antialias=False,
    ).astype(x.dtype)


def zoomed_position(pixel: np.ndarray, size: int, zoom: float) -> np.ndarray:
    """Where input pixel index `pixel` (along a side of `size`) lies in `zoom_centre`'s
    output, in output pixel indices (outside [-1/2, size - 1/2]: not in the zoomed view)."""
    return (np.asarray(pixel, np.float64) + 0.5 - size / 2.0) / zoom + size / 2.0 - 0.5


class _SeriesClassifier(nnx.Module):
    """Shared slice handling: input validation, network input layout, aggregation."""

    def _init_common(
        self,
        labels: LabelSet,
        *,
        num_slices: int,
        channels: int,
        slice_mode: str,
        aggregation: str,
        hu_head: str = "none",
        window: str = "multi",
    ) -> int:
        if hu_head not in HU_HEADS:
            raise ValueError(f"unknown model.hu_head {hu_head!r}; known: {HU_HEADS}")
        if hu_head != "none" and slice_mode != "channels":
            raise ValueError(
                "model.hu_head needs data.slice_mode 'channels': its targets are the mean HU "
                "of each structure over all the series' input slices"
            )
        self.hu_head = hu_head
        self.hu_channel = -1
        if hu_head == "roi":
            names = window_names(window)
            if "wide" not in names:
                raise ValueError(
                    "model.hu_head 'roi' measures HU in the input's wide window: data.window "
                    f"must be 'multi' or 'wide', got {window!r}"
                )
            self.hu_channel = names.index("wide")
        if slice_mode not in SLICE_MODES:
            raise ValueError(f"unknown slice mode {slice_mode!r}; known: {SLICE_MODES}")
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"unknown slice aggregation {aggregation!r}; known: {AGGREGATIONS}")
        if num_slices < 1 or channels < 1:
            raise ValueError(f"need num_slices, channels >= 1, got {num_slices}, {channels}")
        self.label_set = labels
        # Per head (one-step: one tuple; two-step: step 1, step 2): class weights of the
        # loss, None = unweighted. Static (hashable) metadata, set by set_class_counts.
        self.class_weights: tuple[tuple[float, ...], ...] | None = None
        # train.label_smoothing of every head's cross-entropy; static, set by the training loop.
        self.label_smoothing = 0.0
        self.num_slices = num_slices
        self.channels = channels
        self.slice_mode = slice_mode
        self.aggregation = aggregation
        return num_slices * channels if slice_mode == "channels" else channels

    def _network_input(self, x: jax.Array) -> jax.Array:
        expected = (self.num_slices, self.channels)
        if x.ndim != 5 or tuple(x.shape[1:2]) + tuple(x.shape[4:]) != expected:
            raise ValueError(
                f"{type(self).__name__} expects a batch [B, S={self.num_slices}, H, W, "
                f"C={self.channels}], got shape {tuple(x.shape)}"
            )
        b, s, h, w, c = x.shape
        if self.slice_mode == "channels":
            return jnp.transpose(x, (0, 2, 3, 1, 4)).reshape(b, h, w, s * c)
        return x.reshape(b * s, h, w, c)

    def _readout(self, name: str, raw: jax.Array) -> tuple[jax.Array, jax.Array | None]:
        """(phase logits, HU estimates or None) of network `name` from its head outputs."""
        if self.hu_head == "none":
            return raw, None
        if self.hu_head == "roi":
            raise ValueError("model.hu_head 'roi' classifies from its segmentation, not the head")
        return getattr(self, f"{name}_readout")(raw)

    def _make_readout(self, net: ResNet, num_classes: int, rngs: nnx.Rngs) -> nnx.Module:
        if self.hu_head == "roi":
            return RoiReadout(
                num_classes,
                _num_hu(),
                self.num_slices,
                net.stage_channels(1),
                net.num_features,
                rngs=rngs,
            )
        return HuReadout(self.hu_head, num_classes, _num_hu(), rngs=rngs)

    def _run_net(
        self, name: str, net: ResNet, xin: jax.Array, x: jax.Array
    ) -> tuple[jax.Array, jax.Array | None, jax.Array | None]:
        """(phase logits, HU estimates or None, segmentation logits or None) of one network."""
        if self.hu_head != "roi":
            logits, hu = self._readout(name, net(xin))
            return logits, hu, None
        fine = net.feature_map(xin, 1)
        coarse = fine
        for block in list(net.blocks)[net._stage_end(1) :]:
            coarse = block(coarse)
        lo, hi = hu_range("wide")  # the window's inverse, inside its range
        hu = x[..., self.hu_channel].astype(jnp.float32) * (hi - lo) + lo
        return getattr(self, f"{name}_readout")(fine, coarse, hu)

    def _hu_loss(
        self, out: Output, hu: jax.Array | None, present: jax.Array | None, weight: jax.Array
    ) -> dict[str, jax.Array]:
        """The HU regression loss of each network that has an HU head ({} without targets)."""
        if hu is None or present is None:
            return {}
        return {
            f"loss_{k}": hu_regression_loss(v, hu, present, weight)
            for k, v in out.heads.items()
            if k.startswith("hu")
        }

    @staticmethod
    def _seg_loss(out: Output, seg: jax.Array | None, weight: jax.Array) -> dict[str, jax.Array]:
        """The segmentation loss of each network with a roi head ({} without targets)."""
        if seg is None:
            return {}
        return {
            f"loss_{k}": segmentation_loss(v, seg, weight)
            for k, v in out.heads.items()
            if k.startswith("seg")
        }

    def _structure_losses(
        self,
        out: Output,
        weight: jax.Array,
        hu: jax.Array | None,
        hu_present: jax.Array | None,
        seg: jax.Array | None,
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """(hu_loss_weight x the sum, each) of the HU and segmentation losses."""
        parts = self._hu_loss(out, hu, hu_present, weight) | self._seg_loss(out, seg, weight)
        return self.hu_loss_weight * sum(parts.values(), jnp.float32(0.0)), parts

    def _series_logits(self, logits: jax.Array, batch: int) -> jax.Array:
        if self.slice_mode == "channels":
            return logits
        return logits.reshape(batch, self.num_slices, logits.shape[-1])

    def _series_log_probs(self, phase_log_probs: jax.Array) -> jax.Array:
        if self.slice_mode == "channels":
            return phase_log_probs
        return aggregate_slices(phase_log_probs, self.aggregation)

    @staticmethod
    def _accuracy(out: Output, label: jax.Array, weight: jax.Array) -> jax.Array:
        hit = (jnp.argmax(out.log_probs, axis=-1) == label).astype(jnp.float32)
        return weighted_mean(hit, weight)

    def _head_counts(self, counts: np.ndarray) -> tuple[np.ndarray, ...]:
        raise NotImplementedError

    def set_class_counts(self, counts: typing.Sequence[int]) -> None:
        """Weight each head's loss by the inverse frequency of its classes, from the
        training series' counts per label-set class (train.class_balance)."""
        c = np.asarray(counts, np.float64)
        if c.shape != (self.label_set.num_classes,):
            raise ValueError(f"need {self.label_set.num_classes} class counts, got {c.shape}")
        self.class_weights = tuple(inverse_frequency(h) for h in self._head_counts(c))

    def _head_loss(self, head: int, logits: jax.Array, y: jax.Array, w: jax.Array) -> jax.Array:
        ce = cross_entropy(logits, y, self.label_smoothing)
        if self.class_weights is None:
            return weighted_mean(ce, w)
        return balanced_mean(ce, y, w, self.class_weights[head])


class OneStepClassifier(_SeriesClassifier):
    """Strategy A: one ResNet over all phases of the label set."""

    def __init__(
        self,
        labels: LabelSet,
        *,
        depth: str,
        num_slices: int,
        channels: int,
        slice_mode: str = "channels",
        aggregation: str = "mean_logprob",
        width: int = 64,
        dtype: Any = jnp.float32,
        stem: str = "standard",
        hu_head: str = "none",
        hu_loss_weight: float = 1.0,
        window: str = "multi",
        rngs: nnx.Rngs,
    ) -> None:
        cin = self._init_common(
            labels,
            num_slices=num_slices,
            channels=channels,
            slice_mode=slice_mode,
            aggregation=aggregation,
            hu_head=hu_head,
            window=window,
        )
        self.hu_loss_weight = float(hu_loss_weight)
        k = labels.num_classes
        self.net = ResNet(
            depth,
            in_channels=cin,
            num_classes=HuReadout.head_outputs(hu_head, k, _num_hu()),
            width=width,
            dtype=dtype,
            stem=stem,
            rngs=rngs,
        )
        if hu_head != "none":
            self.net_readout = self._make_readout(self.net, k, rngs)

    def _head_counts(self, counts: np.ndarray) -> tuple[np.ndarray, ...]:
        return (counts,)

    def network_inputs(self, x: jax.Array) -> dict[str, jax.Array]:
        """The input of each network for a batch x [B, S, H, W, C]."""
        return {"net": self._network_input(x)}

    def __call__(self, x: jax.Array) -> Output:
        logits, hu, seg = self._run_net("net", self.net, self.network_inputs(x)["net"], x)
        logits = self._series_logits(logits, x.shape[0])
        log_probs = self._series_log_probs(jax.nn.log_softmax(logits, axis=-1))
        heads = {"logits": logits}
        if hu is not None:
            heads["hu"] = hu
        if seg is not None:
            heads["seg"] = seg
        return Output(log_probs=log_probs, heads=heads)

    def loss(
        self,
        out: Output,
        label: jax.Array,
        weight: jax.Array,
        hu: jax.Array | None = None,
        hu_present: jax.Array | None = None,
        seg: jax.Array | None = None,
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Cross-entropy, plus hu_loss_weight x the HU regression (and segmentation) losses
        when their targets are given."""
        w = weight.astype(jnp.float32) * (label >= 0)
        ce = self._head_loss(0, out.heads["logits"], label, w)
        extra, hu_losses = self._structure_losses(out, weight, hu, hu_present, seg)
        loss = ce + extra
        aux = {"loss": loss, "accuracy": self._accuracy(out, label, w), **hu_losses}
        if hu_losses:
            aux["loss_phase"] = ce
        return loss, aux


class TwoStepClassifier(_SeriesClassifier):
    """Strategy B: network 1 over the step-1 classes, network 2 over {EAP, LAP}."""

    def __init__(
        self,
        labels: LabelSet,
        *,
        depth: str,
        num_slices: int,
        channels: int,
        slice_mode: str = "channels",
        aggregation: str = "mean_logprob",
        width: int = 64,
        dtype: Any = jnp.float32,
        stem: str = "standard",
        hu_head: str = "none",
        hu_loss_weight: float = 1.0,
        window: str = "multi",
        step2_zoom: float = 1.0,
        rngs: nnx.Rngs,
    ) -> None:
        if not any(step2 >= 0 for _, step2 in labels.two_step_paths()):
            raise ValueError(f"label set {labels.name!r} has no arterial phase to split in step 2")
        _check_zoom(step2_zoom)
        if step2_zoom < 1.0 and hu_head != "none":
            raise ValueError(
                "model.step2_zoom < 1 needs model.hu_head 'none': the structure-HU targets "
                "describe the whole input, not network 2's zoomed centre"
            )
        self.step2_zoom = float(step2_zoom)
        cin = self._init_common(
            labels,
            num_slices=num_slices,
            channels=channels,
            slice_mode=slice_mode,
            aggregation=aggregation,
            hu_head=hu_head,
            window=window,
        )
        self.hu_loss_weight = float(hu_loss_weight)
        self.step1_classes = labels.step1_classes
        self.step2_classes = labels.step2_classes
        k1, k2 = len(labels.step1_classes), len(labels.step2_classes)
        self.step1 = ResNet(
            depth,
            in_channels=cin,
            num_classes=HuReadout.head_outputs(hu_head, k1, _num_hu()),
            width=width,
            dtype=dtype,
            stem=stem,
            rngs=rngs,
        )
        self.step2 = ResNet(
            depth,
            in_channels=cin,
            num_classes=HuReadout.head_outputs(hu_head, k2, _num_hu()),
            width=width,
            dtype=dtype,
            stem=stem,
            rngs=rngs,
        )
        if hu_head != "none":
            self.step1_readout = self._make_readout(self.step1, k1, rngs)
            self.step2_readout = self._make_readout(self.step2, k2, rngs)

    def network_inputs(self, x: jax.Array) -> dict[str, jax.Array]:
        """The input of each network for a batch x [B, S, H, W, C]."""
        xin = self._network_input(x)
        return {"step1": xin, "step2": zoom_centre(xin, self.step2_zoom)}

    def __call__(self, x: jax.Array) -> Output:
        xin = self.network_inputs(x)
        l1, hu1, seg1 = self._run_net("step1", self.step1, xin["step1"], x)
        l2, hu2, seg2 = self._run_net("step2", self.step2, xin["step2"], x)
        l1 = self._series_logits(l1, x.shape[0])
        l2 = self._series_logits(l2, x.shape[0])
        # Per slice, the phase log-probabilities are combined slice by slice and then
        # aggregated, so both aggregation modes see the same per-phase quantities
        # as in the one-step model.
        log_probs = self._series_log_probs(two_step_log_probs(l1, l2, self.label_set))
        heads = {"step1": l1, "step2": l2}
        if hu1 is not None and hu2 is not None:
            heads.update(hu_step1=hu1, hu_step2=hu2)
        if seg1 is not None and seg2 is not None:
            heads.update(seg_step1=seg1, seg_step2=seg2)
        return Output(log_probs=log_probs, heads=heads)

    def _head_counts(self, counts: np.ndarray) -> tuple[np.ndarray, ...]:
        c1, c2 = np.zeros(len(self.step1_classes)), np.zeros(len(self.step2_classes))
        for n, (s1, s2) in zip(counts, self.label_set.two_step_paths()):
            c1[s1] += n
            if s2 >= 0:
                c2[s2] += n
        return c1, c2

    def step_labels(self, label: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Label-set indices [B] -> (step-1 index, step-2 index or -1 for non-arterial)."""
        paths = self.label_set.two_step_paths()
        s1 = jnp.asarray([p[0] for p in paths], dtype=jnp.int32)
        s2 = jnp.asarray([p[1] for p in paths], dtype=jnp.int32)
        safe = jnp.maximum(label, 0)
        valid = label >= 0
        return jnp.where(valid, s1[safe], -1), jnp.where(valid, s2[safe], -1)

    def loss(
        self,
        out: Output,
        label: jax.Array,
        weight: jax.Array,
        hu: jax.Array | None = None,
        hu_present: jax.Array | None = None,
        seg: jax.Array | None = None,
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Both steps' cross-entropies, plus hu_loss_weight x each network's HU (and
        segmentation) losses."""
        y1, _ = self.step_labels(label)
        w1 = weight.astype(jnp.float32) * (y1 >= 0)
        loss, aux = self._step_losses(out.heads, label, weight, label, weight)
        extra, hu_losses = self._structure_losses(out, weight, hu, hu_present, seg)
        loss = loss + extra
        aux.update(hu_losses, loss=loss, accuracy=self._accuracy(out, label, w1))
        return loss, aux

    def own_batch_heads(self, x1: jax.Array, x2: jax.Array) -> dict[str, jax.Array]:
        """Training with network 2's own batch (train.step2_own_batch): network 1's logits
        on the shared batch x1, network 2's on x2 (arterial series); no combined
        probabilities, since no series went through both networks."""
        if self.hu_head != "none":
            raise ValueError("network 2's own batch needs model.hu_head 'none'")
        l1, _, _ = self._run_net("step1", self.step1, self.network_inputs(x1)["step1"], x1)
        l2, _, _ = self._run_net("step2", self.step2, self.network_inputs(x2)["step2"], x2)
        return {
            "step1": self._series_logits(l1, x1.shape[0]),
            "step2": self._series_logits(l2, x2.shape[0]),
        }

    def own_batch_loss(
        self,
        heads: dict[str, jax.Array],
        label: jax.Array,
        weight: jax.Array,
        label2: jax.Array,
        weight2: jax.Array,
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Step 1's cross-entropy on the shared batch plus step 2's on network 2's own batch;
        "accuracy" is network 1's (no series has a two-step prediction in training)."""
        loss, aux = self._step_losses(heads, label, weight, label2, weight2)
        aux.update(loss=loss, accuracy=aux["accuracy_step1"])
        return loss, aux

    def _step_losses(
        self,
        heads: dict[str, jax.Array],
        label1: jax.Array,
        weight1: jax.Array,
        label2: jax.Array,
        weight2: jax.Array,
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        y1, _ = self.step_labels(label1)
        _, y2 = self.step_labels(label2)
        w1 = weight1.astype(jnp.float32) * (y1 >= 0)
        # Network 2 learns from arterial series only (paper's step 2); normalised by
        # their (weighted) count, and exactly 0 with no gradient when a batch has none.
        w2 = weight2.astype(jnp.float32) * (y2 >= 0)
        loss1 = self._head_loss(0, heads["step1"], y1, w1)
        loss2 = self._head_loss(1, heads["step2"], y2, w2)
        return loss1 + loss2, {
            "loss_step1": loss1,
            "loss_step2": loss2,
            "accuracy_step1": _head_accuracy(heads["step1"], y1, w1),
            "accuracy_step2": _head_accuracy(heads["step2"], y2, w2),
            "arterial_weight": jnp.sum(w2),
        }


def build_classifier(
    cfg: Config,
    *,
    rngs: nnx.Rngs,
    input_shape: tuple[int, int, int, int] | None = None,
) -> OneStepClassifier | TwoStepClassifier:
    """The classifier that `cfg` describes (model.strategy / depth / width / dtype, data.*).

    input_shape (S, H, W, C) defaults to the input pipeline's
    `phasejax.data.pipeline.input_shape(cfg.data)`, the one place that knows how
    many channels a window preset yields.
    """
    if cfg.model.strategy not in STRATEGIES:
        raise ValueError(f"unknown model.strategy {cfg.model.strategy!r}; known: {STRATEGIES}")
    if input_shape is None:
        from phasejax.data.pipeline import input_shape as pipeline_input_shape

        input_shape = pipeline_input_shape(cfg.data)
    num_slices, _, _, channels = input_shape
    two_step = cfg.model.strategy == "two_step"
    # The one-step network has no network 2, so it ignores model.step2_zoom: reproduce and
    # the strategy suite train A from the same config as B.
    extra = {"step2_zoom": cfg.model.step2_zoom} if two_step else {}
    cls = TwoStepClassifier if two_step else OneStepClassifier
    return cls(
        label_set(cfg.data.label_set),
        depth=cfg.model.depth,
        num_slices=num_slices,
        channels=channels,
        slice_mode=cfg.data.slice_mode,
        aggregation=cfg.model.aggregation,
        width=cfg.model.width,
        dtype=resolve_dtype(cfg.model.dtype),
        stem=cfg.model.stem,
        hu_head=cfg.model.hu_head,
        hu_loss_weight=cfg.model.hu_loss_weight,
        window=cfg.data.window,
        rngs=rngs,
        **extra,
    )


def _num_hu() -> int:
    return len(HU_STRUCTURES)
