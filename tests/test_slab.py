"""The liver-to-kidney slab (`phasejax.data.prepare.cache_volume` / `find_slab`) spans the
anatomy the model was trained on: liver dome to the kidneys' lower poles.

Real series (../shared/data/real and ../shared/data/validation, skipped when absent) are
checked against slices read by eye; synthetic ones against the cohort's organ masks.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from phasejax.cohort import generate as G
from phasejax.cohort.render import liver_kidney_range
from phasejax.data.cache import CacheSpec, load_mask, load_volume, read_manifest
from phasejax.data.discover import discover, load_plan
from phasejax.data.pipeline import select_slices
from phasejax.data.prepare import (
    CachedVolume,
    Slab,
    cache_volume,
    find_slab,
    to_cache_orientation,
)
from phasejax.data.series import Series

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SPEC = CacheSpec(spacing_z=5.0, size=192)  # the quick model's grid

# (kidneys' lowest slice, liver's highest slice) on the cached volume (5 mm slices,
# 192 px), read by eye from axial slices and the reformats of experiments/slab_check.py.
# 0: the kidneys continue below the scan; the last slice: the liver continues above it.
HAND_READ: dict[str, tuple[int, int]] = {
    "4.000000-Recon 2 LIVER 3 PHASE AP-06472": (0, 28),  # HCC_015 arterial, 31 slices
    "103.000000-LIVER 3 PHASE AP-44492": (0, 27),  # HCC_015 portal venous, 31
    "example_ct.nii.gz": (41, 66),  # abdomen-pelvis, non-contrast, 67
    "HCC_005_1999-01_PRE.nii.gz": (0, 43),  # 48
    "HCC_005_1999-01_acq1.nii.gz": (0, 43),  # 45
    "HCC_005_1999-01_acq3.nii.gz": (0, 41),  # 45
    "HCC_005_1999-04_acq1.nii.gz": (0, 40),  # 41
    "HCC_005_1999-04_acq2.nii.gz": (0, 37),  # 41
    "HCC_005_1999-04_acq3.nii.gz": (0, 36),  # 41
    "HCC_009_1998-02_PRE.nii.gz": (0, 36),  # 39 (10 mm slices, interpolated)
    "HCC_009_1998-02_acq1.nii.gz": (0, 31),  # 35
    "RadCTTACEomics_1720_AP.nii.gz": (13, 45),  # 52
    "RadCTTACEomics_1720_EQP.nii.gz": (12, 43),  # 52
    "RadCTTACEomics_2144_EQP.nii.gz": (9, 48),  # lower chest to iliac crests, 58
    "RadCTTACEomics_2144_PP.nii.gz": (49, 87),  # lower chest to pelvis, 98
}
KIDNEY_TOL = 1  # cached slices (5 mm): the kidney end as read by eye
DOME_TOL = 3  # the dome estimate runs 0-3 slices low (see the prepare module docstring)
MASK_TOL = 3  # 15 mm, synthetic series against their organ masks


def _name(source: str) -> str:
    return Path(source).name


@pytest.fixture(scope="module")
def real() -> dict[str, tuple[Series, CachedVolume]]:
    folders = [p for p in (SHARED / "real", SHARED / "validation") if p.is_dir()]
    if not folders:
        pytest.skip(f"real CT folders not found under {SHARED}")
    out = {}
    for plan in discover(folders).plans:
        series, _ = load_plan(plan)
        if series is not None and _name(plan.source) in HAND_READ:
            out[_name(plan.source)] = (series, cache_volume(series, SPEC))
    return out


def _real(real: dict[str, tuple[Series, CachedVolume]], name: str) -> tuple[Series, CachedVolume]:
    if name not in real:
        pytest.skip(f"{name} not found under {SHARED}")
    return real[name]


@pytest.mark.real
@pytest.mark.parametrize("name", sorted(HAND_READ))
def test_real_slab_spans_liver_dome_to_kidney_lower_poles(
    real: dict[str, tuple[Series, CachedVolume]], name: str
) -> None:
    _, c = _real(real, name)
    kidney_lo, dome = HAND_READ[name]
    assert abs(c.z_lo - kidney_lo) <= KIDNEY_TOL, (c.z_lo, c.landmarks)
    assert abs((c.z_hi - 1) - dome) <= DOME_TOL, (c.z_hi, c.landmarks)
    if kidney_lo > 0:  # the lower poles are in the scan: found, not assumed
        assert c.z_method == "lung+kidney"
    picked = select_slices(c.z_lo, c.z_hi, c.volume.shape[0], 5, "even")
    assert kidney_lo - KIDNEY_TOL <= picked.min() and picked.max() <= dome


@pytest.mark.real
def test_real_scan_starting_below_the_diaphragm(
    real: dict[str, tuple[Series, CachedVolume]],
) -> None:
    for name in ("RadCTTACEomics_1720_AP.nii.gz", "RadCTTACEomics_2144_PP.nii.gz"):
        _, c = _real(real, name)
        base = c.landmarks["lung_base"]
        assert base is not None
        top = base - 1  # keep slices below the lung bases only
        s = find_slab(c.volume[:top], c.spacing_z, c.pixel_mm)
        assert s.method == "kidney" and s.landmarks["lung_base"] is None
        assert abs(s.z_lo - HAND_READ[name][0]) <= KIDNEY_TOL and s.z_hi == top


@pytest.mark.real
def test_real_chest_abdomen_pelvis_and_upper_abdomen_only(
    real: dict[str, tuple[Series, CachedVolume]],
) -> None:
    name = "RadCTTACEomics_2144_PP.nii.gz"  # lower chest to pelvis, 98 x 5 mm
    _, c = _real(real, name)
    kidney_lo, dome = HAND_READ[name]
    assert c.z_method == "lung+kidney" and abs(c.z_lo - kidney_lo) <= KIDNEY_TOL
    # Started at the neck instead (no lung in the top slices): the same slab.
    padded = np.concatenate([c.volume, _neck(c.volume[-1], 12)])
    assert _slab(padded, c) == (c.z_lo, c.z_hi, c.z_method)
    # Only the upper abdomen (cut at mid-kidney): from the first slice to the dome.
    cut = 60
    s = find_slab(c.volume[cut:], c.spacing_z, c.pixel_mm)
    assert s.z_lo == 0 and abs((s.z_hi - 1) - (dome - cut)) <= DOME_TOL


@pytest.mark.real
def test_real_coronal_and_sagittal_series_give_the_axial_slab(
    real: dict[str, tuple[Series, CachedVolume]],
) -> None:
    series, c = _real(real, "RadCTTACEomics_1720_AP.nii.gz")
    for other in (_coronal(series), _sagittal(series)):
        o = cache_volume(other, SPEC)
        assert abs(o.z_lo - c.z_lo) <= 1 and abs(o.z_hi - c.z_hi) <= 1
        assert o.volume.shape == c.volume.shape


# --------------------------------------------------------------------------- synthetic


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny cohort rendered on the quick model's 192 px grid (with organ masks)."""
    out = tmp_path_factory.mktemp("slab") / "tiny"
    G.generate("tiny", out, fmt="cache", cache_spec=SPEC, progress=False)
    return out / "cache"


