"""Run an ablation plan: skip finished runs, resume interrupted ones, show overall progress.

Layout of an ablation directory (DIR)::

    plan.json                       every suite's cells (value x seed -> run id) and run list
    _baseline/seed<k>/              the shared baseline: a normal training workdir
    <suite>/<value>/seed<k>/        a variant (training workdir, or an evaluate run's results)
    <suite>/<baseline>/seed<k>      symlink to ../../_baseline/seed<k> (for browsing)
    <suite>/groups.json             evaluate suites: manifest columns (site, kvp) per series
    <run>/real.json                 with --real: the trained run scored on a labelled real set
    summary/                        written by phasejax.ablate.summarize

Status of a run: "done" when its results.json exists, "partial" when its directory exists
without results (the trainer resumes it from its checkpoints given the same workdir), "todo"
otherwise, and "conflict" when the directory holds a run of another config (never trained
over: the user decides).

Training is injected: `execute(plan, out, train_fn=...)` defaults to
`phasejax.train.loop.train(cfg, workdir, *, cache_dir=None) -> results`, which resumes from
its checkpoints and returns at once for a finished run; tests pass a fake.
"""

from __future__ import annotations

import hashlib
import json
import sys
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from phasejax import atomic
from phasejax.ablate.suites import BASELINE_DIR, Plan, Run, config_diff, number_or_none
from phasejax.cohort.kinetics import convert_kvp
from phasejax.config import RESUMABLE_CHANGES, Config, config_differences

PLAN_FILE = "plan.json"
RUN_META_FILE = "ablation.json"
RESULTS_FILE = "results.json"
CONFIG_FILE = "config.json"
GROUPS_FILE = "groups.json"
REAL_FILE = "real.json"  # a trained run scored on a labelled real set (execute(real=...))
PLAN_VERSION = 1
EVAL_SPLITS = ("test", "external")

TrainFn = Callable[..., Mapping[str, Any]]
EvalFn = Callable[..., Mapping[str, Any]]


class AblationError(RuntimeError):
    """An ablation directory or run that cannot be used as asked; the message says why."""


# --------------------------------------------------------------------------- files


def _write_json(path: Path, obj: Any) -> None:
    atomic.write_json(path, obj, indent=1)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise AblationError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None


def run_meta(run: Run) -> dict[str, Any]:
    """What ablation.json records about a run (the config it was planned with)."""
    return {
        "run_id": run.run_id,
        "kind": run.kind,
        "seed": run.seed,
        "source": run.source,
        "perturbation": dict(run.perturbation),
        "cells": [list(c) for c in run.cells],
        "config": run.config.to_dict(),
    }


def _blocking_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    return sorted(k for k in config_differences(old, new) if k not in RESUMABLE_CHANGES)


def conflict_reason(out: Path, run: Run) -> str:
    """Why the directory of `run` holds something else ("" when it is this run or empty)."""
    workdir = out / run.run_id
    meta_path = workdir / RUN_META_FILE
    if meta_path.is_file():
        meta = _read_json(meta_path)
        if meta.get("kind") != run.kind:
            return f"it holds a {meta.get('kind')} run, this is a {run.kind} run"
        if run.kind == "evaluate" and (
            meta.get("source") != run.source or meta.get("perturbation") != dict(run.perturbation)
        ):
            return (
                f"it evaluated {meta.get('source')} with {meta.get('perturbation')}, "
                f"this run evaluates {run.source} with {dict(run.perturbation)}"
            )
        keys = _blocking_differences(meta.get("config", {}), run.config.to_dict())
        if keys:
            return f"it was planned with another config (differs in {', '.join(keys)})"
    cfg_path = workdir / CONFIG_FILE
    if run.kind == "train" and cfg_path.is_file():
        keys = _blocking_differences(_read_json(cfg_path), run.config.to_dict())
        if keys:
            return f"its {CONFIG_FILE} is another experiment (differs in {', '.join(keys)})"
    return ""


def run_status(out: str | Path, run: Run) -> str:
    """done | partial | todo | conflict (see the module docstring)."""
    out = Path(out)
    workdir = out / run.run_id
    if conflict_reason(out, run):
        return "conflict"
    if (workdir / RESULTS_FILE).is_file():
        return "done"
    if workdir.is_dir() and any(workdir.iterdir()):
        return "partial"
    return "todo"


