"""One series made ready for the model, exactly as the training data was.

`model_grid` finds the cache grid the model was trained on; `prepare_series` brings a
decoded series onto it with the training code itself (`cache_volume`: the run's cache
grid and the liver-to-kidney slab of `phasejax prepare`; `preprocess`: slice selection,
resize, window) and keeps what the report needs. `prepare_job` is that step for one
discovery plan in a worker process (no JAX there); `prepared_inputs`, the same for every
series under some paths, one after the other, for scripts that probe a model on real scans.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from phasejax.config import Config, DataConfig
from phasejax.data.aorta import read_aorta
from phasejax.data.cache import CacheSpec, read_spec
from phasejax.data.dicom import Skipped, slice_normal
from phasejax.data.discover import Plan, discover, hu_percentiles, load_plan
from phasejax.data.kidney import read_kidneys

# The orientation flags are prepare's own helper, so that the slab of a predicted
# series is found exactly as it was for the prepared training cache.
from phasejax.data.prepare import cache_volume
from phasejax.data.series import Series


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
    aorta_hu: float | None = None  # phasejax.data.aorta over the slab; None: not found
    kidney_cortex_hu: float | None = None  # phasejax.data.kidney; None: not found
    kidney_medulla_hu: float | None = None


def prepare_series(series: Series, data_cfg: DataConfig, spec: CacheSpec) -> PreparedSeries:
    """The model input of one decoded series, made exactly as for training and evaluation."""
    from phasejax.data.pipeline import preprocess

    cached = cache_volume(series, spec)
    image = preprocess(cached.volume, cached.z_lo, cached.z_hi, data_cfg, pixel_mm=cached.pixel_mm)
    px, known = cached.pixel_mm, cached.anatomy
    aorta = read_aorta(cached.volume, cached.z_lo, cached.z_hi, px, known)
    lm = cached.landmarks
    kidney = read_kidneys(cached.volume, lm.get("kidney_lo"), lm.get("kidney_hi"), px, known)
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
        aorta_hu=None if aorta is None else aorta.hu,
        kidney_cortex_hu=None if kidney is None else kidney.cortex_hu,
        kidney_medulla_hu=None if kidney is None else kidney.medulla_hu,
    )


@dataclass(frozen=True)
class PrepareJob:
    plan: Plan
    data_cfg: DataConfig
    spec: CacheSpec


def prepare_job(job: PrepareJob) -> tuple[PreparedSeries | None, list[Skipped], float]:
    """Worker: decode + prepare one plan (module level: it is pickled to a worker)."""
    t0 = time.perf_counter()
    series, bad = load_plan(job.plan)
    if series is None:
        return None, bad, time.perf_counter() - t0
    prep = prepare_series(series, job.data_cfg, job.spec)
    return prep, bad, time.perf_counter() - t0


def prepared_inputs(paths: Sequence[str | Path], cfg: Config) -> Iterator[PreparedSeries]:
    """Every readable series under `paths`, prepared for a model trained with `cfg`, in
    discovery order (in this process; series that cannot be read are passed over)."""
    spec, _ = model_grid(cfg)
    for plan in discover(paths).plans:
        series, _ = load_plan(plan)
        if series is not None:
            yield prepare_series(series, cfg.data, spec)
