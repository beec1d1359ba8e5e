"""DICOM ingestion: grouping, acquisition splits, ordering, geometry problems, HU, skips."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_factory import (
    CORONAL,
    body_phantom,
    ct_dataset,
    enhanced_ct,
    save,
    uid,
    write_series,
)
from pydicom.pixels import apply_modality_lut
from pydicom.uid import JPEG2000Lossless, RLELossless

from phasejax.data.dicom import (
    SKIP_REASONS,
    Skipped,
    decode_stored,
    load_dicom_folder,
    read_slices,
)
from phasejax.data.series import make_series_id
from phasejax.hu import HU_MIN

TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


def bundled(name: str) -> Path:
    """A file shipped inside pydicom (never downloaded: get_testdata_file would try)."""
    path = TEST_FILES / name
    if not path.exists():
        pytest.skip(f"pydicom does not bundle {name}")
    return path


def reasons(skipped: list[Skipped]) -> dict[str, str]:
    return {Path(s.path).name: s.reason for s in skipped}


def ramp(n: int, rows: int = 16, cols: int = 16, base: int = 1024, step: int = 10) -> np.ndarray:
    """Stored values: slice k is `base + step * k` everywhere (HU = step * k at intercept -1024)."""
    return np.stack([np.full((rows, cols), base + step * k) for k in range(n)]).astype(np.int32)


# --------------------------------------------------------------------------- order and geometry


def test_shuffled_files_are_sorted_along_the_slice_normal(tmp_path: Path) -> None:
    sid = uid("shuffled")
    write_series(tmp_path, ramp(6), series_uid=sid, z0=-50.0, dz=2.5, shuffle=True)
    (series,), skipped = load_dicom_folder(tmp_path)
    assert skipped == []
    assert series.ordering == "normal"
    # Slice k was written at z = -50 + 2.5 k with HU 10 k: ascending z gives ascending HU.
    np.testing.assert_array_equal(series.hu[:, 3, 3], [0, 10, 20, 30, 40, 50])
    assert series.spacing == (2.5, 0.7, 0.7)
    assert series.origin == (-100.0, -120.0, -50.0)
    assert series.series_id == make_series_id(sid, "")
    assert series.acquisition == ""
    assert series.problems == ("no_air_voxels",)  # the ramp holds no air: flagged


def test_descending_positions_still_sort_ascending_along_normal(tmp_path: Path) -> None:
    # Head-first export: z decreases with the slice index written.
    write_series(tmp_path, ramp(4), series_uid=uid("desc"), z0=100.0, dz=-5.0)
    (series,), _ = load_dicom_folder(tmp_path)
    np.testing.assert_array_equal(series.hu[:, 0, 0], [30, 20, 10, 0])
    assert series.spacing[0] == 5.0
    assert series.origin[2] == 85.0


def test_slice_location_then_instance_number_fallbacks(tmp_path: Path) -> None:
    # No ImagePositionPatient: SliceLocation orders the slices.
    stored = ramp(4)
    locs = [30.0, 10.0, 0.0, 20.0]
    for k in range(4):
        ds = ct_dataset(
            stored[k],
            series_uid=uid("sl"),
            position=None,
            slice_location=locs[k],
            instance_number=9 - k,
        )
        save(ds, tmp_path / "sl" / f"{k}.dcm")
    # Neither positions nor SliceLocation: InstanceNumber.
    for k in range(3):
        ds = ct_dataset(stored[k], series_uid=uid("in"), position=None, instance_number=5 - k)
        assert "SliceLocation" not in ds
        save(ds, tmp_path / "in" / f"{k}.dcm")
    (sl,), _ = load_dicom_folder(tmp_path / "sl")
    (ins,), _ = load_dicom_folder(tmp_path / "in")
    assert sl.ordering == "slice_location"
    np.testing.assert_array_equal(sl.hu[:, 0, 0], [20, 10, 30, 0])  # locations 0, 10, 20, 30
    assert sl.spacing[0] == 10.0
    assert ins.ordering == "instance_number"
    np.testing.assert_array_equal(ins.hu[:, 0, 0], [20, 10, 0])  # instance numbers 3, 4, 5
    assert "spacing_from_header" in ins.problems
    assert ins.spacing[0] == 2.5  # SliceThickness, the only spacing the header offers


def test_missing_slice_is_reported_and_spacing_kept(tmp_path: Path) -> None:
    z = [0.0, 2.5, 5.0, 10.0, 12.5]  # 7.5 is missing
    write_series(tmp_path, ramp(5), series_uid=uid("gap"), positions=[(0.0, 0.0, v) for v in z])
    (series,), _ = load_dicom_folder(tmp_path)
    assert "missing_slices:1" in series.problems
    assert series.spacing[0] == 2.5
    assert series.num_slices == 5


def test_uneven_gaps_are_reported(tmp_path: Path) -> None:
    z = [0.0, 2.5, 5.0, 8.7, 11.2, 13.7]
    write_series(tmp_path, ramp(6), series_uid=uid("uneven"), positions=[(0, 0, v) for v in z])
    (series,), _ = load_dicom_folder(tmp_path)
    assert any(p.startswith("uneven_spacing:") for p in series.problems), series.problems
    assert not any(p.startswith("missing_slices") for p in series.problems)


def test_gantry_tilt_is_reported_with_its_angle(tmp_path: Path) -> None:
    # 15 degree tilt: columns tilt into z, the table still moves along z.
    t = np.radians(15.0)
    orient = (1.0, 0.0, 0.0, 0.0, float(np.cos(t)), float(np.sin(t)))
    write_series(tmp_path, ramp(5), series_uid=uid("tilt"), dz=3.0, orientation=orient)
    (series,), _ = load_dicom_folder(tmp_path)
    assert "gantry_tilt:15.0deg" in series.problems
    # Reported, not resampled: z spacing is the perpendicular distance between planes.
    assert series.spacing[0] == pytest.approx(3.0 * np.cos(t), rel=1e-6)


@pytest.mark.parametrize(
    ("per_slice", "reason"),
    [
        ([{}, {}, {"pixel_spacing": (0.9, 0.9)}, {}], "mixed_pixel_spacing"),
        ([{}, {"orientation": (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)}, {}, {}], "mixed_orientation"),
    ],
)
def test_inconsistent_geometry_is_skipped_by_name(
    tmp_path: Path, per_slice: list[dict], reason: str
) -> None:
    write_series(tmp_path, ramp(4), series_uid=uid(reason), per_slice=per_slice)
    series, skipped = load_dicom_folder(tmp_path)
    assert series == []
    assert [s.reason for s in skipped] == [reason]
    assert uid(reason) in skipped[0].detail


def test_mixed_matrix_is_skipped(tmp_path: Path) -> None:
    sid = uid("matrix")
    write_series(tmp_path, ramp(3), series_uid=sid)
    write_series(tmp_path, ramp(1, rows=8, cols=8), series_uid=sid, z0=20.0, prefix="small")
    series, skipped = load_dicom_folder(tmp_path)
    assert series == [] and [s.reason for s in skipped] == ["mixed_matrix"]


# --------------------------------------------------------------------------- acquisitions


def test_two_acquisitions_in_one_uid_are_split_by_acquisition_number(tmp_path: Path) -> None:
    sid = uid("two-phases")
    # Same positions twice: arterial (HU 300) as acquisition 1, venous (HU 150) as 2.
    write_series(tmp_path, ramp(4, base=1324, step=0), series_uid=sid, acquisition_number=1)
    write_series(tmp_path, ramp(4, base=1174, step=0), series_uid=sid, acquisition_number=2, seed=1)
    series, skipped = load_dicom_folder(tmp_path)
    assert skipped == []
    by_acq = {s.acquisition: s for s in series}
    assert sorted(by_acq) == ["1", "2"]
    assert by_acq["1"].series_id == make_series_id(sid, "1")
    assert by_acq["2"].series_id == make_series_id(sid, "2")
    assert by_acq["1"].num_slices == by_acq["2"].num_slices == 4
    assert np.all(by_acq["1"].hu == 300) and np.all(by_acq["2"].hu == 150)


def test_acquisition_time_splits_when_the_number_does_not(tmp_path: Path) -> None:
    sid = uid("times")
    # AcquisitionNumber is the same (1) for both; only AcquisitionTime differs.
    common = dict(series_uid=sid, acquisition_number=1)
    write_series(tmp_path, ramp(3, step=0), acquisition_time="101500", **common)
    write_series(tmp_path, ramp(3, step=0, base=1124), acquisition_time="101610", seed=2, **common)
    series, _ = load_dicom_folder(tmp_path)
    assert sorted(s.acquisition for s in series) == ["101500", "101610"]
    assert {s.acquisition: float(s.hu.mean()) for s in series} == {"101500": 0.0, "101610": 100.0}


def test_step_and_shoot_acquisition_numbers_are_one_series(tmp_path: Path) -> None:
    # A scanner that numbers every rotation: AcquisitionNumber 1,1,2,2,3,3 over distinct
    # positions. No position repeats and the blocks are adjacent: one acquisition.
    sid = uid("step-and-shoot")
    per = [{"acquisition_number": 1 + k // 2} for k in range(6)]
    write_series(tmp_path, ramp(6), series_uid=sid, per_slice=per)
    (series,), skipped = load_dicom_folder(tmp_path)
    assert skipped == []
    assert series.acquisition == ""
    assert series.series_id == make_series_id(sid, "")
    assert series.num_slices == 6 and series.problems == ("no_air_voxels",)


def test_interleaved_acquisitions_without_repeats_are_split(tmp_path: Path) -> None:
    # Two acquisitions offset by half a slice share no position but overlap in z:
    # merging them would fake a 1.25 mm series. AcquisitionNumber separates them.
    sid = uid("interleaved")
    write_series(tmp_path, ramp(4, step=0), series_uid=sid, dz=2.5, acquisition_number=1)
    write_series(tmp_path, ramp(4, step=0), series_uid=sid, z0=1.25, acquisition_number=2, seed=3)
    series, _ = load_dicom_folder(tmp_path)
    assert sorted(s.acquisition for s in series) == ["1", "2"]
    assert all(s.spacing[0] == 2.5 for s in series)


def test_repeated_positions_without_a_distinguishing_tag_are_reported(tmp_path: Path) -> None:
    sid = uid("ambiguous")
    write_series(tmp_path, ramp(3), series_uid=sid)
    write_series(tmp_path, ramp(3), series_uid=sid, seed=5, extra={"SeriesNumber": 2})
    series, skipped = load_dicom_folder(tmp_path)
    assert series == []
    (s,) = skipped
    assert s.reason == "repeated_positions"
    assert sid in s.detail and "3 repeated positions" in s.detail


# --------------------------------------------------------------------------- HU


def test_unsigned_pixels_with_intercept_minus_1024(tmp_path: Path) -> None:
    img = np.full((16, 16), 1024, dtype=np.int32)  # 0 HU
    img[2, 3] = 0  # -1024 HU
    img[5, 5] = 1324  # 300 HU
    img[7, 9] = 4095  # 3071 HU, top of 12 bits
    ds = ct_dataset(img, series_uid=uid("u"), signed=False, bits_stored=12, intercept=-1024)
    save(ds, tmp_path / "a.dcm")
    (series,), _ = load_dicom_folder(tmp_path)
    hu = series.hu[0]
    assert (hu[0, 0], hu[2, 3], hu[5, 5], hu[7, 9]) == (0.0, -1024.0, 300.0, 3071.0)
    assert series.hu.dtype == np.float32


def test_signed_12_bit_pixels_are_sign_extended_and_slope_applied(tmp_path: Path) -> None:
    img = np.zeros((16, 16), dtype=np.int32)
    img[1, 1] = -5  # stored in 12-bit two's complement (0xFFB), high bits zero
    img[2, 2] = -2048
    img[3, 3] = 2047
    ds = ct_dataset(
        img, series_uid=uid("s"), signed=True, bits_stored=12, slope=0.5, intercept=10.0
    )
    save(ds, tmp_path / "a.dcm")
    (series,), _ = load_dicom_folder(tmp_path)
    hu = series.hu[0]
    # HU = stored * 0.5 + 10; -2048 * 0.5 + 10 = -1014 (still above air).
    assert (hu[0, 0], hu[1, 1], hu[2, 2], hu[3, 3]) == (10.0, 7.5, -1014.0, 1033.5)


def test_slope_other_than_one_with_fractional_result(tmp_path: Path) -> None:
    img = np.full((8, 8), 3, dtype=np.int32)
    ds = ct_dataset(img, series_uid=uid("slope"), slope=2.5, intercept=-1000.0)
    save(ds, tmp_path / "a.dcm")
    (series,), _ = load_dicom_folder(tmp_path)
    assert series.hu[0, 0, 0] == -992.5


def test_pixel_padding_value_becomes_air_not_a_huge_value(tmp_path: Path) -> None:
    # Unsigned 16-bit with intercept -1024: padding 65535 would read as +64511 HU.
    img = np.full((16, 16), 1064, dtype=np.int32)  # 40 HU
    img[:, :3] = 65535
    ds = ct_dataset(img, series_uid=uid("pad"), bits_stored=16, padding_value=65535)
    save(ds, tmp_path / "a.dcm")
    (series,), _ = load_dicom_folder(tmp_path)
    assert series.hu[0, 0, 0] == HU_MIN
    assert series.hu[0, 0, 5] == 40.0
    assert series.hu.max() == 40.0


def test_padding_range_limit_and_signed_padding_written_as_us(tmp_path: Path) -> None:
    # Signed pixels whose PixelPaddingValue was written as US 63536 (= int16 -2000), as
    # in the HCC-TACE-Seg export, plus a range limit: -2000..-1990 is padding.
    img = np.full((16, 16), 40, dtype=np.int32)
    img[0, :4] = [-2000, -1995, -1990, -1989]
    ds = ct_dataset(
        img,
        series_uid=uid("pad-signed"),
        signed=True,
        bits_stored=16,
        intercept=1000.0,  # so that padding, if missed, would read as -1000..-990 HU
        padding_value=63536,
        padding_range_limit=63546,  # US for int16 -1990
    )
    save(ds, tmp_path / "a.dcm")
    (series,), _ = load_dicom_folder(tmp_path)
    np.testing.assert_array_equal(series.hu[0, 0, :4], [HU_MIN, HU_MIN, HU_MIN, -989.0])
    assert series.hu[0, 5, 5] == 1040.0


def test_values_below_air_are_floored_at_air(tmp_path: Path) -> None:
    # Outside-FOV marker -2000 stored with intercept -1024 and no PixelPaddingValue.
    img = np.full((8, 8), 1064, dtype=np.int32)
    img[0, 0] = -2000
    ds = ct_dataset(img, series_uid=uid("fov"), signed=True, bits_stored=16)
    save(ds, tmp_path / "a.dcm")
    (series,), _ = load_dicom_folder(tmp_path)
    assert series.hu[0, 0, 0] == HU_MIN and series.hu[0, 1, 1] == 40.0


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless], ids=["rle", "j2k"])
def test_compressed_series_decode_to_the_same_hu(tmp_path: Path, syntax: str) -> None:
    stored = np.stack([body_phantom(32, 32, 40.0 + 30 * k) + 1024 for k in range(3)])
    stored = stored.astype(np.int32)
    stored[:, 16, 16] = [1500, 2000, 2500]  # bright vessel: 476 / 976 / 1476 HU
    write_series(tmp_path / "raw", stored, series_uid=uid("raw"))
    paths = write_series(tmp_path / "cmp", stored, series_uid=uid("cmp"), compress=syntax)
    assert pydicom.dcmread(paths[0]).file_meta.TransferSyntaxUID == syntax
    (raw,), _ = load_dicom_folder(tmp_path / "raw")
    (cmp,), skipped = load_dicom_folder(tmp_path / "cmp")
    assert skipped == []
    np.testing.assert_array_equal(cmp.hu, raw.hu)
    np.testing.assert_array_equal(cmp.hu[:, 16, 16], [476, 976, 1476])
    assert cmp.hu[0, 0, 0] == -1000.0 and cmp.hu[2, 10, 16] == 100.0


def test_enhanced_ct_multiframe_per_frame_positions_and_rescale(tmp_path: Path) -> None:
    stored = np.stack([np.full((8, 8), 10 * k) for k in range(4)]).astype(np.int16)
    z = [6.0, 0.0, 9.0, 3.0]  # frames are not in z order
    intercepts = [-1000.0, -900.0, -800.0, -700.0]  # per-frame rescale
    enhanced_ct(
        tmp_path / "mf.dcm",
        stored,
        series_uid=uid("mf"),
        positions=[(0.0, 0.0, v) for v in z],
        intercepts=intercepts,
    )
    (series,), skipped = load_dicom_folder(tmp_path)
    assert skipped == []
    # frame k: HU = 10 k + intercept_k; sorted by z: frames 1, 3, 0, 2.
    np.testing.assert_array_equal(series.hu[:, 0, 0], [-890, -670, -1000, -780])
    assert series.spacing == (3.0, 0.8, 0.8)
    assert series.header["KVP"] == "100"  # found in the shared CT X-Ray Details macro
    assert series.files == (str(tmp_path / "mf.dcm"),)


def test_bundled_ct_small_hu_matches_pydicom_modality_lut(tmp_path: Path) -> None:
    src = bundled("CT_small.dcm")
    shutil.copy(src, tmp_path / "ct.dcm")
    (series,), _ = load_dicom_folder(tmp_path)
    ds = pydicom.dcmread(src)
    expected = np.maximum(apply_modality_lut(ds.pixel_array, ds), HU_MIN)
    np.testing.assert_array_equal(series.hu[0], expected.astype(np.float32))
    assert series.hu[0, 64, 64] == 1928 - 1024  # stored 1928, intercept -1024
    assert series.problems == ("single_slice",)


@pytest.mark.parametrize("name", ["693_J2KI.dcm", "J2K_pixelrep_mismatch.dcm"])
def test_bundled_compressed_ct_hu_matches_pydicom(tmp_path: Path, name: str) -> None:
    src = bundled(name)
    shutil.copy(src, tmp_path / name)
    (series,), skipped = load_dicom_folder(tmp_path)
    assert skipped == []
    ds = pydicom.dcmread(src)
    expected = np.maximum(apply_modality_lut(ds.pixel_array, ds), HU_MIN)
    np.testing.assert_allclose(series.hu[0], expected, atol=1e-3)


def test_bundled_jpeg_ls_and_rle_relabelled_as_ct_match_uncompressed(tmp_path: Path) -> None:
    # pydicom bundles JPEG-LS and RLE only as MR; relabelled as CT (pixel data untouched)
    # they go through the whole loader and must match the uncompressed original.
    ref = pydicom.dcmread(bundled("MR_small.dcm")).pixel_array.astype(np.float32)
    for name in ("MR_small_jpeg_ls_lossless.dcm", "MR_small_RLE.dcm"):
        ds = pydicom.dcmread(bundled(name))
        ds.Modality = "CT"
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = pydicom.uid.CTImageStorage
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.save_as(tmp_path / name, enforce_file_format=True)
        (series,), skipped = load_dicom_folder(tmp_path)
        assert skipped == []
        np.testing.assert_array_equal(series.hu[0], np.maximum(ref - 1024, HU_MIN))
        (tmp_path / name).unlink()


# --------------------------------------------------------------------------- skips


def test_localizer_mixed_into_a_series_folder_is_skipped(tmp_path: Path) -> None:
    sid = uid("with-scout")
    write_series(tmp_path, ramp(5), series_uid=sid)
    scout = ct_dataset(
        np.full((16, 16), 1000),
        series_uid=sid,
        orientation=CORONAL,
        image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"),
        instance_number=99,
    )
    save(scout, tmp_path / "scout.dcm")
    # A lone coronal image without the LOCALIZER flag in its own series: still a scout.
    lone = ct_dataset(np.full((16, 16), 1000), series_uid=uid("lone"), orientation=CORONAL)
    save(lone, tmp_path / "lone" / "x.dcm")
    (series,), skipped = load_dicom_folder(tmp_path)
    assert series.num_slices == 5
    assert reasons(skipped)["scout.dcm"] == "localizer"
    assert sorted(s.reason for s in skipped) == ["localizer", "localizer"]
    assert any(s.path == str(tmp_path / "lone") for s in skipped)


def test_coronal_reformat_series_is_skipped_as_non_axial(tmp_path: Path) -> None:
    pos = [(0.0, float(y), 0.0) for y in range(0, 12, 3)]
    write_series(tmp_path, ramp(4), series_uid=uid("cor"), positions=pos, orientation=CORONAL)
    assert [s.reason for s in load_dicom_folder(tmp_path)[1]] == ["non_axial"]


def test_truncated_file_is_reported_and_the_rest_loads(tmp_path: Path) -> None:
    paths = write_series(tmp_path, ramp(5), series_uid=uid("trunc"), shuffle=False)
    data = paths[2].read_bytes()
    paths[2].write_bytes(data[: len(data) - 100])
    (series,), skipped = load_dicom_folder(tmp_path)
    assert [(s.path, s.reason) for s in skipped] == [(str(paths[2]), "truncated")]
    assert "needs" in skipped[0].detail and "file has" in skipped[0].detail
    np.testing.assert_array_equal(series.hu[:, 0, 0], [0, 10, 30, 40])
    assert "missing_slices:1" in series.problems


def test_undecodable_pixel_data_drops_the_slice_and_names_the_file(tmp_path: Path) -> None:
    from pydicom.encaps import encapsulate, generate_frames

    paths = write_series(
        tmp_path, ramp(4), series_uid=uid("bad-rle"), shuffle=False, compress=RLELossless
    )
    ds = pydicom.dcmread(paths[3])
    (frame,) = generate_frames(ds.PixelData, number_of_frames=1)
    # Keep the 64-byte RLE header, drop the segment data: every decoder must refuse it.
    bad = frame[:64]
    ds.PixelData = encapsulate([bad])
    ds.save_as(paths[3])
    (series,), skipped = load_dicom_folder(tmp_path)
    assert [(s.path, s.reason) for s in skipped] == [(str(paths[3]), "decode_error")]
    assert series.num_slices == 3
    np.testing.assert_array_equal(series.hu[:, 0, 0], [0, 10, 20])
    assert "unreadable_slices:1" in series.problems


def test_non_dicom_missing_pixels_and_corrupt_headers_never_abort_the_walk(
    tmp_path: Path,
) -> None:
    write_series(tmp_path / "ok", ramp(3), series_uid=uid("ok"))
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "random.bin").write_bytes(np.random.default_rng(0).bytes(2000))
    ds = ct_dataset(np.zeros((8, 8)), series_uid=uid("nopix"))
    del ds.PixelData
    save(ds, tmp_path / "nopix.dcm")
    # A CT header whose SeriesDescription length field is garbage: the element runs
    # past the end of the file. Reported by name, not read as a short header.
    good = save(ct_dataset(np.zeros((8, 8)), series_uid=uid("b")), tmp_path / "broken.dcm")
    raw = bytearray(good.read_bytes())
    at = raw.find(b"ABDOMEN")
    raw[at - 2 : at] = b"\xff\xf0"
    good.write_bytes(bytes(raw))
    series, skipped = load_dicom_folder(tmp_path)
    assert len(series) == 1 and series[0].num_slices == 3
    got = reasons(skipped)
    assert got["notes.txt"] == "not_dicom"
    assert got["random.bin"] == "not_dicom"
    assert got["nopix.dcm"] == "no_pixel_data"
    assert got["broken.dcm"] == "truncated"
    assert all(s.reason in SKIP_REASONS for s in skipped)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("MR_small.dcm", "modality"),
        ("rtstruct.dcm", "rt_object"),
        ("rtdose.dcm", "rt_object"),
        ("test-SR.dcm", "structured_report"),
        ("liver_1frame.dcm", "segmentation"),
        ("JPEG2000.dcm", "secondary_capture"),
        ("dicomdirtests/DICOMDIR", "dicomdir"),
    ],
)
def test_bundled_non_ct_objects_are_skipped_by_name(name: str, reason: str) -> None:
    result = read_slices(bundled(name))
    assert isinstance(result, Skipped)
    assert result.reason == reason


def test_dose_report_sr_and_screen_capture_are_dose_reports(tmp_path: Path) -> None:
    sr = ct_dataset(np.zeros((4, 4)), series_uid=uid("dose"), modality="SR")
    sr.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.67"
    save(sr, tmp_path / "dose_sr.dcm")
    page = ct_dataset(np.zeros((4, 4)), series_uid=uid("page"), series_description="Dose Report")
    save(page, tmp_path / "dose_page.dcm")
    _, skipped = load_dicom_folder(tmp_path)
    assert reasons(skipped) == {"dose_sr.dcm": "dose_report", "dose_page.dcm": "dose_report"}


def test_duplicate_instances_are_loaded_once(tmp_path: Path) -> None:
    paths = write_series(tmp_path / "a", ramp(3), series_uid=uid("dup"), shuffle=False)
    shutil.copytree(tmp_path / "a", tmp_path / "copy")
    (series,), skipped = load_dicom_folder(tmp_path)
    assert series.num_slices == 3
    assert sorted(s.reason for s in skipped) == ["duplicate_instance"] * 3
    assert all(str(p) in {s.detail[len("same as ") :] for s in skipped} for p in paths)


def test_decode_stored_reads_all_frames(tmp_path: Path) -> None:
    stored = np.stack([np.full((4, 4), k) for k in range(3)]).astype(np.int16)
    path = enhanced_ct(
        tmp_path / "mf.dcm",
        stored,
        series_uid=uid("frames"),
        positions=[(0, 0, k) for k in range(3)],
        intercepts=[0, 0, 0],
    )
    arr, _ = decode_stored(str(path), needs_dataset=False)
    assert arr.shape == (3, 4, 4) and arr[2, 0, 0] == 2


# --------------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def hcc(real_data: Path) -> dict:
    """The two HCC_015 series keyed by slice count (decoded once for this module)."""
    series, skipped = load_dicom_folder(real_data / "HCC_015")
    assert skipped == []
    return {s.num_slices: s for s in series}


@pytest.mark.real
def test_real_hcc_two_series_order_and_spacing(hcc: dict) -> None:
    by_n = hcc
    assert sorted(by_n) == [61, 62]
    for n, s in by_n.items():
        assert s.shape == (n, 512, 512)
        assert s.ordering == "normal" and s.problems == ()
        assert s.spacing == pytest.approx((2.5, 0.664062, 0.664062))
        z = [
            float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2])
            for f in s.files
        ]
        assert np.all(np.diff(z) == pytest.approx(2.5, abs=1e-3))  # ascending, feet to head
        assert s.origin[2] == pytest.approx(z[0])
        # InstanceNumber 1 (file 1-01.dcm) is the most superior slice in this export.
        assert Path(s.files[-1]).name == "1-01.dcm"
        assert s.acquisition == ""
    assert by_n[61].origin[2] == pytest.approx(-230.0)
    assert by_n[62].origin[2] == pytest.approx(-230.53, abs=1e-3)
    assert by_n[61].header["SeriesDescription"] == "Recon 2: LIVER 3 PHASE (AP)"


@pytest.mark.real
def test_real_hcc_early_arterial_has_bright_aorta_inside_the_body(hcc: dict) -> None:
    from scipy import ndimage

    eap = hcc[61]  # early arterial (README: aorta ~530 HU)
    mid = eap.hu[eap.num_slices // 2]
    body_lab, _ = ndimage.label(mid > -300)
    body = body_lab == np.argmax(np.bincount(body_lab.ravel())[1:]) + 1
    body = ndimage.binary_erosion(ndimage.binary_fill_holes(body), iterations=10)
    bright = (mid > 300) & body
    assert bright.sum() > 50
    # Air outside the body, not padding-sized negatives.
    assert eap.hu.min() == HU_MIN
    assert np.median(mid[~ndimage.binary_dilation(body, iterations=20)]) <= -990


# --------------------------------------------------------------------------- real archives


def _real_axial(real_data: Path) -> Path:
    return next((real_data / "HCC_015").glob("*/4.000000-*"))


def _link_series(src: Path, dst: Path) -> list[Path]:
    """The real series under `dst`, as symlinks (no 32 MB copy per test)."""
    dst.mkdir(parents=True, exist_ok=True)
    out = []
    for f in sorted(src.glob("*.dcm")):
        (dst / f.name).symlink_to(f)
        out.append(dst / f.name)
    return out


def _reoriented(
    src: Path, dst: Path, k: int, orientation: tuple, image_type: tuple[str, ...] | None = None
) -> Path:
    """A real slice rewritten as another plane of the same series (a new SOPInstanceUID),
    as archives file reformats and scouts under the axial series' UID."""
    ds = pydicom.dcmread(src)
    ds.ImageOrientationPatient = list(orientation)
    ds.ImagePositionPatient = [-170.0, 10.0 * k, -100.0]
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid("stray", src.name, k)
    if image_type is not None:
        ds.ImageType = list(image_type)
    ds.save_as(dst)
    return dst