@dataclasses.dataclass(frozen=True)
class Synthetic:
    name: str
    vol: np.ndarray  # cached HU
    pixel_mm: float
    mask: tuple[int, int]  # [kidneys' lowest slice, liver's highest + 1) from the masks
    slab: Slab  # found on the whole volume


@pytest.fixture(scope="module")
def synthetic(cohort: Path) -> list[Synthetic]:
    out = []
    for row in read_manifest(cohort):
        sid = row["series_id"]
        mask = load_mask(cohort, sid)
        assert mask is not None
        vol = np.asarray(load_volume(cohort, sid, mmap=False))
        px = float(row["spacing_xy"])
        name = f"{row['patient_id']} {row['phase']}"
        slab = find_slab(vol, SPEC.spacing_z, px)
        out.append(Synthetic(name, vol, px, liver_kidney_range(mask), slab))
    return out


def test_synthetic_slab_matches_the_organ_masks(synthetic: list[Synthetic]) -> None:
    misses = [
        (x.name, x.slab, x.mask)
        for x in synthetic
        if abs(x.slab.z_lo - x.mask[0]) > MASK_TOL or abs(x.slab.z_hi - x.mask[1]) > MASK_TOL
    ]
    # Measured 1 of 36: an early-arterial series whose faint cortex hides the kidneys.
    assert len(misses) <= len(synthetic) // 10, misses


def test_synthetic_scan_starting_below_the_diaphragm_or_ending_mid_kidney(
    synthetic: list[Synthetic],
) -> None:
    # One series per exam (its phases share the anatomy).
    exams = {x.name.split()[0]: x for x in synthetic if x.slab.method == "lung+kidney"}
    assert len(exams) >= 10
    for x in exams.values():
        kidney_lo, liver_hi = x.mask
        base = x.slab.landmarks["lung_base"]
        assert base is not None
        top = base - 1  # keep slices below the lung bases only
        s = find_slab(x.vol[:top], SPEC.spacing_z, x.pixel_mm)
        assert s.method == "kidney" and s.z_hi == top, x.name
        assert abs(s.z_lo - kidney_lo) <= MASK_TOL, x.name
        # Cut 4 slices above the kidneys' lower poles: the slab starts at the bottom.
        cut = kidney_lo + 4
        s = find_slab(x.vol[cut:], SPEC.spacing_z, x.pixel_mm)
        assert s.z_lo <= KIDNEY_TOL and abs(s.z_hi - (liver_hi - cut)) <= MASK_TOL, x.name


