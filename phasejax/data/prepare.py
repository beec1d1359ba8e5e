"""`phasejax prepare`: real CT (DICOM / NIfTI under a root) + a labels CSV -> prepared cache.

Each series is decoded once, resampled with `phasejax.data.cache.resample_to_cache`
and written with `write_entry`; `finalize` writes the manifest. Work runs over
worker processes with a progress bar; a rerun skips series already in the cache
(`has_entry`), so an interrupted job resumes and a finished one is a no-op (a row
whose label, patient, site or split changed is rewritten without decoding again).

Labels CSV (header row required). A row names a series by the first of:

- `series_id`: the phasejax id (as printed by `phasejax inspect`);
- `path`: the series folder relative to --root (or absolute), or one of its files,
  or a NIfTI file;
- `series_uid`: the SeriesInstanceUID;

optionally narrowed by `acquisition` (needed when one UID or folder holds several
acquisitions). `phase` holds any word `phasejax.phases.phase_from_word` accepts
("arterial", "PVP", "delayed"...). Optional: `patient_id` (else the DICOM
PatientID, else the series id: one patient per series), `site`, `split` (train |
val | test | external: fixes that patient's split instead of the seeded draw).
Other columns are carried into the manifest as text (e.g. `seconds`, `kvp`).
An unknown phase word, an unknown split, a row that matches several series or
two rows that give one series different phases raise `LabelsError` naming the
CSV line. Rows that match nothing are reported, not fatal.

Splits are per patient (`assign_splits`, seeded; recorded in cache.json), so no
patient is in two splits.

Liver-to-kidney slab (`z_lo`, `z_hi`, cached slice indices, `z_method` column):
the lung bases mark the diaphragm. Supine patients' bowel gas rises anteriorly
while the lung bases sit in the posterior costophrenic recesses, so a slice whose
posterior half holds air inside the body on BOTH sides (>= 3% of the body area in
total, >= 1% on each side) is a lung-base slice. The most inferior slice of the
run of lung-base slices that reaches the superior end of the scan is taken as the
diaphragm level; the liver dome is assumed 30 mm above it (its dome bulges into
the thorax behind the lung bases) and the lower kidney poles 200 mm below the dome
(adult liver-dome-to-lower-pole distance ~18-22 cm; assumptions, not measured
here). The slab is clipped to the scan. Without lung bases in the scan (it starts
below the diaphragm) or without abdomen below them, the central 60% of the slices
is used (`z_method` = "central").
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from phasejax.data.cache import (
    REQUIRED_COLUMNS,
    SPLITS,
    CacheSpec,
    assign_splits,
    finalize,
    has_entry,
    init_cache,
    load_volume,
    resample_to_cache,
    write_entry,
)
from phasejax.data.dicom import Skipped, slice_normal
from phasejax.data.discover import (
    NiftiPlan,
    Plan,
    discover,
    load_plan,
    map_plans,
    worker_pool,
)
from phasejax.data.header import header_phase_hint
from phasejax.data.series import Series
from phasejax.phases import UnknownPhaseWord, phase_from_word

ID_COLUMNS = ("series_id", "path", "series_uid", "acquisition")
LABEL_COLUMNS = ("phase", "patient_id", "site", "split")
# Columns this module computes; a labels CSV cannot override them.
COMPUTED_COLUMNS = (
    *REQUIRED_COLUMNS,
    "series_uid",
    "acquisition",
    "format",
    "ordering",
    "problems",
    "orig_num_slices",
    "orig_spacing_z",
    "orig_spacing_xy",
    "kvp",
    "header_hint",
    "z_method",
)

SLAB_BELOW_DOME_MM = 200.0
DOME_ABOVE_LUNG_BASE_MM = 30.0
CENTRAL_FRACTION = 0.6


class LabelsError(ValueError):
    """The labels CSV is unusable; the message names the file and line."""


@dataclass(frozen=True, kw_only=True)
class LabelRow:
    line: int  # 1-based line number in the CSV (header is line 1)
    series_id: str = ""
    path: str = ""
    series_uid: str = ""
    acquisition: str | None = None  # None: not given
    phase: str  # a Phase code
    patient_id: str = ""
    site: str = ""
    split: str = ""
    extra: dict[str, str] = field(default_factory=dict)


def read_labels(path: str | os.PathLike[str]) -> list[LabelRow]:
    """Parse and validate a labels CSV (see the module docstring)."""
    path = str(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            return _parse_labels(f, path)
    except OSError as e:
        raise LabelsError(f"{path}: cannot open labels CSV ({e.strerror})") from e


def _parse_labels(f: Any, path: str) -> list[LabelRow]:
    reader = csv.DictReader(f)
    cols = [c.strip() for c in reader.fieldnames or []]
    if not cols:
        raise LabelsError(f"{path}: empty labels CSV (a header row is required)")
    reader.fieldnames = cols
    if "phase" not in cols:
        raise LabelsError(f"{path}: no 'phase' column (columns: {cols})")
    if not any(c in cols for c in ("series_id", "path", "series_uid")):
        raise LabelsError(
            f"{path}: needs a 'series_id', 'path' or 'series_uid' column (columns: {cols})"
        )
    rows: list[LabelRow] = []
    for raw in reader:
        i = reader.line_num  # physical line (quoted fields may span lines)
        rec = {k: (v or "").strip() for k, v in raw.items() if k is not None}
        if not any(rec.values()):
            continue
        where = f"{path}:{i}"
        if not (rec.get("series_id") or rec.get("path") or rec.get("series_uid")):
            raise LabelsError(f"{where}: row names no series (series_id, path or series_uid)")
        word = rec.get("phase", "")
        if not word:
            raise LabelsError(f"{where}: empty phase")
        try:
            phase = phase_from_word(word).value
        except UnknownPhaseWord as e:
            raise LabelsError(f"{where}: {e}") from None
        split = rec.get("split", "").lower()
        if split and split not in SPLITS:
            raise LabelsError(f"{where}: unknown split {split!r}; use one of {SPLITS}")
        acq = rec.get("acquisition", "")
        extra = {
            k: v
            for k, v in rec.items()
            if k not in ID_COLUMNS and k not in LABEL_COLUMNS and k not in COMPUTED_COLUMNS
        }
        rows.append(
            LabelRow(
                line=i,
                series_id=rec.get("series_id", ""),
                path=rec.get("path", ""),
                series_uid=rec.get("series_uid", ""),
                acquisition=acq if acq else None,
                phase=phase,
                patient_id=rec.get("patient_id", ""),
                site=rec.get("site", ""),
                split=split,
                extra=extra,
            )
        )
    return rows


def _norm(p: str) -> str:
    return os.path.normcase(os.path.realpath(p))


class SeriesIndex:
    """Plans by series id, SeriesInstanceUID and path (series folder, each of its files,
    NIfTI file): how a labels row finds its series. Shared by `prepare` and
    `phasejax evaluate`, so one labels CSV names the same series in both."""

    def __init__(self, plans: Sequence[Plan]) -> None:
        self.by_id = {p.series_id: p for p in plans}
        self.by_uid: dict[str, list[Plan]] = defaultdict(list)
        self.by_path: dict[str, list[Plan]] = defaultdict(list)
        for p in plans:
            self.by_uid[p.series_uid].append(p)
            if isinstance(p, NiftiPlan):
                self.by_path[_norm(p.path)].append(p)
            else:
                self.by_path[_norm(p.source)].append(p)
                for f in p.files:
                    self.by_path[_norm(f)].append(p)

    def find(
        self,
        *,
        series_id: str = "",
        path: str = "",
        bases: Sequence[str] = (),
        series_uid: str = "",
        acquisition: str | None = None,
    ) -> tuple[list[Plan], str]:
        """The plans a row names (by the first of series_id, path, series_uid) and how
        it named them, for messages. A relative `path` is tried against each folder of
        `bases` in turn; the first folder under which it names a series wins."""
        if series_id:
            cands = [self.by_id[series_id]] if series_id in self.by_id else []
            how = f"series_id {series_id}"
        elif path:
            cands = []
            fulls = [path] if os.path.isabs(path) else [os.path.join(b, path) for b in bases]
            for full in fulls:
                cands = list(dict.fromkeys(self.by_path.get(_norm(full), [])))
                if cands:
                    break
            how = f"path {path!r}"
        else:
            cands = list(self.by_uid.get(series_uid, []))
            how = f"series_uid {series_uid}"
        if acquisition is not None:
            cands = [p for p in cands if p.acquisition == acquisition]
            how += f" acquisition {acquisition}"
        return cands, how


def ambiguous_match(line: int, how: str, cands: Sequence[Plan]) -> LabelsError:
    acqs = sorted(p.acquisition or '""' for p in cands)
    return LabelsError(
        f"labels line {line}: {how} matches {len(cands)} series "
        f"(acquisitions {acqs}); add an 'acquisition' column or use series_id"
    )


def match_labels(
    plans: Sequence[Plan], rows: Sequence[LabelRow], root: str | os.PathLike[str]
) -> tuple[dict[str, LabelRow], list[LabelRow]]:
    """Map series ids to their label row; also return rows that matched no series."""
    index = SeriesIndex(plans)
    out: dict[str, LabelRow] = {}
    unmatched: list[LabelRow] = []
    for row in rows:
        cands, how = index.find(
            series_id=row.series_id,
            path=row.path,
            bases=[str(root)],
            series_uid=row.series_uid,
            acquisition=row.acquisition,
        )
        if not cands:
            unmatched.append(row)
            continue
        if len(cands) > 1:
            raise ambiguous_match(row.line, how, cands)
        sid = cands[0].series_id
        prev = out.get(sid)
        if prev is not None and prev.phase != row.phase:
            raise LabelsError(
                f"labels lines {prev.line} and {row.line} give series {sid} two phases "
                f"({prev.phase}, {row.phase})"
            )
        out.setdefault(sid, row)
    return out, unmatched


# --------------------------------------------------------------------------- slab


def liver_kidney_slab(
    volume: np.ndarray,
    spacing_z: float,
    *,
    superior_last: bool = True,
    posterior_down: bool = True,
) -> tuple[int, int, str]:
    """[z_lo, z_hi) from liver dome to lower kidney poles, and the method used.

    `volume` is HU [Z, H, W]; `superior_last`: slice index grows towards the head;
    `posterior_down`: row index grows towards the patient's back. See the module
    docstring for the heuristic.
    """
    lo, hi, method, _ = slab_and_clipping(
        volume, spacing_z, superior_last=superior_last, posterior_down=posterior_down
    )
    return lo, hi, method


def slab_and_clipping(
    volume: np.ndarray,
    spacing_z: float,
    *,
    superior_last: bool = True,
    posterior_down: bool = True,
) -> tuple[int, int, str, float]:
    """`liver_kidney_slab`, plus how many mm of the slab the scan range cut off (0.0 when
    the whole dome-to-poles slab lies inside the scan, and always for "central")."""
    from scipy import ndimage

    n = int(volume.shape[0])
    if n == 0:
        return 0, 0, "central", 0.0
    vol = volume if superior_last else volume[::-1]
    lung = np.zeros(n, dtype=bool)
    for k in range(n):
        sl = np.asarray(vol[k], dtype=np.float32)
        if not posterior_down:
            sl = sl[::-1]
        body = sl > -300
        lab, m = ndimage.label(body)
        if m == 0:
            continue
        largest = lab == (int(np.argmax(np.bincount(lab.ravel())[1:])) + 1)
        filled = ndimage.binary_fill_holes(largest)
        area = int(filled.sum())
        if area < 100:
            continue
        air = (sl < -400) & filled
        ys, xs = np.nonzero(filled)
        cy, cx = ys.mean(), xs.mean()
        post = air.copy()
        post[: int(math.ceil(cy))] = False
        right = post[:, : int(round(cx))].sum() / area  # patient right = image left
        left = post[:, int(round(cx)) :].sum() / area
        lung[k] = (right + left) >= 0.03 and min(right, left) >= 0.01
    method = "lung"
    if not lung[-1] or lung.all():
        # The lung-base run must reach the top of the scan and leave abdomen below it.
        method = "central"
    if method == "lung":
        base = n - 1
        while base > 0 and lung[base - 1]:
            base -= 1
        dome = base + DOME_ABOVE_LUNG_BASE_MM / spacing_z
        lo_full = int(math.floor(dome - SLAB_BELOW_DOME_MM / spacing_z))
        hi_full = int(math.ceil(dome)) + 1
        lo, hi = max(0, lo_full), min(n, hi_full)
        clipped = ((lo - lo_full) + (hi_full - hi)) * float(spacing_z)
    else:
        clipped = 0.0
        lo = int(math.floor(n * (1 - CENTRAL_FRACTION) / 2))
        hi = max(lo + 1, int(math.ceil(n * (1 + CENTRAL_FRACTION) / 2)))
        hi = min(hi, n)
    if not superior_last:
        lo, hi = n - hi, n - lo
    return lo, hi, method, clipped


def _orientation_flags(orientation: Sequence[float]) -> tuple[bool, bool]:
    """(superior_last, posterior_down) from DICOM LPS direction cosines."""
    n = slice_normal(orientation)
    col = np.asarray(orientation[3:6], dtype=np.float64)
    # LPS: +z is superior, +y is posterior. Slices are sorted ascending along n.
    return bool(n[2] >= 0), bool(col[1] >= 0)


@dataclass(frozen=True, kw_only=True)
class CachedVolume:
    """A series on the training cache grid, as `phasejax prepare` would have cached it."""

    volume: np.ndarray  # int16 HU [Z, size, size]
    spacing_z: float
    pixel_mm: float
    z_lo: int
    z_hi: int
    z_method: str  # "lung" | "central"
    slab_clipped_mm: float = 0.0  # of the dome-to-poles slab, cut off by the scan range


def cache_volume(series: Series, spec: CacheSpec) -> CachedVolume:
    """Resample onto the cache grid and find the liver-to-kidney slab: the one way a
    series enters the cache, shared by `prepare` and `phasejax predict`."""
    vol, pixel_mm = resample_to_cache(series.hu, series.spacing, spec)
    spacing_z = spec.spacing_z if vol.shape[0] > 1 else float(series.spacing[0])
    superior_last, posterior_down = _orientation_flags(series.orientation)
    z_lo, z_hi, method, clipped = slab_and_clipping(
        vol, spacing_z, superior_last=superior_last, posterior_down=posterior_down
    )
    return CachedVolume(
        volume=vol,
        spacing_z=float(spacing_z),
        pixel_mm=float(pixel_mm),
        z_lo=int(z_lo),
        z_hi=int(z_hi),
        z_method=method,
        slab_clipped_mm=float(clipped),
    )


# --------------------------------------------------------------------------- worker


@dataclass(frozen=True, kw_only=True)
class _Task:
    plan: Plan
    out: str
    spec: CacheSpec
    row: dict[str, Any]


def _prepare_one(task: _Task) -> tuple[dict[str, Any] | None, list[Skipped]]:
    series, skipped = load_plan(task.plan)
    if series is None:
        return None, skipped
    cached = cache_volume(series, task.spec)
    vol = cached.volume
    hint = header_phase_hint(series.header)
    row = {
        **task.row,
        "num_slices": int(vol.shape[0]),
        "spacing_z": round(cached.spacing_z, 4),
        "spacing_xy": round(cached.pixel_mm, 4),
        "z_lo": cached.z_lo,
        "z_hi": cached.z_hi,
        "z_method": cached.z_method,
        "orig_num_slices": series.num_slices,
        "orig_spacing_z": round(float(series.spacing[0]), 4),
        "orig_spacing_xy": round(float(series.spacing[1]), 4),
        "ordering": series.ordering,
        "problems": ";".join(series.problems),
        "kvp": series.header.get("KVP", ""),
        "header_hint": hint.phase,
    }
    write_entry(task.out, row, vol)
    return row, skipped


# --------------------------------------------------------------------------- driver


@dataclass(kw_only=True)
class PrepareReport:
    out: str
    manifest: str = ""
    prepared: int = 0  # decoded and written in this run
    reused: int = 0  # already in the cache (row refreshed if labels changed)
    refreshed: int = 0  # of `reused`, rows rewritten because labels/splits changed
    failed_series: list[str] = field(default_factory=list)  # selected series ids not prepared
    failed: list[Skipped] = field(default_factory=list)  # why: the files/series and errors
    skipped: list[Skipped] = field(default_factory=list)  # files/series not usable at all
    unlabelled: int = 0  # series found but not in the labels CSV (and not included)
    unmatched_labels: list[LabelRow] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)  # cache entries not selected by this run
    splits: dict[str, int] = field(default_factory=dict)  # series per split

    @property
    def ok(self) -> bool:
        return not self.failed_series and (self.prepared + self.reused) > 0


def _resolve_patients(
    selected: Sequence[Plan], labels: dict[str, LabelRow]
) -> tuple[dict[str, str], dict[str, str]]:
    """(series id -> patient id, patient id -> fixed split from the CSV)."""
    patient: dict[str, str] = {}
    fixed: dict[str, str] = {}
    fixed_line: dict[str, int] = {}
    for p in selected:
        lab = labels.get(p.series_id)
        pid = (lab.patient_id if lab else "") or p.patient_id or p.series_id
        patient[p.series_id] = pid
        if lab and lab.split:
            if pid in fixed and fixed[pid] != lab.split:
                raise LabelsError(
                    f"labels lines {fixed_line[pid]} and {lab.line} put patient {pid} in two "
                    f"splits ({fixed[pid]}, {lab.split}); a patient belongs to one split"
                )
            fixed[pid] = lab.split
            fixed_line[pid] = lab.line
    return patient, fixed


def prepare(
    root: str | os.PathLike[str],
    labels_csv: str | os.PathLike[str] | None,
    out: str | os.PathLike[str],
    *,
    spec: CacheSpec | None = None,
    workers: int = 1,
    split_seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    include_unlabelled: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> PrepareReport:
    """Build (or resume) a prepared cache from real CT under `root`. See module docstring."""
    spec = spec or CacheSpec()
    say = log or (lambda msg: None)
    root = str(root)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"--root {root}: not a folder")
    rows = read_labels(labels_csv) if labels_csv else []
    if not rows and not include_unlabelled:
        raise LabelsError("no labelled rows: give --labels CSV (or --include-unlabelled)")

    with worker_pool(workers) as pool:
        disc = discover([root], workers=workers, progress=progress, pool=pool)
        report = PrepareReport(out=str(out), skipped=list(disc.skipped))
        labels, report.unmatched_labels = match_labels(disc.plans, rows, root)
        selected = [p for p in disc.plans if p.series_id in labels or include_unlabelled]
        report.unlabelled = sum(1 for p in disc.plans if p.series_id not in labels)
        patient, fixed = _resolve_patients(selected, labels)
        drawn = assign_splits(
            [pid for pid in set(patient.values()) if pid not in fixed],
            seed=split_seed,
            val_fraction=val_fraction,
            test_fraction=test_fraction,
        )
        split_of = {**drawn, **fixed}

        init_cache(
            out,
            spec,
            made_by="phasejax prepare",
            root=os.path.abspath(root),
            labels=os.path.abspath(labels_csv) if labels_csv else "",
            split_seed=split_seed,
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            include_unlabelled=include_unlabelled,
        )
        tasks: list[_Task] = []
        for p in selected:
            lab = labels.get(p.series_id)
            pid = patient[p.series_id]
            base: dict[str, Any] = {
                **(lab.extra if lab else {}),
                "series_id": p.series_id,
                "patient_id": pid,
                "split": split_of[pid],
                "site": lab.site if lab else "",
                "phase": lab.phase if lab else "",
                "source": _relative(p.source, root),
                "series_uid": p.series_uid,
                "acquisition": p.acquisition,
                "format": "nifti" if isinstance(p, NiftiPlan) else "dicom",
            }
            if has_entry(out, p.series_id):
                report.reused += 1
                if _refresh_row(out, p.series_id, base):
                    report.refreshed += 1
                continue
            tasks.append(_Task(plan=p, out=str(out), spec=spec, row=base))
        say(
            f"{len(disc.plans)} series found ({report.unlabelled} not in the labels), "
            f"{len(selected)} selected: {report.reused} already cached, {len(tasks)} to prepare"
        )
        results = map_plans(
            _prepare_one, tasks, workers=workers, progress=progress, desc="prepare", pool=pool
        )
        for task, res in results:
            if isinstance(res, BaseException):
                report.failed_series.append(task.plan.series_id)
                report.failed.append(
                    Skipped(task.plan.source, "decode_error", f"{type(res).__name__}: {res}")
                )
                continue
            row, bad = res
            if row is None:
                report.failed_series.append(task.plan.series_id)
                report.failed.extend(bad)
            else:
                report.prepared += 1
                report.skipped.extend(bad)
        chosen = {p.series_id for p in selected}
        volumes = Path(out) / "volumes"
        report.stale = sorted(p.stem for p in volumes.glob("*.json") if p.stem not in chosen)
        report.manifest = str(finalize(out))
        report.splits = dict(
            Counter(split_of[patient[p.series_id]] for p in selected if has_entry(out, p.series_id))
        )
        return report


def _relative(path: str, root: str) -> str:
    """Path relative to root when inside it (manifests stay valid when the tree moves)."""
    a, r = os.path.abspath(path), os.path.abspath(root)
    return os.path.relpath(a, r) if os.path.commonpath([a, r]) == r else a


def _refresh_row(out: str | os.PathLike[str], series_id: str, base: dict[str, Any]) -> bool:
    """Rewrite an existing entry's row when its labels or split changed (no decoding)."""
    path = Path(out) / "volumes" / f"{series_id}.json"
    old = json.loads(path.read_text())
    changed = {k: v for k, v in base.items() if str(old.get(k, "")) != str(v)}
    if not changed:
        return False
    write_entry(out, {**old, **base}, np.asarray(load_volume(out, series_id, mmap=False)))
    return True
