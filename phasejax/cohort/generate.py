"""Generate a synthetic multi-site cohort: DICOM series, labels, organ masks, training cache.

Layout of a cohort directory::

    cohort.json             how it was made (preset, seed, label noise, formats, cache grid)
    labels.csv              one row per series (see LABEL_COLUMNS), sorted by series_id
    dicom/<patient>/<study>/<series>/IM00001.dcm ...   (format dicom | both)
    organs/<series_id>.npz  organ label volume on the DICOM grid + label table (dicom | both)
    cache/                  prepared training cache, phasejax.data.cache format (cache | both)
    .progress/<series_id>.json   per-series completion markers (the labels.csv row)

Work is split by exam (the anatomy is built once per exam and rendered in every
phase), spread over `workers` processes, and every series is marked done only
after all its files are written, so an interrupted run resumes where it stopped
and never duplicates a series. Output bytes depend only on (preset, seed,
label_noise, cache grid): not on the number of workers nor on interruptions.

Cache format without DICOM (`fmt="cache"`) renders straight onto the cache grid,
i.e. at a reduced matrix: the same field of view and z range as the DICOM series
would have, but `cache_spec.size` pixels in plane (the DICOM path renders 512 and
downsamples) and the cache's slice spacing (the DICOM path renders the site's
1-5 mm slices and slab-averages them), with the noise SD scaled to what that
resampling leaves (`_cache_noise_sd`). It matches the DICOM path for the same seed
in series ids, labels, splits, slice counts and organ HU (medians within a few HU;
tests/test_cohort_generate.py states the tolerances), at ~1/20 of the cost.
labels.csv is the same in both formats except the DICOM `path` / `organ_path`.

Slice order everywhere (DICOM instance order, organ volumes, cache) is the
renderer's: index 0 = most inferior, z growing towards the head. That is also how
phasejax.data.dicom sorts a series (along the slice normal of ImageOrientation
1\\0\\0\\0\\1\\0), so a `phasejax prepare` of the cohort's DICOM gives the same cache.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import sys
import zipfile
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from phasejax import atomic
from phasejax.cohort.exam import ExamPlan, SeriesPlan, plan_exam, rng_for
from phasejax.cohort.kinetics import DEFAULT_DELAYED_RULE, DELAYED_RULES, UNSTATED_DELAYED_RULE
from phasejax.cohort.sites import EXTERNAL_SITES, INTERNAL_SITE, SITES, Site
from phasejax.data import cache as cache_mod
from phasejax.data.cache import CacheSpec
from phasejax.hu import HU_MAX, HU_MIN

FORMATS = ("cache", "dicom", "both")
LABEL_COLUMNS = (
    "series_id",
    "patient_id",
    "site",
    "split",
    "phase",
    "true_phase",
    "label_flipped",
    "protocol_phase",
    "seconds",
    "kvp",
    "noise_sd",
    "kernel",
    "slice_thickness",
    "pixel_spacing",
    "num_slices",
    "confounders",
    "series_uid",
    "acquisition",
    "study_uid",
    "series_description",
    "path",
    "organ_path",
)
# Version of the generator's output. Bump it whenever generated pixels or labels change
# (kinetics, anatomy, rendering, protocols, the labelling rule...): it is part of the
# built-in cohort's directory name and is checked by `is_complete`, so a cached cohort made
# by an older generator is regenerated instead of silently reused.
# 2: kinetics recalibrated (aortic PVP, portal/splenic LAP, corticomedullary gap).
# 3: blood pool after the first pass recalibrated to real scans (extracellular extraction
#    0.12 -> 0.30; PVP aorta ~146, DP aorta ~97 HU) and the liver washout rule at 85% of peak.
# 4: liver gain 1.06, medullary washin slowed with poor renal function, tubular concentration
#    (renal parenchyma bright in the excretory phase, as real delayed series show).
# 5: medullary washin slower (corticomedullary differentiation persists into the 70 s
#    portal-venous phase; medulla above cortex only once tubular concentration starts) and
#    chronic liver disease (cirrhosis) in a share of patients.
# 6: the labelling rule reads only absolute HU of the series itself (kinetics.phase_from_hu),
#    not the patient's baseline or the liver's own peak.
# 7: the heart rests on the diaphragm's central tendon (so the top input slice, at the liver
#    dome, cuts the ventricles as on real CT), and one scan in five starts 0-30 mm below the
#    liver dome, as liver-protocol scans often do (ablations/README.md, "Cohort v7").
# 8: slower medullary washin: a 70 s portal-venous kidney keeps its corticomedullary gap
#    (Yuh & Cohan 1999; the real portal-venous series), see kinetics.curves.
# (Session 20 made DP by excretion alone the default label rule, config.CohortConfig. The
# images are unchanged and the folder names the rule, `-dpexcretion`, so no new version.)
COHORT_VERSION = 8


class CohortError(RuntimeError):
    pass


@dataclass(frozen=True, kw_only=True)
class Preset:
    name: str
    internal: int  # internal exams (one exam per patient)
    internal_test: int
    internal_val: int
    external_per_site: int
    matrix: int = 512  # DICOM in-plane matrix (the FOV stays the site's)
    min_slice_thickness_mm: float = 0.0  # tiny: thick slices only, to stay small
    # Internal exams beyond `internal`, every one a training exam (cohort.extra_train_exams):
    # more training patients while the test, validation and external exams stay the same.
    extra_train: int = 0

    @property
    def num_exams(self) -> int:
        return self.internal + self.extra_train + self.external_per_site * len(EXTERNAL_SITES)

    @property
    def num_train_exams(self) -> int:
        """Training exams, whatever the seed (internal_splits fixes the test and val counts)."""
        return self.internal - self.internal_test - self.internal_val + self.extra_train


PRESETS: dict[str, Preset] = {
    # For tests: every site present, 128 matrix, 5 mm slices (a few MB of DICOM).
    "tiny": Preset(
        name="tiny",
        internal=6,
        internal_test=1,
        internal_val=1,
        external_per_site=1,
        matrix=128,
        min_slice_thickness_mm=5.0,
    ),
    # Sized so that cohort + strategies A and B + eval fit in ~30 min on 2 CPU cores
    # (cache generation itself ~2-3 min there; measured by experiments/benchmarks/cohort.py).
    "quick": Preset(
        name="quick", internal=150, internal_test=30, internal_val=15, external_per_site=15
    ),
    # Three times quick's internal cohort (315 training exams instead of 105; 90 test exams),
    # same external sites: the learning-curve ablation's next point on a CPU (generation
    # ~1.5 min on 2 cores, training time unchanged at a fixed step count).
    "medium": Preset(
        name="medium", internal=450, internal_test=90, internal_val=45, external_per_site=15
    ),
    # The paper: 1175 internal exams split at patient level with 96 test exams, and 215
    # external exams from five hospitals (43 each).
    "paper": Preset(
        name="paper", internal=1175, internal_test=96, internal_val=108, external_per_site=43
    ),
}


# Training-cache bytes per exam (int16 volumes and uint8 organ masks) at 192 px and 5 mm
# slices, measured on cohort v8: medium 9.66 GB / 525 exams, paper 25.8 GB / 1,390 (18.4
# and 18.6 MB). The cache scales with the pixels per slice and the slices per scan.
_CACHE_BYTES_PER_EXAM = 18.6e6
# An extra arterial series (cohort.extra_arterial): medium with one per training exam took
# 11.40 GB, 1.73 GB more for its 315 extra series (5.5 MB each).
_CACHE_BYTES_PER_EXTRA_SERIES = 5.5e6
_CACHE_REFERENCE = (192, 5.0)  # (size, spacing_z) of that measurement


def cache_bytes_estimate(preset: Preset, spec: CacheSpec, extra_arterial: int = 0) -> int:
    """About how many bytes the training cache of `preset` on the grid `spec` takes, with
    `extra_arterial` more series per training exam."""
    size, spacing = _CACHE_REFERENCE
    scale = (spec.size / size) ** 2 * (spacing / spec.spacing_z)
    extra = preset.num_train_exams * int(extra_arterial) * _CACHE_BYTES_PER_EXTRA_SERIES
    return int((preset.num_exams * _CACHE_BYTES_PER_EXAM + extra) * scale)


def check_free_space(
    cache_dir: Path, preset: Preset, spec: CacheSpec, extra_arterial: int = 0
) -> None:
    """CohortError, before any rendering, when the disk holding `cache_dir` lacks the space the
    rest of the cache needs (what is written already counts): a full disk otherwise stops
    generation minutes in with an OSError from deep inside numpy."""
    import shutil

    written = sum(
        f.stat().st_size
        for sub in ("volumes", "masks")
        if (cache_dir / sub).is_dir()
        for f in (cache_dir / sub).iterdir()
    )
    needed = cache_bytes_estimate(preset, spec, extra_arterial) - written
    free = shutil.disk_usage(cache_dir).free
    if needed > free:
        raise CohortError(
            f"the {preset.name} cohort's cache needs about {needed / 1e9:.1f} GB more under "
            f"{cache_dir}, and that disk has {free / 1e9:.1f} GB free: free some space, or "
            "point PHASEJAX_HOME (where the built-in cohort is kept) at a larger disk"
        )


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown cohort preset {name!r}; known: {sorted(PRESETS)}") from None


def exam_list(preset: Preset) -> list[tuple[str, int]]:
    """(site name, exam index) of every exam of a preset, internal first."""
    out = [(INTERNAL_SITE, i) for i in range(preset.internal + preset.extra_train)]
    for name in EXTERNAL_SITES:
        out += [(name, i) for i in range(preset.external_per_site)]
    return out


def internal_splits(preset: Preset, seed: int) -> dict[str, str]:
    """Patient-level split of the internal site with exact test / val counts.

    Ordering by a hash of (seed, patient id), as phasejax.data.cache.assign_splits does,
    so each patient's split is fixed by the seed alone. The preset's `extra_train` exams
    (indices from `internal` on) are all training exams and move no other exam's split.
    """
    import hashlib

    from phasejax.cohort.exam import patient_id_for

    site = SITES[INTERNAL_SITE]
    ids = [patient_id_for(site, i) for i in range(preset.internal)]
    order = sorted(ids, key=lambda p: hashlib.sha256(f"{seed}:{p}".encode()).hexdigest())
    out = {}
    for i, pid in enumerate(order):
        out[pid] = (
            "test"
            if i < preset.internal_test
            else "val"
            if i < preset.internal_test + preset.internal_val
            else "train"
        )
    for i in range(preset.internal, preset.internal + preset.extra_train):
        out[patient_id_for(site, i)] = "train"
    return out


# --------------------------------------------------------------------------- geometry


def dicom_grid(plan: ExamPlan, preset: Preset) -> Any:
    """The grid the DICOM series of this exam are written on."""
    from phasejax.cohort import render

    return render.patient_grid(
        plan.patient,
        slice_thickness_mm=plan.slice_thickness_mm,
        matrix=preset.matrix,
        fov_mm=plan.fov_mm,
    )


def cache_grid(grid: Any, spec: CacheSpec) -> tuple[Any, np.ndarray]:
    """The cache grid that `resample_to_cache` would produce from `grid`, and its z indices.

    Same FOV; in plane `spec.size` pixels (pixel centres as ndimage.zoom(grid_mode=True)
    places them); along z the slice centres `cache._z_positions` picks, expressed in
    the input grid's fractional slice index (returned, for the noise model and tests).
    """
    nz, h, w = grid.shape
    sz, sy, sx = grid.spacing
    if h != w or abs(sy - sx) > 1e-6:
        raise CohortError(f"cohort grids are square, got {grid.shape} {grid.spacing}")
    pos = cache_mod._z_positions(nz, sz, spec.spacing_z)
    fov = w * sx
    px = fov / spec.size
    x0, y0, z0 = grid.origin
    # In-plane: input pixel i covers [x0 + (i - 0.5) sx, ...); output pixel j's centre is
    # at the FOV edge + (j + 0.5) px.
    edge_x, edge_y = x0 - 0.5 * sx, y0 - 0.5 * sy
    origin = (edge_x + 0.5 * px, edge_y + 0.5 * px, z0 + float(pos[0]) * sz)
    new = dataclasses.replace(
        grid,
        shape=(len(pos), spec.size, spec.size),
        spacing=(spec.spacing_z if len(pos) > 1 else sz, px, px),
        origin=origin,
    )
    return new, pos


def fov_circle(grid: Any, fov_mm: float) -> np.ndarray:
    """In-plane mask [H, W] of the reconstruction circle of diameter `fov_mm` (grid-centred)."""
    _, h, w = grid.shape
    _, dy, dx = grid.spacing
    yy = (np.arange(h) - (h - 1) / 2.0) * dy
    xx = (np.arange(w) - (w - 1) / 2.0) * dx
    return (yy[:, None] ** 2 + xx[None, :] ** 2) <= (fov_mm / 2.0) ** 2


def slice_positions(grid: Any) -> np.ndarray:
    """ImagePositionPatient (x, y, z) mm of every slice's pixel [0, 0]."""
    x0, y0, z0 = grid.origin
    k = np.arange(grid.shape[0], dtype=np.float64)
    z = z0 + k * grid.spacing[0]
    return np.stack([np.full_like(z, x0), np.full_like(z, y0), z], axis=1)


