"""The structure-HU head (model.hu_head): targets from the organ masks, the two readouts,
their loss, and a training run that learns to read the aorta's HU."""

from __future__ import annotations

import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from fake_cache import PHASE_HU, fake_volume_and_mask, make_fake_cache
from flax import nnx

from phasejax.cohort.structures import Label
from phasejax.config import Config, DataConfig, ModelConfig, TrainConfig
from phasejax.data.cache import CacheError
from phasejax.data.pipeline import (
    HU_STRUCTURES,
    HU_TARGET_CENTER,
    HU_TARGET_SCALE,
    _Series,
    preprocess,
    preprocess_with_targets,
    split_rows,
    structure_hu,
)
from phasejax.models.classifiers import OneStepClassifier, TwoStepClassifier, build_classifier
from phasejax.phases import label_set

AORTA = HU_STRUCTURES.index(Label.AORTA)
PELVIS = HU_STRUCTURES.index(Label.KIDNEY_COLLECTING)


def _hu(target: float) -> float:
    return target * HU_TARGET_SCALE + HU_TARGET_CENTER


def test_structure_hu_is_the_mean_of_each_structure_and_absent_ones_are_masked() -> None:
    labels = np.zeros((2, 10, 10), np.uint8)
    hu = np.full((2, 10, 10), -1000.0, np.float32)
    labels[:, :5, :5] = Label.AORTA  # 50 pixels: 300 HU in slice 0, 340 in slice 1
    hu[0, :5, :5], hu[1, :5, :5] = 300.0, 340.0
    labels[:, 5:, :] = Label.LIVER
    hu[:, 5:, :] = 110.0
    labels[0, 0, 9] = Label.PORTAL_VEIN  # one pixel: below HU_MIN_PIXELS
    hu[0, 0, 9] = 180.0
    target, present = structure_hu(hu, labels)
    assert target.shape == present.shape == (len(HU_STRUCTURES),)
    assert _hu(target[AORTA]) == pytest.approx(320.0)
    assert _hu(target[HU_STRUCTURES.index(Label.LIVER)]) == pytest.approx(110.0)
    assert present[AORTA] == present[HU_STRUCTURES.index(Label.LIVER)] == 1.0
    assert present[HU_STRUCTURES.index(Label.PORTAL_VEIN)] == 0.0
    assert present[HU_STRUCTURES.index(Label.SPLEEN)] == 0.0
    assert target[HU_STRUCTURES.index(Label.SPLEEN)] == 0.0


def test_targets_follow_the_phase_and_do_not_change_the_image() -> None:
    cfg = DataConfig(image_size=32, num_slices=3, augment=True, intensity_jitter_hu=30.0)
    vol, mask = fake_volume_and_mask("DP", size=48, slices=10, noise_hu=0.0)
    rng = np.random.default_rng(5)
    image, target, present, _, _ = preprocess_with_targets(vol, 1, 9, cfg, rng, mask)
    same = preprocess(vol, 1, 9, cfg, np.random.default_rng(5), mask)
    np.testing.assert_array_equal(image, same)  # no extra random draw
    # Every input slice holds the aorta; the intensity offset moves the target with the
    # image (one offset per series within +/- 30 HU).
    assert present[AORTA] == 1.0
    shift = _hu(target[AORTA]) - PHASE_HU["DP"]["aorta"]
    liver_shift = _hu(target[HU_STRUCTURES.index(Label.LIVER)]) - PHASE_HU["DP"]["liver"]
    assert 0.5 < abs(shift) <= 30.0 + 1e-3
    assert liver_shift == pytest.approx(shift, abs=1e-3)
    # Deterministic (eval) targets are the phantom's HU exactly: excreted contrast in DP.
    _, t_eval, p_eval, _, _ = preprocess_with_targets(vol, 1, 9, cfg, None, mask)
    if p_eval[PELVIS]:
        assert _hu(t_eval[PELVIS]) == pytest.approx(PHASE_HU["DP"]["pelvis"], abs=0.5)
    assert _hu(t_eval[AORTA]) == pytest.approx(PHASE_HU["DP"]["aorta"], abs=0.5)


