"""Classify real studies: folders of DICOM / NIfTI -> the contrast phase of every series.

    run = phasejax.train.restore.load_run("runs/paper_B")
    report = predict_paths(["/archive/study1"], run.cfg, run.model)
    report.rows        # one dict per series (and per skipped file), columns `report_columns`

What happens to each input, in order:

1. Discovery exactly as `phasejax inspect` (phasejax.data.discover): every file's
   header is read once; DICOM images are grouped by SeriesInstanceUID and split into
   acquisitions when one UID holds several phases; files that are not usable CT
   images (scouts, SEG/SR/RT objects, truncated or non-DICOM files...) become
   "skipped" rows with the loader's reason.
2. Each series is decoded to HU and brought to the input the model was trained on,
   with the training code itself: `resample_to_cache` onto the run's cache grid,
   the liver-to-kidney slab of `phasejax prepare` (`liver_kidney_slab`) and the one
   `preprocess` function of the input pipeline (slice selection, resize, window),
   all read from the run's config. This runs in worker processes (no JAX there).
3. Series are batched through the jit-compiled eval step by `phasejax.infer.Classifier`
   (BatchNorm in inference mode). The last batch is padded to the full batch size so
   every batch has one shape: one compilation per process.
4. One row per series: the predicted phase and the probability of every phase of the
   label set (for a two-step model p(EAP) = p1(AP) * p2(EAP | AP), as trained), a
   confidence flag, the header's own phase hint with its evidence, whether the two
   agree, and the loader's problems. A series that cannot be decoded or prepared is a
   "failed" row with the reason; it never stops the others.

How the confidence flag is decided. A row is "high" only when ALL of these hold, and
"low" otherwise, with every failed condition listed in `confidence_reasons`:

- the top probability is at least `min_confidence` (`--min-confidence`, 0.6);
- the input lies inside what the model was trained on (`input_checks`): enough slices
  in the slab for the model's slice selection (`few_slices`), at least 100 mm of scan
  (`short_coverage`), plausible HU statistics (`hu_range`: no air means a wrong
  rescale, nothing above 100 HU means not CT numbers), slices less than 10 degrees
  oblique or tilted (`oblique`), slices at most twice the training grid's spacing
  (`thick_slices`), and a liver-to-kidney slab that the scan range does not cut by
  more than 20 mm (`slab_clipped`, `SLAB_CLIP_TOLERANCE_MM`);
- the volume is complete and its HU trustworthy: none of the loader problems in
  `SUSPECT_PROBLEMS` (missing_slices, uneven_spacing, unreadable_slices,
  missing_rescale, no_air_voxels, single_slice, no_orientation). A volume with a
  hole is resampled across the hole, so its probabilities can look sure of a wrong
  answer: a missing or unevenly spaced slice therefore always makes the row "low".

"high" is not a guarantee: it says the model was asked about the kind of input it was
trained on and answered with a clear margin.

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
    predicted           the phase of highest probability (ok rows)
    p_<PHASE>           probability of each phase of the model's label set, summing to 1
    top_prob            probability of the predicted phase
    confidence          high | low
    confidence_reasons  [low_probability:P<T, few_slices:N<S, short_coverage:Xmm,
                        hu_range:p1/p50/p99, oblique:Ddeg, thick_slices:Xmm,
                        slab_clipped:Xmm, and the SUSPECT_PROBLEMS as the loader
                        wrote them (missing_slices:N, uneven_spacing:lo-hi mm, ...)]
    header_phase        phasejax.data.header hint: NC|EAP|LAP|AP|PVP|DP|unknown ("" NIfTI)
    header_agrees       yes | no | "" (no usable hint); AP agrees with EAP and LAP
    header_evidence     [the hint's evidence strings]
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

This module imports no JAX at module level, so worker processes that only decode
and preprocess stay light; the model-side functions import it when called.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from phasejax import atomic
from phasejax.config import Config, DataConfig
from phasejax.data.cache import CacheSpec, read_spec
from phasejax.data.dicom import Skipped, slice_normal
from phasejax.data.discover import (
    Discovery,
    NiftiPlan,
    Plan,
    discover,
    hu_percentiles,
    load_plan,
    map_plans,
    worker_pool,
)
from phasejax.data.header import header_phase_hint

# The orientation flags are prepare's own helper, so that the slab of a predicted
# series is found exactly as it was for the prepared training cache.
from phasejax.data.prepare import cache_volume
from phasejax.data.series import Series
from phasejax.hu import AIR_THRESHOLD_HU
from phasejax.infer import Classifier
from phasejax.phases import ARTERIAL, label_set
from phasejax.safe_text import clean_json, csv_cell
from phasejax.tables import text_table

STATUS_OK, STATUS_SKIPPED, STATUS_FAILED = "ok", "skipped", "failed"
DEFAULT_MIN_CONFIDENCE = 0.6

# Input checks (confidence "low" when any fails). Thresholds marked "assumption" are
# not from a source: they bound what the training data (full abdominal scans, axial,
# <= 5 mm slices) contains, with margin.
MIN_COVERAGE_MM = 100.0  # assumption: half the ~200 mm liver-dome-to-lower-pole slab
MAX_OBLIQUE_DEG = 10.0  # assumption: beyond this the anatomy is visibly sheared/oblique
THICK_SLICE_FACTOR = 2.0  # assumption: slices > 2x the cache spacing are coarser than trained
AIR_P1_MAX_HU = AIR_THRESHOLD_HU  # a CT in HU always holds air around and inside the body
DENSE_P99_MIN_HU = 100.0  # bone (> 300 HU) and any contrast lie above this in every abdomen CT
P99_MAX_HU = 2500.0  # 1% of voxels above this is metal-only or a wrong rescale slope
# The 200 mm dome-to-lower-pole slab is itself an assumption good to about +/-20 mm
# (adults: 18-22 cm, phasejax.data.prepare), so a slab cut by less than this is within the
# estimate's own error; beyond it the scan range has cut off anatomy the model expects.
SLAB_CLIP_TOLERANCE_MM = 20.0
# Loader problems (phasejax.data.dicom) that make the HU or geometry themselves suspect,
# or leave holes in the volume: a single missing slice once turned a prediction into a
# confident one, so an incomplete volume never gets the "high" flag.
SUSPECT_PROBLEMS = (
    "missing_rescale",
    "no_air_voxels",
    "single_slice",
    "no_orientation",
    "missing_slices",
    "uneven_spacing",
    "unreadable_slices",
)

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
    "header_phase",
    "header_agrees",
    "header_evidence",
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


def prob_column(phase: str) -> str:
    return f"p_{phase}"


def report_columns(classes: Sequence[str]) -> list[str]:
    """Column order of the CSV / keys of each JSON line for a model over `classes`."""
    i = BASE_COLUMNS.index("top_prob")
    return [*BASE_COLUMNS[:i], *(prob_column(c) for c in classes), *BASE_COLUMNS[i:]]


# --------------------------------------------------------------------------- preparation


def model_grid(cfg: Config) -> tuple[CacheSpec, str]:
    """The cache grid the model was trained on, and where that was read from.

    A prepared cache records its grid in cache.json: when the run's data.cache_dir is
    still there, that is the truth. Otherwise the config's data.cache_spacing_z and
    data.cache_size, which is the grid of the built-in cohort.
    """
    cache_dir = cfg.data.cache_dir
    if cache_dir and (Path(cache_dir) / "cache.json").is_file():
        return read_spec(cache_dir), str(Path(cache_dir) / "cache.json")
    spec = CacheSpec(spacing_z=float(cfg.data.cache_spacing_z), size=int(cfg.data.cache_size))
    where = "config data.cache_spacing_z / data.cache_size"
    if cache_dir:
        where += f" (the training cache {cache_dir} is not here to confirm them)"
    return spec, where


@dataclass(frozen=True, kw_only=True, eq=False)
class PreparedSeries:
    """One series ready for the model: its network input and what the report needs."""

    series_id: str
    patient_id: str
    study_uid: str
    acquisition: str
    source: str
    fmt: str  # "dicom" | "nifti"
    header: dict[str, str]
    problems: tuple[str, ...]
    image: np.ndarray  # float32 [S, H, W, C], phasejax.data.pipeline.preprocess
    num_slices: int  # as acquired
    slice_mm: float  # z spacing as acquired
    coverage_mm: float
    hu: tuple[float, float, float]  # p1, p50, p99
    oblique_deg: float  # slice normal vs the patient's z axis
    cached_slices: int
    z_lo: int
    z_hi: int
    z_method: str
    slab_clipped_mm: float = 0.0  # of the liver-to-kidney slab, cut off by the scan range


def prepare_series(series: Series, data_cfg: DataConfig, spec: CacheSpec) -> PreparedSeries:
    """The model input of one decoded series, made exactly as for training and evaluation."""
    from phasejax.data.pipeline import preprocess

    cached = cache_volume(series, spec)
    image = preprocess(cached.volume, cached.z_lo, cached.z_hi, data_cfg)
    p1, p50, p99 = hu_percentiles(series.hu)
    n = slice_normal(series.orientation)
    oblique = math.degrees(math.acos(min(1.0, abs(float(n[2])))))
    return PreparedSeries(
        series_id=series.series_id,
        patient_id=series.patient_id,
        study_uid=series.study_uid,
        acquisition=series.acquisition,
        source=series.source,
        fmt="nifti" if series.ordering == "nifti" else "dicom",
        header=dict(series.header),
        problems=tuple(series.problems),
        image=image,
        num_slices=series.num_slices,
        slice_mm=float(series.spacing[0]),
        coverage_mm=float(max(series.num_slices - 1, 0) * series.spacing[0]),
        hu=(p1, p50, p99),
        oblique_deg=oblique,
        cached_slices=int(cached.volume.shape[0]),
        z_lo=cached.z_lo,
        z_hi=cached.z_hi,
        z_method=cached.z_method,
        slab_clipped_mm=cached.slab_clipped_mm,
    )


def input_checks(prep: PreparedSeries, data_cfg: DataConfig, spec: CacheSpec) -> list[str]:
    """Reasons the input lies outside what the model was trained on ([] when none)."""
    out: list[str] = []
    span = prep.z_hi - prep.z_lo if prep.z_hi > prep.z_lo else prep.cached_slices
    if span < data_cfg.num_slices:
        # select_slices would have to repeat slices to fill the model's S inputs.
        out.append(f"few_slices:{span}<{data_cfg.num_slices}")
    if prep.coverage_mm < MIN_COVERAGE_MM:
        out.append(f"short_coverage:{prep.coverage_mm:.0f}mm")
    p1, p50, p99 = prep.hu
    if p1 > AIR_P1_MAX_HU or p99 < DENSE_P99_MIN_HU or p99 > P99_MAX_HU:
        out.append(f"hu_range:{p1:.0f}/{p50:.0f}/{p99:.0f}")
    tilt = max([prep.oblique_deg] + [_tilt(p) for p in prep.problems])
    if tilt > MAX_OBLIQUE_DEG:
        out.append(f"oblique:{tilt:.0f}deg")
    if prep.slice_mm > THICK_SLICE_FACTOR * spec.spacing_z:
        out.append(f"thick_slices:{prep.slice_mm:g}mm")
    if prep.slab_clipped_mm > SLAB_CLIP_TOLERANCE_MM:
        out.append(f"slab_clipped:{prep.slab_clipped_mm:.0f}mm")
    out.extend(p for p in prep.problems if p.split(":")[0] in SUSPECT_PROBLEMS)
    return out


def _tilt(problem: str) -> float:
    if not problem.startswith("gantry_tilt:"):
        return 0.0
    try:
        return float(problem.split(":", 1)[1].removesuffix("deg").strip())
    except ValueError:
        return 0.0


def header_agreement(header_phase: str, predicted: str) -> str:
    """ "yes" / "no" when the header gives a phase, "" when it says nothing ("unknown").

    A header "AP" (arterial, early or late not said) agrees with EAP and LAP.
    """
    if not header_phase or header_phase == "unknown" or not predicted:
        return ""
    if header_phase == "AP":
        return "yes" if predicted in {p.value for p in ARTERIAL} else "no"
    return "yes" if header_phase == predicted else "no"


@dataclass(frozen=True)
class _Job:
    plan: Plan
    data_cfg: DataConfig
    spec: CacheSpec


def _prepare_job(job: _Job) -> tuple[PreparedSeries | None, list[Skipped], float]:
    """Worker: decode + prepare one plan (module level: it is pickled to a worker)."""
    t0 = time.perf_counter()
    series, bad = load_plan(job.plan)
    if series is None:
        return None, bad, time.perf_counter() - t0
    prep = prepare_series(series, job.data_cfg, job.spec)
    return prep, bad, time.perf_counter() - t0


# --------------------------------------------------------------------------- rows


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
    """The report row of a classified series."""
    k = int(np.argmax(probs))
    top = float(probs[k])
    predicted = classes[k]
    reasons = []
    if top < min_confidence:
        reasons.append(f"low_probability:{top:.2f}<{min_confidence:g}")
    reasons.extend(out_of_range)
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
        **{prob_column(c): round(float(p), 6) for c, p in zip(classes, probs)},
        "top_prob": round(top, 6),
        "confidence": "low" if reasons else "high",
        "confidence_reasons": reasons,
        "header_phase": header_phase,
        "header_agrees": header_agreement(header_phase, predicted),
        "header_evidence": list(hint.evidence) if hint else [],
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


_NUMERIC = frozenset(
    {"top_prob", "seconds_after_injection", "num_slices", "slice_mm", "coverage_mm", "hu_p1",
     "hu_p50", "hu_p99", "z_lo", "z_hi"}
)  # fmt: skip


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


# --------------------------------------------------------------------------- driver


@dataclass(frozen=True, kw_only=True)
class PredictOptions:
    min_confidence: float = DEFAULT_MIN_CONFIDENCE
    batch_size: int = 16
    workers: int = 1
    progress: bool = True
    skip_series: frozenset[str] = frozenset()  # ids already classified (resume)


@dataclass
class PredictReport:
    classes: tuple[str, ...]
    rows: list[dict[str, Any]] = field(default_factory=list)
    grid: CacheSpec | None = None
    grid_source: str = ""
    resumed: int = 0  # series skipped because options.skip_series had them
    seconds: dict[str, float] = field(default_factory=dict)  # total, discover, prepare, model

    @property
    def columns(self) -> list[str]:
        return report_columns(self.classes)

    def counts(self) -> dict[str, Any]:
        ok = [r for r in self.rows if r.get("status") == STATUS_OK]
        return {
            "series": sum(r.get("status") != STATUS_SKIPPED for r in self.rows) + self.resumed,
            "classified": len(ok),
            "resumed": self.resumed,
            "failed": sum(r.get("status") == STATUS_FAILED for r in self.rows),
            "skipped": sum(r.get("status") == STATUS_SKIPPED for r in self.rows),
            "skipped_by_reason": dict(
                sorted(
                    Counter(
                        r["reason"] for r in self.rows if r.get("status") == STATUS_SKIPPED
                    ).items()
                )
            ),
            "per_phase": {c: sum(r.get("predicted") == c for r in ok) for c in self.classes},
            "low_confidence": sum(r.get("confidence") == "low" for r in ok),
            "header_agree": sum(r.get("header_agrees") == "yes" for r in ok),
            "header_disagree": sum(r.get("header_agrees") == "no" for r in ok),
            "header_unknown": sum(r.get("header_agrees") == "" for r in ok),
        }

    @property
    def exit_status(self) -> int:
        """0 when every readable series was classified, 1 when some failed."""
        return 1 if any(r.get("status") == STATUS_FAILED for r in self.rows) else 0


def predict_paths(
    paths: Sequence[str | os.PathLike[str]],
    cfg: Config,
    model: Any,
    *,
    options: PredictOptions | None = None,
    classifier: Classifier | None = None,
    on_row: Callable[[dict[str, Any]], None] | None = None,
    on_series: Callable[[PreparedSeries, dict[str, Any]], None] | None = None,
    discovery: Discovery | None = None,
) -> PredictReport:
    """Classify every series under `paths` with a trained model (see the module docstring).

    `on_row` receives each row as soon as it is final (streamed output); the report
    holds them all. Rows of series in `options.skip_series` are not produced.
    `on_series` receives each classified series' network input with its row (what
    `phasejax evaluate` draws). `discovery`: the header pass over `paths` when the
    caller already made it (evaluate matches its labels to those plans first).
    """
    opts = options or PredictOptions()
    classes = label_set(cfg.data.label_set).codes
    spec, grid_source = model_grid(cfg)
    report = PredictReport(classes=classes, grid=spec, grid_source=grid_source)
    t_start = time.perf_counter()
    emit = _Emitter(report, on_row)

    from tqdm import tqdm

    with worker_pool(opts.workers) as pool:
        disc = discovery
        if disc is None:
            disc = discover(paths, workers=opts.workers, progress=opts.progress, pool=pool)
        report.seconds["discover"] = time.perf_counter() - t_start
        for s in disc.skipped:
            emit(skipped_row(s))
        plans = [p for p in disc.plans if p.series_id not in opts.skip_series]
        report.resumed = len(disc.plans) - len(plans)
        jobs = [_Job(plan=p, data_cfg=cfg.data, spec=spec) for p in plans]
        # A folder of 3 series needs no batch of 16: the batch is fixed once per run (one
        # compilation) at the smaller of the two.
        clf = classifier or Classifier.for_model(
            model, batch_size=min(opts.batch_size, len(jobs) or 1)
        )
        bar = tqdm(
            total=len(jobs),
            desc="predict",
            unit="series",
            disable=not opts.progress,
            file=sys.stderr,
            dynamic_ncols=True,
        )
        prepare_s = 0.0

        def prepared() -> Iterable[tuple[PreparedSeries, list[str]]]:
            """Series ready for the model; failures become rows as they are met (drawn by
            the classifier between its batches, so rows stream in input order)."""
            nonlocal prepare_s
            for job, res in map_plans(_prepare_job, jobs, workers=opts.workers, pool=pool):
                if isinstance(res, BaseException):
                    emit(failed_row(job.plan, "prepare_error", f"{type(res).__name__}: {res}"))
                    bar.update(1)
                    continue
                prep, bad, dt = res
                prepare_s += dt
                for s in bad:  # files of the series that did not decode
                    if prep is not None:
                        emit(skipped_row(s))
                if prep is None:
                    reason = bad[0].reason if bad else "decode_error"
                    detail = "; ".join(f"{Path(s.path).name}: {s.detail or s.reason}" for s in bad)
                    emit(failed_row(job.plan, reason, detail or "no slice could be decoded"))
                    bar.update(1)
                    continue
                yield prep, input_checks(prep, cfg.data, spec)

        try:
            for (prep, checks), probs in clf.classify(prepared(), lambda item: item[0].image):
                row = emit(
                    series_row(
                        prep,
                        probs,
                        classes,
                        min_confidence=opts.min_confidence,
                        out_of_range=checks,
                    )
                )
                if on_series is not None:
                    on_series(prep, row)
                bar.update(1)
                bar.set_postfix(failed=emit.failed, low=emit.low)
        finally:
            bar.close()
    report.seconds.update(total=time.perf_counter() - t_start, prepare=prepare_s, model=clf.seconds)
    return report


class _Emitter:
    def __init__(
        self, report: PredictReport, on_row: Callable[[dict[str, Any]], None] | None
    ) -> None:
        self.report, self.on_row = report, on_row
        self.columns = report.columns
        self.failed = 0
        self.low = 0

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        row = complete_row(row, self.columns)
        self.failed += row["status"] == STATUS_FAILED
        self.low += row.get("confidence") == "low"
        self.report.rows.append(row)
        if self.on_row is not None:
            self.on_row(row)
        return row


# --------------------------------------------------------------------------- files


def _cell(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return csv_cell(LIST_SEPARATOR.join(str(v) for v in value))
    return csv_cell(value)


class ReportWriter:
    """Rows to a CSV file or JSON lines (a file, or a stream such as stdout), one row at a
    time and flushed: a run that is interrupted, even killed, leaves a valid report of
    every row written so far, which `--resume` continues."""

    def __init__(self, target: str | Path | TextIO, columns: Sequence[str], fmt: str) -> None:
        if fmt not in ("csv", "jsonl"):
            raise ValueError(f"report format {fmt!r}: csv | jsonl")
        self.fmt, self.columns = fmt, list(columns)
        self.path = None if hasattr(target, "write") else Path(target)  # type: ignore[arg-type]
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Kept open across calls by design (streamed rows); closed by finish().
            self.f: TextIO = open(self.path, "w", newline="")  # noqa: SIM115
        else:
            self.f = target  # type: ignore[assignment]
        self._csv = csv.writer(self.f) if fmt == "csv" else None
        if self._csv is not None:
            self._csv.writerow(self.columns)
            self.f.flush()

    def write(self, row: dict[str, Any]) -> None:
        if self._csv is not None:
            self._csv.writerow([_cell(row.get(c)) for c in self.columns])
        else:
            self.f.write(json.dumps({c: row.get(c) for c in self.columns}) + "\n")
        self.f.flush()

    def finish(self, rows: Iterable[dict[str, Any]] | None = None) -> None:
        """Close; a file is then rewritten (atomically) with `rows` in report order."""
        if self.path is None:
            self.f.flush()
            return
        self.f.close()
        if rows is not None:
            write_report(self.path, sorted(rows, key=sort_key), self.columns, self.fmt)


def write_report(
    path: str | Path, rows: Iterable[dict[str, Any]], columns: Sequence[str], fmt: str
) -> Path:
    """Write a whole report atomically (CSV or JSON lines)."""
    path = Path(path)
    with atomic.open_atomic(path, "w", newline="") as f:
        if fmt == "csv":
            w = csv.writer(f)
            w.writerow(list(columns))
            for r in rows:
                w.writerow([_cell(r.get(c)) for c in columns])
        else:
            for r in rows:
                f.write(json.dumps({c: r.get(c) for c in columns}) + "\n")
    return path


class ReportError(ValueError):
    """A report file that cannot be read; the message names it and says why."""


def read_report(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a report written by `phasejax predict` (CSV or JSON lines, detected from
    the content). CSV list cells are split back into lists; other CSV cells stay text."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ReportError(f"{path}: cannot read the report ({type(e).__name__}: {e})") from e
    if not text.strip():
        raise ReportError(f"{path}: empty report")
    if text.lstrip().startswith("{"):
        rows = []
        for i, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ReportError(f"{path}:{i}: not a JSON line ({e})") from e
            if not isinstance(row, dict):
                raise ReportError(f"{path}:{i}: a JSON line must be an object")
            rows.append(row)
    else:
        reader = csv.DictReader(text.splitlines())
        rows = []
        for row in reader:
            for c in LIST_COLUMNS:
                if c in row:
                    cell = row[c] or ""
                    row[c] = cell.split(LIST_SEPARATOR) if cell else []
            rows.append(row)
    missing = [c for c in ("status", "series_id", "predicted") if rows and c not in rows[0]]
    if missing or not rows:
        raise ReportError(
            f"{path}: not a phasejax predict report"
            + (f" (no column {missing})" if missing else " (no rows)")
        )
    return rows


def classified_ids(rows: Iterable[dict[str, Any]]) -> set[str]:
    return {
        str(r["series_id"]) for r in rows if r.get("status") == STATUS_OK and r.get("series_id")
    }


# --------------------------------------------------------------------------- text


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
