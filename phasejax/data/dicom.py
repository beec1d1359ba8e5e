"""DICOM CT ingestion: header scan, grouping into series, slice ordering, HU decoding.

Three stages, so that a folder of 500 series costs one fast header pass and one
pixel decode per kept image:

1. `read_slices(path)`: header only (pixel data deferred, never decoded). Returns
   one `SliceInfo` per image plane (one per frame of an Enhanced CT object) or a
   `Skipped` record with a reason from `SKIP_REASONS`.
2. `group_series(slices)`: SeriesInstanceUID -> acquisitions -> ordered geometry,
   as `SeriesPlan`s (picklable, no pixels), plus `Skipped` for what cannot form
   an axial volume.
3. `load_series(plan)`: decode pixels, apply the modality LUT, stack to a
   `Series` in Hounsfield units.

Acquisitions. Real exports put several phases under one SeriesInstanceUID with
identical slice positions, told apart only by AcquisitionNumber, AcquisitionTime
or ContentTime. A UID is split by the first of those tags (in that order) whose
groups each have distinct positions and whose z ranges overlap; the tag's value
becomes `Series.acquisition` and enters the series id
(`make_series_id(uid, value)`). Otherwise `acquisition` is "". Step-and-shoot
scanners that number every rotation as a new acquisition produce adjacent,
non-overlapping blocks and no repeated positions: one series, not split. Repeated
positions that no tag explains are reported (`repeated_positions`), never merged.

Ordering and geometry. Slices are sorted by their position along the slice normal
(row x column cosine of ImageOrientationPatient, dotted with
ImagePositionPatient), ascending: for the usual axial orientation index 0 is the
most inferior slice (feet) and the last the most superior. Without positions the
order falls back to SliceLocation, then InstanceNumber (`Series.ordering` says
which). Slice spacing comes from the positions, not SliceThickness.

Problems (`Series.problems`, strings "code" or "code:detail") are kept on a loaded
series: `missing_slices:N` (gaps that are whole multiples of the usual spacing; the
volume is stacked as found, spacing is the usual gap), `uneven_spacing:lo-hi mm`,
`gantry_tilt:D deg` (positions step off the slice normal; the volume is NOT
resampled, so it is sheared by D degrees, and z spacing is the perpendicular
distance), `single_slice`, `spacing_from_header` (no positions: SliceThickness or
SpacingBetweenSlices used), `no_orientation`, `missing_rescale` (no
RescaleSlope/Intercept: identity assumed), `no_pixel_spacing` (1 mm assumed),
`unreadable_slices:N` (files that failed
to decode; they are also listed as skipped), `no_air_voxels` (no voxel below -500
HU: a CT in HU always holds air, so the rescale is suspect), `minority_orientation:N`
(N stray images of another orientation were dropped, see below).

Stray orientations. Real exports file a coronal/sagittal reformat or a localizer
under the axial series' SeriesInstanceUID. When the images of other orientations are
few (<= 10% of the UID's images and <= 5) or all derived (ImageType DERIVED,
SECONDARY, REFORMATTED, LOCALIZER or MPR while the main stack is not), the main stack
is kept and every dropped file is skipped as `minority_orientation`. Two stacks that
compete (neither rule holds) are refused as `mixed_orientation`.

What cannot be a correct volume is skipped, with a reason from `SKIP_REASONS`:
`mixed_orientation`, `mixed_pixel_spacing`, `mixed_matrix`, `invalid_pixel_spacing`,
`repeated_positions`, `non_axial`, `localizer`, `no_slice_order`. Files are skipped at
the header stage, before any decode, when their pixel description is impossible
(`bad_pixel_header`), when their rescale is impossible for CT (`bad_rescale`: a slope
<= 0 or above 1000, an intercept beyond +/-1e5), or, for uncompressed transfer
syntaxes, when the PixelData length differs from Rows x Columns x BitsAllocated/8 x
SamplesPerPixel x NumberOfFrames (one pad byte allowed; `pixel_length_mismatch`):
such headers decode into garbage or infinite HU without any error.

Hounsfield units: stored value * RescaleSlope + RescaleIntercept (or the Modality
LUT Sequence when present; per-frame Pixel Value Transformation for Enhanced CT),
after pydicom has sign-extended signed data with BitsStored < BitsAllocated.
Pixels equal to PixelPaddingValue (or within PixelPaddingRangeLimit) become air,
-1024 HU (`phasejax.hu.HU_MIN`), and so does anything below -1024 HU: scanners mark
the area outside the reconstruction circle with values such as -2000 or -3024 that
are not tissue, and no tissue is less dense than air.

No patient name or birth date is ever read into these records; identifiers are
PatientID and UIDs.
"""

from __future__ import annotations

import math
import os
import warnings
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from phasejax.data.series import PHASE_HEADER_FIELDS, Series, make_series_id
from phasejax.hu import AIR_THRESHOLD_HU, HU_MIN
from phasejax.safe_text import clean_text

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
LEGACY_ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.2"
CT_SOP_CLASSES = (CT_IMAGE_STORAGE, ENHANCED_CT_IMAGE_STORAGE, LEGACY_ENHANCED_CT_IMAGE_STORAGE)
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"  # DICOMDIR

