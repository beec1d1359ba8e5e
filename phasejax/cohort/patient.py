"""Synthetic patients: the random draw of body, circulation, contrast injection and confounders.

A `Population` holds the distribution parameters a site can shift (heavier patients,
more fatty livers, routine oral contrast...). `sample_patient(patient_id, seed,
population)` draws one `Patient` deterministically from the seed: the same seed
and population always give the same patient, and every later random choice made
for this patient (anatomy details, texture) is seeded from `Patient.seed`.

Numbers and their sources (marked "assumption" where no source gives them):
- Cardiac output ~5 L/min at rest in a 70 kg adult, scaling with body size
  (allometric exponent ~0.5-0.75, we take 0.6); a log-normal spread of ~25% covers the
  low-output elderly/cardiac patients and the anxious high-output young ones.
- Bolus arrival (injection start -> contrast in the abdominal aorta) is typically
  12-20 s for an antecubital injection and longer with low cardiac output; the
  usual rule is arrival ~ central blood volume / cardiac output (Bae, Radiology 2010,
  "Intravenous contrast medium administration and scan timing at CT").
- Iodine dose 0.4-0.6 gI/kg (weight-based protocols, e.g. 0.5 gI/kg), 300-370 mgI/mL,
  3-5 mL/s (Bae 2010); fixed-volume sites give 100 mL regardless of weight.
- Haematocrit: men ~42-45%, women ~38-41%; anaemia taken as Hct 22-32%.
- Fatty liver: ~25% prevalence in adults (NAFLD); unenhanced liver HU falls ~1.5-2 HU
  per percent fat fraction, so moderate steatosis puts the liver below the spleen.
- Positive oral contrast, hypervascular lesions, cysts: prevalence per site is a
  modelling choice (assumption), set by the site's Population.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, kw_only=True)
class Population:
    """Distribution parameters a site can shift. Defaults: a generic adult oncology cohort."""

    female_fraction: float = 0.48
    weight_mean_kg: float = 76.0
    weight_sd_kg: float = 15.0
    height_mean_cm: float = 170.0
    cardiac_output_sd: float = 0.25  # log-normal sigma of cardiac output around the allometric mean
    dose_gi_per_kg: float = 0.5  # weight-based iodine dose; ignored when fixed_volume_ml is set
    dose_sd: float = 0.05
    fixed_volume_ml: float | None = None  # fixed-volume protocol (e.g. 100 mL for everyone)
    injection_rate_ml_s: tuple[float, float] = (3.0, 4.5)  # uniform range
    contrast_mgi_ml: tuple[float, ...] = (300.0, 350.0, 370.0)  # agent strengths in use
    max_volume_ml: float = 150.0
    fatty_liver_prevalence: float = 0.2
    anaemia_prevalence: float = 0.1
    oral_contrast_prevalence: float = 0.15
    lesion_prevalence: float = 0.08
    # Chronic liver disease: multiphase liver CT is above all the surveillance and staging of
    # hepatocellular carcinoma, mostly in cirrhotic livers (both public collections of the
    # real validation set are HCC cohorts). Assumption: one patient in five.
    cirrhosis_prevalence: float = 0.2
    cyst_prevalence: float = 0.15

    def replace(self, **kw: object) -> Population:
        return dataclasses.replace(self, **kw)


@dataclass(frozen=True, kw_only=True)
class Physiology:
    """Circulation and injection of one patient (all hashable scalars)."""

    cardiac_output_l_min: float
    arrival_s: float  # injection start -> first contrast in the abdominal aorta
    injection_rate_ml_s: float
    contrast_mgi_ml: float
    volume_ml: float
    hematocrit: float  # percent
    recirculation: float  # fraction of aortic iodine that returns through the fast systemic loop
    ecf_extraction: float  # first-pass fraction leaking into the extracellular space
    splanchnic_delay_s: float  # extra transit aorta -> gut/spleen capillaries -> portal vein
    hepatic_arterial_fraction: float  # share of liver blood supply from the hepatic artery
    liver_gain: float  # multiplier on liver parenchymal enhancement (ECF size, perfusion)
    spleen_arciform: float  # strength of the early arciform (zebra) spleen pattern
    renal_function: float  # 1 = normal GFR; lower delays and weakens excretion
    excretion_onset_s: float  # time the renal collecting system reaches ~+100 HU
    excretion_max_hu: float  # plateau of collecting-system enhancement (120 kVp)

    @property
    def injection_s(self) -> float:
        return self.volume_ml / self.injection_rate_ml_s

    @property
    def iodine_rate_g_s(self) -> float:
        return self.injection_rate_ml_s * self.contrast_mgi_ml / 1000.0

    @property
    def iodine_dose_g(self) -> float:
        return self.volume_ml * self.contrast_mgi_ml / 1000.0


@dataclass(frozen=True, kw_only=True)
class Confounders:
    oral_contrast: bool = False
    oral_contrast_hu: float = 0.0  # bowel-fluid HU at 120 kVp when oral contrast is present
    fatty_liver: bool = False
    liver_fat_fraction: float = 0.0  # 0..1
    anaemia: bool = False
    n_lesions: int = 0  # hypervascular liver lesions
    n_cysts: int = 0  # simple cysts (liver or kidney)
    cirrhosis: bool = False  # see _cirrhotic: less portal perfusion, larger spleen

    def names(self) -> tuple[str, ...]:
        """The confounders present, as short names (for labels.csv)."""
        out = []
        if self.oral_contrast:
            out.append("oral_contrast")
        if self.fatty_liver:
            out.append("fatty_liver")
        if self.anaemia:
            out.append("anaemia")
        if self.n_lesions:
            out.append("liver_lesion")
        if self.n_cysts:
            out.append("cyst")
        if self.cirrhosis:
            out.append("cirrhosis")
        return tuple(out)


@dataclass(frozen=True, kw_only=True)
class AnatomyParams:
    """Body habitus and organ sizes/positions; the anatomy module turns these into shapes.

    Lengths in mm. Positions are offsets from the average anatomy of phasejax.cohort.anatomy.
    """

    scale: float  # overall body length scale (height)
    body_half_width: float  # left-right half-width of the waist outline
    body_half_depth_ant: float  # centre -> anterior skin
    paraspinal_mm: float  # vertebral body centre -> posterior edge of the back muscles
    subcut_fat_mm: float
    visceral_fat: float  # 0 (lean: packed bowel) .. 1 (obese: fat between loops)
    muscle_mm: float  # abdominal wall muscle thickness
    liver_scale: float
    liver_left_lobe: float  # 0 small .. 1 large left lateral segment
    spleen_scale: float
    kidney_length_mm: float
    kidney_drop_right_mm: float  # right kidney sits lower than the left
    dome_z_mm: float  # height of the right diaphragmatic dome above the kidney lower poles
    aorta_radius_mm: float
    bowel_gas: float  # 0..1 fraction of gas in bowel loops
    table_y_mm: float  # body centre in patient coordinates (table height)
    table_z_mm: float  # patient z of the anatomy origin (kidney lower poles)


@dataclass(frozen=True, kw_only=True)
class Patient:
    patient_id: str
    seed: int
    sex: str  # "F" | "M"
    weight_kg: float
    height_cm: float
    physiology: Physiology
    confounders: Confounders
    anatomy: AnatomyParams

    @property
    def bmi(self) -> float:
        return self.weight_kg / (self.height_cm / 100.0) ** 2


def _clip(x: float, lo: float, hi: float) -> float:
    return float(min(max(x, lo), hi))


def sample_patient(patient_id: str, seed: int, population: Population) -> Patient:
    """Draw one patient; deterministic in (seed, population) (patient_id is only recorded)."""
    pop = population
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5EED]))
    female = bool(rng.random() < pop.female_fraction)
    sex = "F" if female else "M"
    height = _clip(rng.normal(pop.height_mean_cm - (6.0 if female else -6.0), 7.0), 145, 200)
    weight_mean = pop.weight_mean_kg - (8.0 if female else -8.0)
    weight = _clip(rng.normal(weight_mean, pop.weight_sd_kg), 40, 160)
    bmi = weight / (height / 100.0) ** 2

    # Circulation. Cardiac output scales allometrically with weight; arrival time is the
    # central blood volume (~ proportional to body size) over cardiac output, plus arm-vein
    # transit (assumption: 4 s). A 70 kg patient with 5.2 L/min gets ~16 s.
    co = 5.2 * (weight / 70.0) ** 0.6 * float(np.exp(rng.normal(0.0, pop.cardiac_output_sd)))
    co = _clip(co, 2.5, 10.0)
    arrival = 4.0 + 12.0 * (5.2 / co) * (weight / 70.0) ** 0.35 + rng.normal(0.0, 1.5)
    arrival = _clip(arrival, 8.0, 32.0)

    rate = float(rng.uniform(*pop.injection_rate_ml_s))
    conc = float(rng.choice(np.asarray(pop.contrast_mgi_ml)))
    if pop.fixed_volume_ml is not None:
        volume = float(pop.fixed_volume_ml)
    else:
        dose = max(0.3, rng.normal(pop.dose_gi_per_kg, pop.dose_sd))
        volume = dose * weight * 1000.0 / conc
    volume = _clip(volume, 50.0, pop.max_volume_ml)

    anaemia = bool(rng.random() < pop.anaemia_prevalence)
    hct = rng.uniform(22.0, 32.0) if anaemia else rng.normal(39.5 if female else 43.5, 2.5)

    renal = _clip(rng.lognormal(0.0, 0.2), 0.4, 1.5)
    physiology = Physiology(
        cardiac_output_l_min=round(co, 4),
        arrival_s=round(arrival, 3),
        injection_rate_ml_s=round(rate, 3),
        contrast_mgi_ml=conc,
        volume_ml=round(volume, 2),
        hematocrit=round(_clip(hct, 18.0, 50.0), 2),
        recirculation=round(_clip(rng.normal(0.3, 0.05), 0.15, 0.45), 4),
        # ~0.3: first-pass extraction of small hydrophilic tracers; sets the post-first-pass
        # blood pool to the real scans' PVP / DP aorta (cohort v3; see kinetics.py).
        ecf_extraction=round(_clip(rng.normal(0.3, 0.05), 0.15, 0.45), 4),
        splanchnic_delay_s=round(_clip(rng.normal(9.0, 2.0) * (5.2 / co) ** 0.5, 4.0, 20.0), 3),
        hepatic_arterial_fraction=round(_clip(rng.normal(0.25, 0.04), 0.12, 0.4), 4),
        liver_gain=round(_clip(rng.normal(1.06, 0.1), 0.75, 1.4), 4),
        spleen_arciform=round(_clip(rng.normal(1.0, 0.3), 0.2, 1.8), 4),
        renal_function=round(renal, 4),
        # Excretion: pelvis opacifies ~3-5 min (DESIGN.md 2); slower with poor renal function.
        excretion_onset_s=round(_clip(rng.normal(165.0, 35.0) / renal**0.5, 90.0, 420.0), 2),
        excretion_max_hu=round(_clip(rng.normal(650.0, 200.0) * renal, 150.0, 1400.0), 1),
    )

    fatty = bool(rng.random() < pop.fatty_liver_prevalence * (1.5 if bmi > 30 else 1.0))
    fat_fraction = float(rng.uniform(0.1, 0.35)) if fatty else float(rng.uniform(0.0, 0.04))
    oral = bool(rng.random() < pop.oral_contrast_prevalence)
    confounders = Confounders(
        oral_contrast=oral,
        oral_contrast_hu=round(float(rng.uniform(180.0, 550.0)), 1) if oral else 0.0,
        fatty_liver=fatty,
        liver_fat_fraction=round(fat_fraction, 4),
        anaemia=anaemia,
        n_lesions=int(rng.integers(1, 4)) if rng.random() < pop.lesion_prevalence else 0,
        n_cysts=int(rng.integers(1, 4)) if rng.random() < pop.cyst_prevalence else 0,
    )

    # Habitus: waist size from BMI; subcutaneous fat thicker in women and with BMI.
    scale = height / 170.0
    fat_excess = max(bmi - 19.0, 0.0)
    anatomy = AnatomyParams(
        scale=round(scale, 4),
        body_half_width=round(_clip(95.0 + 3.0 * bmi + rng.normal(0, 8), 130, 250), 2),
        body_half_depth_ant=round(_clip(45.0 + 3.2 * bmi + rng.normal(0, 7), 90, 210), 2),
        paraspinal_mm=round(_clip(rng.normal(72.0 if female else 80.0, 6.0), 55, 100), 2),
        subcut_fat_mm=round(
            _clip((5.0 + 2.2 * fat_excess) * (1.3 if female else 0.9) + rng.normal(0, 4), 3, 90),
            2,
        ),
        visceral_fat=round(_clip(fat_excess / 18.0 * (0.8 if female else 1.1), 0.0, 1.0), 3),
        muscle_mm=round(_clip(rng.normal(11.0 if female else 14.0, 2.5), 6, 22), 2),
        liver_scale=round(_clip(rng.normal(1.0, 0.08) * scale**0.5, 0.78, 1.25), 4),
        liver_left_lobe=round(float(rng.uniform(0.0, 1.0)), 4),
        spleen_scale=round(_clip(rng.normal(1.0, 0.12), 0.7, 1.5), 4),
        kidney_length_mm=round(_clip(rng.normal(112.0, 8.0) * scale**0.5, 90, 135), 2),
        kidney_drop_right_mm=round(_clip(rng.normal(15.0, 6.0), 0, 35), 2),
        dome_z_mm=round(_clip(rng.normal(205.0, 14.0) * scale, 160, 260), 2),
        aorta_radius_mm=round(_clip(rng.normal(10.5, 1.2), 7.5, 15.0), 2),
        bowel_gas=round(float(rng.uniform(0.1, 0.6)), 3),
        table_y_mm=round(float(rng.normal(0.0, 15.0)), 2),
        table_z_mm=round(float(rng.uniform(-450.0, -250.0)), 2),
    )
    # Cirrhosis from its own random stream: adding it left every other draw as it was.
    crng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xC1AA05]))
    if crng.random() < pop.cirrhosis_prevalence:
        physiology, confounders, anatomy = _cirrhotic(crng, physiology, confounders, anatomy)
    return Patient(
        patient_id=str(patient_id),
        seed=int(seed),
        sex=sex,
        weight_kg=round(weight, 2),
        height_cm=round(height, 2),
        physiology=physiology,
        confounders=confounders,
        anatomy=anatomy,
    )


def _cirrhotic(
    rng: np.random.Generator,
    physiology: Physiology,
    confounders: Confounders,
    anatomy: AnatomyParams,
) -> tuple[Physiology, Confounders, AnatomyParams]:
    """A cirrhotic version of one patient.

    Fibrosis raises intrahepatic resistance: portal inflow falls and the hepatic artery
    takes a larger share of liver perfusion (arterial buffer response; perfusion CT puts the
    hepatic arterial fraction at ~0.2-0.25 in normal livers and ~0.3-0.5 in cirrhosis, Van
    Beers et al., AJR 2001;176:667). The parenchyma enhances less in the portal-venous phase
    (real HCC series read ~70 HU against ~120 in normal livers, experiments/real_roi.py),
    splanchnic transit slows with portal hypertension, the spleen enlarges and the liver
    shrinks. Sizes of the effects are assumptions within those reports.
    """
    physiology = dataclasses.replace(
        physiology,
        hepatic_arterial_fraction=round(_clip(rng.normal(0.35, 0.05), 0.25, 0.5), 4),
        liver_gain=round(physiology.liver_gain * float(rng.uniform(0.5, 0.85)), 4),
        splanchnic_delay_s=round(
            _clip(physiology.splanchnic_delay_s * float(rng.uniform(1.05, 1.3)), 4.0, 30.0), 3
        ),
    )
    anatomy = dataclasses.replace(
        anatomy,
        spleen_scale=round(
            _clip(anatomy.spleen_scale * float(rng.uniform(1.15, 1.5)), 0.7, 2.0), 4
        ),
        liver_scale=round(_clip(anatomy.liver_scale * float(rng.uniform(0.85, 1.0)), 0.7, 1.25), 4),
    )
    return physiology, dataclasses.replace(confounders, cirrhosis=True), anatomy
