"""`phasejax qc`: header/image contradictions and inconsistent studies in a predict report.

Rows are written by hand in the report schema of phasejax.predict.schema (no model needed),
through the same writer `phasejax predict` uses, so the reader is exercised on both
CSV and JSON lines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from phasejax.cli import main
from phasejax.predict.report_io import read_report, write_report
from phasejax.predict.schema import complete_row, report_columns
from phasejax.qc import check_rows, format_findings, study_findings

CLASSES = ("EAP", "LAP", "PVP", "DP")
COLUMNS = report_columns(CLASSES)


def row(
    series_id: str,
    predicted: str,
    *,
    study: str = "1.2.3",
    patient: str = "P1",
    time: str = "",
    header_phase: str = "unknown",
    agrees: str = "",
    agent: str = "Iohexol 350",
    evidence: tuple[str, ...] = (),
    top: float = 0.9,
    fmt: str = "dicom",
    status: str = "ok",
) -> dict[str, Any]:
    probs = {f"p_{c}": (top if c == predicted else (1 - top) / 3) for c in CLASSES}
    r = {
        "series_id": series_id,
        "patient_id": patient,
        "study_uid": study,
        "path": f"/data/{series_id}",
        "format": fmt,
        "status": status,
        "predicted": predicted if status == "ok" else "",
        **(probs if status == "ok" else {}),
        "top_prob": top if status == "ok" else None,
        "confidence": "high" if top >= 0.6 else "low",
        "header_phase": header_phase,
        "header_agrees": agrees,
        "header_evidence": list(evidence),
        "contrast_agent": agent,
        "acquisition_time": time,
    }
    return complete_row(r, COLUMNS)


def kinds(findings) -> list[tuple[str, tuple[str, ...]]]:
    return [(f.kind, f.series_ids) for f in findings]


def test_header_contradicting_the_image_is_listed_with_its_evidence() -> None:
    ev = ("SeriesDescription 'ABD ARTERIAL' has 'arterial' -> AP",)
    rows = [
        row("a", "PVP", header_phase="AP", agrees="no", evidence=ev, top=0.93),
        row("b", "LAP", header_phase="AP", agrees="yes", evidence=ev),
        row("c", "DP", header_phase="unknown", agrees=""),
    ]
    findings = check_rows(rows)
    assert kinds(findings) == [("header_contradicts_image", ("a",))]
    assert findings[0].message == (
        "header says AP (SeriesDescription 'ABD ARTERIAL' has 'arterial' -> AP); "
        "image says PVP (p=0.93)"
    )


def test_anatomy_contradicting_the_image_is_listed_with_its_readings() -> None:
    anatomy = {"anatomy_phase": "PVP", "aorta_hu": 119.0, "kidney_cortex_hu": 149.0,
               "kidney_medulla_hu": 128.0}  # fmt: skip
    rows = [
        {
            **row("a", "DP", fmt="nifti", top=0.76),
            **anatomy,
            "anatomy_agrees": "no",
            "network_phase": "DP",
            "network_p_DP": 0.82,
        },  # fmt: skip
        {**row("b", "PVP"), **anatomy, "anatomy_agrees": "yes"},
        {**row("c", "PVP"), "anatomy_phase": "", "anatomy_agrees": ""},  # nothing read
        {
            **row("d", "EAP"),
            "anatomy_phase": "NC",
            "aorta_hu": "41.0",
            "kidney_cortex_hu": "",
            "anatomy_agrees": "no",
        },  # fmt: skip
    ]
    findings = check_rows(rows)
    assert kinds(findings) == [("anatomy_contradicts_image", ("a",)),
                               ("anatomy_contradicts_image", ("d",))]  # fmt: skip
    assert findings[0].message == (
        "anatomy says PVP (aorta 119 HU, renal cortex 149 HU, medulla 128 HU); "
        "image network says DP (p=0.82); combined call DP (p=0.76)"
    )
    assert findings[1].message.startswith("anatomy says NC (aorta 41 HU); image network says EAP")


def test_empty_contrast_agent_on_an_enhanced_series() -> None:
    rows = [
        row("enh", "PVP", agent=""),
        row("nc", "NC", agent=""),  # a non-contrast image needs no agent
        row("nii", "PVP", agent="", fmt="nifti", patient="", study=""),  # no header at all
        row("given", "DP", agent="Omnipaque"),
        row("failed", "", agent="", status="failed"),
    ]
    findings = check_rows(rows)
    assert kinds(findings) == [("contrast_agent_missing", ("enh",))]
    assert findings[0].message == "ContrastBolusAgent is empty, image is enhanced: PVP (p=0.90)"


def test_two_pvp_and_no_arterial_in_a_study() -> None:
    bad = [row("p1", "PVP"), row("p2", "PVP"), row("d", "DP")]
    (f,) = study_findings(bad)
    assert (f.kind, f.series_ids) == ("study_pvp_without_arterial", ("p1", "p2"))
    assert f.message == "2 series predicted PVP and none arterial (EAP/LAP)"
    assert study_findings([row("p1", "PVP"), row("p2", "PVP"), row("a", "LAP")]) == []
    assert study_findings([row("p1", "PVP"), row("d", "DP")]) == []
    # Per study: two PVP series in two different studies are no finding.
    assert check_rows([row("p1", "PVP", study="1.1"), row("p2", "PVP", study="1.2")]) == []


def test_delayed_acquired_before_portal_venous_by_acquisition_time() -> None:
    rows = [
        row("art", "LAP", time="101530"),
        row("dp", "DP", time="101600"),  # 10:16:00, before the PVP at 10:16:45
        row("pv", "PVP", time="101645.5"),
    ]
    (f,) = check_rows(rows)
    assert (f.kind, f.series_ids) == ("study_phase_order", ("dp", "pv"))
    assert f.message == ("DP series dp was acquired 46 s before PVP series pv (101600 < 101645.5)")
    in_order = [row("art", "LAP", time="101530"), row("pv", "PVP", time="101610"),
                row("dp", "DP", time="102000")]  # fmt: skip
    assert check_rows(in_order) == []
    # Two reconstructions of one acquisition (same time) are never compared, and a series
    # without any time is left out of the order check.
    same = [row("pv", "PVP", time="101610"), row("dp", "DP", time="101610.4"),
            row("x", "EAP", time="")]  # fmt: skip
    assert check_rows(same) == []


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_qc_command_reads_both_report_formats(tmp_path: Path, fmt: str, capsys) -> None:
    rows = [
        row("a", "PVP", header_phase="AP", agrees="no", evidence=("x -> AP", "y")),
        row("p2", "PVP", agent=""),
        row("d", "DP", time="100000"),
        row("p3", "PVP", time="100100"),
        {**complete_row({"path": "/data/notes.txt", "status": "skipped",
                         "reason": "not_dicom"}, COLUMNS)},
    ]  # fmt: skip
    path = write_report(tmp_path / f"report.{fmt}", rows, COLUMNS, fmt)
    back = read_report(path)
    assert [r["series_id"] for r in back] == ["a", "p2", "d", "p3", ""]
    assert back[0]["header_evidence"] == ["x -> AP", "y"]  # CSV lists come back as lists
    assert main(["qc", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("qc: 4 findings over 4 classified series in 1 studies")
    assert out.rstrip().endswith(
        "header_contradicts_image: 1, contrast_agent_missing: 1, "
        "study_pvp_without_arterial: 1, study_phase_order: 1"
    )
    assert "DP series d was acquired 60 s before PVP series p3" in out


def test_unreadable_reports_exit_1(tmp_path: Path, capsys) -> None:
    assert main(["qc", str(tmp_path / "missing.csv")]) == 1
    assert "cannot read the report" in capsys.readouterr().err
    garbage = tmp_path / "garbage.csv"
    garbage.write_text("name,age\nx,3\n")
    assert main(["qc", str(garbage)]) == 1
    assert "not a phasejax predict report" in capsys.readouterr().err
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"status": "ok", "series_id": "a", "predicted": "PVP"}\n{oops\n')
    assert main(["qc", str(broken)]) == 1
    assert "broken.jsonl:2: not a JSON line" in capsys.readouterr().err


def test_format_findings_without_findings() -> None:
    rows = [row("a", "LAP", time="100000"), row("b", "PVP", time="100100")]
    assert format_findings(check_rows(rows), rows) == (
        "qc: 0 findings over 2 classified series in 1 studies"
    )
