"""Fuzzing the DICOM reader with headers and pixel data broken the ways archives break them.

Every case starts from a real slice of ../shared/data/real (cropped to 64x64 so that
hundreds of cases write and read in seconds; every header element is the scanner's),
gets fresh UIDs, and then a seeded mix of mutations: deleted elements (listed ones and
any element at random), wrong values and wrong VRs for the geometry, pixel-description
and rescale elements, a TransferSyntaxUID that lies about the encoding, pixel data cut
short and files cut short. A case is a folder of one or two slices (the second one
mutated or not), so series-level checks run too.

What must hold for the whole batch: discovery and decoding never raise; every reason is
a name from SKIP_REASONS; every input file ends up in exactly one place, a decoded
series or a skip (its own, or its series folder's); every decoded series has finite HU
and an inspect row. The default run is a few hundred cases (< 15 s); `-m slow` runs
thousands more with other seeds.
"""

from __future__ import annotations

import copy
import random
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from phasejax.data.dicom import SKIP_REASONS
from phasejax.data.discover import discover, inspect_paths, load_plan, series_row

CROP = 64
UID_PREFIX = "1.2.826.0.1.3680043.10.1234.99."

# Elements whose values matter to the reader, with bad values to try: (VR, value).
BAD_VALUES: dict[str, list[tuple[str, object]]] = {
    "Rows": [("US", 0), ("US", 1), ("US", CROP + 1), ("US", 65535), ("DS", "64.0"),
             ("LO", "abc"), ("US", [CROP, CROP])],
    "Columns": [("US", 0), ("US", CROP - 1), ("US", 40000), ("IS", "64"), ("LO", "")],
    "BitsAllocated": [("US", 0), ("US", 1), ("US", 8), ("US", 12), ("US", 32), ("US", 64),
                      ("LO", "x")],
    "BitsStored": [("US", 0), ("US", 8), ("US", 17), ("US", 40)],
    "HighBit": [("US", 40), ("US", 0)],
    "PixelRepresentation": [("US", 2), ("US", 0), ("US", 1), ("LO", "signed")],
    "SamplesPerPixel": [("US", 0), ("US", 3)],
    "PhotometricInterpretation": [("CS", "RGB"), ("CS", "YBR_FULL"), ("CS", ""),
                                  ("CS", "PALETTE COLOR")],
    "NumberOfFrames": [("IS", "0"), ("IS", "2"), ("IS", "-1"), ("LO", "many")],
    "RescaleSlope": [("DS", "0"), ("DS", "-1"), ("DS", "NaN"), ("DS", "inf"), ("DS", "1e308"),
                     ("LO", "abc"), ("DS", ["1", "2"]), ("DS", "1e-30")],
    "RescaleIntercept": [("LO", "abc"), ("DS", "1e308"), ("DS", "-1e308"), ("DS", "-1024.5")],
    "ImagePositionPatient": [("LO", ["a", "b", "c"]), ("DS", ["1", "2"]),
                             ("DS", ["nan", "0", "0"]), ("DS", ["1e400", "0", "0"]),
                             ("DS", ["0", "0", "0", "0"]), ("DS", "5")],
    "ImageOrientationPatient": [("DS", ["0"] * 6), ("DS", ["1", "0", "0", "1", "0", "0"]),
                                ("DS", ["1", "0", "0", "0", "1"]), ("LO", ["x"] * 6),
                                ("DS", ["1", "0", "0", "0", "0", "-1"]),
                                ("DS", ["1", "0", "0", "0", "0.996", "0.087"])],
    "PixelSpacing": [("DS", ["0", "0"]), ("DS", ["-0.7", "-0.7"]), ("DS", "0.7"),
                     ("LO", ["a", "b"]), ("DS", ["nan", "nan"]), ("DS", ["1e-9", "1e-9"]),
                     ("DS", ["0.7", "0"])],
    "SliceThickness": [("DS", "-5"), ("DS", "0"), ("LO", "thick")],
    "SliceLocation": [("DS", "nan"), ("LO", "here")],
    "InstanceNumber": [("LO", "first"), ("IS", "-3")],
    "AcquisitionNumber": [("LO", "A"), ("IS", "2")],
    "SOPClassUID": [("UI", "1.2.3"), ("UI", "1.2.840.10008.5.1.4.1.1.4"),
                    ("UI", "1.2.840.10008.5.1.4.1.1.7"), ("UI", "")],
    "Modality": [("CS", "MR"), ("CS", ""), ("CS", "SEG")],
    "SeriesInstanceUID": [("UI", "")],
    "ImageType": [("CS", ["DERIVED", "SECONDARY", "LOCALIZER"]), ("CS", "")],
    "PixelPaddingValue": [("SS", -5), ("US", 0), ("LO", "pad")],
    "AcquisitionTime": [("TM", "99:99"), ("LO", "noon")],
    "ContrastBolusStartTime": [("TM", "xx"), ("TM", "250000")],
    "KVP": [("DS", "abc"), ("DS", "-120")],
}  # fmt: skip
SYNTAXES = [
    "1.2.840.10008.1.2",  # implicit VR: the explicit body misparses
    "1.2.840.10008.1.2.2",  # big endian
    "1.2.840.10008.1.2.1.99",  # deflated: the body is not
    "1.2.840.10008.1.2.4.50",  # JPEG baseline over native bytes
    "1.2.840.10008.1.2.5",  # RLE over native bytes
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 over native bytes
    "1.2.3.4",  # not a transfer syntax
    "",
]


