"""`phasejax prepare`: real CT (DICOM / NIfTI under a root) + a labels CSV -> prepared cache.

Each series is decoded once, resampled with `phasejax.data.cache.resample_to_cache`
and written with `write_entry`; `finalize` writes the manifest. Work runs over
worker processes with a progress bar; a rerun skips series already in the cache
(`has_entry`), so an interrupted job resumes and a finished one is a no-op (a row
whose label, patient, site or split changed is rewritten without decoding again).

Labels CSV (header row required). A row names a series by the first of:

- `series_id`: the phasejax id (as printed by `phasejax inspect`);
- `path`: the series folder relative to --root (or absolute), or one of its files,
  or a NIfTI file;
- `series_uid`: the SeriesInstanceUID;

optionally narrowed by `acquisition` (needed when one UID or folder holds several
acquisitions). `phase` holds any word `phasejax.phases.phase_from_word` accepts
("arterial", "PVP", "delayed"...). Optional: `patient_id` (else the DICOM
PatientID, else the series id: one patient per series), `site`, `split` (train |
val | test | external: fixes that patient's split instead of the seeded draw).
Other columns are carried into the manifest as text (e.g. `seconds`, `kvp`).
An unknown phase word, an unknown split, a row that matches several series or
two rows that give one series different phases raise `LabelsError` naming the
CSV line. Rows that match nothing are reported, not fatal. The CSV is UTF-8 (a
byte-order mark is allowed); another encoding is a `LabelsError` naming the first
line that is not UTF-8.

Splits are per patient (`assign_splits`, seeded; recorded in cache.json), so no
patient is in two splits.

Liver-to-kidney slab (`z_lo`, `z_hi`, cached slice indices, `z_method` column): the
anatomy the model was trained on, since the synthetic cohort's slab runs from the
kidneys' lowest to the liver's highest slice (from its organ masks,
`phasejax.cohort.render.liver_kidney_range`). `cache_volume` first brings every series
into cache orientation (`to_cache_orientation`: axial, slice 0 most inferior, rows
anterior to posterior, columns patient right to left; a coronal or sagittal
acquisition is permuted and flipped by its LPS direction cosines), resamples it, then
`find_slab` looks for two landmarks that do not depend on each other, the lungs (for the
dome) and the kidneys:

- Lung bases. Supine patients' bowel gas rises anteriorly while the lung bases sit in
  the posterior costophrenic recesses, so a slice whose posterior half holds air inside
  the body on both sides (>= 3% of the body area in total, >= 1% on each side) is a
  lung-base slice. The lowest slice of a run of them that has abdomen below it and
  reaches the top of the scan (or is >= 60 mm long: a scan that starts at the neck) is
  the lung base.
- Liver dome, from there: going up, the first slice where a box in the right
  hemithorax (10-50% of the body's depth from the front, 12-40% of its width from the
  patient's right side: lateral to the heart, medial to the ribs) holds at least half
  as much air as it does at most higher up: below the dome the liver fills the box,
  above it the right lung. The posterior recesses reach well below the dome (25-65 mm
  on the real scans under ../shared/data, read by eye), hence the second step. On
  those scans this is 0-3 slices (5-15 mm) below the hand-read dome; when the box never
  holds 20% air above the bases (no chest above them), 30 mm above the bases
  (assumption).
- Kidneys, lower poles. On each slice, relative to the vertebral body (the largest bone
  region near the midline in the posterior half of the body), a kidney section is an
  oval (axis ratio <= 2.5) blob of 3-30 cm^2 centred 50-120 mm lateral and 50 mm
  anterior to 30 mm posterior of the vertebral body's centre (psoas medial, colon lateral
  or anterior), that is either enhanced (>= 125 HU after a 3x3 median, not bone inside
  its cortex: renal parenchyma enhances more than muscle, bowel wall and, below the
  liver, anything else there; an enhanced blob too large for a kidney, a kidney merged with
  a portal-venous liver or spleen, is split at 175 then 225 HU, `SPLIT_HU`) or, without
  contrast, at unenhanced-kidney density (mean
  15-45 HU: kidney ~30 HU, muscle 45-60 HU) and ringed by fat (>= 40% of a 2-6 mm
  ring). A kidney run is a run of slices with a section on either side (gaps of up to 2
  slices) that shows both kidneys on >= 2 slices; from its lowest and highest such
  slices each kidney is followed towards its poles through sections down to 1.5 cm^2
  whose centre moves < 30 mm a slice (up to 3 slices without one). Of several runs
  (paired bowel loops, iliac wings), the longest, ties going to the higher.

The slab is [kidneys' lowest slice, dome] ("lung+kidney"). Without kidneys, or with
kidneys not 80-260 mm below the dome, it runs 180 mm down from the dome ("lung": on the
real scans here the kidneys' lower poles were 150-195 mm below the dome, on the
synthetic cohort about 175-215 mm). Without lung bases (the scan starts below the
diaphragm) it runs from the kidneys' lowest slice to the top of the scan, at most 260 mm
("kidney"); with neither landmark the central 60% of the slices is used ("central").
The slab is clipped to the scan. Measured: on all 15 real series under ../shared/data
(hand-read slices in tests/test_slab.py) the kidney end is within one cached slice and
the dome within three; on a tiny synthetic cohort at 192 px 35 of 36 series are within
15 mm of the mask-derived slab at both ends (the miss: an early-arterial series with
faint cortex, slab 35 mm short at the kidney end). It costs 5-10 ms per cached slice
(numpy/scipy; ~0.5 s for 98 slices on the loaded shared 2-core machine), paid once per
series by `prepare` and by `phasejax predict`.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from phasejax.data.cache import (
    REQUIRED_COLUMNS,
    SPLITS,
    CacheSpec,
    assign_splits,
    finalize,
    has_entry,
    init_cache,
    load_volume,
    resample_to_cache,
    write_entry,
)
from phasejax.data.dicom import Skipped, slice_normal
from phasejax.data.discover import (
    NiftiPlan,
    Plan,
    discover,
    load_plan,
    map_plans,
    worker_pool,
)
from phasejax.data.header import header_phase_hint
from phasejax.data.series import Series
from phasejax.phases import UnknownPhaseWord, phase_from_word

T = TypeVar("T")

ID_COLUMNS = ("series_id", "path", "series_uid", "acquisition")
LABEL_COLUMNS = ("phase", "patient_id", "site", "split")
# Columns this module computes; a labels CSV cannot override them.
COMPUTED_COLUMNS = (
    *REQUIRED_COLUMNS,
    "series_uid",
    "acquisition",
    "format",
    "ordering",
    "problems",
    "orig_num_slices",
    "orig_spacing_z",
    "orig_spacing_xy",
    "kvp",
    "header_hint",
    "z_method",
)


class LabelsError(ValueError):
    """The labels CSV is unusable; the message names the file and line."""


@dataclass(frozen=True, kw_only=True)
class LabelRow:
    line: int  # 1-based line number in the CSV (header is line 1)
    series_id: str = ""
    path: str = ""
    series_uid: str = ""
    acquisition: str | None = None  # None: not given
    phase: str  # a Phase code
    patient_id: str = ""
    site: str = ""
    split: str = ""
    extra: dict[str, str] = field(default_factory=dict)


def read_labels(path: str | os.PathLike[str]) -> list[LabelRow]:
    """Parse and validate a labels CSV (see the module docstring)."""
    return parse_labels_file(path, _parse_labels)


def parse_labels_file(path: str | os.PathLike[str], parse: Callable[[Any, str], T]) -> T:
    """`parse(f, path)` over a labels CSV opened as UTF-8 text (a byte-order mark is
    allowed). A file that cannot be opened, or is not UTF-8 (a spreadsheet's Latin-1 or
    Windows-1252 export), is a `LabelsError` naming the file (and line)."""
    path = str(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            return parse(f, path)
    except OSError as e:
        raise LabelsError(f"{path}: cannot open labels CSV ({e.strerror})") from e
    except UnicodeDecodeError as e:
        raise LabelsError(_not_utf8(path, e)) from e


def _not_utf8(path: str, error: UnicodeDecodeError) -> str:
    """Where the first byte that is not UTF-8 stands (the decoder's own offset is within
    one buffered chunk, so the file is read again to name the line)."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
        raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        # utf-8-sig reports offsets after a BOM it removed.
        start = e.start + (3 if raw.startswith(b"\xef\xbb\xbf") else 0)
        line = raw.count(b"\n", 0, start) + 1
        return (
            f"{path}:{line}: not UTF-8 text (byte 0x{raw[start]:02x}: {e.reason}); "
            "save the labels CSV as UTF-8"
        )
    except OSError:
        pass
    return f"{path}: not UTF-8 text ({error.reason}); save the labels CSV as UTF-8"


