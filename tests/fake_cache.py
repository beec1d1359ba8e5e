"""A tiny synthetic prepared cache for tests (no cohort generator needed).

`make_fake_cache` writes a few patients x phases through the real cache writers
(`init_cache`, `write_entry`, `finalize`), so every reader is exercised on the
true on-disk format. Each volume is a cartoon abdomen whose organ HU follow the
phase (values loosely after the enhancement table in /work/shared/DESIGN.md §2),
so a small network can learn the phase from it:

- aorta bright in EAP/LAP, moderate in PVP, lower in DP;
- portal vein unenhanced in EAP, enhancing in LAP, maximal in PVP;
- liver at baseline in EAP, peak in PVP;
- renal cortex much brighter than medulla in EAP/LAP, equal in PVP/DP;
- collecting system bright only in DP.

Layout (radiological display convention): image column 0 is the patient's
RIGHT, so the liver sits on the left half of the image and the spleen on the
right; the phantom is therefore lateralised, which the no-flip test relies on.
Cache z index 0 is the most inferior slice (phasejax.data.cache's convention).
Organs have a z extent: liver and spleen in the superior part of [z_lo, z_hi),
kidneys in the inferior part.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from phasejax.cohort.structures import Label
from phasejax.data.cache import CacheSpec, finalize, init_cache, write_entry
from phasejax.hu import AIR_HU

PAPER4 = ("EAP", "LAP", "PVP", "DP")

# Absolute HU per structure and phase (120 kVp adult, see DESIGN.md §2).
PHASE_HU: dict[str, dict[str, float]] = {
    "NC": {"aorta": 40, "portal": 40, "liver": 60, "spleen": 50, "cortex": 35, "medulla": 35,
           "pelvis": 5},
    "EAP": {"aorta": 300, "portal": 50, "liver": 65, "spleen": 110, "cortex": 190, "medulla": 55,
            "pelvis": 5},
    "LAP": {"aorta": 330, "portal": 150, "liver": 85, "spleen": 150, "cortex": 210,
            "medulla": 95, "pelvis": 5},
    "PVP": {"aorta": 170, "portal": 185, "liver": 120, "spleen": 125, "cortex": 175,
            "medulla": 170, "pelvis": 10},
    "DP": {"aorta": 120, "portal": 115, "liver": 100, "spleen": 100, "cortex": 130,
           "medulla": 130, "pelvis": 400},
}  # fmt: skip
FAT_HU, MUSCLE_HU, BONE_HU = -100.0, 45.0, 500.0


def _disc(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def fake_volume(phase: str, **kwargs: Any) -> np.ndarray:
    """One phantom volume, int16 HU [slices, size, size] (`fake_volume_and_mask`'s options:
    size, slices, z_lo, z_hi, enhancement, noise_hu, rng).

    `enhancement` scales the contrast uptake (delta over NC), as patients differ
    in cardiac output and iodine dose.
    """
    return fake_volume_and_mask(phase, **kwargs)[0]


def fake_volume_and_mask(
    phase: str,
    *,
    size: int = 64,
    slices: int = 12,
    z_lo: int = 1,
    z_hi: int | None = None,
    enhancement: float = 1.0,
    noise_hu: float = 8.0,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """`fake_volume` and its organ labels (uint8 phasejax.cohort.structures.Label values)."""
    z_hi = slices - 1 if z_hi is None else z_hi
    rng = rng if rng is not None else np.random.default_rng(0)
    base, hu = PHASE_HU["NC"], PHASE_HU[phase]
    val = {k: base[k] + enhancement * (hu[k] - base[k]) for k in hu}
    value = {
        Label.BACKGROUND: AIR_HU, Label.FAT_SUBCUT: FAT_HU, Label.MUSCLE: MUSCLE_HU * 0.5,
        Label.VERTEBRA: BONE_HU, Label.AORTA: val["aorta"], Label.LIVER: val["liver"],
        Label.PORTAL_VEIN: val["portal"], Label.SPLEEN: val["spleen"],
        Label.KIDNEY_CORTEX: val["cortex"], Label.KIDNEY_MEDULLA: val["medulla"],
        Label.KIDNEY_COLLECTING: val["pelvis"],
    }  # fmt: skip
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    s = size / 64.0
    c = size / 2.0
    body = _disc(yy, xx, c, c, 24 * s, 29 * s)
    labels = np.zeros((slices, size, size), dtype=np.uint8)
    span = max(z_hi - z_lo, 1)
    for z in range(slices):
        t = (z_hi - 1 - z) / span  # 0 at the liver dome, 1 at the kidneys' lower poles
        lab = labels[z]
        lab[body] = Label.FAT_SUBCUT
        lab[_disc(yy, xx, c, c, 21 * s, 26 * s)] = Label.MUSCLE
        lab[_disc(yy, xx, c + 14 * s, c, 4 * s, 4 * s)] = Label.VERTEBRA  # posterior
        lab[_disc(yy, xx, c + 8 * s, c + 1 * s, 2.5 * s, 2.5 * s)] = Label.AORTA
        if -0.1 <= t < 0.65:  # liver on the patient's right = image left
            lab[_disc(yy, xx, c - 3 * s, c - 12 * s, 12 * s, 10 * s)] = Label.LIVER
            lab[_disc(yy, xx, c - 1 * s, c - 5 * s, 2.5 * s, 2.5 * s)] = Label.PORTAL_VEIN
            lab[_disc(yy, xx, c - 2 * s, c + 17 * s, 6 * s, 4 * s)] = Label.SPLEEN
        if 0.45 <= t <= 1.1:  # kidneys, both sides
            for side in (-1, 1):
                cx = c + side * 13 * s
                cy = c + 6 * s
                lab[_disc(yy, xx, cy, cx, 6 * s, 4 * s)] = Label.KIDNEY_CORTEX
                lab[_disc(yy, xx, cy, cx, 4 * s, 2.5 * s)] = Label.KIDNEY_MEDULLA
                lab[_disc(yy, xx, cy, cx, 1.5 * s, 1.0 * s)] = Label.KIDNEY_COLLECTING
    table = np.zeros(256, np.float32)
    for label, v in value.items():
        table[int(label)] = v
    vol = table[labels]
    vol[:, body] += rng.normal(0.0, noise_hu, size=(slices, int(body.sum()))).astype(np.float32)
    return np.clip(np.rint(vol), -1024, 3071).astype(np.int16), labels


def split_of(patient: int, patients: int) -> str:
    """Patient-level split: the last sixth external (another 'site'), then test, val, train."""
    k = max(1, round(patients / 6))
    if patient >= patients - k:
        return "external"
    if patient >= patients - 2 * k:
        return "test"
    if patient >= patients - 3 * k:
        return "val"
    return "train"


def make_fake_cache(
    root: Path | str,
    *,
    patients: int = 12,
    size: int = 64,
    slices: int = 12,
    seed: int = 0,
    phases: tuple[str, ...] = PAPER4,
    noise_hu: float = 8.0,
    masks: bool = False,
) -> Path:
    """Write a prepared cache of `patients` x `phases` phantom series under `root`.

    Splits are by patient (see `split_of`): with 12 patients 6 train, 2 val, 2 test,
    2 external. Every series has z range [1, slices - 1). Returns `root`.
    Series ids are "p{patient:03d}_{phase}", so they sort patient-major. `masks`: also
    write the organ labels, as the built-in cohort's cache has them.
    """
    root = Path(root)
    init_cache(root, CacheSpec(spacing_z=5.0, size=size), source="tests/fake_cache.py")
    rng = np.random.default_rng(seed)
    for p in range(patients):
        enhancement = float(rng.uniform(0.85, 1.15))
        split = split_of(p, patients)
        for phase in phases:
            sid = f"p{p:03d}_{phase}"
            vol, mask = fake_volume_and_mask(
                phase, size=size, slices=slices, enhancement=enhancement, noise_hu=noise_hu,
                rng=np.random.default_rng([seed, p, PAPER4.index(phase) if phase in PAPER4 else 9]),
            )  # fmt: skip
            row = {
                "series_id": sid,
                "patient_id": f"P{p:03d}",
                "split": split,
                "site": "siteB" if split == "external" else "siteA",
                # every other patient scanned at 100 kVp, as the cohort's sites mix voltages
                "kvp": "100" if p % 2 else "120",
                "phase": phase,
                "num_slices": slices,
                "spacing_z": 5.0,
                "spacing_xy": 400.0 / size,
                "z_lo": 1,
                "z_hi": slices - 1,
                "source": "fake",
            }
            write_entry(root, row, vol, mask=mask if masks else None)
    finalize(root)
    return root