def _crop(ds: Dataset) -> Dataset:
    arr = ds.pixel_array
    r0, c0 = (ds.Rows - CROP) // 2, (ds.Columns - CROP) // 2
    ds.PixelData = np.ascontiguousarray(arr[r0 : r0 + CROP, c0 : c0 + CROP]).tobytes()
    ds.Rows = ds.Columns = CROP
    return ds


@pytest.fixture(scope="module")
def bases(real_data: Path) -> list[Dataset]:
    """Three real slices (both HCC_015 series), cropped, headers as the scanner wrote them."""
    eap = sorted(next((real_data / "HCC_015").glob("*/4.000000-*")).glob("*.dcm"))
    pvp = sorted(next((real_data / "HCC_015").glob("*/103.000000-*")).glob("*.dcm"))
    return [_crop(pydicom.dcmread(f)) for f in (eap[20], eap[21], pvp[30])]


def _fresh(ds: Dataset, case: int, k: int) -> Dataset:
    out = copy.deepcopy(ds)  # Dataset.copy() shares elements: mutations would leak
    out.SeriesInstanceUID = f"{UID_PREFIX}{case}"
    out.SOPInstanceUID = out.file_meta.MediaStorageSOPInstanceUID = f"{UID_PREFIX}{case}.{k}"
    return out


def _encode(vr: str, value: object) -> bytes:
    """Value bytes as a careless writer would put them: no validation, even length."""
    values = value if isinstance(value, list) else [value]
    if vr in ("US", "SS"):
        fmt = "<H" if vr == "US" else "<h"
        return b"".join(struct.pack(fmt, int(v)) for v in values)  # type: ignore[call-overload]
    raw = "\\".join(str(v) for v in values).encode("ascii")
    return raw + (b"\0" if vr == "UI" else b" ") * (len(raw) % 2)


def _set_bad(ds: Dataset, rng: random.Random) -> str:
    keyword = rng.choice(sorted(BAD_VALUES))
    vr, value = rng.choice(BAD_VALUES[keyword])
    tag = Tag(pydicom.datadict.tag_for_keyword(keyword))
    raw = _encode(vr, value)
    # A raw element is written as its bytes: pydicom would refuse to build most of these.
    ds[tag] = RawDataElement(tag, vr, len(raw), raw, 0, False, True)
    return f"{keyword}={vr}:{value!r}"


def _delete_listed(ds: Dataset, rng: random.Random) -> str:
    keyword = rng.choice([*sorted(BAD_VALUES), "PixelData", "StudyInstanceUID"])
    if keyword in ds:
        del ds[keyword]
    return f"del {keyword}"


def _delete_any(ds: Dataset, rng: random.Random) -> str:
    tag = rng.choice(list(ds.keys()))
    del ds[tag]
    return f"del {tag}"


def _cut_pixels(ds: Dataset, rng: random.Random) -> str:
    if "PixelData" not in ds or not ds.PixelData:
        return "pixels already gone"
    n = rng.randrange(0, len(ds.PixelData))
    ds.PixelData = ds.PixelData[:n]
    return f"pixels[:{n}]"


MUTATIONS: list[Callable[[Dataset, random.Random], str]] = [
    _set_bad, _set_bad, _set_bad, _delete_listed, _delete_any, _cut_pixels,
]  # fmt: skip


