"""Score a trained model on any labelled set of real studies.

    run = phasejax.train.restore.load_run("runs/paper_B")
    labels = read_eval_labels("my_set/labels.csv")
    ev = evaluate_paths(["my_set"], labels, run.cfg, run.model)
    summary = evaluation_summary(ev)
    write_evaluation(ev, summary, "eval_out")

Every series under the paths is found and classified by `phasejax.predict.driver.predict_paths`
itself (same discovery, preprocessing, batching and rows as `phasejax predict`); the
labels CSV (`phasejax.eval.labels`) says which predicted phases count as right for each
series. Series under the paths that the CSV does not name are listed as unlabelled and
not classified; CSV rows that name no series are listed as missing. Neither is scored.

A series is right when its predicted phase is among its accepted phases. A reference the
model's label set cannot express (NC for a 4-class model) is therefore always wrong; the
summary gives accuracy over every scored series and over the contrast-enhanced ones
(references that accept no NC), each with a 95% Wilson interval.

Per-series columns (`evaluation_columns(classes)`, then the CSV's carried columns)::

    name            display name: the CSV's path/file without extension, else the series id
    series_id       as `phasejax inspect` / `phasejax predict`
    csv_line        the labels CSV line of the series
    path            series folder (DICOM) or file (NIfTI)
    format          dicom | nifti
    status          ok | failed (could not be decoded or prepared: not scored)
    reference       the reference label (a phase code, or the CSV's group label, e.g. AP)
    accepts         accepted phases, "|"-separated in phase order
    predicted       the call (as `phasejax predict`: image network and anatomy combined)
    correct         1 | 0 ("" when failed)
    p_<PHASE>       the call's probability of each class of the model
    top_prob, confidence, confidence_reasons   as `phasejax predict`
    network_phase   the image network's own phase
    network_correct 1 | 0 when the network's phase is among the accepted phases
    network_p_<PHASE>   the image network's probability of each class
    aorta_hu, kidney_cortex_hu, kidney_medulla_hu, anatomy_phase   as `phasejax predict`:
                    the aorta and kidneys found from anatomy, and their call
    anatomy_correct 1 | 0 when the anatomy's call is among the accepted phases ("AP" where
                    EAP or LAP is), "" without a reading
    kvp             the header's tube voltage ("" for NIfTI), which the anatomy's call uses
    z_lo, z_hi, z_method   the liver-to-kidney slab on the cache grid
    slices          the cache slice index of each network input slice
    num_slices, slice_mm   the series as acquired
    problems, reason, detail   loader problems; why a series failed

This module imports no JAX at module level (the model side is predict's).
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from phasejax.cohort.anatomy_reference import call_accepted
from phasejax.config import Config
from phasejax.data.discover import discover
from phasejax.eval.labels import (
    ACCEPTS_SEPARATOR,
    EvalLabel,
    format_accepts,
    label_order,
    match_eval_labels,
)
from phasejax.eval.metrics import ACCEPTED_NLL_FLOOR, accepted_nll
from phasejax.eval.stats import DEFAULT_CONFIDENCE, jsonable, wilson_interval
from phasejax.infer import Classifier, Ensemble
from phasejax.phases import Phase, label_set
from phasejax.predict.driver import PredictOptions, PredictReport, predict_paths
from phasejax.predict.inputs import PreparedSeries
from phasejax.predict.report_io import write_report
from phasejax.predict.schema import (
    LIST_SEPARATOR,
    STATUS_FAILED,
    STATUS_OK,
    STATUS_SKIPPED,
    network_prob_column,
    prob_column,
    with_probability_columns,
)
from phasejax.tables import text_table

SERIES_FILE = "series.csv"
SUMMARY_FILE = "summary.json"
CONFUSION_STEM = "confusion"
SHEETS_DIR = "contact_sheets"
COMBINED_SHEET = "contact_sheet.png"

BASE_COLUMNS = (
    "name",
    "series_id",
    "csv_line",
    "path",
    "format",
    "status",
    "reference",
    "accepts",
    "predicted",
    "correct",
    # probability columns "p_<PHASE>" go here, in label-set order
    "top_prob",
    "confidence",
    "confidence_reasons",
    "network_phase",
    "network_correct",
    # network probability columns "network_p_<PHASE>" go here, in label-set order
    "aorta_hu",
    "kidney_cortex_hu",
    "kidney_medulla_hu",
    "anatomy_phase",
    "anatomy_correct",
    "kvp",
    "z_lo",
    "z_hi",
    "z_method",
    "slices",
    "num_slices",
    "slice_mm",
    "problems",
    "reason",
    "detail",
)
_COPIED = (
    "series_id", "path", "format", "status", "predicted", "top_prob", "confidence",
    "confidence_reasons", "network_phase", "aorta_hu", "kidney_cortex_hu",
    "kidney_medulla_hu", "anatomy_phase", "kvp", "z_lo", "z_hi", "z_method", "num_slices",
    "slice_mm", "problems", "reason", "detail",
)  # fmt: skip


def evaluation_columns(classes: Sequence[str], carried: Sequence[str] = ()) -> list[str]:
    """Columns of series.csv for a model over `classes`; carried CSV columns come last,
    prefixed "label_" where a name is taken by a computed column."""
    base = with_probability_columns(BASE_COLUMNS, classes, network_after="network_correct")
    return base + [carried_column(c, base) for c in carried]


def carried_column(name: str, base: Sequence[str]) -> str:
    return f"label_{name}" if name in base else name


@dataclass
class Evaluation:
    classes: tuple[str, ...]
    channels: tuple[str, ...]  # window name of each input channel
    rows: list[dict[str, Any]]  # one per labelled series found, scored or failed
    # Network inputs as uint8: display through a 256-level grey map shows exactly what the
    # float input shows, at a quarter of the memory for large sets.
    images: dict[str, np.ndarray]
    missing: list[EvalLabel]  # CSV rows that name no series under the paths
    unlabelled: list[dict[str, str]]  # series found that the CSV does not name
    carried: list[str]  # the CSV's extra columns, in CSV order
    predict: PredictReport
    meta: dict[str, Any] = field(default_factory=dict)  # model and inputs, for summary.json

    @property
    def exit_status(self) -> int:
        """0 when every labelled series was classified, 1 when some failed."""
        return 1 if any(r["status"] == STATUS_FAILED for r in self.rows) else 0


def evaluate_paths(
    paths: Sequence[str | os.PathLike[str]],
    labels: Sequence[EvalLabel],
    cfg: Config,
    model: Any,
    *,
    folders: Sequence[str] | None = None,
    options: PredictOptions | None = None,
    classifier: Classifier | Ensemble | None = None,
) -> Evaluation:
    """Classify the labelled series under `paths` and score them (see module docstring).

    `folders`: where a relative path of the labels CSV is looked up, in order
    (`phasejax.eval.labels.search_folders`); None: the folders of `paths`. Raises LabelsError when a row names several
    series or two rows label one series differently.
    """
    from phasejax.data.pipeline import select_slices
    from phasejax.data.windowing import window_names

    opts = options or PredictOptions()
    classes = label_set(cfg.data.label_set).codes
    disc = discover(paths, workers=opts.workers, progress=opts.progress)
    if folders is None:
        folders = [
            str(p) if os.path.isdir(p) else os.path.dirname(os.path.abspath(p)) for p in paths
        ]
    matched, missing = match_eval_labels(disc.plans, labels, folders)
    unlabelled = [p for p in disc.plans if p.series_id not in matched]
    # Unlabelled series cannot be scored: they are not classified at all.
    opts = replace(opts, skip_series=opts.skip_series | {p.series_id for p in unlabelled})

    images: dict[str, np.ndarray] = {}
    slices: dict[str, list[int]] = {}

    def keep(prep: PreparedSeries, row: dict[str, Any]) -> None:
        images[prep.series_id] = np.round(np.clip(prep.image, 0.0, 1.0) * 255).astype(np.uint8)
        # The same call preprocess makes (no jitter at inference): which cached slices
        # the network saw.
        idx = select_slices(
            prep.z_lo, prep.z_hi, prep.cached_slices, cfg.data.num_slices, cfg.data.slice_selection
        )
        slices[prep.series_id] = [int(i) for i in idx]

    report = predict_paths(
        paths,
        cfg,
        model,
        options=opts,
        classifier=classifier,
        on_series=keep,
        discovery=disc,
    )
    carried = list(dict.fromkeys(k for lab in labels for k in lab.extra))
    base = evaluation_columns(classes)
    rows = []
    for r in report.rows:
        if r["status"] == STATUS_SKIPPED or r["series_id"] not in matched:
            continue
        lab = matched[r["series_id"]]
        row = score_row(r, lab, classes)
        row["slices"] = slices.get(r["series_id"], [])
        row.update({carried_column(k, base): lab.extra.get(k, "") for k in carried})
        rows.append(row)
    _name_rows(rows, matched)
    rows.sort(key=lambda r: (int(r["csv_line"]), r["series_id"]))
    return Evaluation(
        classes=classes,
        channels=window_names(cfg.data.window),
        rows=rows,
        images=images,
        missing=missing,
        unlabelled=[{"series_id": p.series_id, "path": p.source} for p in unlabelled],
        carried=carried,
        predict=report,
        meta={"paths": [str(p) for p in paths], "label_set": cfg.data.label_set},
    )


def score_row(pred: dict[str, Any], label: EvalLabel, classes: Sequence[str]) -> dict[str, Any]:
    """The per-series row: predict's row scored against its label."""
    ok = pred["status"] == STATUS_OK
    row: dict[str, Any] = {c: pred.get(c) for c in _COPIED}
    row.update({prob_column(c): pred.get(prob_column(c)) for c in classes})
    row.update({network_prob_column(c): pred.get(network_prob_column(c)) for c in classes})
    row.update(
        name="",
        csv_line=label.line,
        reference=label.label,
        accepts=label.accepts_text,
        correct=int(pred["predicted"] in label.accepts) if ok else "",
        network_correct=int(pred.get("network_phase") in label.accepts) if ok else "",
        anatomy_correct=int(call_accepted(pred["anatomy_phase"], label.accepts))
        if ok and pred.get("anatomy_phase")
        else "",
    )
    return row


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _name_rows(rows: list[dict[str, Any]], matched: dict[str, EvalLabel]) -> None:
    """A readable, file-safe, unique name per series (contact sheet file names)."""
    names: list[str] = []
    for r in rows:
        lab = matched[r["series_id"]]
        name = r["series_id"]
        if lab.path:
            stem = Path(lab.path.rstrip("/\\")).name
            for ext in (".nii.gz", ".nii", ".dcm"):
                if stem.lower().endswith(ext):
                    stem = stem[: -len(ext)]
                    break
            if lab.acquisition is not None:
                stem += f"_acq{lab.acquisition}"
            name = _UNSAFE.sub("_", stem).strip("._") or name
        names.append(name)
    counts = Counter(names)
    for r, name in zip(rows, names):
        r["name"] = name if counts[name] == 1 else f"{name}_{r['series_id']}"


