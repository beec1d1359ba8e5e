"""What the DICOM header alone says about the contrast phase: a hint, never a label.

Used for quality control (flag series whose image-based prediction disagrees with
a clear header) and shown by `phasejax inspect`. Three sources of evidence, in
order of trust:

1. Timing: seconds from ContrastBolusStartTime to AcquisitionTime (else
   ContentTime). Acquired before the injection -> NC. Otherwise the phase whose
   typical window (DESIGN.md section 1: EAP ~15-25 s, LAP ~30-45 s, PVP ~60-80 s,
   DP ~2-5 min) is nearest, with boundaries at the midpoints 27.5 s, 52.5 s and
   100 s. Bolus-tracked protocols start the clock at injection too, so the windows
   hold; many anonymised exports blank these times, and then there is no timing.
2. Description keywords in SeriesDescription and ProtocolName ("portal", "delay",
   "art", "non con", "w/o"...). "AP" is deliberately NOT a keyword: in series
   descriptions it usually means abdomen/pelvis coverage (e.g. "LIVER 3 PHASE (AP)"
   in the HCC-TACE-Seg collection is an early arterial and a portal venous series).
   A bare arterial word gives "AP" (arterial, early or late not said).
3. Contrast agent: ContrastBolusAgent explicitly "none"/"no" -> NC. A filled agent
   field only says "contrast given", which is true of every post-contrast phase and
   of a non-contrast series of a contrast exam alike, so it is evidence, not a phase.

The result is the timing phase when there is timing, else a single consistent
keyword phase, else NC from an explicit "no agent", else "unknown". Conflicts
between sources are listed in the evidence.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

HINT_PHASES = ("NC", "EAP", "LAP", "AP", "PVP", "DP", "unknown")

# Timing boundaries in seconds after injection start (midpoints of the typical windows).
EAP_LAP_S = 27.5
LAP_PVP_S = 52.5
PVP_DP_S = 100.0

# Keyword patterns on lower-cased text with separators turned into spaces. Order
# matters only for the evidence listing; every match is collected.
_KEYWORDS: tuple[tuple[str, str], ...] = (
    (r"\bnon ?con(trast)?\b|\bnon ?enhanced\b|\bunenhanced\b|\bnative\b|\bplain\b", "NC"),
    (r"\bw ?o\b|\bwithout\b|\bpre ?contrast\b|\bprecontrast\b|\bpre\b|\bnc\b", "NC"),
    (r"\bearly art(erial)?\b|\beap\b|\bangio(gram|graphy)?\b|\bcta\b", "EAP"),
    (r"\blate art(erial)?\b|\blap\b|\bpancreatic\b", "LAP"),
    (r"\bart(erial|eriell)?\b|\bhepatic arterial\b", "AP"),
    (r"\bportal\b|\bpv\b|\bpvp\b|\bporto ?venous\b|\bvenous\b|\bven\b|\bnephrographic\b", "PVP"),
    (r"\bdelay(ed)?\b|\bdp\b|\bequilibrium\b|\beq\b|\bexcretory\b|\burogra(m|phy|phic)\b", "DP"),
    (r"\blate phase\b|\b(3|5|10|15) ?min\b", "DP"),
)
_NO_AGENT = re.compile(r"^(none|no|nil|n/a|without|0)$")


@dataclass(frozen=True)
class PhaseHint:
    phase: str  # one of HINT_PHASES
    evidence: tuple[str, ...] = ()
    seconds: float | None = None  # seconds after injection start, when the header has both times


def parse_tm(value: str) -> float | None:
    """DICOM TM ("HHMMSS.FFFFFF", also "HH:MM:SS" from old exports) -> seconds of day."""
    v = (value or "").strip().replace(":", "")
    if not v:
        return None
    m = re.fullmatch(r"(\d{2})(\d{2})?(\d{2})?(\.\d+)?", v)
    if not m:
        return None
    h, mi, s, frac = m.groups()
    return int(h) * 3600 + int(mi or 0) * 60 + int(s or 0) + float(frac or 0.0)


def seconds_after_injection(header: Mapping[str, str]) -> float | None:
    start = parse_tm(header.get("ContrastBolusStartTime", ""))
    acq = parse_tm(header.get("AcquisitionTime", "")) or parse_tm(header.get("ContentTime", ""))
    if start is None or acq is None:
        return None
    dt = acq - start
    if dt < -12 * 3600:  # the scan crossed midnight after the injection
        dt += 24 * 3600
    return dt


def phase_from_seconds(seconds: float) -> str:
    if seconds < 0:
        return "NC"
    if seconds < EAP_LAP_S:
        return "EAP"
    if seconds < LAP_PVP_S:
        return "LAP"
    if seconds < PVP_DP_S:
        return "PVP"
    return "DP"


def _normalise_text(text: str) -> str:
    return re.sub(r"[\s_\-.,:;()\[\]+]+", " ", text.lower()).strip()


def keyword_phases(text: str) -> list[tuple[str, str]]:
    """[(phase, matched words)] for every keyword found in a description."""
    # "W/WO" (with and without contrast) names the exam, not this series' phase.
    text = re.sub(r"\bw\s*(/|&|\+|and)\s*wo\b|\bwith and without\b", " ", text.lower())
    norm = _normalise_text(text).replace("/", " ")
    out: list[tuple[str, str]] = []
    for pattern, phase in _KEYWORDS:
        for m in re.finditer(pattern, norm):
            out.append((phase, m.group(0)))
    return out


def _combine_keywords(phases: set[str]) -> str | None:
    """One phase from several keyword hits, or None when they conflict."""
    if not phases:
        return None
    if phases <= {"AP", "EAP"}:
        return "EAP" if "EAP" in phases else "AP"
    if phases <= {"AP", "LAP"}:
        return "LAP" if "LAP" in phases else "AP"
    if len(phases) == 1:
        return next(iter(phases))
    return None


def header_phase_hint(header: Mapping[str, str]) -> PhaseHint:
    """The phase the header suggests, with the evidence, or "unknown". Never a label."""
    evidence: list[str] = []
    seconds = seconds_after_injection(header)
    timing_phase = None
    if seconds is not None:
        timing_phase = phase_from_seconds(seconds)
        evidence.append(f"acquired {seconds:.0f} s after ContrastBolusStartTime -> {timing_phase}")

    kw: set[str] = set()
    for field in ("SeriesDescription", "ProtocolName"):
        text = header.get(field, "") or ""
        for phase, words in keyword_phases(text):
            kw.add(phase)
            evidence.append(f"{field} {text!r} has {words!r} -> {phase}")
    kw_phase = _combine_keywords(kw)
    if kw and kw_phase is None:
        evidence.append(f"description keywords conflict: {sorted(kw)}")

    agent = (header.get("ContrastBolusAgent", "") or "").strip()
    agent_phase = None
    if agent:
        if _NO_AGENT.match(agent.lower()):
            agent_phase = "NC"
            evidence.append(f"ContrastBolusAgent {agent!r}: no contrast -> NC")
        else:
            evidence.append(f"ContrastBolusAgent {agent!r}: contrast given")

    if timing_phase is not None:
        phase = timing_phase
        if kw_phase and kw_phase != phase and not (kw_phase == "AP" and phase in ("EAP", "LAP")):
            evidence.append(f"timing ({phase}) disagrees with description ({kw_phase})")
    elif kw_phase is not None:
        phase = kw_phase
        if agent_phase == "NC" and phase != "NC":
            evidence.append(f"no contrast agent disagrees with description ({kw_phase})")
            phase = "unknown"
    elif agent_phase is not None:
        phase = agent_phase
    else:
        phase = "unknown"
    return PhaseHint(phase=phase, evidence=tuple(evidence), seconds=seconds)