def test_training_elements_carry_targets_only_with_the_head(tmp_path: Path) -> None:
    cache = make_fake_cache(tmp_path / "c", patients=6, size=32, slices=8, masks=True)
    cfg = Config(
        data=DataConfig(image_size=32, num_slices=3), model=ModelConfig(hu_head="auxiliary")
    )
    rows = tuple(split_rows(cache, "train", cfg))
    with_head = _Series(str(cache), rows, cfg.data, 0, training=True, hu_targets=True)
    el = with_head.element(0, 0)
    assert el["hu"].shape == el["hu_present"].shape == (len(HU_STRUCTURES),)
    phase = rows[0]["phase"]
    assert abs(_hu(el["hu"][AORTA]) - PHASE_HU[phase]["aorta"]) < 60.0
    plain = _Series(str(cache), rows, cfg.data, 0, training=True).element(0, 0)
    assert "hu" not in plain
    np.testing.assert_array_equal(plain["image"], el["image"])


def test_a_cache_without_masks_is_a_named_error(tmp_path: Path) -> None:
    cache = make_fake_cache(tmp_path / "c", patients=6, size=32, slices=8)
    cfg = Config(data=DataConfig(image_size=32, num_slices=3))
    rows = tuple(split_rows(cache, "train", cfg))
    series = _Series(str(cache), rows, cfg.data, 0, training=True, hu_targets=True)
    with pytest.raises(CacheError, match="no organ mask.*model.hu_head"):
        series.element(0, 0)


@pytest.mark.parametrize("cls", [OneStepClassifier, TwoStepClassifier])
def test_bottleneck_phase_depends_on_the_hu_estimates_only(cls) -> None:
    model = cls(
        label_set("full5"), depth="tiny", num_slices=2, channels=1, width=8,
        hu_head="bottleneck", rngs=nnx.Rngs(0),
    )  # fmt: skip
    model.eval()
    x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 2, 32, 32, 1)), jnp.float32)
    out = model(x)
    assert out.log_probs.shape == (3, 5)
    names = ["net"] if cls is OneStepClassifier else ["step1", "step2"]
    hu_keys = ["hu"] if cls is OneStepClassifier else ["hu_step1", "hu_step2"]
    for name, key in zip(names, hu_keys, strict=True):
        assert out.heads[key].shape == (3, len(HU_STRUCTURES))
        # The phase logits are the readout MLP applied to the HU estimates.
        logits = getattr(model, f"{name}_readout").out(
            nnx.relu(getattr(model, f"{name}_readout").hidden(out.heads[key]))
        )
        head = "logits" if cls is OneStepClassifier else name
        np.testing.assert_allclose(out.heads[head], logits, rtol=1e-5, atol=1e-6)


def test_hu_loss_adds_only_where_structures_are_present() -> None:
    model = OneStepClassifier(
        label_set("paper4"), depth="tiny", num_slices=2, channels=1, width=8,
        hu_head="auxiliary", hu_loss_weight=2.0, rngs=nnx.Rngs(0),
    )  # fmt: skip
    x = jnp.asarray(np.random.default_rng(1).normal(size=(4, 2, 32, 32, 1)), jnp.float32)
    out = model(x)
    label, weight = jnp.array([0, 1, 2, 3]), jnp.ones(4)
    plain, _ = model.loss(out, label, weight)
    target = jnp.asarray(out.heads["hu"]) + 3.0  # 300 HU off everywhere: Huber = 3 - 0.5
    none_present = jnp.zeros((4, len(HU_STRUCTURES)))
    loss0, aux0 = model.loss(out, label, weight, hu=target, hu_present=none_present)
    assert float(loss0) == pytest.approx(float(plain)) and float(aux0["loss_hu"]) == 0.0
    present = none_present.at[:, AORTA].set(1.0)
    loss1, aux1 = model.loss(out, label, weight, hu=target, hu_present=present)
    assert float(aux1["loss_hu"]) == pytest.approx(2.5, rel=1e-5)
    assert float(loss1) == pytest.approx(float(plain) + 2.0 * 2.5, rel=1e-5)


def test_hu_head_needs_channels_mode_and_a_known_name() -> None:
    with pytest.raises(ValueError, match="slice_mode 'channels'"):
        build_classifier(
            Config(data=DataConfig(slice_mode="per_slice"), model=ModelConfig(hu_head="auxiliary")),
            rngs=nnx.Rngs(0),
        )
    with pytest.raises(ValueError, match="unknown model.hu_head"):
        OneStepClassifier(
            label_set("paper4"), depth="tiny", num_slices=1, channels=1, hu_head="maybe",
            rngs=nnx.Rngs(0),
        )  # fmt: skip


