"""In-plane resampling and training augmentation of HU slices (numpy / scipy only).

One geometric transform per series: every selected slice of a series gets the same
rotation, scale, translation (and flip, only when enabled), so the slices stay
registered as they are in the scan; a 2.5D network reads them as channels and a
per-slice transform would create motion that no scanner produces.

The resize to the model's input size and the augmentation are one affine map, so
each output pixel is interpolated once (bilinear). Down-sampling is preceded by a
Gaussian prefilter with sigma = (factor - 1) / 2 input pixels (factor = input
pixels per output pixel), the anti-aliasing rule of skimage.transform.resize:
without it thin bright vessels (the aorta, the portal vein) alias and flicker with
the sampling phase.

Intensity augmentation works in HU, before windowing: a global offset (the same
tissue reads differently between scanners, kVp and reconstructions; the default
+/- 15 HU is an assumption, not a measured spread) and Gaussian noise whose standard
deviation is drawn per series (dose, kernel and patient size change the noise
level; a fixed sigma would teach the network one noise level).

No left-right flip by default: abdominal anatomy is lateralised (liver and IVC on
the patient's right, spleen and aorta slightly left), so a flipped image is not a
plausible scan. `flip_lr` exists for the ablation that measures this.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from phasejax.cohort.structures import Label
from phasejax.config import DataConfig
from phasejax.data.crop import Crop
from phasejax.hu import AIR_HU  # fill for pixels the transform brings in from outside


@dataclass(frozen=True, kw_only=True)
class Affine:
    """One series' in-plane transform, about the image centre."""

    rotation_deg: float = 0.0
    scale: float = 1.0  # > 1 zooms in (anatomy appears larger)
    shift_y: float = 0.0  # fraction of the image side
    shift_x: float = 0.0
    flip_lr: bool = False
    # Elastic deformation (data.elastic): a smooth random displacement of every output pixel,
    # SD `elastic` (fraction of the image side), the field drawn from `elastic_seed`.
    elastic: float = 0.0
    elastic_seed: int = 0


IDENTITY = Affine()

# Control points per side of the elastic displacement field: one every ~8 cm of a 40 cm field
# of view, so organs bend and shift against each other without tearing (SynthSeg's
# deformation, Billot et al. 2023, at the scale of abdominal organs).
_ELASTIC_GRID = 5


def sample_affine(rng: np.random.Generator, data_cfg: DataConfig) -> Affine:
    """Draw one series' transform from the ranges in `data_cfg` (uniform in each)."""
    return Affine(
        rotation_deg=float(rng.uniform(-data_cfg.rotation_deg, data_cfg.rotation_deg)),
        scale=float(1.0 + rng.uniform(-data_cfg.scale, data_cfg.scale)),
        shift_y=float(rng.uniform(-data_cfg.translate, data_cfg.translate)),
        shift_x=float(rng.uniform(-data_cfg.translate, data_cfg.translate)),
        flip_lr=bool(data_cfg.flip_lr and rng.random() < 0.5),
        # Drawn only when on, so that runs without it keep their random streams.
        elastic=float(data_cfg.elastic),
        elastic_seed=int(rng.integers(2**31)) if data_cfg.elastic > 0 else 0,
    )


def elastic_field(affine: Affine, size: int) -> np.ndarray | None:
    """The displacement float64 [2, size, size] (rows, columns; fraction of the image side)
    of `affine`'s elastic deformation, None when it has none."""
    if affine.elastic <= 0:
        return None
    coarse = np.random.default_rng(affine.elastic_seed).normal(
        0.0, affine.elastic, size=(2, _ELASTIC_GRID, _ELASTIC_GRID)
    )
    return np.stack([
        ndimage.zoom(c, size / _ELASTIC_GRID, order=3, mode="nearest", grid_mode=True)
        for c in coarse
    ])  # fmt: skip


