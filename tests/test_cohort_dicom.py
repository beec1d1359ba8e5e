"""DICOM writer of the synthetic cohort: conformance, HU round trip, vendor conventions.

Stand-in volumes with known HU are written through `write_series` and read back with
plain pydicom, so these tests need no phantom rendering and run in a second or two.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import UID, CTImageStorage

from phasejax.cohort.dicom_writer import (
    DicomWriteError,
    PixelEncoding,
    SeriesMeta,
    make_uid,
    read_series_hu,
    write_series,
)

T0 = dt.datetime(2024, 3, 5, 10, 15, 30, 250000)
INJ = T0 - dt.timedelta(seconds=35.5)

# Known HU: air, fat, water, liver, contrast-filled aorta, cortical bone, the 12-bit ends.
KNOWN = np.array([-1000.0, -100.0, 0.0, 60.4, 300.6, 1200.0, -1024.0, 3071.0], np.float32)


def stand_in_volume(nz: int = 4, n: int = 16) -> np.ndarray:
    rng = np.random.default_rng(3)
    hu = rng.normal(40.0, 25.0, size=(nz, n, n)).astype(np.float32)
    hu[:, 0, : KNOWN.size] = KNOWN
    return hu


def meta(encoding: PixelEncoding | None = None, **kw) -> SeriesMeta:
    base = dict(
        patient_id="INT-0007",
        patient_name="SYNTH^INT0007",
        patient_sex="F",
        study_uid=make_uid("test-study"),
        series_uid=make_uid("test-series"),
        frame_of_reference_uid=make_uid("test-frame"),
        study_datetime=T0 - dt.timedelta(minutes=4),
        series_datetime=T0,
        acquisition_datetime=T0,
        content_datetime=T0,
        contrast_start=INJ,
        contrast_agent="Iohexol 350",
        contrast_route="IV",
        series_description="ART 1.0 Br40",
        manufacturer="SIEMENS",
        kvp=100.0,
        convolution_kernel="Br40",
        slice_thickness_mm=2.5,
        encoding=encoding or PixelEncoding(),
    )
    base.update(kw)
    return SeriesMeta(**base)


POSITIONS = [(-199.6, -180.25, -312.5 + 2.5 * k) for k in range(4)]
SPACING = (0.7812, 0.7812)

ENCODINGS = {
    "siemens_unsigned_12bit_-1024": PixelEncoding(rescale_intercept=-1024, signed=False, bits_stored=12),
    "ge_signed_16bit_-1024": PixelEncoding(rescale_intercept=-1024, signed=True, bits_stored=16),
    "canon_signed_16bit_0": PixelEncoding(rescale_intercept=0, signed=True, bits_stored=16),
    "uih_unsigned_16bit_-1024": PixelEncoding(rescale_intercept=-1024, signed=False, bits_stored=16),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(ENCODINGS))
def test_hu_round_trip_within_quantisation(tmp_path: Path, name: str) -> None:
    hu = stand_in_volume()
    paths = write_series(
        tmp_path, hu, positions=POSITIONS, pixel_spacing=SPACING, meta=meta(ENCODINGS[name])
    )
    back, dss = read_series_hu(paths)
    assert back.shape == hu.shape
    assert np.max(np.abs(back - hu)) <= 0.5 + 1e-4  # integer storage: rounding only
    np.testing.assert_array_equal(back[0, 0, : KNOWN.size], np.rint(KNOWN))
    assert dss[0].BitsStored == ENCODINGS[name].bits_stored
    assert dss[0].PixelRepresentation == int(ENCODINGS[name].signed)
    assert float(dss[0].RescaleIntercept) == ENCODINGS[name].rescale_intercept


def test_vendor_conventions_store_differently_but_decode_to_same_hu(tmp_path: Path) -> None:
    hu = stand_in_volume()
    decoded, stored = {}, {}
    for name, enc in ENCODINGS.items():
        paths = write_series(
            tmp_path / name, hu, positions=POSITIONS, pixel_spacing=SPACING, meta=meta(enc)
        )
        decoded[name], dss = read_series_hu(paths)
        stored[name] = dss[0].pixel_array
    ref = decoded["canon_signed_16bit_0"]
    for name in ENCODINGS:
        np.testing.assert_array_equal(decoded[name], ref)
    # Air is stored as -1000 with intercept 0 and as 24 with intercept -1024.
    assert stored["canon_signed_16bit_0"][0, 0] == -1000
    assert stored["siemens_unsigned_12bit_-1024"][0, 0] == 24
    assert stored["siemens_unsigned_12bit_-1024"].dtype == np.uint16


def test_encoding_that_cannot_hold_air_is_refused() -> None:
    with pytest.raises(DicomWriteError, match="cannot represent"):
        PixelEncoding(rescale_intercept=0.0, signed=False, bits_stored=16).encode(np.zeros(3))
    with pytest.raises(DicomWriteError, match="BitsStored"):
        PixelEncoding(bits_stored=14).validate()


def test_values_beyond_the_12_bit_range_are_clipped_not_wrapped() -> None:
    enc = PixelEncoding(rescale_intercept=-1024, signed=False, bits_stored=12)
    stored = enc.encode(np.array([-3000.0, 5000.0]))
    np.testing.assert_array_equal(enc.decode(stored), [-1024.0, 3071.0])


def test_conformant_ct_header(tmp_path: Path) -> None:
    hu = stand_in_volume()
    m = meta(PixelEncoding(rescale_intercept=-1024, signed=False, bits_stored=12))
    paths = write_series(tmp_path, hu, positions=POSITIONS, pixel_spacing=SPACING, meta=m)
    assert [p.name for p in paths] == [f"IM{k:05d}.dcm" for k in range(1, 5)]
    sop_uids = set()
    for k, p in enumerate(paths):
        ds = pydicom.dcmread(p)
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert ds.SOPClassUID == CTImageStorage == ds.file_meta.MediaStorageSOPClassUID
        assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
        for uid in (
            ds.SOPInstanceUID,
            ds.StudyInstanceUID,
            ds.SeriesInstanceUID,
            ds.FrameOfReferenceUID,
        ):
            assert UID(uid).is_valid, uid
        sop_uids.add(ds.SOPInstanceUID)
        assert ds.Modality == "CT"
        assert ds.InstanceNumber == k + 1
        np.testing.assert_allclose(
            [float(v) for v in ds.ImagePositionPatient], POSITIONS[k], atol=1e-6
        )
        assert float(ds.SliceLocation) == pytest.approx(POSITIONS[k][2])
        assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
        assert [float(v) for v in ds.PixelSpacing] == list(SPACING)
        assert (ds.Rows, ds.Columns) == hu.shape[1:]
        assert ds.BitsAllocated == 16 and ds.HighBit == 11 and ds.SamplesPerPixel == 1
        assert ds.PhotometricInterpretation == "MONOCHROME2"
        assert float(ds.SliceThickness) == 2.5 and float(ds.KVP) == 100.0
        assert ds.RescaleType == "HU" and float(ds.RescaleSlope) == 1.0
        # No identifying data: synthetic name, empty birth date.
        assert str(ds.PatientName) == "SYNTH^INT0007" and ds.PatientBirthDate == ""
    assert len(sop_uids) == 4
    # Positions step by the slice spacing along the slice normal (row x column = +z).
    ds0, ds1 = pydicom.dcmread(paths[0]), pydicom.dcmread(paths[1])
    assert float(ds1.ImagePositionPatient[2]) - float(ds0.ImagePositionPatient[2]) == pytest.approx(
        2.5
    )


def _tm_seconds(tm: str) -> float:
    return int(tm[:2]) * 3600 + int(tm[2:4]) * 60 + float(tm[4:])


def test_timing_tags_are_consistent_with_the_scan_time(tmp_path: Path) -> None:
    paths = write_series(
        tmp_path, stand_in_volume(), positions=POSITIONS, pixel_spacing=SPACING, meta=meta()
    )
    ds = pydicom.dcmread(paths[0])
    assert ds.StudyDate == ds.SeriesDate == ds.AcquisitionDate == "20240305"
    assert ds.SeriesTime == ds.AcquisitionTime == ds.ContentTime == "101530.25"
    seconds = _tm_seconds(ds.AcquisitionTime) - _tm_seconds(ds.ContrastBolusStartTime)
    assert seconds == pytest.approx(35.5, abs=0.01)
    assert _tm_seconds(ds.StudyTime) < _tm_seconds(ds.ContrastBolusStartTime)


def test_missing_and_empty_fields_as_some_sites_export(tmp_path: Path) -> None:
    m = meta(
        acquisition_datetime=None, contrast_agent="", contrast_route="", acquisition_number=None
    )
    ds = pydicom.dcmread(
        write_series(
            tmp_path, stand_in_volume(), positions=POSITIONS, pixel_spacing=SPACING, meta=m
        )[0]
    )
    assert "AcquisitionTime" not in ds and "AcquisitionNumber" not in ds
    assert "ContrastBolusAgent" in ds and ds.ContrastBolusAgent == ""  # type 2: present, empty
    assert "ContentTime" in ds


def test_uids_deterministic_valid_and_distinct() -> None:
    a, b = (
        make_uid("series", 0, "INT-0001", "arterial"),
        make_uid("series", 0, "INT-0001", "arterial"),
    )
    c = make_uid("series", 1, "INT-0001", "arterial")
    assert a == b and a != c
    assert len(a) <= 64 and UID(a).is_valid


def test_same_input_same_bytes(tmp_path: Path) -> None:
    hu = stand_in_volume()
    p1 = write_series(tmp_path / "a", hu, positions=POSITIONS, pixel_spacing=SPACING, meta=meta())
    p2 = write_series(tmp_path / "b", hu, positions=POSITIONS, pixel_spacing=SPACING, meta=meta())
    assert [p.read_bytes() for p in p1] == [p.read_bytes() for p in p2]
    assert not list(tmp_path.rglob("*.tmp"))


def test_shared_uid_continues_instance_numbers(tmp_path: Path) -> None:
    hu = stand_in_volume()
    uid = make_uid("shared")
    art = write_series(
        tmp_path,
        hu,
        positions=POSITIONS,
        pixel_spacing=SPACING,
        meta=meta(series_uid=uid, acquisition_number=2),
    )
    pv = write_series(
        tmp_path,
        hu + 80,
        positions=POSITIONS,
        pixel_spacing=SPACING,
        meta=meta(series_uid=uid, acquisition_number=3, instance_start=5),
    )
    dss = [pydicom.dcmread(p) for p in art + pv]
    assert {d.SeriesInstanceUID for d in dss} == {uid}
    assert [d.InstanceNumber for d in dss] == list(range(1, 9))
    assert [d.AcquisitionNumber for d in dss] == [2] * 4 + [3] * 4
    assert len({d.SOPInstanceUID for d in dss}) == 8


def test_wrong_shapes_are_named_errors(tmp_path: Path) -> None:
    with pytest.raises(DicomWriteError, match="positions"):
        write_series(
            tmp_path, stand_in_volume(), positions=POSITIONS[:3], pixel_spacing=SPACING, meta=meta()
        )
    with pytest.raises(DicomWriteError, match="shape"):
        write_series(
            tmp_path, np.zeros((4, 4)), positions=POSITIONS, pixel_spacing=SPACING, meta=meta()
        )
