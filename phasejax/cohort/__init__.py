"""The built-in synthetic multiphase abdominal CT cohort (numpy/scipy only, never jax).

Modules: structures (label ids), patient (random patients), anatomy and render (the
3D phantom and its HU in a phase), kinetics (time-attenuation curves and the
labelling rule `phase_of`), sites (one internal and five external hospitals),
exam (what is scanned when, and its label), dicom_writer (CT Image Storage files),
generate (`generate`, `ensure_cohort_cache`), validate (ROI medians, curves and
montages for a radiologist's check).

Entry points: `phasejax cohort generate|validate`, and `resolve_cache(cfg)`: the prepared
cache a config trains and evaluates on, which is the built-in cohort's (generated on first
use by `phasejax.cohort.generate.ensure_cohort_cache`) unless a cache is given. Training
and evaluation ask this one function where their data is.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from phasejax.config import Config


def ensure_cohort_cache(cohort_cfg: Any, spec: Any, root: Path | None = None) -> Path:
    """See phasejax.cohort.generate.ensure_cohort_cache (imported lazily: keeps this light)."""
    from phasejax.cohort.generate import ensure_cohort_cache as _ensure

    return _ensure(cohort_cfg, spec, root)


def resolve_cache(cfg: Config, cache_dir: str | Path | None = None) -> Path:
    """The prepared cache: the argument, else cfg.data.cache_dir, else the built-in cohort
    (generated on first use, then reused)."""
    if cache_dir is not None and str(cache_dir):
        path = Path(cache_dir)
    elif cfg.data.cache_dir:
        path = Path(cfg.data.cache_dir)
    else:
        from phasejax.data.cache import CacheSpec

        spec = CacheSpec(spacing_z=cfg.data.cache_spacing_z, size=cfg.data.cache_size)
        path = Path(ensure_cohort_cache(cfg.cohort, spec))
    if not (path / "manifest.csv").is_file():
        raise FileNotFoundError(
            f"{path} is not a prepared cache (no manifest.csv); run `phasejax prepare` or "
            f"`phasejax cohort generate --format cache`, or leave data.cache_dir empty"
        )
    return path
