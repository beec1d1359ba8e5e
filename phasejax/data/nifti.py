"""NIfTI CT volumes (.nii / .nii.gz) as Series, in the same layout as DICOM.

Orientation. The image is first reoriented with nibabel's `as_closest_canonical`
(voxel axes i, j, k pointing to patient Right, Anterior, Superior: RAS+), then laid
out as [Z, H, W] the way a standard axial DICOM series is after
`phasejax.data.dicom` sorts it (ImageOrientationPatient 1,0,0,0,1,0):

- Z = superior axis, index 0 most inferior (ascending along the slice normal);
- H = rows from anterior (top of the screen) to posterior;
- W = columns from the patient's right (screen left) to the patient's left
  (radiological display convention).

So `Series.orientation` is (1, 0, 0, 0, 1, 0) and `Series.origin` is the LPS
position of voxel [0, 0, 0], exactly as for DICOM, and a model sees the same
picture from either format. A NIfTI volume is assumed to hold HU already (after
its scl_slope/scl_inter), floored at -1024 HU like DICOM (values below air are
outside-FOV markers, not tissue); `no_air_voxels` is reported when nothing is
below -500 HU.

Series id: `make_series_id("nifti:" + file name + ":" + first 16 hex of the
SHA-1 of the file's bytes)`. Depending on the bytes and the name (not the folder)
keeps the id stable across machines and mounts.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from phasejax.data.series import Series, make_series_id
from phasejax.hu import AIR_THRESHOLD_HU, HU_MIN

NIFTI_SUFFIXES = (".nii", ".nii.gz")


class NiftiError(RuntimeError):
    pass


def is_nifti(path: str | os.PathLike[str]) -> bool:
    name = os.path.basename(str(path)).lower()
    return name.endswith(NIFTI_SUFFIXES)


def content_hash(path: str | os.PathLike[str], n_hex: int = 16) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:n_hex]


def nifti_series_uid(path: str | os.PathLike[str]) -> str:
    """The pseudo-UID that names a NIfTI file in series ids: name + content hash."""
    return f"nifti:{os.path.basename(str(path))}:{content_hash(path)}"


def nifti_series_id(path: str | os.PathLike[str]) -> str:
    return make_series_id(nifti_series_uid(path))


def load_nifti(path: str | os.PathLike[str], series_uid: str | None = None) -> Series:
    """Load a NIfTI CT as an HU Series [Z, H, W] (layout in the module docstring).

    Raises NiftiError naming the file and the reason.
    """
    import nibabel as nib

    path = str(path)
    try:
        img = nib.load(path)
    except Exception as e:  # noqa: BLE001 - nibabel raises many types for bad files
        raise NiftiError(f"{path}: cannot read NIfTI ({type(e).__name__}: {e})") from e
    if len(img.shape) < 3 or (len(img.shape) > 3 and any(s > 1 for s in img.shape[3:])):
        raise NiftiError(f"{path}: expected a 3-D volume, got shape {img.shape}")
    if len(img.shape) > 3:
        img = nib.funcs.squeeze_image(img)
    try:
        canon = nib.as_closest_canonical(img)
        data = np.asarray(canon.get_fdata(dtype=np.float32))
    except Exception as e:  # noqa: BLE001 - truncated gzip, bad header...
        raise NiftiError(f"{path}: cannot decode voxels ({type(e).__name__}: {e})") from e
    zooms = tuple(float(z) for z in canon.header.get_zooms()[:3])
    # RAS (i, j, k) -> [k, j, i], then flip j (want anterior -> posterior rows) and
    # i (want right -> left columns).
    vol = np.ascontiguousarray(np.transpose(data, (2, 1, 0))[:, ::-1, ::-1], dtype=np.float32)
    np.maximum(vol, HU_MIN, out=vol)
    nk, nj, ni = vol.shape
    # Voxel [0, 0, 0] of vol is canonical voxel (ni-1, nj-1, 0) (i and j were flipped):
    # its RAS position, then RAS -> LPS (negate x and y).
    ras = canon.affine @ np.array([ni - 1, nj - 1, 0, 1.0])
    origin = (float(-ras[0]), float(-ras[1]), float(ras[2]))
    problems: list[str] = []
    if vol.size and not np.any(vol[:, ::4, ::4] < AIR_THRESHOLD_HU):
        problems.append("no_air_voxels")
    if nk == 1:
        problems.append("single_slice")
    uid = series_uid or nifti_series_uid(path)
    return Series(
        series_id=make_series_id(uid),
        patient_id="",
        hu=vol,
        spacing=(zooms[2], zooms[1], zooms[0]),
        origin=origin,
        orientation=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
        source=str(Path(path).resolve()),
        files=(path,),
        series_uid=uid,
        ordering="nifti",
        header={},
        problems=tuple(problems),
    )
