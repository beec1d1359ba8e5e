import json
from pathlib import Path

import numpy as np
import pytest
from fake_cache import make_fake_cache

from phasejax.config import Config, DataConfig
from phasejax.data import augment, pipeline
from phasejax.data.cache import CacheError, finalize, load_volume, read_manifest, write_entry
from phasejax.phases import label_set


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    # 12 patients x 4 phases: train 6 patients (24 series), val/test/external 2 each (8).
    return make_fake_cache(tmp_path_factory.mktemp("cache"), patients=12, size=32, slices=12)


def _cfg(**data) -> Config:
    data = {"image_size": 16, "num_slices": 3, **data}
    return Config().override({"train.batch_size": 8, **{f"data.{k}": v for k, v in data.items()}})


def _take(it, n):
    out = [{k: np.array(v) for k, v in next(it).items()} for _ in range(n)]
    return out


def _assert_batches_equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


# --------------------------------------------------------------------------- slice selection


def test_select_slices_central_and_even_for_known_range():
    # Range [1, 11) of a 12-slice volume: slices 1..10, centre between 5 and 6.
    np.testing.assert_array_equal(pipeline.select_slices(1, 11, 12, 3, "central"), [5, 6, 7])
    np.testing.assert_array_equal(pipeline.select_slices(1, 11, 12, 3, "even"), [2, 6, 9])
    np.testing.assert_array_equal(pipeline.select_slices(1, 11, 12, 2, "central"), [5, 6])
    np.testing.assert_array_equal(pipeline.select_slices(1, 11, 12, 5, "even"), [2, 4, 6, 8, 10])
    for mode in ("central", "even"):
        np.testing.assert_array_equal(pipeline.select_slices(1, 11, 12, 1, mode), [6])
    # 40 slices at 5 mm, liver-to-kidney range [10, 30): four evenly spaced slices.
    np.testing.assert_array_equal(pipeline.select_slices(10, 30, 40, 4, "even"), [12, 17, 22, 27])
    # A range wider than the volume is clipped; an empty range means the whole volume.
    np.testing.assert_array_equal(pipeline.select_slices(-5, 99, 8, 4, "even"), [1, 3, 5, 7])
    np.testing.assert_array_equal(pipeline.select_slices(6, 6, 8, 2, "central"), [3, 4])
    # More slices than the range holds: indices stay inside the volume, in order.
    np.testing.assert_array_equal(pipeline.select_slices(0, 2, 2, 4, "central"), [0, 0, 1, 1])
    with pytest.raises(ValueError, match="'random'"):
        pipeline.select_slices(0, 10, 10, 3, "random")


def test_slice_jitter_stays_within_bounds_and_keeps_order():
    rng = np.random.default_rng(0)
    base = np.array([2, 6, 9])
    seen = set()
    for _ in range(300):
        idx = pipeline.select_slices(1, 11, 12, 3, "even", jitter=1, rng=rng)
        assert np.all(np.diff(idx) >= 0)
        assert np.all(np.abs(idx - base) <= 1)
        seen.update((idx - base).tolist())
    assert seen == {-1, 0, 1}


# --------------------------------------------------------------------------- preprocess


def _ramp_volume(z=12, size=16) -> np.ndarray:
    # Slice z holds HU 10 * z - 100 everywhere: the output tells which slice was used.
    hu = (10 * np.arange(z) - 100).astype(np.int16)
    return np.broadcast_to(hu[:, None, None], (z, size, size)).copy()


def test_preprocess_selects_known_slices_and_windows_their_hu():
    vol = _ramp_volume()
    d = DataConfig(image_size=16, num_slices=3, slice_selection="even", window="abdomen")
    out = pipeline.preprocess(vol, 1, 11, d)
    assert out.shape == (3, 16, 16, 1) and out.dtype == np.float32
    # slices 2, 6, 9 -> HU -80, -40, -10 -> (HU + 160) / 400
    np.testing.assert_allclose(out[:, 0, 0, 0], [0.2, 0.3, 0.375], atol=1e-6)
    assert np.ptp(out, axis=(1, 2, 3)).max() == 0
    d3 = DataConfig(image_size=8, num_slices=2, slice_selection="central", window="multi")
    out3 = pipeline.preprocess(vol, 1, 11, d3)
    assert out3.shape == (2, 8, 8, 3) == pipeline.input_shape(d3)
    # slices 5, 6 -> HU -50, -40; channels abdomen, liver (clipped to 0), wide
    np.testing.assert_allclose(out3[:, 4, 4], [[0.275, 0, 0.2667], [0.3, 0, 0.2733]], atol=1e-4)