def _train_and_read_aorta(
    tmp_path: Path, *, hu_head: str, strategy: str, image_size: int
) -> tuple[list[dict], np.ndarray, np.ndarray]:
    """Train 100 steps on a masked phantom cache; (train metrics records, the trained first
    network's aorta estimates in HU on the held-out series, their true aorta HU)."""
    from phasejax.train.loop import train
    from phasejax.train.restore import load_trained

    cache = make_fake_cache(tmp_path / "cache", patients=12, size=64, slices=8, masks=True)
    cfg = Config(
        name="hu",
        data=DataConfig(image_size=image_size, num_slices=3, window="multi"),
        model=ModelConfig(depth="tiny", width=16, strategy=strategy, hu_head=hu_head),
        train=TrainConfig(
            batch_size=16, steps=100, learning_rate=1e-2, warmup_steps=5, eval_every=100,
            checkpoint_every=1000, log_every=10, eval_batch_size=32,
        ),
    )  # fmt: skip
    train(cfg, tmp_path / "run", cache_dir=cache)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    recs = [r for r in map(json.loads, lines) if r["split"] == "train"]
    _, model = load_trained(tmp_path / "run", "latest")
    rows = split_rows(cache, "test", cfg) + split_rows(cache, "external", cfg)
    series = _Series(str(cache), tuple(rows), cfg.data, 0, training=False)
    x = np.stack([series.element(i)["image"] for i in range(len(rows))])
    heads = model(jnp.asarray(x)).heads
    est = _hu(np.asarray(heads.get("hu", heads.get("hu_step1")))[:, AORTA])
    truth = np.array([PHASE_HU[r["phase"]]["aorta"] for r in rows], np.float64)
    return recs, est, truth


def _reads_the_aorta(est: np.ndarray, truth: np.ndarray) -> bool:
    """Held-out series: the estimate follows the aorta (EAP/LAP ~300, PVP 170, DP 120 HU) far
    better than the best constant, whose error is the spread of the truth (~85 HU)."""
    return float(np.mean(np.abs(est - truth))) < 0.5 * float(np.mean(np.abs(truth - truth.mean())))


def test_training_learns_to_read_the_aorta(tmp_path: Path) -> None:
    _, est, truth = _train_and_read_aorta(
        tmp_path, hu_head="bottleneck", strategy="two_step", image_size=32
    )
    assert _reads_the_aorta(est, truth), (est, truth)


def test_scrambled_series_move_each_structure_and_drop_the_phase(tmp_path: Path) -> None:
    cache = make_fake_cache(tmp_path / "c", patients=6, size=64, slices=8, masks=True)
    cfg = Config(data=DataConfig(image_size=32, num_slices=3, hu_scramble=1.0))
    rows = tuple(split_rows(cache, "train", cfg))
    series = _Series(str(cache), rows, cfg.data, 0, training=True, hu_targets=True)
    aortas, cortices = [], []
    for i in range(len(rows)):
        el = series.element(i, i)
        assert el["label"] == -1  # no physiological phase: only the HU head learns from it
        aortas.append(_hu(el["hu"][AORTA]))
        cortices.append(_hu(el["hu"][HU_STRUCTURES.index(Label.KIDNEY_CORTEX)]))
    # Independent draws in 0-450 HU: no longer tied to the phase or to each other.
    assert np.ptp(aortas) > 150 and min(aortas) >= -20 and max(aortas) <= 470
    assert abs(np.corrcoef(aortas, cortices)[0, 1]) < 0.9
    data = DataConfig(image_size=32, num_slices=3)
    plain = _Series(str(cache), rows, data, 0, training=True, hu_targets=True)
    assert plain.element(0, 0)["label"] >= 0


def test_hu_scramble_without_the_head_is_refused(tmp_path: Path) -> None:
    from phasejax.data.pipeline import train_iterator

    cache = make_fake_cache(tmp_path / "c", patients=6, size=32, slices=8, masks=True)
    cfg = Config(data=DataConfig(image_size=32, num_slices=3, hu_scramble=0.5))
    with pytest.raises(ValueError, match="hu_scramble.*model.hu_head"):
        train_iterator(cache, cfg)


