"""What `phasejax predict` prints: the end-of-run summary and a readable table."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from phasejax.predict.schema import STATUS_FAILED, STATUS_SKIPPED
from phasejax.tables import text_table

if TYPE_CHECKING:
    from phasejax.predict.driver import PredictReport


def format_summary(report: PredictReport) -> str:
    """The end-of-run summary: counts per phase, header disagreements, failures, speed."""
    c = report.counts()
    total = report.seconds.get("total", 0.0)
    new = c["classified"]
    rate = f" ({new / total:.2f} series/s)" if total > 0 and new else ""
    lines = [
        f"classified {new} of {c['series']} series in {total:.1f} s{rate}"
        + (f"; {c['resumed']} already in the report (resumed)" if c["resumed"] else "")
        + (f"; {c['failed']} FAILED" if c["failed"] else ""),
    ]
    if new:
        per = ", ".join(f"{k} {v}" for k, v in c["per_phase"].items())
        lines.append(f"predicted: {per}; low confidence: {c['low_confidence']}")
        lines.append(
            f"header hints: {c['header_agree']} agree, {c['header_disagree']} disagree, "
            f"{c['header_unknown']} without a usable hint"
        )
        lines.append(
            f"anatomy (aorta, kidneys) and image network: {c['anatomy_agree']} agree, "
            f"{c['anatomy_disagree']} disagree, {c['anatomy_unread']} not read"
            + (" (the call weighs both; phasejax qc lists them)" if c["anatomy_disagree"] else "")
        )
    if c["skipped"]:
        by = ", ".join(f"{k}: {v}" for k, v in c["skipped_by_reason"].items())
        files = "file" if c["skipped"] == 1 else "files"
        lines.append(f"{c['skipped']} {files} skipped ({by})")
    if c["series"] == 0:
        lines.append("no CT series found under the given paths")
    return "\n".join(lines)


def format_table(rows: Sequence[dict[str, Any]], classes: Sequence[str]) -> str:
    """A readable table: classified and failed series, then skipped files."""
    series = [r for r in rows if r.get("status") != STATUS_SKIPPED]
    cols: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("series_id", lambda r: str(r.get("series_id") or "-")),
        ("patient", lambda r: str(r.get("patient_id") or "-")),
        ("acq", lambda r: str(r.get("acquisition") or "-")),
        ("phase", lambda r: str(r.get("predicted") or r.get("status", "").upper())),
        (
            "prob",
            lambda r: f"{float(r['top_prob']):.2f}" if r.get("top_prob") not in (None, "") else "-",
        ),
        ("conf", lambda r: str(r.get("confidence") or "-")),
        ("header", lambda r: str(r.get("header_phase") or "-")),
        ("agree", lambda r: str(r.get("header_agrees") or "-")),
        ("network", lambda r: str(r.get("network_phase") or "-")),
        ("anatomy", lambda r: str(r.get("anatomy_phase") or "-")),
        ("description", lambda r: str(r.get("description") or "-")[:28]),
        ("notes", _notes),
    ]
    lines = text_table(cols, series)
    skipped = [r for r in rows if r.get("status") == STATUS_SKIPPED]
    if skipped:
        lines.append("skipped:")
        for r in skipped:
            detail = f" ({r['detail']})" if r.get("detail") else ""
            lines.append(f"  {r['path']}: {r['reason']}{detail}")
    return "\n".join(lines)


def _notes(r: dict[str, Any]) -> str:
    if r.get("status") == STATUS_FAILED:
        return f"{r.get('reason')}: {r.get('detail')}"[:80]
    notes = list(r.get("confidence_reasons") or []) + list(r.get("problems") or [])
    return ",".join(dict.fromkeys(notes)) or "-"
