"""The report of `phasejax predict`: its columns, statuses and rows.

Report columns (`report_columns(classes)`; CSV cells of list columns are joined with
" | ", JSON lines keep lists and numbers; empty cells are "" / null)::

    series_id           make_series_id(SeriesInstanceUID, acquisition), as `phasejax inspect`
    patient_id          DICOM PatientID ("" for NIfTI)
    study_uid           StudyInstanceUID
    acquisition         "" unless one SeriesInstanceUID held several acquisitions
    path                series folder (DICOM) or file (NIfTI); the file for a skipped row
                        (name bytes that are not UTF-8 as \\xNN: phasejax.safe_text)
    format              dicom | nifti
    status              ok | skipped (a file that is no usable CT image) | failed (a series
                        that could not be decoded or prepared)
    predicted           the call: the phase of highest combined probability (ok rows)
    p_<PHASE>           the combined probability of each phase of the model's label set,
                        summing to 1: the network's posterior times the anatomy's
                        likelihood (phasejax.cohort.anatomy_reference.combine_with_network;
                        the network's alone where the anatomy read nothing)
    top_prob            probability of the predicted phase
    confidence          high | low (the rule: phasejax.predict.confidence)
    confidence_reasons  [low_probability:P<T, network_anatomy_disagree, few_slices:N<S,
                        short_coverage:Xmm, hu_range:p1/p50/p99, oblique:Ddeg,
                        thick_slices:Xmm, slab_clipped:Xmm, and the SUSPECT_PROBLEMS as
                        the loader wrote them (missing_slices:N, uneven_spacing:lo-hi mm, ...)]
    network_phase       the image network's own phase (highest network probability)
    network_p_<PHASE>   the image network's probability of each phase
    header_phase        phasejax.data.header hint: NC|EAP|LAP|AP|PVP|DP|unknown ("" NIfTI)
    header_agrees       yes | no | "" (no usable hint); AP agrees with EAP and LAP
    header_evidence     [the hint's evidence strings]
    aorta_hu            the aorta's HU over the slab, found from anatomy (phasejax.data.aorta;
                        None where it was not found)
    kidney_cortex_hu, kidney_medulla_hu   the renal cortex's and medulla's HU over the
                        kidneys, found from anatomy (phasejax.data.kidney; None: not found)
    anatomy_phase       what those HU say by the cohort's physiology: NC|AP|PVP|DP
                        (phasejax.cohort.anatomy_reference, at the header's kVp, else 120;
                        AP = early or late arterial; "" when nothing was read)
    anatomy_agrees      yes | no | "" (no reading): whether the anatomy's call is the
                        network's phase (AP agrees with EAP and LAP). The anatomy reads no
                        learned image features: it named all 12 real validation series
                        (README, "Where the gap is")
    seconds_after_injection   from ContrastBolusStartTime and AcquisitionTime, when both exist
    description, contrast_agent, acquisition_time, kvp   header fields (acquisition_time:
                        AcquisitionTime, else ContentTime, else SeriesTime, DICOM TM)
    num_slices, slice_mm, coverage_mm   the series as acquired
    hu_p1, hu_p50, hu_p99   HU percentiles of the series
    z_lo, z_hi, z_method    the liver-to-kidney slab on the cache grid (lung+kidney | lung | kidney | central)
    problems            [loader problems, phasejax.data.dicom]
    reason, detail      why a row is skipped or failed (reason: phasejax.data.dicom.SKIP_REASONS,
                        or prepare_error)

No patient names or birth dates are read or written: identifiers are PatientID and UIDs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from phasejax.cohort.anatomy_reference import call_from_anatomy, combine_with_network
from phasejax.data.dicom import Skipped
from phasejax.data.discover import NiftiPlan, Plan
from phasejax.data.header import header_phase_hint
from phasejax.phases import ARTERIAL
from phasejax.predict.confidence import confidence_reasons
from phasejax.safe_text import clean_json

if TYPE_CHECKING:
    from phasejax.predict.inputs import PreparedSeries

STATUS_OK, STATUS_SKIPPED, STATUS_FAILED = "ok", "skipped", "failed"

LIST_SEPARATOR = " | "  # lists in CSV cells (evidence strings contain ";" and ",")

BASE_COLUMNS = (
    "series_id",
    "patient_id",
    "study_uid",
    "acquisition",
    "path",
    "format",
    "status",
    "predicted",
    # probability columns "p_<PHASE>" go here, in label-set order
    "top_prob",
    "confidence",
    "confidence_reasons",
    "network_phase",
    # network probability columns "network_p_<PHASE>" go here, in label-set order
    "header_phase",
    "header_agrees",
    "header_evidence",
    "aorta_hu",
    "kidney_cortex_hu",
    "kidney_medulla_hu",
    "anatomy_phase",
    "anatomy_agrees",
    "seconds_after_injection",
    "description",
    "contrast_agent",
    "acquisition_time",
    "kvp",
    "num_slices",
    "slice_mm",
    "coverage_mm",
    "hu_p1",
    "hu_p50",
    "hu_p99",
    "z_lo",
    "z_hi",
    "z_method",
    "problems",
    "reason",
    "detail",
)
LIST_COLUMNS = ("confidence_reasons", "header_evidence", "problems")
_NUMERIC = frozenset(
    {"top_prob", "aorta_hu", "kidney_cortex_hu", "kidney_medulla_hu", "seconds_after_injection",
     "num_slices", "slice_mm", "coverage_mm", "hu_p1", "hu_p50", "hu_p99", "z_lo", "z_hi"}
)  # fmt: skip


def prob_column(phase: str) -> str:
    return f"p_{phase}"


def network_prob_column(phase: str) -> str:
    return f"network_p_{phase}"


def with_probability_columns(
    base: Sequence[str], classes: Sequence[str], network_after: str
) -> list[str]:
    """`base` with the call's "p_<PHASE>" columns before "top_prob" and the network's
    "network_p_<PHASE>" columns after `network_after`, in label-set order."""
    i = base.index("top_prob")
    j = base.index(network_after) + 1
    return [
        *base[:i],
        *(prob_column(c) for c in classes),
        *base[i:j],
        *(network_prob_column(c) for c in classes),
        *base[j:],
    ]


def report_columns(classes: Sequence[str]) -> list[str]:
    """Column order of the CSV / keys of each JSON line for a model over `classes`."""
    return with_probability_columns(BASE_COLUMNS, classes, network_after="network_phase")


def phase_agreement(hint: str, predicted: str) -> str:
    """ "yes" / "no" when a second source (the header, the anatomy) gives a phase, "" when it
    says nothing ("" or "unknown").

    A hint "AP" (arterial, early or late not said) agrees with EAP and LAP.
    """
    if not hint or hint == "unknown" or not predicted:
        return ""
    if hint == "AP":
        return "yes" if predicted in {p.value for p in ARTERIAL} else "no"
    return "yes" if hint == predicted else "no"


def reference_kvp(header: dict[str, str]) -> float:
    """The tube voltage that the anatomy's reference is computed at: the header's where
    it is a plausible CT voltage, else 120 kVp (NIfTI carries none)."""
    try:
        kvp = float(header.get("KVP", ""))
    except ValueError:
        return 120.0
    # To 10 kV: each voltage's reference takes seconds to compute (and is cached).
    return float(round(kvp, -1)) if 70.0 <= kvp <= 150.0 else 120.0


def _round(x: float | None, nd: int = 1) -> float | None:
    return None if x is None else round(float(x), nd)


def series_row(
    prep: PreparedSeries,
    probs: np.ndarray,
    classes: Sequence[str],
    *,
    min_confidence: float,
    out_of_range: Sequence[str],
) -> dict[str, Any]:
    """The report row of a classified series: the call combines the network's `probs` with
    the anatomy's reading."""
    anatomy = call_from_anatomy(
        prep.aorta_hu, prep.kidney_cortex_hu, prep.kidney_medulla_hu, kvp=reference_kvp(prep.header)
    )
    anatomy_phase = anatomy.call
    network_phase = classes[int(np.argmax(probs))]
    combined = combine_with_network(probs, classes, anatomy)
    k = int(np.argmax(combined))
    top = float(combined[k])
    predicted = classes[k]
    anatomy_agrees = phase_agreement(anatomy_phase, network_phase)
    reasons = confidence_reasons(
        top, min_confidence, out_of_range, network_anatomy_disagree=anatomy_agrees == "no"
    )
    hint = header_phase_hint(prep.header) if prep.fmt == "dicom" else None
    header_phase = hint.phase if hint else ""
    row: dict[str, Any] = {
        "series_id": prep.series_id,
        "patient_id": prep.patient_id,
        "study_uid": prep.study_uid,
        "acquisition": prep.acquisition,
        "path": prep.source,
        "format": prep.fmt,
        "status": STATUS_OK,
        "predicted": predicted,
        **{prob_column(c): round(float(p), 6) for c, p in zip(classes, combined)},
        "top_prob": round(top, 6),
        "confidence": "low" if reasons else "high",
        "confidence_reasons": reasons,
        "network_phase": network_phase,
        **{network_prob_column(c): round(float(p), 6) for c, p in zip(classes, probs)},
        "header_phase": header_phase,
        "header_agrees": phase_agreement(header_phase, predicted),
        "header_evidence": list(hint.evidence) if hint else [],
        "aorta_hu": _round(prep.aorta_hu),
        "kidney_cortex_hu": _round(prep.kidney_cortex_hu),
        "kidney_medulla_hu": _round(prep.kidney_medulla_hu),
        "anatomy_phase": anatomy_phase,
        "anatomy_agrees": anatomy_agrees,
        "seconds_after_injection": _round(hint.seconds) if hint else None,
        "description": prep.header.get("SeriesDescription", ""),
        "contrast_agent": prep.header.get("ContrastBolusAgent", ""),
        "acquisition_time": _acquisition_time(prep.header),
        "kvp": prep.header.get("KVP", ""),
        "num_slices": prep.num_slices,
        "slice_mm": round(prep.slice_mm, 3),
        "coverage_mm": round(prep.coverage_mm, 1),
        "hu_p1": _round(prep.hu[0]),
        "hu_p50": _round(prep.hu[1]),
        "hu_p99": _round(prep.hu[2]),
        "z_lo": prep.z_lo,
        "z_hi": prep.z_hi,
        "z_method": prep.z_method,
        "problems": list(prep.problems),
        "reason": "",
        "detail": "",
    }
    return row