@pytest.mark.real
def test_real_series_with_one_stray_coronal_image_keeps_its_axial_stack(
    real_data: Path, tmp_path: Path
) -> None:
    src = _real_axial(real_data)
    files = _link_series(src, tmp_path / "s")
    stray = _reoriented(files[0].resolve(), tmp_path / "s" / "z-coronal.dcm", 0, CORONAL)
    (series,), skipped = load_dicom_folder(tmp_path)
    assert series.num_slices == 61 and series.shape == (61, 512, 512)
    assert series.problems == ("minority_orientation:1",)
    assert [(Path(s.path).name, s.reason) for s in skipped] == [
        (stray.name, "minority_orientation")
    ]
    assert "1 of 62 images" in skipped[0].detail
    assert str(stray) not in series.files


@pytest.mark.real
def test_real_series_with_derived_reformats_keeps_its_axial_stack(
    real_data: Path, tmp_path: Path
) -> None:
    # Ten coronal MPRs (16% of the UID: too many to be "a few") are still dropped,
    # because their ImageType says they were derived from the axial stack.
    src = _real_axial(real_data)
    files = _link_series(src, tmp_path / "s")
    derived = ("DERIVED", "SECONDARY", "REFORMATTED")
    for k in range(10):
        _reoriented(files[k].resolve(), tmp_path / "s" / f"mpr{k}.dcm", k, CORONAL, derived)
    (series,), skipped = load_dicom_folder(tmp_path)
    assert series.num_slices == 61
    assert series.problems == ("minority_orientation:10",)
    assert sorted(Path(s.path).name for s in skipped) == [f"mpr{k}.dcm" for k in range(10)]
    assert {s.reason for s in skipped} == {"minority_orientation"}