def labels_reader(f: Any, path: str, id_columns: Sequence[str], id_text: str) -> csv.DictReader:
    """A DictReader over a labels CSV with stripped header names, checked to have a
    `phase` column and one of `id_columns` (named `id_text` in the error)."""
    reader = csv.DictReader(f)
    cols = [c.strip() for c in reader.fieldnames or []]
    if not cols:
        raise LabelsError(f"{path}: empty labels CSV (a header row is required)")
    reader.fieldnames = cols
    if "phase" not in cols:
        raise LabelsError(f"{path}: no 'phase' column (columns: {cols})")
    if not any(c in cols for c in id_columns):
        raise LabelsError(f"{path}: needs a {id_text} column (columns: {cols})")
    return reader


def _parse_labels(f: Any, path: str) -> list[LabelRow]:
    reader = labels_reader(
        f, path, ("series_id", "path", "series_uid"), "'series_id', 'path' or 'series_uid'"
    )
    rows: list[LabelRow] = []
    for raw in reader:
        i = reader.line_num  # physical line (quoted fields may span lines)
        rec = {k: (v or "").strip() for k, v in raw.items() if k is not None}
        if not any(rec.values()):
            continue
        where = f"{path}:{i}"
        if not (rec.get("series_id") or rec.get("path") or rec.get("series_uid")):
            raise LabelsError(f"{where}: row names no series (series_id, path or series_uid)")
        word = rec.get("phase", "")
        if not word:
            raise LabelsError(f"{where}: empty phase")
        try:
            phase = phase_from_word(word).value
        except UnknownPhaseWord as e:
            raise LabelsError(f"{where}: {e}") from None
        split = rec.get("split", "").lower()
        if split and split not in SPLITS:
            raise LabelsError(f"{where}: unknown split {split!r}; use one of {SPLITS}")
        acq = rec.get("acquisition", "")
        extra = {
            k: v
            for k, v in rec.items()
            if k not in ID_COLUMNS and k not in LABEL_COLUMNS and k not in COMPUTED_COLUMNS
        }
        rows.append(
            LabelRow(
                line=i,
                series_id=rec.get("series_id", ""),
                path=rec.get("path", ""),
                series_uid=rec.get("series_uid", ""),
                acquisition=acq if acq else None,
                phase=phase,
                patient_id=rec.get("patient_id", ""),
                site=rec.get("site", ""),
                split=split,
                extra=extra,
            )
        )
    return rows


def _norm(p: str) -> str:
    return os.path.normcase(os.path.realpath(p))


class SeriesIndex:
    """Plans by series id, SeriesInstanceUID and path (series folder, each of its files,
    NIfTI file): how a labels row finds its series. Shared by `prepare` and
    `phasejax evaluate`, so one labels CSV names the same series in both."""

    def __init__(self, plans: Sequence[Plan]) -> None:
        self.by_id = {p.series_id: p for p in plans}
        self.by_uid: dict[str, list[Plan]] = defaultdict(list)
        self.by_path: dict[str, list[Plan]] = defaultdict(list)
        for p in plans:
            self.by_uid[p.series_uid].append(p)
            if isinstance(p, NiftiPlan):
                self.by_path[_norm(p.path)].append(p)
            else:
                self.by_path[_norm(p.source)].append(p)
                for f in p.files:
                    self.by_path[_norm(f)].append(p)

    def find(
        self,
        *,
        series_id: str = "",
        path: str = "",
        bases: Sequence[str] = (),
        series_uid: str = "",
        acquisition: str | None = None,
    ) -> tuple[list[Plan], str]:
        """The plans a row names (by the first of series_id, path, series_uid) and how
        it named them, for messages. A relative `path` is tried against each folder of
        `bases` in turn; the first folder under which it names a series wins."""
        if series_id:
            cands = [self.by_id[series_id]] if series_id in self.by_id else []
            how = f"series_id {series_id}"
        elif path:
            cands = []
            fulls = [path] if os.path.isabs(path) else [os.path.join(b, path) for b in bases]
            for full in fulls:
                cands = list(dict.fromkeys(self.by_path.get(_norm(full), [])))
                if cands:
                    break
            how = f"path {path!r}"
        else:
            cands = list(self.by_uid.get(series_uid, []))
            how = f"series_uid {series_uid}"
        if acquisition is not None:
            cands = [p for p in cands if p.acquisition == acquisition]
            how += f" acquisition {acquisition}"
        return cands, how