def test_resize_keeps_uniform_hu_and_antialiases_fine_stripes():
    flat = np.full((1, 64, 64), 100.0, np.float32)
    np.testing.assert_allclose(augment.resample_slices(flat, 16), 100.0, atol=1e-3)
    # Stripes with a 3-pixel period are finer than a 4x down-sampled grid can hold;
    # without the prefilter they alias into a full-contrast pattern.
    stripes = np.where(np.arange(64) % 3 == 0, 300.0, 0.0).astype(np.float32)
    vol = np.broadcast_to(stripes[None, None, :], (1, 64, 64))
    out = augment.resample_slices(vol, 16)[..., 1:-1]  # edge columns see the padding
    assert abs(out.mean() - 100.0) < 2.0
    assert out.std() < 0.02 * stripes.std()


def test_skipping_the_prefilter_below_one_tap_changes_no_bit():
    # 256 -> 224 px (the paper config): sigma 0.07, a one-tap kernel; resample_slices skips
    # the pass, which must be exactly what the filtered input would have given.
    from scipy import ndimage

    rng = np.random.default_rng(0)
    img = rng.normal(0.0, 300.0, (2, 256, 256)).astype(np.float32)
    sigma = (256 / 224 - 1.0) / 2.0
    filtered = ndimage.gaussian_filter(img, sigma=(0.0, sigma, sigma), mode="nearest")
    np.testing.assert_array_equal(filtered, img)
    affine = augment.Affine(rotation_deg=7.0, scale=1.1, shift_x=0.05)
    got = augment.resample_slices(img, 224, affine)
    np.testing.assert_array_equal(got, _bilinear_only(filtered, 224, affine))
    # At 2x (sigma 0.5) the prefilter still runs: the output differs from unfiltered sampling.
    half = augment.resample_slices(img, 128)
    assert np.abs(half - _bilinear_only(img, 128, augment.IDENTITY)).mean() > 10.0


def _bilinear_only(img: np.ndarray, size: int, affine: augment.Affine) -> np.ndarray:
    """resample_slices' bilinear sampling of uncropped square slices, written out, with no
    prefilter."""
    import math

    from scipy import ndimage

    h = img.shape[1]
    t = math.radians(affine.rotation_deg)
    m2 = np.array([[math.cos(t), math.sin(t)], [-math.sin(t), math.cos(t)]]) * (
        h / size / affine.scale
    )
    c_out = (size - 1) / 2.0
    centre = np.array([c_out + affine.shift_y * size, c_out + affine.shift_x * size])
    offset = np.array([(h - 1) / 2.0] * 2) - m2 @ centre
    return np.stack(
        [
            ndimage.affine_transform(
                s,
                m2,
                offset=offset,
                output_shape=(size, size),
                order=1,
                mode="constant",
                cval=augment.AIR_HU,
                prefilter=False,
            )  # fmt: skip
            for s in img
        ]
    )


def test_affine_moves_known_pixels():
    img = np.full((1, 16, 16), -1000.0, np.float32)
    img[0, 3, 4] = 500.0
    shifted = augment.resample_slices(img, 16, augment.Affine(shift_x=0.25, shift_y=0.125))
    assert np.unravel_index(shifted[0].argmax(), (16, 16)) == (5, 8)
    assert shifted[0, 5, 8] == pytest.approx(500.0)
    flipped = augment.resample_slices(img, 16, augment.Affine(flip_lr=True))
    assert np.unravel_index(flipped[0].argmax(), (16, 16)) == (3, 11)  # x -> 15 - x
    rotated = augment.resample_slices(img, 16, augment.Affine(rotation_deg=90))
    # +90 degrees about the centre (7.5, 7.5): offset (dy, dx) = (-4.5, -3.5) becomes
    # (3.5, -4.5), i.e. (3, 4) -> (11, 3), counter-clockwise on screen; exact on the grid.
    assert np.unravel_index(rotated[0].argmax(), (16, 16)) == (11, 3)
    assert rotated[0, 11, 3] == pytest.approx(500.0, abs=1e-3)
    zoomed = augment.resample_slices(img, 16, augment.Affine(scale=2.0))
    assert zoomed.min() == -1000.0 and zoomed.max() < 500.0  # magnified and interpolated


