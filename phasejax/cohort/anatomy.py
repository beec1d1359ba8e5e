"""Procedural 3D abdominal anatomy of one patient, rasterised on any grid.

Anatomy frame (mm): x = patient x (LPS: + towards the patient's LEFT), y = patient y minus
the table height (+ POSTERIOR; 0 = centre of the body outline), z = height above the right
kidney's lower pole (+ SUPERIOR). Patient coordinates are this frame shifted by
(0, table_y_mm, table_z_mm).

Every shape is analytic (ellipsoids, metaballs, capsule tubes along polylines, layered body
outline) and drawn in its own bounding box. Painting order encodes anatomy: most organs
are painted only where visceral fat still is, so the first painted wins and later organs
mould around it (the liver wraps the right kidney and the stomach, small bowel fills what
is left); vessels are painted last over the organs they run through.

All random choices come from `Patient.seed` and are made once per patient (`_layout`, a
typed `Layout` of the body, diaphragm, spine, organs, vessels and bowel), independent of
the grid: a patient has the same anatomy on every grid and in every phase.

Reference anatomy (average adult; Gray's Anatomy levels): liver dome ~T9-T10, kidneys
T12-L3 with the right ~1.5 cm lower, pancreas at L1-L2 with the tail at the splenic hilum,
celiac trunk T12-L1 and SMA ~1 cm below, left renal vein between aorta and SMA, portal vein
formed behind the pancreatic neck, aorta left-anterior and IVC right-anterior of the spine.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
from scipy import ndimage

from phasejax.cohort.patient import Patient
from phasejax.cohort.structures import NUM_LABELS, Label

if TYPE_CHECKING:
    from phasejax.cohort.render import Grid

L = Label
_FAT = (L.FAT_VISCERAL,)


@dataclass(frozen=True, eq=False)
class LabelMap:
    """The organ label volume of one (patient, grid) and what rendering needs besides it."""

    labels: np.ndarray  # uint8 [Z, H, W]
    texture_hu: np.ndarray  # float16 [Z, H, W]: tissue texture in HU (correlated, per label SD)
    dynamic_texture: dict[int, tuple[np.ndarray, np.ndarray]]  # label -> (flat idx, unit texture)
    spleen_pattern: tuple[np.ndarray, np.ndarray]  # flat indices, arciform pattern in [-1, 1]
    content_weight: tuple[np.ndarray, np.ndarray]  # flat indices of bowel fluid, loop dilution
    feces_gas: tuple[np.ndarray, np.ndarray]  # flat indices of gas bubbles in stool, weight


# Standard deviation (HU) of the spatially correlated tissue texture per label. Assumption:
# parenchyma is mottled by a few HU, fat by partial volume with septa and vessels, bone
# by trabeculae, stool is strongly heterogeneous.
TEXTURE_SD = np.zeros(NUM_LABELS, dtype=np.float32)
for _lab, _sd in {
    L.SKIN: 6.0,
    L.FAT_SUBCUT: 7.0,
    L.FAT_VISCERAL: 10.0,
    L.MUSCLE: 6.0,
    L.VERTEBRA: 45.0,
    L.BONE_CORTICAL: 60.0,
    L.RIB: 60.0,
    L.DISC: 6.0,
    L.SPINAL_CANAL: 4.0,
    L.LIVER: 5.0,
    L.SPLEEN: 4.0,
    L.PANCREAS: 9.0,
    L.KIDNEY_CORTEX: 5.0,
    L.KIDNEY_MEDULLA: 5.0,
    L.STOMACH: 5.0,
    L.DUODENUM: 5.0,
    L.SMALL_BOWEL: 5.0,
    L.COLON: 5.0,
    L.BOWEL_CONTENT: 4.0,
    L.FECES: 70.0,
    L.BOWEL_AIR: 15.0,
    L.LUNG: 35.0,
    L.LIVER_LESION: 6.0,
    L.HEART: 3.0,
}.items():
    TEXTURE_SD[int(_lab)] = _sd
# Labels whose texture amplitude changes with the phase (render adds a time-dependent part).
DYNAMIC_TEXTURE = (L.LIVER, L.PANCREAS)


def gauss_kernel(sigma_px: float) -> np.ndarray:
    """Normalised 1-D Gaussian taps (3 sigma); a single tap below 0.05 px."""
    if sigma_px < 0.05:
        return np.array([1.0], dtype=np.float32)
    r = max(1, int(math.ceil(3.0 * sigma_px)))
    x = np.arange(-r, r + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma_px) ** 2)
    return (k / k.sum()).astype(np.float32)


def blur_inplane(a: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Separable filter along the last two axes (H, W) of [Z, H, W]."""
    if k.size == 1:
        return a
    a = ndimage.correlate1d(a, k, axis=1, mode="nearest")
    return ndimage.correlate1d(a, k, axis=2, mode="nearest")


# ---------------------------------------------------------------------------------------
# Geometry helpers