def ambiguous_match(line: int, how: str, cands: Sequence[Plan]) -> LabelsError:
    acqs = sorted(p.acquisition or '""' for p in cands)
    return LabelsError(
        f"labels line {line}: {how} matches {len(cands)} series "
        f"(acquisitions {acqs}); add an 'acquisition' column or use series_id"
    )


def match_labels(
    plans: Sequence[Plan], rows: Sequence[LabelRow], root: str | os.PathLike[str]
) -> tuple[dict[str, LabelRow], list[LabelRow]]:
    """Map series ids to their label row; also return rows that matched no series."""
    index = SeriesIndex(plans)
    out: dict[str, LabelRow] = {}
    unmatched: list[LabelRow] = []
    for row in rows:
        cands, how = index.find(
            series_id=row.series_id,
            path=row.path,
            bases=[str(root)],
            series_uid=row.series_uid,
            acquisition=row.acquisition,
        )
        if not cands:
            unmatched.append(row)
            continue
        if len(cands) > 1:
            raise ambiguous_match(row.line, how, cands)
        sid = cands[0].series_id
        prev = out.get(sid)
        if prev is not None and prev.phase != row.phase:
            raise LabelsError(
                f"labels lines {prev.line} and {row.line} give series {sid} two phases "
                f"({prev.phase}, {row.phase})"
            )
        out.setdefault(sid, row)
    return out, unmatched


# --------------------------------------------------------------------------- slab

# Lung bases (see the module docstring).
LUNG_AIR_HU = -400.0
LUNG_FRACTION_TOTAL = 0.03
LUNG_FRACTION_SIDE = 0.01
LUNG_RUN_MIN_MM = 60.0  # a lung run not reaching the scan top must be this long

# Kidneys (see the module docstring). Positions are relative to the vertebral body.
BONE_HU = 200.0  # vertebral body at the cache's 5 mm slab averaging
SPINE_BAND_MM = 35.0  # the vertebral body lies within this of the body's midline
# Unenhanced kidney (~30 HU) and up to muscle (45-60 HU): a kidney is then a region of
# its own wherever fat or muscle of higher density surrounds it.
TISSUE_HU = (0.0, 50.0)
FAT_HU = (-200.0, -30.0)
ENHANCED_HU = 125.0  # enhanced renal parenchyma (>= 140 HU in every contrast phase)
# Thresholds tried in turn inside an enhanced blob too large for a kidney: in the
# portal-venous phase the liver and spleen reach 100-160 HU and a kidney touching them merges
# with them at ENHANCED_HU, while its cortex reads 160-260 HU (hand ROIs of the real PVP
# series, docs/real_roi/real_roi.json: liver 160 against cortex 258 on HCC_015's).
SPLIT_HU = (175.0, 225.0)
DENSE_HU = 400.0  # cortical bone and excreted / oral contrast
KIDNEY_DX_MM = (50.0, 120.0)  # |lateral offset| of a kidney section's centre
KIDNEY_DY_MM = (-50.0, 30.0)  # its anterior (-) / posterior (+) offset
KIDNEY_AREA_CM2 = (3.0, 30.0)
KIDNEY_WINDOW_MM = (110.0, 70.0, 170.0)  # searched: anterior, posterior, lateral of the spine
KIDNEY_FAT_RING = 0.4  # fraction of fat around an unenhanced kidney section
PLAIN_KIDNEY_HU = (15.0, 45.0)  # unenhanced renal parenchyma ~30 HU; muscle 45-60, liver 55-65
KIDNEY_ELONGATION = 2.5  # an axial kidney section is oval; wall muscles are bands
KIDNEY_MIN_PAIRED = 2  # slices with both kidneys in the kidney core
KIDNEY_POLE_CM2 = 1.5  # smallest section followed towards a pole
KIDNEY_STEP_MM = 30.0  # largest move of a kidney's centre from one slice to the next
KIDNEY_MAX_GAP = 3  # slices a followed kidney may go undetected
KIDNEY_RUN_GAP = 2  # slices without any kidney section inside one kidney run
KIDNEY_BELOW_DOME_MM = (80.0, 260.0)  # plausible dome-to-lower-pole distance

SLAB_BELOW_DOME_MM = 180.0
DOME_ABOVE_LUNG_BASE_MM = 30.0
DOME_MIN_AIR = 0.2  # right-hemithorax air fraction that shows lung above the dome
DOME_AIR_FRACTION = 0.5
THORAX_BOX_ROWS = (0.1, 0.5)
THORAX_BOX_COLS = (0.12, 0.4)
CENTRAL_FRACTION = 0.6


@dataclass(frozen=True, kw_only=True)
class Slab:
    """The liver-to-kidney slab [z_lo, z_hi) in cache slice indices and how it was found.

    `landmarks` (cache slice indices, None when not found): `lung_base` (most inferior
    lung-base slice), `dome` (liver dome, estimated from the lung bases),
    `kidney_lo` / `kidney_hi` (lowest / highest slice of the kidney run).
    """

    z_lo: int
    z_hi: int
    method: str  # lung+kidney | lung | kidney | central
    landmarks: dict[str, int | None] = field(default_factory=dict)
    # What the finder saw per slice, kept so that the aorta and kidney readers need not
    # compute it again (about 0.3 s per series on a CPU); None without pixel_mm.
    anatomy: SliceAnatomy | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class SliceAnatomy:
    """Per slice of a cache-oriented volume: the body mask and the vertebral body's centre
    (row, col), None where not found; what `slice_anatomy` gives for each slice."""

    bodies: tuple[np.ndarray | None, ...]
    spines: tuple[tuple[float, float] | None, ...]


def slice_anatomy(
    sl: np.ndarray, pixel_mm: float
) -> tuple[np.ndarray | None, tuple[float, float] | None]:
    """The body mask and vertebral body centre of one slice (float32 HU)."""
    body = body_mask(sl)
    return body, None if body is None else vertebral_body(sl, body, pixel_mm)


def _disk(radius_px: float) -> np.ndarray:
    r = max(1, int(round(radius_px)))
    yy, xx = np.ogrid[-r : r + 1, -r : r + 1]
    return xx * xx + yy * yy <= r * r


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """`ndimage.binary_fill_holes` by one labelling of the background (several times
    faster than its iterated dilation)."""
    from scipy import ndimage

    lab, m = ndimage.label(~mask)
    if m == 0:
        return mask
    outside = np.zeros(m + 1, dtype=bool)
    outside[np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]])] = True
    outside[0] = False  # label 0 is the mask itself
    return ~outside[lab]