# --------------------------------------------------------------------------- plan.json


def plan_document(plan: Plan) -> dict[str, Any]:
    suites = {}
    for s in plan.suites:
        cells = plan.cells.get(s.name, {})
        suites[s.name] = {
            "question": s.question,
            "kind": s.kind,
            "axis": s.axis,
            "axis_label": s.axis_label,
            "baseline": s.baseline,
            "group_by": list(s.group_by),
            "fixed": dict(s.fixed),
            "source": s.source,
            "values": [
                {
                    "label": v.label,
                    "x": v.x,
                    "group": v.group,
                    "overrides": v.as_dict(),
                    "runs": {str(k): rid for k, rid in sorted(cells.get(v.label, {}).items())},
                }
                for v in s.variants
            ],
        }
    return {
        "version": PLAN_VERSION,
        "preset": plan.preset,
        "baseline_config": plan.baseline.to_dict(),
        "suites": suites,
    }


def write_plan(plan: Plan, out: str | Path) -> Path:
    """Write (or merge into) DIR/plan.json; refuses a directory made with another baseline.

    Merging keeps suites planned by earlier commands and, per value, the union of seeds, so
    `--suite depth` then `--suite strategy` into one DIR summarise together. The merge is
    idempotent and depends only on the plan's suites and cells, never on which runs a shard
    executes: concurrent shards write byte-identical files (each write is an atomic replace),
    and a file that already says the same is left alone.
    """
    out = Path(out)
    path = out / PLAN_FILE
    doc = plan_document(plan)
    if path.is_file():
        old = _read_json(path)
        if old.get("preset") != plan.preset:
            raise AblationError(
                f"{path}: this directory holds budget {old.get('preset')!r}, not "
                f"{plan.preset!r}; use another --out"
            )
        keys = _blocking_differences(old.get("baseline_config", {}), doc["baseline_config"])
        if keys:
            raise AblationError(
                f"{path}: the shared baseline changed since this directory was made (differs in "
                f"{', '.join(keys)}): suite files or the budget's config were edited; use another "
                "--out or revert them"
            )
        for name, suite in old.get("suites", {}).items():
            if name not in doc["suites"]:
                doc["suites"][name] = suite
                continue
            old_runs = {v["label"]: v.get("runs", {}) for v in suite.get("values", [])}
            for v in doc["suites"][name]["values"]:
                merged = {**old_runs.get(v["label"], {}), **v["runs"]}
                v["runs"] = {k: merged[k] for k in sorted(merged, key=int)}
        doc["suites"] = {k: doc["suites"][k] for k in sorted(doc["suites"])}
        if doc == old:
            return path
    _write_json(path, doc)
    return path


def read_plan(out: str | Path) -> dict[str, Any]:
    path = Path(out) / PLAN_FILE
    if not path.is_file():
        raise AblationError(f"{path}: not an ablation directory (no {PLAN_FILE}); run ablate first")
    doc = _read_json(path)
    if doc.get("version") != PLAN_VERSION:
        raise AblationError(f"{path}: plan version {doc.get('version')}, expected {PLAN_VERSION}")
    return doc


def link_baseline_cells(plan: Plan, out: str | Path) -> None:
    """DIR/<suite>/<baseline value>/seed<k> -> ../../_baseline/seed<k>, for people browsing."""
    out = Path(out)
    for suite, values in plan.cells.items():
        for label, seeds in values.items():
            for seed, rid in seeds.items():
                if not rid.startswith(BASELINE_DIR + "/"):
                    continue
                link = out / suite / label / f"seed{seed}"
                if link.is_symlink() or link.exists():
                    continue
                try:
                    link.parent.mkdir(parents=True, exist_ok=True)
                    link.symlink_to(Path("..", "..", *rid.split("/")), target_is_directory=True)
                except OSError:
                    pass  # a file system without symlinks: plan.json still maps the cell


# --------------------------------------------------------------------------- dry run table


