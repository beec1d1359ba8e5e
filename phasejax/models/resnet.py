"""The ResNet family (He et al. 2016) as one Flax NNX module built from a stage table.

Layout follows torchvision's ResNet "v1.5" so parameter counts and the PyTorch
reference in experiments/benchmarks/torch_reference.py match layer for layer:
7x7/2 stem conv, BatchNorm, ReLU, 3x3/2 max pool; four stages of basic
(ResNet-10/18/34) or bottleneck (ResNet-50/101/152) blocks, the stride on the
first block's 3x3 conv; global average pool; dense head. Convolutions carry no
bias because a BatchNorm follows each one.

Two cheaper stems, the same first-stage grid (ceil(n / 4), feature pixel i centred on input
pixel 4i): `stem="stride4"`, one 7x7 conv of stride 4 (pad 3) and no max pool, a quarter of
the stem's multiply-adds; `stem="conv3"`, a 3x3/2 conv (pad 1) before the same max pool,
9/49 of them. Why: on the quick config's input (5 slices x 3 windows = 15 channels at 96 px)
the standard stem is about half of a training step's FLOPs, as many as all four stages
together, and CPU training time is the main job's limit (experiments/benchmarks/stem_cost.py).

Inputs are NHWC (JAX's native conv layout). Padding is explicit, as in PyTorch:
"SAME" padding of a stride-2 conv on an even input pads (0, 1) where PyTorch
pads (1, 1), which would shift every feature map by half a pixel.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

# depth -> (block kind, blocks per stage). "tiny" and "tiny-bottleneck" are test
# networks: two stages of one block (the second with a stride-2 projection
# shortcut), so tests exercise both block and shortcut kinds at a fraction of the
# initialisation and compile time of the standard depths.
STAGES: dict[str, tuple[str, tuple[int, ...]]] = {
    "tiny": ("basic", (1, 1)),
    "tiny-bottleneck": ("bottleneck", (1, 1)),
    "10": ("basic", (1, 1, 1, 1)),
    "18": ("basic", (2, 2, 2, 2)),
    "34": ("basic", (3, 4, 6, 3)),
    "50": ("bottleneck", (3, 4, 6, 3)),
    "101": ("bottleneck", (3, 4, 23, 3)),
    "152": ("bottleneck", (3, 8, 36, 3)),
}
BOTTLENECK_EXPANSION = 4
# "standard": 7x7/2 conv + 3x3/2 max pool (torchvision); "stride4": one 7x7/4 conv;
# "conv3": 3x3/2 conv + 3x3/2 max pool.
STEMS = ("standard", "stride4", "conv3")
_STEM_CONV = {"standard": (7, 2), "stride4": (7, 4), "conv3": (3, 2)}  # kernel, stride

# PyTorch's BatchNorm momentum 0.1 (weight of the new batch) is Flax's 0.9 (weight
# of the running average); Flax's default 0.99 would leave the running statistics
# near their initial values after the few hundred steps of a CPU debug run, and
# eval-mode predictions would then be wrong.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5

# He (Kaiming) normal over fan-out, untruncated: torchvision's conv initialisation.
_conv_init = jax.nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def resolve_dtype(dtype: Any) -> jnp.dtype:
    """A compute dtype from a name ("float32", "bfloat16") or a dtype; other names raise."""
    d = jnp.dtype(dtype)
    if d not in (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16)):
        raise ValueError(f"unsupported compute dtype {dtype!r}; use float32 or bfloat16")
    return d


def _pad(kernel: int) -> tuple[tuple[int, int], tuple[int, int]]:
    p = kernel // 2
    return ((p, p), (p, p))


def _conv(
    cin: int, cout: int, kernel: int, stride: int, dtype: jnp.dtype, rngs: nnx.Rngs
) -> nnx.Conv:
    return nnx.Conv(
        cin,
        cout,
        (kernel, kernel),
        strides=(stride, stride),
        padding=_pad(kernel),
        use_bias=False,
        dtype=dtype,
        param_dtype=jnp.float32,
        kernel_init=_conv_init,
        rngs=rngs,
    )


def _bn(features: int, rngs: nnx.Rngs, *, zero_scale: bool = False) -> nnx.BatchNorm:
    # dtype float32: statistics, normalisation and the residual sum stay in float32
    # under bf16 compute (bf16 has 8 mantissa bits; variances lose precision); the
    # next conv casts its input back to its compute dtype. use_running_average is
    # given explicitly: newer Flax versions default it to None and then refuse to
    # run until a mode is set.
    return nnx.BatchNorm(
        features,
        use_running_average=False,
        momentum=BN_MOMENTUM,
        epsilon=BN_EPSILON,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        scale_init=nnx.initializers.zeros_init() if zero_scale else nnx.initializers.ones_init(),
        rngs=rngs,
    )


class BasicBlock(nnx.Module):
    """Two 3x3 convs plus a shortcut (1x1 conv + BN when the shape changes)."""

    def __init__(
        self, cin: int, cout: int, stride: int, *, dtype: jnp.dtype, rngs: nnx.Rngs
    ) -> None:
        self.conv1 = _conv(cin, cout, 3, stride, dtype, rngs)
        self.bn1 = _bn(cout, rngs)
        self.conv2 = _conv(cout, cout, 3, 1, dtype, rngs)
        # Zero-initialised last scale (Goyal et al. 2017, "Accurate, large minibatch
        # SGD"): each fresh block computes relu(shortcut(x)), so a deep net starts
        # as a shallow one and trains stably from the first step.
        self.bn2 = _bn(cout, rngs, zero_scale=True)
        if stride != 1 or cin != cout:
            self.down_conv = _conv(cin, cout, 1, stride, dtype, rngs)
            self.down_bn = _bn(cout, rngs)
        else:
            self.down_conv = None
            self.down_bn = None

    def __call__(self, x: jax.Array) -> jax.Array:
        shortcut = x if self.down_conv is None else self.down_bn(self.down_conv(x))
        y = nnx.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return nnx.relu(y + shortcut)


class Bottleneck(nnx.Module):
    """1x1 reduce, 3x3 (strided, torchvision v1.5), 1x1 expand by 4, plus a shortcut."""

    def __init__(
        self, cin: int, mid: int, stride: int, *, dtype: jnp.dtype, rngs: nnx.Rngs
    ) -> None:
        cout = mid * BOTTLENECK_EXPANSION
        self.conv1 = _conv(cin, mid, 1, 1, dtype, rngs)
        self.bn1 = _bn(mid, rngs)
        self.conv2 = _conv(mid, mid, 3, stride, dtype, rngs)
        self.bn2 = _bn(mid, rngs)
        self.conv3 = _conv(mid, cout, 1, 1, dtype, rngs)
        self.bn3 = _bn(cout, rngs, zero_scale=True)
        if stride != 1 or cin != cout:
            self.down_conv = _conv(cin, cout, 1, stride, dtype, rngs)
            self.down_bn = _bn(cout, rngs)
        else:
            self.down_conv = None
            self.down_bn = None

    def __call__(self, x: jax.Array) -> jax.Array:
        shortcut = x if self.down_conv is None else self.down_bn(self.down_conv(x))
        y = nnx.relu(self.bn1(self.conv1(x)))
        y = nnx.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return nnx.relu(y + shortcut)


class ResNet(nnx.Module):
    """ResNet of a given depth; `__call__(x [N, H, W, C]) -> float32 logits [N, num_classes]`.

    `width` is the first stage's channel count (64 = standard); stage i has
    width * 2**i (times 4 at a bottleneck's output). `dtype` is the compute dtype
    of convs and the head; parameters and BatchNorm are always float32.
    `model.train()` / `model.eval()` switch BatchNorm between batch statistics
    (updating the running averages) and the running averages. `num_classes=0` builds
    the trunk without a head, for callers that read `feature_map` only (the "roi"
    readout of phasejax.models.classifiers): a head nothing reads would still be
    decayed, checkpointed and counted.
    """

    def __init__(
        self,
        depth: str,
        *,
        in_channels: int,
        num_classes: int,
        width: int = 64,
        dtype: Any = jnp.float32,
        stem: str = "standard",
        rngs: nnx.Rngs,
    ) -> None:
        depth = str(depth)
        if depth not in STAGES:
            raise ValueError(f"unknown ResNet depth {depth!r}; known: {list(STAGES)}")
        if stem not in STEMS:
            raise ValueError(f"unknown ResNet stem {stem!r}; known: {list(STEMS)}")
        if in_channels < 1 or num_classes < 0 or width < 1:
            raise ValueError(
                f"ResNet needs in_channels, width >= 1 and num_classes >= 0, got "
                f"{in_channels}, {width}, {num_classes}"
            )
        kind, counts = STAGES[depth]
        dt = resolve_dtype(dtype)
        self.depth = depth
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.width = width
        self.dtype = dt
        self.stem = stem

        self.stem_conv = _conv(in_channels, width, *_STEM_CONV[stem], dt, rngs)
        self.stem_bn = _bn(width, rngs)
        blocks: list[BasicBlock | Bottleneck] = []
        cin = width
        for stage, n in enumerate(counts):
            planes = width * 2**stage
            for i in range(n):
                stride = 2 if (stage > 0 and i == 0) else 1
                if kind == "basic":
                    blocks.append(BasicBlock(cin, planes, stride, dtype=dt, rngs=rngs))
                    cin = planes
                else:
                    blocks.append(Bottleneck(cin, planes, stride, dtype=dt, rngs=rngs))
                    cin = planes * BOTTLENECK_EXPANSION
        self.blocks = nnx.List(blocks)
        self.num_features = cin
        self.head = (
            nnx.Linear(cin, num_classes, dtype=dt, param_dtype=jnp.float32, rngs=rngs)
            if num_classes
            else None
        )

    @property
    def num_stages(self) -> int:
        """Number of residual stages (4 for the standard depths, 2 for the test networks)."""
        return len(STAGES[self.depth][1])

    def _check_stage(self, stage: int | None) -> int:
        n = self.num_stages
        if stage is None:
            return n
        if not 1 <= stage <= n:
            raise ValueError(f"ResNet-{self.depth} has stages 1..{n}, got stage {stage}")
        return int(stage)

    def stage_channels(self, stage: int | None = None) -> int:
        """Channels of stage `stage`'s output (1-based; None = the last stage, whose count is
        `num_features`): width * 2**(stage - 1), times 4 at a bottleneck's output."""
        planes = self.width * 2 ** (self._check_stage(stage) - 1)
        return planes * (BOTTLENECK_EXPANSION if STAGES[self.depth][0] != "basic" else 1)

    def stage_stride(self, stage: int | None = None) -> int:
        """Input pixels per pixel of stage `stage`'s output (1-based; None = the last stage):
        stem conv 2 x max pool 2, then 2 per later stage (torchvision layer1..layer4 = 4..32)."""
        return 4 * 2 ** (self._check_stage(stage) - 1)

    @property
    def total_stride(self) -> int:
        """Input pixels per pixel of `feature_map`: stem conv 2 x max pool 2 x 2 per later stage."""
        return self.stage_stride(None)

    def feature_size(self, size: int, stage: int | None = None) -> int:
        """Side of stage `stage`'s feature map for an input side of `size` pixels.

        Every stride-2 layer (7x7 pad 3, 3x3 pad 1, 1x1 pad 0 convs; 3x3 pad 1 max pool)
        maps n pixels to ceil(n / 2), so feature pixel i is centred on input pixel
        stride * i and every centre lies inside the input (so does the 3x3 pad 1 stem
        conv). The stride-4 stem (7x7 pad 3) maps n to ceil(n / 4) = ceil(ceil(n / 2) / 2):
        the same grid.
        """
        n = int(size)
        for _ in range(1 + self._check_stage(stage)):  # stem conv, max pool, stages 2..k
            n = -(-n // 2)
        return n

    def _stage_end(self, stage: int) -> int:
        """Number of blocks up to and including stage `stage`."""
        return sum(STAGES[self.depth][1][:stage])

    def feature_map(self, x: jax.Array, stage: int | None = None) -> jax.Array:
        """Stage `stage`'s output [N, h, w, channels] (compute dtype; None = the last stage,
        whose maps are pooled for the head). Grad-CAM (phasejax.models.gradcam)
        differentiates the logits with respect to these; `classify(fmap, stage)` finishes
        the forward pass from them.
        """
        stage = self._check_stage(stage)
        if x.ndim != 4 or x.shape[-1] != self.in_channels:
            raise ValueError(
                f"ResNet-{self.depth} expects input [N, H, W, {self.in_channels}], "
                f"got shape {tuple(x.shape)}"
            )
        x = nnx.relu(self.stem_bn(self.stem_conv(x)))
        if self.stem != "stride4":
            # Max pool pads with -inf (reduce_window's identity), as PyTorch's MaxPool2d does.
            x = nnx.max_pool(x, window_shape=(3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        for block in list(self.blocks)[: self._stage_end(stage)]:
            x = block(x)
        return x

    @staticmethod
    def pool(feature_map: jax.Array) -> jax.Array:
        """Global average pool of a feature map -> float32 features [N, num_features]."""
        return jnp.mean(feature_map.astype(jnp.float32), axis=(1, 2))

    def features(self, x: jax.Array) -> jax.Array:
        """Globally pooled float32 features [N, num_features]."""
        return self.pool(self.feature_map(x))

    def classify(self, feature_map: jax.Array, stage: int | None = None) -> jax.Array:
        """float32 logits [N, num_classes] from stage `stage`'s output (None = the last
        stage's [N, h, w, num_features]): the later stages' blocks, pool, head."""
        if self.head is None:
            raise ValueError(f"this ResNet-{self.depth} has no head (built with num_classes=0)")
        for block in list(self.blocks)[self._stage_end(self._check_stage(stage)) :]:
            feature_map = block(feature_map)
        # Logits back in float32: log_softmax / cross-entropy of bf16 logits lose
        # the small probability differences the two-step product depends on.
        return self.head(self.pool(feature_map)).astype(jnp.float32)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.classify(self.feature_map(x))


def count_params(model: nnx.Module) -> int:
    """Number of trainable parameters (nnx.Param), BatchNorm running statistics excluded."""
    return sum(int(v.size) for v in jax.tree.leaves(nnx.state(model, nnx.Param)))