def _slab_counts(n: int, sz: float, target: float) -> np.ndarray:
    """How many input slices `cache._resample_z` averages into each output slice."""
    pos = cache_mod._z_positions(n, sz, target)
    if n == 1 or target <= sz * 1.01:
        return np.ones(len(pos))
    half = 0.5 * target / sz
    lo = np.maximum(np.ceil(pos - half - 1e-6), 0)
    hi = np.minimum(np.floor(pos + half + 1e-6), n - 1)
    return np.maximum(hi - lo + 1, 1)


@lru_cache(maxsize=256)
def _inplane_noise_factor(kernel: str, px_in: float, px_out: float) -> float:
    """SD left after the cache's in-plane resampling of unit-SD scanner noise at `px_in`.

    Measured on a noise patch through the same operations (the renderer's kernel-shaped
    noise filter, then cache._resample_inplane), so it follows both implementations. If
    the renderer's filter is not reachable, white noise averaged over the pixel-area ratio
    (SD / ratio) is the fallback; the cache-vs-DICOM test watches the result.
    """
    if px_out <= px_in * 1.001:
        return 1.0
    n_in = 192
    n_out = max(8, int(round(n_in * px_in / px_out)))
    noise = np.random.default_rng(0).standard_normal((4, n_in, n_in)).astype(np.float32)
    try:
        from phasejax.cohort import anatomy, render

        k = anatomy.gauss_kernel(render._KERNEL_MM[kernel] / px_in)
        noise = anatomy.blur_inplane(noise, k)
    except (AttributeError, KeyError, TypeError):
        return float(px_in / px_out)
    noise /= noise[:, 16:-16, 16:-16].std()
    out, _ = cache_mod._resample_inplane(noise, px_in, px_in, n_out)
    m = max(2, n_out // 8)
    return float(out[:, m:-m, m:-m].std())


def _cache_noise_sd(plan_noise: float, kernel: str, grid: Any, cgrid: Any) -> float:
    """Noise SD for a direct render on the cache grid that matches the DICOM path.

    The DICOM path averages `_slab_counts` independent slices into each cache slice
    (SD / sqrt(m)) and downsamples in plane with an anti-aliasing filter
    (`_inplane_noise_factor`). A direct render on the cache grid gets that SD, so both
    paths give the same noise level on the cache grid (tested within 15%).
    """
    m = _slab_counts(grid.shape[0], grid.spacing[0], cgrid.spacing[0])
    z_factor = float(np.sqrt(np.mean(1.0 / m)))
    xy = _inplane_noise_factor(kernel, round(grid.spacing[1], 4), round(cgrid.spacing[1], 4))
    return float(plan_noise * z_factor * xy)


# --------------------------------------------------------------------------- writers


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An .npz (np.load-able) with fixed zip timestamps: same arrays -> same bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, arr in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            b = io.BytesIO()
            np.lib.format.write_array(b, np.asarray(arr), allow_pickle=False)
            zf.writestr(info, b.getvalue())
    return buf.getvalue()


def write_organ_npz(path: Path, labels: np.ndarray, grid: Any) -> None:
    """Organ label volume + label table (ids, names, TotalSegmentator names) + geometry."""
    from phasejax.cohort.structures import STRUCTURES

    ids = np.array([int(k) for k in STRUCTURES], dtype=np.int32)
    names = np.array([v.name for v in STRUCTURES.values()])
    totalseg = np.array([v.totalseg or "" for v in STRUCTURES.values()])
    data = _npz_bytes(
        {
            "labels": labels.astype(np.uint8),
            "label_ids": ids,
            "label_names": names,
            "totalseg_names": totalseg,
            "spacing": np.asarray(grid.spacing, dtype=np.float64),
            "positions": slice_positions(grid),
        }
    )
    atomic.write_bytes(path, data)


def _series_meta(plan: ExamPlan, s: SeriesPlan, grid: Any, instance_start: int) -> Any:
    from phasejax.cohort.dicom_writer import SeriesMeta

    v = plan.site.vendor
    contrast = s.protocol_phase != "nc"
    agent = v.contrast_agent if (contrast or v.contrast_agent_on_nc) else ""
    start = None
    if v.write_contrast_start and (contrast or v.contrast_start_on_nc):
        start = plan.injection_start
    p = plan.patient
    return SeriesMeta(
        patient_id=plan.patient_id,
        patient_name=f"SYNTH^{plan.patient_id.replace('-', '')}",
        patient_sex=p.sex,
        patient_weight_kg=p.weight_kg,
        study_uid=plan.study_uid,
        series_uid=s.series_uid,
        frame_of_reference_uid=plan.frame_of_reference_uid,
        study_id=str(plan.index + 1),
        accession_number=f"SYN{plan.index + 1:07d}",
        series_number=s.series_number,
        acquisition_number=s.acquisition_number,
        instance_start=instance_start,
        study_datetime=plan.study_datetime,
        series_datetime=s.scan_time,
        acquisition_datetime=s.scan_time if v.write_acquisition_time else None,
        content_datetime=s.scan_time,
        contrast_start=start,
        contrast_agent=agent,
        contrast_route="IV" if agent else "",
        contrast_volume_ml=p.physiology.volume_ml if contrast else None,
        series_description=s.description,
        protocol_name=v.protocol_name,
        manufacturer=v.manufacturer,
        model_name=v.model_name,
        station_name=v.station_name,
        institution_name=plan.site.title.upper(),
        software_versions=v.software_versions,
        kvp=plan.kvp,
        tube_current_ma=int(rng_for("mA", s.series_uid, s.acquisition).integers(150, 450)),
        convolution_kernel=v.kernels.get(plan.kernel, plan.kernel),
        slice_thickness_mm=float(grid.spacing[0]),
        reconstruction_diameter_mm=float(grid.shape[2] * grid.spacing[2]),
        encoding=v.encoding,
    )


def _series_dir(plan: ExamPlan, s: SeriesPlan) -> str:
    study = f"{plan.study_datetime:%Y%m%d}_CT_ABDOMEN"
    return f"{plan.patient_id}/{study}/SE{s.series_number:03d}"


# --------------------------------------------------------------------------- one exam


@dataclass(frozen=True, kw_only=True)
class _Job:
    out: str
    # The preset itself, not its name: workers are spawned processes, which know only the
    # built-in PRESETS, so a caller's own preset must travel with the job.
    preset: Preset
    seed: int
    label_noise: float
    delayed_rule: str
    extra_arterial: int
    fmt: str
    spacing_z: float
    size: int
    site: str
    index: int
    split: str


def _row(plan: ExamPlan, s: SeriesPlan, job: _Job, grid: Any, rel_dir: str, organ: str) -> dict:
    return {
        "series_id": s.series_id,
        "patient_id": plan.patient_id,
        "site": plan.site.name,
        "split": job.split,
        "phase": s.phase.value,
        "true_phase": s.true_phase.value,
        "label_flipped": int(s.label_flipped),
        "protocol_phase": s.protocol_phase,
        "seconds": f"{s.seconds:.2f}",
        "kvp": f"{plan.kvp:g}",
        "noise_sd": f"{s.noise_sd:g}",
        "kernel": plan.kernel,
        "slice_thickness": f"{grid.spacing[0]:g}",
        "pixel_spacing": f"{grid.spacing[1]:.4f}",
        "num_slices": int(grid.shape[0]),
        "confounders": ";".join(plan.confounders()),
        "series_uid": s.series_uid,
        "acquisition": s.acquisition,
        "study_uid": plan.study_uid,
        "series_description": s.description,
        "path": rel_dir,
        "organ_path": organ,
    }


def _cache_row(
    row: dict, n_slices: int, z_range: tuple[int, int], pixel_mm: float, spec: CacheSpec
) -> dict:
    keep = (
        "series_id", "patient_id", "split", "site", "phase", "true_phase", "label_flipped",
        "protocol_phase", "seconds", "kvp", "confounders", "series_uid", "acquisition",
        "noise_sd", "kernel", "slice_thickness",
    )  # fmt: skip
    out = {k: row[k] for k in keep}
    out.update(
        num_slices=int(n_slices),
        spacing_z=float(spec.spacing_z) if n_slices > 1 else float(row["slice_thickness"]),
        spacing_xy=round(float(pixel_mm), 6),
        z_lo=int(z_range[0]),
        z_hi=int(z_range[1]),
        source=f"dicom/{row['path']}" if row["path"] else f"synthetic:{row['series_id']}",
    )
    return out


def _z_range(cmask: np.ndarray, what: str) -> tuple[int, int]:
    from phasejax.cohort.render import liver_kidney_range

    try:
        return liver_kidney_range(cmask)
    except ValueError as e:
        # Only a field of view that misses an organ gets here; the whole volume is then
        # the slice-selection range (said loudly, never silently).
        print(f"warning: {what}: {e}; using all {cmask.shape[0]} slices", file=sys.stderr)
        return 0, int(cmask.shape[0])


def _series_done(out: Path, sid: str, fmt: str) -> bool:
    done = (out / ".progress" / f"{sid}.json").exists()
    if fmt in ("cache", "both"):
        done = done and cache_mod.has_entry(out / "cache", sid)
    return done


def run_exam(job: _Job) -> list[dict]:
    """Render and write every not-yet-done series of one exam; returns their label rows."""
    try:
        return _run_exam(job)
    except CohortError:
        raise
    except Exception as e:
        raise CohortError(
            f"exam {job.index} of site {job.site} (cohort {job.preset.name}, seed {job.seed}) "
            f"failed: {type(e).__name__}: {e}"
        ) from e


def _run_exam(job: _Job) -> list[dict]:
    from phasejax.cohort import render

    out = Path(job.out)
    preset = job.preset
    spec = CacheSpec(spacing_z=job.spacing_z, size=job.size)
    plan = plan_exam(
        SITES[job.site],
        job.index,
        cohort_seed=job.seed,
        namespace=preset.name,
        label_noise=job.label_noise,
        min_slice_thickness_mm=preset.min_slice_thickness_mm,
        delayed_rule=job.delayed_rule,
        extra_arterial=job.extra_arterial,
    )
    todo = [s for s in plan.series if not _series_done(out, s.series_id, job.fmt)]
    if not todo:
        return []
    grid = dicom_grid(plan, preset)
    write_dicom = job.fmt in ("dicom", "both")
    write_cache = job.fmt in ("cache", "both")
    rgrid = grid if write_dicom else cache_grid(grid, spec)[0]
    rows = []
    labels: np.ndarray | None = None  # the exam's organ volume (same anatomy in every phase)
    cmask: np.ndarray | None = None
    z_range = (0, 0)
    instance_next: dict[str, int] = {}
    for s in plan.series:  # all series, in order, so shared-UID instance numbers are stable
        start = instance_next.get(s.series_uid, 1)
        instance_next[s.series_uid] = start + grid.shape[0]
        if s not in todo:
            continue
        noise = s.noise_sd if write_dicom else _cache_noise_sd(s.noise_sd, plan.kernel, grid, rgrid)
        scanner = render.Scanner(
            kvp=plan.kvp, noise_sd=noise, kernel=plan.kernel, fov_mm=plan.fov_mm
        )
        hu, raw_labels = render.render(plan.patient, s.t, rgrid, scanner, noise_seed=s.noise_seed)
        if labels is None:
            # The organ volume describes the image: nothing outside the reconstruction
            # circle (the renderer's label map is shared and cached, so copy, once per exam).
            inside = fov_circle(rgrid, plan.fov_mm)
            labels = np.where(inside[None], raw_labels, 0).astype(np.uint8)
            if write_cache:
                if write_dicom:
                    cmask = cache_mod.resample_labels_to_cache(labels, grid.spacing, spec)
                else:
                    cmask = labels
                z_range = _z_range(cmask, f"{plan.patient_id} ({plan.site.name})")
        rel_dir, organ = "", ""
        if write_dicom:
            from phasejax.cohort.dicom_writer import write_series

            rel_dir = _series_dir(plan, s)
            meta = _series_meta(plan, s, grid, start)
            write_series(
                out / "dicom" / rel_dir,
                hu,
                positions=slice_positions(grid),
                pixel_spacing=(grid.spacing[1], grid.spacing[2]),
                meta=meta,
            )
            organ = f"organs/{s.series_id}.npz"
            write_organ_npz(out / organ, labels, grid)
        row = _row(plan, s, job, grid, rel_dir, organ)
        if write_cache:
            assert cmask is not None
            q = np.clip(np.rint(hu), HU_MIN, HU_MAX)
            if write_dicom:
                # Exactly what a reader of the DICOM gets: stored-integer HU, resampled.
                cvol, pixel_mm = cache_mod.resample_to_cache(q, grid.spacing, spec)
            else:
                cvol, pixel_mm = q.astype(np.int16), float(rgrid.spacing[1])
            crow = _cache_row(row, cvol.shape[0], z_range, pixel_mm, spec)
            cache_mod.write_entry(out / "cache", crow, cvol, cmask)
        marker = out / ".progress" / f"{s.series_id}.json"
        atomic.write_text(marker, json.dumps(row, sort_keys=True))
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- driver


def _cohort_info(
    preset: Preset,
    seed: int,
    fmt: str,
    spec: CacheSpec,
    label_noise: float,
    delayed_rule: str,
    extra_arterial: int = 0,
) -> dict:
    return {
        "extra_arterial": int(extra_arterial),
        "extra_train_exams": int(preset.extra_train),
        "version": COHORT_VERSION,
        "preset": preset.name,
        "seed": int(seed),
        "label_noise": float(label_noise),
        "delayed_rule": delayed_rule,
        "format": fmt,
        "cache_spacing_z": float(spec.spacing_z),
        "cache_size": int(spec.size),
        "num_exams": preset.num_exams,
        "sites": [INTERNAL_SITE, *EXTERNAL_SITES],
    }


def _check_same_cohort(out: Path, info: dict) -> None:
    path = out / "cohort.json"
    if not path.exists():
        return
    old = json.loads(path.read_text())
    keys = (
        "version",
        "preset",
        "seed",
        "label_noise",
        "delayed_rule",
        "extra_arterial",
        "extra_train_exams",
        "cache_spacing_z",
        "cache_size",
    )
    # cohort.json written before delayed_rule existed: the rule was the default of then
    old.setdefault("delayed_rule", UNSTATED_DELAYED_RULE)
    old.setdefault("extra_arterial", 0)
    old.setdefault("extra_train_exams", 0)
    diff = {k: (old.get(k), info[k]) for k in keys if old.get(k) != info[k]}
    if old.get("format") != info["format"]:
        diff["format"] = (old.get("format"), info["format"])
    if diff:
        raise CohortError(
            f"{out} already holds another cohort ({', '.join(f'{k}: {a!r} != {b!r}' for k, (a, b) in diff.items())}); "
            "use a new directory"
        )


def _jobs(
    out: Path,
    preset: Preset,
    seed: int,
    fmt: str,
    spec: CacheSpec,
    label_noise: float,
    delayed_rule: str = DEFAULT_DELAYED_RULE,
    extra_arterial: int = 0,
) -> Iterator[_Job]:
    splits = internal_splits(preset, seed)
    for site_name, idx in exam_list(preset):
        site: Site = SITES[site_name]
        from phasejax.cohort.exam import patient_id_for

        split = splits[patient_id_for(site, idx)] if site.internal else "external"
        yield _Job(
            out=str(out), preset=preset, seed=seed, label_noise=float(label_noise),
            delayed_rule=delayed_rule, fmt=fmt, spacing_z=spec.spacing_z, size=spec.size,
            # extra arterial series for training exams only: the other splits stay as they are
            extra_arterial=int(extra_arterial) if split == "train" else 0,
            site=site_name, index=idx, split=split,
        )  # fmt: skip


def _write_labels_csv(out: Path) -> tuple[Path, list[dict]]:
    rows = [json.loads(p.read_text()) for p in sorted((out / ".progress").glob("*.json"))]
    rows.sort(key=lambda r: r["series_id"])
    path = out / "labels.csv"
    with atomic.open_atomic(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(LABEL_COLUMNS), lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in LABEL_COLUMNS})
    return path, rows


