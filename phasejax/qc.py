"""Quality control of a `phasejax predict` report: headers against images, studies against
the order of a contrast exam.

Series checks (one finding per series):

- `header_contradicts_image`: the header's phase hint (phasejax.data.header: timing,
  description keywords, an explicit "no contrast" agent) names a phase and the image
  model predicts another, e.g. a description that says "arterial" on a series whose
  image is portal venous. Which one is wrong is for a person to decide: the row
  carries the header evidence and the model's probability.
- `anatomy_contradicts_image`: the anatomy reader (the aorta's and kidneys' HU, found
  without learned image features, called by the cohort's physiology:
  phasejax.cohort.anatomy_reference) names a phase group and the image network
  (`network_phase`) another. The call (`predicted`) weighs both, so one of the two readers
  is overruled; on the real validation series the anatomy was right wherever they
  disagreed (README, "Where the gap is"), so these series are the first to look at.
  NIfTI rows get it too: the anatomy needs no header.
- `contrast_agent_missing`: ContrastBolusAgent is empty on a series whose image is
  enhanced (any predicted phase but NC). DICOM asks for the agent on every
  post-contrast image (Contrast/Bolus module); anonymisation often blanks it, which
  is exactly what a curation team wants to know before relying on headers.

Study checks (series grouped by patient and StudyInstanceUID):

- `study_pvp_without_arterial`: two or more series predicted PVP and none arterial.
  A multiphase liver/pancreas exam has its arterial series before the portal venous
  one; two "portal venous" series without any arterial one usually means an arterial
  acquisition was misread (or a PVP series was reconstructed twice: worth a look).
- `study_phase_order`: by acquisition time (AcquisitionTime, else ContentTime, else
  SeriesTime) the phases run backwards, e.g. a delayed series acquired before the
  portal venous one. Contrast kinetics fix the order NC < EAP < LAP < PVP < DP
  (DESIGN.md section 1). Series acquired at the same time (reconstructions of one
  acquisition) are never compared.

Only classified rows (status "ok") are checked; NIfTI rows carry no header, so only
the anatomy and study checks could apply to them, and they have no study UID either.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from phasejax.data.header import parse_tm
from phasejax.phases import ARTERIAL, Phase
from phasejax.predict.schema import STATUS_OK

PHASE_ORDER = {Phase.NC.value: 0, Phase.EAP.value: 1, Phase.LAP.value: 2, Phase.PVP.value: 3,
               Phase.DP.value: 4}  # fmt: skip
SAME_TIME_S = 1.0  # acquisitions closer than this are one acquisition (several recons)
KINDS = (
    "header_contradicts_image",
    "anatomy_contradicts_image",
    "contrast_agent_missing",
    "study_pvp_without_arterial",
    "study_phase_order",
)


@dataclass(frozen=True, kw_only=True)
class Finding:
    kind: str  # one of KINDS
    patient_id: str
    study_uid: str
    series_ids: tuple[str, ...]
    message: str


def _prob(row: dict[str, Any]) -> str:
    try:
        return f"p={float(row.get('top_prob')):.2f}"  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "p=?"


def _evidence(row: dict[str, Any]) -> str:
    ev = row.get("header_evidence") or []
    if isinstance(ev, str):
        ev = [ev]
    return "; ".join(str(e) for e in ev) or "no evidence recorded"


def series_findings(row: dict[str, Any]) -> list[Finding]:
    """Header- and anatomy-against-image findings of one classified row."""
    if row.get("status") != STATUS_OK:
        return []
    out: list[Finding] = []
    pid, study = str(row.get("patient_id") or ""), str(row.get("study_uid") or "")
    sid = str(row.get("series_id") or "")
    pred = str(row.get("predicted") or "")
    low = " (model confidence low)" if row.get("confidence") == "low" else ""

    def finding(kind: str, message: str) -> Finding:
        return Finding(
            kind=kind, patient_id=pid, study_uid=study, series_ids=(sid,), message=message
        )

    if row.get("header_agrees") == "no":
        out.append(
            finding(
                "header_contradicts_image",
                (
                    f"header says {row.get('header_phase')} ({_evidence(row)}); image says "
                    f"{pred} ({_prob(row)}){low}"
                ),
            )
        )
    if row.get("anatomy_agrees") == "no":
        read = [
            f"{name} {float(row[key]):.0f} HU"
            for name, key in (
                ("aorta", "aorta_hu"),
                ("renal cortex", "kidney_cortex_hu"),
                ("medulla", "kidney_medulla_hu"),
            )
            if row.get(key) not in (None, "")
        ]
        net = str(row.get("network_phase") or pred)
        net_p = row.get(f"network_p_{net}")
        net_prob = f" (p={float(net_p):.2f})" if net_p not in (None, "") else ""
        out.append(
            finding(
                "anatomy_contradicts_image",
                (
                    f"anatomy says {row.get('anatomy_phase')} ({', '.join(read)}); image "
                    f"network says {net}{net_prob}; combined call {pred} ({_prob(row)})"
                ),
            )
        )
    if (
        row.get("format", "dicom") == "dicom"
        and not str(row.get("contrast_agent") or "").strip()
        and pred
        and pred != Phase.NC.value
    ):
        out.append(
            finding(
                "contrast_agent_missing",
                f"ContrastBolusAgent is empty, image is enhanced: {pred} ({_prob(row)}){low}",
            )
        )
    return out


def _seconds(row: dict[str, Any]) -> float | None:
    return parse_tm(str(row.get("acquisition_time") or ""))


def study_findings(rows: Sequence[dict[str, Any]]) -> list[Finding]:
    """Findings of one study's classified rows (same patient and StudyInstanceUID)."""
    rows = [r for r in rows if r.get("status") == STATUS_OK and r.get("predicted")]
    if not rows:
        return []
    pid, study = str(rows[0].get("patient_id") or ""), str(rows[0].get("study_uid") or "")
    out: list[Finding] = []
    arterial = {p.value for p in ARTERIAL}
    pvp = [r for r in rows if r["predicted"] == Phase.PVP.value]
    if len(pvp) >= 2 and not any(r["predicted"] in arterial for r in rows):
        out.append(
            Finding(
                kind="study_pvp_without_arterial",
                patient_id=pid,
                study_uid=study,
                series_ids=tuple(str(r["series_id"]) for r in pvp),
                message=f"{len(pvp)} series predicted PVP and none arterial (EAP/LAP)",
            )
        )
    timed = [(t, r) for r in rows if (t := _seconds(r)) is not None]
    timed.sort(key=lambda tr: (tr[0], str(tr[1]["series_id"])))
    for i, (ta, a) in enumerate(timed):
        for tb, b in timed[i + 1 :]:
            if tb - ta < SAME_TIME_S:
                continue
            oa, ob = PHASE_ORDER.get(a["predicted"]), PHASE_ORDER.get(b["predicted"])
            if oa is None or ob is None or oa <= ob:
                continue
            # a was acquired first but is the later phase.
            out.append(
                Finding(
                    kind="study_phase_order",
                    patient_id=pid,
                    study_uid=study,
                    series_ids=(str(a["series_id"]), str(b["series_id"])),
                    message=(
                        f"{a['predicted']} series {a['series_id']} was acquired {tb - ta:.0f} s "
                        f"before {b['predicted']} series {b['series_id']} "
                        f"({a.get('acquisition_time')} < {b.get('acquisition_time')})"
                    ),
                )
            )
    return out


