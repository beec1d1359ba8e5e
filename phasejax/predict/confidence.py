"""How the confidence flag of a predicted series is decided.

A row is "high" only when ALL of these hold, and "low" otherwise, with every failed
condition listed in its `confidence_reasons` column (built by `confidence_reasons`):

- the top probability is at least `min_confidence` (`--min-confidence`, 0.6);
- the image network and the anatomy reader (`anatomy_phase`) agree, where the anatomy
  was read (`network_anatomy_disagree`);
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
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from phasejax.hu import AIR_THRESHOLD_HU

if TYPE_CHECKING:
    from phasejax.config import DataConfig
    from phasejax.data.cache import CacheSpec
    from phasejax.predict.inputs import PreparedSeries

DEFAULT_MIN_CONFIDENCE = 0.6
# Two readers of the same series that see different things (learned image features, three
# HU) and disagree: on the real validation series every network error was such a series.
NETWORK_ANATOMY_DISAGREE = "network_anatomy_disagree"

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


def confidence_reasons(
    top_prob: float,
    min_confidence: float,
    out_of_range: Sequence[str],
    *,
    network_anatomy_disagree: bool = False,
) -> list[str]:
    """Why a prediction is "low" confidence ([] for "high"): a top probability under
    `min_confidence`, the image network and the anatomy naming different phases, then the
    `input_checks` that failed."""
    reasons = []
    if top_prob < min_confidence:
        reasons.append(f"low_probability:{top_prob:.2f}<{min_confidence:g}")
    if network_anatomy_disagree:
        reasons.append(NETWORK_ANATOMY_DISAGREE)
    reasons.extend(out_of_range)
    return reasons


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