def generate(
    preset: str | Preset,
    out: Path,
    *,
    seed: int = 0,
    fmt: str = "cache",
    workers: int = 1,
    cache_spec: CacheSpec | None = None,
    label_noise: float = 0.0,
    delayed_rule: str = DEFAULT_DELAYED_RULE,
    extra_arterial: int = 0,
    extra_train_exams: int = 0,
    progress: bool = True,
) -> Path:
    """Generate (or finish generating) a cohort into `out`; returns `out`.

    preset: a built-in preset's name (PRESETS) or a Preset of one's own size.
    fmt: "dicom" (DICOM + organ npz), "cache" (training cache only, rendered directly on
    the cache grid) or "both" (DICOM, and a cache made from exactly the DICOM pixels).
    The training cache, when made, is `out / "cache"`.
    extra_arterial: arterial series added to each training exam near the EAP/LAP threshold
    (exam.plan_exam); validation, test and external exams are the same whatever its value.
    extra_train_exams: internal training exams added to the preset's (Preset.extra_train);
    the preset's own exams, their splits included, are the same whatever its value.
    """
    from tqdm import tqdm

    cache_spec = cache_spec or CacheSpec()
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    if not 0.0 <= label_noise <= 1.0:
        raise ValueError(f"label_noise must be in [0, 1], got {label_noise}")
    if delayed_rule not in DELAYED_RULES:
        raise ValueError(f"delayed_rule must be one of {DELAYED_RULES}, got {delayed_rule!r}")
    if int(extra_arterial) < 0:
        raise ValueError(f"extra_arterial must be >= 0, got {extra_arterial}")
    if int(extra_train_exams) < 0:
        raise ValueError(f"extra_train_exams must be >= 0, got {extra_train_exams}")
    p = preset if isinstance(preset, Preset) else get_preset(preset)
    if extra_train_exams:
        p = dataclasses.replace(p, extra_train=int(extra_train_exams))
    out = Path(out)
    info = _cohort_info(p, seed, fmt, cache_spec, label_noise, delayed_rule, extra_arterial)
    _check_same_cohort(out, info)
    out.mkdir(parents=True, exist_ok=True)
    (out / ".progress").mkdir(exist_ok=True)
    info["complete"] = False
    (out / "cohort.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    if fmt in ("cache", "both"):
        cache_mod.init_cache(
            out / "cache",
            cache_spec,
            source="phasejax cohort",
            preset=p.name,
            seed=int(seed),
            cohort_version=COHORT_VERSION,
        )
        check_free_space(out / "cache", p, cache_spec, int(extra_arterial))

    jobs = list(_jobs(out, p, seed, fmt, cache_spec, label_noise, delayed_rule, extra_arterial))
    bar = tqdm(
        total=len(jobs), unit="exam", desc=f"cohort {p.name}", disable=not progress, file=sys.stderr
    )
    n_series = 0
    try:
        if workers <= 1:
            for job in jobs:
                n_series += len(run_exam(job))
                bar.update(1)
                bar.set_postfix(series=n_series)
        else:
            import multiprocessing as mp

            # spawn: the parent may have started JAX threads (tests, training), which
            # must not be forked.
            ex = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"))
            try:
                futures = [ex.submit(run_exam, job) for job in jobs]
                for fut in as_completed(futures):
                    n_series += len(fut.result())
                    bar.update(1)
                    bar.set_postfix(series=n_series)
            except BaseException:
                # Ctrl-C or a failed exam: drop the queued exams instead of waiting for
                # them (finished series keep their markers; a rerun resumes from there).
                ex.shutdown(wait=False, cancel_futures=True)
                raise
            ex.shutdown(wait=True)
    finally:
        bar.close()

    _, rows = _write_labels_csv(out)
    if fmt in ("cache", "both"):
        cache_mod.finalize(out / "cache")
    info["complete"] = True
    info["num_series"] = len(rows)
    (out / "cohort.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return out


def is_complete(out: Path) -> bool:
    """True when `out` holds a finished cohort made by this generator version."""
    path = Path(out) / "cohort.json"
    if not path.exists():
        return False
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError:
        return False
    return bool(info.get("complete")) and info.get("version") == COHORT_VERSION


def _cache_current(cache_dir: Path) -> bool:
    """The cohort's training cache is finalized and was written by this generator version."""
    meta = cache_dir / "cache.json"
    if not (meta.exists() and (cache_dir / "manifest.csv").exists()):
        return False
    try:
        return json.loads(meta.read_text()).get("cohort_version") == COHORT_VERSION
    except json.JSONDecodeError:
        return False


def cohort_home() -> Path:
    return Path(os.environ.get("PHASEJAX_HOME") or Path.home() / ".cache" / "phasejax")


def cohort_dir_name(cohort_cfg: Any, spec: CacheSpec) -> str:
    # The rule that was the default until session 20 adds nothing, so the folders of earlier
    # cohorts keep their names and their labels; any other rule, today's default included,
    # is named (a folder without a tag holding other labels would be reused silently).
    rule = cohort_cfg.delayed_rule
    tag = "" if rule == UNSTATED_DELAYED_RULE else f"-dp{rule}"
    if cohort_cfg.extra_arterial:
        tag += f"-artx{int(cohort_cfg.extra_arterial)}"
    if cohort_cfg.extra_train_exams:
        tag += f"-trainx{int(cohort_cfg.extra_train_exams)}"
    return (
        f"cohort-{cohort_cfg.preset}-v{COHORT_VERSION}-seed{int(cohort_cfg.seed)}"
        f"-noise{float(cohort_cfg.label_noise):g}{tag}-z{float(spec.spacing_z):g}-px{int(spec.size)}"
    )


def ensure_cohort_cache(cohort_cfg: Any, spec: CacheSpec, root: Path | None = None) -> Path:
    """The prepared cache of the built-in cohort `cohort_cfg` on grid `spec`; generated
    on first use (and finished if an earlier run was interrupted), reused afterwards.

    Lives in `root` (default $PHASEJAX_HOME or ~/.cache/phasejax) under a folder named by
    preset, generator version (COHORT_VERSION), seed, label noise, labelling rule and grid: a cohort made
    by an older generator lives elsewhere and is never reused. Concurrent callers are
    serialised by a file lock, so two trainings started together generate it once.
    """
    import fcntl

    root = Path(root) if root is not None else cohort_home() / "cohorts"
    out = root / cohort_dir_name(cohort_cfg, spec)
    cache_dir = out / "cache"
    if is_complete(out) and _cache_current(cache_dir):
        return cache_dir
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not (is_complete(out) and _cache_current(cache_dir)):
                print(
                    f"generating the built-in '{cohort_cfg.preset}' cohort into {out}",
                    file=sys.stderr,
                )
                generate(
                    cohort_cfg.preset,
                    out,
                    seed=int(cohort_cfg.seed),
                    fmt="cache",
                    workers=max(1, min(4, (os.cpu_count() or 1))),
                    cache_spec=spec,
                    label_noise=float(cohort_cfg.label_noise),
                    delayed_rule=cohort_cfg.delayed_rule,
                    extra_arterial=int(cohort_cfg.extra_arterial),
                    extra_train_exams=int(cohort_cfg.extra_train_exams),
                )
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return cache_dir
