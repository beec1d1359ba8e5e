"""Sim-to-real domain randomisation (phasejax.data.augment.randomize_tissues / blur)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from phasejax.cohort.structures import Label
from phasejax.config import DataConfig
from phasejax.data import augment
from phasejax.data.pipeline import preprocess

PHASE_LABELS = (
    Label.AORTA,
    Label.PORTAL_VEIN,
    Label.HEPATIC_VEIN,
    Label.IVC,
    Label.LIVER,
    Label.SPLEEN,
    Label.KIDNEY_CORTEX,
    Label.KIDNEY_MEDULLA,
    Label.KIDNEY_COLLECTING,
)


_BANDS = (
    (Label.AORTA, 250.0),
    (Label.LIVER, 110.0),
    (Label.KIDNEY_CORTEX, 180.0),
    (Label.FAT_VISCERAL, -100.0),
    (Label.MUSCLE, 50.0),
    (Label.BOWEL_CONTENT, 10.0),
    (Label.VERTEBRA, 250.0),
)


def _labelled_slices(
    bands: tuple[tuple[Label, float], ...] = _BANDS,
) -> tuple[np.ndarray, np.ndarray]:
    """Three 8x8 slices: one column band per structure, HU known per label (air beyond)."""
    labels = np.zeros((3, 8, 8), np.uint8)
    hu = np.full((3, 8, 8), -1000.0, np.float32)
    for j, (label, value) in enumerate(bands):
        labels[:, :, j] = label
        hu[:, :, j] = value
    return hu, labels


def test_phase_structures_keep_their_hu_and_nuisances_move_by_one_offset_per_series():
    hu, labels = _labelled_slices()
    out = augment.randomize_tissues(hu.copy(), labels, np.random.default_rng(3), 1.0)
    for label in PHASE_LABELS:
        m = labels == label
        np.testing.assert_array_equal(out[m], hu[m])
    assert np.all(out[labels == Label.BACKGROUND] == -1000.0)
    for label in (Label.FAT_VISCERAL, Label.MUSCLE, Label.VERTEBRA, Label.BOWEL_CONTENT):
        delta = out[labels == label] - hu[labels == label]
        # One offset for the whole series: every slice and pixel moves together.
        assert np.ptp(delta) < 1e-4
    lo, hi = augment._NUISANCE_OFFSETS[Label.MUSCLE]
    shift = float((out - hu)[labels == Label.MUSCLE][0])
    assert lo <= shift <= hi


def test_bowel_content_becomes_water_or_oral_contrast_over_many_series():
    hu, labels = _labelled_slices()
    content = labels == Label.BOWEL_CONTENT
    values = [
        float(
            np.median(
                augment.randomize_tissues(hu.copy(), labels, np.random.default_rng(s), 1.0)[content]
            )
        )
        for s in range(200)
    ]
    oral = [v for v in values if v >= 150.0]
    water = [v for v in values if v <= 30.0]
    assert len(oral) + len(water) == len(values)
    assert 60 <= len(oral) <= 140  # about half the series get positive oral contrast
    assert max(oral) <= 900.0


def test_strength_zero_is_the_identity_and_strength_scales_offsets():
    hu, labels = _labelled_slices()
    np.testing.assert_array_equal(
        augment.randomize_tissues(hu.copy(), labels, np.random.default_rng(0), 0.0), hu
    )
    full = augment.randomize_tissues(hu.copy(), labels, np.random.default_rng(5), 1.0)
    half = augment.randomize_tissues(hu.copy(), labels, np.random.default_rng(5), 0.5)
    m = labels == Label.FAT_VISCERAL
    np.testing.assert_allclose((half - hu)[m], 0.5 * (full - hu)[m], atol=1e-4)


def test_blur_keeps_uniform_regions_and_softens_edges():
    img = np.zeros((1, 32, 32), np.float32)
    img[:, :, 16:] = 100.0
    out = augment.blur(img.copy(), np.random.default_rng(1), 2.0)
    assert abs(float(out[0, 16, 2])) < 1e-3 and abs(float(out[0, 16, 30]) - 100.0) < 1e-3
    assert 0.0 < float(out[0, 16, 15]) < 50.0 < float(out[0, 16, 16]) < 100.0
    np.testing.assert_array_equal(augment.blur(img.copy(), np.random.default_rng(1), 0.0), img)


def test_preprocess_uses_masks_only_when_training_with_randomization():
    hu, labels = _labelled_slices()
    vol = np.repeat(hu[:1], 6, axis=0)
    lab = np.repeat(labels[:1], 6, axis=0)
    base = dict(image_size=8, num_slices=2, window="raw", slice_jitter=0, rotation_deg=0.0)
    base |= dict(scale=0.0, translate=0.0, intensity_jitter_hu=0.0, noise_hu=0.0)
    on = DataConfig(**base, tissue_randomization=1.0)
    off = DataConfig(**base)
    rng = lambda: np.random.default_rng(7)  # noqa: E731
    a = preprocess(vol, 0, 6, off, rng(), lab)
    b = preprocess(vol, 0, 6, on, rng(), lab)
    c = preprocess(vol, 0, 6, on, None, lab)  # evaluation: no randomisation
    np.testing.assert_array_equal(a, c)
    aorta = lab[0] == Label.AORTA
    muscle = lab[0] == Label.MUSCLE
    np.testing.assert_array_equal(b[0][aorta], a[0][aorta])
    assert not np.allclose(b[0][muscle], a[0][muscle])


def test_erase_boxes_hide_rectangles_of_soft_tissue_on_every_slice():
    hu = np.full((4, 64, 64), 400.0, np.float32)
    out = augment.erase_boxes(hu.copy(), np.random.default_rng(3), 2)
    for k in range(4):
        hidden = out[k] != 400.0
        assert 0 < hidden.mean() < 2 * 0.35**2 + 1e-6  # at most two boxes of a third
        ys, xs = np.nonzero(hidden)
        fills = np.unique(out[k][hidden])
        assert 1 <= fills.size <= 2 and np.all((fills >= -100) & (fills <= 150))
        assert ys.min() >= 0 and xs.max() < 64
    assert not np.array_equal(out[0] != 400.0, out[1] != 400.0)  # drawn per slice
    assert np.array_equal(augment.erase_boxes(hu.copy(), np.random.default_rng(3), 0), hu)


def test_erasing_is_training_only_and_off_leaves_the_draws_unchanged():
    vol = (np.arange(12 * 48 * 48) % 700 - 200).astype(np.int16).reshape(12, 48, 48)
    base = DataConfig(image_size=32, num_slices=3, window="wide")
    erased = DataConfig(image_size=32, num_slices=3, window="wide", erase_boxes=3)
    assert np.array_equal(preprocess(vol, 1, 11, base), preprocess(vol, 1, 11, erased))
    a = preprocess(vol, 1, 11, base, np.random.default_rng(7))
    b = preprocess(vol, 1, 11, erased, np.random.default_rng(7))
    assert not np.array_equal(a, b)
    off = DataConfig(image_size=32, num_slices=3, window="wide", erase_boxes=0)
    assert np.array_equal(a, preprocess(vol, 1, 11, off, np.random.default_rng(7)))


def test_scramble_kidneys_moves_cortex_and_medulla_only_for_the_drawn_share():
    labels = np.zeros((2, 32, 32), np.uint8)
    labels[:, 4:10, 4:10] = Label.KIDNEY_CORTEX
    labels[:, 12:16, 12:16] = Label.KIDNEY_MEDULLA
    labels[:, 20:24, 20:24] = Label.KIDNEY_COLLECTING
    labels[:, 26:30, 26:30] = Label.AORTA
    hu = np.full((2, 32, 32), 40.0, np.float32)
    hu[labels == Label.KIDNEY_CORTEX] = 200.0
    hu[labels == Label.KIDNEY_COLLECTING] = 600.0
    hu[labels == Label.AORTA] = 300.0
    moved = 0
    for seed in range(200):
        out = augment.scramble_kidneys(hu, labels, np.random.default_rng(seed), 0.5)
        np.testing.assert_array_equal(out[labels == Label.AORTA], 300.0)
        np.testing.assert_array_equal(out[labels == Label.KIDNEY_COLLECTING], 600.0)
        cortex = np.unique(out[labels == Label.KIDNEY_CORTEX])
        assert cortex.size == 1 and 30.0 <= cortex[0] <= 260.0
        moved += cortex[0] != 200.0
    assert 70 < moved < 130  # about half the series
    assert np.array_equal(augment.scramble_kidneys(hu, labels, np.random.default_rng(0), 0.0), hu)
    # With the collecting system: it moves too (urine to dense excretion), the aorta stays.
    seen = set()
    for seed in range(40):
        out = augment.scramble_kidneys(hu, labels, np.random.default_rng(seed), 1.0, True)
        np.testing.assert_array_equal(out[labels == Label.AORTA], 300.0)
        urine = np.unique(out[labels == Label.KIDNEY_COLLECTING])
        assert urine.size == 1 and 0.0 <= urine[0] <= 500.0
        seen.add(float(urine[0]))
    assert len(seen) == 40 and min(seen) < 150.0 < max(seen)


def test_jitter_structures_scales_each_enhancement_by_its_own_factor() -> None:
    hu, labels = _labelled_slices()
    hu[:, 0, 0] += 20.0  # texture inside the aorta band, which the jitter must keep
    structures = (Label.AORTA, Label.LIVER, Label.KIDNEY_CORTEX)
    out = augment.jitter_structures(hu, labels, np.random.default_rng(3), 0.3, structures)
    factors = np.exp(np.random.default_rng(3).normal(0.0, 0.3, size=3))
    for label, factor in zip(structures, factors, strict=True):
        inside = labels == label
        before, after = float(hu[inside].mean()), float(out[inside].mean())
        assert after - 40.0 == pytest.approx((before - 40.0) * factor, rel=1e-4)
        np.testing.assert_allclose(out[inside] - after, hu[inside] - before, atol=1e-3)
    assert len(set(np.round(factors, 6))) == 3  # independent draws, not one shared factor
    others = ~np.isin(labels, [int(s) for s in structures])
    np.testing.assert_array_equal(out[others], hu[others])  # fat, muscle, bone untouched
    assert augment.jitter_structures(hu, labels, np.random.default_rng(3), 0.0, structures) is hu


def test_structure_jitter_is_training_only() -> None:
    hu, labels = _labelled_slices()
    vol = np.repeat(hu[:1], 6, axis=0).astype(np.int16)
    lab = np.repeat(labels[:1], 6, axis=0)
    off = DataConfig(image_size=8, num_slices=1, window="raw", rotation_deg=0.0, scale=0.0,
                     translate=0.0, intensity_jitter_hu=0.0, noise_hu=0.0, slice_jitter=0)  # fmt: skip
    on = dataclasses.replace(off, structure_jitter=0.5)
    np.testing.assert_array_equal(preprocess(vol, 0, 6, on, None, lab), preprocess(vol, 0, 6, off))
    a = preprocess(vol, 0, 6, off, np.random.default_rng(0), lab)
    b = preprocess(vol, 0, 6, on, np.random.default_rng(0), lab)
    np.testing.assert_array_equal(a[..., 3:, :], b[..., 3:, :])  # fat, muscle, bowel, bone
    assert np.abs(a[..., :3, :] - b[..., :3, :]).min() > 1e-3  # aorta, liver, cortex moved


def test_arterial_jitter_leaves_the_portal_and_hepatic_veins_of_arterial_series() -> None:
    # The label of an arterial series reads the portal vein (EAP vs LAP) and the hepatic veins
    # (the arterial gate): those must keep their HU while the aorta, spleen and liver move.
    hu, labels = _labelled_slices(
        (
            (Label.PORTAL_VEIN, 70.0),
            (Label.HEPATIC_VEIN, 55.0),
            (Label.FAT_VISCERAL, -100.0),
            (Label.AORTA, 300.0),
            (Label.SPLEEN, 160.0),
            (Label.LIVER, 75.0),
        )
    )
    hu[1] += 15.0  # the slices differ: one factor per series scales each slice's enhancement
    vol, lab = np.repeat(hu, 2, axis=0).astype(np.int16), np.repeat(labels, 2, axis=0)
    off = DataConfig(image_size=8, num_slices=3, window="raw", rotation_deg=0.0, scale=0.0,
                     translate=0.0, intensity_jitter_hu=0.0, noise_hu=0.0, slice_jitter=0)  # fmt: skip
    on = dataclasses.replace(off, arterial_jitter=0.3)
    a = preprocess(vol, 0, 6, off, np.random.default_rng(0), lab)[..., 0] * 4095.0 - 1024.0
    b = preprocess(vol, 0, 6, on, np.random.default_rng(0), lab, arterial=True)[..., 0] * 4095.0
    b -= 1024.0  # the raw window's HU
    np.testing.assert_array_equal(a[..., :3], b[..., :3])  # portal vein, hepatic veins, fat
    shift = b[..., 3:6] - a[..., 3:6]  # aorta, spleen, liver
    # one shift per structure and series (texture and slice-to-slice differences kept) ...
    np.testing.assert_allclose(shift, np.broadcast_to(shift[:1, :1], shift.shape), atol=0.05)
    assert np.abs(shift[0, 0]).min() > 1.0
    # ... that scales its enhancement above 40 HU by its own factor
    factors = 1.0 + shift[0, 0] / (a[..., 3:6].mean(axis=(0, 1)) - 40.0)
    assert len(set(np.round(factors, 4))) == 3 and 0.3 < factors.min() < factors.max() < 3.0
    # A series labelled PVP or DP (arterial=False) and the evaluation input stay as they were.
    np.testing.assert_array_equal(
        preprocess(vol, 0, 6, on, np.random.default_rng(0), lab),
        preprocess(vol, 0, 6, off, np.random.default_rng(0), lab),
    )
    np.testing.assert_array_equal(
        preprocess(vol, 0, 6, on, None, lab, arterial=True), preprocess(vol, 0, 6, off)
    )


def test_training_elements_jitter_the_series_labelled_eap_or_lap(tmp_path) -> None:
    from fake_cache import make_fake_cache

    from phasejax.config import Config
    from phasejax.data.pipeline import _Series, split_rows

    cache = make_fake_cache(tmp_path / "c", patients=10, size=16, slices=6, masks=True)
    off = Config(data=DataConfig(image_size=16, num_slices=3))
    on = Config(data=dataclasses.replace(off.data, arterial_jitter=0.3))
    rows = tuple(split_rows(cache, "train", off))
    a = _Series(str(cache), rows, off.data, 0, training=True)
    b = _Series(str(cache), rows, on.data, 0, training=True)
    moved = {
        r["phase"]
        for i, r in enumerate(rows)
        if not np.array_equal(a.element(i, i)["image"], b.element(i, i)["image"])
    }
    assert {r["phase"] for r in rows} == {"EAP", "LAP", "PVP", "DP"}
    assert moved == {"EAP", "LAP"}


def test_elastic_deformation_displaces_smoothly_and_registers_all_slices() -> None:
    yy, xx = np.mgrid[:64, :64].astype(np.float32)
    ramp = np.stack([yy * 3.0 + xx, yy * 3.0 + xx + 7.0])
    base = augment.Affine(rotation_deg=5.0, scale=1.1)
    # A vanishing field is the affine path: the two lookups agree.
    tiny = dataclasses.replace(base, elastic=1e-9, elastic_seed=4)
    np.testing.assert_allclose(
        augment.resample_slices(ramp, 32, tiny), augment.resample_slices(ramp, 32, base), atol=1e-3
    )
    bent = dataclasses.replace(base, elastic=0.03, elastic_seed=4)
    out = augment.resample_slices(ramp, 32, bent)
    diff = out - augment.resample_slices(ramp, 32, base)
    # The same displacement on every slice of a series (the slices stay registered; the
    # ramps differ by a constant, so their differences agree wherever both stay inside).
    inside = (np.abs(diff) < 100.0).all(axis=0)
    assert inside.mean() > 0.8 and np.abs(diff[0][inside]).max() > 1.0
    np.testing.assert_allclose(diff[0][inside], diff[1][inside], atol=1e-3)
    field = augment.elastic_field(bent, 32)
    assert field is not None and field.shape == (2, 32, 32)
    assert 0.005 < float(field.std()) < 0.06
    # Smooth, and no folding: neighbouring output pixels move by less than a pixel apart.
    for axis in (1, 2):
        assert np.abs(np.diff(field * 32, axis=axis)).max() < 0.9
    # Drawn only when enabled, from the series' rng.
    cfg = DataConfig()
    assert augment.sample_affine(np.random.default_rng(1), cfg).elastic_seed == 0
    on = augment.sample_affine(np.random.default_rng(1), dataclasses.replace(cfg, elastic=0.03))
    assert on.elastic == 0.03 and on.elastic_seed > 0
