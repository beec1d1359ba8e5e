"""`phasejax inspect`: JSON document, table, exit codes, parallel decoding."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from dicom_factory import body_phantom, uid, write_series

from phasejax.cli import main
from phasejax.data.discover import inspect_paths, load_all
from phasejax.data.series import make_series_id

ROW_KEYS = {
    "series_id", "patient_id", "study_uid", "series_uid", "acquisition", "format", "source",
    "num_files", "num_slices", "shape", "spacing", "kvp", "description", "phase_hint",
    "phase_hint_evidence", "seconds_after_injection", "hu_p1", "hu_p50", "hu_p99", "ordering",
    "problems",
}  # fmt: skip


@pytest.fixture()
def archive(tmp_path: Path) -> Path:
    """Two phases under one UID (split by AcquisitionNumber), one plain series, a NIfTI,
    a text file and a scout."""
    two = uid("two")
    body = body_phantom(32, 32, 40.0) + 1024
    art = np.stack([body] * 4).astype(np.int32)
    art[:, 16, 16] = 1024 + 400
    write_series(
        tmp_path / "P1" / "s1",
        art,
        series_uid=two,
        acquisition_number=1,
        patient_id="P1",
        series_description="ART",
        acquisition_time="120020",
        extra={"ContrastBolusStartTime": "120000"},
    )
    write_series(
        tmp_path / "P1" / "s1",
        np.stack([body_phantom(32, 32, 120.0) + 1024] * 4).astype(np.int32),
        series_uid=two,
        acquisition_number=2,
        patient_id="P1",
        series_description="PORTAL",
        seed=9,
    )
    write_series(
        tmp_path / "P2" / "s",
        np.stack([body] * 3).astype(np.int32),
        series_uid=uid("p2"),
        patient_id="P2",
    )
    vol = np.full((10, 10, 5), 30.0, dtype=np.float32)
    vol[:2] = -1000
    nib.save(nib.Nifti1Image(vol, np.eye(4)), tmp_path / "vol.nii.gz")
    (tmp_path / "README.txt").write_text("notes")
    scout = np.full((1, 32, 32), 1000, dtype=np.int32)
    write_series(
        tmp_path / "P2" / "scout",
        scout,
        series_uid=uid("scout"),
        image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"),
    )
    return tmp_path


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict]:
    rc = main(["inspect", *args, "--json", "--quiet"])
    out = capsys.readouterr().out
    return rc, json.loads(out)


def test_json_document_rows_and_skips(archive: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, doc = run_json(capsys, str(archive))
    assert rc == 0
    assert doc["counts"]["series"] == 4
    assert doc["counts"]["files"] == 4 + 4 + 3 + 1 + 1 + 1
    assert doc["counts"]["skipped_by_reason"] == {"localizer": 1, "not_dicom": 1}
    assert {s["reason"] for s in doc["skipped"]} == {"localizer", "not_dicom"}
    rows = {r["series_id"]: r for r in doc["series"]}
    assert all(set(r) == ROW_KEYS for r in rows.values())
    art = rows[make_series_id(uid("two"), "1")]
    pv = rows[make_series_id(uid("two"), "2")]
    assert (art["acquisition"], pv["acquisition"]) == ("1", "2")
    assert art["num_slices"] == 4 and art["shape"] == [4, 32, 32]
    assert art["spacing"] == [2.5, 0.7, 0.7]
    assert art["phase_hint"] == "EAP" and art["seconds_after_injection"] == 20.0
    assert pv["phase_hint"] == "PVP"
    # The phantom is air (-1000) outside and 40 (art) / 120 (pv) HU inside.
    assert (art["hu_p1"], art["hu_p50"]) == (-1000.0, 40.0)
    assert (pv["hu_p1"], pv["hu_p50"], pv["hu_p99"]) == (-1000.0, 120.0, 120.0)
    nifti = [r for r in rows.values() if r["format"] == "nifti"]
    assert len(nifti) == 1 and nifti[0]["shape"] == [5, 10, 10]
    assert nifti[0]["ordering"] == "nifti"
    assert all(r["patient_id"] in ("P1", "P2", "") for r in rows.values())


def test_table_lists_series_then_skipped(archive: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["inspect", str(archive), "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["series_id", "patient", "acq", "slices"]
    assert sum(make_series_id(uid("two"), a) in out for a in "12") == 2
    assert "4 series from 14 files; 2 skipped (localizer: 1, not_dicom: 1)" in out
    assert "README.txt: not_dicom" in out


def test_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a.txt").write_text("x")
    rc, doc = run_json(capsys, str(tmp_path))
    assert rc == 1 and doc["series"] == [] and doc["counts"]["skipped"] == 1
    assert main(["inspect", str(tmp_path / "missing"), "--quiet"]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["inspect"])
    assert e.value.code == 2


def test_parallel_workers_give_the_same_document(archive: Path) -> None:
    one = inspect_paths([archive], workers=1)
    two = inspect_paths([archive], workers=2)
    assert one["series"] == two["series"]
    assert one["skipped"] == two["skipped"]
    series, skipped = load_all([archive], workers=2)
    assert sorted(s.series_id for s in series) == sorted(r["series_id"] for r in one["series"])


@pytest.mark.real
def test_real_data_inspect(real_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, doc = run_json(capsys, str(real_data))
    assert rc == 0
    rows = sorted(doc["series"], key=lambda r: r["num_slices"])
    assert [r["num_slices"] for r in rows] == [61, 62, 112]
    assert [r["format"] for r in rows] == ["dicom", "dicom", "nifti"]
    eap = rows[0]
    assert eap["patient_id"] == "HCC_015" and eap["kvp"] == "120"
    assert eap["phase_hint"] == "unknown"  # "(AP)" is abdomen/pelvis, not arterial
    assert eap["hu_p1"] == -1024.0 and eap["hu_p99"] > 200  # contrast-filled vessels
    assert doc["counts"]["skipped_by_reason"] == {"not_dicom": 1}  # README.md


@pytest.mark.parametrize("workers", [1, 2])
def test_map_plans_returns_errors_instead_of_raising(workers: int) -> None:
    from phasejax.data.discover import map_plans

    out = dict(map_plans(int, ["1", "x", "3"], workers=workers))
    assert (out["1"], out["3"]) == (1, 3)
    assert isinstance(out["x"], ValueError) and "'x'" in str(out["x"])


def _deny_listing(monkeypatch: pytest.MonkeyPatch, denied: Path) -> None:
    """os.scandir raising PermissionError for one folder: what a non-root user gets for a
    folder without read permission (as root, chmod 000 would not stop the walk)."""
    import os

    real = os.scandir

    def scandir(path=".", *a, **kw):  # type: ignore[no-untyped-def]
        if os.fsdecode(path) == str(denied):
            raise PermissionError(13, "Permission denied", os.fsdecode(path))
        return real(path, *a, **kw)

    monkeypatch.setattr(os, "scandir", scandir)


def test_unreadable_folder_is_reported_not_dropped(
    archive: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    denied = archive / "P2"
    _deny_listing(monkeypatch, denied)
    rc, doc = run_json(capsys, str(archive))
    assert rc == 0
    assert doc["counts"]["series"] == 3  # P2's series is behind the denied folder
    assert {"path": str(denied), "reason": "unreadable_dir",
            "detail": "PermissionError: Permission denied"} in doc["skipped"]  # fmt: skip
    assert doc["counts"]["skipped_by_reason"]["unreadable_dir"] == 1
    rc = main(["inspect", str(archive), "--quiet"])
    assert (
        f"{denied}: unreadable_dir (PermissionError: Permission denied)" in capsys.readouterr().out
    )


@pytest.mark.real
def test_non_utf8_folder_name_is_written_as_escapes(
    real_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import os

    src = next((real_data / "HCC_015").glob("*/4.000000-*"))
    folder = os.fsencode(tmp_path) + b"/caf\xe9"  # Latin-1 name: not UTF-8
    os.mkdir(folder)
    for f in sorted(src.glob("*.dcm")):
        os.symlink(f, folder + b"/" + os.fsencode(f.name))
    (Path(os.fsdecode(folder)) / "notes.txt").write_text("x")
    shown = f"{tmp_path}/caf\\xe9"
    rc, doc = run_json(capsys, str(tmp_path))
    assert rc == 0
    (row,) = doc["series"]
    assert row["num_slices"] == 61 and row["source"] == shown
    assert doc["skipped"] == [
        {"path": f"{shown}/notes.txt", "reason": "not_dicom", "detail": "no DICM preamble"}
    ]
    # The table, through a strict UTF-8 stdout (capsys would accept any string).
    proc = subprocess.run(
        [sys.executable, "-m", "phasejax.cli", "inspect", folder, "--quiet"],
        capture_output=True,
        env={**os.environ, "PYTHONIOENCODING": "utf-8:strict"},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert f"{shown}/notes.txt: not_dicom".encode() in proc.stdout
