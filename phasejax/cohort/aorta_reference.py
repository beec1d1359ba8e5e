"""The contrast phase from the aorta's HU alone, by the cohort's physiology.

The cohort's exams are planned as for generation (`exam.plan_exam`: sites, protocols,
bolus tracking, patients; no pixels) and each series' aortic HU at 120 kVp is taken from
the kinetics (`kinetics.compartment_hu`); a Gaussian kernel density of those values per
phase, widened by the measurement noise of an automatic ROI, gives the likelihood of a
measured aortic HU under each phase. The phases are equally likely a priori: real archives
mix them in any proportion.

The aorta separates non-contrast (~30-45 HU), arterial (200-550 HU), portal-venous
(~110-240 HU) and delayed (~60-140 HU) series; portal venous and delayed overlap at
110-140 HU, and early and late arterial cannot be told apart from the aorta (the portal
vein decides between them), so the call groups them as "AP". A reader that knows only the
aorta names 11 of the 12 real validation series from their hand-placed ROIs
(`experiments/real_roi_observer.py --structures aorta`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from phasejax.cohort.exam import plan_exam
from phasejax.cohort.kinetics import compartment_hu
from phasejax.cohort.sites import INTERNAL_SITE, SITES
from phasejax.cohort.structures import Label
from phasejax.phases import Phase

READING_SD_HU = 15.0  # automatic ROI against a hand-placed one (experiments/real_aorta.py)
REFERENCE_EXAMS = 600
# The calls: EAP and LAP look alike in the aorta.
CALLS: dict[str, tuple[Phase, ...]] = {
    "NC": (Phase.NC,),
    "AP": (Phase.EAP, Phase.LAP),
    "PVP": (Phase.PVP,),
    "DP": (Phase.DP,),
}


@dataclass(frozen=True)
class AortaCall:
    call: str  # a key of CALLS
    probs: dict[str, float]  # over CALLS, equal priors


@functools.lru_cache(maxsize=4)
def reference_values(exams: int = REFERENCE_EXAMS, kvp: float = 120.0) -> dict[str, np.ndarray]:
    """Aortic HU of every series of `exams` internal-site exams, per call group."""
    out: dict[str, list[float]] = {k: [] for k in CALLS}
    group = {p: k for k, phases in CALLS.items() for p in phases}
    for i in range(exams):
        plan = plan_exam(SITES[INTERNAL_SITE], i, cohort_seed=0, namespace="aorta-reference")
        for s in plan.series:
            out[group[s.phase]].append(compartment_hu(plan.patient, s.t, kvp)[Label.AORTA])
    return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}


def _likelihood(values: np.ndarray, hu: float, noise_sd: float) -> float:
    # Silverman's bandwidth, widened by the reading's noise (a convolution of Gaussians).
    bw = 1.06 * float(values.std()) * len(values) ** -0.2
    sd = math.sqrt(bw * bw + noise_sd * noise_sd)
    z = (hu - values) / sd
    return float(np.exp(-0.5 * z * z).mean() / (sd * math.sqrt(2 * math.pi)))


def call_accepted(call: str, accepts: Iterable[str]) -> bool:
    """Whether a call names an accepted phase: "AP" is right where EAP or LAP is accepted."""
    return bool(call) and bool({p.value for p in CALLS[call]} & set(accepts))


def call_from_aorta(hu: float, noise_sd: float = READING_SD_HU) -> AortaCall:
    """The phase group an aortic HU (at 120 kVp) points to, with its posterior."""
    ref = reference_values()
    lik = {k: _likelihood(v, float(hu), noise_sd) for k, v in ref.items()}
    total = sum(lik.values())
    if total <= 0.0:  # far outside every phase (e.g. a reading in bone): no call
        return AortaCall(call="", probs={k: 0.0 for k in CALLS})
    probs = {k: v / total for k, v in lik.items()}
    return AortaCall(call=max(probs, key=probs.__getitem__), probs=probs)
