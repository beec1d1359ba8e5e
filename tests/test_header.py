"""Header-only phase hints: timing, description keywords, contrast agent."""

from __future__ import annotations

from pathlib import Path

import pytest

from phasejax.data.header import (
    HINT_PHASES,
    header_phase_hint,
    keyword_phases,
    parse_tm,
    seconds_after_injection,
)


def test_parse_tm_formats() -> None:
    assert parse_tm("101520") == 10 * 3600 + 15 * 60 + 20
    assert parse_tm("101520.5") == 36920.5
    assert parse_tm("10:15:20") == 36920
    assert parse_tm("1015") == 10 * 3600 + 15 * 60
    assert parse_tm("") is None
    assert parse_tm("not a time") is None


@pytest.mark.parametrize(
    ("acq", "phase", "seconds"),
    [
        ("101520", "EAP", 20.0),
        ("101540", "LAP", 40.0),
        ("101610", "PVP", 70.0),
        ("101800", "DP", 180.0),
        ("101450", "NC", -10.0),
    ],
)
def test_timing_after_bolus_start(acq: str, phase: str, seconds: float) -> None:
    hint = header_phase_hint({"ContrastBolusStartTime": "101500", "AcquisitionTime": acq})
    assert (hint.phase, hint.seconds) == (phase, seconds)
    assert any("ContrastBolusStartTime" in e for e in hint.evidence)


def test_timing_across_midnight_and_content_time_fallback() -> None:
    h = {"ContrastBolusStartTime": "235950", "AcquisitionTime": "", "ContentTime": "000030"}
    assert seconds_after_injection(h) == 40.0
    assert header_phase_hint(h).phase == "LAP"


@pytest.mark.parametrize(
    ("description", "phase"),
    [
        ("PORTAL VENOUS 5mm", "PVP"),
        ("Arterial", "AP"),
        ("Early arterial 1.25", "EAP"),
        ("late art", "LAP"),
        ("DELAYED 3 MIN", "DP"),
        ("ABD W/O", "NC"),
        ("NON CON ABD", "NC"),
        ("Abdomen native", "NC"),
        ("LIVER 3 PHASE (AP)", "unknown"),  # (AP) = abdomen/pelvis coverage
        ("Recon 2: LIVER 3 PHASE (AP)", "unknown"),
        ("CT ABD/PEL W/WO", "unknown"),  # with and without: the exam, not the series
        ("AP 5.0 B30f", "unknown"),
    ],
)
def test_description_keywords(description: str, phase: str) -> None:
    hint = header_phase_hint({"SeriesDescription": description})
    assert hint.phase == phase
    assert hint.phase in HINT_PHASES
    if phase == "unknown":
        assert hint.evidence == ()


def test_conflicting_keywords_are_unknown_with_the_conflict_as_evidence() -> None:
    hint = header_phase_hint({"SeriesDescription": "ARTERIAL", "ProtocolName": "PORTAL"})
    assert hint.phase == "unknown"
    assert any("conflict" in e for e in hint.evidence)


def test_timing_wins_over_description_and_the_disagreement_is_listed() -> None:
    hint = header_phase_hint(
        {
            "SeriesDescription": "PORTAL",
            "ContrastBolusStartTime": "120000",
            "AcquisitionTime": "120018",
        }
    )
    assert hint.phase == "EAP"
    assert any("disagrees" in e for e in hint.evidence)


def test_contrast_agent_field() -> None:
    assert header_phase_hint({"ContrastBolusAgent": "NONE"}).phase == "NC"
    given = header_phase_hint({"ContrastBolusAgent": "OMNIPAQUE 350"})
    assert given.phase == "unknown"  # contrast given says nothing about which phase
    assert given.evidence == ("ContrastBolusAgent 'OMNIPAQUE 350': contrast given",)
    both = header_phase_hint({"ContrastBolusAgent": "none", "SeriesDescription": "portal"})
    assert both.phase == "unknown"


def test_keyword_matches_are_whole_words() -> None:
    assert keyword_phases("CAP 5mm") == []  # "ap" inside a word is nothing
    assert keyword_phases("Chest art") == [("AP", "art")]
    assert keyword_phases("partial") == []


@pytest.mark.real
def test_real_hcc_header_gives_no_phase(real_data: Path) -> None:
    from phasejax.data.dicom import read_slices

    folder = next((real_data / "HCC_015").glob("*/4.000000-*"))
    (info,) = read_slices(sorted(folder.glob("*.dcm"))[0])
    header = dict(info.header)
    assert header["SeriesDescription"] == "Recon 2: LIVER 3 PHASE (AP)"
    hint = header_phase_hint(header)
    assert hint.phase == "unknown" and hint.seconds is None