def resample_slices(
    slices: np.ndarray,
    size: int,
    affine: Affine = IDENTITY,
    cval: float = AIR_HU,
    crop: Crop | None = None,
) -> np.ndarray:
    """HU slices [S, H, W] -> float32 [S, size, size], resized and transformed (`cval`
    outside the input: air for HU, 0 for masks).

    Pixel-centre convention: output pixel o samples input coordinate
    c_in + f * R(-theta) / scale * (o - c_out - shift), f = H / size, so the identity
    with f = 1 returns the input exactly. With a `crop` (phasejax.data.crop), c_in is its
    centre and f = crop.side / size: the transform acts on the crop.
    """
    slices = np.asarray(slices, dtype=np.float32)
    if slices.ndim != 3 or slices.shape[1] != slices.shape[2]:
        raise ValueError(f"expected square slices [S, H, H], got shape {slices.shape}")
    n, h, _ = slices.shape
    if crop is None and affine == IDENTITY and h == size:
        return slices.copy()
    f = (h if crop is None else crop.side) / size
    factor = f / affine.scale  # input pixels per output pixel
    sigma = (factor - 1.0) / 2.0
    # gaussian_filter's kernel radius is int(4 sigma + 0.5) (truncate=4): below sigma 0.125
    # (e.g. 256 -> 224 px, the paper config) the kernel is [1.0] and the pass returns its
    # input bit for bit, at ~15% of the preprocessing's time there.
    if int(4.0 * sigma + 0.5) > 0:
        slices = ndimage.gaussian_filter(slices, sigma=(0.0, sigma, sigma), mode="nearest")
    t = math.radians(affine.rotation_deg)
    rot = np.array([[math.cos(t), math.sin(t)], [-math.sin(t), math.cos(t)]])  # R(-theta), (y, x)
    m2 = rot * (f / affine.scale)
    if affine.flip_lr:
        m2 = m2 @ np.diag([1.0, -1.0])
    c_out = (size - 1) / 2.0
    c_in = np.array([(h - 1) / 2.0] * 2 if crop is None else [crop.row, crop.col])
    centre = np.array([c_out + affine.shift_y * size, c_out + affine.shift_x * size])
    offset = c_in - m2 @ centre
    # Slice by slice in 2D: a 3D affine_transform would interpolate trilinearly
    # (8 taps) although z is integral, about twice the cost of bilinear per slice.
    out = np.empty((n, size, size), dtype=np.float32)
    field = elastic_field(affine, size)
    if field is not None:
        # Displaced output pixels mapped through the affine: one bilinear lookup per pixel.
        grid = np.indices((size, size), dtype=np.float64) + field * size
        coords = np.einsum("ij,jhw->ihw", m2, grid) + offset[:, None, None]
        for k in range(n):
            ndimage.map_coordinates(
                slices[k], coords, output=out[k], order=1, mode="constant", cval=cval,
                prefilter=False,
            )  # fmt: skip
        return out
    for k in range(n):
        ndimage.affine_transform(
            slices[k],
            m2,
            offset=offset,
            output_shape=(size, size),
            output=out[k],
            order=1,
            mode="constant",
            cval=cval,
            prefilter=False,
        )
    return out


def intensity_offset(rng: np.random.Generator, data_cfg: DataConfig) -> float:
    """A global HU offset for one series, uniform in +/- intensity_jitter_hu."""
    j = data_cfg.intensity_jitter_hu
    return float(rng.uniform(-j, j)) if j > 0 else 0.0


def add_noise(hu: np.ndarray, rng: np.random.Generator, max_sd_hu: float) -> np.ndarray:
    """Add Gaussian noise in HU with a per-series sd drawn uniformly from [0, max_sd_hu]."""
    if max_sd_hu <= 0:
        return hu
    sd = rng.uniform(0.0, max_sd_hu)
    hu += rng.standard_normal(hu.shape, dtype=np.float32) * np.float32(sd)
    return hu


# --------------------------------------------------------------------------- domain randomisation
#
# Sim-to-real (SynthSeg-style, Billot et al. 2023, Med Image Anal 86:102789): a network trained on
# a phantom learns whatever separates the phantom's phases, including cues that real scans do not
# share (the phantom's bowel brightness, fat and muscle HU, bone density). Randomising every
# structure that does NOT define the phase, independently per series, removes those shortcuts and
# leaves the physiological HU only where the phase is decided: aorta and arteries, portal,
# splenic and mesenteric veins, hepatic veins and IVC, renal cortex, medulla and collecting
# system, liver, spleen, pancreas, heart (DESIGN.md 2). Needs the cohort's organ masks; a cache
# without masks (real data) is left as it is.
#
# Ranges are per-series HU offsets at strength 1. They span what real abdomens show: fat -120 to
# -60 HU, muscle 35-60 HU, cancellous bone 150-350 HU, and bowel content from water (0-20 HU) to
# positive oral contrast (150-900 HU, in any phase: the classic confounder). Assumptions sized to
# those spans, not fitted to any real series.
_NUISANCE_OFFSETS: dict[Label, tuple[float, float]] = {
    Label.SKIN: (-20.0, 20.0),
    Label.FAT_SUBCUT: (-30.0, 30.0),
    Label.FAT_VISCERAL: (-30.0, 30.0),
    Label.MUSCLE: (-20.0, 20.0),
    Label.VERTEBRA: (-120.0, 160.0),
    Label.BONE_CORTICAL: (-200.0, 300.0),
    Label.RIB: (-120.0, 200.0),
    Label.DISC: (-20.0, 20.0),
    Label.SPINAL_CANAL: (-15.0, 15.0),
    Label.GALLBLADDER: (-10.0, 40.0),
    Label.STOMACH: (-30.0, 60.0),
    Label.DUODENUM: (-30.0, 60.0),
    Label.SMALL_BOWEL: (-30.0, 60.0),
    Label.COLON: (-30.0, 60.0),
    Label.FECES: (-80.0, 80.0),
    Label.LUNG: (-100.0, 100.0),
    Label.CYST: (-10.0, 20.0),
}
_ORAL_CONTRAST_P = 0.5  # share of series whose bowel fluid is given positive oral contrast
_ORAL_CONTRAST_HU = (150.0, 900.0)
_WATER_HU = (-5.0, 30.0)