def check_rows(rows: Iterable[dict[str, Any]]) -> list[Finding]:
    """Every finding of a report's rows, ordered by patient, study and kind."""
    rows = list(rows)
    findings: list[Finding] = []
    studies: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        findings.extend(series_findings(r))
        pid, study = str(r.get("patient_id") or ""), str(r.get("study_uid") or "")
        if r.get("status") == STATUS_OK and (pid or study):
            studies[(pid, study)].append(r)
    for key in sorted(studies):
        findings.extend(study_findings(studies[key]))
    order = {k: i for i, k in enumerate(KINDS)}
    findings.sort(key=lambda f: (f.patient_id, f.study_uid, order[f.kind], f.series_ids))
    return findings


def format_findings(findings: Sequence[Finding], rows: Sequence[dict[str, Any]]) -> str:
    """A readable table of findings and a one-line count per kind."""
    n_series = sum(r.get("status") == STATUS_OK for r in rows)
    n_studies = len(
        {
            (str(r.get("patient_id") or ""), str(r.get("study_uid") or ""))
            for r in rows
            if r.get("status") == STATUS_OK
        }
    )
    head = f"qc: {len(findings)} findings over {n_series} classified series in {n_studies} studies"
    if not findings:
        return head
    cols = ("kind", "patient", "study", "series", "finding")
    cells = [
        (
            f.kind,
            f.patient_id or "-",
            _short(f.study_uid),
            ",".join(f.series_ids),
            f.message,
        )
        for f in findings
    ]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols[:-1])]
    lines = [head, ""]
    lines.append("  ".join(c.ljust(w) for c, w in zip(cols[:-1], widths)) + "  " + cols[-1])
    for row in cells:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row[:-1], widths)) + "  " + row[-1])
    counts: dict[str, int] = defaultdict(int)
    for f in findings:
        counts[f.kind] += 1
    lines.append("")
    lines.append(", ".join(f"{k}: {counts[k]}" for k in KINDS if counts[k]))
    return "\n".join(lines)


def _short(uid: str, keep: int = 12) -> str:
    """The tail of a UID (their distinctive part), so the table stays readable."""
    if not uid:
        return "-"
    return uid if len(uid) <= keep + 3 else "..." + uid[-keep:]
