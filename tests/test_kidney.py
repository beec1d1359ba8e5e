"""The anatomy-based kidney reading and the phase that aorta and kidneys point to."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from phasejax.cohort.anatomy_reference import call_from_anatomy
from phasejax.data.kidney import read_kidneys
from phasejax.data.prepare import SliceAnatomy, find_slab, slice_anatomy

PX = 2.0  # mm per pixel
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"


def _ellipse(shape, row, col, ry, rx):
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    return ((yy - row) / ry) ** 2 + ((xx - col) / rx) ** 2 <= 1.0


def _abdomen(cortex_hu, medulla_hu, pelvis_hu=None, slices=8, loop=None, seed=0):
    """Slices of a fat-filled body with a vertebra and two kidneys beside it (60 x 44 mm
    sections, 80 mm either side of the vertebral body): a 6 mm cortex around the medulla,
    perirenal fat around both; with `pelvis_hu` a dense collecting system (16 x 10 mm) in
    the medulla's middle; with `loop` = (hu, slices) the left kidney out of plane on those
    slices and a bowel loop of that HU in the kidney window, anterior and lateral to it."""
    rng = np.random.default_rng(seed)
    shape = (192, 192)
    vol = []
    for k in range(slices):
        sl = np.full(shape, -1000.0, np.float32)
        sl[_ellipse(shape, 96, 96, 70, 88)] = -100.0
        sl[_ellipse(shape, 96, 96, 64, 82)] = 20.0  # muscle and viscera
        sl[_ellipse(shape, 120, 96, 26, 70)] = -100.0  # retroperitoneal fat
        sl[_ellipse(shape, 130, 96, 9, 9)] = 700.0
        sl[_ellipse(shape, 130, 96, 7.5, 7.5)] = 150.0
        hidden = loop is not None and k in loop[1]
        for col in (96 - 40,) if hidden else (96 - 40, 96 + 40):
            sl[_ellipse(shape, 122, col, 15, 11)] = cortex_hu
            sl[_ellipse(shape, 122, col, 12, 8)] = medulla_hu
            if pelvis_hu is not None:
                sl[_ellipse(shape, 122, col, 8, 5)] = pelvis_hu
        if hidden:
            sl[_ellipse(shape, 108, 96 + 56, 10, 9)] = loop[0]
        vol.append(sl + rng.normal(0.0, 8.0, shape).astype(np.float32))
    return np.stack(vol)


@pytest.mark.parametrize(
    ("cortex", "medulla", "pelvis"),
    [(35.0, 32.0, None), (190.0, 60.0, None), (165.0, 150.0, None), (150.0, 200.0, 600.0)],
    ids=["non-contrast", "corticomedullary", "nephrographic", "excretory"],
)
def test_reads_cortex_and_medulla(cortex, medulla, pelvis):
    vol = _abdomen(cortex, medulla, pelvis)
    got = read_kidneys(vol, 0, len(vol) - 1, PX)
    assert got is not None
    assert got.sections == 2 * len(vol)
    assert got.cortex_hu == pytest.approx(cortex, abs=8.0)
    # The excreted contrast in the collecting system is no medulla.
    assert got.medulla_hu == pytest.approx(medulla, abs=8.0)


def test_a_bowel_loop_beside_one_kidney_is_not_read():
    # On 2 of 8 slices the loop is the left side's only section (oral contrast, as bright
    # as the cortex); it lies 30 mm from the kidney's position on the other slices.
    vol = _abdomen(190.0, 60.0, loop=(380.0, (2, 5)))
    got = read_kidneys(vol, 0, len(vol) - 1, PX)
    assert got is not None
    assert got.sections == 2 * len(vol) - 2
    assert got.medulla_hu == pytest.approx(60.0, abs=8.0)


def test_no_reading_without_a_kidney_extent_or_kidneys():
    vol = _abdomen(190.0, 60.0)
    assert read_kidneys(vol, None, None, PX) is None
    empty = _abdomen(-100.0, -100.0)  # kidneys removed (fat in their place)
    assert read_kidneys(empty, 0, len(empty) - 1, PX) is None


def test_the_kidneys_decide_where_the_aorta_cannot():
    # 125 HU in the aorta: portal venous or delayed (their overlap in the cohort).
    alone = call_from_anatomy(aorta=125.0)
    assert max(alone.probs["PVP"], alone.probs["DP"]) < 0.85
    venous = call_from_anatomy(125.0, cortex=175.0, medulla=140.0)  # cortex still above
    delayed = call_from_anatomy(125.0, cortex=150.0, medulla=200.0)  # medulla above cortex
    assert (venous.call, delayed.call) == ("PVP", "DP")
    assert venous.probs["PVP"] > alone.probs["PVP"] and delayed.probs["DP"] > alone.probs["DP"]
    assert venous.structures == ("aorta", "cortex", "medulla")
    # A cortex without its medulla is not used; nothing read, no call.
    assert call_from_anatomy(125.0, cortex=150.0).probs == alone.probs
    assert call_from_anatomy().call == ""
    # Iodine reads brighter at lower voltage: 150 HU at 80 kVp is a later phase than at 120.
    hu120, hu80 = call_from_anatomy(aorta=150.0), call_from_anatomy(aorta=150.0, kvp=80.0)
    assert hu80.probs["DP"] > hu120.probs["DP"]


def test_kidneys_touching_an_enhanced_liver_and_spleen_are_found():
    # Portal venous: a 150 HU liver and spleen against kidneys whose cortex reads 240 HU
    # merge with them at ENHANCED_HU into blobs larger than any kidney (HCC_015's PVP
    # series: no kidneys found before the blobs were split at higher thresholds).
    vol = _abdomen(240.0, 150.0)
    for sl in vol:
        for row, col, ry, rx in ((104, 40, 30, 26), (108, 152, 24, 22)):  # liver, spleen
            sl[_ellipse(sl.shape, row, col, ry, rx) & (sl < 100.0)] = 150.0
    slab = find_slab(vol, 5.0, PX)
    assert slab.method == "kidney"
    assert (slab.landmarks["kidney_lo"], slab.landmarks["kidney_hi"]) == (0, len(vol) - 1)
    lm = slab.landmarks
    got = read_kidneys(vol, lm["kidney_lo"], lm["kidney_hi"], PX, slab.anatomy)
    assert got is not None and got.sections == 2 * len(vol)
    assert got.cortex_hu == pytest.approx(240.0, abs=8.0)
    assert got.medulla_hu == pytest.approx(150.0, abs=8.0)


def test_the_slab_finders_slices_are_reused_unchanged():
    vol = _abdomen(190.0, 60.0, None)
    slab = find_slab(vol, 5.0, PX)
    known = slab.anatomy
    assert known is not None and len(known.bodies) == len(known.spines) == len(vol)
    for z, sl in enumerate(vol):
        body, spine = slice_anatomy(np.asarray(sl, dtype=np.float32), PX)
        assert spine is not None and spine == known.spines[z]
        assert np.array_equal(body, known.bodies[z])
    n = len(vol) - 1
    fresh, reused = read_kidneys(vol, 0, n, PX), read_kidneys(vol, 0, n, PX, known)
    assert fresh is not None and reused is not None
    assert (reused.cortex_hu, reused.medulla_hu, reused.sections) == (
        fresh.cortex_hu,
        fresh.medulla_hu,
        fresh.sections,
    )
    # The reader takes the given spines, not its own: without them nothing is read.
    blind = SliceAnatomy(bodies=known.bodies, spines=(None,) * len(vol))
    assert read_kidneys(vol, 0, n, PX, blind) is None


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data/real not present")
def test_real_non_contrast_kidneys():
    from phasejax.data.cache import CacheSpec
    from phasejax.data.discover import discover, load_plan
    from phasejax.data.prepare import cache_volume

    series, _ = load_plan(discover([str(SHARED / "example_ct.nii.gz")]).plans[0])
    cached = cache_volume(series, CacheSpec(spacing_z=5.0, size=192))
    lm = cached.landmarks
    got = read_kidneys(cached.volume, lm["kidney_lo"], lm["kidney_hi"], cached.pixel_mm)
    again = read_kidneys(
        cached.volume, lm["kidney_lo"], lm["kidney_hi"], cached.pixel_mm, cached.anatomy
    )  # as predict reads it, with the slab finder's slices
    assert got is not None and again is not None
    assert (again.cortex_hu, again.medulla_hu) == (got.cortex_hu, got.medulla_hu)
    # Hand ROIs (experiments/real_roi.py): cortex 18, medulla 15 HU.
    assert got is not None and got.sections >= 10
    assert 5.0 <= got.cortex_hu <= 35.0 and 5.0 <= got.medulla_hu <= 35.0
    assert call_from_anatomy(cortex=got.cortex_hu, medulla=got.medulla_hu).call == "NC"