def randomize_tissues(
    hu: np.ndarray, labels: np.ndarray, rng: np.random.Generator, strength: float
) -> np.ndarray:
    """HU slices [S, H, W] with every non-phase structure shifted by one random offset per
    series (in place where possible); `labels` are the cohort's organ labels on the same grid.

    Bowel fluid is re-drawn as a whole, water or positive oral contrast, keeping its texture.
    """
    if strength <= 0:
        return hu
    labels = np.asarray(labels)
    lut = np.zeros(256, dtype=np.float32)
    for label, (lo, hi) in _NUISANCE_OFFSETS.items():
        lut[label] = rng.uniform(lo, hi) * strength
    content = labels == Label.BOWEL_CONTENT
    oral = rng.random() < _ORAL_CONTRAST_P
    target = rng.uniform(*(_ORAL_CONTRAST_HU if oral else _WATER_HU))
    hu = hu + lut[labels]
    if content.any():
        current = float(np.median(hu[content]))
        hu[content] += np.float32(strength * (target - current))
    return hu


_KIDNEY_SCRAMBLE_HU = (30.0, 260.0)  # unenhanced parenchyma to a bright nephrogram
_COLLECTING_SCRAMBLE_HU = (0.0, 500.0)  # urine to dense excreted contrast


def scramble_kidneys(
    hu: np.ndarray,
    labels: np.ndarray,
    rng: np.random.Generator,
    share: float,
    collecting: bool = False,
) -> np.ndarray:
    """With probability `share`, renal cortex and medulla of this series moved to random HU
    (one draw each, texture kept); the collecting system too (urine to dense excretion) when
    `collecting`, else it is left as it is."""
    if share <= 0 or rng.random() >= share:
        return hu
    labels = np.asarray(labels)
    hu = np.array(hu, dtype=np.float32, copy=True)
    ranges = [
        (Label.KIDNEY_CORTEX, _KIDNEY_SCRAMBLE_HU),
        (Label.KIDNEY_MEDULLA, _KIDNEY_SCRAMBLE_HU),
    ]
    if collecting:
        ranges.append((Label.KIDNEY_COLLECTING, _COLLECTING_SCRAMBLE_HU))
    for label, span in ranges:
        inside = labels == label
        if inside.any():
            target = rng.uniform(*span)
            hu[inside] += np.float32(target - float(np.median(hu[inside])))
    return hu


# Counterfactual structure HU (data.hu_scramble): what a blood pool or organ can read, from
# unenhanced water-like fluid to dense arterial or excreted contrast.
_STRUCTURE_SCRAMBLE_HU = (0.0, 450.0)


def scramble_structures(
    hu: np.ndarray,
    labels: np.ndarray,
    rng: np.random.Generator,
    share: float,
    structures: tuple[Label, ...],
) -> tuple[np.ndarray, bool]:
    """With probability `share`, every one of `structures` moved to its own random HU (one
    draw each, texture kept); returns (HU slices, whether they were moved).

    Against shortcuts of the structure-HU head: on the cohort the aorta's HU follows the
    phase, and so does everything else, so a network can "read" the aorta from the kidneys.
    Moving each structure independently makes only its own pixels tell its HU. A moved
    series no longer shows a physiological phase: the caller drops its phase label.
    """
    if share <= 0 or rng.random() >= share:
        return hu, False
    labels = np.asarray(labels)
    hu = np.array(hu, dtype=np.float32, copy=True)
    for label in structures:
        target = rng.uniform(*_STRUCTURE_SCRAMBLE_HU)  # drawn for every structure: fixed count
        inside = labels == label
        if inside.any():
            hu[inside] += np.float32(target - float(np.mean(hu[inside])))
    return hu, True


