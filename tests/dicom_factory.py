"""Synthetic DICOM for ingestion tests, written with pydicom Dataset + FileMetaDataset.

Every writer takes STORED pixel values (what goes into PixelData) so that a test
can state the HU it expects from the rescale it chose: HU = stored * slope +
intercept. Files are conformant enough for pydicom (and for phasejax) but carry
no real identifiers: PatientID like "SYN001", no names or birth dates.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    CTImageStorage,
    EnhancedCTImageStorage,
    ExplicitVRLittleEndian,
    generate_uid,
)

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
CORONAL = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)
UID_ROOT = "1.2.826.0.1.3680043.10.1234."  # test-only prefix


def uid(*entropy: Any) -> str:
    """A deterministic UID from the given values (same values -> same UID)."""
    return generate_uid(prefix=UID_ROOT, entropy_srcs=[str(e) for e in entropy])


def _pixel_module(
    ds: Dataset,
    stored: np.ndarray,
    *,
    signed: bool,
    bits_stored: int,
    bits_allocated: int = 16,
) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = int(stored.shape[-2]), int(stored.shape[-1])
    ds.BitsAllocated = bits_allocated
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    arr = np.asarray(stored)
    if signed:
        raw = arr.astype(np.int64)
        if bits_stored < bits_allocated:
            # Two's complement in BitsStored bits, unused high bits left zero: a reader
            # must sign-extend, which is exactly what this exercises.
            raw = raw & ((1 << bits_stored) - 1)
        data = raw.astype(np.uint16 if bits_allocated == 16 else np.uint8)
    else:
        if arr.min() < 0 or arr.max() >= (1 << bits_stored):
            raise ValueError(f"stored values out of range for unsigned {bits_stored}-bit")
        data = arr.astype(np.uint16 if bits_allocated == 16 else np.uint8)
    ds.PixelData = data.astype("<u2" if bits_allocated == 16 else "u1").tobytes()


def ct_dataset(
    stored: np.ndarray,
    *,
    series_uid: str,
    study_uid: str = "",
    patient_id: str = "SYN001",
    position: Sequence[float] | None = (0.0, 0.0, 0.0),
    orientation: Sequence[float] | None = AXIAL,
    pixel_spacing: Sequence[float] | None = (0.7, 0.7),
    slope: float | None = 1.0,
    intercept: float | None = -1024.0,
    signed: bool = False,
    bits_stored: int = 12,
    instance_number: int | None = 1,
    slice_location: float | None = None,
    acquisition_number: int | None = None,
    acquisition_time: str | None = None,
    content_time: str | None = None,
    series_description: str = "ABDOMEN",
    image_type: Sequence[str] = ("ORIGINAL", "PRIMARY", "AXIAL"),
    padding_value: int | None = None,
    padding_range_limit: int | None = None,
    modality: str = "CT",
    sop_class: str = CTImageStorage,
    slice_thickness: float = 2.5,
    extra: dict[str, Any] | None = None,
) -> Dataset:
    """One single-frame CT Image Storage dataset (file meta included)."""
    ds = Dataset()
    sop_uid = uid(
        series_uid,
        position,
        instance_number,
        acquisition_number,
        acquisition_time,
        content_time,
        sorted((extra or {}).items()),
    )
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.Modality = modality
    ds.ImageType = list(image_type)
    ds.PatientID = patient_id
    ds.StudyInstanceUID = study_uid or uid("study", patient_id)
    ds.SeriesInstanceUID = series_uid
    ds.SeriesDescription = series_description
    ds.KVP = "120"
    ds.Manufacturer = "SYNTHETIC"
    ds.SliceThickness = slice_thickness
    if instance_number is not None:
        ds.InstanceNumber = instance_number
    if position is not None:
        ds.ImagePositionPatient = [float(v) for v in position]
    if orientation is not None:
        ds.ImageOrientationPatient = [float(v) for v in orientation]
    if pixel_spacing is not None:
        ds.PixelSpacing = [float(v) for v in pixel_spacing]
    if slice_location is not None:
        ds.SliceLocation = slice_location
    elif position is not None:
        ds.SliceLocation = float(position[2])
    if acquisition_number is not None:
        ds.AcquisitionNumber = acquisition_number
    if acquisition_time is not None:
        ds.AcquisitionTime = acquisition_time
    if content_time is not None:
        ds.ContentTime = content_time
    if slope is not None:
        ds.RescaleSlope = slope
    if intercept is not None:
        ds.RescaleIntercept = intercept
    _pixel_module(ds, stored, signed=signed, bits_stored=bits_stored)
    # Written with VR US as given (explicit VR), even for signed pixels: real exports
    # do this (HCC-TACE-Seg: US 63536 meaning int16 -2000), and readers must cope.
    if padding_value is not None:
        ds.add_new(0x00280120, "US", padding_value)
    if padding_range_limit is not None:
        ds.add_new(0x00280121, "US", padding_range_limit)
    for k, v in (extra or {}).items():
        setattr(ds, k, v)
    return ds


def save(ds: Dataset, path: str | Path, compress: str | None = None) -> Path:
    """Write a dataset; `compress` is a transfer syntax UID pydicom can encode
    (RLELossless natively, JPEG2000Lossless with pylibjpeg-openjpeg)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress is not None:
        ds.compress(compress)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_series(
    folder: str | Path,
    stored: np.ndarray,
    *,
    series_uid: str,
    z0: float = 0.0,
    dz: float = 2.5,
    positions: Sequence[Sequence[float]] | None = None,
    shuffle: bool = True,
    seed: int = 0,
    compress: str | None = None,
    per_slice: Sequence[dict[str, Any]] | None = None,
    prefix: str = "",
    **kw: Any,
) -> list[Path]:
    """Write stored[k] as slice k at z = z0 + k * dz (or `positions[k]`).

    File names are random and InstanceNumbers follow a shuffled order when
    `shuffle`, so a loader that trusts either gets the order wrong.
    """
    folder = Path(folder)
    n = stored.shape[0]
    rng = random.Random(seed)
    inst = list(range(1, n + 1))
    if shuffle:
        rng.shuffle(inst)
    paths = []
    for k in range(n):
        pos = positions[k] if positions is not None else (-100.0, -120.0, z0 + k * dz)
        args = {**kw, **(per_slice[k] if per_slice else {})}
        ds = ct_dataset(
            stored[k], series_uid=series_uid, position=pos, instance_number=inst[k], **args
        )
        name = f"{prefix}{rng.getrandbits(40):010x}.dcm" if shuffle else f"{prefix}{k:04d}.dcm"
        paths.append(save(ds, folder / name, compress=compress))
    return paths


