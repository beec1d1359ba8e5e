"""`phasejax prepare`: labels matching, splits, resumability, the liver-to-kidney slab."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from dicom_factory import body_phantom, uid, write_series
from pydicom.uid import RLELossless

from phasejax.cli import main
from phasejax.data.cache import CacheSpec, load_volume, read_manifest
from phasejax.data.prepare import LabelsError, liver_kidney_slab, prepare, read_labels
from phasejax.data.series import make_series_id

SPEC = CacheSpec(spacing_z=5.0, size=32)


def _phantom_series(folder: Path, hu: float, n: int = 6, **kw) -> None:
    stored = np.stack([body_phantom(32, 32, hu) + 1024] * n).astype(np.int32)
    write_series(folder, stored, **kw)


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    """P1: two acquisitions under one UID in one folder; P2: two folders; P3: a NIfTI and an
    unlabelled DICOM series."""
    r = tmp_path / "root"
    _phantom_series(
        r / "P1" / "s1", 300.0, series_uid=uid("P1"), acquisition_number=1, patient_id="P1"
    )
    _phantom_series(
        r / "P1" / "s1", 150.0, series_uid=uid("P1"), acquisition_number=2, patient_id="P1", seed=4
    )
    _phantom_series(r / "P2" / "a", 280.0, series_uid=uid("P2a"), patient_id="P2")
    _phantom_series(r / "P2" / "b", 110.0, series_uid=uid("P2b"), patient_id="P2")
    _phantom_series(r / "P3" / "dicom", 45.0, series_uid=uid("P3"), patient_id="P3")
    vol = np.full((32, 32, 8), 45.0, dtype=np.float32)
    vol[:4] = -1000
    nib.save(nib.Nifti1Image(vol, np.diag([0.7, 0.7, 2.5, 1.0])), r / "P3" / "vol.nii.gz")
    (r / "notes.txt").write_text("x")
    return r


LABELS = [
    {"series_id": make_series_id(uid("P1"), "1"), "phase": "arterial", "patient_id": "P1", "site": "A", "seconds": "35"},
    {"path": "P1/s1", "acquisition": "2", "phase": "portal venous", "patient_id": "P1", "site": "A", "seconds": "70"},
    {"series_uid": uid("P2a"), "phase": "EAP", "patient_id": "P2", "site": "B", "split": "external"},
    {"path": "P2/b", "phase": "delayed", "patient_id": "P2", "site": "B"},
    {"path": "P3/vol.nii.gz", "phase": "native", "site": "C", "patient_id": "P3"},
]  # fmt: skip


def write_labels(path: Path, rows: list[dict]) -> Path:
    cols = ["series_id", "path", "series_uid", "acquisition", "phase", "patient_id", "site", "split", "seconds"]  # fmt: skip
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow(r)
    return path


def mtimes(cache: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in (cache / "volumes").glob("*.npy")}


def test_prepare_writes_labelled_series_with_patient_splits(root: Path, tmp_path: Path) -> None:
    labels = write_labels(tmp_path / "labels.csv", LABELS)
    out = tmp_path / "cache"
    rep = prepare(root, labels, out, spec=SPEC, workers=2, split_seed=3, progress=False)
    assert (rep.prepared, rep.reused, rep.unlabelled, rep.failed_series) == (5, 0, 1, [])
    assert rep.unmatched_labels == [] and {s.reason for s in rep.skipped} == {"not_dicom"}
    rows = {r["series_id"]: r for r in read_manifest(out)}
    phase = {r["source"] + "/" + r["acquisition"]: r["phase"] for r in rows.values()}
    assert phase == {
        "P1/s1/1": "LAP",  # "arterial" = late arterial (phasejax.phases)
        "P1/s1/2": "PVP",
        "P2/a/": "EAP",
        "P2/b/": "DP",
        "P3/vol.nii.gz/": "NC",
    }
    # A split column fixes the patient's split for all of its series.
    assert {r["split"] for r in rows.values() if r["patient_id"] == "P2"} == {"external"}
    for pid in ("P1", "P3"):
        assert len({r["split"] for r in rows.values() if r["patient_id"] == pid}) == 1
    art = rows[make_series_id(uid("P1"), "1")]
    assert art["seconds"] == "35" and art["site"] == "A" and art["format"] == "dicom"
    assert art["acquisition"] == "1" and art["series_uid"] == uid("P1")
    # 6 slices at 2.5 mm span 12.5 mm -> 3 slices at 5 mm; 32 px over a 22.4 mm FOV.
    assert (art["num_slices"], art["spacing_z"], art["spacing_xy"]) == ("3", "5.0", "0.7")
    assert (art["z_lo"], art["z_hi"], art["z_method"]) == ("0", "3", "central")
    vol = load_volume(out, art["series_id"])
    assert vol.dtype == np.int16 and vol.shape == (3, 32, 32)
    assert vol[1, 16, 16] == 300 and vol[1, 0, 0] == -1000
    nifti = rows[next(s for s, r in rows.items() if r["format"] == "nifti")]
    assert nifti["orig_num_slices"] == "8" and nifti["z_method"] == "central"
    meta = json.loads((out / "cache.json").read_text())
    assert (meta["split_seed"], meta["size"], meta["spacing_z"]) == (3, 32, 5.0)


def test_rerun_is_a_no_op_and_an_interrupted_run_resumes(root: Path, tmp_path: Path) -> None:
    labels = write_labels(tmp_path / "labels.csv", LABELS)
    out = tmp_path / "cache"
    prepare(root, labels, out, spec=SPEC, progress=False)
    before = mtimes(out)
    again = prepare(root, labels, out, spec=SPEC, progress=False)
    assert (again.prepared, again.reused, again.refreshed) == (0, 5, 0)
    assert mtimes(out) == before
    # An interruption leaves a volume without its row (the row is written last).
    victim = make_series_id(uid("P2b"))
    (out / "volumes" / f"{victim}.json").unlink()
    resumed = prepare(root, labels, out, spec=SPEC, progress=False)
    assert (resumed.prepared, resumed.reused) == (1, 4)
    assert len(read_manifest(out)) == 5


def test_changed_labels_rewrite_rows_without_decoding(root: Path, tmp_path: Path) -> None:
    out = tmp_path / "cache"
    prepare(root, write_labels(tmp_path / "a.csv", LABELS), out, spec=SPEC, progress=False)
    before = mtimes(out)
    changed = [dict(r) for r in LABELS]
    changed[3]["phase"] = "PVP"
    rep = prepare(root, write_labels(tmp_path / "b.csv", changed), out, spec=SPEC, progress=False)
    assert (rep.prepared, rep.refreshed) == (0, 1)
    rows = {r["series_id"]: r for r in read_manifest(out)}
    assert rows[make_series_id(uid("P2b"))]["phase"] == "PVP"
    changed_files = {k for k, v in mtimes(out).items() if before[k] != v}
    assert changed_files <= {f"{make_series_id(uid('P2b'))}.npy"}


def test_unknown_phase_word_is_an_error_naming_the_line(root: Path, tmp_path: Path) -> None:
    bad = [dict(r) for r in LABELS]
    bad[1]["phase"] = "mystery phase"
    path = write_labels(tmp_path / "bad.csv", bad)
    with pytest.raises(LabelsError, match=r"bad\.csv:3: unknown phase word 'mystery phase'"):
        read_labels(path)


@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"], ids=["plain", "bom"])
def test_labels_csv_that_is_not_utf8_is_a_labels_error_naming_the_line(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], bom: bytes
) -> None:
    from phasejax.eval.labels import read_eval_labels

    rows = [dict(r) for r in LABELS]
    rows[2]["site"] = "Hôpital Nord"  # line 4
    text = write_labels(tmp_path / "utf8.csv", rows).read_text(encoding="utf-8")
    latin1 = tmp_path / "latin1.csv"  # a spreadsheet's Latin-1 export: "ô" is byte 0xf4
    latin1.write_bytes(bom + text.encode("latin-1"))
    expected = r"latin1\.csv:4: not UTF-8 text \(byte 0xf4: invalid continuation byte\)"
    with pytest.raises(LabelsError, match=expected):
        read_labels(latin1)
    with pytest.raises(LabelsError, match=expected):
        read_eval_labels(latin1)  # the evaluate labels share the reader
    args = ["prepare", "--root", str(root), "--out", str(tmp_path / "c"), "--quiet"]
    assert main([*args, "--labels", str(latin1)]) == 2
    err = capsys.readouterr().err
    assert "latin1.csv:4: not UTF-8 text" in err and "Traceback" not in err
    assert not (tmp_path / "c").exists()


def test_cli_exit_codes_and_messages(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = write_labels(tmp_path / "bad.csv", [{"path": "P2/b", "phase": "venousish"}])
    args = ["prepare", "--root", str(root), "--out", str(tmp_path / "c"), "--quiet"]
    assert main([*args, "--labels", str(bad), "--cache-size", "32"]) == 2
    assert "bad.csv:2" in capsys.readouterr().err
    assert main([*args, "--labels", str(tmp_path / "absent.csv")]) == 2
    assert (
        main([*args, "--labels", str(bad), "--val-fraction", "0.7", "--test-fraction", "0.5"]) == 2
    )
    good = write_labels(tmp_path / "good.csv", LABELS)
    assert main([*args, "--labels", str(good), "--cache-size", "32"]) == 0
    out = capsys.readouterr().out
    assert "5 prepared, 0 already cached" in out and "1 series not in the labels" in out


def test_series_that_cannot_be_decoded_fail_the_run_but_not_the_others(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stored = np.stack([body_phantom(32, 32, 60.0) + 1024] * 3).astype(np.int32)
    paths = write_series(root / "P4", stored, series_uid=uid("P4"), compress=RLELossless)
    for p in paths:  # keep the header, cut every frame's RLE data short
        data = p.read_bytes()
        p.write_bytes(data[:-300] + data[-8:])
    rows = [*LABELS, {"path": "P4", "phase": "PVP", "patient_id": "P4"}]
    args = [
        "prepare",
        "--root",
        str(root),
        "--out",
        str(tmp_path / "c"),
        "--quiet",
        "--cache-size",
        "32",
    ]
    rc = main([*args, "--labels", str(write_labels(tmp_path / "l.csv", rows))])
    captured = capsys.readouterr()
    assert rc == 1
    assert "5 prepared" in captured.out and "1 failed" in captured.out
    assert captured.err.count("FAILED") == 3  # each file named with its error
    assert all(f"FAILED {p}: decode_error" in captured.err for p in paths)


def test_ambiguous_and_conflicting_rows(root: Path, tmp_path: Path) -> None:
    amb = write_labels(tmp_path / "amb.csv", [{"path": "P1/s1", "phase": "PVP"}])
    with pytest.raises(LabelsError, match="matches 2 series"):
        prepare(root, amb, tmp_path / "c1", spec=SPEC, progress=False)
    two = [
        {"path": "P2/a", "phase": "EAP", "patient_id": "P2", "split": "test"},
        {"path": "P2/b", "phase": "DP", "patient_id": "P2", "split": "train"},
    ]
    with pytest.raises(LabelsError, match="patient P2 in two splits"):
        prepare(
            root, write_labels(tmp_path / "t.csv", two), tmp_path / "c2", spec=SPEC, progress=False
        )
    dup = [{"path": "P2/a", "phase": "EAP"}, {"series_uid": uid("P2a"), "phase": "PVP"}]
    with pytest.raises(LabelsError, match="two phases"):
        prepare(
            root, write_labels(tmp_path / "d.csv", dup), tmp_path / "c3", spec=SPEC, progress=False
        )


def test_unlabelled_series_are_skipped_or_included(root: Path, tmp_path: Path) -> None:
    labels = write_labels(tmp_path / "l.csv", LABELS[:1])
    rep = prepare(root, labels, tmp_path / "c", spec=SPEC, progress=False)
    assert (rep.prepared, rep.unlabelled) == (1, 5)
    rep = prepare(root, labels, tmp_path / "c2", spec=SPEC, progress=False, include_unlabelled=True)
    rows = read_manifest(tmp_path / "c2")
    assert rep.prepared == 6 and sorted(r["phase"] for r in rows) == ["", "", "", "", "", "LAP"]
    # Without a patient id anywhere (NIfTI), each series is its own patient.
    nifti = next(r for r in rows if r["format"] == "nifti")
    assert nifti["patient_id"] == nifti["series_id"]


def test_split_fractions_are_patient_level(tmp_path: Path) -> None:
    root = tmp_path / "root"
    for p in range(10):
        for s in range(2):
            _phantom_series(
                root / f"P{p}" / f"s{s}", 40.0, n=2, series_uid=uid(p, s), patient_id=f"P{p}"
            )
    rows = [{"path": f"P{p}/s{s}", "phase": "PVP"} for p in range(10) for s in range(2)]
    out = tmp_path / "c"
    prepare(root, write_labels(tmp_path / "l.csv", rows), out, spec=SPEC, progress=False,
            split_seed=1, val_fraction=0.2, test_fraction=0.3)  # fmt: skip
    man = read_manifest(out)
    by_patient: dict[str, set[str]] = {}
    for r in man:
        by_patient.setdefault(r["patient_id"], set()).add(r["split"])
    assert all(len(v) == 1 for v in by_patient.values())
    counts = {s: sum(1 for v in by_patient.values() if v == {s}) for s in ("train", "val", "test")}
    assert counts == {"train": 5, "val": 2, "test": 3}


# --------------------------------------------------------------------------- slab


def _torso(n: int, lung_from: int, gas_slices: tuple[int, ...] = ()) -> np.ndarray:
    """[n, 64, 64] HU: soft-tissue ellipse; posterior bilateral lung air from `lung_from`
    up; anterior bowel gas on `gas_slices`."""
    vol = np.stack([body_phantom(64, 64, 40.0)] * n)
    for k in range(lung_from, n):
        vol[k, 38:50, 14:26] = -850  # patient right, posterior
        vol[k, 38:50, 38:50] = -850  # patient left, posterior
    for k in gas_slices:
        vol[k, 14:26, 20:44] = -950  # anterior: supine bowel gas rises to the front
    return vol


def test_slab_starts_at_the_lung_bases_and_ignores_anterior_bowel_gas() -> None:
    vol = _torso(60, lung_from=50, gas_slices=(20, 21, 22, 30))
    # Lung bases at slice 50; no lung lateral to them to place the dome by, so it is
    # assumed 30 mm (6 slices) above them, and the slab 180 mm (36 slices) below it.
    assert liver_kidney_slab(vol, 5.0) == (20, 57, "lung")
    # Head-first order: the same slab, mirrored.
    assert liver_kidney_slab(vol[::-1], 5.0, superior_last=False) == (3, 40, "lung")
    # Rows stored posterior-to-anterior: the bowel gas would now be "posterior" but is
    # not bilateral-lateral lung; the lungs still are found once rows are flipped back.
    assert liver_kidney_slab(vol[:, ::-1], 5.0, posterior_down=False) == (20, 57, "lung")


def test_slab_falls_back_to_the_central_60_percent() -> None:
    no_lungs = _torso(50, lung_from=50, gas_slices=(10, 40))
    assert liver_kidney_slab(no_lungs, 5.0) == (10, 40, "central")
    chest_only = _torso(20, lung_from=0)
    assert liver_kidney_slab(chest_only, 5.0) == (4, 16, "central")


@pytest.mark.real
def test_real_data_prepare(real_data: Path, tmp_path: Path) -> None:
    folder = "HCC_015/11-01-1998-NA-CT ABDPEL WWO LIVER-64482"
    rows = [
        {"path": f"{folder}/4.000000-Recon 2 LIVER 3 PHASE AP-06472", "phase": "early arterial", "patient_id": "HCC_015"},
        {"path": f"{folder}/103.000000-LIVER 3 PHASE AP-44492", "phase": "portal venous", "patient_id": "HCC_015"},
        {"path": "example_ct.nii.gz", "phase": "non-contrast", "patient_id": "TS"},
    ]  # fmt: skip
    out = tmp_path / "cache"
    rep = prepare(real_data, write_labels(tmp_path / "l.csv", rows), out, progress=False)
    assert rep.ok and rep.prepared == 3
    man = {r["phase"]: r for r in read_manifest(out)}
    assert sorted(man) == ["EAP", "NC", "PVP"]
    assert man["EAP"]["split"] == man["PVP"]["split"]  # one patient, one split
    # 61 slices at 2.5 mm = 150 mm -> 31 slices at 5 mm; the liver-protocol scan runs from
    # just above the dome (last liver on cached slice 28, read by eye) down to the renal
    # hila, so the slab runs from the first slice to the dome.
    assert (man["EAP"]["num_slices"], man["EAP"]["z_method"]) == ("31", "lung+kidney")
    assert int(man["EAP"]["z_lo"]) == 0 and 27 <= int(man["EAP"]["z_hi"]) <= 30
    # Abdomen-pelvis NIfTI: lung bases at the top; the slab stops at the kidneys' lower
    # poles (cached slice 41, read by eye), above the pelvis.
    nc = man["NC"]
    assert nc["z_method"] == "lung+kidney" and nc["num_slices"] == "67"
    assert 40 <= int(nc["z_lo"]) <= 42 and int(nc["z_hi"]) == 67
    eap = load_volume(out, man["EAP"]["series_id"])
    assert eap.shape == (31, 256, 256) and eap.max() > 300
    assert os.path.isfile(out / "manifest.csv")


def test_formula_text_from_the_labels_is_defused_in_the_manifest(
    root: Path, tmp_path: Path
) -> None:
    rows = [dict(r) for r in LABELS]
    rows[0].update(site='=HYPERLINK("http://evil","x")', seconds="-35")
    rows[1].update(seconds="@SUM(A1:A9)", patient_id="P1")
    rows[3].update(site="+cmd|' /C calc'!A0")
    out = tmp_path / "cache"
    prepare(root, write_labels(tmp_path / "l.csv", rows), out, spec=SPEC, progress=False)
    with open(out / "manifest.csv", newline="") as f:
        man = {r["series_id"]: r for r in csv.DictReader(f)}
    art = man[make_series_id(uid("P1"), "1")]
    assert art["site"] == '\'=HYPERLINK("http://evil","x")'
    assert art["seconds"] == "-35"  # a number stays a number
    assert man[make_series_id(uid("P1"), "2")]["seconds"] == "'@SUM(A1:A9)"
    assert man[make_series_id(uid("P2b"))]["site"] == "'+cmd|' /C calc'!A0"
    assert art["z_lo"] == "0" and art["spacing_z"] == "5.0"  # computed columns untouched


def _real_eap(real_data: Path) -> Path:
    return next((real_data / "HCC_015").glob("*/4.000000-*"))


@pytest.mark.real
def test_real_truncated_volume_in_the_cache_is_prepared_again(
    real_data: Path, tmp_path: Path
) -> None:
    src = _real_eap(real_data)
    r = tmp_path / "root"
    (r / "eap").mkdir(parents=True)
    for f in sorted(src.glob("*.dcm")):
        (r / "eap" / f.name).symlink_to(f)
    labels = write_labels(tmp_path / "l.csv", [{"path": "eap", "phase": "EAP"}])
    out = tmp_path / "cache"
    first = prepare(r, labels, out, spec=SPEC, progress=False)
    assert (first.prepared, first.reused) == (1, 0)
    (npy,) = (out / "volumes").glob("*.npy")
    whole = npy.read_bytes()
    npy.write_bytes(whole[: len(whole) // 2])  # disk full / interrupted copy
    again = prepare(r, labels, out, spec=SPEC, progress=False)
    assert (again.prepared, again.reused) == (1, 0)
    assert npy.read_bytes() == whole
    assert prepare(r, labels, out, spec=SPEC, progress=False).reused == 1


@pytest.mark.real
def test_real_series_in_a_non_utf8_folder_is_written_to_the_manifest(
    real_data: Path, tmp_path: Path
) -> None:
    src = _real_eap(real_data)
    r = tmp_path / "root"
    folder = os.fsencode(r) + b"/caf\xe9"  # Latin-1 name: not UTF-8
    os.makedirs(folder)
    for f in sorted(src.glob("*.dcm")):
        os.symlink(f, folder + b"/" + os.fsencode(f.name))
    uid_ = "1.3.6.1.4.1.14519.5.2.1.1706.8374.335941118357087445834573906472"
    labels = write_labels(tmp_path / "l.csv", [{"series_uid": uid_, "phase": "EAP"}])
    out = tmp_path / "cache"
    rep = prepare(r, labels, out, spec=SPEC, progress=False)
    assert rep.ok and rep.prepared == 1
    text = (out / "manifest.csv").read_text(encoding="utf-8")  # strict: valid UTF-8
    (row,) = read_manifest(out)
    assert row["source"] == "caf\\xe9" and "caf\\xe9" in text
