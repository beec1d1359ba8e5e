"""The built-in synthetic multiphase abdominal CT cohort (numpy/scipy only, never jax).

Modules: structures (label ids), patient (random patients), anatomy and render (the
3D phantom and its HU in a phase), kinetics (time-attenuation curves and the
labelling rule `phase_of`), sites (one internal and five external hospitals),
exam (what is scanned when, and its label), dicom_writer (CT Image Storage files),
generate (`generate`, `ensure_cohort_cache`), validate (ROI medians, curves and
montages for a radiologist's check).

Entry points: `phasejax cohort generate|validate`, and
`phasejax.cohort.generate.ensure_cohort_cache(cfg.cohort, spec)` from training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def ensure_cohort_cache(cohort_cfg: Any, spec: Any, root: Path | None = None) -> Path:
    """See phasejax.cohort.generate.ensure_cohort_cache (imported lazily: keeps this light)."""
    from phasejax.cohort.generate import ensure_cohort_cache as _ensure

    return _ensure(cohort_cfg, spec, root)