# --------------------------------------------------------------------------- scoring


def _proportion(k: int, n: int, confidence: float) -> dict[str, Any]:
    return {
        "k": int(k),
        "n": int(n),
        "value": k / n if n else float("nan"),
        "ci": list(wilson_interval(k, n, confidence)),
    }


def _codes(text: str) -> frozenset[str]:
    return frozenset(a for a in str(text).split(ACCEPTS_SEPARATOR) if a)


def _accepts(row: dict[str, Any]) -> frozenset[str]:
    return _codes(row["accepts"])


def _series_nll(
    rows: list[dict[str, Any]], classes: Sequence[str], column: Callable[[str], str] = prob_column
) -> np.ndarray:
    probs = np.array([[float(r[column(c)]) for c in classes] for r in rows], np.float64)
    accepted = np.array([[c in _accepts(r) for c in classes] for r in rows], bool)
    return accepted_nll(probs, accepted)


def evaluation_summary(
    ev: Evaluation, *, confidence: float = DEFAULT_CONFIDENCE, **meta: Any
) -> dict[str, Any]:
    """summary.json: accuracy with Wilson intervals over every scored series and over the
    contrast-enhanced ones, per-reference counts and sensitivity, the confusion counts
    (reference label x predicted class), and the missing / unlabelled / failed series."""
    scored = [r for r in ev.rows if r["status"] == STATUS_OK]
    contrast = [r for r in scored if Phase.NC.value not in _accepts(r)]
    anatomy = [r for r in scored if r["anatomy_correct"] != ""]  # the anatomy read something
    order = label_order((r["reference"], _accepts(r)) for r in ev.rows)
    accepts_of = {r["reference"]: _accepts(r) for r in ev.rows}
    per_label = {}
    counts = np.zeros((len(order), len(ev.classes)), dtype=np.int64)
    for i, label in enumerate(order):
        mine = [r for r in scored if r["reference"] == label]
        for r in mine:
            counts[i, ev.classes.index(r["predicted"])] += 1
        per_label[label] = {
            "accepts": format_accepts(accepts_of[label]),
            "expressible": bool(accepts_of[label] & set(ev.classes)),
            **_proportion(sum(int(r["correct"]) for r in mine), len(mine), confidence),
        }
    inexpressible = [r for r in scored if not (_accepts(r) & set(ev.classes))]
    out = {
        **ev.meta,
        **meta,
        "classes": list(ev.classes),
        "confidence_level": confidence,
        "n_labels": len(ev.rows) + len(ev.missing),
        "n": len(scored),
        "correct": sum(int(r["correct"]) for r in scored),
        "accuracy": _proportion(sum(int(r["correct"]) for r in scored), len(scored), confidence),
        "accuracy_contrast": _proportion(
            sum(int(r["correct"]) for r in contrast), len(contrast), confidence
        ),
        # Mean log score of the accepted phases: on a small set it separates two models
        # that accuracy cannot (phasejax.eval.metrics.accepted_nll).
        "nll": float(np.mean(_series_nll(scored, ev.classes))) if scored else None,
        "nll_floor": ACCEPTED_NLL_FLOOR,
        # The image network alone (the call without the anatomy): what ablations compare.
        "network_accuracy": _proportion(
            sum(int(r["network_correct"]) for r in scored), len(scored), confidence
        ),
        "network_accuracy_contrast": _proportion(
            sum(int(r["network_correct"]) for r in contrast), len(contrast), confidence
        ),
        "network_nll": float(np.mean(_series_nll(scored, ev.classes, network_prob_column)))
        if scored
        else None,
        "inexpressible": [r["name"] for r in inexpressible],
        "low_confidence": sum(r["confidence"] == "low" for r in scored),
        # The anatomy reader alone (phasejax.data.aorta, phasejax.data.kidney),
        # over the series it read.
        "anatomy_read": len(anatomy),
        "anatomy_accuracy": _proportion(
            sum(int(r["anatomy_correct"]) for r in anatomy), len(anatomy), confidence
        ),
        "per_label": per_label,
        "confusion": {"rows": order, "columns": list(ev.classes), "counts": counts.tolist()},
        "failed": [
            {
                "name": r["name"],
                "series_id": r["series_id"],
                "path": r["path"],
                "reason": r["reason"],
                "detail": r["detail"],
            }
            for r in ev.rows
            if r["status"] == STATUS_FAILED
        ],  # fmt: skip
        "missing": [
            {"line": lab.line, "names": lab.names(), "reference": lab.label} for lab in ev.missing
        ],
        "unlabelled": ev.unlabelled,
    }
    return jsonable(out)  # type: ignore[return-value]