def _acquisition_time(header: dict[str, str]) -> str:
    """When the series was acquired (DICOM TM): AcquisitionTime, else ContentTime,
    else SeriesTime. Used by qc to check the order of phases within a study."""
    for key in ("AcquisitionTime", "ContentTime", "SeriesTime"):
        value = (header.get(key) or "").strip()
        if value:
            return value
    return ""


def skipped_row(skip: Skipped) -> dict[str, Any]:
    return {
        "path": skip.path,
        "status": STATUS_SKIPPED,
        "reason": skip.reason,
        "detail": skip.detail,
    }


def failed_row(plan: Plan, reason: str, detail: str) -> dict[str, Any]:
    return {
        "series_id": plan.series_id,
        "patient_id": plan.patient_id,
        "study_uid": plan.study_uid,
        "acquisition": plan.acquisition,
        "path": plan.source,
        "format": "nifti" if isinstance(plan, NiftiPlan) else "dicom",
        "status": STATUS_FAILED,
        "reason": reason,
        "detail": detail,
    }


def complete_row(row: dict[str, Any], columns: Sequence[str]) -> dict[str, Any]:
    """Every column present (lists for list columns, "" / None elsewhere), in order, with
    paths and other text made writable (`phasejax.safe_text.clean_json`)."""
    out: dict[str, Any] = {}
    for c in columns:
        v = row.get(c)
        if c in LIST_COLUMNS:
            out[c] = list(v) if v else []
        else:
            out[c] = "" if v is None and c not in _NUMERIC else v
    return clean_json(out)


def sort_key(row: dict[str, Any]) -> tuple:
    """Series by patient, study, acquisition time and id; skipped files last, by path."""
    skipped = row.get("status") == STATUS_SKIPPED
    return (
        skipped,
        str(row.get("patient_id") or ""),
        str(row.get("study_uid") or ""),
        str(row.get("acquisition_time") or ""),
        str(row.get("series_id") or ""),
        str(row.get("path") or ""),
    )