def test_augmentation_off_is_deterministic_and_on_is_seeded():
    vol = _phantom()
    d_off = DataConfig(image_size=16, augment=False)
    ref = pipeline.preprocess(vol, 1, 11, d_off)
    for seed in range(3):
        got = pipeline.preprocess(vol, 1, 11, d_off, np.random.default_rng(seed))
        np.testing.assert_array_equal(got, ref)
    d_on = DataConfig(image_size=16, augment=True)
    a = pipeline.preprocess(vol, 1, 11, d_on, np.random.default_rng(1))
    b = pipeline.preprocess(vol, 1, 11, d_on, np.random.default_rng(1))
    c = pipeline.preprocess(vol, 1, 11, d_on, np.random.default_rng(2))
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 0.05 and np.abs(a - ref).max() > 0.05


def test_one_geometric_transform_per_series():
    # Identical slices + augmentation without noise/jitter -> identical output slices.
    vol = np.repeat(_phantom()[5:6], 12, axis=0)
    d = DataConfig(image_size=16, augment=True, noise_hu=0.0, slice_jitter=0, rotation_deg=10)
    out = pipeline.preprocess(vol, 1, 11, d, np.random.default_rng(3))
    ref = pipeline.preprocess(vol, 1, 11, DataConfig(image_size=16))
    assert np.abs(out[0] - ref[0]).max() > 0.05  # it was transformed
    np.testing.assert_array_equal(out[0], out[1])
    np.testing.assert_array_equal(out[0], out[2])


def _phantom() -> np.ndarray:
    # Lateralised: the patient's right (image left) holds dense tissue, the left fat.
    vol = np.full((12, 32, 32), -1000, np.int16)
    vol[:, 4:28, 4:16] = 200
    vol[:, 4:28, 16:28] = -100
    return vol


