"""Standard-conformant CT Image Storage series from an HU volume (pydicom, no jax).

One file per slice, Explicit VR Little Endian, uncompressed. Everything that
varies between real sites is a field of `SeriesMeta`: the vendor's pixel encoding
(RescaleIntercept -1024 with unsigned pixels, or 0 with signed pixels; BitsStored
12 or 16), which timing and contrast tags are filled, and the SeriesDescription.
A site that exports two phases under one SeriesInstanceUID calls `write_series`
twice with the same `series_uid`, different `acquisition_number`s and a
continuing `instance_start`.

UIDs are deterministic: `make_uid(*parts)` hashes its parts under pydicom's UID
root (the documented way to derive stable UIDs without an own registered root),
so the same cohort seed always yields the same UIDs and the same bytes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_ROOT_UID, CTImageStorage, ExplicitVRLittleEndian, generate_uid

from phasejax import atomic
from phasejax.hu import HU_MAX, HU_MIN

UID_NAMESPACE = "phasejax-synthetic-cohort"
# A fixed implementation UID/version so that file meta never carries the pydicom
# version (which would change bytes between environments).
IMPLEMENTATION_UID = generate_uid(PYDICOM_ROOT_UID, [UID_NAMESPACE, "implementation"])
IMPLEMENTATION_VERSION = "PHASEJAX_0_1"


class DicomWriteError(ValueError):
    pass


def make_uid(*parts: object) -> str:
    """A valid, deterministic DICOM UID (<= 64 chars) from any hashable description."""
    return str(generate_uid(PYDICOM_ROOT_UID, [UID_NAMESPACE, *map(str, parts)]))


@dataclass(frozen=True, kw_only=True)
class PixelEncoding:
    """How a vendor stores HU: HU = stored * 1 + rescale_intercept."""

    rescale_intercept: float = -1024.0
    signed: bool = False
    bits_stored: int = 12

    def stored_range(self) -> tuple[int, int]:
        if self.signed:
            return -(2 ** (self.bits_stored - 1)), 2 ** (self.bits_stored - 1) - 1
        return 0, 2**self.bits_stored - 1

    def validate(self) -> None:
        if self.bits_stored not in (12, 16):
            raise DicomWriteError(f"BitsStored must be 12 or 16, got {self.bits_stored}")
        lo, hi = self.stored_range()
        if lo + self.rescale_intercept > -1000 or hi + self.rescale_intercept < 1000:
            # e.g. intercept 0 with unsigned pixels cannot hold air (-1000 HU): a real
            # scanner never exports that, and writing it would silently clip the body.
            raise DicomWriteError(
                f"encoding intercept={self.rescale_intercept:g} signed={self.signed} "
                f"bits={self.bits_stored} cannot represent -1000..1000 HU"
            )

    def encode(self, hu: np.ndarray) -> np.ndarray:
        """HU float -> stored integers (rounded, clipped to the representable range)."""
        self.validate()
        lo, hi = self.stored_range()
        lo = max(lo, int(np.ceil(HU_MIN - self.rescale_intercept)))
        hi = min(hi, int(np.floor(HU_MAX - self.rescale_intercept)))
        # float64: in float32, x + 1024 can round across a .5 boundary and shift HU by 1.
        stored = np.clip(np.rint(np.asarray(hu, np.float64) - self.rescale_intercept), lo, hi)
        return stored.astype(np.int16 if self.signed else np.uint16)

    def decode(self, stored: np.ndarray) -> np.ndarray:
        return stored.astype(np.float32) + np.float32(self.rescale_intercept)


@dataclass(frozen=True, kw_only=True)
class SeriesMeta:
    """Header content of one series. None / "" means the tag is left out / empty."""

    # patient (synthetic identifiers only: no names, no birth dates)
    patient_id: str
    patient_name: str
    patient_sex: str = "O"
    patient_age_years: int | None = None
    patient_weight_kg: float | None = None
    # identifiers
    study_uid: str
    series_uid: str
    frame_of_reference_uid: str
    study_id: str = "1"
    accession_number: str = ""
    series_number: int = 1
    acquisition_number: int | None = 1
    instance_start: int = 1
    # timing: all datetimes are wall-clock at the scanner
    study_datetime: dt.datetime
    series_datetime: dt.datetime
    acquisition_datetime: dt.datetime | None  # None: tag missing (a real export habit)
    content_datetime: dt.datetime | None
    contrast_start: dt.datetime | None  # ContrastBolusStartTime = injection start
    contrast_agent: str = ""  # "" = empty (type 2) even if contrast was given
    contrast_route: str = ""
    contrast_volume_ml: float | None = None
    # description
    series_description: str = ""
    protocol_name: str = ""
    study_description: str = "CT ABDOMEN"
    body_part: str = "ABDOMEN"
    # equipment
    manufacturer: str = ""
    model_name: str = ""
    station_name: str = ""
    institution_name: str = ""
    software_versions: str = ""
    kvp: float = 120.0
    tube_current_ma: int | None = None
    convolution_kernel: str = ""
    slice_thickness_mm: float = 5.0
    reconstruction_diameter_mm: float | None = None
    encoding: PixelEncoding = PixelEncoding()
    window_center: float = 40.0
    window_width: float = 400.0
    image_comments: str = "phasejax synthetic phantom (not a patient)"


def _da(t: dt.datetime) -> str:
    return t.strftime("%Y%m%d")


def _tm(t: dt.datetime) -> str:
    return t.strftime("%H%M%S.%f")[:9]  # HHMMSS.ff: centiseconds, as many scanners write


def _ds_num(x: float) -> str:
    """DS string (<= 16 chars) that round-trips the float to well below a micrometre."""
    s = f"{x:.6f}".rstrip("0").rstrip(".")
    return s if s not in ("-0", "") else "0"


def _base_dataset(meta: SeriesMeta, rows: int, cols: int, pixel_spacing: tuple[float, float]):
    meta.encoding.validate()
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.StudyDate = _da(meta.study_datetime)
    ds.StudyTime = _tm(meta.study_datetime)
    ds.SeriesDate = _da(meta.series_datetime)
    ds.SeriesTime = _tm(meta.series_datetime)
    if meta.acquisition_datetime is not None:
        ds.AcquisitionDate = _da(meta.acquisition_datetime)
        ds.AcquisitionTime = _tm(meta.acquisition_datetime)
    if meta.content_datetime is not None:
        ds.ContentDate = _da(meta.content_datetime)
        ds.ContentTime = _tm(meta.content_datetime)
    ds.AccessionNumber = meta.accession_number
    ds.Modality = "CT"
    ds.Manufacturer = meta.manufacturer
    if meta.institution_name:
        ds.InstitutionName = meta.institution_name
    ds.ReferringPhysicianName = ""
    if meta.station_name:
        ds.StationName = meta.station_name
    ds.StudyDescription = meta.study_description
    ds.SeriesDescription = meta.series_description
    if meta.model_name:
        ds.ManufacturerModelName = meta.model_name
    ds.PatientName = meta.patient_name
    ds.PatientID = meta.patient_id
    ds.PatientBirthDate = ""  # type 2: present and empty; never a (fake) birth date
    ds.PatientSex = meta.patient_sex
    if meta.patient_age_years is not None:
        ds.PatientAge = f"{int(meta.patient_age_years):03d}Y"
    if meta.patient_weight_kg is not None:
        ds.PatientWeight = _ds_num(round(meta.patient_weight_kg, 1))
    ds.ContrastBolusAgent = meta.contrast_agent
    if meta.contrast_route:
        ds.ContrastBolusRoute = meta.contrast_route
    if meta.contrast_volume_ml is not None:
        ds.ContrastBolusVolume = _ds_num(round(meta.contrast_volume_ml, 1))
    if meta.contrast_start is not None:
        ds.ContrastBolusStartTime = _tm(meta.contrast_start)
    ds.BodyPartExamined = meta.body_part
    ds.SliceThickness = _ds_num(meta.slice_thickness_mm)
    ds.KVP = _ds_num(meta.kvp)
    if meta.reconstruction_diameter_mm is not None:
        ds.DataCollectionDiameter = _ds_num(round(meta.reconstruction_diameter_mm + 100, 1))
        ds.ReconstructionDiameter = _ds_num(round(meta.reconstruction_diameter_mm, 2))
    if meta.software_versions:
        ds.SoftwareVersions = meta.software_versions
    ds.ProtocolName = meta.protocol_name
    if meta.tube_current_ma is not None:
        ds.XRayTubeCurrent = int(meta.tube_current_ma)
    if meta.convolution_kernel:
        ds.ConvolutionKernel = meta.convolution_kernel
    ds.PatientPosition = "FFS"
    ds.StudyInstanceUID = meta.study_uid
    ds.SeriesInstanceUID = meta.series_uid
    ds.StudyID = meta.study_id
    ds.SeriesNumber = int(meta.series_number)
    if meta.acquisition_number is not None:
        ds.AcquisitionNumber = int(meta.acquisition_number)
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.FrameOfReferenceUID = meta.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = int(rows)
    ds.Columns = int(cols)
    ds.PixelSpacing = [_ds_num(pixel_spacing[0]), _ds_num(pixel_spacing[1])]
    ds.BitsAllocated = 16
    ds.BitsStored = meta.encoding.bits_stored
    ds.HighBit = meta.encoding.bits_stored - 1
    ds.PixelRepresentation = 1 if meta.encoding.signed else 0
    ds.WindowCenter = _ds_num(meta.window_center)
    ds.WindowWidth = _ds_num(meta.window_width)
    ds.RescaleIntercept = _ds_num(meta.encoding.rescale_intercept)
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    if meta.image_comments:
        ds.ImageComments = meta.image_comments
    return ds


def write_series(
    out_dir: str | Path,
    hu: np.ndarray,
    *,
    positions: Sequence[Sequence[float]],
    pixel_spacing: tuple[float, float],
    meta: SeriesMeta,
) -> list[Path]:
    """Write `hu` [Z, rows, cols] as one CT slice file per z index.

    `positions[k]` is the patient (x, y, z) mm of pixel [k, 0, 0] (ImagePositionPatient);
    rows run along +y (posterior) and columns along +x (patient left), i.e.
    ImageOrientationPatient 1\\0\\0\\0\\1\\0 in the DICOM LPS system. `pixel_spacing` is
    (row spacing = y, column spacing = x) in mm. Files are named by InstanceNumber and
    written atomically, so an interrupted write never leaves a truncated slice behind.
    Returns the file paths in slice order.
    """
    hu = np.asarray(hu)
    if hu.ndim != 3:
        raise DicomWriteError(f"expected an HU volume [Z, H, W], got shape {hu.shape}")
    if len(positions) != hu.shape[0]:
        raise DicomWriteError(f"{len(positions)} positions for {hu.shape[0]} slices")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stored = meta.encoding.encode(hu)
    ds = _base_dataset(meta, hu.shape[1], hu.shape[2], pixel_spacing)
    fm = FileMetaDataset()
    fm.MediaStorageSOPClassUID = CTImageStorage
    fm.TransferSyntaxUID = ExplicitVRLittleEndian
    fm.ImplementationClassUID = IMPLEMENTATION_UID
    fm.ImplementationVersionName = IMPLEMENTATION_VERSION
    paths = []
    for k in range(hu.shape[0]):
        instance = meta.instance_start + k
        sop_uid = make_uid("sop", meta.series_uid, meta.acquisition_number, instance)
        fm.MediaStorageSOPInstanceUID = sop_uid
        ds.file_meta = fm
        ds.SOPInstanceUID = sop_uid
        ds.InstanceNumber = instance
        pos = [float(v) for v in positions[k]]
        ds.ImagePositionPatient = [_ds_num(v) for v in pos]
        ds.SliceLocation = _ds_num(pos[2])
        ds.PixelData = (
            np.ascontiguousarray(stored[k])
            .astype("<u2" if not meta.encoding.signed else "<i2")
            .tobytes()
        )
        path = out / f"IM{instance:05d}.dcm"
        with atomic.replacing(path) as tmp:
            ds.save_as(tmp, enforce_file_format=True)
        paths.append(path)
    return paths


def read_series_hu(paths: Sequence[str | Path]) -> tuple[np.ndarray, list[Dataset]]:
    """Read slices back with pydicom and apply the rescale (used by tests and validation).

    Returns (HU float32 [Z, rows, cols] in the given file order, datasets).
    """
    import pydicom

    dss = [pydicom.dcmread(p) for p in paths]
    hu = np.stack(
        [
            d.pixel_array.astype(np.float32) * float(d.RescaleSlope) + float(d.RescaleIntercept)
            for d in dss
        ]
    )
    return hu, dss