SKIP_REASONS: dict[str, str] = {
    "not_found": "path does not exist",
    "unreadable_dir": "a folder that could not be listed (permissions, I/O error)",
    "unreadable_file": "a file that could not be opened (permissions, I/O error)",
    "not_dicom": "not a DICOM file",
    "corrupt": "the header could not be read",
    "truncated": "the file ends before its pixel data does",
    "decode_error": "the pixel data could not be decoded",
    "dicomdir": "a DICOMDIR index, not an image",
    "modality": "not a CT image (Modality names what it is)",
    "localizer": "localizer / scout / topogram",
    "segmentation": "DICOM SEG object",
    "structured_report": "DICOM SR object",
    "dose_report": "radiation dose report (SR or screen capture)",
    "rt_object": "radiotherapy object (RTSTRUCT, RTPLAN, RTDOSE...)",
    "secondary_capture": "secondary capture image",
    "unsupported_sop_class": "a SOP class that is not a CT image",
    "no_pixel_data": "no PixelData element",
    "bad_pixel_header": "Rows, Columns, BitsAllocated or SamplesPerPixel missing or impossible",
    "pixel_length_mismatch": "uncompressed PixelData length disagrees with the image header",
    "bad_rescale": "RescaleSlope <= 0 or far outside CT values, or a huge RescaleIntercept",
    "no_series_uid": "no SeriesInstanceUID",
    "duplicate_instance": "same SOPInstanceUID already read from another file",
    "multiframe_without_geometry": "multi-frame object without per-frame positions",
    "non_axial": "reformatted plane that is not axial (coronal/sagittal)",
    "mixed_orientation": "slices of one acquisition have different orientations",
    "minority_orientation": "a stray image (reformat, localizer) of another orientation than "
    "the series' stack; the stack is kept without it",
    "mixed_pixel_spacing": "slices of one acquisition have different pixel spacings",
    "mixed_matrix": "slices of one acquisition have different rows/columns",
    "invalid_pixel_spacing": "PixelSpacing is zero or negative",
    "repeated_positions": "repeated slice positions that no acquisition tag tells apart",
    "no_slice_order": "no position, SliceLocation or InstanceNumber to order the slices",
    "nifti_error": "NIfTI file could not be read",
}

# SOP class prefixes -> skip reason. Order matters: dose SR before the generic SR prefix.
_SOP_REASONS: tuple[tuple[str, str], ...] = (
    ("1.2.840.10008.5.1.4.1.1.88.67", "dose_report"),  # X-Ray Radiation Dose SR
    ("1.2.840.10008.5.1.4.1.1.88.76", "dose_report"),  # Enhanced X-Ray Radiation Dose SR
    ("1.2.840.10008.5.1.4.1.1.88.", "structured_report"),
    ("1.2.840.10008.5.1.4.1.1.66.4", "segmentation"),
    ("1.2.840.10008.5.1.4.1.1.66.5", "segmentation"),  # surface segmentation
    ("1.2.840.10008.5.1.4.1.1.481.", "rt_object"),
    ("1.2.840.10008.5.1.4.1.1.7", "secondary_capture"),  # and its multi-frame variants 7.x
)

_POS_TOL_MM = 0.01  # positions closer than this are the same position (DS rounding is ~1e-3)
_ORIENT_TOL = 1e-3
_AXIAL_MIN_NZ = math.cos(math.radians(45.0))  # |normal . z| above this: axial (tilt < 45 deg)
_TILT_MIN_DEG = 0.5
_GAP_REL_TOL = 0.1


class DicomError(RuntimeError):
    pass


@dataclass(frozen=True)
class Skipped:
    """Something under the walked roots that is not (part of) a loaded series."""

    path: str
    reason: str  # a key of SKIP_REASONS
    detail: str = ""

    def __str__(self) -> str:
        text = f"{self.path}: {self.reason}" + (f" ({self.detail})" if self.detail else "")
        return clean_text(text)


@dataclass(frozen=True, kw_only=True)
class SliceInfo:
    """Header of one image plane: a single-frame file, or one frame of a multi-frame file."""

    path: str
    frame: int | None = None  # frame index in a multi-frame file; None for single-frame
    sop_instance_uid: str = ""
    series_uid: str
    study_uid: str = ""
    patient_id: str = ""
    acquisition_number: str = ""
    acquisition_time: str = ""
    content_time: str = ""
    position: tuple[float, float, float] | None = None
    orientation: tuple[float, float, float, float, float, float] | None = None
    pixel_spacing: tuple[float, float] | None = None  # (row spacing, column spacing) mm
    rows: int = 0
    columns: int = 0
    slice_location: float | None = None
    instance_number: int | None = None
    slice_thickness: float | None = None
    spacing_between_slices: float | None = None
    rescale: tuple[float, float] | None = None  # (slope, intercept); per frame for Enhanced CT
    padding: tuple[int, int] | None = None  # stored-value range of PixelPaddingValue(/RangeLimit)
    modality_lut: bool = False  # a Modality LUT Sequence replaces slope/intercept
    image_type: str = ""  # ImageType values joined by "\\", upper case
    header: tuple[tuple[str, str], ...] = ()  # PHASE_HEADER_FIELDS as strings

    @property
    def key(self) -> tuple[str, int]:
        return (self.path, -1 if self.frame is None else self.frame)


@dataclass(frozen=True, kw_only=True, eq=False)
class SeriesPlan:
    """Everything needed to decode one series, without pixels (cheap to pickle)."""

    series_id: str
    series_uid: str
    acquisition: str
    study_uid: str
    patient_id: str
    slices: tuple[SliceInfo, ...]  # in volume order
    ordering: str
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    orientation: tuple[float, ...]
    problems: tuple[str, ...] = ()
    header: dict[str, str] = field(default_factory=dict)
    source: str = ""

    @property
    def files(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(s.path for s in self.slices))

    @property
    def num_slices(self) -> int:
        return len(self.slices)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.slices), self.slices[0].rows, self.slices[0].columns)


# --------------------------------------------------------------------------- header stage


def _str(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value).strip()


