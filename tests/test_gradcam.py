"""Grad-CAM (phasejax.models.gradcam) on tiny networks where the answer is known."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from phasejax.models import OneStepClassifier, ResNet, TwoStepClassifier
from phasejax.models.gradcam import grad_cam, predict_log_probs, resolve_layer, upsample_matrix
from phasejax.phases import label_set

PAPER4 = label_set("paper4")
SIZE = 64


def handmade(slice_mode: str = "channels", num_slices: int = 1, aggregation: str = "mean_logprob"):
    """A one-step "tiny" ResNet whose EAP logit is the sum of its pooled features and whose
    features are a non-negative blur of the input, so only bright pixels can matter.

    In eval mode a fresh BatchNorm is the identity (running mean 0, variance 1, scale 1),
    and each block's last BatchNorm scale is initialised to 0, so a block returns
    relu(shortcut); with a constant stem kernel and an identity 1x1 projection shortcut
    the feature maps are max-pooled local means of the input, zero where the input is 0.
    """
    model = OneStepClassifier(
        PAPER4, depth="tiny", num_slices=num_slices, channels=1, slice_mode=slice_mode,
        aggregation=aggregation, width=4, rngs=nnx.Rngs(0),
    )  # fmt: skip
    net = model.net
    net.stem_conv.kernel[...] = jnp.full(net.stem_conv.kernel.shape, 1.0 / 49.0)
    for block in net.blocks:
        if block.down_conv is not None:
            k = block.down_conv.kernel
            k[...] = jnp.broadcast_to(jnp.eye(k.shape[2], k.shape[3]), k.shape)
    head = net.head.kernel
    head[...] = jnp.zeros(head.shape).at[:, 0].set(1.0)  # EAP logit = sum of features
    return model


def square_image(y0: int, x0: int, *, num_slices: int = 1, on_slice: int = 0, side: int = 8):
    x = np.zeros((1, num_slices, SIZE, SIZE, 1), np.float32)
    x[0, on_slice, y0 : y0 + side, x0 : x0 + side, 0] = 1.0
    return x


def centroid(cam: np.ndarray) -> tuple[float, float]:
    yy, xx = np.mgrid[0 : cam.shape[0], 0 : cam.shape[1]]
    return float((cam * yy).sum() / cam.sum()), float((cam * xx).sum() / cam.sum())


# --------------------------------------------------------------------------- ResNet hooks


def test_feature_map_and_classify_reproduce_the_forward_pass():
    net = ResNet("tiny", in_channels=2, num_classes=3, width=4, rngs=nnx.Rngs(1))
    net.eval()
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 40, 40, 2)), jnp.float32)
    fmap = net.feature_map(x)
    # tiny: stem /2, max pool /2, one stride-2 stage -> 40 / 8 = 5 pixels per side
    assert fmap.shape == (2, 5, 5, net.num_features)
    assert net.total_stride == 8
    np.testing.assert_allclose(net.classify(fmap), net(x), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(net.features(x), jnp.mean(fmap, axis=(1, 2)), rtol=1e-6)
    r18 = nnx.eval_shape(lambda: ResNet("18", in_channels=1, num_classes=2, rngs=nnx.Rngs(0)))
    assert r18.total_stride == 32


def test_upsample_matrix_puts_feature_pixel_i_on_input_pixel_stride_times_i():
    m = upsample_matrix(12, 3, 4)
    np.testing.assert_allclose(m[:9].sum(axis=1), 1.0)
    for i in range(3):  # the centres: exactly one feature pixel
        np.testing.assert_array_equal(m[4 * i], np.eye(3)[i])
    np.testing.assert_allclose(m[2], [0.5, 0.5, 0.0])  # half way between centres 0 and 4
    np.testing.assert_allclose(m[5], [0.0, 0.75, 0.25])
    # beyond the last centre (8): fading towards a zero cell at 12, not the edge value
    np.testing.assert_allclose(m[9:, 2], [0.75, 0.5, 0.25])
    np.testing.assert_array_equal(m[9:, :2], 0.0)
    with pytest.raises(ValueError, match="reach past 8 input pixels"):
        upsample_matrix(8, 3, 4)  # a centre (8) outside the input: not a ResNet grid


def test_upsampled_3x3_map_has_no_edge_stripes_and_equal_cell_mass():
    # The quick preset: 96 px, stride 32, a 3 x 3 map. Holding the edge value copied row
    # 64 over rows 65..95 (a third of the image): stripes from each cell to the border.
    my = upsample_matrix(96, 3, 32)
    cells = np.array([[0.2, 1.0, 0.0], [0.0, 0.5, 0.0], [0.0, 0.0, 0.8]])
    up = my @ cells @ my.T
    assert up[64, 64] == pytest.approx(0.8) and up[32, 32] == pytest.approx(0.5)
    assert not np.allclose(up[80], up[64])  # the band below the last row changes...
    np.testing.assert_allclose(up[64:, 64], 0.8 * (1 - np.arange(32) / 32), rtol=1e-6)
    # ...and every cell spreads the same mass (a tent of half-width 32) except the first,
    # whose left half falls outside the image: no cell counts more in the shares.
    np.testing.assert_allclose(my.sum(axis=0), [16.5, 32.0, 32.0], rtol=1e-6)


def test_every_stage_finishes_the_forward_pass_and_has_the_predicted_size():
    net = ResNet("10", in_channels=1, num_classes=3, width=2, rngs=nnx.Rngs(2))
    net.eval()
    for size in (50, 64):
        x = jnp.asarray(np.random.default_rng(size).normal(size=(1, size, size, 1)), jnp.float32)
        full = net(x)
        for stage, stride in zip((1, 2, 3, 4), (4, 8, 16, 32)):
            fmap = net.feature_map(x, stage)
            side = net.feature_size(size, stage)
            assert side == -(-size // stride)  # ceil: 50 px -> 13, 7, 4, 2
            assert fmap.shape[1:3] == (side, side)
            assert fmap.shape[3] == net.stage_channels(stage) == 2 * 2 ** (stage - 1)
            assert net.stage_stride(stage) == stride
            assert stride * (side - 1) < size  # every feature-pixel centre is in the image
            np.testing.assert_allclose(net.classify(fmap, stage), full, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(net.feature_map(x), net.feature_map(x, 4))
    assert net.stage_channels() == net.num_features
    # A bottleneck stage's output has 4x its planes.
    deep = ResNet("50", in_channels=1, num_classes=3, width=2, rngs=nnx.Rngs(2))
    deep.eval()
    for stage in (1, 4):
        fmap = deep.feature_map(jnp.zeros((1, 32, 32, 1)), stage)
        assert fmap.shape[3] == deep.stage_channels(stage) == 4 * 2 * 2 ** (stage - 1)
    with pytest.raises(ValueError, match="stages 1..4, got stage 5"):
        net.feature_map(x, 5)


def test_auto_layer_takes_the_deepest_stage_with_six_pixels_per_side():
    def clf(depth):
        return nnx.eval_shape(
            lambda: TwoStepClassifier(PAPER4, depth=depth, num_slices=3, channels=1,
                                      rngs=nnx.Rngs(0))
        )  # fmt: skip

    r18 = clf("18")
    # quick preset 96 px: stage 4 is 3 x 3, stage 3 is 6 x 6 (stride 16)
    assert resolve_layer(r18, "auto", (96, 96)) == 3
    assert resolve_layer(r18, "auto", (128, 128)) == 3  # 4 x 4 at stage 4
    assert resolve_layer(r18, "auto", (192, 192)) == 4  # 6 x 6 at stage 4
    assert resolve_layer(r18, "auto", (192, 160)) == 3  # the shorter side decides
    assert resolve_layer(r18, "auto", (16, 16)) == 1  # nothing has 6: the finest stage
    assert resolve_layer(r18, "last", (96, 96)) == 4
    assert resolve_layer(r18, "stage2", (96, 96)) == resolve_layer(r18, 2, (96, 96)) == 2
    for bad in ("stage5", "stage0", "layer3", 0, True):
        with pytest.raises(ValueError, match="use 'last', 'auto' or 'stage1'..'stage4'"):
            resolve_layer(r18, bad, (96, 96))


def test_auto_layer_at_96_px_explains_stage_3_of_a_four_stage_resnet():
    model = OneStepClassifier(PAPER4, depth="10", num_slices=1, channels=1, width=2,
                              rngs=nnx.Rngs(4))  # fmt: skip
    x = np.random.default_rng(2).random((1, 1, 96, 96, 1)).astype(np.float32)
    g = grad_cam(model, x, target=[0], layer="auto")
    assert (g.layer, g.stride, g.grid) == ("stage3", 16, (6, 6))
    last = grad_cam(model, x, target=[0])  # the default stays the last stage
    assert (last.layer, last.stride, last.grid) == ("stage4", 32, (3, 3))
    model.eval()
    np.testing.assert_allclose(g.log_probs, model(jnp.asarray(x)).log_probs, atol=1e-5)
    assert g.cam.shape == (1, 1, 96, 96) and g.cam.max() == pytest.approx(1.0)


# --------------------------------------------------------------------------- known answers


@pytest.mark.parametrize("y0,x0", [(8, 40), (40, 16), (24, 24)])
def test_cam_concentrates_on_the_only_region_the_logit_depends_on(y0, x0):
    model = handmade()
    g = grad_cam(model, square_image(y0, x0))
    assert g.target.tolist() == [0]  # the bright square raises the EAP logit: predicted EAP
    cam = g.cam[0, 0]
    assert cam.max() == pytest.approx(1.0)
    # The map is registered with the input: its centroid is the square's centre (a
    # half-pixel upsampling convention would move it (8 - 1) / 2 = 3.5 px down-right).
    cy, cx = centroid(cam)
    assert abs(cy - (y0 + 3.5)) < 1.0 and abs(cx - (x0 + 3.5)) < 1.0
    # All of the mass lies within one feature pixel (8 px) of the square.
    near = cam[max(y0 - 8, 0) : y0 + 16, max(x0 - 8, 0) : x0 + 16].sum()
    assert near / cam.sum() > 0.99


@pytest.mark.parametrize("y0,x0", [(8, 40), (40, 16)])
def test_stage_1_cam_localises_at_stride_4(y0, x0):
    g = grad_cam(handmade(), square_image(y0, x0), layer="stage1")
    assert (g.layer, g.stride, g.grid) == ("stage1", 4, (16, 16))
    cam = g.cam[0, 0]
    cy, cx = centroid(cam)
    assert abs(cy - (y0 + 3.5)) < 1.0 and abs(cx - (x0 + 3.5)) < 1.0
    near = cam[max(y0 - 8, 0) : y0 + 16, max(x0 - 8, 0) : x0 + 16].sum()
    assert near / cam.sum() > 0.99
    # sharper than the last stage's map (stride 8) of the same square

    def spread(c: np.ndarray) -> float:
        yy, xx = np.mgrid[0 : c.shape[0], 0 : c.shape[1]]
        return float(np.sqrt((c * ((yy - cy) ** 2 + (xx - cx) ** 2)).sum() / c.sum()))

    last = grad_cam(handmade(), square_image(y0, x0)).cam[0, 0]
    assert spread(cam) < 0.9 * spread(last)  # 6.3 vs 7.3 px: the stem blur dominates both


def test_a_phase_the_evidence_argues_against_gets_an_empty_map():
    # d log p(LAP) / d features = -p(EAP) < 0 everywhere: Grad-CAM's ReLU leaves nothing.
    g = grad_cam(handmade(), square_image(24, 24), target=[1])
    assert g.target.tolist() == [1]
    assert np.all(g.cam == 0.0)


@pytest.mark.parametrize("aggregation", ["mean_logprob", "majority"])
def test_per_slice_cam_falls_on_the_slice_that_holds_the_signal(aggregation):
    model = handmade("per_slice", num_slices=3, aggregation=aggregation)
    x = square_image(16, 32, num_slices=3, on_slice=1)
    g = grad_cam(model, x, target=[0])
    assert g.cam.shape == (1, 3, SIZE, SIZE)
    assert np.all(g.cam[0, 0] == 0.0) and np.all(g.cam[0, 2] == 0.0)
    assert g.cam[0, 1].max() == pytest.approx(1.0)
    cy, cx = centroid(g.cam[0, 1])
    assert abs(cy - 19.5) < 1.0 and abs(cx - 35.5) < 1.0
    model.eval()
    np.testing.assert_allclose(g.log_probs, model(jnp.asarray(x)).log_probs, atol=1e-5)


# --------------------------------------------------------------------------- contract


@pytest.mark.parametrize("cls", [OneStepClassifier, TwoStepClassifier])
@pytest.mark.parametrize("slice_mode", ["channels", "per_slice"])
def test_maps_and_log_probs_follow_the_classifier(cls, slice_mode):
    model = cls(PAPER4, depth="tiny", num_slices=3, channels=1, slice_mode=slice_mode,
                width=4, rngs=nnx.Rngs(3))  # fmt: skip
    x = np.random.default_rng(0).random((2, 3, 32, 32, 1)).astype(np.float32)
    g = grad_cam(model, x)
    model.eval()
    expected = np.asarray(model(jnp.asarray(x)).log_probs)
    np.testing.assert_allclose(g.log_probs, expected, atol=1e-5)
    np.testing.assert_allclose(predict_log_probs(model, x), expected, atol=1e-5)
    assert g.target.tolist() == np.argmax(expected, axis=1).tolist()
    assert g.cam.shape == (2, 3, 32, 32) and g.cam.dtype == np.float32
    assert g.cam.min() >= 0.0 and g.cam.max() <= 1.0
    expected_nets = ["step1", "step2"] if cls is TwoStepClassifier else ["net"]
    assert list(g.by_network) == expected_nets
    for b in range(2):
        assert g.cam[b].max() in (0.0, pytest.approx(1.0))  # normalised per series
    if slice_mode == "channels":  # one spatial map per series, repeated per slice position
        np.testing.assert_array_equal(g.cam[:, 0], g.cam[:, 1])
        np.testing.assert_array_equal(g.cam[:, 0], g.cam[:, 2])
    g2 = grad_cam(model, x, target=[3, 0])
    assert g2.target.tolist() == [3, 0]


def test_two_step_map_of_a_non_arterial_phase_comes_from_network_1_alone():
    model = TwoStepClassifier(PAPER4, depth="tiny", num_slices=3, channels=1, width=4,
                              rngs=nnx.Rngs(5))  # fmt: skip
    x = np.random.default_rng(1).random((2, 3, 32, 32, 1)).astype(np.float32)
    pvp = PAPER4.index("PVP")
    g = grad_cam(model, x, target=[pvp, pvp])
    # log p(PVP) = log p1(PVP): network 2 (EAP vs LAP) has no say in it.
    assert np.all(g.by_network["step2"] == 0.0)
    assert g.by_network["step1"].max() > 0.0
    np.testing.assert_allclose(g.cam, g.by_network["step1"], atol=1e-6)


def test_bad_targets_are_refused():
    model = handmade()
    x = square_image(8, 8)
    with pytest.raises(ValueError, match="outside the 4 phases"):
        grad_cam(model, x, target=[4])
    with pytest.raises(ValueError, match="2 entries for a batch of 1"):
        grad_cam(model, x, target=[0, 1])


def test_upsample_matrix_of_a_zoomed_network_covers_only_its_square():
    np.testing.assert_array_equal(upsample_matrix(32, 4, 8, zoom=1.0), upsample_matrix(32, 4, 8))
    m = upsample_matrix(32, 4, 8, zoom=0.5)
    # Input pixels 8-23 are what zoom 0.5 enlarges (network pixels 0.5 ... 31.5 of 32).
    assert np.all(m[:8] == 0.0) and np.all(m[24:] == 0.0)
    # Pixel 16 lies at network pixel (16.5 - 16) * 2 + 15.5 = 16.5, i.e. feature 2.0625.
    np.testing.assert_allclose(m[16], [0.0, 0.0, 0.9375, 0.0625], atol=1e-6)


def test_zoomed_network_2_map_lies_inside_its_square():
    model = TwoStepClassifier(PAPER4, depth="tiny", num_slices=3, channels=1, width=4,
                              step2_zoom=0.5, rngs=nnx.Rngs(5))  # fmt: skip
    x = np.random.default_rng(2).random((2, 3, 32, 32, 1)).astype(np.float32)
    eap, lap = PAPER4.index("EAP"), PAPER4.index("LAP")
    maps = [grad_cam(model, x, target=[t, t]) for t in (eap, lap)]
    model.eval()
    for g in maps:
        np.testing.assert_allclose(g.log_probs, model(jnp.asarray(x)).log_probs, atol=1e-5)
        s2 = g.by_network["step2"]
        for edge in (s2[:, :, :8], s2[:, :, 24:], s2[:, :, :, :8], s2[:, :, :, 24:]):
            assert np.all(edge == 0.0)
    # Network 2's weighted maps for EAP and LAP are each other's negatives (p2(EAP | AP) =
    # 1 - p2(LAP | AP)), so one of the two is positive somewhere inside the square.
    assert max(g.by_network["step2"].max() for g in maps) > 0.0
    for g in maps:
        assert g.cam.shape == (2, 3, 32, 32) and 0.0 <= g.cam.min() <= g.cam.max() <= 1.0