def _left_minus_right(img: np.ndarray) -> float:
    w = img.shape[2]
    return float(img[:, :, : w // 2].mean() - img[:, :, w // 2 :].mean())


def test_no_left_right_flip_by_default():
    vol = _phantom()
    d = DataConfig(image_size=16, augment=True)  # flip_lr defaults to False
    assert d.flip_lr is False
    diffs = [_left_minus_right(pipeline.preprocess(vol, 1, 11, d, np.random.default_rng(s)))
             for s in range(30)]  # fmt: skip
    assert min(diffs) > 0.1  # always brighter on the image left (the patient's right)
    d_flip = DataConfig(image_size=16, augment=True, flip_lr=True)
    diffs = [_left_minus_right(pipeline.preprocess(vol, 1, 11, d_flip, np.random.default_rng(s)))
             for s in range(30)]  # fmt: skip
    assert min(diffs) < -0.1 and max(diffs) > 0.1  # the ablation flips some, not all


# --------------------------------------------------------------------------- rows


def test_split_rows_sorted_filtered_and_train_fraction_keeps_whole_patients(tmp_path):
    root = make_fake_cache(tmp_path, patients=6, size=16, slices=6,
                           phases=("NC", "EAP", "LAP", "PVP", "DP"))  # fmt: skip
    unl = {**read_manifest(root)[0], "series_id": "p000_unlabelled", "phase": ""}
    write_entry(root, unl, load_volume(root, "p000_DP", mmap=False))
    finalize(root)
    cfg = Config()
    rows = pipeline.split_rows(root, "train", cfg)
    # 6 patients -> 3 train patients x 4 paper phases (NC is not in paper4).
    assert len(rows) == 12 and {r["phase"] for r in rows} == {"EAP", "LAP", "PVP", "DP"}
    assert [r["series_id"] for r in rows] == sorted(r["series_id"] for r in rows)
    full5 = cfg.override(["data.label_set=full5"])
    assert len(pipeline.split_rows(root, "train", full5)) == 15
    with_unl = pipeline.split_rows(root, "train", cfg, include_unlabelled=True)
    assert len(with_unl) == 13 and "p000_unlabelled" in {r["series_id"] for r in with_unl}
    assert pipeline.label_index("", label_set("paper4")) == -1

    def patients(frac):
        r = pipeline.split_rows(root, "train", cfg.override([f"data.train_fraction={frac}"]))
        per = {p: sum(x["patient_id"] == p for x in r) for p in {x["patient_id"] for x in r}}
        assert set(per.values()) == {4}  # every kept patient keeps all its series
        return set(per)

    one, two = patients(0.34), patients(0.67)
    assert len(one) == 1 and len(two) == 2 and one < two  # nested learning-curve subsets
    with pytest.raises(ValueError, match="train_fraction"):
        pipeline.split_rows(root, "train", cfg.override(["data.train_fraction=0"]))


# --------------------------------------------------------------------------- training stream


def test_train_batches_have_contract_shapes_and_cover_an_epoch(cache):
    cfg = _cfg(window="multi")
    rows = pipeline.split_rows(cache, "train", cfg)
    assert len(rows) == 24
    it = pipeline.train_iterator(cache, cfg)
    batches = _take(it, 6)
    it.close()
    b = batches[0]
    assert b["image"].shape == (8, 3, 16, 16, 3) and b["image"].dtype == np.float32
    assert b["label"].dtype == np.int32 and b["index"].dtype == np.int32
    assert b["weight"].dtype == np.float32 and np.all(b["weight"] == 1)
    assert b["image"].min() >= 0 and b["image"].max() <= 1
    labels = label_set("paper4")
    for batch in batches:
        for i, lab in zip(batch["index"], batch["label"]):
            assert lab == labels.index(rows[i]["phase"])
    epoch1 = np.concatenate([x["index"] for x in batches[:3]])
    epoch2 = np.concatenate([x["index"] for x in batches[3:]])
    assert sorted(epoch1) == list(range(24)) == sorted(epoch2)
    assert not np.array_equal(epoch1, epoch2)  # reshuffled every epoch
    # Augmentation draws depend on the stream position: a series looks different in
    # every epoch (augment on), and identical with augment off.
    img1 = np.concatenate([x["image"] for x in batches[:3]])[np.argsort(epoch1)]
    img2 = np.concatenate([x["image"] for x in batches[3:]])[np.argsort(epoch2)]
    assert all(np.abs(a - b).max() > 0.05 for a, b in zip(img1, img2))
    it = pipeline.train_iterator(cache, _cfg(window="multi", augment=False))
    plain = _take(it, 6)
    it.close()
    e1, e2 = (np.concatenate([x["index"] for x in part]) for part in (plain[:3], plain[3:]))
    np.testing.assert_array_equal(
        np.concatenate([x["image"] for x in plain[:3]])[np.argsort(e1)],
        np.concatenate([x["image"] for x in plain[3:]])[np.argsort(e2)],
    )


def test_process_shards_are_disjoint_and_concatenate_to_the_global_batch(cache):
    cfg = _cfg()
    it = pipeline.train_iterator(cache, cfg)
    single = _take(it, 4)
    it.close()
    for count in (2, 4):
        shards = []
        for p in range(count):
            it = pipeline.train_iterator(cache, cfg, process_index=p, process_count=count)
            shards.append(_take(it, 4))
            it.close()
        for k in range(4):
            parts = [shards[p][k] for p in range(count)]
            assert all(x["image"].shape[0] == 8 // count for x in parts)
            idx = [set(x["index"].tolist()) for x in parts]
            assert sum(map(len, idx)) == len(set().union(*idx)) == 8  # disjoint
            merged = {key: np.concatenate([x[key] for x in parts]) for key in parts[0]}
            _assert_batches_equal(merged, single[k])
    with pytest.raises(ValueError, match="multiple of the process count"):
        pipeline.train_iterator(cache, cfg, process_index=0, process_count=3)


def test_bad_data_options_are_named_before_any_batch():
    # refused when the config is built, long before a pipeline exists
    with pytest.raises(ValueError, match="data.window='bone' is not one of raw, abdomen"):
        _cfg(window="bone")
    with pytest.raises(ValueError, match="data.slice_selection='top' is not one of central, even"):
        _cfg(slice_selection="top")


def _assert_resumes_exactly(cache, cfg, before: int) -> list[dict]:
    """Take `before` batches, save the iterator state as a checkpoint does, and check that a
    fresh iterator restored from it gives the next 3 batches exactly; returns the first ones."""
    it = pipeline.train_iterator(cache, cfg)
    first = _take(it, before)
    state = json.loads(json.dumps(it.get_state()))  # what a checkpoint stores
    expected = _take(it, 3)
    it.close()
    fresh = pipeline.train_iterator(cache, cfg)
    fresh.set_state(state)
    for a, b in zip(_take(fresh, 3), expected):
        _assert_batches_equal(a, b)
    fresh.close()
    return first


def test_iterator_state_restores_exactly_the_same_batches(cache):
    cfg = _cfg()
    first = _assert_resumes_exactly(cache, cfg, 3)
    other = pipeline.train_iterator(cache, cfg.override(["train.seed=1"]))
    assert not np.array_equal(_take(other, 1)[0]["index"], first[0]["index"])  # seed matters
    other.close()


def test_worker_processes_give_the_same_batches_and_resume(cache):
    cfg = _cfg()
    it = pipeline.train_iterator(cache, cfg)
    ref = _take(it, 4)
    it.close()
    wcfg = cfg.override(["data.worker_count=2"])
    it = pipeline.train_iterator(cache, wcfg)
    got = _take(it, 2)
    state = json.loads(json.dumps(it.get_state()))
    it.close()
    it = pipeline.train_iterator(cache, wcfg)
    it.set_state(state)
    got += _take(it, 2)
    it.close()
    for a, b in zip(got, ref):
        _assert_batches_equal(a, b)


# --------------------------------------------------------------------------- evaluation


@pytest.mark.parametrize(("count", "batch_size"), [(1, 5), (1, 8), (2, 6), (4, 4), (3, 9)])
def test_eval_covers_every_series_exactly_once(cache, count, batch_size):
    cfg = _cfg()
    n = len(pipeline.split_rows(cache, "test", cfg))
    assert n == 8
    seen, per_process_batches = [], []
    for p in range(count):
        batches = list(
            pipeline.eval_batches(cache, "test", cfg, batch_size=batch_size,
                                  process_index=p, process_count=count)
        )  # fmt: skip
        per_process_batches.append(len(batches))
        for b in batches:
            assert b["image"].shape == (batch_size // count, 3, 16, 16, 1)
            real = b["weight"] > 0
            assert np.all(b["index"][~real] == -1) and np.all(b["label"][~real] == -1)
            assert np.all(b["image"][~real] == 0)
            seen += b["index"][real].tolist()
    assert len(set(per_process_batches)) == 1  # every process runs the same number of steps
    assert per_process_batches[0] == -(-n // batch_size)
    assert sorted(seen) == list(range(n))


def test_eval_batches_equal_deterministic_preprocess(cache):
    cfg = _cfg()  # augment defaults to True: eval must ignore it
    rows = pipeline.split_rows(cache, "val", cfg)
    batches = list(pipeline.eval_batches(cache, "val", cfg, batch_size=4))
    again = list(pipeline.eval_batches(cache, "val", cfg, batch_size=4))
    for a, b in zip(batches, again):
        _assert_batches_equal(a, b)
    row = rows[5]
    expected = pipeline.preprocess(
        load_volume(cache, row["series_id"]), int(row["z_lo"]), int(row["z_hi"]), cfg.data
    )
    np.testing.assert_array_equal(batches[1]["image"][1], expected)
    assert batches[1]["label"][1] == label_set("paper4").index(row["phase"])


def test_missing_volume_error_names_the_file(tmp_path):
    root = make_fake_cache(tmp_path, patients=6, size=16, slices=6)
    (root / "volumes" / "p004_PVP.npy").unlink()
    with pytest.raises(CacheError, match=r"p004_PVP\.npy"):
        list(pipeline.eval_batches(root, "test", _cfg(), batch_size=4))


def test_image_slab_replaces_the_manifest_range_by_the_finder_on_the_volume(tmp_path):
    from phasejax.data.prepare import find_slab

    root = make_fake_cache(tmp_path, patients=6, size=32, slices=12)
    manifest = pipeline.split_rows(root, "train", Config())
    image = pipeline.split_rows(root, "train", Config().override({"data.slab": "image"}))
    assert [r["series_id"] for r in image] == [r["series_id"] for r in manifest]
    moved = 0
    for m, r in zip(manifest, image):
        volume = np.asarray(load_volume(root, r["series_id"]))
        slab = find_slab(volume, float(r["spacing_z"]), pipeline.row_pixel_mm(r))
        assert (int(r["z_lo"]), int(r["z_hi"])) == (slab.z_lo, slab.z_hi)
        assert (m["z_lo"], m["z_hi"]) == ("1", "11")  # the fake cache's manifest range
        moved += (int(r["z_lo"]), int(r["z_hi"])) != (1, 11)
    assert moved > 0  # on this phantom the finder's slab is not the manifest's


# --------------------------------------------------------------------------- network 2's own batch


def test_arterial_slot_is_a_fresh_permutation_every_pass():
    passes = [[pipeline.arterial_slot(7, 5, p) for p in range(5 * k, 5 * k + 5)] for k in range(4)]
    assert all(sorted(p) == [0, 1, 2, 3, 4] for p in passes)
    assert len({tuple(p) for p in passes}) > 1  # reshuffled between passes
    assert [pipeline.arterial_slot(7, 5, p) for p in range(5)] == passes[0]  # pure function
    assert [pipeline.arterial_slot(8, 5, p) for p in range(20)] != sum(passes, [])  # seeded
    with pytest.raises(ValueError, match="stream position"):
        pipeline.arterial_slot(7, 5, -1)


def test_own_batch_carries_only_arterial_series_each_once_per_pass(cache):
    cfg = _cfg(window="multi").override(
        {"model.strategy": "two_step", "train.step2_own_batch": True}
    )
    rows = pipeline.split_rows(cache, "train", cfg)
    arterial = pipeline.step2_rows(rows, cfg)
    phases = [rows[i]["phase"] for i in arterial]
    assert sorted(phases) == ["EAP"] * 6 + ["LAP"] * 6  # 6 patients x 2 arterial series
    assert all(r["phase"] in ("PVP", "DP") for i, r in enumerate(rows) if i not in arterial)
    it = pipeline.train_iterator(cache, cfg)
    batches = _take(it, 6)  # 48 positions: 4 passes over the 12 arterial series
    it.close()
    b = batches[0]
    assert b["image2"].shape == b["image"].shape == (8, 3, 16, 16, 3)
    assert b["label2"].dtype == np.int32 and np.all(b["weight2"] == 1)
    labels = label_set("paper4")
    label2 = np.concatenate([x["label2"] for x in batches])
    assert set(label2.tolist()) == {labels.index("EAP"), labels.index("LAP")}
    # Each image2 is the series the slot names, augmented by its own stream: the arterial
    # series' images at their slots, with augmentation off, equal their deterministic input.
    plain = cfg.override({"data.augment": False})
    it = pipeline.train_iterator(cache, plain)
    off = _take(it, 3)
    it.close()
    for k, batch in enumerate(off):
        for j in range(8):
            row = rows[arterial[pipeline.arterial_slot(0, 12, 8 * k + j)]]
            expected = pipeline.row_input(cache, row, plain.data)
            np.testing.assert_array_equal(batch["image2"][j], expected)
            assert batch["label2"][j] == labels.index(row["phase"])
    # every arterial series once per pass of 12 positions
    slots = [pipeline.arterial_slot(0, 12, p) for p in range(48)]
    assert all(sorted(slots[i : i + 12]) == list(range(12)) for i in range(0, 48, 12))
    # the shared batch is the one without the option, series and pixels
    it = pipeline.train_iterator(cache, _cfg(window="multi"))
    shared = _take(it, 6)
    it.close()
    for a, s in zip(batches, shared):
        assert set(a) - set(s) == {"image2", "label2", "weight2"}
        for key in s:
            np.testing.assert_array_equal(a[key], s[key], err_msg=key)


def test_own_batch_resumes_exactly_and_one_step_ignores_it(cache):
    cfg = _cfg().override({"model.strategy": "two_step", "train.step2_own_batch": True})
    assert "image2" in _assert_resumes_exactly(cache, cfg, 2)[0]
    it = pipeline.train_iterator(cache, cfg.override({"model.strategy": "one_step"}))
    assert "image2" not in _take(it, 1)[0]
    it.close()
    with pytest.raises(ValueError, match="step2_own_batch needs model.hu_head 'none'"):
        pipeline.train_iterator(cache, cfg.override({"model.hu_head": "auxiliary"}))