def _float(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _floats(value: Any, n: int) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return out if len(out) == n and all(math.isfinite(v) for v in out) else None


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _first_item(ds: Any, keyword: str) -> Any:
    seq = ds.get(keyword) if ds is not None else None
    return seq[0] if seq else None


def _functional(frame_item: Any, shared: Any, sequence: str) -> Any:
    """A functional-group macro for one frame: per-frame item if present, else shared."""
    item = _first_item(frame_item, sequence)
    return item if item is not None else _first_item(shared, sequence)


def _header_value(ds: Any, keyword: str) -> str:
    """A header field from the top level, else from a shared functional group macro
    (Enhanced CT keeps KVP, kernel and contrast there)."""
    if keyword in ds:
        return _str(ds.get(keyword))
    shared = _first_item(ds, "SharedFunctionalGroupsSequence")
    if shared is not None:
        for elem in shared:
            if elem.VR == "SQ" and elem.value:
                item = elem.value[0]
                if keyword in item:
                    return _str(item.get(keyword))
    if keyword in ("AcquisitionTime", "ContentTime"):
        dt = _str(ds.get(keyword.replace("Time", "DateTime")))
        if len(dt) > 8:
            return dt[8:]
    return ""


def _phase_header(ds: Any) -> tuple[tuple[str, str], ...]:
    return tuple((k, _header_value(ds, k)) for k in PHASE_HEADER_FIELDS)


def _looks_like_headerless_dicom(path: str) -> bool:
    """Old exports without the 128-byte preamble start with a group-0008 tag."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return head[:2] in (b"\x08\x00", b"\x00\x08") and len(head) == 4


def _sop_skip_reason(sop: str) -> str | None:
    if sop == MEDIA_STORAGE_DIRECTORY:
        return "dicomdir"
    for prefix, reason in _SOP_REASONS:
        if prefix.endswith("."):
            match = sop.startswith(prefix)
        else:  # exact, or a sub-class (SC 1.2...1.7 covers 7.1-7.4 but not 77.x)
            match = sop == prefix or sop.startswith(prefix + ".")
        if match:
            return reason
    return None


def _is_dose_screen(ds: Any, image_type: str) -> bool:
    # Vendors store the dose page as a CT or SC image: GE "Dose Report", Siemens
    # "Patient Protocol", Philips "Dose Info"; ImageType often says SCREEN SAVE.
    desc = _str(ds.get("SeriesDescription")).lower()
    return (
        "SCREEN SAVE" in image_type
        or "dose report" in desc
        or "dose info" in desc
        or "patient protocol" in desc
    )


def read_slices(path: str | os.PathLike[str]) -> list[SliceInfo] | Skipped:
    """Read one file's header (no pixel decode) into SliceInfo records, or say why not."""
    path = str(path)
    with warnings.catch_warnings():
        # pydicom warns about every non-conformance it tolerates; a walk over an
        # archive would drown in them. Real failures still raise and are reported.
        warnings.simplefilter("ignore")
        return _read_slices(path)


def _read_slices(path: str) -> list[SliceInfo] | Skipped:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        try:
            # defer_size: large values (pixel data) are skipped with a seek, so the
            # whole header is parsed, PixelData's presence and length are known, and
            # nothing is decoded.
            ds = pydicom.dcmread(path, defer_size=4096)
        except InvalidDicomError:
            if not _looks_like_headerless_dicom(path):
                return Skipped(path, "not_dicom", "no DICM preamble")
            ds = pydicom.dcmread(path, defer_size=4096, force=True)
            if "SOPClassUID" not in ds and "Modality" not in ds:
                return Skipped(path, "not_dicom", "no DICM preamble")
    except (PermissionError, IsADirectoryError) as e:
        return Skipped(path, "unreadable_file", f"{type(e).__name__}: {e.strerror}")
    except Exception as e:  # noqa: BLE001 - any parse failure is a report, not a crash
        return Skipped(path, "corrupt", f"{type(e).__name__}: {e}")
    try:
        return _slices_from_dataset(ds, path)
    except Exception as e:  # noqa: BLE001
        return Skipped(path, "corrupt", f"{type(e).__name__}: {e}")


def _overrun(ds: Any, path: str) -> str | None:
    """pydicom stops quietly at end of file; a last element whose declared length runs
    past the end means the file was cut (or a length field is garbage)."""
    tags = list(ds.keys())
    if not tags:
        return None
    last = ds.get_item(tags[-1], keep_deferred=True)
    tell, length = getattr(last, "value_tell", None), getattr(last, "length", None)
    if tell is None or length is None or length == 0xFFFFFFFF:
        return None
    size = os.path.getsize(path)
    if tell + length > size:
        return f"element {last.tag} needs {length} bytes, file has {max(size - tell, 0)}"
    return None


# Transfer syntaxes whose PixelData is the native bytes, so its length is known from the
# header. Deflated is listed because pydicom inflates the whole dataset before parsing.
_NATIVE_SYNTAXES = frozenset(
    {
        "1.2.840.10008.1.2",  # Implicit VR Little Endian
        "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
        "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
        "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired)
    }
)
_MAX_MATRIX = 16384  # no CT reconstruction is wider; a larger value is a broken header


def _pixel_header_problem(ds: Any, pixel_elem: Any) -> tuple[str, str] | None:
    """(reason, detail) when the pixel description cannot describe the stored bytes.

    Checked before any decode: a header that says 8 bits over 16-bit bytes decodes
    without error into garbage that would then be classified as if it were an image.
    """
    rows, cols = _int(ds.get("Rows")), _int(ds.get("Columns"))
    bits = _int(ds.get("BitsAllocated"))
    spp = _int(ds.get("SamplesPerPixel", 1))
    frames = _int(ds.get("NumberOfFrames", 1) or 1)
    fields = {"Rows": rows, "Columns": cols, "BitsAllocated": bits, "SamplesPerPixel": spp}
    wrong = [k for k, v in fields.items() if v is None or v < 1]
    if (rows and rows > _MAX_MATRIX) or (cols and cols > _MAX_MATRIX):
        wrong.append(f"matrix {rows}x{cols} > {_MAX_MATRIX}")
    if bits is not None and bits not in (1, 8, 16, 32, 64):
        wrong.append(f"BitsAllocated {bits}")
    if frames is None or frames < 1:
        wrong.append("NumberOfFrames")
    if wrong:
        return "bad_pixel_header", ", ".join(wrong)
    meta = getattr(ds, "file_meta", None)
    syntax = _str(meta.get("TransferSyntaxUID")) if meta is not None else ""
    length = getattr(pixel_elem, "length", None)
    if syntax and syntax not in _NATIVE_SYNTAXES:
        return None  # compressed: only the decoder can tell
    if length is None or length == 0xFFFFFFFF:
        if syntax:
            return "pixel_length_mismatch", f"encapsulated PixelData under native syntax {syntax}"
        return None
    n_pixels = rows * cols * spp * frames  # type: ignore[operator]
    expected = (n_pixels + 7) // 8 if bits == 1 else n_pixels * bits // 8  # type: ignore[operator]
    if length not in (expected, expected + 1):  # +1: the pad byte of an odd length
        return "pixel_length_mismatch", (
            f"PixelData has {length} bytes, the header ({rows}x{cols}, {bits} bits, "
            f"{spp} sample(s), {frames} frame(s)) needs {expected}"
        )
    return None


def _slices_from_dataset(ds: Any, path: str) -> list[SliceInfo] | Skipped:
    cut = _overrun(ds, path)
    if cut:
        return Skipped(path, "truncated", cut)
    meta = getattr(ds, "file_meta", None)
    sop = _str(ds.get("SOPClassUID")) or _str(meta.get("MediaStorageSOPClassUID") if meta else "")
    if sop == MEDIA_STORAGE_DIRECTORY or "DirectoryRecordSequence" in ds:
        return Skipped(path, "dicomdir")
    reason = _sop_skip_reason(sop)
    image_type = _str(ds.get("ImageType")).upper()
    if reason == "secondary_capture" and _is_dose_screen(ds, image_type):
        reason = "dose_report"
    if reason:
        return Skipped(path, reason, sop)
    modality = _str(ds.get("Modality")).upper()
    if modality and modality != "CT":
        return Skipped(path, "modality", modality)
    if sop and sop not in CT_SOP_CLASSES:
        return Skipped(path, "unsupported_sop_class", sop)
    if not modality and sop not in CT_SOP_CLASSES:
        return Skipped(path, "unsupported_sop_class", sop or "no SOPClassUID")
    if "LOCALIZER" in image_type.split("\\"):
        return Skipped(path, "localizer", "ImageType LOCALIZER")
    if _is_dose_screen(ds, image_type):
        return Skipped(path, "dose_report", _str(ds.get("SeriesDescription")))

    pixel_elem = ds.get_item(0x7FE00010, keep_deferred=True)
    if pixel_elem is None:
        return Skipped(path, "no_pixel_data")
    bad = _pixel_header_problem(ds, pixel_elem)
    if bad is not None:
        return Skipped(path, *bad)
    series_uid = _str(ds.get("SeriesInstanceUID"))
    if not series_uid:
        return Skipped(path, "no_series_uid")

    common = dict(
        path=path,
        padding=_padding_range(ds),
        modality_lut=bool(ds.get("ModalityLUTSequence")),
        sop_instance_uid=_str(ds.get("SOPInstanceUID")),
        series_uid=series_uid,
        study_uid=_str(ds.get("StudyInstanceUID")),
        patient_id=_str(ds.get("PatientID")),
        image_type=image_type,
        header=_phase_header(ds),
    )
    n_frames = _int(ds.get("NumberOfFrames")) or 1
    if "PerFrameFunctionalGroupsSequence" in ds or n_frames > 1:
        return _checked_rescale(_enhanced_slices(ds, path, n_frames, common))
    return _checked_rescale(_single_frame(ds, common))


# A CT's rescale maps 12-16 bit stored values to about -1024..3071 HU: slopes near 1 and
# intercepts of a few thousand. Far outside that (or a slope <= 0, which would invert
# the image) the header is broken, and the HU would be nonsense or overflow float32.
_MAX_SLOPE = 1e3
_MAX_INTERCEPT = 1e5


def _checked_rescale(out: list[SliceInfo] | Skipped) -> list[SliceInfo] | Skipped:
    if isinstance(out, Skipped):
        return out
    for s in out:
        if s.rescale is None:
            continue
        slope, intercept = s.rescale
        if not (0 < slope <= _MAX_SLOPE) or abs(intercept) > _MAX_INTERCEPT:
            return Skipped(
                s.path, "bad_rescale", f"RescaleSlope {slope:g}, RescaleIntercept {intercept:g}"
            )
    return out


def _single_frame(ds: Any, common: dict[str, Any]) -> list[SliceInfo]:
    pos = _floats(ds.get("ImagePositionPatient"), 3)
    orient = _floats(ds.get("ImageOrientationPatient"), 6)
    slope, intercept = _float(ds.get("RescaleSlope")), _float(ds.get("RescaleIntercept"))
    return [
        SliceInfo(
            **common,
            acquisition_number=_str(ds.get("AcquisitionNumber")),
            acquisition_time=_str(ds.get("AcquisitionTime")),
            content_time=_str(ds.get("ContentTime")),
            position=pos,  # type: ignore[arg-type]
            orientation=orient,  # type: ignore[arg-type]
            pixel_spacing=_floats(ds.get("PixelSpacing"), 2),  # type: ignore[arg-type]
            rows=_int(ds.get("Rows")) or 0,
            columns=_int(ds.get("Columns")) or 0,
            slice_location=_float(ds.get("SliceLocation")),
            instance_number=_int(ds.get("InstanceNumber")),
            slice_thickness=_float(ds.get("SliceThickness")),
            spacing_between_slices=_float(ds.get("SpacingBetweenSlices")),
            rescale=None if slope is None or intercept is None else (slope, intercept),
        )
    ]


def _enhanced_slices(
    ds: Any, path: str, n_frames: int, common: dict[str, Any]
) -> list[SliceInfo] | Skipped:
    """Enhanced / Legacy Converted Enhanced CT: geometry and rescale live in functional groups."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if not per_frame or len(per_frame) != n_frames:
        return Skipped(
            path,
            "multiframe_without_geometry",
            f"{n_frames} frames, {len(per_frame or [])} per-frame functional group items",
        )
    shared = _first_item(ds, "SharedFunctionalGroupsSequence")
    out: list[SliceInfo] = []
    top_acq = _str(ds.get("AcquisitionNumber"))
    top_time = _header_value(ds, "AcquisitionTime")
    top_content = _header_value(ds, "ContentTime")
    for i, item in enumerate(per_frame):
        pos_item = _functional(item, shared, "PlanePositionSequence")
        ori_item = _functional(item, shared, "PlaneOrientationSequence")
        meas = _functional(item, shared, "PixelMeasuresSequence")
        pvt = _functional(item, shared, "PixelValueTransformationSequence")
        content = _functional(item, shared, "FrameContentSequence")
        frame_type = _functional(item, shared, "CTImageFrameTypeSequence")
        if frame_type is not None and "LOCALIZER" in _str(frame_type.get("FrameType")).upper():
            return Skipped(path, "localizer", "FrameType LOCALIZER")
        rescale = None
        if pvt is not None:
            s, b = _float(pvt.get("RescaleSlope")), _float(pvt.get("RescaleIntercept"))
            rescale = None if s is None or b is None else (s, b)
        if rescale is None:
            s, b = _float(ds.get("RescaleSlope")), _float(ds.get("RescaleIntercept"))
            rescale = None if s is None or b is None else (s, b)
        acq_dt = _str(content.get("FrameAcquisitionDateTime")) if content is not None else ""
        ref_dt = _str(content.get("FrameReferenceDateTime")) if content is not None else ""
        frame_acq = _str(content.get("FrameAcquisitionNumber")) if content is not None else ""
        out.append(
            SliceInfo(
                **common,
                frame=i,
                acquisition_number=frame_acq or top_acq,
                acquisition_time=(acq_dt[8:] if len(acq_dt) > 8 else acq_dt) or top_time,
                content_time=(ref_dt[8:] if len(ref_dt) > 8 else ref_dt) or top_content,
                position=_floats(pos_item.get("ImagePositionPatient"), 3)  # type: ignore[arg-type]
                if pos_item is not None
                else None,
                orientation=_floats(ori_item.get("ImageOrientationPatient"), 6)  # type: ignore[arg-type]
                if ori_item is not None
                else None,
                pixel_spacing=_floats(meas.get("PixelSpacing"), 2)  # type: ignore[arg-type]
                if meas is not None
                else None,
                rows=_int(ds.get("Rows")) or 0,
                columns=_int(ds.get("Columns")) or 0,
                slice_thickness=_float(meas.get("SliceThickness")) if meas is not None else None,
                spacing_between_slices=_float(meas.get("SpacingBetweenSlices"))
                if meas is not None
                else None,
                instance_number=i + 1,
                rescale=rescale,
            )
        )
    if all(s.position is None for s in out):
        return Skipped(path, "multiframe_without_geometry", f"{n_frames} frames, no positions")
    return out


# --------------------------------------------------------------------------- grouping stage


def slice_normal(orientation: Sequence[float]) -> np.ndarray:
    """Unit normal (row cosine x column cosine) of an ImageOrientationPatient."""
    row = np.asarray(orientation[:3], dtype=np.float64)
    col = np.asarray(orientation[3:6], dtype=np.float64)
    n = np.cross(row, col)
    norm = np.linalg.norm(n)
    return n / norm if norm > 0 else np.array([0.0, 0.0, 1.0])


def _z_keys(slices: Sequence[SliceInfo]) -> np.ndarray | None:
    """Scalar position of each slice for ordering: along the normal, else SliceLocation.

    None when there is no common normal (mixed orientations: reported by build_plan).
    """
    orients = {s.orientation for s in slices if s.orientation is not None}
    if len(orients) > 1:
        o = np.asarray(sorted(orients))
        if np.max(np.abs(o - o[0])) > _ORIENT_TOL:
            return None
    if all(s.position is not None and s.orientation is not None for s in slices):
        n = slice_normal(slices[0].orientation)  # type: ignore[arg-type]
        return np.array([float(np.dot(s.position, n)) for s in slices])  # type: ignore[arg-type]
    if all(s.slice_location is not None for s in slices):
        return np.array([float(s.slice_location) for s in slices])  # type: ignore[arg-type]
    return None


def _has_repeats(z: np.ndarray) -> bool:
    if len(z) < 2:
        return False
    return bool(np.any(np.diff(np.sort(z)) < _POS_TOL_MM))


def _ranges_overlap(ranges: list[tuple[float, float]]) -> bool:
    ranges = sorted(ranges)
    return any(b[0] < a[1] - _POS_TOL_MM for a, b in zip(ranges, ranges[1:]))


def _acq_sort_key(value: str) -> tuple[int, float, str]:
    f = _float(value)
    return (0, f, "") if f is not None else (1, 0.0, value)


_ACQ_TAGS = ("acquisition_number", "acquisition_time", "content_time")


def split_acquisitions(
    slices: Sequence[SliceInfo],
) -> list[tuple[str, list[SliceInfo]]] | str:
    """Split one SeriesInstanceUID into acquisitions, or return "repeated_positions".

    Returns [(acquisition key, slices)], with key "" when the UID is one acquisition.
    """
    z = _z_keys(slices)
    if z is None:
        return [("", list(slices))]
    for tag in _ACQ_TAGS:
        values = [getattr(s, tag) for s in slices]
        if any(v == "" for v in values):
            continue
        groups: dict[str, list[int]] = defaultdict(list)
        for i, v in enumerate(values):
            groups[v].append(i)
        if len(groups) < 2:
            continue
        if any(_has_repeats(z[idx]) for idx in groups.values()):
            continue  # this tag does not tell the repeated positions apart
        ranges = [(float(z[idx].min()), float(z[idx].max())) for idx in groups.values()]
        if not _ranges_overlap(ranges):
            # Adjacent blocks: step-and-shoot numbering of rotations, one acquisition.
            continue
        keys = sorted(groups, key=_acq_sort_key)
        return [(k, [slices[i] for i in groups[k]]) for k in keys]
    if _has_repeats(z):
        return "repeated_positions"
    return [("", list(slices))]


def _common_dir(paths: Iterable[str]) -> str:
    dirs = sorted({os.path.dirname(os.path.abspath(p)) for p in paths})
    if len(dirs) == 1:
        return dirs[0]
    try:
        return os.path.commonpath(dirs)
    except ValueError:
        return dirs[0]


def build_plan(
    series_uid: str,
    acquisition: str,
    slices: Sequence[SliceInfo],
    extra_problems: Sequence[str] = (),
) -> SeriesPlan | Skipped:
    """Order one acquisition's slices and check its geometry."""
    source = _common_dir(s.path for s in slices)
    desc = f"series {series_uid}" + (f" acquisition {acquisition}" if acquisition else "")

    def skip(reason: str, detail: str) -> Skipped:
        return Skipped(source, reason, f"{desc}, {len(slices)} images: {detail}")

    problems: list[str] = list(extra_problems)
    matrices = {(s.rows, s.columns) for s in slices}
    if len(matrices) > 1:
        return skip("mixed_matrix", f"rows x columns {sorted(matrices)}")
    orients = [s.orientation for s in slices if s.orientation is not None]
    if orients:
        o = np.asarray(orients)
        if np.max(np.abs(o - o[0])) > _ORIENT_TOL:
            uniq = {tuple(np.round(r, 3)) for r in o}
            return skip("mixed_orientation", f"{len(uniq)} different orientations")
    spacings = [s.pixel_spacing for s in slices if s.pixel_spacing is not None]
    if spacings:
        p = np.asarray(spacings)
        if np.any(p <= 0):
            # Resampling with a zero or negative pixel size would flip or collapse the
            # image; no value to assume is safer than refusing.
            bad = p[np.any(p <= 0, axis=1)][0]
            return skip("invalid_pixel_spacing", f"PixelSpacing {bad[0]:g}\\{bad[1]:g} mm")
        if np.max(np.abs(p - p[0])) > 1e-3 * max(float(p[0].max()), 1e-6):
            uniq = sorted({tuple(np.round(r, 4)) for r in p})
            return skip("mixed_pixel_spacing", f"{uniq[:4]}")
    orientation = slices[0].orientation
    if orientation is not None:
        nz = abs(float(slice_normal(orientation)[2]))
        if nz < _AXIAL_MIN_NZ:
            if len(slices) == 1:
                return skip("localizer", "single non-axial image")
            return skip(
                "non_axial", f"slice normal {np.round(slice_normal(orientation), 3).tolist()}"
            )
    else:
        problems.append("no_orientation")

    # Ordering: along the normal, else SliceLocation, else InstanceNumber.
    if all(s.position is not None and s.orientation is not None for s in slices):
        ordering = "normal"
        keys = _z_keys(slices)
    elif all(s.slice_location is not None for s in slices):
        ordering = "slice_location"
        keys = np.array([s.slice_location for s in slices], dtype=np.float64)
    elif all(s.instance_number is not None for s in slices):
        ordering = "instance_number"
        keys = np.array([s.instance_number for s in slices], dtype=np.float64)
    else:
        return skip("no_slice_order", "no positions, SliceLocation or InstanceNumber")
    assert keys is not None
    if _has_repeats(keys):
        return skip(
            "repeated_positions", f"{len(keys) - len(np.unique(np.round(keys, 2)))} repeats"
        )
    order = np.argsort(keys, kind="stable")
    ordered = [slices[i] for i in order]
    keys = keys[order]

    # Slice spacing: from positions (the true spacing), never from SliceThickness.
    head = ordered[0]
    thickness = next(
        (t for t in (head.spacing_between_slices, head.slice_thickness) if t and t > 0), None
    )
    if len(ordered) == 1:
        dz = float(thickness or 1.0)
        problems.append("single_slice")
    elif ordering == "instance_number":
        dz = float(thickness or 1.0)
        problems.append("spacing_from_header")
    else:
        gaps = np.diff(keys)
        dz = float(np.median(gaps))
        problems.extend(_gap_problems(gaps, dz))
        if ordering == "normal":
            tilt = _tilt_degrees(ordered)
            if tilt > _TILT_MIN_DEG:
                problems.append(f"gantry_tilt:{tilt:.1f}deg")
    if head.rescale is None:
        problems.append("missing_rescale")
    ps = head.pixel_spacing or (1.0, 1.0)
    if head.pixel_spacing is None:
        problems.append("no_pixel_spacing")
    header = dict(head.header)
    return SeriesPlan(
        series_id=make_series_id(series_uid, acquisition),
        series_uid=series_uid,
        acquisition=acquisition,
        study_uid=head.study_uid,
        patient_id=head.patient_id,
        slices=tuple(ordered),
        ordering=ordering,
        spacing=(dz, float(ps[0]), float(ps[1])),
        origin=tuple(head.position) if head.position else (0.0, 0.0, 0.0),  # type: ignore[arg-type]
        orientation=tuple(orientation) if orientation else (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
        problems=tuple(problems),
        header=header,
        source=source,
    )


def _gap_problems(gaps: np.ndarray, dz: float) -> list[str]:
    out: list[str] = []
    if dz <= 0:
        return out
    ratio = gaps / dz
    k = np.rint(ratio)
    whole = (k >= 2) & (np.abs(gaps - k * dz) <= _GAP_REL_TOL * dz)
    n_missing = int(np.sum(k[whole] - 1))
    if n_missing:
        out.append(f"missing_slices:{n_missing}")
    uneven = ~whole & (np.abs(gaps - dz) > max(_GAP_REL_TOL * dz, 0.02))
    if np.any(uneven):
        lo, hi = float(gaps[uneven].min()), float(gaps[uneven].max())
        out.append(f"uneven_spacing:{min(lo, dz):.2f}-{max(hi, dz):.2f}mm")
    return out


def _tilt_degrees(ordered: Sequence[SliceInfo]) -> float:
    """Angle between the slice-to-slice displacement and the slice normal.

    A tilted gantry acquires planes whose orientation has a z component in the
    column cosine while the table moves along z, so positions step off the normal.
    """
    n = slice_normal(ordered[0].orientation)  # type: ignore[arg-type]
    v = np.asarray(ordered[-1].position) - np.asarray(ordered[0].position)
    norm = float(np.linalg.norm(v))
    if norm == 0:
        return 0.0
    cos = min(1.0, abs(float(np.dot(v, n))) / norm)
    return math.degrees(math.acos(cos))


# A stack of another orientation inside a series is dropped as strays (a reformat or a
# localizer filed under the series' UID) when it is this small; larger ones compete with
# the main stack and the series is refused.
STRAY_MAX_FRACTION = 0.10
STRAY_MAX_IMAGES = 5
# ImageType values that mark an image as made from others (or a scout), never a primary
# axial acquisition: such strays are dropped whatever their number.
DERIVED_IMAGE_TYPES = frozenset({"DERIVED", "SECONDARY", "REFORMATTED", "LOCALIZER", "MPR"})


def _orientation_groups(slices: Sequence[SliceInfo]) -> list[list[SliceInfo]]:
    """Slices grouped by orientation (within _ORIENT_TOL), largest group first; slices
    without an orientation join the largest group (they cannot contradict it)."""
    groups: list[tuple[np.ndarray, list[SliceInfo]]] = []
    loose: list[SliceInfo] = []
    for s in slices:
        if s.orientation is None:
            loose.append(s)
            continue
        o = np.asarray(s.orientation, dtype=np.float64)
        for ref, members in groups:
            if np.max(np.abs(o - ref)) <= _ORIENT_TOL:
                members.append(s)
                break
        else:
            groups.append((o, [s]))
    out = sorted((m for _, m in groups), key=len, reverse=True)
    if not out:
        return [loose]
    out[0].extend(loose)
    return out


def _is_derived(s: SliceInfo) -> bool:
    return any(v.strip() in DERIVED_IMAGE_TYPES for v in s.image_type.split("\\"))


def drop_stray_orientations(
    series_uid: str, slices: Sequence[SliceInfo]
) -> tuple[list[SliceInfo], list[Skipped], str | None]:
    """Keep the majority-orientation stack of one SeriesInstanceUID when the other
    orientations are strays; (kept slices, skipped strays, problem or None).

    Strays are few (<= STRAY_MAX_FRACTION of the images and <= STRAY_MAX_IMAGES) or all
    derived (ImageType in DERIVED_IMAGE_TYPES) while the main stack is not. Otherwise
    nothing is dropped and build_plan refuses the series as `mixed_orientation`.
    """
    groups = _orientation_groups(slices)
    if len(groups) < 2:
        return list(slices), [], None
    main, rest = groups[0], [s for g in groups[1:] for s in g]
    few = len(rest) <= STRAY_MAX_IMAGES and len(rest) <= STRAY_MAX_FRACTION * len(slices)
    derived = all(_is_derived(s) for s in rest) and not all(_is_derived(s) for s in main)
    if len(rest) >= len(main) or not (few or derived):
        return list(slices), [], None
    why = "few" if few else "derived"
    main_paths = {s.path for s in main}
    skipped = []
    for path in dict.fromkeys(s.path for s in rest):
        if path in main_paths:
            # A multi-frame file with frames of both orientations: its other frames
            # are dropped, the file itself stays in the series.
            continue
        o = next(s.orientation for s in rest if s.path == path)
        n = slice_normal(o)  # type: ignore[arg-type]
        skipped.append(
            Skipped(
                path,
                "minority_orientation",
                f"series {series_uid}: normal {np.round(n, 2).tolist()}, "
                f"{len(rest)} of {len(slices)} images ({why}); the other stack is kept",
            )
        )
    return main, skipped, f"minority_orientation:{len(rest)}"


def group_series(slices: Iterable[SliceInfo]) -> tuple[list[SeriesPlan], list[Skipped]]:
    """Group headers into series plans (one per SeriesInstanceUID and acquisition)."""
    by_uid: dict[str, list[SliceInfo]] = defaultdict(list)
    skipped: list[Skipped] = []
    seen: dict[tuple[str, int], str] = {}
    for s in slices:
        ident = (s.sop_instance_uid, -1 if s.frame is None else s.frame)
        if s.sop_instance_uid and ident in seen:
            skipped.append(Skipped(s.path, "duplicate_instance", f"same as {seen[ident]}"))
            continue
        if s.sop_instance_uid:
            seen[ident] = s.path
        by_uid[s.series_uid].append(s)
    plans: list[SeriesPlan] = []
    for uid in sorted(by_uid):
        group, strays, stray_problem = drop_stray_orientations(uid, by_uid[uid])
        skipped.extend(strays)
        extra = (stray_problem,) if stray_problem else ()
        parts = split_acquisitions(group)
        if isinstance(parts, str):
            z = _z_keys(group)
            n_rep = len(group) - len(np.unique(np.round(z, 2))) if z is not None else 0
            skipped.append(
                Skipped(
                    _common_dir(s.path for s in group),
                    parts,
                    f"series {uid}, {len(group)} images: {n_rep} repeated positions and no "
                    "AcquisitionNumber/AcquisitionTime/ContentTime that separates them",
                )
            )
            continue
        for acq, part in parts:
            plan = build_plan(uid, acq, part, extra_problems=extra)
            (plans if isinstance(plan, SeriesPlan) else skipped).append(plan)  # type: ignore[arg-type]
    return plans, skipped


# --------------------------------------------------------------------------- pixel stage


def _padding_range(ds: Any) -> tuple[int, int] | None:
    """PixelPaddingValue (and PixelPaddingRangeLimit) as stored values in the pixel's own
    representation. Explicit-VR files often carry the value as US even for signed pixels
    (e.g. 63536 meaning -2000), so it is reinterpreted as two's complement."""
    if "PixelPaddingValue" not in ds:
        return None
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    bits_alloc = int(ds.get("BitsAllocated", 16))
    bits_stored = int(ds.get("BitsStored", bits_alloc))

    def fix(v: int) -> int:
        v = int(v)
        if signed:
            if v >= 2 ** (bits_alloc - 1):
                v -= 2**bits_alloc
            elif v >= 2 ** (bits_stored - 1):
                v -= 2**bits_stored
        return v

    lo = fix(ds.PixelPaddingValue)
    hi = fix(ds.PixelPaddingRangeLimit) if "PixelPaddingRangeLimit" in ds else lo
    return (min(lo, hi), max(lo, hi))


def stored_to_hu(
    stored: np.ndarray,
    rescale: tuple[float, float] | None,
    padding: tuple[int, int] | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Stored pixel values -> float32 HU: slope/intercept, padding to air, floor at air."""
    slope, intercept = rescale if rescale is not None else (1.0, 0.0)
    if out is None:
        out = np.empty(stored.shape, dtype=np.float32)
    if slope == 1.0 and float(intercept).is_integer():
        # Integer stored values and intercept: float32 is exact up to 2**24, no float64 pass.
        np.add(stored, np.float32(intercept), out=out, casting="unsafe")
    else:
        # float64 for the multiply (exact for 16-bit values with any slope), then float32.
        out[...] = stored.astype(np.float64) * slope + intercept
    if padding is not None:
        lo, hi = padding
        out[(stored >= lo) & (stored <= hi)] = HU_MIN
    np.maximum(out, HU_MIN, out=out)
    return out


def decode_stored(path: str, needs_dataset: bool) -> tuple[np.ndarray, Any]:
    """All frames of one file as stored values [F, H, W] (and its dataset when it had to be
    read in full: Modality LUT, or a file pydicom's fast path refuses)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _decode_quiet(path, needs_dataset)


def _decode_quiet(path: str, needs_dataset: bool) -> tuple[np.ndarray, Any]:
    import pydicom
    from pydicom.pixels import pixel_array

    if not needs_dataset:
        try:
            # Reads only the pixel-description elements and the pixel data: about
            # twice as fast as a full dcmread for a 512x512 slice.
            arr = pixel_array(path)
            return (arr[None] if arr.ndim == 2 else arr), None
        except Exception:  # noqa: BLE001 - retry the slow way (e.g. no preamble)
            pass
    ds = pydicom.dcmread(path, force=True)
    arr = ds.pixel_array
    return (arr[None] if arr.ndim == 2 else arr), ds


# Problems found before build_plan (so not re-derived when it runs again without the
# files that failed to decode).
_CARRIED_PROBLEMS = ("minority_orientation",)


def load_series(plan: SeriesPlan) -> tuple[Series | None, list[Skipped]]:
    """Decode a planned series to HU. Files that fail to decode are dropped and reported,
    the geometry is re-checked without them (so their gap shows as missing slices)."""
    from pydicom.pixels import apply_modality_lut

    index = {s.key: i for i, s in enumerate(plan.slices)}
    by_path: dict[str, list[SliceInfo]] = defaultdict(list)
    for s in plan.slices:
        by_path[s.path].append(s)
    rows, cols = plan.slices[0].rows, plan.slices[0].columns
    hu = np.empty((len(plan.slices), rows, cols), dtype=np.float32)
    failed: list[Skipped] = []
    ok = np.zeros(len(plan.slices), dtype=bool)
    for path, items in by_path.items():
        try:
            stored, ds = decode_stored(path, needs_dataset=items[0].modality_lut)
            if stored.ndim != 3 or stored.shape[1:] != (rows, cols):
                raise DicomError(f"decoded shape {stored.shape} != header {rows}x{cols}")
            for s in items:
                f = s.frame or 0
                if f >= stored.shape[0]:
                    raise DicomError(f"frame {f} missing: decoded {stored.shape[0]} frames")
                i = index[s.key]
                if s.modality_lut:
                    lut = np.asarray(apply_modality_lut(stored[f], ds), dtype=np.float32)
                    stored_to_hu(lut, (1.0, 0.0), None, out=hu[i])
                    if s.padding is not None:
                        lo, hi = s.padding
                        hu[i][(stored[f] >= lo) & (stored[f] <= hi)] = HU_MIN
                else:
                    stored_to_hu(stored[f], s.rescale, s.padding, out=hu[i])
                ok[i] = True
        except Exception as e:  # noqa: BLE001 - one bad file never takes down the series
            failed.append(Skipped(path, "decode_error", f"{type(e).__name__}: {e}"))
    if not ok.any():
        return None, failed
    if failed:
        keep = [s for s in plan.slices if ok[index[s.key]]]
        n_bad = len(plan.slices) - len(keep)
        carried = tuple(p for p in plan.problems if p.split(":")[0] in _CARRIED_PROBLEMS)
        new = build_plan(
            plan.series_uid,
            plan.acquisition,
            keep,
            extra_problems=(*carried, f"unreadable_slices:{n_bad}"),
        )
        if isinstance(new, Skipped):
            return None, [*failed, new]
        hu = hu[[index[s.key] for s in new.slices]]
        plan = replace(new, series_id=plan.series_id)
    problems = list(plan.problems)
    if hu.size and not np.any(
        hu[:, :: max(1, rows // 64), :: max(1, cols // 64)] < AIR_THRESHOLD_HU
    ):
        problems.append("no_air_voxels")
    series = Series(
        series_id=plan.series_id,
        patient_id=plan.patient_id,
        hu=hu,
        spacing=plan.spacing,
        origin=plan.origin,
        orientation=plan.orientation,
        source=plan.source,
        files=plan.files,
        study_uid=plan.study_uid,
        series_uid=plan.series_uid,
        acquisition=plan.acquisition,
        ordering=plan.ordering,
        header=dict(plan.header),
        problems=tuple(problems),
    )
    return series, failed


def scan_files(
    files: Iterable[str | os.PathLike[str]],
) -> tuple[list[SliceInfo], list[Skipped]]:
    """Header pass over files (sequential; see phasejax.data.discover for the parallel walk)."""
    slices: list[SliceInfo] = []
    skipped: list[Skipped] = []
    for f in files:
        r = read_slices(f)
        if isinstance(r, Skipped):
            skipped.append(r)
        else:
            slices.extend(r)
    return slices, skipped


def load_dicom_folder(path: str | Path) -> tuple[list[Series], list[Skipped]]:
    """Convenience for tests and scripts: every series under one folder, decoded in-process."""
    files = sorted(str(p) for p in Path(path).rglob("*") if p.is_file())
    slices, skipped = scan_files(files)
    plans, more = group_series(slices)
    skipped.extend(more)
    out: list[Series] = []
    for plan in plans:
        s, bad = load_series(plan)
        skipped.extend(bad)
        if s is not None:
            out.append(s)
    return out, skipped