# Enhancement jitter (data.structure_jitter): the cohort draws each organ's enhancement from
# one patient-level bolus and fixed organ physiology, so within a phase the organs keep the
# same ratios from patient to patient. Real patients' organs do not: on the real series of
# ../shared/data the spleen of arterial scans read 78-146 HU against the cohort's 101-208
# (experiments/real_roi.py), and cirrhosis, splenomegaly, renal function and the bolus shape
# move single organs. Scaling each structure's enhancement above unenhanced tissue (~40 HU)
# by its own log-normal factor keeps the phase label (the order of vessels and organs stays
# as physiology sets it for moderate factors) while no single organ's HU can decide alone.
_UNENHANCED_HU = 40.0


def jitter_structures(
    hu: np.ndarray,
    labels: np.ndarray,
    rng: np.random.Generator,
    sigma: float,
    structures: tuple[Label, ...],
) -> np.ndarray:
    """HU slices with each of `structures` given its own enhancement factor exp(N(0, sigma))
    (one draw per structure and series, texture kept): HU -> 40 + (HU - 40) * factor."""
    if sigma <= 0:
        return hu
    labels = np.asarray(labels)
    hu = np.array(hu, dtype=np.float32, copy=True)
    for label in structures:
        factor = float(np.exp(rng.normal(0.0, sigma)))  # drawn for every structure: fixed count
        inside = labels == label
        if inside.any():
            mean = float(np.mean(hu[inside]))
            hu[inside] += np.float32((mean - _UNENHANCED_HU) * (factor - 1.0))
    return hu


# Arterial enhancement jitter (data.arterial_jitter). The labelling rule tells EAP from LAP by
# the portal vein alone (kinetics.EAP_LAP_PORTAL_HU), as radiologists do (DESIGN.md 2), but
# in the cohort every organ's arterial-phase enhancement follows the same bolus, so a network
# can read "later" from a bright aorta, spleen or renal cortex instead. On cohort v8 the
# two-step network's EAP misses had brighter aortas than its EAP hits (307 against 271 HU)
# and its LAP misses dimmer ones (237 against 282), while the aorta barely separates the two
# phases (medians 272 / 282 HU on the test and external series). In patients the arterial peak
# follows iodine dose rate and cardiac output, the spleen and kidneys their own perfusion,
# none of them the splanchnic transit that opacifies the portal vein (Bae, Radiology 2010).
# Scaling these structures in arterial series leaves the label as it is: the portal vein and
# the hepatic veins (the arterial gate) are untouched, and the aorta stays above the hepatic
# veins for factors down to exp(-3 x 0.3).
ARTERIAL_JITTER: tuple[Label, ...] = (
    Label.AORTA, Label.CELIAC_SMA, Label.RENAL_ARTERY, Label.HEART, Label.LIVER, Label.SPLEEN,
    Label.PANCREAS, Label.KIDNEY_CORTEX, Label.KIDNEY_MEDULLA,
)  # fmt: skip


def blur(hu: np.ndarray, rng: np.random.Generator, max_sigma_px: float) -> np.ndarray:
    """In-plane Gaussian blur with a per-series sigma drawn uniformly from [0, max_sigma_px]:
    softer kernels, thicker slices and lower matrices than the cohort renders."""
    if max_sigma_px <= 0:
        return hu
    sigma = float(rng.uniform(0.0, max_sigma_px))
    if sigma < 0.1:
        return hu
    return ndimage.gaussian_filter(hu, sigma=(0.0, sigma, sigma), mode="nearest")


# Random erasing (Zhong et al. 2020, AAAI 34:13001) against single-cue shortcuts: occlusion of the
# quick model's inputs showed a real arterial series called DP from one kidney patch alone, while
# its aorta (329 HU) said arterial. Hiding random boxes in training makes the network collect
# evidence from every phase-defining structure. The fill is soft tissue (-100 to 150 HU, fat to
# enhanced parenchyma) that the blur and noise drawn afterwards texture like the rest.
_ERASE_SIDE = (0.1, 0.35)  # box side, fraction of the image side
_ERASE_FILL_HU = (-100.0, 150.0)


def erase_boxes(hu: np.ndarray, rng: np.random.Generator, boxes: int) -> np.ndarray:
    """HU slices [S, H, W] with `boxes` random boxes per slice set to one random HU each."""
    if boxes <= 0:
        return hu
    s, h, w = hu.shape
    for k in range(s):
        for _ in range(boxes):
            bh = max(1, int(round(rng.uniform(*_ERASE_SIDE) * h)))
            bw = max(1, int(round(rng.uniform(*_ERASE_SIDE) * w)))
            y = int(rng.integers(0, h - bh + 1))
            x = int(rng.integers(0, w - bw + 1))
            hu[k, y : y + bh, x : x + bw] = np.float32(rng.uniform(*_ERASE_FILL_HU))
    return hu