@pytest.mark.real
def test_real_series_with_two_competing_stacks_is_still_refused(
    real_data: Path, tmp_path: Path
) -> None:
    # Twenty ORIGINAL coronal images next to 61 axial ones: neither a few strays nor
    # derived images, so which stack is "the series" is not a guess phasejax makes.
    src = _real_axial(real_data)
    files = _link_series(src, tmp_path / "s")
    for k in range(20):
        _reoriented(files[k].resolve(), tmp_path / "s" / f"cor{k}.dcm", k, CORONAL)
    series, skipped = load_dicom_folder(tmp_path)
    assert series == []
    assert [s.reason for s in skipped] == ["mixed_orientation"]
    assert "81 images" in skipped[0].detail


@pytest.mark.real
def test_real_header_claiming_8_bits_over_16_bit_pixels_fails_that_file(
    real_data: Path, tmp_path: Path
) -> None:
    src = _real_axial(real_data)
    files = _link_series(src, tmp_path / "s")
    victim = files[30]
    ds = pydicom.dcmread(victim.resolve())
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    victim.unlink()
    ds.save_as(victim)
    (series,), skipped = load_dicom_folder(tmp_path)
    assert [(Path(s.path).name, s.reason) for s in skipped] == [
        (victim.name, "pixel_length_mismatch")
    ]
    assert "524288 bytes" in skipped[0].detail and "needs 262144" in skipped[0].detail
    assert series.num_slices == 60 and "missing_slices:1" in series.problems