def body_mask(sl: np.ndarray) -> np.ndarray | None:
    """The patient's cross-section (largest region above -300 HU, holes filled)."""
    from scipy import ndimage

    lab, m = ndimage.label(sl > -300)
    if m == 0:
        return None
    largest = lab == (int(np.argmax(np.bincount(lab.ravel())[1:])) + 1)
    filled = _fill_holes(largest)
    return filled if int(filled.sum()) >= 100 else None


def _is_lung_base(sl: np.ndarray, body: np.ndarray) -> bool:
    """Air in the posterior half of the body on both sides (module docstring)."""
    area = int(body.sum())
    air = (sl < LUNG_AIR_HU) & body
    ys, xs = np.nonzero(body)
    cy, cx = ys.mean(), xs.mean()
    post = air.copy()
    post[: int(math.ceil(cy))] = False
    right = post[:, : int(round(cx))].sum() / area  # patient right = image left
    left = post[:, int(round(cx)) :].sum() / area
    return bool((right + left) >= LUNG_FRACTION_TOTAL and min(right, left) >= LUNG_FRACTION_SIDE)


def vertebral_body(sl: np.ndarray, body: np.ndarray, pixel_mm: float) -> tuple[float, float] | None:
    """(row, column) of the vertebral body's centre: the largest bone region near the
    midline in the posterior half of the body, its cortical ring closed and filled.
    Anterior to it, contrast-filled bowel can be as dense, and in the arterial phases
    the aorta, a smaller region (or, touching the vertebra, a small shift forwards)."""
    from scipy import ndimage

    ys, xs = np.nonzero(body)
    cx = 0.5 * (xs.min() + xs.max())
    half = SPINE_BAND_MM / pixel_mm
    c0, c1 = max(0, int(cx - half)), int(cx + half) + 1
    bone = _fill_holes(ndimage.binary_closing(sl[:, c0:c1] > BONE_HU, _disk(1)))
    lab, m = ndimage.label(bone)
    if m == 0:
        return None
    idx = np.arange(1, m + 1)
    size = np.bincount(lab.ravel(), minlength=m + 1)[1:]
    rows = np.broadcast_to(np.arange(lab.shape[0])[:, None], lab.shape)
    cols = np.broadcast_to(np.arange(lab.shape[1])[None, :], lab.shape)
    row = np.asarray(ndimage.mean(rows, lab, idx))
    size = np.where(row >= ys.mean(), size, 0)
    best = int(np.argmax(size))
    if size[best] * pixel_mm * pixel_mm < 100.0:  # < 1 cm^2: a vessel or a rib, not a vertebra
        return None
    col = float(ndimage.mean(cols, lab, best + 1))
    return float(row[best]), col + c0


@dataclass(frozen=True)
class _KidneySection:
    side: int  # 0 patient right, 1 patient left
    kind: str  # "enhanced" | "fat-ringed"
    area_cm2: float
    dx_mm: float  # lateral offset from the vertebral body (patient left +)
    dy_mm: float  # posterior (+) offset
    rows: np.ndarray  # its pixels, slice coordinates
    cols: np.ndarray


def _kidney_sections(
    sl: np.ndarray, body: np.ndarray, spine: tuple[float, float], pixel_mm: float
) -> list[_KidneySection]:
    """Candidate kidney sections beside the spine on one slice.

    Two kinds of evidence, either suffices: an enhanced blob (contrast phases: renal
    parenchyma outshines muscle, liver and bowel wall, so it separates from the psoas
    and quadratus lumborum it touches), or a soft-tissue blob ringed by perirenal fat
    (every phase, also non-contrast). Either must be kidney-sized and lie where the
    kidneys lie relative to the vertebral body (`KIDNEY_DX_MM`, `KIDNEY_DY_MM`): the
    psoas is medial to that window, the colon lateral or anterior.
    """
    from scipy import ndimage

    # Work in a window around the spine (5x cheaper than the whole slice); a region
    # cut by the window's edge is not judged (it is larger than any kidney section).
    h, w = sl.shape
    wy0 = max(0, int(spine[0] - KIDNEY_WINDOW_MM[0] / pixel_mm))
    wy1 = min(h, int(spine[0] + KIDNEY_WINDOW_MM[1] / pixel_mm) + 1)
    wx0 = max(0, int(spine[1] - KIDNEY_WINDOW_MM[2] / pixel_mm))
    wx1 = min(w, int(spine[1] + KIDNEY_WINDOW_MM[2] / pixel_mm) + 1)
    sl, body = sl[wy0:wy1, wx0:wx1], body[wy0:wy1, wx0:wx1]
    sy, sx = spine[0] - wy0, spine[1] - wx0
    px2 = pixel_mm * pixel_mm / 100.0  # cm^2 per pixel
    # A 3x3 median: image noise would otherwise break a kidney near a threshold into crumbs.
    sl = ndimage.median_filter(sl, size=3)
    dense = sl > DENSE_HU
    near_dense = ndimage.binary_dilation(dense, _disk(1))

    def enhanced_above(threshold: float, within: np.ndarray) -> np.ndarray:
        enhanced = (sl >= threshold) & ~dense & within & ~near_dense
        # Close and fill before the opening: in the arterial phases only the renal cortex
        # enhances, a thin ring around the darker medulla that an opening would erase.
        enhanced = _fill_holes(ndimage.binary_closing(enhanced, _disk(1)))
        return ndimage.binary_opening(enhanced, _disk(3.0 / pixel_mm))

    tissue = (sl >= TISSUE_HU[0]) & (sl <= TISSUE_HU[1]) & body
    tissue = ndimage.binary_erosion(tissue, _disk(2.0 / pixel_mm))
    fat = (sl >= FAT_HU[0]) & (sl <= FAT_HU[1])
    found: list[_KidneySection] = []
    jobs = [(enhanced_above(ENHANCED_HU, body), "enhanced", 0), (tissue, "fat-ringed", 0)]
    while jobs:
        mask, kind, split = jobs.pop(0)
        lab, m = ndimage.label(mask)
        for i, box in enumerate(ndimage.find_objects(lab)):
            if box is None or _cut(box, (wy0, wy1, wx0, wx1), (h, w)):
                continue
            yy, xx = np.nonzero(lab[box] == i + 1)
            area = float(yy.size) * px2
            if kind == "enhanced" and area > KIDNEY_AREA_CM2[1] and split < len(SPLIT_HU):
                # A kidney touching an organ that enhances too (a portal-venous liver or
                # spleen above ENHANCED_HU) is one blob with it; the cortex outshines them.
                region = np.zeros_like(mask)
                region[box] = lab[box] == i + 1
                jobs.append((enhanced_above(SPLIT_HU[split], region), kind, split + 1))
                continue
            if not KIDNEY_POLE_CM2 <= area <= KIDNEY_AREA_CM2[1]:
                continue
            yy, xx = yy + box[0].start, xx + box[1].start  # window coordinates
            dx = (xx.mean() - sx) * pixel_mm
            dy = (yy.mean() - sy) * pixel_mm
            side = 0 if dx < 0 else 1  # image left = patient right
            if not KIDNEY_DX_MM[0] <= abs(dx) <= KIDNEY_DX_MM[1]:
                continue
            if not KIDNEY_DY_MM[0] <= dy <= KIDNEY_DY_MM[1]:
                continue
            if _elongation(yy, xx) > KIDNEY_ELONGATION:
                continue
            if kind == "enhanced" and _ring_fraction(lab, i + 1, box, near_dense, 2) > 0.25:
                continue  # cancellous bone inside its cortex (iliac wing, rib), not a kidney
            if kind == "fat-ringed":
                hu = float(sl[yy, xx].mean())
                if not PLAIN_KIDNEY_HU[0] <= hu <= PLAIN_KIDNEY_HU[1]:
                    continue
                ring = (int(round(2.0 / pixel_mm)), int(math.ceil(6.0 / pixel_mm)))
                if _ring_fraction(lab, i + 1, box, fat, *ring) < KIDNEY_FAT_RING:
                    continue
            found.append(
                _KidneySection(
                    side=side,
                    kind=kind,
                    area_cm2=area,
                    dx_mm=float(dx),
                    dy_mm=float(dy),
                    rows=yy + wy0,
                    cols=xx + wx0,
                )  # fmt: skip
            )
    return found


