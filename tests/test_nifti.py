"""NIfTI loading: canonical [Z, H, W] layout whatever the stored orientation, stable ids."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from phasejax.data.nifti import NiftiError, is_nifti, load_nifti, nifti_series_id
from phasejax.data.series import make_series_id


def _marked_volume() -> np.ndarray:
    """RAS-ordered data [i (R), j (A), k (S)] with one marker per direction."""
    data = np.full((6, 5, 4), 40.0, dtype=np.float32)
    data[0, 0, 0] = -1000  # left-posterior-inferior corner: air
    data[5, 2, 2] = 100  # rightmost column
    data[2, 4, 2] = 200  # most anterior row
    data[2, 2, 3] = 300  # most superior slice
    return data


def _save(data: np.ndarray, affine: np.ndarray, path: Path) -> Path:
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


RAS = np.diag([0.8, 0.9, 2.5, 1.0])


def _check_layout(series) -> None:
    hu = series.hu
    assert hu.shape == (4, 5, 6)  # [Z, H, W]
    assert series.spacing == pytest.approx((2.5, 0.9, 0.8))
    # Superior slice last; anterior row first; patient right in column 0.
    assert hu[3, 2, 3] == 300
    assert hu[2, 0, 3] == 200
    assert hu[2, 2, 0] == 100
    assert hu[0, 4, 5] == -1000  # left-posterior-inferior: last row, last column, slice 0


def test_ras_volume_is_laid_out_like_axial_dicom(tmp_path: Path) -> None:
    s = load_nifti(_save(_marked_volume(), RAS, tmp_path / "ras.nii.gz"))
    _check_layout(s)
    assert s.ordering == "nifti" and s.orientation == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    # Voxel [0, 0, 0] is the right-anterior-inferior corner: RAS (4, 3.6, 0) -> LPS.
    assert s.origin == pytest.approx((-4.0, -3.6, 0.0))


def test_las_and_permuted_storage_give_the_same_array(tmp_path: Path) -> None:
    data = _marked_volume()
    # LAS: the i axis stored flipped (radiological NIfTI).
    las_aff = RAS.copy()
    las_aff[0, 0] = -0.8
    las_aff[0, 3] = 0.8 * 5
    las = load_nifti(_save(data[::-1].copy(), las_aff, tmp_path / "las.nii"))
    # Axes stored as (k, j, i): S first.
    perm_aff = np.zeros((4, 4))
    perm_aff[0, 2], perm_aff[1, 1], perm_aff[2, 0], perm_aff[3, 3] = 0.8, 0.9, 2.5, 1
    perm = load_nifti(_save(np.transpose(data, (2, 1, 0)).copy(), perm_aff, tmp_path / "p.nii"))
    ras = load_nifti(_save(data, RAS, tmp_path / "ras.nii"))
    for s in (las, perm):
        _check_layout(s)
        np.testing.assert_array_equal(s.hu, ras.hu)
        assert s.origin == pytest.approx(ras.origin)


def test_scl_slope_is_applied_and_values_below_air_floored(tmp_path: Path) -> None:
    data = np.full((4, 4, 2), 100, dtype=np.int16)
    data[0, 0, 0] = -3000
    img = nib.Nifti1Image(data, RAS)
    img.header.set_slope_inter(0.5, -10)
    path = tmp_path / "scaled.nii"
    nib.save(img, path)
    s = load_nifti(path)
    assert s.hu.max() == 40.0  # 100 * 0.5 - 10
    assert s.hu.min() == -1024.0  # -1510 floored at air


def test_series_id_depends_on_name_and_content_not_folder(tmp_path: Path) -> None:
    a = _save(_marked_volume(), RAS, tmp_path / "ct.nii.gz")
    (tmp_path / "elsewhere").mkdir()
    b = Path(shutil.copy(a, tmp_path / "elsewhere" / "ct.nii.gz"))
    other = _marked_volume()
    other[1, 1, 1] = 7
    c = _save(other, RAS, tmp_path / "ct2.nii.gz")
    assert nifti_series_id(a) == nifti_series_id(b)
    assert nifti_series_id(c) != nifti_series_id(a)
    assert load_nifti(a).series_id == nifti_series_id(a)
    assert load_nifti(a).series_uid.startswith("nifti:ct.nii.gz:")


def test_bad_files_raise_nifti_error_naming_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"\x1f\x8b" + b"garbage" * 10)
    with pytest.raises(NiftiError, match="bad.nii.gz"):
        load_nifti(bad)
    four_d = _save(np.zeros((4, 4, 3, 2), np.float32), RAS, tmp_path / "t.nii")
    with pytest.raises(NiftiError, match="3-D"):
        load_nifti(four_d)
    assert is_nifti("x/ct.NII.GZ") and is_nifti("a.nii") and not is_nifti("a.dcm")


@pytest.mark.real
def test_real_example_ct_loads_as_one_volume(real_data: Path) -> None:
    path = real_data / "example_ct.nii.gz"
    s = load_nifti(path)
    assert s.shape == (112, 101, 122)
    assert s.spacing == (3.0, 3.0, 3.0)
    assert s.series_id == make_series_id(s.series_uid)
    assert s.problems == ()
    # Abdomen mid-slice: air outside; inside the body fat (~ -100) and unenhanced
    # soft tissue (~ 40) -- a wrong scl_slope or axis mix-up breaks these ranges.
    mid = s.hu[56]
    assert -1024 <= mid.min() <= -900
    p10, p90 = np.percentile(mid[mid > -500], [10, 90])
    assert -150 < p10 < -50 and 20 < p90 < 100