def _write(ds: Dataset, path: Path, rng: random.Random, log: list[str]) -> bool:
    """Write one mutated file (False when pydicom cannot encode a value: no file)."""
    if rng.random() < 0.15:
        # The body stays explicit VR little endian whatever the meta says: a lying header.
        ds.file_meta.TransferSyntaxUID = rng.choice(SYNTAXES)
        log.append(f"syntax {ds.file_meta.TransferSyntaxUID!r}")
    try:
        ds.save_as(path, implicit_vr=False, little_endian=True, force_encoding=True)
    except Exception:  # noqa: BLE001 - e.g. US -1: not a file an archive can hold either
        path.unlink(missing_ok=True)
        return False
    if rng.random() < 0.1:
        data = path.read_bytes()
        cut = rng.randrange(0, len(data))
        path.write_bytes(data[:cut])
        log.append(f"file[:{cut}]")
    return True


def make_cases(bases: list[Dataset], root: Path, n: int, seed: int) -> dict[Path, list[str]]:
    """n case folders under root; {file: mutations applied} for every file written.

    A case is one slice (any base) or two adjacent slices of one series (bases 0 and 1);
    the last slice of a case is always mutated, an earlier one sometimes.
    """
    rng = random.Random(seed)
    written: dict[Path, list[str]] = {}
    for case in range(n):
        folder = root / f"case{case:04d}"
        folder.mkdir(parents=True)
        members = [bases[0], bases[1]] if rng.random() < 0.5 else [rng.choice(bases)]
        for k, base in enumerate(members):
            ds = _fresh(base, case, k)
            log: list[str] = []
            if k == len(members) - 1 or rng.random() < 0.3:
                for _ in range(rng.choice((1, 1, 2, 3))):
                    log.append(rng.choice(MUTATIONS)(ds, rng))
            path = folder / f"{k}.dcm"
            if _write(ds, path, rng, log):
                written[path] = log
    return written


def check_batch(root: Path, written: dict[Path, list[str]]) -> dict[str, int]:
    """The batch-level properties of the module docstring; returns the outcome counts."""
    disc = discover([root])
    assert disc.n_files == len(written)
    series_files: dict[str, str] = {}
    skipped = list(disc.skipped)
    for plan in disc.plans:
        series, bad = load_plan(plan)
        skipped.extend(bad)
        if series is None:
            continue
        assert np.isfinite(series.hu).all(), (plan.source, [written[Path(f)] for f in plan.files])
        row = series_row(series, "dicom")
        assert row["num_slices"] == series.num_slices
        for f in series.files:
            assert f not in series_files, f"{f} in two series"
            series_files[f] = series.series_id
    assert {s.reason for s in skipped} <= set(SKIP_REASONS), {s.reason for s in skipped}
    by_file = {s.path for s in skipped}
    folders = {s.path for s in skipped if Path(s.path).is_dir()}
    for f, log in written.items():
        in_series = str(f) in series_files
        placed = in_series + (str(f) in by_file) + (str(f.parent) in folders)
        assert placed >= 1, f"{f} vanished ({log})"
        assert not (in_series and str(f) in by_file), f"{f} both decoded and skipped ({log})"
    doc = inspect_paths([root])
    assert doc["counts"]["files"] == len(written)
    assert len(doc["series"]) == len({s for s in series_files.values()})
    counts: dict[str, int] = {"series": len(doc["series"])}
    for s in skipped:
        counts[s.reason] = counts.get(s.reason, 0) + 1
    return counts


# pydicom warns when the test writes the invalid values it is asked to write.
@pytest.mark.filterwarnings("ignore::UserWarning:pydicom")
@pytest.mark.real
def test_fuzzed_real_headers_only_ever_give_named_outcomes(
    bases: list[Dataset], tmp_path: Path
) -> None:
    written = make_cases(bases, tmp_path, n=300, seed=0)
    counts = check_batch(tmp_path, written)
    # The batch exercised both sides: many series still decode, many files are refused.
    assert counts["series"] >= 50
    assert sum(v for k, v in counts.items() if k != "series") >= 100
    for reason in ("pixel_length_mismatch", "bad_pixel_header", "corrupt", "decode_error"):
        assert counts.get(reason, 0) > 0, (reason, counts)


@pytest.mark.filterwarnings("ignore::UserWarning:pydicom")
@pytest.mark.real
@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fuzzed_real_headers_long_run(bases: list[Dataset], tmp_path: Path, seed: int) -> None:
    written = make_cases(bases, tmp_path, n=1500, seed=seed)
    check_batch(tmp_path, written)
