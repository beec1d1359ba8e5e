"""The Series record: one CT acquisition as an HU volume with its geometry and header."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Header fields that carry phase evidence; kept verbatim (as strings) on every Series.
PHASE_HEADER_FIELDS = (
    "SeriesDescription",
    "ProtocolName",
    "ContrastBolusAgent",
    "ContrastBolusRoute",
    "ContrastBolusStartTime",
    "AcquisitionTime",
    "ContentTime",
    "SeriesTime",
    "KVP",
    "Manufacturer",
    "ManufacturerModelName",
    "ConvolutionKernel",
    "SliceThickness",
    "ImageType",
)


@dataclass(frozen=True, kw_only=True, eq=False)
class Series:
    """One axial CT volume in Hounsfield units.

    `hu` is [Z, H, W] float32, Z ordered along the slice normal (feet-to-head or
    head-to-feet exactly as the positions say; see `ordering`). Identifiers are
    UIDs and hashes only: no patient names or birth dates are kept.
    """

    series_id: str  # stable: same files -> same id
    patient_id: str
    hu: np.ndarray
    spacing: tuple[float, float, float]  # (z, y, x) mm; z from positions, not SliceThickness
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)  # patient (x, y, z) mm of voxel [0, 0, 0]
    orientation: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)  # row and column cosines
    source: str = ""  # folder or file it came from
    files: tuple[str, ...] = ()
    study_uid: str = ""
    series_uid: str = ""
    acquisition: str = ""  # AcquisitionNumber / time that separates phases in one SeriesInstanceUID
    ordering: str = ""  # normal | slice_location | instance_number | nifti | synthetic
    header: dict[str, str] = field(default_factory=dict)
    problems: tuple[str, ...] = ()

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.hu.shape)  # type: ignore[return-value]

    @property
    def num_slices(self) -> int:
        return int(self.hu.shape[0])


def make_series_id(series_uid: str, acquisition: str = "") -> str:
    """Stable short id of a series: the SeriesInstanceUID plus, only when one UID holds
    several acquisitions (phases) that had to be split, that acquisition's key.

    The acquisition key is the first of AcquisitionNumber, AcquisitionTime,
    ContentTime that tells the acquisitions apart, as a string (e.g. "2").
    """
    import hashlib

    digest = hashlib.sha1(f"{series_uid}|{acquisition}".encode()).hexdigest()[:12]
    return f"s{digest}"
