"""The abdominal aorta's attenuation, found from anatomy alone (no learned weights).

Why: a reader trained on the cohort's physiology names every real series of the
validation set right from hand-placed ROI values, and from the aorta's HU alone 11 of the
12 (`experiments/real_roi_observer.py`), while networks trained on the cohort's images do
not find real anatomy. The aorta is the one phase-defining structure that anatomy places
reliably: a round vessel, 15-30 mm across, directly anterior and a little to the left of
the vertebral body along the whole liver-to-kidney slab (standard cross-sectional anatomy;
the inferior vena cava lies anterior-right, the crura beside it).

How, per slice of the slab (cache orientation: rows anterior -> posterior, columns
patient right -> left): the vertebral body from `prepare.vertebral_body`; in a window
anterior and left of it, the mean and SD of HU inside a disc of radius `DISC_MM` at every
pixel; candidates are homogeneous (a vessel lumen, not a boundary between tissues), not
fat and not bone; the slice's aorta is the brightest candidate (unenhanced: all soft
tissue reads alike, so any candidate gives the phase's answer; enhanced: the aorta
outshines the crura and the bowel wall). Over the slab, the slices whose choice agrees
on the position relative to the spine (within `AGREE_MM`) vote; the reading is the median
of their disc medians. Oral contrast in a bowel loop can win one slice, not the slab.

Known limits: an enhanced aorta that touches the vertebral body joins its cancellous region
and is excluded with it on that slice (then a neighbour is read instead: HCC_015's portal
venous series reads 172 against a hand ROI of 239 HU); the thresholds were set while looking
at the real series of ../shared/data (positions only, not their labels), so the held-out
real set is their fair test; on the phantom's anatomy the reading is less reliable than on
real scans. Measured in `experiments/real_anatomy.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from phasejax.data.prepare import BONE_HU as VERTEBRA_HU
from phasejax.data.prepare import SliceAnatomy, _disk, _fill_holes, slice_anatomy

DISC_MM = 5.0  # inside a 15-30 mm lumen wherever the centre falls in its middle third
# Window of the aorta's centre relative to the vertebral body's centre (mm): anterior
# (vertebral body radius 15-25 mm + lumen radius 8-15 mm) and from 10 mm right of the
# midline to 35 mm left (the IVC sits 20-45 mm to the right).
ANTERIOR_MM = (15.0, 70.0)
LATERAL_MM = (-10.0, 35.0)
FAT_HU = -30.0  # a candidate disc's mean is above fat
BONE_HU = 600.0  # ... and below cortical bone (arterial aortas reach ~550 HU)
HOMOGENEOUS_SD = (20.0, 0.1)  # SD <= a + b * |mean|: noise grows with dose, not much else
CANCELLOUS_HU = 110.0
VERTEBRA_MAX_MM2 = 3000.0  # vertebral body with posterior elements: ~10-25 cm^2
AGREE_MM = 8.0
MIN_SLICES = 2


@dataclass(frozen=True)
class AortaReading:
    hu: float  # median of the agreeing slices' disc medians
    slices: int  # slices that agreed
    searched: int  # slices with a vertebral body and a candidate
    offset_mm: tuple[float, float]  # median (anterior, left) offset from the vertebral body
    positions: tuple[tuple[int, float, float], ...]  # (z, row, col) of every agreeing slice


def _disc_stats(sl: np.ndarray, radius_px: float) -> tuple[np.ndarray, np.ndarray]:
    from scipy import ndimage

    k = _disk(radius_px).astype(np.float32)
    k /= k.sum()
    x = sl.astype(np.float32)
    mean = ndimage.convolve(x, k, mode="nearest")
    sq = ndimage.convolve(x * x, k, mode="nearest")
    return mean, np.sqrt(np.maximum(sq - mean * mean, 0.0))


def _vertebra(
    sl: np.ndarray, spine: tuple[float, float], pixel_mm: float, margin_px: float
) -> np.ndarray:
    """The vertebral body's bone region, grown by `margin_px`: its cancellous interior
    (150-300 HU) is as homogeneous as a vessel and would otherwise win every venous slice."""
    from scipy import ndimage

    r = min(max(int(round(spine[0])), 0), sl.shape[0] - 1)
    c = min(max(int(round(spine[1])), 0), sl.shape[1] - 1)
    out = np.zeros(sl.shape, dtype=bool)
    # Cancellous bone (100-250 HU in adults) first; where that region has grown into an
    # enhanced aorta touching the vertebra (larger than any vertebra), the denser one.
    for hu in (CANCELLOUS_HU, VERTEBRA_HU):
        bone = _fill_holes(ndimage.binary_closing(sl > hu, _disk(1)))
        lab, _ = ndimage.label(bone)
        k = lab[r, c]
        if k == 0:
            continue
        region = lab == k
        if region.sum() * pixel_mm * pixel_mm <= VERTEBRA_MAX_MM2:
            out = region
            break
    return ndimage.binary_dilation(out, _disk(margin_px + 1))


def slice_candidate(
    sl: np.ndarray,
    pixel_mm: float,
    found: tuple[np.ndarray | None, tuple[float, float] | None] | None = None,
) -> tuple[float, float, float, float, float] | None:
    """(row, col, disc median HU, anterior mm, left mm) of one slice's aorta, or None.
    `found`: the slice's body mask and vertebral body as `prepare.slice_anatomy` gives them
    (None: computed here)."""
    body, spine = slice_anatomy(sl, pixel_mm) if found is None else found
    if body is None or spine is None:
        return None
    sr, sc = spine
    h, w = sl.shape
    r0 = max(0, int(sr - ANTERIOR_MM[1] / pixel_mm))
    r1 = min(h, int(sr - ANTERIOR_MM[0] / pixel_mm) + 1)
    c0 = max(0, int(sc + LATERAL_MM[0] / pixel_mm))
    c1 = min(w, int(sc + LATERAL_MM[1] / pixel_mm) + 1)
    if r1 <= r0 or c1 <= c0:
        return None
    rad = DISC_MM / pixel_mm
    pad = int(np.ceil(rad)) + 1
    y0, x0 = max(0, r0 - pad), max(0, c0 - pad)
    sub = sl[y0 : min(h, r1 + pad), x0 : min(w, c1 + pad)]
    mean, sd = _disc_stats(sub, rad)
    mean = mean[r0 - y0 : r1 - y0, c0 - x0 : c1 - x0]
    sd = sd[r0 - y0 : r1 - y0, c0 - x0 : c1 - x0]
    inside = body[r0:r1, c0:c1] & ~_vertebra(sl, spine, pixel_mm, rad)[r0:r1, c0:c1]
    ok = (
        inside
        & (mean > FAT_HU)
        & (mean < BONE_HU)
        & (sd <= HOMOGENEOUS_SD[0] + HOMOGENEOUS_SD[1] * np.abs(mean))
    )
    if not ok.any():
        return None
    score = np.where(ok, mean, -np.inf)
    i, j = np.unravel_index(int(np.argmax(score)), score.shape)
    row, col = r0 + int(i), c0 + int(j)
    disc = _disk(rad)
    rr = disc.shape[0] // 2
    ys, xs = np.nonzero(disc)
    ys, xs = ys - rr + row, xs - rr + col
    keep = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
    med = float(np.median(sl[ys[keep], xs[keep]]))
    return float(row), float(col), med, (sr - row) * pixel_mm, (col - sc) * pixel_mm


def read_aorta(
    volume: np.ndarray,
    z_lo: int,
    z_hi: int,
    pixel_mm: float,
    anatomy: SliceAnatomy | None = None,
) -> AortaReading | None:
    """The aorta's HU over the slab [z_lo, z_hi) of a volume in cache orientation, or None
    when fewer than `MIN_SLICES` slices agree on where it is. `anatomy`: the slab finder's
    per-slice body masks and vertebral bodies of this volume (None: found here)."""
    found = []
    for z in range(max(0, z_lo), min(int(volume.shape[0]), z_hi)):
        known = None if anatomy is None else (anatomy.bodies[z], anatomy.spines[z])
        c = slice_candidate(np.asarray(volume[z], dtype=np.float32), pixel_mm, known)
        if c is not None:
            found.append((z, *c))
    if not found:
        return None
    off = np.array([[f[4], f[5]] for f in found])
    d = np.linalg.norm(off[:, None, :] - off[None, :, :], axis=-1)
    votes = (d <= AGREE_MM).sum(1)
    best = int(np.argmax(votes))
    agree = np.nonzero(d[best] <= AGREE_MM)[0]
    if agree.size < MIN_SLICES:
        return None
    return AortaReading(
        hu=float(np.median([found[k][3] for k in agree])),
        slices=int(agree.size),
        searched=len(found),
        offset_mm=(float(np.median(off[agree, 0])), float(np.median(off[agree, 1]))),
        positions=tuple((int(found[k][0]), found[k][1], found[k][2]) for k in agree),
    )