def _elongation(yy: np.ndarray, xx: np.ndarray) -> float:
    """Ratio of the principal axes of a pixel set (1 for a disc)."""
    cov = np.cov(np.stack([yy, xx]).astype(np.float64))
    ev = np.linalg.eigvalsh(cov)
    return float(math.sqrt(ev[1] / max(ev[0], 1e-6)))


def _ring_fraction(
    lab: np.ndarray, label: int, box: tuple[slice, ...], what: np.ndarray, r0: int, r1: int = 0
) -> float:
    """Fraction of `what` in the ring from r0 to r1 pixels (r1 = 0: from 0 to r0) around
    a labelled region."""
    from scipy import ndimage

    inner, outer = (r0, r1) if r1 else (0, r0)
    pad = outer + 1
    y0, x0 = max(0, box[0].start - pad), max(0, box[1].start - pad)
    y1, x1 = box[0].stop + pad, box[1].stop + pad
    sub = lab[y0:y1, x0:x1] == label
    ring = ndimage.binary_dilation(sub, _disk(outer)) & ~sub
    if inner:
        ring &= ~ndimage.binary_dilation(sub, _disk(inner))
    f = what[y0:y1, x0:x1][ring]
    return float(f.mean()) if f.size else 0.0


def _cut(box: tuple[slice, ...], window: tuple[int, int, int, int], shape: tuple[int, int]) -> bool:
    """Does a region's bounding box touch a window edge that is not the image edge?"""
    y0, y1, x0, x1 = window
    hh, ww = y1 - y0, x1 - x0
    return bool(
        (box[0].start == 0 and y0 > 0)
        or (box[0].stop == hh and y1 < shape[0])
        or (box[1].start == 0 and x0 > 0)
        or (box[1].stop == ww and x1 < shape[1])
    )


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) of each run of True."""
    out: list[tuple[int, int]] = []
    k, n = 0, len(flags)
    while k < n:
        if flags[k]:
            j = k
            while j < n and flags[j]:
                j += 1
            out.append((k, j))
            k = j
        else:
            k += 1
    return out


def _kidney_extent(sections: Sequence[Sequence[_KidneySection]]) -> tuple[int, int] | None:
    """[lo, hi) slices from the kidneys' lower to upper poles, or None.

    A kidney run is a run of slices with a kidney-sized section on either side (gaps of
    up to `KIDNEY_RUN_GAP` slices bridged) that has both kidneys on at least
    `KIDNEY_MIN_PAIRED` slices. From the lowest and the highest of those, each kidney
    is followed slice by slice towards its poles through sections down to
    `KIDNEY_POLE_CM2` whose centre moved less than `KIDNEY_STEP_MM` (up to
    `KIDNEY_MAX_GAP` slices without one), so that a bowel loop beside a pole does not
    extend it. The kidneys are the run with the longest such extent (adult
    kidneys are 10-12 cm long; paired bowel loops or the iliac wings are shorter); on
    a tie the higher one, since pelvis and bowel lie below the kidneys.
    """
    n = len(sections)
    big = np.zeros((n, 2), dtype=bool)
    for k, secs in enumerate(sections):
        for sec in secs:
            if sec.area_cm2 >= KIDNEY_AREA_CM2[0]:
                big[k, sec.side] = True
    best: tuple[int, int] | None = None
    for run_lo, run_hi in _runs(_bridge(big.any(axis=1), KIDNEY_RUN_GAP)):
        if int(big[run_lo:run_hi].all(axis=1).sum()) < KIDNEY_MIN_PAIRED:
            continue
        pairs = run_lo + np.nonzero(big[run_lo:run_hi].all(axis=1))[0]
        lo, hi = int(pairs[0]), int(pairs[-1]) + 1
        for side in (0, 1):
            lo = min(lo, _follow(sections, int(pairs[0]), -1, side))
            hi = max(hi, _follow(sections, int(pairs[-1]), 1, side) + 1)
        if best is None or hi - lo >= best[1] - best[0]:
            best = (lo, hi)
    return best


def _bridge(flags: np.ndarray, gap: int) -> np.ndarray:
    """`flags` with runs of at most `gap` False between two True set to True."""
    out = flags.copy()
    idx = np.nonzero(flags)[0]
    for a, b in zip(idx[:-1], idx[1:]):
        if 1 < b - a <= gap + 1:
            out[a:b] = True
    return out


def _follow(sections: Sequence[Sequence[_KidneySection]], start: int, step: int, side: int) -> int:
    """Last slice reached following one kidney from `start` in direction `step`."""
    cands = [c for c in sections[start] if c.side == side]
    if not cands:
        return start
    cur = max(cands, key=lambda c: c.area_cm2)
    k = last = start
    while 0 <= k + step < len(sections) and abs(k + step - last) <= KIDNEY_MAX_GAP + 1:
        k += step
        near = [
            c
            for c in sections[k]
            if c.side == side
            and math.hypot(c.dx_mm - cur.dx_mm, c.dy_mm - cur.dy_mm) <= KIDNEY_STEP_MM
        ]
        if near:
            cur = max(near, key=lambda c: c.area_cm2)
            last = k
    return last


def find_slab(volume: np.ndarray, spacing_z: float, pixel_mm: float | None = None) -> Slab:
    """The liver-to-kidney slab of a volume in cache orientation (slice 0 most inferior,
    rows anterior to posterior); see the module docstring. Without `pixel_mm` (mm per
    pixel in plane) the kidneys are not looked for."""
    n = int(volume.shape[0])
    if n == 0:
        return Slab(z_lo=0, z_hi=0, method="central")
    lung = np.zeros(n, dtype=bool)
    air = np.zeros(n)
    spine: list[tuple[float, float] | None] = [None] * n
    bodies: list[np.ndarray | None] = [None] * n
    for k in range(n):
        sl = np.asarray(volume[k], dtype=np.float32)
        if pixel_mm is None:
            body = body_mask(sl)
        else:  # what the aorta and kidney readers get back through `anatomy`
            body, spine[k] = slice_anatomy(sl, pixel_mm)
        if body is None:
            continue
        bodies[k] = body
        lung[k] = _is_lung_base(sl, body)
        air[k] = _right_thorax_air(sl, body)
    kidney: tuple[int, int] | None = None
    anatomy = None
    if pixel_mm is not None:
        anatomy = SliceAnatomy(bodies=tuple(bodies), spines=tuple(spine))
        ref = _smooth_spine(spine)
        sections: list[list[_KidneySection]] = []
        for k in range(n):
            body, spine_k = bodies[k], ref[k]
            if body is None or spine_k is None:
                sections.append([])
                continue
            sl = np.asarray(volume[k], dtype=np.float32)
            sections.append(_kidney_sections(sl, body, spine_k, pixel_mm))
        kidney = _kidney_extent(sections)
    base = _lung_base(lung, spacing_z, kidney)
    marks: dict[str, int | None] = {
        "lung_base": base,
        "dome": None,
        "kidney_lo": kidney[0] if kidney else None,
        "kidney_hi": kidney[1] - 1 if kidney else None,
    }
    if base is not None:
        dome = _dome(air, base, spacing_z)
        marks["dome"] = dome
        hi = min(n, dome + 1)
        below_mm = (dome - kidney[0]) * spacing_z if kidney else -1.0
        if kidney and KIDNEY_BELOW_DOME_MM[0] <= below_mm <= KIDNEY_BELOW_DOME_MM[1]:
            return Slab(
                z_lo=kidney[0], z_hi=hi, method="lung+kidney", landmarks=marks, anatomy=anatomy
            )
        lo = max(0, int(math.floor(dome - SLAB_BELOW_DOME_MM / spacing_z)))
        return Slab(z_lo=lo, z_hi=hi, method="lung", landmarks=marks, anatomy=anatomy)
    if kidney:
        # No lung bases: the scan starts below the diaphragm, so the dome is at or above
        # its top; the cap keeps the slab plausible if the lungs were missed.
        hi = min(n, kidney[0] + int(math.ceil(KIDNEY_BELOW_DOME_MM[1] / spacing_z)) + 1)
        return Slab(z_lo=kidney[0], z_hi=hi, method="kidney", landmarks=marks, anatomy=anatomy)
    lo = int(math.floor(n * (1 - CENTRAL_FRACTION) / 2))
    hi = min(max(lo + 1, int(math.ceil(n * (1 + CENTRAL_FRACTION) / 2))), n)
    return Slab(z_lo=lo, z_hi=hi, method="central", landmarks=marks, anatomy=anatomy)


def _right_thorax_air(sl: np.ndarray, body: np.ndarray) -> float:
    """Air fraction of a box in the right hemithorax: 20-80% of the body's depth, 12-40%
    of its width from the patient's right side (lateral to the heart, medial to the
    chest wall). Below the dome the liver fills it, above it the right lung."""
    ys, xs = np.nonzero(body)
    y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
    h, w = y1 - y0, x1 - x0
    (r0, r1), (c0, c1) = THORAX_BOX_ROWS, THORAX_BOX_COLS
    box = sl[int(y0 + r0 * h) : int(y0 + r1 * h) + 1, int(x0 + c0 * w) : int(x0 + c1 * w) + 1]
    return float((box < LUNG_AIR_HU).mean()) if box.size else 0.0


def _dome(air: np.ndarray, base: int, spacing_z: float) -> int:
    """The liver dome's slice: going up from the lung bases, the first slice where the
    right hemithorax box (`_right_thorax_air`) is at least half as airy as it gets
    higher up, i.e. where the right lung has taken over from the liver. Without enough
    chest above the bases to tell, `DOME_ABOVE_LUNG_BASE_MM` above them."""
    n = len(air)
    plateau = float(air[base:].max())
    if plateau >= DOME_MIN_AIR:
        above = np.nonzero(air[base:] >= DOME_AIR_FRACTION * plateau)[0]
        return int(base + above[0])
    return min(n - 1, int(round(base + DOME_ABOVE_LUNG_BASE_MM / spacing_z)))


def _smooth_spine(
    spine: Sequence[tuple[float, float] | None],
) -> list[tuple[float, float] | None]:
    """Per-slice vertebral body positions, gaps interpolated and outliers (a rib or the
    aorta taken for the vertebra) removed by a 5-slice running median."""
    from scipy import ndimage

    n = len(spine)
    ok = np.array([s is not None for s in spine])
    if not ok.any():
        return [None] * n
    idx = np.arange(n)
    pts = np.array([s for s in spine if s is not None], dtype=np.float64)
    cols = [np.interp(idx, idx[ok], pts[:, j]) for j in range(2)]
    cols = [ndimage.median_filter(c, size=5, mode="nearest") for c in cols]
    return [(float(cols[0][k]), float(cols[1][k])) for k in range(n)]


def _lung_base(lung: np.ndarray, spacing_z: float, kidney: tuple[int, int] | None) -> int | None:
    """Most inferior slice of the lung-base run that marks the diaphragm, or None.

    The run must leave abdomen below it and either reach the top of the scan or be at
    least `LUNG_RUN_MIN_MM` long (a scan that starts above the lungs, at the neck);
    it lies above the kidneys' lower poles when those were found.
    """
    n = len(lung)
    for lo, hi in _runs(lung):  # inferior first
        if lo == 0:
            continue  # no abdomen below: chest only, or lung all the way down
        if hi < n and (hi - lo) * spacing_z < LUNG_RUN_MIN_MM:
            continue
        if kidney is not None and lo <= kidney[0]:
            continue
        return lo
    return None


def liver_kidney_slab(
    volume: np.ndarray,
    spacing_z: float,
    *,
    superior_last: bool = True,
    posterior_down: bool = True,
    pixel_mm: float | None = None,
) -> tuple[int, int, str]:
    """[z_lo, z_hi) from liver dome to lower kidney poles, and the method used.

    `volume` is HU [Z, H, W]; `superior_last`: slice index grows towards the head;
    `posterior_down`: row index grows towards the patient's back. See `find_slab` and
    the module docstring for the heuristic.
    """
    vol = volume if superior_last else volume[::-1]
    if not posterior_down:
        vol = vol[:, ::-1]
    slab = find_slab(vol, spacing_z, pixel_mm)
    lo, hi, n = slab.z_lo, slab.z_hi, int(volume.shape[0])
    if not superior_last:
        lo, hi = n - hi, n - lo
    return lo, hi, slab.method


def _orientation_flags(
    orientation: Sequence[float],
) -> tuple[tuple[int, int, int], tuple[bool, bool, bool]]:
    """How to bring a [Z, H, W] volume into cache orientation, from DICOM LPS direction
    cosines: (source axis for each cache axis, flip each source axis).

    Source axes run along the slice normal (slices sorted ascending along it), the
    column cosine (rows) and the row cosine (columns). The cache's axes run along LPS
    +z (superior), +y (posterior), +x (patient left): slice 0 most inferior, rows
    anterior to posterior, columns patient right to left. Each source axis goes to
    the LPS axis it is most nearly parallel to (an oblique plane to the nearest one).
    """
    row = np.asarray(orientation[:3], dtype=np.float64)
    col = np.asarray(orientation[3:6], dtype=np.float64)
    dirs = np.stack([slice_normal(orientation), col, row])  # source axis -> LPS direction
    lps_of = [-1, -1, -1]
    taken: set[int] = set()
    # Greedy by the largest cosine, so that a near-45-degree plane still maps one-to-one.
    for flat in np.argsort(-np.abs(dirs), axis=None):
        a, c = divmod(int(flat), 3)
        if lps_of[a] < 0 and c not in taken:
            lps_of[a] = c
            taken.add(c)
    cache_lps = (2, 1, 0)  # cache axis 0 = LPS z, 1 = LPS y, 2 = LPS x
    order = tuple(lps_of.index(c) for c in cache_lps)
    flips = tuple(bool(dirs[a, lps_of[a]] < 0) for a in range(3))
    return order, flips  # type: ignore[return-value]


def to_cache_orientation(
    hu: np.ndarray, spacing: Sequence[float], orientation: Sequence[float]
) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Permute / flip a [Z, H, W] volume and its (z, y, x) spacing into cache orientation
    (axial; see `phasejax.data.cache`), e.g. a coronal or sagittal acquisition."""
    order, flips = _orientation_flags(orientation)
    vol = hu
    for a, f in enumerate(flips):
        if f:
            vol = np.flip(vol, axis=a)
    vol = np.transpose(vol, order)
    sp = tuple(float(spacing[a]) for a in order)
    return vol, sp  # type: ignore[return-value]


