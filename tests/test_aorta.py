"""The anatomy-based aorta reading and the phase it points to."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from phasejax.cohort.anatomy_reference import call_from_anatomy
from phasejax.data.aorta import read_aorta
from phasejax.data.prepare import SliceAnatomy, find_slab

PX = 2.0  # mm per pixel
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"


def _disc(shape, row, col, radius_px):
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    return (yy - row) ** 2 + (xx - col) ** 2 <= radius_px**2


def _abdomen(aorta_hu: float, ivc_hu: float, seed: int = 0, slices: int = 6) -> np.ndarray:
    """Slices of a fat-filled body with a vertebra (cortex 700 HU around 150 HU cancellous
    bone, a spinous process behind), the aorta 38 mm in front of the vertebral body's
    centre and 12 mm to the patient's left (image right), the IVC 30 mm to the right."""
    rng = np.random.default_rng(seed)
    shape = (192, 192)
    vol = []
    for _ in range(slices):
        sl = np.full(shape, -1000.0, np.float32)
        yy, xx = np.ogrid[: shape[0], : shape[1]]
        body = ((yy - 96) / 70.0) ** 2 + ((xx - 96) / 85.0) ** 2 <= 1.0
        sl[body] = -100.0
        sl[_disc(shape, 130, 96, 9.0)] = 700.0
        sl[_disc(shape, 130, 96, 7.5)] = 150.0
        sl[139:160, 94:99] = 700.0
        sl[_disc(shape, 130 - 19, 96 + 6, 5.5)] = aorta_hu
        sl[_disc(shape, 130 - 17.5, 96 - 15, 5.0)] = ivc_hu
        vol.append(sl + rng.normal(0.0, 8.0, shape).astype(np.float32))
    return np.stack(vol)


@pytest.mark.parametrize(
    ("aorta_hu", "ivc_hu"),
    [(40.0, 40.0), (350.0, 60.0), (150.0, 160.0), (95.0, 100.0)],
    ids=["non-contrast", "arterial", "portal-venous", "delayed"],
)
def test_reads_the_aorta_not_the_vertebra_or_the_ivc(aorta_hu, ivc_hu):
    vol = _abdomen(aorta_hu, ivc_hu)
    got = read_aorta(vol, 0, len(vol), PX)
    assert got is not None
    # Unenhanced, the cancellous bone (150 HU) is the brightest homogeneous tissue near
    # the aorta; in the venous phases the IVC is brighter than the aorta.
    assert got.hu == pytest.approx(aorta_hu, abs=6.0)
    assert got.slices >= len(vol) - 2  # unenhanced, the brightest spot wanders in the lumen
    anterior, left = got.offset_mm
    assert 25.0 <= anterior <= 50.0 and 0.0 <= left <= 25.0


def test_the_slab_finders_slices_give_the_same_reading():
    vol = _abdomen(350.0, 60.0)
    known = find_slab(vol, 5.0, PX).anatomy
    assert known is not None
    assert read_aorta(vol, 0, len(vol), PX, known) == read_aorta(vol, 0, len(vol), PX)
    blind = SliceAnatomy(bodies=known.bodies, spines=(None,) * len(vol))
    assert read_aorta(vol, 0, len(vol), PX, blind) is None


def test_no_reading_without_a_vertebra():
    # Unenhanced, so that nothing else is dense enough to pass for a vertebra (an enhanced
    # aorta would be taken for one, and the window would then lie in front of it).
    vol = _abdomen(40.0, 40.0)
    vol[vol > 120] = -100.0  # no bone: no vertebral body to start from
    assert read_aorta(vol, 0, len(vol), PX) is None


@pytest.mark.parametrize(
    ("hu", "call"), [(38.0, "NC"), (330.0, "AP"), (170.0, "PVP"), (85.0, "DP")]
)
def test_call_from_the_aorta_follows_the_cohort_physiology(hu, call):
    got = call_from_anatomy(aorta=hu)
    assert got.call == call
    assert sum(got.probs.values()) == pytest.approx(1.0)
    assert got.probs[call] > 0.6


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data/real not present")
@pytest.mark.parametrize(
    ("rel", "lo", "hi"),
    [
        ("example_ct.nii.gz", 30.0, 75.0),  # non-contrast, hand ROI 53 HU
        # early arterial, hand ROI 541 HU (experiments/real_roi.py)
        ("HCC_015/11-01-1998-NA-CT ABDPEL WWO LIVER-64482/4.000000-Recon 2 LIVER 3 PHASE AP-06472", 480.0, 600.0),
    ],
    ids=["nc", "eap"],
)  # fmt: skip
def test_real_series_aorta(rel, lo, hi):
    from phasejax.data.cache import CacheSpec
    from phasejax.data.discover import discover, load_plan
    from phasejax.data.prepare import cache_volume

    plans = discover([str(SHARED / rel)]).plans
    assert len(plans) == 1
    series, _ = load_plan(plans[0])
    cached = cache_volume(series, CacheSpec(spacing_z=5.0, size=192))
    got = read_aorta(cached.volume, cached.z_lo, cached.z_hi, cached.pixel_mm)
    assert got is not None and lo <= got.hu <= hi
    assert (
        read_aorta(cached.volume, cached.z_lo, cached.z_hi, cached.pixel_mm, cached.anatomy) == got
    )
