"""The renal cortex and medulla's attenuation, found from anatomy alone (no learned weights).

Why: the aorta alone cannot separate portal venous from delayed series where its HU falls
in their overlap (110-140 HU), nor a late portal venous from a late arterial one; the
kidneys can. Contrast reaches the renal cortex first (corticomedullary phase, 25-70 s:
cortex far above medulla), then the medulla (nephrographic phase, 80-120 s: both alike),
and by 3-5 min the medulla outshines the cortex and iodine is excreted into the
collecting system (Yuh & Cohan, AJR 1999;173:747-55). A reader that knows the cohort's
physiology names every real series of the validation set from hand-placed aorta, cortex
and medulla ROIs (`experiments/real_roi_observer.py --structures
aorta,renal_cortex,renal_medulla`).

How: the kidney sections of the slab finder (`prepare._kidney_sections`: enhanced or
fat-ringed kidney-sized blobs beside the vertebral body) on every slice of the kidney
extent it found; per slice and side the largest, and per side only those within
`TRACK_MM` of that side's median position (a bowel loop beside one pole does not vote).
Each section's convex hull closes the hilum and the dark arterial-phase medulla inside
the bright cortex ring; the cortex is read as the hull's rim (`CORTEX_DEPTH_MM` from its
edge, past the partial-volume border), the medulla as its core (deeper than
`MEDULLA_DEPTH_MM`), both without renal sinus fat (< 0 HU) and without excreted or bone
density (> `DENSE_HU`). At the cache grid's 5 mm slices and ~2 mm pixels the medulla
reads partly as cortex (arterial medulla 80-115 against 50-65 HU by hand): the reading
noise of `phasejax.cohort.anatomy_reference` is measured against hand ROIs
(`experiments/real_anatomy.py`).

Known limits: where positive oral contrast fills bowel loops beside the kidneys, the slab
finder's kidney extent can include them (HCC_015's arterial series: its medulla reads
145 against 45 HU by hand); scans that do not reach the kidneys give no reading.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from phasejax.data.prepare import (
    DENSE_HU,
    SliceAnatomy,
    _kidney_sections,
    _KidneySection,
    _smooth_spine,
    slice_anatomy,
)

TRACK_MM = 25.0  # a kidney's centre moves less than this over its sections
CORTEX_DEPTH_MM = (1.5, 5.0)  # renal cortex: 4-10 mm thick
MEDULLA_DEPTH_MM = 8.0
FLUID_HU = 0.0  # below: renal sinus fat (and air)
MIN_SECTIONS = 3
MIN_PIXELS = 20


@dataclass(frozen=True)
class KidneyReading:
    cortex_hu: float
    medulla_hu: float
    sections: int  # kidney sections read (both sides, all slices)
    outlines: tuple[tuple[int, np.ndarray], ...]  # (z, hull mask) of every section read


def section_hull(sec: _KidneySection, shape: tuple[int, int]) -> np.ndarray:
    """The convex hull of a kidney section as a mask of the slice."""
    from scipy.spatial import ConvexHull, Delaunay, QhullError

    out = np.zeros(shape, dtype=bool)
    pts = np.stack([sec.rows, sec.cols], axis=1).astype(np.float64)
    try:
        tri = Delaunay(pts[ConvexHull(pts).vertices])
    except QhullError:  # collinear pixels: no area to read
        out[sec.rows, sec.cols] = True
        return out
    y0, y1 = int(sec.rows.min()), int(sec.rows.max()) + 1
    x0, x1 = int(sec.cols.min()), int(sec.cols.max()) + 1
    gy, gx = np.mgrid[y0:y1, x0:x1]
    inside = tri.find_simplex(np.stack([gy.ravel(), gx.ravel()], axis=1)) >= 0
    out[y0:y1, x0:x1] = inside.reshape(gy.shape)
    return out


def _tracked(picks: list[tuple[int, _KidneySection]]) -> list[tuple[int, _KidneySection]]:
    keep = []
    for side in (0, 1):
        ps = [(z, s) for z, s in picks if s.side == side]
        if not ps:
            continue
        mx = float(np.median([s.dx_mm for _, s in ps]))
        my = float(np.median([s.dy_mm for _, s in ps]))
        keep += [(z, s) for z, s in ps if np.hypot(s.dx_mm - mx, s.dy_mm - my) <= TRACK_MM]
    return keep


def read_kidneys(
    volume: np.ndarray,
    z_lo: int | None,
    z_hi: int | None,
    pixel_mm: float,
    anatomy: SliceAnatomy | None = None,
) -> KidneyReading | None:
    """Cortex and medulla HU over the kidney extent [z_lo, z_hi] (inclusive, the slab
    finder's `kidney_lo` / `kidney_hi` landmarks) of a volume in cache orientation, or None
    when no kidneys were found or too few sections could be read. `anatomy`: the slab
    finder's per-slice body masks and vertebral bodies of this volume (None: found here)."""
    from scipy import ndimage

    if z_lo is None or z_hi is None:
        return None
    n = int(volume.shape[0])
    zs = range(max(0, z_lo), min(n, z_hi + 1))
    slices = {z: np.asarray(volume[z], dtype=np.float32) for z in zs}
    if anatomy is None:
        found = {z: slice_anatomy(sl, pixel_mm) for z, sl in slices.items()}
    else:
        found = {z: (anatomy.bodies[z], anatomy.spines[z]) for z in zs}
    bodies = {z: found[z][0] for z in zs}
    # Smoothed over the kidney extent only (find_slab smooths over the whole volume).
    spine = [found[z][1] for z in zs]
    ref = dict(zip(zs, _smooth_spine(spine)))
    picks: list[tuple[int, _KidneySection]] = []
    for z in zs:
        body, sp = bodies[z], ref[z]
        if body is None or sp is None:
            continue
        secs = _kidney_sections(slices[z], body, sp, pixel_mm)
        for side in (0, 1):
            cands = [s for s in secs if s.side == side]
            if cands:
                picks.append((z, max(cands, key=lambda s: s.area_cm2)))
    keep = _tracked(picks)
    if len(keep) < MIN_SECTIONS:
        return None
    cortex, medulla, outlines = [], [], []
    for z, sec in keep:
        sl = slices[z]
        hull = section_hull(sec, sl.shape)
        depth = ndimage.distance_transform_edt(hull) * pixel_mm
        soft = hull & (sl > FLUID_HU) & (sl < DENSE_HU)
        rim = soft & (depth >= CORTEX_DEPTH_MM[0]) & (depth <= CORTEX_DEPTH_MM[1])
        cortex.append(sl[rim])
        medulla.append(sl[soft & (depth >= MEDULLA_DEPTH_MM)])
        outlines.append((z, hull))
    c, m = np.concatenate(cortex), np.concatenate(medulla)
    if c.size < MIN_PIXELS or m.size < MIN_PIXELS:
        return None
    return KidneyReading(
        cortex_hu=float(np.median(c)),
        medulla_hu=float(np.median(m)),
        sections=len(keep),
        outlines=tuple(outlines),
    )