# --------------------------------------------------------------------------- outputs


def write_evaluation(
    ev: Evaluation, summary: dict[str, Any], out: str | os.PathLike[str], *, sheets: bool = True
) -> dict[str, Path]:
    """series.csv, summary.json, confusion.png (+ .pdf) and the contact sheets under `out`."""
    from phasejax.plotting.evaluation import (
        accuracy_title,
        plot_label_confusion,
        save_sheet,
    )
    from phasejax.plotting.style import save_figure

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    columns = evaluation_columns(ev.classes, ev.carried)
    written["series"] = write_report(out / SERIES_FILE, ev.rows, columns, "csv")
    path = out / SUMMARY_FILE
    path.write_text(json.dumps(summary, indent=2) + "\n")
    written["summary"] = path
    conf = summary["confusion"]
    if conf["rows"]:
        acc = summary["accuracy"]
        accepted = [_codes(summary["per_label"][r]["accepts"]) for r in conf["rows"]]
        fig = plot_label_confusion(
            np.asarray(conf["counts"]),
            conf["rows"],
            conf["columns"],
            accepted,
            title=accuracy_title(acc["k"], acc["n"], acc["ci"]),
        )
        written["confusion"] = save_figure(fig, out / CONFUSION_STEM)[0]
    if sheets:
        rows = sheet_rows(ev)
        if rows:
            from phasejax.plotting.evaluation import plot_contact_sheet

            for r in rows:
                save_sheet(plot_contact_sheet([r]), out / SHEETS_DIR / f"{r.name}.png")
            written["contact_sheet"] = save_sheet(plot_contact_sheet(rows), out / COMBINED_SHEET)
    return written