def enhanced_ct(
    path: str | Path,
    stored: np.ndarray,
    *,
    series_uid: str,
    positions: Sequence[Sequence[float]],
    intercepts: Sequence[float],
    slope: float = 1.0,
    orientation: Sequence[float] = AXIAL,
    pixel_spacing: Sequence[float] = (0.8, 0.8),
    patient_id: str = "SYN001",
    signed: bool = True,
    bits_stored: int = 16,
) -> Path:
    """An Enhanced CT Image Storage object: one file, frames [F, H, W], per-frame
    position and rescale (Pixel Value Transformation), shared orientation/spacing."""
    n = stored.shape[0]
    ds = Dataset()
    sop_uid = uid(series_uid, "enhanced")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = EnhancedCTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.SOPClassUID = EnhancedCTImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.Modality = "CT"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    ds.PatientID = patient_id
    ds.StudyInstanceUID = uid("study", patient_id)
    ds.SeriesInstanceUID = series_uid
    ds.SeriesDescription = "ENHANCED"
    ds.NumberOfFrames = n
    ds.InstanceNumber = 1
    shared = Dataset()
    po = Dataset()
    po.ImageOrientationPatient = [float(v) for v in orientation]
    pm = Dataset()
    pm.PixelSpacing = [float(v) for v in pixel_spacing]
    pm.SliceThickness = 1.0
    xr = Dataset()
    xr.KVP = "100"
    shared.PlaneOrientationSequence = DicomSequence([po])
    shared.PixelMeasuresSequence = DicomSequence([pm])
    shared.CTXRayDetailsSequence = DicomSequence([xr])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    frames = []
    for k in range(n):
        item = Dataset()
        pp = Dataset()
        pp.ImagePositionPatient = [float(v) for v in positions[k]]
        pvt = Dataset()
        pvt.RescaleIntercept = intercepts[k]
        pvt.RescaleSlope = slope
        pvt.RescaleType = "HU"
        fc = Dataset()
        fc.FrameAcquisitionNumber = 1
        item.PlanePositionSequence = DicomSequence([pp])
        item.PixelValueTransformationSequence = DicomSequence([pvt])
        item.FrameContentSequence = DicomSequence([fc])
        frames.append(item)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(frames)
    _pixel_module(ds, stored, signed=signed, bits_stored=bits_stored)
    return save(ds, path)


def body_phantom(rows: int = 32, cols: int = 32, body_hu: float = 40.0) -> np.ndarray:
    """HU image: air (-1000) outside a centred ellipse of soft tissue (`body_hu`)."""
    yy, xx = np.mgrid[:rows, :cols]
    inside = ((yy - rows / 2 + 0.5) / (rows * 0.4)) ** 2 + (
        (xx - cols / 2 + 0.5) / (cols * 0.45)
    ) ** 2 <= 1
    return np.where(inside, body_hu, -1000.0).astype(np.float32)