@dataclass(frozen=True, kw_only=True)
class CachedVolume:
    """A series on the training cache grid, as `phasejax prepare` would have cached it."""

    volume: np.ndarray  # int16 HU [Z, size, size], cache orientation
    spacing_z: float
    pixel_mm: float
    z_lo: int
    z_hi: int
    z_method: str  # lung+kidney | lung | kidney | central
    landmarks: dict[str, int | None] = field(default_factory=dict)
    slab_clipped_mm: float = 0.0  # of the dome-to-poles slab, cut off by the scan range
    anatomy: SliceAnatomy | None = field(default=None, repr=False, compare=False)


def slab_clipping_mm(slab: Slab, num_slices: int, spacing_z: float) -> float:
    """How many mm of the dome-to-lower-poles slab the scan range cuts off (an estimate).

    Where a landmark lies at the scan's edge, the missing end is taken
    `SLAB_BELOW_DOME_MM` from the other one: kidneys running off the bottom of the scan
    (lower poles not seen), a dome at the very top, or no dome at all ("kidney": the scan
    starts below the diaphragm). "central" finds no anatomy to measure against: 0.
    """
    n = int(num_slices)
    span = SLAB_BELOW_DOME_MM / spacing_z
    lm = slab.landmarks
    dome, kid_lo = lm.get("dome"), lm.get("kidney_lo")
    cut = 0.0
    if slab.method in ("lung", "lung+kidney") and dome is not None:
        if dome >= n - 1:
            cut += spacing_z  # the dome sits at the top slice: at most about one slice cut
        if slab.method == "lung" or kid_lo == 0:
            cut += max(0.0, span - dome) * spacing_z
    elif slab.method == "kidney" and kid_lo is not None:
        cut += max(0.0, kid_lo + span - (n - 1)) * spacing_z
    return float(cut)