def describe(run: Run, plan: Plan) -> str:
    """The settings that make a run what it is, relative to the shared baseline."""
    if run.kind == "evaluate":
        pert = ", ".join(f"{k}={v}" for k, v in run.perturbation)
        return f"{pert} on {run.source}"
    diff = config_diff(run.config, plan.baseline)
    return ", ".join(f"{k}={v}" for k, v in diff.items()) or "(baseline)"


def plan_rows(plan: Plan, out: str | Path) -> list[dict[str, str]]:
    rows = []
    for run in plan.runs:
        rows.append(
            {
                "run": run.run_id,
                "status": run_status(out, run),
                "overrides": describe(run, plan),
                "cells": ", ".join(f"{s}:{v}" for s, v in run.cells),
            }
        )
    return rows


def format_table(rows: list[dict[str, str]], columns: list[str] | None = None) -> str:
    if not rows:
        return "(nothing to run)"
    columns = columns or list(rows[0])
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns).rstrip()]
    lines.append("  ".join("-" * widths[c] for c in columns))
    lines += ["  ".join(str(r[c]).ljust(widths[c]) for c in columns).rstrip() for r in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------- execution


@dataclass(frozen=True)
class RealSet:
    """A labelled set of real studies that every trained run is scored on after training
    (phasejax.evaluate): folders or files, and a labels CSV with accepted phases."""

    paths: tuple[str, ...]
    labels: str


def evaluate_real(run_dir: str | Path, real: RealSet) -> dict[str, Any]:
    """The real.json document of a trained run: one prediction per scored series with its
    accepted phases (phasejax.ablate.summarize reads it as the split "real")."""
    from phasejax.eval.labels import read_eval_labels
    from phasejax.evaluate import evaluate_paths
    from phasejax.predict.driver import PredictOptions
    from phasejax.predict.schema import STATUS_OK, network_prob_column
    from phasejax.train.restore import load_run

    run = load_run(run_dir)
    ev = evaluate_paths(
        list(real.paths),
        read_eval_labels(real.labels),
        run.cfg,
        run.model,
        options=PredictOptions(progress=False),
    )
    preds = []
    for r in ev.rows:
        if r["status"] != STATUS_OK:
            continue
        reference = str(r["reference"])
        preds.append(
            {
                "series_id": r["series_id"],
                "name": r["name"],
                "patient_id": str(r.get("patient", "") or r["series_id"]),
                "site": "real",
                "label": reference if reference in ev.classes else "",
                "accepts": str(r["accepts"]).split("|"),
                # The image network's own probabilities: runs differ in the network only
                # (the anatomy's part of predict's call is the same for every run).
                "probs": [float(r[network_prob_column(c)]) for c in ev.classes],
            }
        )
    return {
        "classes": list(ev.classes),
        "paths": list(real.paths),
        "labels": real.labels,
        "splits": {"real": {"predictions": preds}},
    }


@dataclass
class ExecuteReport:
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    # Evaluate runs whose model is another process's to train and not finished yet: neither
    # run nor failed; a later pass (the same command again) runs them.
    waiting: dict[str, str] = field(default_factory=dict)


def _default_train_fn() -> TrainFn:
    from phasejax.train.loop import train

    return train


def execute(
    plan: Plan,
    out: str | Path,
    *,
    train_fn: TrainFn | None = None,
    eval_fn: EvalFn | None = None,
    cache_dir: str | Path | None = None,
    real: RealSet | None = None,
    progress: bool = True,
    stream: TextIO | None = None,
) -> ExecuteReport:
    """Run every run of `plan` that is not done, in plan order; return what happened.

    A failing run is reported and the others go on (one diverging ResNet-50 should not cost
    a night of other runs); Ctrl-C stops at once, and the next call resumes. With `real`,
    every trained run without a real.json is scored on that set (finished runs too).

    `plan` may hold a shard of the runs (phasejax.ablate.shard.shard_plan): only its runs are
    checked and run, and an evaluate run whose source model is not among them and not
    finished is left waiting (report.waiting), not failed.
    """
    from tqdm.auto import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    conflicts = {r.run_id: conflict_reason(out, r) for r in plan.runs}
    conflicts = {k: v for k, v in conflicts.items() if v}
    if conflicts:
        lines = "\n".join(f"  {out / k}: {v}" for k, v in conflicts.items())
        raise AblationError(
            f"{len(conflicts)} run director(ies) hold other experiments; delete them or use "
            f"another --out:\n{lines}"
        )
    write_plan(plan, out)
    link_baseline_cells(plan, out)
    report = ExecuteReport()
    todo = []

    def real_missing(run: Run) -> bool:
        return (
            real is not None
            and run.kind == "train"
            and not (out / run.run_id / REAL_FILE).is_file()
        )

    mine = {r.run_id for r in plan.runs}
    for run in plan.runs:
        if (out / run.run_id / RESULTS_FILE).is_file() and not real_missing(run):
            report.skipped.append(run.run_id)
        elif (
            run.kind == "evaluate"
            and run.source not in mine
            and not (out / run.source / RESULTS_FILE).is_file()
        ):
            report.waiting[run.run_id] = f"its model {run.source} is not finished (another shard)"
        else:
            todo.append(run)
    stream = stream or sys.stderr
    # Bar over runs (done / total); tqdm's ETA uses the runs finished in this session only,
    # since skipped runs cost nothing now.
    bar = tqdm(
        total=len(plan.runs) - len(report.waiting),
        initial=len(report.skipped),
        desc="ablate",
        unit="run",
        file=stream,
        disable=not progress,
        dynamic_ncols=True,
    )
    try:
        for run in todo:
            bar.set_postfix_str(run.run_id)
            try:
                if run.kind == "train":
                    if not (out / run.run_id / RESULTS_FILE).is_file():
                        _train_run(run, out, train_fn or _default_train_fn(), cache_dir)
                    if real_missing(run):
                        assert real is not None
                        _write_json(
                            out / run.run_id / REAL_FILE, evaluate_real(out / run.run_id, real)
                        )
                else:
                    _evaluate_run(run, out, eval_fn or evaluate_perturbed, cache_dir)
            except Exception as e:
                report.failed[run.run_id] = f"{type(e).__name__}: {e}"
                tb = traceback.format_exc(limit=-3)
                bar.write(f"run {run.run_id} FAILED: {type(e).__name__}: {e}\n{tb}", file=stream)
            else:
                report.ran.append(run.run_id)
            bar.update(1)
    finally:
        bar.close()
    for suite in plan.suites:
        if suite.kind == "evaluate" and suite.group_by:
            try:
                write_groups(plan, out, suite.name, suite.group_by, cache_dir)
            except Exception as e:  # the per-group table is optional; say why it is missing
                print(f"{suite.name}: no per-group table ({type(e).__name__}: {e})", file=stream)
    return report


def _train_run(run: Run, out: Path, train_fn: TrainFn, cache_dir: str | Path | None) -> None:
    workdir = out / run.run_id
    workdir.mkdir(parents=True, exist_ok=True)
    _write_json(workdir / RUN_META_FILE, run_meta(run))
    results = train_fn(run.config, workdir, cache_dir=cache_dir)
    if (workdir / RESULTS_FILE).is_file():
        return
    if results and "splits" in results:
        from phasejax.eval.results import write_results

        write_results(workdir, results)
        return
    raise AblationError(f"{workdir}: training returned without results (stopped early?)")


def _evaluate_run(run: Run, out: Path, eval_fn: EvalFn, cache_dir: str | Path | None) -> None:
    from phasejax.eval.results import write_results

    source = out / run.source
    if not (source / RESULTS_FILE).is_file():
        raise AblationError(
            f"{run.run_id} evaluates {run.source}, which has no {RESULTS_FILE} (not finished)"
        )
    workdir = out / run.run_id
    workdir.mkdir(parents=True, exist_ok=True)
    _write_json(workdir / RUN_META_FILE, run_meta(run))
    _write_json(workdir / CONFIG_FILE, run.config.to_dict())
    perturbation = {k: float(v) for k, v in run.perturbation}
    results = eval_fn(run.config, source, workdir, perturbation, cache_dir=cache_dir)
    write_results(workdir, results)


def write_groups(
    plan: Plan,
    out: str | Path,
    suite: str,
    columns: tuple[str, ...],
    cache_dir: str | Path | None = None,
) -> Path:
    """DIR/<suite>/groups.json: {column: {series_id: value}} for the evaluated splits.

    Results files carry `site` per prediction but not e.g. the tube voltage, so the
    manifest's columns are stored next to the results once, and summaries stay file-only.
    """
    from phasejax.data.cache import read_manifest

    if cache_dir is None:
        from phasejax.cohort import resolve_cache

        cache_dir = resolve_cache(plan.baseline)
    rows = [r for r in read_manifest(cache_dir) if r["split"] in EVAL_SPLITS]
    groups: dict[str, dict[str, str]] = {}
    for col in columns:
        if rows and col not in rows[0]:
            continue  # e.g. a real-data cache without a kvp column: that table is skipped
        groups[col] = {r["series_id"]: r[col] for r in rows}
    path = Path(out) / suite / GROUPS_FILE
    _write_json(path, {"cache_dir": str(cache_dir), "columns": groups})
    return path


# --------------------------------------------------------------------------- perturbed eval


def noise_rng(series_id: str, noise_hu: float) -> np.random.Generator:
    """Noise drawn from (series, level) only: every model and seed sees the same noisy input,
    so differences between them are the model's, and a McNemar pairing is meaningful."""
    digest = hashlib.sha256(f"{series_id}:{noise_hu:.6g}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def perturb_volume(
    volume: np.ndarray,
    series_id: str,
    perturbation: Mapping[str, float],
    *,
    kvp: float | None = None,
) -> np.ndarray:
    """The cached HU volume with the perturbation applied (float32; the cache stays int16).

    `kvp` is the series' own tube voltage, needed by a `kvp` perturbation (the target voltage;
    0 leaves the series as acquired). The voltage change comes first: noise is the detector's.
    """
    hu = np.asarray(volume, dtype=np.float32)
    target = float(perturbation.get("kvp", 0.0))
    if target > 0:
        if kvp is None:
            raise AblationError(
                f"series {series_id}: a kvp perturbation needs the series' tube voltage "
                "(the manifest has no numeric kvp for it)"
            )
        hu = convert_kvp(hu, kvp, target)
    noise = float(perturbation.get("noise_hu", 0.0))
    if noise > 0:
        hu = hu + noise_rng(series_id, noise).normal(0.0, noise, hu.shape).astype(np.float32)
    return hu


def evaluate_perturbed(
    cfg: Config,
    model_dir: Path,
    workdir: Path,
    perturbation: Mapping[str, float],
    *,
    cache_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Results of the best checkpoint of `model_dir` on perturbed test/external series.

    Same preprocessing as evaluation (phasejax.data.pipeline.preprocess without rng) after the
    perturbation of the cached HU volume; same results schema as training.
    """
    import jax

    from phasejax.cohort import resolve_cache
    from phasejax.data import pipeline
    from phasejax.eval.results import load_results, make_results, predictions_from_rows
    from phasejax.eval.results import split_results as make_split
    from phasejax.infer import load_classifier
    from phasejax.phases import label_set

    if jax.process_count() > 1:
        raise AblationError("perturbed evaluation runs in one process")
    cache = resolve_cache(cfg, cache_dir)
    _, clf = load_classifier(model_dir, "best", batch_size=cfg.train.eval_batch_size)
    classes = label_set(cfg.data.label_set).codes

    def perturbed_input(row: dict[str, str]) -> np.ndarray:
        hu = perturb_volume(
            pipeline.load_cached(cache, row["series_id"]),
            row["series_id"],
            perturbation,
            kvp=number_or_none(row.get("kvp")),
        )
        return pipeline.preprocess(
            hu, int(row["z_lo"]), int(row["z_hi"]), cfg.data, pixel_mm=pipeline.row_pixel_mm(row)
        )

    splits = {}
    for split in EVAL_SPLITS:
        rows = pipeline.split_rows(cache, split, cfg, include_unlabelled=True)
        if not rows:
            continue
        probs = clf.classify_all(rows, perturbed_input)
        splits[split] = make_split(predictions_from_rows(rows, probs, classes), classes)
    source = load_results(model_dir)
    return make_results(
        classes=classes,
        label_set=cfg.data.label_set,
        strategy=cfg.model.strategy,
        train=source["train"],
        splits=splits,
    )