def test_synthetic_chest_abdomen_pelvis_gets_the_same_slab(synthetic: list[Synthetic]) -> None:
    x = next(x for x in synthetic if x.slab.method == "lung+kidney")
    # More chest above (the top slice repeated: lung bases), then the neck (no lung),
    # and pelvis-like slices below (the lowest slice repeated): same anatomy found.
    chest = np.repeat(x.vol[-1:], 16, axis=0)
    pelvis = np.repeat(x.vol[:1], 20, axis=0)
    cap = np.concatenate([pelvis, x.vol, chest, _neck(x.vol[-1], 10)])
    s = find_slab(cap, SPEC.spacing_z, x.pixel_mm)
    got = (s.z_lo - len(pelvis), s.z_hi - len(pelvis), s.method)
    assert got == (x.slab.z_lo, x.slab.z_hi, x.slab.method), x.name


def test_coronal_and_sagittal_series_are_reoriented_to_axial(synthetic: list[Synthetic]) -> None:
    x = next(x for x in synthetic if x.slab.method == "lung+kidney")
    axial = Series(
        series_id="ax", patient_id="p", hu=x.vol.astype(np.float32),
        spacing=(SPEC.spacing_z, x.pixel_mm, x.pixel_mm),
    )  # fmt: skip
    ref = cache_volume(axial, SPEC)
    assert (ref.z_lo, ref.z_hi, ref.z_method) == (x.slab.z_lo, x.slab.z_hi, x.slab.method)
    for other in (_coronal(axial), _sagittal(axial), _head_first(axial)):
        o = cache_volume(other, SPEC)
        np.testing.assert_array_equal(o.volume, ref.volume)
        assert (o.z_lo, o.z_hi, o.z_method) == (ref.z_lo, ref.z_hi, ref.z_method)


def test_to_cache_orientation_maps_lps_axes() -> None:
    hu = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    sp = (5.0, 0.7, 0.8)
    same, s = to_cache_orientation(hu, sp, (1, 0, 0, 0, 1, 0))
    assert np.array_equal(same, hu) and s == sp
    # Rows posterior -> anterior, slices head -> feet (normal -z): both axes flipped.
    flipped, s = to_cache_orientation(hu, sp, (1, 0, 0, 0, -1, 0))
    assert np.array_equal(flipped, hu[::-1, ::-1]) and s == sp
    # Coronal, rows head -> feet, slices anterior -> posterior: [S, A, R] axes -> [I.., P, L].
    cor, s = to_cache_orientation(hu, sp, (1, 0, 0, 0, 0, -1))
    assert np.array_equal(cor, hu.transpose(1, 0, 2)[::-1]) and s == (0.7, 5.0, 0.8)


# --------------------------------------------------------------------------- helpers


def _slab(vol: np.ndarray, c: CachedVolume) -> tuple[int, int, str]:
    s: Slab = find_slab(vol, c.spacing_z, c.pixel_mm)
    return s.z_lo, s.z_hi, s.method


def _neck(top: np.ndarray, n: int) -> np.ndarray:
    """`n` slices like `top` with the air inside the body filled with soft tissue: no
    lung, as at the neck above the apices."""
    sl = top.copy()
    from scipy import ndimage

    body = ndimage.binary_fill_holes(sl > -300)
    sl[body & (sl < -300)] = 40
    return np.repeat(sl[None], n, axis=0)


def _coronal(s: Series) -> Series:
    """The axial series re-sliced as a coronal stack: slices anterior -> posterior (normal
    +y), rows head -> feet (column cosine -z), columns patient right -> left."""
    hu = s.hu[::-1].transpose(1, 0, 2)
    sz, sy, sx = s.spacing
    return dataclasses.replace(s, hu=hu, spacing=(sy, sz, sx), orientation=(1, 0, 0, 0, 0, -1))


def _sagittal(s: Series) -> Series:
    """Re-sliced as a sagittal stack: row cosine +y (columns anterior -> posterior),
    column cosine -z (rows head -> feet), normal -x (slices patient left -> right)."""
    hu = s.hu[::-1, :, ::-1].transpose(2, 0, 1)
    sz, sy, sx = s.spacing
    return dataclasses.replace(s, hu=hu, spacing=(sx, sz, sy), orientation=(0, 1, 0, 0, 0, -1))


def _head_first(s: Series) -> Series:
    """Axial, slices head -> feet and rows posterior -> anterior (column cosine -y)."""
    return dataclasses.replace(s, hu=s.hu[::-1, ::-1], orientation=(1, 0, 0, 0, -1, 0))