def cache_volume(series: Series, spec: CacheSpec) -> CachedVolume:
    """Reorient to axial cache orientation, resample onto the cache grid and find the
    liver-to-kidney slab: the one way a series enters the cache, shared by `prepare`
    and `phasejax predict`."""
    hu, spacing = to_cache_orientation(series.hu, series.spacing, series.orientation)
    vol, pixel_mm = resample_to_cache(hu, spacing, spec)
    spacing_z = spec.spacing_z if vol.shape[0] > 1 else float(spacing[0])
    slab = find_slab(vol, spacing_z, pixel_mm)
    return CachedVolume(
        volume=vol,
        spacing_z=float(spacing_z),
        pixel_mm=float(pixel_mm),
        z_lo=int(slab.z_lo),
        z_hi=int(slab.z_hi),
        z_method=slab.method,
        landmarks=dict(slab.landmarks),
        slab_clipped_mm=slab_clipping_mm(slab, vol.shape[0], spacing_z),
        anatomy=slab.anatomy,
    )


# --------------------------------------------------------------------------- worker


@dataclass(frozen=True, kw_only=True)
class _Task:
    plan: Plan
    out: str
    spec: CacheSpec
    row: dict[str, Any]


def _prepare_one(task: _Task) -> tuple[dict[str, Any] | None, list[Skipped]]:
    series, skipped = load_plan(task.plan)
    if series is None:
        return None, skipped
    cached = cache_volume(series, task.spec)
    vol = cached.volume
    hint = header_phase_hint(series.header)
    row = {
        **task.row,
        "num_slices": int(vol.shape[0]),
        "spacing_z": round(cached.spacing_z, 4),
        "spacing_xy": round(cached.pixel_mm, 4),
        "z_lo": cached.z_lo,
        "z_hi": cached.z_hi,
        "z_method": cached.z_method,
        "orig_num_slices": series.num_slices,
        "orig_spacing_z": round(float(series.spacing[0]), 4),
        "orig_spacing_xy": round(float(series.spacing[1]), 4),
        "ordering": series.ordering,
        "problems": ";".join(series.problems),
        "kvp": series.header.get("KVP", ""),
        "header_hint": hint.phase,
    }
    write_entry(task.out, row, vol)
    return row, skipped


