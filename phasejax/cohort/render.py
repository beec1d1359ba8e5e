"""Render a patient at time t on a voxel grid: HU volume and organ label map.

Conventions
-----------
- Patient coordinates are DICOM LPS in mm: +x towards the patient's left, +y posterior,
  +z superior (head).
- Arrays are [Z, H, W]: row index (H) runs along +y (anterior at the top of the image), column
  index (W) along +x, so with ImageOrientationPatient (1,0,0, 0,1,0) the patient's right is
  on the image left, as a radiologist reads an axial slice.
- Z index 0 is the MOST INFERIOR slice (feet) and z increases towards the head:
  voxel [k, i, j] is at patient (origin_x + j*dx, origin_y + i*dy, origin_z + k*dz). A DICOM
  writer sets ImagePositionPatient of slice k to (origin_x, origin_y, origin_z + k*dz).

Simplifications: each slice samples the anatomy at its centre (no through-plane partial
volume for thick slices); no beam hardening, streaks or breathing shift between series.

Speed: the label map (plus the patient's tissue texture and pattern overlays) is built once
per (patient, grid) and kept in an in-process cache, so the 3-5 phases of one exam reuse
it; a phase is then a table lookup, texture, a small point-spread blur and kernel-shaped
noise, done slab by slab.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from phasejax.cohort import anatomy, kinetics
from phasejax.cohort.patient import Patient
from phasejax.cohort.structures import NUM_LABELS, Label
from phasejax.hu import HU_MIN


@dataclass(frozen=True, kw_only=True)
class Grid:
    shape: tuple[int, int, int]  # (Z, H, W)
    spacing: tuple[float, float, float]  # (z, y, x) mm
    origin: tuple[float, float, float]  # patient (x, y, z) mm of voxel [0, 0, 0], LPS

    def z_positions(self) -> np.ndarray:
        """Patient z (mm) of every slice, increasing with the index (inferior -> superior)."""
        return self.origin[2] + self.spacing[0] * np.arange(self.shape[0])


KERNELS = ("soft", "standard", "sharp")

# Reconstruction kernel -> in-plane Gaussian sigma (mm) of its point spread and noise grain.
# Assumption, shaped after typical FBP behaviour: a soft kernel blurs edges and gives
# coarse, blotchy noise; a sharp kernel keeps edges and gives fine, high-frequency noise.
_KERNEL_MM = {"soft": 0.85, "standard": 0.6, "sharp": 0.3}


@dataclass(frozen=True, kw_only=True)
class Scanner:
    kvp: float = 120.0
    noise_sd: float = 12.0  # HU, in a ~24 cm deep (average) abdomen; scaled with patient size
    kernel: str = "standard"  # soft | standard | sharp
    fov_mm: float | None = None  # reconstruction circle diameter; None = no circular cut
    outside_hu: float = float(HU_MIN)  # value outside the reconstruction circle

    def __post_init__(self) -> None:
        if self.kernel not in _KERNEL_MM:
            raise ValueError(f"unknown kernel {self.kernel!r}; known: {KERNELS}")
        if self.noise_sd < 0:
            raise ValueError(f"noise_sd must be >= 0, got {self.noise_sd}")


def patient_grid(
    patient: Patient, *, slice_thickness_mm: float, matrix: int = 512, fov_mm: float | None = None
) -> Grid:
    """The scan grid a technologist would set for this patient.

    z covers the lung bases above the liver dome down to below the kidneys' lower poles
    (margins per patient); contiguous slices, spacing = thickness. In plane: `fov_mm`
    (default: the body's width plus a margin, 320-500 mm) over `matrix` pixels, centred on
    the body. A `fov_mm` smaller than the body cuts it (the small-FOV confounder).
    """
    if slice_thickness_mm <= 0:
        raise ValueError(f"slice_thickness_mm must be > 0, got {slice_thickness_mm}")
    if matrix < 16:
        raise ValueError(f"matrix must be >= 16, got {matrix}")
    a = patient.anatomy
    x_half, y_ant, y_post = anatomy.body_extent(patient)
    if fov_mm is None:
        span = max(2.0 * x_half, y_post - y_ant) + 40.0
        fov_mm = float(min(max(math.ceil(span / 10.0) * 10.0, 320.0), 500.0))
    px = fov_mm / matrix
    z_lo, z_hi = anatomy.scan_range(patient)
    nz = int(math.floor((z_hi - z_lo) / slice_thickness_mm)) + 1
    cx = 0.0
    cy = a.table_y_mm + 0.5 * (y_ant + y_post)
    origin = (
        round(cx - fov_mm / 2.0 + px / 2.0, 4),
        round(cy - fov_mm / 2.0 + px / 2.0, 4),
        round(a.table_z_mm + z_lo, 4),
    )
    return Grid(
        shape=(nz, int(matrix), int(matrix)),
        spacing=(float(slice_thickness_mm), float(px), float(px)),
        origin=origin,
    )


_SLAB = 8  # slices per processing slab (bounds temporaries, keeps them in cache)


def noise_sd_for(patient: Patient, scanner: Scanner) -> float:
    """Noise SD in this patient: grows with body depth (assumption: linear in the AP
    diameter relative to a 24 cm abdomen, what automatic exposure control only partly
    compensates)."""
    _, y_ant, y_post = anatomy.body_extent(patient)
    return float(scanner.noise_sd * ((y_post - y_ant) / 240.0))


def render(
    patient: Patient, t: float | None, grid: Grid, scanner: Scanner, *, noise_seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """HU volume (float32 [Z, H, W]) and organ labels (uint8 [Z, H, W]) of `patient` at t s
    after injection start (None = non-contrast), as `scanner` would reconstruct it.

    Deterministic in (patient, t, grid, scanner, noise_seed); the label map depends on the
    patient and grid only. Outside `scanner.fov_mm`'s circle the HU is `scanner.outside_hu`.
    """
    lm = anatomy.label_map(patient, grid)
    labels = lm.labels
    lut = kinetics.hu_lut(patient, t, scanner.kvp)
    hu = np.empty(grid.shape, dtype=np.float32)
    for z0 in range(0, grid.shape[0], _SLAB):
        sl = slice(z0, min(z0 + _SLAB, grid.shape[0]))
        np.add(lut[labels[sl]], lm.texture_hu[sl], out=hu[sl])
    flat = hu.reshape(-1)
    # Parenchyma looks more mottled while perfusion is uneven (arterial inflow); assumption.
    if t is not None:
        e = kinetics.enhancement(patient, t)
        f = kinetics.iodine_factor(scanner.kvp)
        extra = {
            Label.LIVER: 0.02 * f * max(e["aorta"] - e["portal"], 0.0),
            Label.PANCREAS: 0.04 * f * e["pancreas"],
        }
        for lab, sd_extra in extra.items():
            idx, tex = lm.dynamic_texture[int(lab)]
            if sd_extra > 0 and idx.size:
                flat[idx] += np.float32(sd_extra) * tex
    # Feces: gas bubbles where its texture peaks (mottled stool).
    idx, w = lm.feces_gas
    if idx.size:
        flat[idx] = lut[Label.BOWEL_AIR] + 40.0 * w
    spleen_amp = kinetics.spleen_heterogeneity(patient, t, scanner.kvp)
    idx, w = lm.spleen_pattern
    if spleen_amp > 0 and idx.size:
        flat[idx] += np.float32(spleen_amp) * w
    oral = patient.confounders.oral_contrast_hu * kinetics.iodine_factor(scanner.kvp)
    idx, w = lm.content_weight
    if oral > 0 and idx.size:
        flat[idx] += np.float32(oral) * (w - 1.0)

    # One in-plane filter does both: the kernel's point spread on the image and the grain
    # of its noise (FBP shapes both with the same reconstruction filter). Filtered white
    # noise has variance sum(k^2)^2 (separable 2-D), so it is pre-scaled to the target SD.
    k = anatomy.gauss_kernel(_KERNEL_MM[scanner.kernel] / float(grid.spacing[1]))
    gain = float(np.sum(k.astype(np.float64) ** 2))
    sd = noise_sd_for(patient, scanner)
    rng = np.random.default_rng(np.random.SeedSequence([int(noise_seed), 0x0015E]))
    for z0 in range(0, grid.shape[0], _SLAB):
        sl = slice(z0, min(z0 + _SLAB, grid.shape[0]))
        slab = hu[sl]
        if sd > 0:
            n = rng.standard_normal(slab.shape, dtype=np.float32)
            n *= np.float32(sd / gain)
            slab += n
        hu[sl] = anatomy.blur_inplane(slab, k)
    if scanner.fov_mm is not None:
        hu[:, ~_fov_mask(grid, scanner.fov_mm)] = scanner.outside_hu
    return hu, labels


def _fov_mask(grid: Grid, fov_mm: float) -> np.ndarray:
    _, h, w = grid.shape
    _, dy, dx = grid.spacing
    yy = (np.arange(h) - (h - 1) / 2.0) * dy
    xx = (np.arange(w) - (w - 1) / 2.0) * dx
    return (yy[:, None] ** 2 + xx[None, :] ** 2) <= (fov_mm / 2.0) ** 2


_LIVER_LABELS = (Label.LIVER, Label.HEPATIC_VEIN, Label.LIVER_LESION)
_KIDNEY_LABELS = (Label.KIDNEY_CORTEX, Label.KIDNEY_MEDULLA)


def liver_kidney_range(labels: np.ndarray) -> tuple[int, int]:
    """[z_lo, z_hi) slice range from the kidneys' lower poles up to the liver dome.

    With this module's z ordering (index 0 = most inferior) z_lo is the lowest slice that
    holds kidney parenchyma and z_hi - 1 the highest that holds liver. Raises ValueError
    if the volume holds no liver or no kidney (e.g. a field of view that misses them).
    """
    if labels.ndim != 3:
        raise ValueError(f"expected labels [Z, H, W], got shape {labels.shape}")
    present = np.zeros((labels.shape[0], NUM_LABELS), dtype=bool)
    for k in range(labels.shape[0]):
        present[k, np.unique(labels[k])] = True
    liver = np.nonzero(present[:, list(_LIVER_LABELS)].any(axis=1))[0]
    kidney = np.nonzero(present[:, list(_KIDNEY_LABELS)].any(axis=1))[0]
    if liver.size == 0:
        raise ValueError("no liver in the label volume: cannot place the liver dome")
    if kidney.size == 0:
        raise ValueError("no kidney in the label volume: cannot place the kidneys' lower poles")
    z_lo, z_hi = int(kidney.min()), int(liver.max()) + 1
    if z_lo >= z_hi:
        raise ValueError(f"kidneys lie above the liver dome (z_lo={z_lo}, z_hi={z_hi})")
    return z_lo, z_hi