@pytest.mark.parametrize("depth", ["tiny", "18", "50"])
@pytest.mark.parametrize("size", [32, 61, 96, 224])
def test_segmentation_grid_is_the_first_stage_map(depth: str, size: int) -> None:
    from phasejax.data.pipeline import seg_grid_size
    from phasejax.models.resnet import ResNet

    net = nnx.eval_shape(
        lambda: ResNet(depth, in_channels=3, num_classes=2, width=8, rngs=nnx.Rngs(0))
    )
    assert seg_grid_size(size) == net.feature_size(size, 1)


def test_structure_fractions_cover_every_pixel_once() -> None:
    from phasejax.data.augment import IDENTITY
    from phasejax.data.pipeline import structure_fractions

    labels = np.zeros((2, 32, 32), np.uint8)
    labels[:, :, :16] = Label.LIVER  # image left half
    labels[1, 8:16, 20:28] = Label.AORTA
    frac = structure_fractions(labels, 8, IDENTITY)
    assert frac.shape == (2, 8, 8, len(HU_STRUCTURES) + 1)
    np.testing.assert_allclose(frac.sum(-1), 1.0, atol=1e-5)
    liver = frac[..., HU_STRUCTURES.index(Label.LIVER)]
    assert liver[:, :, :3].min() > 0.95 and liver[:, :, 5:].max() < 0.05
    aorta = frac[..., AORTA]
    assert aorta[0].max() == 0.0 and aorta[1, 2:4, 5:7].min() > 0.5
    # 64 aorta pixels of the input = 4 pixels of the 8-px grid, whatever the blur.
    assert aorta[1].sum() == pytest.approx(4.0, rel=0.05)


def test_roi_readout_measures_the_hu_inside_its_segmentation() -> None:
    from phasejax.models.classifiers import RoiReadout

    k = len(HU_STRUCTURES)
    ro = RoiReadout(3, k, 2, 4, 6, rngs=nnx.Rngs(0))
    for conv in (ro.fine, ro.coarse):
        conv.kernel[...] = jnp.zeros_like(conv.kernel[...])
    bias = np.full((2, k + 1), -20.0, np.float32)
    bias[:, AORTA] = 20.0  # every pixel of both slices is "aorta"
    ro.fine.bias[...] = jnp.asarray(bias.reshape(-1))
    hu_image = jnp.asarray(np.random.default_rng(0).uniform(100, 400, (1, 2, 20, 20)), jnp.float32)
    _, est, seg = ro(jnp.ones((1, 5, 5, 4)), jnp.ones((1, 2, 2, 6)), hu_image)
    assert seg.shape == (1, 2, 5, 5, k + 1)
    assert _hu(float(est[0, AORTA])) == pytest.approx(float(hu_image.mean()), rel=1e-3)


def test_roi_networks_carry_no_unused_linear_head() -> None:
    # The roi readout classifies from the segmentation of the feature maps: the ResNets'
    # own linear heads would be parameters that no loss reaches.
    cfg = Config(
        data=DataConfig(window="multi"),
        model=ModelConfig(hu_head="roi", strategy="two_step", depth="tiny", width=4),
    )
    model = build_classifier(cfg, rngs=nnx.Rngs(0))
    assert model.step1.head is None and model.step2.head is None
    paths = {".".join(map(str, p)) for p, _ in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    assert not any(".head." in p or p.endswith(".head") for p in paths)
    assert any(p.startswith("step1_readout.fine") for p in paths)


def test_roi_head_needs_the_wide_window() -> None:
    with pytest.raises(ValueError, match="wide window"):
        build_classifier(
            Config(data=DataConfig(window="abdomen"), model=ModelConfig(hu_head="roi")),
            rngs=nnx.Rngs(0),
        )


def test_roi_training_segments_and_measures_the_aorta(tmp_path: Path) -> None:
    # 64 px: at 32 px the phantom's aorta is ~2 pixels across and any measurement of it
    # mixes in the fat around it.
    recs, est, truth = _train_and_read_aorta(
        tmp_path, hu_head="roi", strategy="one_step", image_size=64
    )
    seg_loss = [r["loss_seg"] for r in recs]
    assert seg_loss[-1] < 0.7 * seg_loss[0], seg_loss
    assert _reads_the_aorta(est, truth), (est, truth)