# --------------------------------------------------------------------------- driver


@dataclass(kw_only=True)
class PrepareReport:
    out: str
    manifest: str = ""
    prepared: int = 0  # decoded and written in this run
    reused: int = 0  # already in the cache (row refreshed if labels changed)
    refreshed: int = 0  # of `reused`, rows rewritten because labels/splits changed
    failed_series: list[str] = field(default_factory=list)  # selected series ids not prepared
    failed: list[Skipped] = field(default_factory=list)  # why: the files/series and errors
    skipped: list[Skipped] = field(default_factory=list)  # files/series not usable at all
    unlabelled: int = 0  # series found but not in the labels CSV (and not included)
    unmatched_labels: list[LabelRow] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)  # cache entries not selected by this run
    splits: dict[str, int] = field(default_factory=dict)  # series per split

    @property
    def ok(self) -> bool:
        return not self.failed_series and (self.prepared + self.reused) > 0


def _resolve_patients(
    selected: Sequence[Plan], labels: dict[str, LabelRow]
) -> tuple[dict[str, str], dict[str, str]]:
    """(series id -> patient id, patient id -> fixed split from the CSV)."""
    patient: dict[str, str] = {}
    fixed: dict[str, str] = {}
    fixed_line: dict[str, int] = {}
    for p in selected:
        lab = labels.get(p.series_id)
        pid = (lab.patient_id if lab else "") or p.patient_id or p.series_id
        patient[p.series_id] = pid
        if lab and lab.split:
            if pid in fixed and fixed[pid] != lab.split:
                raise LabelsError(
                    f"labels lines {fixed_line[pid]} and {lab.line} put patient {pid} in two "
                    f"splits ({fixed[pid]}, {lab.split}); a patient belongs to one split"
                )
            fixed[pid] = lab.split
            fixed_line[pid] = lab.line
    return patient, fixed


def prepare(
    root: str | os.PathLike[str],
    labels_csv: str | os.PathLike[str] | None,
    out: str | os.PathLike[str],
    *,
    spec: CacheSpec | None = None,
    workers: int = 1,
    split_seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    include_unlabelled: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> PrepareReport:
    """Build (or resume) a prepared cache from real CT under `root`. See module docstring."""
    spec = spec or CacheSpec()
    say = log or (lambda msg: None)
    root = str(root)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"--root {root}: not a folder")
    rows = read_labels(labels_csv) if labels_csv else []
    if not rows and not include_unlabelled:
        raise LabelsError("no labelled rows: give --labels CSV (or --include-unlabelled)")

    with worker_pool(workers) as pool:
        disc = discover([root], workers=workers, progress=progress, pool=pool)
        report = PrepareReport(out=str(out), skipped=list(disc.skipped))
        labels, report.unmatched_labels = match_labels(disc.plans, rows, root)
        selected = [p for p in disc.plans if p.series_id in labels or include_unlabelled]
        report.unlabelled = sum(1 for p in disc.plans if p.series_id not in labels)
        patient, fixed = _resolve_patients(selected, labels)
        drawn = assign_splits(
            [pid for pid in set(patient.values()) if pid not in fixed],
            seed=split_seed,
            val_fraction=val_fraction,
            test_fraction=test_fraction,
        )
        split_of = {**drawn, **fixed}

        init_cache(
            out,
            spec,
            made_by="phasejax prepare",
            root=os.path.abspath(root),
            labels=os.path.abspath(labels_csv) if labels_csv else "",
            split_seed=split_seed,
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            include_unlabelled=include_unlabelled,
        )
        tasks: list[_Task] = []
        for p in selected:
            lab = labels.get(p.series_id)
            pid = patient[p.series_id]
            base: dict[str, Any] = {
                **(lab.extra if lab else {}),
                "series_id": p.series_id,
                "patient_id": pid,
                "split": split_of[pid],
                "site": lab.site if lab else "",
                "phase": lab.phase if lab else "",
                "source": _relative(p.source, root),
                "series_uid": p.series_uid,
                "acquisition": p.acquisition,
                "format": "nifti" if isinstance(p, NiftiPlan) else "dicom",
            }
            if has_entry(out, p.series_id):
                report.reused += 1
                if _refresh_row(out, p.series_id, base):
                    report.refreshed += 1
                continue
            tasks.append(_Task(plan=p, out=str(out), spec=spec, row=base))
        say(
            f"{len(disc.plans)} series found ({report.unlabelled} not in the labels), "
            f"{len(selected)} selected: {report.reused} already cached, {len(tasks)} to prepare"
        )
        results = map_plans(
            _prepare_one, tasks, workers=workers, progress=progress, desc="prepare", pool=pool
        )
        for task, res in results:
            if isinstance(res, BaseException):
                report.failed_series.append(task.plan.series_id)
                report.failed.append(
                    Skipped(task.plan.source, "decode_error", f"{type(res).__name__}: {res}")
                )
                continue
            row, bad = res
            if row is None:
                report.failed_series.append(task.plan.series_id)
                report.failed.extend(bad)
            else:
                report.prepared += 1
                report.skipped.extend(bad)
        chosen = {p.series_id for p in selected}
        volumes = Path(out) / "volumes"
        report.stale = sorted(p.stem for p in volumes.glob("*.json") if p.stem not in chosen)
        report.manifest = str(finalize(out))
        report.splits = dict(
            Counter(split_of[patient[p.series_id]] for p in selected if has_entry(out, p.series_id))
        )
        return report


def _relative(path: str, root: str) -> str:
    """Path relative to root when inside it (manifests stay valid when the tree moves)."""
    a, r = os.path.abspath(path), os.path.abspath(root)
    return os.path.relpath(a, r) if os.path.commonpath([a, r]) == r else a


def _refresh_row(out: str | os.PathLike[str], series_id: str, base: dict[str, Any]) -> bool:
    """Rewrite an existing entry's row when its labels or split changed (no decoding)."""
    path = Path(out) / "volumes" / f"{series_id}.json"
    old = json.loads(path.read_text())
    changed = {k: v for k, v in base.items() if str(old.get(k, "")) != str(v)}
    if not changed:
        return False
    write_entry(out, {**old, **base}, np.asarray(load_volume(out, series_id, mmap=False)))
    return True
