"""`predict_paths`: every series under some paths -> one report row each.

Discovery (`phasejax.data.discover`, as `phasejax inspect`), preparation in worker
processes (`phasejax.predict.inputs`), fixed-shape batches through the model
(`phasejax.infer.Classifier`) and the rows of `phasejax.predict.schema`, streamed as
they are final. The package docstring (`phasejax.predict`) says what happens to each
input.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phasejax.config import Config
from phasejax.data.cache import CacheSpec
from phasejax.data.discover import Discovery, discover, map_plans, worker_pool
from phasejax.infer import Classifier, Ensemble
from phasejax.phases import label_set
from phasejax.predict.confidence import DEFAULT_MIN_CONFIDENCE, input_checks
from phasejax.predict.inputs import PreparedSeries, PrepareJob, model_grid, prepare_job
from phasejax.predict.schema import (
    STATUS_FAILED,
    STATUS_OK,
    STATUS_SKIPPED,
    complete_row,
    failed_row,
    report_columns,
    series_row,
    skipped_row,
)


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
            "anatomy_agree": sum(r.get("anatomy_agrees") == "yes" for r in ok),
            "anatomy_disagree": sum(r.get("anatomy_agrees") == "no" for r in ok),
            "anatomy_unread": sum(r.get("anatomy_agrees") == "" for r in ok),
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
    classifier: Classifier | Ensemble | None = None,
    on_row: Callable[[dict[str, Any]], None] | None = None,
    on_series: Callable[[PreparedSeries, dict[str, Any]], None] | None = None,
    discovery: Discovery | None = None,
) -> PredictReport:
    """Classify every series under `paths` with a trained model (see `phasejax.predict`).

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
        jobs = [PrepareJob(plan=p, data_cfg=cfg.data, spec=spec) for p in plans]
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
            for job, res in map_plans(prepare_job, jobs, workers=opts.workers, pool=pool):
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