def _rot(axis: str, deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    if axis == "x":
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    if axis == "y":
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


class _Canvas:
    """Label volume plus the anatomy-frame coordinates of its voxel centres."""

    def __init__(self, patient: Patient, grid: Grid) -> None:
        nz, ny, nx = grid.shape
        sz, sy, sx = grid.spacing
        ox, oy, oz = grid.origin
        a = patient.anatomy
        self.lab = np.full(grid.shape, int(L.BACKGROUND), dtype=np.uint8)
        self.x = (ox + sx * np.arange(nx)).astype(np.float32)
        self.y = (oy + sy * np.arange(ny) - a.table_y_mm).astype(np.float32)
        self.z = (oz + sz * np.arange(nz) - a.table_z_mm).astype(np.float32)
        self.step = (sx, sy, sz)
        self.aux = np.zeros(grid.shape, dtype=np.uint8)  # bowel loop id of fluid voxels

    @staticmethod
    def _range(coord: np.ndarray, step: float, lo: float, hi: float) -> tuple[int, int]:
        i0 = int(math.ceil((lo - float(coord[0])) / step))
        i1 = int(math.floor((hi - float(coord[0])) / step)) + 1
        return max(i0, 0), min(i1, coord.size)

    def box(self, lo, hi):
        """Voxels inside the mm box [lo, hi] (x, y, z): (slices, X, Y, Z) or None."""
        x0, x1 = self._range(self.x, self.step[0], lo[0], hi[0])
        y0, y1 = self._range(self.y, self.step[1], lo[1], hi[1])
        z0, z1 = self._range(self.z, self.step[2], lo[2], hi[2])
        if x0 >= x1 or y0 >= y1 or z0 >= z1:
            return None
        sl = (slice(z0, z1), slice(y0, y1), slice(x0, x1))
        return (
            sl,
            self.x[x0:x1][None, None, :],
            self.y[y0:y1][None, :, None],
            self.z[z0:z1][:, None, None],
        )

    def paint(self, sl, mask: np.ndarray, label: Label, only=None, never=None) -> np.ndarray:
        view = self.lab[sl]
        if only is not None:
            mask = mask & _allowed(tuple(only))[view]
        if never is not None:
            mask = mask & ~_allowed(tuple(never))[view]
        view[mask] = int(label)
        return mask


@lru_cache(maxsize=64)
def _allowed(labels: tuple) -> np.ndarray:
    a = np.zeros(256, dtype=bool)
    a[[int(x) for x in labels]] = True
    return a


def _ellipsoid_rho2(X, Y, Z, c, r, R=None):
    c = [float(v) for v in c]
    r = [float(v) for v in r]
    dx, dy, dz = X - c[0], Y - c[1], Z - c[2]
    if R is None:
        return (dx / r[0]) ** 2 + (dy / r[1]) ** 2 + (dz / r[2]) ** 2
    # local coordinates u = R^T (p - c)
    u = (R[0, 0] * dx + R[1, 0] * dy + R[2, 0] * dz) / r[0]
    v = (R[0, 1] * dx + R[1, 1] * dy + R[2, 1] * dz) / r[1]
    w = (R[0, 2] * dx + R[1, 2] * dy + R[2, 2] * dz) / r[2]
    return u * u + v * v + w * w


def _ellipsoid(cv, c, r, label, R=None, only=None, never=None, scale=1.0):
    ext = max(r) * scale if R is not None else None
    rr = np.array(r, dtype=float) * scale
    lo = np.array(c) - (ext if ext is not None else rr)
    hi = np.array(c) + (ext if ext is not None else rr)
    b = cv.box(lo, hi)
    if b is None:
        return None
    sl, X, Y, Z = b
    m = _ellipsoid_rho2(X, Y, Z, c, rr, R) <= 1.0
    return sl, cv.paint(sl, m, label, only, never)


def _segments(cv, pts, radii, pad: float = 0.0):
    """Capsule segments of a polyline: yields (slices, dist^2, radius, centre_y) per segment."""
    pts = np.asarray(pts, dtype=float)
    radii = np.asarray(radii, dtype=float)
    for i in range(len(pts) - 1):
        a, b = pts[i], pts[i + 1]
        ra, rb = radii[i], radii[i + 1]
        r = max(ra, rb) + pad
        box = cv.box(np.minimum(a, b) - r, np.maximum(a, b) + r)
        if box is None:
            continue
        sl, X, Y, Z = box
        d = b - a
        l2 = float(d @ d) or 1e-9
        t = ((X - a[0]) * d[0] + (Y - a[1]) * d[1] + (Z - a[2]) * d[2]) / l2
        t = np.clip(t, 0.0, 1.0)
        cy = a[1] + t * d[1]
        dist2 = (X - a[0] - t * d[0]) ** 2 + (Y - cy) ** 2 + (Z - a[2] - t * d[2]) ** 2
        yield sl, dist2, ra + t * (rb - ra), cy, Y


def _tube(cv, pts, radii, label, only=None, never=None):
    for sl, dist2, rad, _, _ in _segments(cv, pts, radii):
        cv.paint(sl, dist2 <= rad * rad, label, only, never)


def _hollow(
    cv,
    pts,
    radii,
    wall_label,
    lumen_label,
    *,
    wall_mm: float,
    air_frac: float,
    only=_FAT,
    loop_id: int = 0,
):
    """Bowel-like tube: wall, fluid (or stool) lumen, gas floating anteriorly (supine)."""
    segs = list(_segments(cv, pts, radii))
    for sl, dist2, rad, _, _ in segs:
        cv.paint(sl, dist2 <= rad * rad, wall_label, only)
    ok = tuple(only) + (wall_label, lumen_label, L.BOWEL_AIR)
    for sl, dist2, rad, cy, Y in segs:
        rl = np.maximum(rad - wall_mm, 1.0)
        lumen = dist2 <= rl * rl
        # supine: gas rises to the anterior (smaller y) part of the lumen
        gas = lumen & (Y - cy < -rl * (1.0 - 2.0 * air_frac))
        m = cv.paint(sl, lumen & ~gas, lumen_label, ok)
        if loop_id and lumen_label == L.BOWEL_CONTENT:
            cv.aux[sl][m] = loop_id
        cv.paint(sl, gas, L.BOWEL_AIR, ok)


# ---------------------------------------------------------------------------------------
# Per-patient layout (all random draws, grid independent)

Point = Sequence[float]  # (x, y, z) mm in the anatomy frame


class Tube(NamedTuple):
    """A capsule polyline: vertices (x, y, z) mm and the radius (mm) at each."""

    points: Sequence[Point]
    radii: Sequence[float]


class Ellipsoid(NamedTuple):
    centre: np.ndarray  # (x, y, z) mm
    radii: tuple[float, float, float]  # mm, along the rotated axes
    rotation: np.ndarray  # 3 x 3


class Kidney(NamedTuple):
    side: int  # -1 right, +1 left (the x sign)
    centre: np.ndarray
    radii: tuple[float, float, float]
    rotation: np.ndarray  # 3 x 3: long axis tilted, hilum anteromedial


class Metaball(NamedTuple):
    """One blob of the liver's metaball field: exp(-rho^2) at 1/e radii, times weight."""

    centre: Point
    radii: tuple[float, float, float]
    weight: float


class BowelLoop(NamedTuple):
    points: np.ndarray  # [n, 3] random walk, mm
    radii: list[float]
    air_frac: float  # share of the lumen that is gas (anterior, supine)
    loop_id: int  # index into Bowel.loop_weights (content dilution of this loop)


class Lesion(NamedTuple):
    centre: np.ndarray
    radius: float


class Cyst(NamedTuple):
    centre: np.ndarray
    radius: float
    organs: tuple[Label, ...]  # painted only over these labels


@dataclass(frozen=True)
class Body:
    """Body outline and wall, mm."""

    scale: float  # patient size relative to the reference adult
    half_width: float
    half_depth_ant: float  # centre to the anterior skin
    fat_mm: float  # subcutaneous fat
    muscle_mm: float  # abdominal wall muscle
    spine_y: float  # vertebral body centre
    posterior_y: float  # posterior skin
    obese: float  # 0..1, from the BMI: a rounder anterior abdomen low down


@dataclass(frozen=True)
class Diaphragm:
    """Two domes; z heights in mm, dome centres (x, y) in mm."""

    right_z: float  # the right dome (the liver dome)
    left_z: float
    right_dome: tuple[float, float]
    left_dome: tuple[float, float]
    curvature: float  # mm, radius of the dome paraboloid
    # The central tendon, on which the heart rests: a bowl below both domes (Gray's Anatomy:
    # central tendon at the xiphisternal level, T9-T10; right dome T8-T9).
    tendon_z: float
    tendon_xy: tuple[float, float]
    tendon_radius: float  # mm, radius of the bowl paraboloid


@dataclass(frozen=True)
class Spine:
    period: float  # mm, one vertebra + disc
    phase: float  # mm, z offset of the first disc
    radii: tuple[float, float]  # vertebral body half-width and half-depth, mm


@dataclass(frozen=True)
class Organs:
    kidneys: list[Kidney]  # right, left
    liver: list[Metaball]
    liver_wave: np.ndarray  # 6 phases of the lobulated surface's sine ripples
    spleen: Ellipsoid
    gallbladder: Ellipsoid
    pancreas: Tube
    uncinate: Tube
    ureters: list[Tube]
    muscles: list[Tube]  # psoas, quadratus lumborum, diaphragmatic crura


@dataclass(frozen=True)
class Vessels:
    aorta: Tube
    ivc: Tube
    celiac: list[Tube]  # trunk, common hepatic, splenic artery
    sma: Tube
    smv: Tube
    splenic_vein: Tube
    portal: list[Tube]
    hepatic: list[Tube]
    renal_veins: list[Tube]
    renal_arteries: list[Tube]


@dataclass(frozen=True)
class Bowel:
    stomach: Tube
    stomach_air: float
    duodenum: Tube
    colon: Tube
    colon_air: float
    small_bowel: list[BowelLoop]
    loop_weights: np.ndarray  # per loop id: dilution of the enteric contrast


@dataclass(frozen=True, eq=False)
class Layout:
    """Everything random about one patient's anatomy, drawn once (`_layout`), grid free."""

    body: Body
    diaphragm: Diaphragm
    spine: Spine
    z_lo: float  # scan range of a liver-to-kidneys exam, mm
    z_hi: float
    organs: Organs
    vessels: Vessels
    bowel: Bowel
    lesions: list[Lesion]
    cysts: list[Cyst]


def body_extent(patient: Patient) -> tuple[float, float, float]:
    """(half width, anterior y (negative), posterior y) of the body outline, anatomy mm."""
    b = _layout(patient).body
    return b.half_width * 1.02, -b.half_depth_ant * 1.06, b.posterior_y


def scan_range(patient: Patient) -> tuple[float, float]:
    """(z_lo, z_hi) anatomy mm of a liver-to-kidneys scan: lung bases to below the kidneys."""
    lay = _layout(patient)
    return lay.z_lo, lay.z_hi


def _walk(rng, start, n, step, lo, hi, persistence=0.7):
    pts = [np.asarray(start, dtype=float)]
    d = rng.normal(size=3)
    d /= np.linalg.norm(d)
    for _ in range(n):
        nd = rng.normal(size=3)
        nd /= np.linalg.norm(nd)
        d = persistence * d + (1.0 - persistence) * nd
        d /= np.linalg.norm(d)
        p = pts[-1] + step * d
        for k in range(3):  # reflect at the region walls
            if p[k] < lo[k] or p[k] > hi[k]:
                d[k] = -d[k]
                p[k] = min(max(p[k], lo[k]), hi[k])
        pts.append(p)
    return np.array(pts)


@lru_cache(maxsize=256)
def _layout(patient: Patient) -> Layout:
    a = patient.anatomy
    rng = np.random.default_rng(np.random.SeedSequence([patient.seed, 0xA4A7]))
    s = a.scale
    W = a.body_half_width
    Bant = a.body_half_depth_ant
    fat = a.subcut_fat_mm
    mus = a.muscle_mm
    ys = 0.2 * a.body_half_depth_ant + 5.0  # vertebral body centre
    ypost = ys + a.paraspinal_mm + 0.7 * a.subcut_fat_mm + 2.0
    obese = float(np.clip((patient.bmi - 27.0) / 10.0, 0.0, 1.0))
    D = a.dome_z_mm
    Dl = D - rng.uniform(8.0, 22.0)
    dome_r = (-55.0 * s + rng.normal(0, 5), ys - 35.0)
    dome_l = (60.0 * s + rng.normal(0, 5), ys - 30.0)
    dome_curv = rng.uniform(100.0, 140.0)
    z_lo = -rng.uniform(15.0, 35.0)
    z_hi = D + rng.uniform(12.0, 35.0)

    # Spine
    vert_period = 35.0 * s
    vert_phase = rng.uniform(0.0, vert_period)
    vert_r = (22.0 + rng.normal(0, 1.5), 16.0 + rng.normal(0, 1.0))

    # Kidneys: long axis tilted (upper pole medial and posterior), hilum facing anteromedially.
    kl = a.kidney_length_mm
    kidneys: list[Kidney] = []
    for side, zc in ((-1, kl / 2.0), (+1, a.kidney_drop_right_mm + kl / 2.0 + rng.normal(0, 3))):
        c = np.array([side * (72.0 + rng.normal(0, 5)), ys + 8.0 + rng.normal(0, 4), zc])
        R = _rot("z", -side * (32.0 + rng.normal(0, 6))) @ _rot("y", side * 12.0) @ _rot("x", 12.0)
        r = (27.0 + rng.normal(0, 2), 22.0 + rng.normal(0, 1.5), kl / 2.0)
        kidneys.append(Kidney(side, c, r, R))

    # Liver: metaballs (1/e radii), clipped by the abdominal wall and the diaphragm.
    ls = a.liver_scale
    ll = a.liver_left_lobe
    j = lambda sd: rng.normal(0, sd)  # noqa: E731
    liver = [
        Metaball(*m)
        for m in (
            ((-88 * s + j(5), ys - 12 + j(5), D - 62 * s + j(5)), (52 * ls, 52 * ls, 66 * ls), 1.0),
            ((-62 * s + j(5), -45 + j(6), D - 55 * s + j(5)), (55 * ls, 48 * ls, 52 * ls), 1.0),
            ((-18 * s + j(5), -62 + j(6), D - 42 * s + j(4)), (40 * ls, 36 * ls, 36 * ls), 0.9),
            (
                (22 * s + 30 * ll + j(5), -62 + j(5), D - 36 * s + j(4)),
                ((40 + 22 * ll) * ls, 26 * ls, 25 * ls),
                0.8,
            ),
            ((-24 + j(3), ys - 36 + j(3), D - 60 * s + j(4)), (16 * ls, 18 * ls, 32 * ls), 0.8),
            (
                (-100 * s + j(5), -15 + j(6), D - 118 * s + j(6)),
                (34 * ls, 38 * ls, 38 * ls),
                float(rng.uniform(0.3, 0.9)),
            ),
        )
    ]
    liver_wave = rng.uniform(0, 2 * np.pi, size=6)

    # Spleen: ellipsoid under the left dome along the posterolateral wall.
    ss = a.spleen_scale
    spleen = Ellipsoid(
        np.array([88.0 * s + j(4), ys + 25.0 + j(5), Dl - 45.0 * s + j(5)]),
        (20.0 * ss, 55.0 * ss, 50.0 * ss),
        _rot("z", 45.0 + j(8)) @ _rot("x", -15.0),
    )

    # Hollow organs and vessels: polylines (x, y, z) mm with radii.
    ar = a.aorta_radius_mm
    ya = ys - vert_r[1] - ar - 2.0  # aorta centre, just anterior-left of the body
    aorta = Tube(
        [(11, ya, -80), (13, ya, 60), (12, ya + 3, D - 20), (18, ys - 5, D + 60)],
        [ar * 1.0, ar * 1.05, ar * 1.12, ar * 1.2],
    )
    yi = ys - 14.0
    ivc = Tube(
        [(-24, yi, -80), (-26, yi - 4, 70), (-28, ys - 28, D - 80), (-18, ys - 36, D - 10),
         (-8, ys - 45, D + 40)],
        [10.5, 11.0, 12.0, 13.0, 14.0],
    )  # fmt: skip
    zc = 150.0 * s - 8.0  # celiac level (T12-L1)
    ya_front = ya - ar
    celiac = [
        ([(12, ya_front + 2, zc), (10, ya_front - 14, zc + 3)], [3.8, 3.8]),
        ([(10, ya_front - 14, zc + 3), (-15, ya_front - 18, zc + 2), (-38, ys - 48, zc - 2),
          (-42, ys - 52, zc + 14)], [3.0, 3.0, 2.8, 2.5]),
        ([(10, ya_front - 14, zc + 3), (40, ys - 35, zc + 5), (62, ys - 12, zc + 2),
          (80, ys + 8, zc + 6)], [3.0, 3.0, 2.8, 2.6]),
    ]  # fmt: skip
    zs = zc - 12.0  # SMA origin ~1 cm below the celiac trunk
    sma = Tube(
        [(12, ya_front + 2, zs), (9, ya_front - 16, zs - 12), (5, ya_front - 22, 50), (1, ya_front - 24, -80)],
        [4.2, 4.0, 3.6, 3.0],
    )  # fmt: skip
    zp = zs - 12.0  # portal confluence, behind the pancreatic neck
    conf = (-6.0, ya_front - 8.0, zp)
    smv = Tube([(-10, ya_front - 22, -80), (-9, ya_front - 20, 50), conf], [5.0, 5.5, 6.0])
    kr, kl_ = kidneys[0], kidneys[1]
    hil_l = kl_.centre + np.array([-25.0, -12.0, 0.0])
    hil_r = kr.centre + np.array([25.0, -12.0, 0.0])
    spl_h = spleen.centre + np.array([-22.0, -18.0, 0.0])
    splenic_vein = Tube(
        [tuple(spl_h), (60, ys - 12, zp + 14), (30, ya_front - 10, zp + 6), conf],
        [4.5, 4.5, 4.8, 5.5],
    )
    porta = (-40.0, ys - 45.0, zp + 32.0)
    portal = [
        ([conf, porta], [7.0, 7.0]),
        ([porta, (-78, ys - 30, porta[2] + 6), (-108, ys - 18, porta[2] + 2)], [5.5, 4.5, 3.0]),
        ([(-78, ys - 30, porta[2] + 6), (-82, -60, porta[2] + 14)], [4.0, 2.8]),
        ([porta, (-12, -60, porta[2] + 12), (22 + 20 * ll, -62, porta[2] + 20)], [5.0, 4.0, 2.6]),
        ([(-78, ys - 30, porta[2] + 6), (-90, ys - 10, porta[2] + 35)], [3.5, 2.5]),
    ]
    hv0 = (-20.0, ys - 32.0, D - 28.0 * s)
    hepatic = [
        ([hv0, (-70, ys - 25, D - 45 * s), (-115, ys - 20, D - 60 * s)], [6.0, 4.5, 2.5]),
        ([hv0, (-45, -45, D - 45 * s), (-55, -85, D - 65 * s)], [5.5, 4.0, 2.5]),
        ([hv0, (0, -45, D - 35 * s), (20, -75, D - 45 * s)], [5.0, 3.8, 2.2]),
    ]
    zr_l, zr_r = kl_.centre[2] + 8.0, kr.centre[2] + 6.0
    renal_veins = [
        ([tuple(hil_l), (35, ya_front - 2, zr_l + 4), (12, ya_front - 7, zr_l + 6),
          (-22, yi - 4, zr_l + 4)], [4.5, 5.0, 4.2, 5.0]),
        ([tuple(hil_r), (-30, yi - 2, zr_r + 4)], [4.8, 5.5]),
    ]  # fmt: skip
    renal_arteries = [
        ([(13, ya, zr_l + 12), (40, ys - 3, zr_l + 6), tuple(hil_l + [0, 6, 0])], [3.0, 2.8, 2.5]),
        ([(10, ya, zr_r + 16), (-25, ys - 6, zr_r + 10), tuple(hil_r + [0, 6, 0])], [3.0, 2.8, 2.5]),
    ]  # fmt: skip
    ureters = [
        ([tuple(hil_l + [5, 2, -8]), (42, ys + 0, 25), (40, ys - 5, -80)], [3.5, 2.2, 2.2]),
        ([tuple(hil_r + [-5, 2, -8]), (-42, ys + 0, 15), (-40, ys - 5, -80)], [3.5, 2.2, 2.2]),
    ]
    psoas = [
        ([(side * 22, ys - 2, zc - 25), (side * 38, ys + 2, 40), (side * 50, ys - 2, -80)],
         [5.0, 17.0 + 0.25 * a.muscle_mm, 24.0 + 0.3 * a.muscle_mm])
        for side in (-1, 1)
    ]  # fmt: skip
    quadratus = [
        ([(side * 52, ys + 38, zc - 30), (side * 62, ys + 40, -80)], [7.0, 13.0]) for side in (-1, 1)
    ]  # fmt: skip
    crura = [
        ([(side * 16, ya + 2, D - 40), (side * 14, ya + 8, zc - 10), (side * 10, ys - 10, 70)],
         [5.0, 5.0, 3.0])
        for side in (-1, 1)
    ]  # fmt: skip
    pancreas = Tube(
        [(-40, ya_front - 4, zp - 15), (-26, ya_front - 16, zp - 2), (-6, ya_front - 22, zp + 2),
         (25, ya_front - 20, zp + 8), (58, ys - 22, zp + 14), tuple(spl_h + [-8, -4, -4])],
        [15.0, 13.0, 10.0, 11.0, 10.0, 8.0],
    )  # fmt: skip
    uncinate = Tube([(-22, ya_front - 2, zp - 16), (-8, ya_front, zp - 20)], [8.0, 6.0])
    gz = a.dome_z_mm - 100.0 * s
    gallbladder = Ellipsoid(
        np.array([-48.0 + j(6), -48.0 + j(6), gz + j(6)]),
        (15.0 + j(2), 17.0 + j(2), 36.0 + j(4)),
        _rot("x", 40.0 + j(8)) @ _rot("y", -15.0),
    )
    ld = Dl
    stomach = Tube(
        [(55, ys - 10, ld - 28), (48, ys - 45, ld - 55), (25, -70, zp + 22), (-2, -75, zp + 14),
         (-24, -62, zp + 14)],
        [38.0, 36.0, 28.0, 20.0, 11.0],
    )  # fmt: skip
    dz = zp - 5.0
    duodenum = Tube(
        [(-24, -62, zp + 14), (-48, -45, zp + 12), (-60, ya_front - 10, dz), (-58, ya_front - 8, dz - 35),
         (-25, ya_front - 10, dz - 45), (8, ya_front - 14, dz - 46), (28, ya_front - 16, dz - 30),
         (38, -45, dz - 15)],
        [12.0, 13.0, 13.0, 13.0, 12.0, 11.0, 11.0, 11.0],
    )  # fmt: skip
    inner_x = W - a.subcut_fat_mm - a.muscle_mm - 10.0
    cx = 0.8 * inner_x
    colon = Tube(
        [(-cx, ys - 15, -80), (-cx, ys - 20, 40), (-cx + 10, -40, 95), (-40, -75, 85),
         (30, -75, 92), (cx - 10, -30, Dl - 75), (cx, ys - 5, 90), (cx - 5, ys - 10, -80)],
        [22.0, 24.0, 22.0, 20.0, 20.0, 22.0, 18.0, 17.0],
    )  # fmt: skip
    colon_air = float(rng.uniform(0.15, 0.45))
    stomach_air = float(rng.uniform(0.1, 0.4))

    # Small bowel: random walks through the free anterior/lower abdomen.
    lo = np.array([-0.65 * inner_x, -Bant + a.subcut_fat_mm + a.muscle_mm + 20, z_lo - 40])
    hi = np.array([0.65 * inner_x, ys - 20.0, zp - 10.0])
    n_loops = int(round(11 - 5 * a.visceral_fat))
    small_bowel: list[BowelLoop] = []
    for k in range(n_loops):
        start = lo + rng.random(3) * (hi - lo)
        n_seg = int(rng.integers(14, 24))
        pts = _walk(rng, start, n_seg, 18.0, lo, hi)
        r = float(rng.uniform(9.0, 13.0))
        small_bowel.append(
            BowelLoop(pts, [r] * len(pts), float(rng.uniform(0, a.bowel_gas)), k + 2)
        )
    loop_weights = np.concatenate([[1.0, 1.0], rng.uniform(0.5, 1.5, size=n_loops)])

    # Confounder lesions and cysts (centres inside the liver or a kidney).
    lesions: list[Lesion] = []
    for _ in range(patient.confounders.n_lesions):
        c, r, _w = liver[int(rng.integers(0, 3))]
        p = np.array(c) + rng.uniform(-0.45, 0.45, 3) * np.array(r)
        lesions.append(Lesion(p, float(rng.uniform(6.0, 18.0))))
    cysts: list[Cyst] = []
    for _ in range(patient.confounders.n_cysts):
        if rng.random() < 0.5:
            c, r, _w = liver[int(rng.integers(0, 3))]
            p = np.array(c) + rng.uniform(-0.45, 0.45, 3) * np.array(r)
            cysts.append(Cyst(p, float(rng.uniform(5.0, 18.0)), (L.LIVER,)))
        else:
            _side, c, r, R = kidneys[int(rng.integers(0, 2))]
            p = c + R @ (rng.uniform(-0.6, 0.6, 3) * np.array(r))
            cysts.append(
                Cyst(p, float(rng.uniform(5.0, 14.0)), (L.KIDNEY_CORTEX, L.KIDNEY_MEDULLA))
            )
    # The central tendon from a random stream of its own, so that every other draw (and so
    # every other organ of every patient) stays as it was.
    trng = np.random.default_rng(np.random.SeedSequence([patient.seed, 0xCE47]))
    tendon_z = D - float(trng.uniform(35.0, 50.0))
    tendon_xy = (20.0 + float(trng.normal(0.0, 6.0)), -0.45 * Bant)
    # One scan in five starts below the liver dome, as liver-protocol scans often do (the
    # slab then runs to the top of the scan, as `phasejax.data.prepare.find_slab` does for
    # real scans without lung bases). The tendon lies 35-50 mm below the dome, so the top
    # input slice still cuts the heart, nearer its lower pole and with less lung around it.
    if trng.random() < 0.2:
        z_hi = D - float(trng.uniform(0.0, 30.0))
    return Layout(
        body=Body(
            scale=s,
            half_width=W,
            half_depth_ant=Bant,
            fat_mm=fat,
            muscle_mm=mus,
            spine_y=ys,
            posterior_y=ypost,
            obese=obese,
        ),
        diaphragm=Diaphragm(
            right_z=D,
            left_z=Dl,
            right_dome=dome_r,
            left_dome=dome_l,
            curvature=dome_curv,
            tendon_z=tendon_z,
            tendon_xy=tendon_xy,
            tendon_radius=45.0,
        ),
        spine=Spine(period=vert_period, phase=vert_phase, radii=vert_r),
        z_lo=z_lo,
        z_hi=z_hi,
        organs=Organs(
            kidneys=kidneys,
            liver=liver,
            liver_wave=liver_wave,
            spleen=spleen,
            gallbladder=gallbladder,
            pancreas=pancreas,
            uncinate=uncinate,
            ureters=_tubes(ureters),
            muscles=_tubes(psoas + quadratus + crura),
        ),
        vessels=Vessels(
            aorta=aorta,
            ivc=ivc,
            celiac=_tubes(celiac),
            sma=sma,
            smv=smv,
            splenic_vein=splenic_vein,
            portal=_tubes(portal),
            hepatic=_tubes(hepatic),
            renal_veins=_tubes(renal_veins),
            renal_arteries=_tubes(renal_arteries),
        ),
        bowel=Bowel(
            stomach=stomach,
            stomach_air=stomach_air,
            duodenum=duodenum,
            colon=colon,
            colon_air=colon_air,
            small_bowel=small_bowel,
            loop_weights=loop_weights,
        ),
        lesions=lesions,
        cysts=cysts,
    )


def _tubes(polylines: list[tuple[list, list[float]]]) -> list[Tube]:
    return [Tube(pts, radii) for pts, radii in polylines]


# ---------------------------------------------------------------------------------------
# Painting


def _diaphragm(lay: Layout, X2: np.ndarray, Y2: np.ndarray) -> np.ndarray:
    """Height (mm) of the diaphragm over each (x, y): two domes, deeper recesses posteriorly."""
    d = lay.diaphragm
    k = d.curvature
    yr = np.where(d.right_dome[1] < Y2, 0.6 * k, k)
    zr = d.right_z - ((X2 - d.right_dome[0]) ** 2 + (Y2 - d.right_dome[1]) ** 2 * (k / yr)) / (
        2 * k
    )
    zl = d.left_z - ((X2 - d.left_dome[0]) ** 2 + (Y2 - d.left_dome[1]) ** 2 * (k / yr)) / (2 * k)
    # the posterior costophrenic recesses reach down to ~L1 (about the upper renal poles)
    domes = np.maximum(np.maximum(zr, zl), d.right_z - 85.0 * lay.body.scale)
    tx, ty = d.tendon_xy
    bowl = d.tendon_z + ((X2 - tx) ** 2 + (Y2 - ty) ** 2) / (2 * d.tendon_radius)
    return np.minimum(domes, bowl)


_LAYER_LUT = np.array([L.SKIN, L.FAT_SUBCUT, L.MUSCLE, L.FAT_VISCERAL], dtype=np.uint8)


def _body(cv: _Canvas, lay: Layout) -> np.ndarray:
    """Skin, subcutaneous fat, wall muscle, cavity; lungs above the diaphragm; ribs."""
    X = cv.x[None, :]
    Y = cv.y[:, None]
    zd = _diaphragm(lay, X, Y).astype(np.float32)  # [H, W]
    r = (np.sqrt(X * X + Y * Y) + np.float32(1e-3)).astype(np.float32)
    ny = Y / r
    # Subcutaneous fat thicker anteriorly, wall muscle thinner posteriorly (the back muscles
    # are drawn separately). Thresholds on the depth below the skin, mm.
    t_skin = np.float32(2.0)
    t_fat = (2.0 + lay.body.fat_mm * (1.0 - 0.3 * ny)).astype(np.float32)
    t_mus = (t_fat + lay.body.muscle_mm * (1.0 - 0.5 * np.clip(ny, 0.0, None))).astype(np.float32)
    alba = (np.abs(X) < 4.0) & (ny < -0.9)  # linea alba: a fat gap between the recti
    # mediastinum in front of the spine and the paravertebral gutter behind it: no lung
    medi = (np.abs(X - 5.0) < 28.0) & (lay.body.spine_y + 5.0 > Y) & (lay.body.spine_y - 60.0 < Y)
    medi |= (np.abs(X) < 32.0) & (lay.body.spine_y - 5.0 < Y)
    kk = np.where(Y > 0, np.float32(0.45), np.float32(0.12)).astype(np.float32)  # [H, 1]
    X2 = X * X
    Y2 = Y * Y
    rings = []
    for k, z in enumerate(cv.z):
        zf = float(z)
        a = lay.body.half_width * (1.0 - 0.04 * min(max((zf - 100.0) / 150.0, -1.0), 1.0))
        bant = lay.body.half_depth_ant * (
            1.0 + 0.06 * lay.body.obese * min(max((80.0 - zf) / 100.0, 0.0), 1.0)
        )
        b2 = np.where(Y < 0, np.float32(bant * bant), np.float32(lay.body.posterior_y**2))
        u = X2 / np.float32(a * a)  # [1, W]
        v = Y2 / b2  # [H, 1]
        rho2 = u + v * (1.0 - kk * u)  # a squarer outline posteriorly (supine on the table)
        inside = rho2 < 1.0
        rho = np.sqrt(np.maximum(rho2, np.float32(1e-9)))
        depth = r / rho - r  # along-ray distance to the outline
        level = (depth >= t_skin).view(np.uint8) + (depth >= t_fat).view(np.uint8)
        level += (depth >= t_mus).view(np.uint8)
        lab = _LAYER_LUT[level]
        lab[~inside] = int(L.BACKGROUND)
        lab[(level == 2) & alba] = int(L.FAT_SUBCUT)
        cavity = inside & (level == 3)
        above = zd < np.float32(zf - 3.0)
        lab[cavity & above & ~medi] = int(L.LUNG)
        lab[cavity & ~above & (zd < np.float32(zf + 1.0))] = int(L.MUSCLE)  # diaphragm
        cv.lab[k] = lab
        if zf > 60.0 * lay.body.scale:
            band = (depth > t_fat + 0.3 * lay.body.muscle_mm) & (depth < t_mus + 1.0) & inside
            rings.append((k, band))
    _ribs(cv, lay, rings)
    return zd


def _ribs(cv: _Canvas, lay: Layout, rings: list[tuple[int, np.ndarray]]) -> None:
    """Ribs 12 up to 6 as discrete oblique cross-sections in the inner chest wall."""
    X = np.broadcast_to(cv.x[None, :], (cv.y.size, cv.x.size))
    Y = np.broadcast_to(cv.y[:, None], (cv.y.size, cv.x.size))
    for k, band in rings:
        iy, ix = np.nonzero(band)
        if iy.size == 0:
            continue
        zf = float(cv.z[k])
        phi = np.arctan2(
            np.abs(X[iy, ix]), Y[iy, ix] - lay.body.spine_y
        )  # 0 posterior .. pi anterior
        hit = np.zeros(iy.size, dtype=bool)
        for i in range(7):
            z0 = (95.0 + i * 24.0) * lay.body.scale
            phi_max = 1.7 + 0.2 * i if i < 2 else 2.2 + 0.12 * i  # 11, 12 are floating ribs
            # ribs run down from the spine to the front: ~10 cm drop over the half turn
            zr = z0 - 100.0 * lay.body.scale * (phi / np.pi) ** 1.2
            hit |= (np.abs(zf - zr) < 4.5) & (phi < phi_max) & (phi > 0.35)
        cv.lab[k][iy[hit], ix[hit]] = int(L.RIB)


def _spine(cv: _Canvas, lay: Layout) -> None:
    ys = lay.body.spine_y
    rx, ry = lay.spine.radii
    b = cv.box((-60, ys - ry - 2, -1e4), (60, lay.body.posterior_y, 1e4))
    if b is None:
        return
    sl, X, Y, Z = b
    per = lay.spine.period
    ph = np.mod(Z - lay.spine.phase, per)  # [Z,1,1]
    disc = ph < 8.0
    grow = 1.0 + 0.0015 * np.clip(150.0 - Z, 0.0, None)  # lumbar bodies are larger
    rho = np.sqrt((X / (rx * grow)) ** 2 + ((Y - ys) / (ry * grow)) ** 2)
    body = rho <= 1.0
    # cortical shell radially only: a 1 mm endplate would fill a whole thick slice
    cort = body & (rho > 0.88)
    cv.paint(sl, body & ~disc & ~cort, L.VERTEBRA)
    cv.paint(sl, body & ~disc & cort, L.BONE_CORTICAL)
    cv.paint(sl, body & disc, L.DISC)
    # posterior arch around the canal, spinous and transverse processes (not at disc level)
    yc = ys + ry + 13.0
    rc = np.sqrt((X / 10.0) ** 2 + ((Y - yc) / 8.5) ** 2)
    canal = rc <= 1.0
    arch = (rc > 1.0) & (rc <= 1.75) & (ys + ry - 2.0 < Y)
    spinous = (np.abs(X) < 4.0 + 0.05 * (Y - yc)) & (yc + 10.0 < Y) & (yc + 40.0 > Y)
    transverse = (np.abs(Y - (yc - 3.0)) < 5.0) & (np.abs(X) < 48.0) & (np.abs(X) > 10.0)
    level = (ph > 4.0) & (ph < per - 8.0)
    upper = (ph > 14.0) & (ph < per - 8.0)
    post = (arch & level) | (spinous & level) | (transverse & upper)
    cv.paint(sl, post, L.VERTEBRA)
    cv.paint(sl, post & (np.abs(rc - 1.75) < 0.2), L.BONE_CORTICAL)
    cv.paint(sl, np.broadcast_to(canal, np.broadcast_shapes(canal.shape, ph.shape)), L.SPINAL_CANAL)
    # paraspinal muscles either side of the spinous process
    for side in (-1, 1):
        rp = ((X - side * 30.0) / 28.0) ** 2 + ((Y - (yc + 24.0)) / 26.0) ** 2
        cv.paint(sl, np.broadcast_to(rp <= 1.0, Z.shape[:1] + rp.shape[1:]), L.MUSCLE,
                 only=(L.FAT_VISCERAL, L.LUNG))  # fmt: skip


def _liver(cv: _Canvas, lay: Layout, zd: np.ndarray) -> None:
    blobs = lay.organs.liver
    lo = np.min([np.array(c) - 1.6 * np.array(r) for c, r, _ in blobs], axis=0)
    hi = np.max([np.array(c) + 1.6 * np.array(r) for c, r, _ in blobs], axis=0)
    hi[2] = min(hi[2], lay.diaphragm.right_z + 2.0)
    b = cv.box(lo, hi)
    if b is None:
        return
    sl, X, Y, Z = b
    f = np.zeros(np.broadcast_shapes(X.shape, Y.shape, Z.shape), dtype=np.float32)
    for c, r, w in blobs:
        f += np.float32(w) * np.exp(-_ellipsoid_rho2(X, Y, Z, c, r)).astype(np.float32)
    ph = lay.organs.liver_wave
    f += 0.06 * np.sin(X / 37.0 + ph[0]) * np.sin(Y / 41.0 + ph[1])
    f += 0.06 * np.sin(Z / 33.0 + ph[2]) * np.sin(X / 29.0 + ph[3])
    below = zd[sl[1], sl[2]][None] - 1.0 > Z
    cv.paint(sl, (f > 0.5) & below, L.LIVER, only=_FAT)


def _kidneys(cv: _Canvas, lay: Layout) -> None:
    for side, c, r, R in lay.organs.kidneys:
        ext = max(r)
        b = cv.box(c - ext, c + ext)
        if b is None:
            continue
        sl, X, Y, Z = b
        dx, dy, dz = X - c[0], Y - c[1], Z - c[2]
        u = R[0, 0] * dx + R[1, 0] * dy + R[2, 0] * dz  # + lateral... (side-dependent)
        v = R[0, 1] * dx + R[1, 1] * dy + R[2, 1] * dz
        w = R[0, 2] * dx + R[1, 2] * dy + R[2, 2] * dz
        um = u * side  # + lateral, - medial (towards the hilum)
        rho2 = (u / r[0]) ** 2 + (v / r[1]) ** 2 + (w / r[2]) ** 2
        kid = rho2 <= 1.0
        sinus = ((um + 13.0) / 15.0) ** 2 + (v / 11.0) ** 2 + (w / (0.55 * r[2])) ** 2 <= 1.0
        pelvis = ((um + 16.0) / 10.0) ** 2 + (v / 6.5) ** 2 + (w / (0.3 * r[2])) ** 2 <= 1.0
        calyx = ((um + 4.0) / 4.0) ** 2 + (v / 4.0) ** 2 + (
            (np.abs(w) - 0.45 * r[2]) / (0.15 * r[2])
        ) ** 2 <= 1.0
        psi = np.arctan2(w / r[2], v / r[1])
        pyramids = (rho2 < 0.72**2) & (rho2 > 0.3**2) & (np.cos(4.0 * psi + 0.5) > -0.35)
        cv.paint(sl, kid, L.KIDNEY_CORTEX, only=_FAT)
        ok = (L.KIDNEY_CORTEX,)
        cv.paint(sl, kid & pyramids & ~sinus, L.KIDNEY_MEDULLA, only=ok)
        cv.paint(sl, sinus & kid, L.FAT_VISCERAL, only=ok)
        ok2 = (L.KIDNEY_CORTEX, L.FAT_VISCERAL, L.KIDNEY_MEDULLA)
        cv.paint(sl, (pelvis | (calyx & sinus)), L.KIDNEY_COLLECTING, only=ok2)


def _spleen(cv: _Canvas, lay: Layout, zd: np.ndarray) -> None:
    c, r, R = lay.organs.spleen
    ext = max(r)
    b = cv.box(c - ext, c + ext)
    if b is None:
        return
    sl, X, Y, Z = b
    rho2 = _ellipsoid_rho2(X, Y, Z, c, r, R)
    hilum = c + np.array([-30.0, -22.0, 0.0])
    notch = ((X - hilum[0]) ** 2 + (Y - hilum[1]) ** 2) / 24.0**2 + ((Z - hilum[2]) / 40.0) ** 2
    below = zd[sl[1], sl[2]][None] - 1.0 > Z
    cv.paint(sl, (rho2 <= 1.0) & (notch > 1.0) & below, L.SPLEEN, only=_FAT)


def _heart(cv: _Canvas, lay: Layout, zd: np.ndarray) -> None:
    # Resting on the central tendon: its lower pole a tenth of its height below the tendon
    # (the part below is cut off by the diaphragm), so that the top input slice, at the
    # liver dome, cuts the ventricles as on real CT.
    r = (62.0, 48.0, 55.0)
    d = lay.diaphragm
    c = np.array([d.tendon_xy[0], d.tendon_xy[1], d.tendon_z - 0.2 * r[2] + r[2]])
    b = cv.box(c - np.array(r) - 8, c + np.array(r) + 8)
    if b is None:
        return
    sl, X, Y, Z = b
    rho2 = _ellipsoid_rho2(X, Y, Z, c, r)
    above = zd[sl[1], sl[2]][None] + 3.0 < Z
    ok = (L.LUNG, L.FAT_VISCERAL)
    cv.paint(sl, (rho2 <= 1.25) & above, L.FAT_VISCERAL, only=ok)  # pericardial fat
    cv.paint(sl, (rho2 <= 1.0) & above, L.MUSCLE, only=ok)  # myocardium
    cv.paint(sl, (rho2 <= 0.72) & above, L.HEART, only=(L.MUSCLE,))


def _shapes(cv: _Canvas, lay: Layout, patient: Patient, zd: np.ndarray) -> None:
    # First painted wins (later organs fill visceral fat only): retroperitoneum first,
    # then the fixed upper-abdominal organs, the liver moulding around them, bowel last.
    _spine(cv, lay)
    _kidneys(cv, lay)
    for pts, rad in lay.organs.muscles:
        _tube(cv, pts, rad, L.MUSCLE, only=_FAT)
    _heart(cv, lay, zd)
    _tube(cv, *lay.vessels.aorta, L.AORTA, never=(L.VERTEBRA, L.BONE_CORTICAL, L.DISC))
    _tube(cv, *lay.vessels.ivc, L.IVC, only=(L.FAT_VISCERAL, L.MUSCLE, L.LUNG))
    _spleen(cv, lay, zd)
    _tube(cv, *lay.organs.pancreas, L.PANCREAS, only=_FAT)
    _tube(cv, *lay.organs.uncinate, L.PANCREAS, only=_FAT)
    _hollow(cv, *lay.bowel.duodenum, L.DUODENUM, L.BOWEL_CONTENT, wall_mm=3.0, air_frac=0.15,
            loop_id=1)  # fmt: skip
    _hollow(cv, *lay.bowel.stomach, L.STOMACH, L.BOWEL_CONTENT, wall_mm=4.0,
            air_frac=lay.bowel.stomach_air, loop_id=1)  # fmt: skip
    c, r, R = lay.organs.gallbladder
    _ellipsoid(cv, c, r, L.GALLBLADDER, R=R, only=_FAT)
    _liver(cv, lay, zd)
    _hollow(cv, *lay.bowel.colon, L.COLON, L.FECES, wall_mm=3.0, air_frac=lay.bowel.colon_air)
    for pts, rad, air, lid in lay.bowel.small_bowel:
        _hollow(cv, pts, rad, L.SMALL_BOWEL, L.BOWEL_CONTENT, wall_mm=2.5, air_frac=air,
                loop_id=lid)  # fmt: skip
    # vessels over the organs they run through
    soft = (L.FAT_VISCERAL, L.PANCREAS, L.SMALL_BOWEL, L.BOWEL_CONTENT, L.DUODENUM)
    for pts, rad in lay.vessels.celiac:
        _tube(cv, pts, rad, L.CELIAC_SMA, only=soft + (L.LIVER,))
    _tube(cv, *lay.vessels.sma, L.CELIAC_SMA, only=soft)
    _tube(cv, *lay.vessels.smv, L.SMV, only=soft)
    _tube(cv, *lay.vessels.splenic_vein, L.SPLENIC_VEIN, only=soft + (L.SPLEEN,))
    for pts, rad in lay.vessels.portal:
        _tube(cv, pts, rad, L.PORTAL_VEIN, only=soft + (L.LIVER,))
    for pts, rad in lay.vessels.hepatic:
        _tube(cv, pts, rad, L.HEPATIC_VEIN, only=(L.LIVER,))
    kid = (L.FAT_VISCERAL, L.KIDNEY_CORTEX, L.KIDNEY_MEDULLA, L.MUSCLE)
    for pts, rad in lay.vessels.renal_arteries:
        _tube(cv, pts, rad, L.RENAL_ARTERY, only=kid)
    for pts, rad in lay.vessels.renal_veins:
        _tube(cv, pts, rad, L.RENAL_VEIN, only=kid + (L.CELIAC_SMA,))
    for pts, rad in lay.organs.ureters:
        _tube(cv, pts, rad, L.KIDNEY_COLLECTING, only=_FAT)
    # confounders
    for p, rr in lay.lesions:
        _ellipsoid(cv, p, (rr, rr * 0.9, rr * 0.95), L.LIVER_LESION, only=(L.LIVER,))
    for p, rr, organs in lay.cysts:
        _ellipsoid(cv, p, (rr, rr, rr), L.CYST, only=organs)


def _correlated_noise(shape, sigma_px: float, rng) -> np.ndarray:
    """Unit-SD Gaussian noise, correlated in plane over ~sigma_px (float32 [Z, H, W])."""
    k = gauss_kernel(sigma_px)
    gain = np.float32(np.sum(k.astype(np.float64) ** 2))
    out = np.empty(shape, dtype=np.float32)
    for z0 in range(0, shape[0], 8):
        n = rng.standard_normal((min(8, shape[0] - z0),) + tuple(shape[1:]), dtype=np.float32)
        out[z0 : z0 + n.shape[0]] = blur_inplane(n, k) / gain
    return out


def _build(patient: Patient, grid: Grid) -> LabelMap:
    lay = _layout(patient)
    cv = _Canvas(patient, grid)
    zd = _body(cv, lay)
    _shapes(cv, lay, patient, zd)
    labels = cv.lab
    rng = np.random.default_rng(np.random.SeedSequence([patient.seed, 0x7E47]))
    texture = _correlated_noise(grid.shape, 1.6 / grid.spacing[1], rng)
    flat_tex = texture.reshape(-1)

    def where(label: Label) -> np.ndarray:
        idx = np.flatnonzero(labels == int(label))
        return idx.astype(np.int32) if labels.size < 2**31 else idx

    # Arciform spleen: curved bands of fast- and slow-enhancing pulp, concentric about the
    # hilum (~1 cm wide), wavy along the arc and slightly broken up by the texture.
    idx = where(L.SPLEEN)
    if idx.size:
        kz, ky, kx = np.unravel_index(idx, grid.shape)
        c = lay.organs.spleen.centre + np.array([-30.0, -22.0, 0.0])
        dx, dy, dz = cv.x[kx] - c[0], cv.y[ky] - c[1], cv.z[kz] - c[2]
        dist = np.sqrt(dx * dx + dy * dy + dz * dz)
        theta = np.arctan2(dy, dx)
        phase = 2 * np.pi * dist / 18.0 + 1.5 * np.sin(3.0 * theta + dz / 15.0)
        pattern = np.sin(phase + 0.5 * flat_tex[idx]).astype(np.float32)
        spleen = (idx, pattern)
    else:
        spleen = (idx, np.zeros(0, np.float32))
    idx = where(L.BOWEL_CONTENT)
    content = (idx, lay.bowel.loop_weights[cv.aux.reshape(-1)[idx]].astype(np.float32))
    idx = where(L.FECES)
    tex = flat_tex[idx]
    gas = tex > 1.1
    feces = (idx[gas], np.clip(tex[gas] - 1.1, 0, 3).astype(np.float32))
    dynamic = {}
    for lab in DYNAMIC_TEXTURE:
        idx = where(lab)
        dynamic[int(lab)] = (idx, flat_tex[idx].copy())
    # Texture in HU, stored as float16 to halve the cache (1-mm series are ~65 M voxels);
    # HU texture is within +-400, where float16 resolves 0.25 HU.
    texture_hu = np.empty(grid.shape, dtype=np.float16)
    for z0 in range(0, grid.shape[0], 8):
        sl = slice(z0, z0 + 8)
        texture_hu[sl] = texture[sl] * TEXTURE_SD[labels[sl]]
    del texture, flat_tex
    for arr in (labels, texture_hu):
        arr.setflags(write=False)
    return LabelMap(
        labels=labels,
        texture_hu=texture_hu,
        dynamic_texture=dynamic,
        spleen_pattern=spleen,
        content_weight=content,
        feces_gas=feces,
    )


_CACHE: OrderedDict = OrderedDict()
_CACHE_SIZE = 2  # an exam's phases share one grid; two entries cover interleaved use


def label_map(patient: Patient, grid: Grid) -> LabelMap:
    """The (cached) label map of `patient` on `grid`; arrays are read-only."""
    key = (patient, grid)
    hit = _CACHE.get(key)
    if hit is not None:
        _CACHE.move_to_end(key)
        return hit
    lm = _build(patient, grid)
    _CACHE[key] = lm
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return lm


def clear_cache() -> None:
    _CACHE.clear()


__all__ = ["LabelMap", "blur_inplane", "body_extent", "clear_cache", "gauss_kernel", "label_map",
           "scan_range"]  # fmt: skip
