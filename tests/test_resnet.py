"""The NNX ResNet family: standard parameter counts, zero-init residuals, bf16, PyTorch parity."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from phasejax.models.resnet import STAGES, STEMS, BasicBlock, Bottleneck, ResNet, count_params

TORCH_REFERENCE = (
    Path(__file__).resolve().parents[1] / "experiments" / "benchmarks" / "torch_reference.py"
)


def _abstract(depth: str, **kw) -> ResNet:
    # eval_shape: parameters as ShapeDtypeStructs, nothing allocated or computed.
    return nnx.eval_shape(lambda: ResNet(depth, rngs=nnx.Rngs(0), **kw))


# torchvision.models.resnet{18,34,50,101}(num_classes=1000) parameter counts.
@pytest.mark.parametrize(
    ("depth", "expected"),
    [("18", 11_689_512), ("34", 21_797_672), ("50", 25_557_032), ("101", 44_549_160)],
)
def test_param_counts_equal_standard_resnets(depth: str, expected: int) -> None:
    model = _abstract(depth, in_channels=3, num_classes=1000)
    assert count_params(model) == expected
    # Running statistics exist but are not parameters.
    stats = sum(int(v.size) for v in jax.tree.leaves(nnx.state(model, nnx.BatchStat)))
    assert stats > 0


def test_width_and_input_channels_change_the_count_as_expected() -> None:
    # Only the stem conv sees the input channels: 7*7*width weights per extra channel.
    base = count_params(_abstract("18", in_channels=3, num_classes=4, width=16))
    more = count_params(_abstract("18", in_channels=9, num_classes=4, width=16))
    assert more - base == 6 * 7 * 7 * 16
    # Bottleneck features are 4x the last stage's planes: 8 * 2**3 * 4 = 256 for width 8.
    assert _abstract("50", in_channels=1, num_classes=2, width=8).num_features == 256
    assert _abstract("tiny", in_channels=1, num_classes=2, width=8).num_features == 16


def test_num_classes_zero_is_the_trunk_without_a_head() -> None:
    # The head of ResNet-18 width 16 on 4 classes: 128 * 4 weights + 4 biases.
    with_head = count_params(_abstract("18", in_channels=3, num_classes=4, width=16))
    trunk = ResNet("18", in_channels=3, num_classes=0, width=16, rngs=nnx.Rngs(0))
    assert trunk.head is None and count_params(trunk) == with_head - (128 * 4 + 4)
    x = jnp.ones((1, 32, 32, 3))
    assert trunk.feature_map(x, 1).shape == (1, 8, 8, 16)
    with pytest.raises(ValueError, match="has no head"):
        trunk(x)
    with pytest.raises(ValueError, match="num_classes >= 0"):
        ResNet("18", in_channels=3, num_classes=-1, rngs=nnx.Rngs(0))


def test_unknown_depth_is_a_named_error() -> None:
    with pytest.raises(ValueError, match="unknown ResNet depth '20'"):
        ResNet("20", in_channels=3, num_classes=4, rngs=nnx.Rngs(0))
    assert set(STAGES) >= {"tiny", "10", "18", "34", "50", "101"}


def test_wrong_input_channels_is_a_named_error() -> None:
    model = ResNet("tiny", in_channels=3, num_classes=4, width=4, rngs=nnx.Rngs(0))
    with pytest.raises(
        ValueError, match=r"expects input \[N, H, W, 3\], got shape \(2, 16, 16, 1\)"
    ):
        model(jnp.zeros((2, 16, 16, 1)))


def test_stride4_stem_is_the_standard_stem_conv_sampled_at_every_other_pixel() -> None:
    # Same parameters (one 7x7 conv, same shapes, same initial draw), so the stride-4 conv's
    # output pixel i is the stride-2 conv's pixel 2i: both centred on input pixel 4i.
    x = jax.random.normal(jax.random.key(0), (2, 40, 40, 15))
    std = ResNet("18", in_channels=15, num_classes=4, width=16, rngs=nnx.Rngs(3))
    s4 = ResNet("18", in_channels=15, num_classes=4, width=16, stem="stride4", rngs=nnx.Rngs(3))
    assert count_params(s4) == count_params(std)
    np.testing.assert_allclose(s4.stem_conv(x), std.stem_conv(x)[:, ::2, ::2], rtol=1e-5, atol=1e-5)
    # No max pool after it: the first stage starts from the conv's own grid, as after the
    # 3x3 stem's conv and pool.
    c3 = ResNet("18", in_channels=15, num_classes=4, width=16, stem="conv3", rngs=nnx.Rngs(3))
    assert c3.stem_conv.kernel.shape == (3, 3, 15, 16)
    for size in (96, 97, 33, 8):
        for net in (std, s4, c3):
            fmap = net.feature_map(jnp.zeros((1, size, size, 15)), 1)
            assert fmap.shape[1:3] == (net.feature_size(size, 1),) * 2 == (-(-size // 4),) * 2
    with pytest.raises(ValueError, match=r"unknown ResNet stem 'patch'; known: \['standard'"):
        ResNet("18", in_channels=3, num_classes=4, stem="patch", rngs=nnx.Rngs(0))
    assert STEMS == ("standard", "stride4", "conv3")


@pytest.mark.parametrize(("stem", "kept"), [("stride4", 1 / 4), ("conv3", 9 / 49)])
def test_cheaper_stems_cut_the_stem_flops_on_the_quick_input(stem: str, kept: float) -> None:
    # XLA's count of a forward pass at the quick config's input (15 channels, 96 px, width
    # 16): the 7x7/2 stem is 2 * 48^2 * 16 * 7 * 7 * 15 = 54.2 MFLOPs per image, more than
    # the four stages together; stride 4 leaves a quarter of it, a 3x3 kernel 9/49.
    def flops(stem: str) -> float:
        net = ResNet("18", in_channels=15, num_classes=4, width=16, stem=stem, rngs=nnx.Rngs(0))
        graph, state = nnx.split(net)

        def fwd(state, x):
            return nnx.merge(graph, state)(x)

        x = jnp.zeros((1, 96, 96, 15))
        cost = jax.jit(fwd).lower(state, x).compile().cost_analysis()
        return float((cost[0] if isinstance(cost, list | tuple) else cost)["flops"])

    std, cheap = flops("standard"), flops(stem)
    stem_flops = 2 * 48 * 48 * 16 * 7 * 7 * 15
    assert std - cheap == pytest.approx((1 - kept) * stem_flops, rel=0.05)  # XLA skips padding
    assert cheap < 0.6 * std  # 46 / 43 against 85 MFLOPs


def test_last_batchnorm_scale_is_zero_in_every_block() -> None:
    model = _abstract("50", in_channels=3, num_classes=10, width=8)
    for block in model.blocks:
        assert isinstance(block, Bottleneck)
        assert block.bn3.scale.shape == (block.conv3.kernel.shape[-1],)
    real = ResNet("tiny", in_channels=1, num_classes=4, width=4, rngs=nnx.Rngs(0))
    for block in real.blocks:
        np.testing.assert_array_equal(np.asarray(block.bn2.scale[...]), 0.0)
        np.testing.assert_array_equal(np.asarray(block.bn1.scale[...]), 1.0)


def test_fresh_basic_block_is_identity_plus_shortcut() -> None:
    rng = np.random.default_rng(0)
    # Post-ReLU activations (>= 0), as a block sees them inside the network.
    x = jnp.asarray(np.maximum(rng.normal(size=(4, 8, 8, 4)), 0.0), jnp.float32)
    same = BasicBlock(4, 4, 1, dtype=jnp.float32, rngs=nnx.Rngs(1))
    assert same.down_conv is None
    np.testing.assert_array_equal(np.asarray(same(x)), np.asarray(x))

    proj = BasicBlock(4, 8, 2, dtype=jnp.float32, rngs=nnx.Rngs(2))
    # Train mode: both calls normalise with the batch statistics of the same x.
    expected = jax.nn.relu(proj.down_bn(proj.down_conv(x)))
    np.testing.assert_allclose(np.asarray(proj(x)), np.asarray(expected), atol=1e-6)
    assert proj(x).shape == (4, 4, 4, 8)

    # With a non-zero last scale the residual branch contributes: the identity is the init's.
    same.bn2.scale[...] = jnp.ones_like(same.bn2.scale[...])
    assert not np.allclose(np.asarray(same(x)), np.asarray(x))


def test_fresh_bottleneck_is_shortcut_only() -> None:
    x = jnp.asarray(np.maximum(np.random.default_rng(1).normal(size=(2, 8, 8, 16)), 0), jnp.float32)
    block = Bottleneck(16, 4, 1, dtype=jnp.float32, rngs=nnx.Rngs(0))  # 16 -> 4 -> 16
    assert block.down_conv is None
    np.testing.assert_array_equal(np.asarray(block(x)), np.asarray(x))


def test_train_updates_running_stats_and_eval_is_per_example() -> None:
    model = ResNet("tiny", in_channels=3, num_classes=4, width=4, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(4, 32, 32, 3)) * 3 + 5, jnp.float32)
    logits = model(x)
    assert logits.shape == (4, 4) and logits.dtype == jnp.float32
    mean = np.asarray(model.stem_bn.mean[...])
    assert np.all(mean != 0.0)  # running mean moved towards the batch mean (momentum 0.9)

    model.eval()
    assert model.stem_bn.use_running_average is True
    alone = model(x[:1])
    together = model(x)
    np.testing.assert_allclose(np.asarray(alone[0]), np.asarray(together[0]), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(model.stem_bn.mean[...]), mean)  # not updated

    model.train()
    assert model.stem_bn.use_running_average is False


def _conv_input_dtypes(model: ResNet, x: jax.Array) -> list:
    graphdef, state = nnx.split(model)

    def f(state, x):
        return nnx.merge(graphdef, state)(x)

    jaxpr = jax.make_jaxpr(f)(state, x)
    return [
        tuple(v.aval.dtype for v in eqn.invars)
        for eqn in jaxpr.jaxpr.eqns
        if eqn.primitive.name == "conv_general_dilated"
    ]


def test_bf16_compute_keeps_float32_params_and_batchnorm() -> None:
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 32, 32, 3)), jnp.float32)
    f32 = ResNet("tiny", in_channels=3, num_classes=4, width=4, rngs=nnx.Rngs(0))
    bf16 = ResNet("tiny", in_channels=3, num_classes=4, width=4, dtype="bfloat16", rngs=nnx.Rngs(0))
    for state in (nnx.state(bf16, nnx.Param), nnx.state(bf16, nnx.BatchStat)):
        assert {leaf.dtype for leaf in jax.tree.leaves(state)} == {jnp.dtype(jnp.float32)}
    conv_dtypes = _conv_input_dtypes(bf16, x)
    assert len(conv_dtypes) == 6  # stem + 2 (block 1) + 2 and a projection (block 2)
    assert all(d == (jnp.bfloat16, jnp.bfloat16) for d in conv_dtypes)
    assert all(d == (jnp.float32, jnp.float32) for d in _conv_input_dtypes(f32, x))

    # Give the blocks' last BN a non-zero scale so the residual branches are exercised.
    for m in (f32, bf16):
        for block in m.blocks:
            block.bn2.scale[...] = jnp.full_like(block.bn2.scale[...], 0.5)
        m.eval()
    out16, out32 = bf16(x), f32(x)
    assert out16.dtype == jnp.float32  # logits come back in float32
    # Same parameters, bf16 rounding only: close but not identical.
    np.testing.assert_allclose(np.asarray(out16), np.asarray(out32), atol=0.1, rtol=0.05)
    assert not np.array_equal(np.asarray(out16), np.asarray(out32))


def _randomise(model: nnx.Module, seed: int) -> None:
    """Non-trivial params and running stats (positive variances), so parity means something."""
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = jax.tree_util.keystr(path)
        if "var" in name:
            return jnp.asarray(rng.uniform(0.5, 2.0, leaf.shape), jnp.float32)
        if "kernel" in name:
            fan_in = int(np.prod(leaf.shape[:-1]))
            return jnp.asarray(rng.normal(0, np.sqrt(2 / fan_in), leaf.shape), jnp.float32)
        return jnp.asarray(rng.normal(0, 0.3, leaf.shape) + ("scale" in name), jnp.float32)

    nnx.update(model, jax.tree_util.tree_map_with_path(draw, nnx.state(model)))


def _load_torch_reference():
    pytest.importorskip("torch")
    spec = importlib.util.spec_from_file_location("torch_reference", TORCH_REFERENCE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("depth", "width", "size"),
    [
        ("tiny", 4, 32),
        ("tiny-bottleneck", 4, 32),
        pytest.param("50", 4, 64, marks=pytest.mark.slow),
    ],
)
def test_torch_reference_computes_the_same_function(depth: str, width: int, size: int) -> None:
    ref = _load_torch_reference()
    model = ResNet(depth, in_channels=3, num_classes=4, width=width, rngs=nnx.Rngs(0))
    _randomise(model, seed=1)
    model.eval()
    twin = ref.build_torch_resnet(depth, in_channels=3, num_classes=4, width=width)
    assert ref.count_torch_params(twin) == count_params(model)
    ref.copy_nnx_to_torch(model, twin).eval()
    x = np.random.default_rng(2).normal(size=(3, size, size, 3)).astype(np.float32)
    expected = np.asarray(nnx.jit(lambda m, x: m(x))(model, jnp.asarray(x)))
    got = ref.forward_nhwc(twin, x)
    assert np.abs(expected).max() > 0.1  # a non-degenerate function
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