def test_pixel_length_allows_one_pad_byte_and_refuses_more(tmp_path: Path) -> None:
    # 3x3 pixels of 8 bits = 9 bytes, written padded to 10 by DICOM's even-length rule.
    ds = ct_dataset(np.zeros((3, 3)), series_uid=uid("odd"))
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = bytes(range(9))
    save(ds, tmp_path / "odd.dcm")
    (info,) = read_slices(tmp_path / "odd.dcm")  # type: ignore[misc]
    assert info.rows == 3
    ds.PixelData = bytes(12)
    save(ds, tmp_path / "long.dcm")
    got = read_slices(tmp_path / "long.dcm")
    assert isinstance(got, Skipped) and got.reason == "pixel_length_mismatch"
    ds.Rows = 0
    save(ds, tmp_path / "zero.dcm")
    got = read_slices(tmp_path / "zero.dcm")
    assert isinstance(got, Skipped) and (got.reason, got.detail) == ("bad_pixel_header", "Rows")


@pytest.mark.parametrize("spacing", [(0.0, 0.7), (-0.7, -0.7)])
def test_zero_or_negative_pixel_spacing_refuses_the_series(
    tmp_path: Path, spacing: tuple[float, float]
) -> None:
    write_series(tmp_path, ramp(3), series_uid=uid("ps", spacing), pixel_spacing=spacing)
    series, skipped = load_dicom_folder(tmp_path)
    assert series == []
    assert [s.reason for s in skipped] == ["invalid_pixel_spacing"]
    assert f"PixelSpacing {spacing[0]:g}\\{spacing[1]:g} mm" in skipped[0].detail


@pytest.mark.parametrize(("slope", "intercept"), [(0.0, -1024.0), (-1.0, 0.0), (1.0, 1e300)])
def test_impossible_rescale_is_skipped_not_turned_into_infinite_hu(
    tmp_path: Path, slope: float, intercept: float
) -> None:
    save(ct_dataset(ramp(1)[0], series_uid=uid("rs"), slope=slope, intercept=intercept),
         tmp_path / "x.dcm")  # fmt: skip
    got = read_slices(tmp_path / "x.dcm")
    assert isinstance(got, Skipped) and got.reason == "bad_rescale"
    assert got.detail == f"RescaleSlope {slope:g}, RescaleIntercept {intercept:g}"