def sheet_rows(ev: Evaluation) -> list[Any]:
    """Contact-sheet rows of the classified series, in series.csv order."""
    from phasejax.plotting.evaluation import SheetRow

    return [
        SheetRow(
            name=r["name"],
            image=ev.images[r["series_id"]],
            channels=ev.channels,
            reference=r["reference"],
            accepts=r["accepts"],
            predicted=r["predicted"],
            probability=float(r["top_prob"]),
            correct=bool(r["correct"]),
            slices=r["slices"],
            note=_sheet_note(r),
        )
        for r in ev.rows
        if r["status"] == STATUS_OK and r["series_id"] in ev.images
    ]


def _sheet_note(r: dict[str, Any]) -> str:
    notes = []
    if r.get("network_phase") and r["network_phase"] != r["predicted"]:
        notes.append(f"network {r['network_phase']}")
    if r["confidence"] == "low":
        notes.append("low confidence")
    return ", ".join(notes)


# --------------------------------------------------------------------------- text


def _pct(p: dict[str, Any]) -> str:
    if not p["n"]:
        return "0/0 (no series)"
    lo, hi = p["ci"]
    return f"{p['k']}/{p['n']} = {100 * p['value']:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]"


def format_evaluation(ev: Evaluation, summary: dict[str, Any]) -> str:
    """The stdout summary: accuracy lines, a per-series table, then what was not scored."""
    level = round(100 * summary["confidence_level"])
    lines = [
        f"accuracy {_pct(summary['accuracy'])} ({level}% Wilson)",
        f"contrast-enhanced only (no NC accepted): {_pct(summary['accuracy_contrast'])}",
    ]
    if summary["nll"] is not None:
        lines.append(
            f"log score {summary['nll']:.3f} nats: mean -ln(probability of the accepted "
            f"phases), floored at {summary['nll_floor']:g}; lower is better"
        )
    if summary["inexpressible"]:
        lines.append(
            f"{len(summary['inexpressible'])} series cannot be right: their reference is not "
            f"in the model's classes {','.join(ev.classes)} ({', '.join(summary['inexpressible'])})"
        )
    lines.append(
        f"image network alone: {_pct(summary['network_accuracy'])}"
        + (
            f", log score {summary['network_nll']:.3f}"
            if summary["network_nll"] is not None
            else ""
        )
    )
    lines.append(
        f"anatomy reader (aorta and kidneys found from anatomy + the cohort's HU physiology, "
        f"no learned image features): {_pct(summary['anatomy_accuracy'])} of the series it read"
    )
    per = ", ".join(f"{k} {v['k']}/{v['n']}" for k, v in summary["per_label"].items())
    if per:
        lines.append(f"per reference: {per}")
    lines += ["", format_series_table(ev.rows)]
    if ev.missing:
        lines.append(f"missing: {len(ev.missing)} CSV rows name no series under the data:")
        lines += [f"  line {lab.line}: {lab.names()}" for lab in ev.missing]
    if ev.unlabelled:
        lines.append(f"unlabelled: {len(ev.unlabelled)} series not in the CSV (not scored):")
        lines += [f"  {u['series_id']}  {u['path']}" for u in ev.unlabelled]
    failed = summary["failed"]
    if failed:
        lines.append(f"FAILED: {len(failed)} labelled series could not be read (not scored):")
        lines += [f"  {f['name']}: {f['reason']}: {f['detail']}"[:160] for f in failed]
    return "\n".join(lines)


def format_series_table(rows: Sequence[dict[str, Any]]) -> str:
    def result(r: dict[str, Any]) -> str:
        if r["status"] != STATUS_OK:
            return "FAILED"
        return "right" if r["correct"] else "WRONG"

    def notes(r: dict[str, Any]) -> str:
        reasons = r.get("confidence_reasons") or []
        if isinstance(reasons, str):
            reasons = reasons.split(LIST_SEPARATOR) if reasons else []
        return ",".join(reasons) or "-"

    cols = [
        ("series", lambda r: str(r["name"])),
        ("reference", lambda r: str(r["reference"])),
        ("accepts", lambda r: str(r["accepts"])),
        ("predicted", lambda r: str(r["predicted"] or "-")),
        ("prob", lambda r: f"{float(r['top_prob']):.2f}" if r["status"] == STATUS_OK else "-"),
        ("result", result),
        ("network", lambda r: str(r.get("network_phase") or "-")),
        ("anatomy", lambda r: str(r.get("anatomy_phase") or "-")),
        ("conf", lambda r: str(r["confidence"] or "-")),
        ("notes", notes),
    ]
    return "\n".join(text_table(cols, rows))
