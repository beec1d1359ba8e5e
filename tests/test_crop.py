"""The field of view in front of the spine (`data.crop_mm`, phasejax.data.crop) and around the
body (`data.field_of_view = "body"`): where its centre lands, how the resize maps it, and
that training, evaluation and saliency use the same square."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from phasejax.config import DataConfig
from phasejax.data import augment
from phasejax.data.crop import BODY_MARGIN, Crop, find_body_crop, find_crop
from phasejax.data.pipeline import check_data_config, preprocess, select_slices
from phasejax.saliency import resize_labels

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _slice(spine: tuple[int, int] | None, size: int = 128) -> np.ndarray:
    """Air, an elliptical body of soft tissue (40 HU) centred at (60, 64), and a round
    vertebral body (400 HU, radius 8 px) at `spine` (row, col)."""
    yy, xx = np.mgrid[:size, :size]
    sl = np.full((size, size), -1000.0, np.float32)
    sl[((yy - 60) / 45.0) ** 2 + ((xx - 64) / 55.0) ** 2 <= 1.0] = 40.0
    if spine is not None:
        sl[(yy - spine[0]) ** 2 + (xx - spine[1]) ** 2 <= 64] = 400.0
    return sl


def test_centre_is_the_median_spine_moved_forwards() -> None:
    hu = np.stack([_slice((88, 62)), _slice((90, 64)), _slice((92, 66))])
    crop = find_crop(hu, pixel_mm=2.0, side_mm=180.0, anterior_mm=40.0)
    assert crop.row == pytest.approx(90.0 - 20.0, abs=0.05)  # rows run anterior to posterior
    assert crop.col == pytest.approx(64.0, abs=0.05)
    assert crop.side == pytest.approx(90.0)


def test_without_a_spine_the_body_centre_then_the_image_centre() -> None:
    crop = find_crop(np.stack([_slice(None)] * 3), 2.0, 100.0, 40.0)
    assert (crop.row, crop.col) == (pytest.approx(60.0, abs=0.6), pytest.approx(64.0, abs=0.6))
    air = np.full((2, 64, 64), -1000.0, np.float32)
    crop = find_crop(air, 2.0, 100.0, 40.0)
    assert (crop.row, crop.col, crop.side) == (31.5, 31.5, 50.0)
    with pytest.raises(ValueError, match="pixel_mm"):
        find_crop(air, 0.0, 100.0, 40.0)


def test_resample_maps_the_crop_onto_the_output() -> None:
    # Bilinear interpolation reproduces a linear ramp exactly: output pixel o of a crop of
    # side L centred at c samples c + (o - (size - 1) / 2) * L / size.
    yy, xx = np.mgrid[:100, :100].astype(np.float32)
    ramp = np.stack([yy * 3.0 + xx])
    out = augment.resample_slices(ramp, 20, crop=Crop(row=30.0, col=60.0, side=20.0))
    o = np.arange(20) - 9.5
    np.testing.assert_allclose(out[0], (30.0 + o)[:, None] * 3.0 + (60.0 + o)[None, :], atol=1e-3)
    # Zoomed out (2 input pixels per output pixel, with the anti-aliasing prefilter): the
    # ramp stays linear away from the image border.
    out = augment.resample_slices(ramp, 20, crop=Crop(row=50.0, col=50.0, side=40.0))
    want = (50.0 + 2 * o)[:, None] * 3.0 + (50.0 + 2 * o)[None, :]
    np.testing.assert_allclose(out[0], want, atol=1e-2)


def test_preprocess_crops_and_needs_the_pixel_size() -> None:
    vol = np.stack([_slice((90, 64))] * 6).astype(np.int16)
    full = DataConfig(image_size=32, num_slices=1, window="raw", augment=False)
    cropped = DataConfig(image_size=32, num_slices=1, window="raw", augment=False, crop_mm=64.0)
    with pytest.raises(ValueError, match="spacing_xy"):
        preprocess(vol, 0, 6, cropped)
    a = preprocess(vol, 0, 6, full)
    b = preprocess(vol, 0, 6, cropped, pixel_mm=2.0)
    assert a.shape == b.shape == (1, 32, 32, 1)
    # Whole field: air in the corners. The 64 mm crop centred 40 mm in front of the spine
    # (row 70) spans rows 54-86 and columns 48-80 of the slice: all inside the body.
    assert a[0, 0, 0, 0] < b[0, 0, 0, 0]
    hu_b = b[0, ..., 0]
    assert hu_b.min() > np.percentile(a[0, ..., 0], 10)
    # The spine (rows 82-98 of the slice) enters the crop's last rows only.
    assert hu_b[-1].max() > hu_b[0].max()


def test_saliency_labels_stay_registered_with_the_cropped_image() -> None:
    mask = np.zeros((1, 120, 120), np.uint8)
    mask[0, 40:60, 50:90] = 3
    crop = Crop(row=55.0, col=70.0, side=60.0)
    image = augment.resample_slices(mask.astype(np.float32) * 100.0, 48, crop=crop, cval=0.0)
    labels = resize_labels(mask, 48, crop)
    inside_img, inside_lab = image[0] > 150.0, labels[0] == 3
    iou = (inside_img & inside_lab).sum() / (inside_img | inside_lab).sum()
    assert iou > 0.85
    # Outside the image the labels are background.
    far = resize_labels(mask, 8, Crop(row=-100.0, col=-100.0, side=40.0))
    assert not far.any()


# The aorta's centre on the cached volume (5 mm, 192 px), from the hand-placed ROIs of
# experiments/real_roi.py (docs/real_roi/real_roi.json) mapped onto the cache grid.
AORTA = {
    "4.000000-Recon 2 LIVER 3 PHASE AP-06472": (99.4, 100.2),  # HCC_015 arterial
    "103.000000-LIVER 3 PHASE AP-44492": (99.8, 99.4),  # HCC_015 portal venous
    "example_ct.nii.gz": (97.9, 104.2),  # non-contrast
}


def test_real_crop_keeps_the_aorta_near_its_centre() -> None:
    from phasejax.data.cache import CacheSpec
    from phasejax.data.discover import discover, load_plan
    from phasejax.data.prepare import cache_volume

    folder = SHARED / "real"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    seen = 0
    for plan in discover([folder]).plans:
        name = Path(plan.source).name
        if name not in AORTA:
            continue
        series, _ = load_plan(plan)
        assert series is not None
        cached = cache_volume(series, CacheSpec(spacing_z=5.0, size=192))
        idx = select_slices(cached.z_lo, cached.z_hi, cached.volume.shape[0], 5, "even")
        hu = np.asarray(cached.volume[idx], np.float32)
        crop = find_crop(hu, cached.pixel_mm, 120.0, 40.0)
        dy = (AORTA[name][0] - crop.row) * cached.pixel_mm
        dx = (AORTA[name][1] - crop.col) * cached.pixel_mm
        # Within the central half of a 120 mm field.
        assert abs(dy) <= 30.0 and abs(dx) <= 30.0, (name, dy, dx)
        seen += 1
    if seen == 0:
        pytest.skip("none of the hand-read real series found")


def test_training_crops_the_square_evaluation_crops(tmp_path: Path) -> None:
    import dataclasses

    from fake_cache import make_fake_cache

    from phasejax.config import Config
    from phasejax.data.cache import read_manifest
    from phasejax.data.pipeline import _Series, input_crop, load_cached, row_pixel_mm, split_rows

    cache = make_fake_cache(tmp_path / "c", patients=6, size=64, slices=10)
    assert all(row_pixel_mm(r) for r in read_manifest(cache))  # the manifest's spacing_xy
    data = DataConfig(image_size=32, num_slices=3, crop_mm=60.0, augment=False)
    rows = tuple(split_rows(cache, "train", Config(data=data)))
    r = rows[0]
    volume = load_cached(cache, r["series_id"])
    want = preprocess(volume, int(r["z_lo"]), int(r["z_hi"]), data, pixel_mm=row_pixel_mm(r))
    got = _Series(str(cache), rows, data, 0, training=True).element(0, 0)["image"]
    np.testing.assert_array_equal(got, want)
    # With slice jitter the selected slices move, the square does not: it belongs to the
    # series (found on its evaluation slices).
    jitter = dataclasses.replace(data, augment=True, slice_jitter=2)
    crop = input_crop(volume, int(r["z_lo"]), int(r["z_hi"]), jitter, row_pixel_mm(r))
    assert crop == input_crop(volume, int(r["z_lo"]), int(r["z_hi"]), data, row_pixel_mm(r))
    assert crop is not None and crop.side == pytest.approx(60.0 / row_pixel_mm(r))


def test_body_square_is_the_union_of_the_outlines_plus_the_margin() -> None:
    # _slice's body: rows 15-105, columns 9-119 (an ellipse of semi-axes 45 and 55 at (60,
    # 64)). A second slice with a smaller body shifted right widens the union to column 121.
    small = np.full((128, 128), -1000.0, np.float32)
    yy, xx = np.mgrid[:128, :128]
    small[((yy - 60) / 30.0) ** 2 + ((xx - 96) / 25.0) ** 2 <= 1.0] = 40.0
    # A table-like speck of bone away from the body is not the body (largest region only).
    small[120:123, 2:6] = 300.0
    crop = find_body_crop(np.stack([_slice((90, 64)), small]))
    assert crop is not None
    assert crop.row == pytest.approx(60.0)
    assert crop.col == pytest.approx(0.5 * (9 + 121))
    assert crop.side == pytest.approx((121 - 9 + 1) * (1 + 2 * BODY_MARGIN))
    # No body at all: no crop (the whole image is kept).
    assert find_body_crop(np.full((2, 32, 32), -1000.0, np.float32)) is None
    with pytest.raises(ValueError, match="HU slices"):
        find_body_crop(np.zeros((32, 32), np.float32))


def test_body_field_fills_the_input_with_the_body_and_excludes_crop_mm() -> None:
    # A small body (semi-axes 20 x 25 px) in a 128 px field: resized whole it spans under
    # half the input; fitted, its left and right edges sit near the input's edges.
    yy, xx = np.mgrid[:128, :128]
    sl = np.full((128, 128), -1000.0, np.float32)
    sl[((yy - 64) / 20.0) ** 2 + ((xx - 64) / 25.0) ** 2 <= 1.0] = 40.0
    vol = np.stack([sl] * 4).astype(np.int16)
    scan = DataConfig(image_size=32, num_slices=1, window="raw", augment=False)
    body = DataConfig(
        image_size=32, num_slices=1, window="raw", augment=False, field_of_view="body"
    )
    rows = [preprocess(vol, 0, 4, cfg)[0, 16, :, 0] for cfg in (scan, body)]
    width = [(r > 0.5 * (r.min() + r.max())).sum() for r in rows]
    assert width[0] <= 14  # 51 of 128 px -> 12.75 of 32
    assert width[1] >= 28  # 51 px of a 55 px square -> ~29.6 of 32
    check_data_config(body)
    with pytest.raises(ValueError, match="field_of_view"):
        check_data_config(DataConfig(crop_mm=100.0, field_of_view="body"))
