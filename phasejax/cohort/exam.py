"""An exam: one patient scanned at the times its site's protocol prescribes.

`plan_exam` decides everything about an exam except pixels: the patient, scanner
settings, the scan time of every series, its label, UIDs and header text. It is
cheap (no rendering), deterministic in (namespace, seed, site, index), and the
generator renders and writes what it plans.

Labels. The label of a series is NOT the protocol's intent: it is
`kinetics.phase_of(patient, t)`, the written rule on the absolute HU that the image
at scan time shows (a "late arterial" protocol scans early arterial in a patient
with slow circulation). Optional reader-disagreement noise then replaces a share
`label_noise` of labels by the neighbouring phase (EAP<->LAP, PVP<->DP; NC is
never confused), as two radiologists disagree exactly at those fuzzy boundaries.
Both the true state and the given label are recorded. The noise draw comes from
its own random stream, so changing the rate changes labels only, never images,
and a higher rate flips a superset of the series a lower rate flips.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from phasejax.cohort.dicom_writer import make_uid
from phasejax.cohort.kinetics import (
    DEFAULT_DELAYED_RULE,
    DT,
    EAP_LAP_PORTAL_HU,
    aorta_trigger_time,
    phase_of,
    structure_hu,
)
from phasejax.cohort.patient import sample_patient
from phasejax.cohort.sites import ArterialTiming, Site
from phasejax.cohort.structures import Label
from phasejax.data.series import make_series_id
from phasejax.phases import Phase

NEIGHBOUR: dict[Phase, Phase] = {
    Phase.EAP: Phase.LAP,
    Phase.LAP: Phase.EAP,
    Phase.PVP: Phase.DP,
    Phase.DP: Phase.PVP,
}
# Minimum gap between two acquisitions of one exam: table return and breath-hold
# instruction take ~8-12 s on a modern scanner (assumption).
MIN_INTERSCAN_S = 10.0
# Bolus tracking starts monitoring the aorta a few seconds after injection start.
MONITOR_START_S = 8.0
# Extra arterial series of training exams (`plan_exam(extra_arterial=...)`) are scanned when
# the portal vein (at 120 kVp) has reached a level drawn uniformly from this band around the
# EAP/LAP threshold (kinetics.EAP_LAP_PORTAL_HU = 80). Why: the protocols put few arterial
# series there (medium v8: 12 EAP at 60-80 HU and 12 LAP at 80-100 HU of 314 training
# arterial series; docs/cohort/portal_vein_by_split.json), so a network may place the
# boundary anywhere in 60-120 HU and still fit its training series, and where a seed put it
# decided the two-step network's external accuracy (session 27).
EXTRA_ARTERIAL_PORTAL_HU = (EAP_LAP_PORTAL_HU - 30.0, EAP_LAP_PORTAL_HU + 30.0)
_BASE_DATE = dt.datetime(2024, 1, 1, 7, 30)


def _key(part: Any) -> int:
    return int.from_bytes(hashlib.sha256(str(part).encode()).digest()[:4], "little")


def rng_for(*parts: Any) -> np.random.Generator:
    """A random stream fixed by its description (strings or ints), independent of others."""
    return np.random.default_rng(np.random.SeedSequence([_key(p) for p in parts]))


def _choice(rng: np.random.Generator, mix: tuple[tuple[Any, float], ...]) -> Any:
    values = [v for v, _ in mix]
    w = np.array([w for _, w in mix], dtype=float)
    return values[int(rng.choice(len(values), p=w / w.sum()))]


@dataclass(frozen=True, kw_only=True)
class SeriesPlan:
    protocol_phase: str  # nc | arterial | portal | delayed: what the site intended
    t: float | None  # seconds after injection start given to the renderer (None = NC)
    seconds: float  # scan time minus injection start (negative for NC)
    true_phase: Phase  # kinetics.phase_of at scan time
    phase: Phase  # the given label (true_phase unless reader noise flipped it)
    label_flipped: bool
    series_uid: str
    acquisition: str  # "" unless the UID is shared, then str(AcquisitionNumber)
    acquisition_number: int
    series_number: int
    series_id: str
    description: str
    noise_sd: float
    noise_seed: int
    scan_time: dt.datetime


@dataclass(frozen=True, kw_only=True)
class ExamPlan:
    namespace: str  # preset name: keeps UIDs of differently sized cohorts apart
    cohort_seed: int
    site: Site
    index: int
    patient: Any  # phasejax.cohort.patient.Patient
    study_uid: str
    frame_of_reference_uid: str
    study_datetime: dt.datetime
    injection_start: dt.datetime
    kvp: float
    kernel: str
    slice_thickness_mm: float
    pixel_spacing_mm: float  # at a 512 matrix; the FOV is 512 times this
    small_fov: bool
    arterial_rule: ArterialTiming
    trigger_s: float | None  # bolus-tracking trigger (seconds after injection start)
    series: tuple[SeriesPlan, ...]

    @property
    def patient_id(self) -> str:
        return str(self.patient.patient_id)

    @property
    def fov_mm(self) -> float:
        return 512 * self.pixel_spacing_mm

    def confounders(self) -> tuple[str, ...]:
        """Names of the confounders present (patient's and acquisition's), sorted."""
        names = set(self.patient.confounders.names())
        if self.small_fov:
            names.add("small_fov")
        if self.kvp != 120.0:
            names.add(f"kvp{int(self.kvp)}")
        return tuple(sorted(names))


def patient_id_for(site: Site, index: int) -> str:
    return f"{site.name}-{index:04d}"


def given_label(
    true_phase: Phase, *, label_noise: float, cohort_seed: int, series_key: str
) -> tuple[Phase, bool]:
    """Apply reader-disagreement noise: flip to the neighbour phase with probability p."""
    if not 0.0 <= label_noise <= 1.0:
        raise ValueError(f"label_noise must be in [0, 1], got {label_noise}")
    u = rng_for("label-noise", cohort_seed, series_key).random()
    if true_phase in NEIGHBOUR and u < label_noise:
        return NEIGHBOUR[true_phase], True
    return true_phase, False


def _tracking_trigger(patient: Any, protocol: Any, kvp: float, rng: np.random.Generator) -> float:
    crossing = float(aorta_trigger_time(patient, protocol.trigger_threshold_hu, kvp=kvp))
    # The ROI is sampled on a grid that starts at a random phase; the trigger is the
    # first sample at or after the true crossing.
    dt_s = protocol.monitor_interval_s
    start = MONITOR_START_S + rng.uniform(0.0, dt_s)
    n = max(0, math.ceil((crossing - start) / dt_s))
    return start + n * dt_s


def portal_vein_time(patient: Any, portal_hu: float) -> float:
    """The first time (s after injection start) at which the patient's portal vein reaches
    `portal_hu` at 120 kVp (the labels' voltage), interpolated between the kinetics grid's
    points as `structure_hu` interpolates; the time of its peak when it never does."""
    times = np.arange(MONITOR_START_S, 120.0, DT)
    pv = structure_hu(patient, times)[Label.PORTAL_VEIN]
    above = np.flatnonzero(pv >= portal_hu)
    if not above.size:
        return float(times[int(np.argmax(pv))])
    i = int(above[0])
    if i == 0:
        return float(times[0])
    frac = (portal_hu - pv[i - 1]) / max(float(pv[i] - pv[i - 1]), 1e-9)
    return float(times[i - 1] + DT * frac)


def plan_exam(
    site: Site,
    index: int,
    *,
    cohort_seed: int,
    namespace: str = "",
    label_noise: float = 0.0,
    min_slice_thickness_mm: float = 0.0,
    delayed_rule: str = DEFAULT_DELAYED_RULE,
    extra_arterial: int = 0,
) -> ExamPlan:
    """Everything about exam `index` of `site` except its pixels.

    `min_slice_thickness_mm` lets small presets force thick slices (after all random
    draws, so the exam is otherwise the same). `delayed_rule` is the labelling rule's
    (kinetics.phase_from_hu); it changes labels only, never a random draw or a pixel.
    `extra_arterial` adds that many arterial series scanned when the portal vein lies in
    EXTRA_ARTERIAL_PORTAL_HU (the generator gives them to training exams only); they come
    last, from their own random stream, so the exam's other series are the same with or
    without them.
    """
    pid = patient_id_for(site, index)
    ns = (namespace, cohort_seed, site.name, index)
    rng = rng_for("exam", *ns)
    patient_seed = int(rng_for("patient", *ns).integers(0, 2**31 - 1))
    patient = sample_patient(pid, patient_seed, site.population())
    proto = site.protocol

    kvp = float(_choice(rng, site.kvp_mix))
    kernel = str(_choice(rng, site.kernel_mix))
    thickness = float(_choice(rng, site.slice_thickness_mix))
    thickness = max(thickness, float(min_slice_thickness_mm))
    spacing = float(rng.uniform(*site.pixel_spacing_range))
    small_fov = bool(rng.random() < site.small_fov_probability)
    if small_fov:
        # A targeted reconstruction (e.g. a liver FOV of ~300-340 mm) that cuts the flanks.
        spacing = float(rng.uniform(0.58, 0.66))
    noise_base = float(rng.uniform(*site.noise_sd_range))

    days = int(rng.integers(0, 365))
    minutes = int(rng.integers(0, 9 * 60))
    study_dt = _BASE_DATE + dt.timedelta(days=days, minutes=minutes)
    # Scout, (non-contrast), then injection a few minutes into the study.
    injection = study_dt + dt.timedelta(seconds=round(float(rng.uniform(150.0, 300.0))))

    rule = _choice(rng, tuple((a, a.weight) for a in proto.arterial))
    trigger = None
    if rule.mode == "tracking":
        trigger = _tracking_trigger(patient, proto, kvp, rng)
        t_art = trigger + rule.delay_s + rng.normal(0.0, proto.arterial_jitter_s)
    elif rule.mode == "fixed":
        t_art = rule.delay_s + rng.normal(0.0, proto.arterial_jitter_s)
    else:
        raise ValueError(f"site {site.name}: unknown arterial timing mode {rule.mode!r}")
    t_art = max(float(t_art), MONITOR_START_S)
    t_pv = max(
        proto.portal_delay_s + rng.normal(0.0, proto.portal_jitter_s), t_art + MIN_INTERSCAN_S
    )
    t_dp = max(float(rng.uniform(*proto.delayed_range_s)), t_pv + 3 * MIN_INTERSCAN_S)
    times: list[tuple[str, float | None, float]] = []
    if rng.random() < proto.nc_probability:
        times.append(("nc", None, -float(rng.uniform(60.0, 150.0))))
    times += [
        ("arterial", t_art, t_art),
        ("portal", float(t_pv), float(t_pv)),
        ("delayed", t_dp, t_dp),
    ]
    n_regular = len(times)
    rng_extra = rng_for("extra-arterial", *ns)
    for _ in range(int(extra_arterial)):
        t_x = portal_vein_time(patient, float(rng_extra.uniform(*EXTRA_ARTERIAL_PORTAL_HU)))
        times.append(("arterial", t_x, t_x))

    vendor = site.vendor
    uid_ns = ("series", namespace, cohort_seed, pid)
    shared_uid = make_uid(*uid_ns, "shared") if vendor.shared_uid_phases else ""
    vendor_kernel = vendor.kernels.get(kernel, kernel)
    series = []
    for k, (pphase, t, seconds) in enumerate(times):
        acq_number = k + 1
        # An extra series keeps its own UID (never shared) and its own noise key.
        key = pphase if k < n_regular else f"{pphase}-extra{k - n_regular + 1}"
        if pphase in vendor.shared_uid_phases and k < n_regular:
            uid, acquisition = shared_uid, str(acq_number)
            series_number = 2 + times.index(
                next(x for x in times if x[0] in vendor.shared_uid_phases)
            )
        else:
            uid, acquisition = make_uid(*uid_ns, key), ""
            series_number = 2 + k
        true_phase = Phase(phase_of(patient, t, delayed_rule))
        phase, flipped = given_label(
            true_phase,
            label_noise=label_noise,
            cohort_seed=cohort_seed,
            series_key=f"{namespace}|{pid}|{key}",
        )
        template = vendor.descriptions.get(pphase, pphase.upper())
        series.append(
            SeriesPlan(
                protocol_phase=pphase,
                t=t,
                seconds=round(seconds, 2),
                true_phase=true_phase,
                phase=phase,
                label_flipped=flipped,
                series_uid=uid,
                acquisition=acquisition,
                acquisition_number=acq_number,
                series_number=series_number,
                series_id=make_series_id(uid, acquisition),
                description=template.format(thk=thickness, kernel=vendor_kernel),
                # Per-series noise varies a little with tube current modulation.
                noise_sd=round(noise_base * float(rng.uniform(0.92, 1.08)), 2),
                noise_seed=int(rng.integers(0, 2**31 - 1)),
                scan_time=injection + dt.timedelta(seconds=round(seconds, 2)),
            )
        )
    return ExamPlan(
        namespace=namespace,
        cohort_seed=cohort_seed,
        site=site,
        index=index,
        patient=patient,
        study_uid=make_uid("study", namespace, cohort_seed, pid),
        frame_of_reference_uid=make_uid("frame", namespace, cohort_seed, pid),
        study_datetime=study_dt,
        injection_start=injection,
        kvp=kvp,
        kernel=kernel,
        slice_thickness_mm=thickness,
        pixel_spacing_mm=spacing,
        small_fov=small_fov,
        arterial_rule=rule,
        trigger_s=None if trigger is None else round(trigger, 2),
        series=tuple(series),
    )


def replan_series(
    row: dict[str, str], cohort_info: dict[str, Any], plans: dict[tuple[str, int], ExamPlan]
) -> tuple[ExamPlan, SeriesPlan]:
    """The exam and series plans of one manifest row of a generated cohort's cache, planned
    again exactly as the generator planned them (`cohort_info` is its cohort.json: seed,
    preset, delayed_rule, extra_arterial); `plans` keeps the exams planned so far, by (site,
    index). No pixels: patient, scan time and kVp, from which kinetics gives every
    structure's HU."""
    from phasejax.cohort.sites import SITES

    index = int(row["patient_id"].rsplit("-", 1)[1])
    key = (row["site"], index)
    if key not in plans:
        plans[key] = plan_exam(
            SITES[row["site"]],
            index,
            cohort_seed=int(cohort_info["seed"]),
            namespace=cohort_info["preset"],
            delayed_rule=cohort_info.get("delayed_rule", DEFAULT_DELAYED_RULE),
            # Extras come last and change no other series: planning them for every exam
            # finds the training exams' extra series and leaves the others as generated.
            extra_arterial=int(cohort_info.get("extra_arterial", 0)),
        )
    plan = plans[key]
    return plan, next(s for s in plan.series if s.series_id == row["series_id"])
