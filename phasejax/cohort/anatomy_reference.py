"""The contrast phase from the aorta's and the kidneys' HU, by the cohort's physiology.

The cohort's exams are planned as for generation (`exam.plan_exam`: sites, protocols,
bolus tracking, patients; no pixels) and each series' aorta, renal cortex and renal
medulla HU at 120 kVp are taken from the kinetics (`kinetics.compartment_hu`); a Gaussian
kernel density of those values per phase, each dimension widened by the measurement noise
of the automatic reading (`READING_SD_HU`), gives the likelihood of the readings of a
series under each phase. The series are labelled by the cohort's default DP rule
(`kinetics.DEFAULT_DELAYED_RULE`: excretion alone since session 20), as the networks that
`predict` uses are trained, so network and anatomy mean the same by "DP". Only the
structures that were read enter (the others are marginalised out, nothing is imputed). The
phases are equally likely a priori: real archives mix them in any proportion.

The aorta separates non-contrast (~30-45 HU), arterial (200-550 HU), portal-venous
(~110-240 HU) and delayed (~60-140 HU) series; portal venous and delayed overlap at
110-140 HU, where the kidneys decide (cortex above medulla until the nephrographic phase,
medulla above cortex once excretion starts). Early and late arterial cannot be told apart
from either (the portal vein decides between them), so the call groups them as "AP".
Readers that know only these structures name every real validation series from hand-placed
ROIs (`experiments/real_roi_observer.py --structures aorta,renal_cortex,renal_medulla`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from phasejax.cohort.exam import plan_exam
from phasejax.cohort.kinetics import compartment_hu
from phasejax.cohort.sites import INTERNAL_SITE, SITES
from phasejax.cohort.structures import Label
from phasejax.phases import Phase

STRUCTURES = ("aorta", "cortex", "medulla")
_LABELS = {"aorta": Label.AORTA, "cortex": Label.KIDNEY_CORTEX, "medulla": Label.KIDNEY_MEDULLA}
# SD of the automatic reading against a hand-placed ROI, per structure: 1.4826 x the median
# absolute difference over the real series of `experiments/real_anatomy.py`
# (docs/real/anatomy/real_anatomy.json, "reading_sd_hu"). The medulla's is the largest:
# at 5 mm slices it reads partly as cortex.
READING_SD_HU = {"aorta": 10.0, "cortex": 21.0, "medulla": 36.0}
# Share of series with a gross misreading (some structure more than 3 reading SDs from the
# hand ROI): 2 of the 15 real series (`misread` in docs/real/anatomy/real_anatomy.json: an
# aorta read against the vertebra, 67 HU low, and an arterial aorta 62 HU low). READING_SD_HU
# is a median spread, blind to such misreadings by construction, so the combined call keeps
# this much doubt about the anatomy.
MISREAD_RATE = 2.0 / 15.0
REFERENCE_EXAMS = 600
# The calls: EAP and LAP look alike in the aorta and the kidneys.
CALLS: dict[str, tuple[Phase, ...]] = {
    "NC": (Phase.NC,),
    "AP": (Phase.EAP, Phase.LAP),
    "PVP": (Phase.PVP,),
    "DP": (Phase.DP,),
}
GROUP_OF: dict[str, str] = {p.value: k for k, phases in CALLS.items() for p in phases}


@dataclass(frozen=True)
class AnatomyCall:
    call: str  # a key of CALLS, "" when nothing was read
    probs: dict[str, float]  # over CALLS, equal priors
    structures: tuple[str, ...]  # what the call used


@functools.lru_cache(maxsize=4)
def reference_values(exams: int = REFERENCE_EXAMS, kvp: float = 120.0) -> dict[str, np.ndarray]:
    """[series, STRUCTURES] HU of every series of `exams` internal-site exams, per call."""
    out: dict[str, list[list[float]]] = {k: [] for k in CALLS}
    for i in range(exams):
        # The namespace seeds the planned exams; it keeps the name it had when only the aorta
        # was read, so that the reference (and every call) stays the same.
        plan = plan_exam(SITES[INTERNAL_SITE], i, cohort_seed=0, namespace="aorta-reference")
        for s in plan.series:
            hu = compartment_hu(plan.patient, s.t, kvp)
            out[GROUP_OF[s.phase]].append([hu[_LABELS[name]] for name in STRUCTURES])
    return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}


def _likelihood(values: np.ndarray, x: np.ndarray, noise_sd: np.ndarray) -> float:
    # Silverman's bandwidth per dimension, widened by the reading's noise (a convolution
    # of Gaussians): a product kernel over the structures read.
    bw = 1.06 * values.std(axis=0) * len(values) ** -0.2
    sd = np.sqrt(bw * bw + noise_sd * noise_sd)
    z = (x - values) / sd
    norm = float(np.prod(sd)) * math.sqrt(2 * math.pi) ** len(sd)
    return float(np.exp(-0.5 * (z * z).sum(axis=1)).mean() / norm)


def combine_with_network(
    probs: np.ndarray,
    classes: Sequence[str],
    anatomy: AnatomyCall,
    misread_rate: float = MISREAD_RATE,
) -> np.ndarray:
    """The network's posterior over `classes` times the anatomy's likelihood of each class's
    group, renormalised: two pieces of evidence about the same series taken as independent
    given the phase (the network reads learned image features, the anatomy three HU). With
    equal priors the anatomy's posterior is proportional to its likelihood; EAP and LAP share
    the AP group's, so the network alone splits arterial. With probability `misread_rate` the
    readings are wrong and say nothing (a uniform likelihood), so a confident network can
    still overrule a confident anatomy. Where nothing was read the network's posterior is
    returned unchanged."""
    p = np.asarray(probs, dtype=np.float64)
    if not anatomy.call:
        return p
    n = len(CALLS)
    lik = np.array(
        [(1.0 - misread_rate) * anatomy.probs[GROUP_OF[c]] + misread_rate / n for c in classes]
    )
    post = p * lik
    total = post.sum()
    return post / total if total > 0 else p


def call_accepted(call: str, accepts: Iterable[str]) -> bool:
    """Whether a call names an accepted phase: "AP" is right where EAP or LAP is accepted."""
    return bool(call) and bool({p.value for p in CALLS[call]} & set(accepts))


def call_from_anatomy(
    aorta: float | None = None,
    cortex: float | None = None,
    medulla: float | None = None,
    noise_sd: dict[str, float] | None = None,
    kvp: float = 120.0,
) -> AnatomyCall:
    """The phase group that the readings (HU at `kvp`; None: not read) point to, with
    its posterior (iodine reads brighter at lower voltage: the reference is computed at the
    same one). The kidneys count only as a pair: a cortex without its medulla says
    little about the phase."""
    readings = {"aorta": aorta}
    if cortex is not None and medulla is not None:
        readings |= {"cortex": cortex, "medulla": medulla}
    used = tuple(k for k in STRUCTURES if readings.get(k) is not None)
    empty = AnatomyCall(call="", probs={k: 0.0 for k in CALLS}, structures=used)
    if not used:
        return empty
    sds = READING_SD_HU if noise_sd is None else {**READING_SD_HU, **noise_sd}
    cols = [STRUCTURES.index(k) for k in used]
    x = np.array([float(readings[k]) for k in used])  # type: ignore[arg-type]
    sd = np.array([sds[k] for k in used])
    lik = {k: _likelihood(v[:, cols], x, sd) for k, v in reference_values(kvp=kvp).items()}
    total = sum(lik.values())
    if total <= 0.0:  # far outside every phase (e.g. a reading in bone): no call
        return empty
    probs = {k: v / total for k, v in lik.items()}
    return AnatomyCall(call=max(probs, key=probs.__getitem__), probs=probs, structures=used)
