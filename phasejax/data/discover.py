"""Walk paths into series plans (DICOM and NIfTI), decode them over worker processes.

`discover(paths)` reads every file's header once (DICOM: pixel data skipped; NIfTI:
hashed for its id), groups DICOM images into `SeriesPlan`s and NIfTI files into
`NiftiPlan`s, and lists every file that is not used with its reason. Plans are
small and picklable; `load_plan(plan)` decodes one to a `Series`. `map_plans` runs
any module-level function over plans in a process pool with a progress bar.

Worker processes are started with the "spawn" method: the parent may already have
started JAX (tests, training), and forking a process that runs JAX's threads can
deadlock the child.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from phasejax.data.dicom import (
    SeriesPlan,
    Skipped,
    SliceInfo,
    group_series,
    load_series,
    scan_files,
)
from phasejax.data.header import header_phase_hint
from phasejax.data.nifti import NiftiError, is_nifti, load_nifti, nifti_series_uid
from phasejax.data.series import Series, make_series_id
from phasejax.safe_text import clean_json

T = TypeVar("T")
_PARALLEL_HEADER_MIN_FILES = 256
R = TypeVar("R")


@dataclass(frozen=True, kw_only=True, eq=False)
class NiftiPlan:
    path: str
    series_uid: str  # "nifti:<name>:<hash>"
    series_id: str
    source: str
    patient_id: str = ""
    acquisition: str = ""
    study_uid: str = ""
    header: dict[str, str] = field(default_factory=dict)

    @property
    def files(self) -> tuple[str, ...]:
        return (self.path,)


Plan = SeriesPlan | NiftiPlan


@dataclass(frozen=True, kw_only=True)
class Discovery:
    plans: list[Plan]
    skipped: list[Skipped]
    n_files: int


def iter_files(paths: Iterable[str | os.PathLike[str]]) -> tuple[list[str], list[Skipped]]:
    """Every file under the given files/folders (sorted, symlinked folders not followed).

    Folders that cannot be listed come back as `unreadable_dir` skips: os.walk would
    otherwise drop them, and every study below them, without a word.
    """
    files: list[str] = []
    missing: list[Skipped] = []

    def unreadable(err: OSError) -> None:
        where = err.filename if err.filename is not None else "?"
        missing.append(
            Skipped(os.fsdecode(where), "unreadable_dir", f"{type(err).__name__}: {err.strerror}")
        )

    for p in paths:
        p = os.fsdecode(p)
        if os.path.isfile(p):
            files.append(p)
        elif os.path.isdir(p):
            for dirpath, dirnames, filenames in os.walk(p, onerror=unreadable):
                dirnames.sort()
                files.extend(os.path.join(dirpath, f) for f in sorted(filenames))
        else:
            missing.append(Skipped(p, "not_found"))
    return list(dict.fromkeys(files)), missing


def _read_chunk(files: Sequence[str]) -> tuple[list[SliceInfo], list[Skipped]]:
    return scan_files(files)


def _nifti_plan(path: str) -> NiftiPlan | Skipped:
    try:
        uid = nifti_series_uid(path)
    except OSError as e:
        return Skipped(path, "nifti_error", f"{type(e).__name__}: {e}")
    return NiftiPlan(
        path=path,
        series_uid=uid,
        series_id=make_series_id(uid),
        source=str(Path(path).resolve()),
    )


def discover(
    paths: Iterable[str | os.PathLike[str]],
    *,
    workers: int = 1,
    progress: bool = False,
    pool: Executor | None = None,
) -> Discovery:
    """Header pass over all files under `paths`: series plans plus skipped files.

    The header pass runs in `pool` (see `worker_pool`) when one is given and there are
    enough files to repay the hand-off; reading one header takes ~1 ms.
    """
    files, skipped = iter_files(paths)
    nifti = [f for f in files if is_nifti(f)]
    dicom = [f for f in files if not is_nifti(f)]
    slices: list[SliceInfo] = []
    chunk = 64
    chunks = [dicom[i : i + chunk] for i in range(0, len(dicom), chunk)]
    use_pool = pool if len(dicom) >= _PARALLEL_HEADER_MIN_FILES else None
    bar = _bar(total=len(dicom), desc="headers", unit="file", progress=progress)
    results = map_plans(_read_chunk, chunks, workers=workers if use_pool else 1, pool=use_pool)
    for files_in, res in results:
        if isinstance(res, BaseException):
            skipped.extend(Skipped(f, "corrupt", f"{type(res).__name__}: {res}") for f in files_in)
        else:
            slices.extend(res[0])
            skipped.extend(res[1])
        bar.update(len(files_in))
    bar.close()
    plans: list[Plan] = []
    dicom_plans, more = group_series(slices)
    plans.extend(dicom_plans)
    skipped.extend(more)
    for f in nifti:
        r = _nifti_plan(f)
        (skipped if isinstance(r, Skipped) else plans).append(r)  # type: ignore[arg-type]
    plans.sort(key=lambda p: (p.source, p.series_id))
    return Discovery(plans=plans, skipped=skipped, n_files=len(files))


def load_plan(plan: Plan) -> tuple[Series | None, list[Skipped]]:
    """Decode one plan (DICOM or NIfTI) to an HU Series; failures come back as Skipped."""
    if isinstance(plan, NiftiPlan):
        try:
            return load_nifti(plan.path, series_uid=plan.series_uid), []
        except NiftiError as e:
            return None, [Skipped(plan.path, "nifti_error", str(e))]
    return load_series(plan)


def load_all(
    paths: Iterable[str | os.PathLike[str]], *, workers: int = 1, progress: bool = False
) -> tuple[list[Series], list[Skipped]]:
    """Every series under `paths`, decoded (in memory: for tests and small folders)."""
    out: list[Series] = []
    with worker_pool(workers) as pool:
        disc = discover(paths, workers=workers, progress=progress, pool=pool)
        skipped = list(disc.skipped)
        results = map_plans(load_plan, disc.plans, workers=workers, progress=progress, pool=pool)
        for _, res in results:
            if isinstance(res, BaseException):
                continue
            series, bad = res
            skipped.extend(bad)
            if series is not None:
                out.append(series)
    out.sort(key=lambda s: (s.source, s.series_id))
    return out, skipped


# --------------------------------------------------------------------------- parallel map


def _bar(*, total: int, desc: str, unit: str, progress: bool) -> Any:
    from tqdm import tqdm

    return tqdm(
        total=total, desc=desc, unit=unit, disable=not progress, file=sys.stderr, dynamic_ncols=True
    )


def _call(fn: Callable[[T], R], item: T) -> R | BaseException:
    try:
        return fn(item)
    except Exception as e:  # noqa: BLE001 - returned, so one bad item never ends the map
        return e


@contextmanager
def worker_pool(workers: int) -> Iterator[Executor | None]:
    """A process pool shared by the header pass and decoding (None for workers <= 1)."""
    if workers <= 1:
        yield None
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        yield pool


def map_plans(
    fn: Callable[[T], R],
    items: Sequence[T],
    *,
    workers: int = 1,
    progress: bool = False,
    desc: str = "series",
    unit: str = "series",
    pool: Executor | None = None,
) -> Iterator[tuple[T, R | BaseException]]:
    """Apply a module-level `fn` to each item, in `workers` processes (1 = in-process).

    Yields (item, result) as results complete; an exception raised by `fn` (or a
    worker that died) is yielded as the result instead of being raised. Pass `pool`
    (from `worker_pool`) to reuse started workers across calls.
    """
    bar = _bar(total=len(items), desc=desc, unit=unit, progress=progress)
    try:
        if workers <= 1 or len(items) <= 1:
            for item in items:
                yield item, _call(fn, item)
                bar.update(1)
            return
        if pool is None:
            with worker_pool(workers) as own:
                yield from _map_pool(fn, items, own, workers, bar)  # type: ignore[arg-type]
        else:
            yield from _map_pool(fn, items, pool, workers, bar)
    finally:
        bar.close()


def _map_pool(
    fn: Callable[[T], R], items: Sequence[T], pool: Executor, workers: int, bar: Any
) -> Iterator[tuple[T, R | BaseException]]:
    from concurrent.futures import FIRST_COMPLETED, wait

    pending: dict[Any, T] = {}
    it = iter(items)
    try:
        # Bounded submission: at most 2 items per worker in flight, so a large folder
        # does not queue every plan's pickled slices at once.
        for item in it:
            pending[pool.submit(_call, fn, item)] = item
            if len(pending) >= 2 * workers:
                break
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                item = pending.pop(fut)
                try:
                    res = fut.result()
                except BaseException as e:  # noqa: BLE001 - a dead worker
                    res = e
                yield item, res
                bar.update(1)
                nxt = next(it, _END)
                if nxt is not _END:
                    pending[pool.submit(_call, fn, nxt)] = nxt  # type: ignore[index]
    except BaseException:
        for fut in pending:
            fut.cancel()
        raise


_END = object()


# --------------------------------------------------------------------------- inspect


def hu_percentiles(hu: np.ndarray, qs: Sequence[float] = (1, 50, 99)) -> list[float]:
    """Percentiles over every other pixel in plane (plenty for 1/50/99, 4x less work)."""
    sample = hu[:, ::2, ::2] if hu.ndim == 3 else hu
    return [float(v) for v in np.percentile(sample, qs)]


def series_row(series: Series, fmt: str) -> dict[str, Any]:
    """One row of `phasejax inspect` (the JSON schema is in phasejax.commands.inspect)."""
    hint = header_phase_hint(series.header)
    p1, p50, p99 = hu_percentiles(series.hu)
    return {
        "series_id": series.series_id,
        "patient_id": series.patient_id,
        "study_uid": series.study_uid,
        "series_uid": series.series_uid,
        "acquisition": series.acquisition,
        "format": fmt,
        "source": series.source,
        "num_files": len(series.files),
        "num_slices": series.num_slices,
        "shape": list(series.shape),
        "spacing": [round(float(s), 4) for s in series.spacing],
        "kvp": series.header.get("KVP", ""),
        "description": series.header.get("SeriesDescription", ""),
        "phase_hint": hint.phase,
        "phase_hint_evidence": list(hint.evidence),
        "seconds_after_injection": hint.seconds,
        "hu_p1": round(p1, 1),
        "hu_p50": round(p50, 1),
        "hu_p99": round(p99, 1),
        "ordering": series.ordering,
        "problems": list(series.problems),
    }


def _inspect_one(plan: Plan) -> tuple[dict[str, Any] | None, list[Skipped]]:
    series, bad = load_plan(plan)
    if series is None:
        return None, bad
    return series_row(series, "nifti" if isinstance(plan, NiftiPlan) else "dicom"), bad


def inspect_paths(
    paths: Sequence[str | os.PathLike[str]], *, workers: int = 1, progress: bool = False
) -> dict[str, Any]:
    """The `phasejax inspect` document for these paths (schema: phasejax.commands.inspect)."""
    from phasejax import __version__

    rows: list[dict[str, Any]] = []
    with worker_pool(workers) as pool:
        disc = discover(paths, workers=workers, progress=progress, pool=pool)
        skipped = list(disc.skipped)
        results = map_plans(
            _inspect_one, disc.plans, workers=workers, progress=progress, desc="decode", pool=pool
        )
        for plan, res in results:
            if isinstance(res, BaseException):
                err = f"{type(res).__name__}: {res}"
                skipped.append(Skipped(plan.source, "decode_error", err))
                continue
            row, bad = res
            skipped.extend(bad)
            if row is not None:
                rows.append(row)
    rows.sort(key=lambda r: (r["patient_id"], r["source"], r["series_id"]))
    skipped.sort(key=lambda s: (s.path, s.reason))
    doc = {
        "phasejax_version": __version__,
        "paths": [os.fsdecode(p) for p in paths],
        "series": rows,
        "skipped": [{"path": s.path, "reason": s.reason, "detail": s.detail} for s in skipped],
        "counts": {
            "files": disc.n_files,
            "series": len(rows),
            "skipped": len(skipped),
            "skipped_by_reason": dict(sorted(Counter(s.reason for s in skipped).items())),
        },
    }
    return clean_json(doc)  # paths with undecodable bytes would break every writer
