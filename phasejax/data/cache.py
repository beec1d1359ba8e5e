"""The prepared cache: per-series HU arrays on a common grid plus a manifest.

Layout of a cache directory::

    cache.json               grid (spacing_z, size), how the cache was made and, once
                             finalized, its content_digest (see `content_digest`)
    manifest.csv             one row per series (columns below), sorted by series_id
    volumes/<id>.npy         int16 HU [Z, size, size], the full reconstruction FOV; slice 0 is
                             the most inferior (feet) and z grows towards the head, as in DICOM
                             LPS sorted along the slice normal and in NIfTI RAS+; rows run
                             anterior to posterior, columns patient right to left (image left
                             = patient right), the radiological display convention
    volumes/<id>.json        the series' manifest row (written last: marks the entry done)
    masks/<id>.npy           optional uint8 organ labels on the same grid (synthetic cohort)

Writers (`phasejax prepare`, `phasejax cohort generate --format cache`) call
`write_entry` per series from any process, then `finalize` once: an interrupted
job resumes by skipping ids for which `has_entry` is true.

Required manifest columns: series_id, patient_id, split (train | val | test |
external | ""), site, phase (a Phase code, "" when unlabelled), num_slices,
spacing_z, spacing_xy, z_lo, z_hi (cached slice range [z_lo, z_hi) that spans
liver dome to the kidneys' lower poles, used by slice selection), source. Any
other column (kvp, seconds after injection, confounders...) is kept as text.
"""

from __future__ import annotations

import csv
import hashlib
import json
import threading
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from phasejax import atomic
from phasejax.hu import AIR_HU, HU_MAX, HU_MIN
from phasejax.safe_text import csv_cell

REQUIRED_COLUMNS = (
    "series_id",
    "patient_id",
    "split",
    "site",
    "phase",
    "num_slices",
    "spacing_z",
    "spacing_xy",
    "z_lo",
    "z_hi",
    "source",
)
SPLITS = ("train", "val", "test", "external")


@dataclass(frozen=True, kw_only=True)
class CacheSpec:
    spacing_z: float = 5.0
    size: int = 256


class CacheError(RuntimeError):
    pass


def resample_to_cache(
    hu: np.ndarray, spacing: Sequence[float], spec: CacheSpec
) -> tuple[np.ndarray, float]:
    """Resample an HU volume [Z, H, W] with (z, y, x) spacing to the cache grid.

    z: slab averaging to `spec.spacing_z` (a thick-slab reconstruction, which is what
    a coarser slice thickness is), linear interpolation where the input is coarser.
    In plane: the FOV is padded with air to a square, then resized to size x size with
    an anti-aliasing prefilter. Returns (int16 volume, mm per cached pixel).
    """
    hu = np.asarray(hu, dtype=np.float32)
    if hu.ndim != 3:
        raise CacheError(f"expected a [Z, H, W] volume, got shape {hu.shape}")
    sz, sy, sx = (float(s) for s in spacing)
    vol = _resample_z(hu, sz, spec.spacing_z)
    vol, pixel_mm = _resample_inplane(vol, sy, sx, spec.size)
    return np.clip(np.rint(vol), HU_MIN, HU_MAX).astype(np.int16), pixel_mm


def resample_labels_to_cache(
    labels: np.ndarray, spacing: Sequence[float], spec: CacheSpec
) -> np.ndarray:
    """Nearest-neighbour version of `resample_to_cache` for organ label volumes."""
    sz, sy, sx = (float(s) for s in spacing)
    z_idx = _z_positions(labels.shape[0], sz, spec.spacing_z)
    lab = labels[np.clip(np.rint(z_idx).astype(int), 0, labels.shape[0] - 1)]
    lab = _pad_square(lab, sy, sx, 0)
    h = lab.shape[1]
    idx = np.clip(((np.arange(spec.size) + 0.5) * h / spec.size).astype(int), 0, h - 1)
    return lab[:, idx][:, :, idx].astype(np.uint8)


def _z_positions(n: int, sz: float, target: float) -> np.ndarray:
    """Input-slice coordinates (fractional indices) of the output slice centres."""
    extent = (n - 1) * sz
    n_out = max(1, int(np.floor(extent / target + 1e-6)) + 1)
    start = (extent - (n_out - 1) * target) / 2.0  # centre the output grid in the input range
    return (start + np.arange(n_out) * target) / max(sz, 1e-6)


def _resample_z(hu: np.ndarray, sz: float, target: float) -> np.ndarray:
    n = hu.shape[0]
    if n == 1:
        return hu
    pos = _z_positions(n, sz, target)
    if target > sz * 1.01:
        half = 0.5 * target / sz
        out = np.empty((len(pos),) + hu.shape[1:], dtype=np.float32)
        for k, p in enumerate(pos):
            lo = int(np.ceil(p - half - 1e-6))
            hi = int(np.floor(p + half + 1e-6))
            lo, hi = max(lo, 0), min(hi, n - 1)
            out[k] = hu[lo : hi + 1].mean(axis=0) if hi >= lo else hu[int(round(p))]
        return out
    lo = np.clip(np.floor(pos).astype(int), 0, n - 1)
    hi = np.clip(lo + 1, 0, n - 1)
    w = (pos - lo).astype(np.float32)[:, None, None]
    return hu[lo] * (1 - w) + hu[hi] * w


def _pad_square(vol: np.ndarray, sy: float, sx: float, fill: float) -> np.ndarray:
    """Pad so that the FOV is square in millimetres (and resample anisotropic pixels)."""
    _, h, w = vol.shape
    if abs(sy - sx) > 1e-3 * max(sy, sx):
        # Rare: non-square pixels. Resample x onto the y pixel size first.
        new_w = max(1, int(round(w * sx / sy)))
        idx = np.clip(((np.arange(new_w) + 0.5) * w / new_w).astype(int), 0, w - 1)
        vol = vol[:, :, idx]
        w = new_w
    side = max(h, w)
    if h == w:
        return vol
    out = np.full((vol.shape[0], side, side), fill, dtype=vol.dtype)
    oy, ox = (side - h) // 2, (side - w) // 2
    out[:, oy : oy + h, ox : ox + w] = vol
    return out


def _resample_inplane(vol: np.ndarray, sy: float, sx: float, size: int) -> tuple[np.ndarray, float]:
    vol = _pad_square(vol, sy, sx, AIR_HU)
    side = vol.shape[1]
    pixel_mm = side * sy / size
    if side == size:
        return vol, pixel_mm
    factor = side / size
    if factor > 1:
        sigma = (0, 0.5 * (factor - 1), 0.5 * (factor - 1)) if factor > 1.5 else (0, 0.4, 0.4)
        vol = ndimage.gaussian_filter(vol, sigma=sigma, mode="nearest")
    zoom = (1.0, size / side, size / side)
    out = ndimage.zoom(vol, zoom, order=1, mode="nearest", grid_mode=True)
    return out.astype(np.float32), pixel_mm


# --------------------------------------------------------------------------- entries


def init_cache(cache_dir: str | Path, spec: CacheSpec, **info: Any) -> Path:
    """Create (or reopen) a cache directory; refuses a different grid than the existing one."""
    root = Path(cache_dir)
    (root / "volumes").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    meta_path = root / "cache.json"
    meta = {"version": 1, **asdict(spec), **info}
    if meta_path.exists():
        old = _read_meta(meta_path)
        if (old.get("spacing_z"), old.get("size")) != (spec.spacing_z, spec.size):
            raise CacheError(
                f"{root} holds a cache on another grid (spacing_z={old.get('spacing_z')}, "
                f"size={old.get('size')}); use a new directory"
            )
        # Entries may be added or redone from here on: the old digest no longer holds
        # until finalize computes it again.
        meta = {**{k: v for k, v in old.items() if k != "content_digest"}, **meta}
    atomic.write_text(meta_path, json.dumps(meta, indent=2, sort_keys=True))
    return root


def _read_meta(path: Path) -> dict[str, Any]:
    """cache.json as a dict; CacheError (one line naming the file) when it cannot be."""
    try:
        meta = json.loads(path.read_text())
    except OSError as e:
        raise CacheError(f"{path}: cannot read ({type(e).__name__}: {e.strerror})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CacheError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise CacheError(f"{path}: expected a JSON object")
    return meta


def read_spec(cache_dir: str | Path) -> CacheSpec:
    """The grid recorded in a cache's cache.json (CacheError when it cannot be read)."""
    path = Path(cache_dir) / "cache.json"
    meta = _read_meta(path)
    try:
        return CacheSpec(spacing_z=float(meta["spacing_z"]), size=int(meta["size"]))
    except (KeyError, TypeError, ValueError) as e:
        raise CacheError(f"{path}: no usable grid (spacing_z, size): {e!r}") from None


# Bookkeeping kept in an entry's JSON but not a manifest column: the .npy's size, so that
# a volume cut short (disk full, a copy interrupted) is not taken for a finished entry, and
# the SHA-256 of its voxels (and mask), from which `content_digest` is built.
ENTRY_KEYS = ("npy_bytes", "content_sha256")


def _npy_consistent(path: Path) -> bool:
    """Whether an .npy file is as long as its own header says (entries written before
    npy_bytes was recorded are checked this way)."""
    try:
        with open(path, "rb") as f, _NPY_LOCK:
            fmt = np.lib.format
            version = fmt.read_magic(f)
            read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, _, dtype = read(f)
            offset = f.tell()
    except (OSError, ValueError):
        return False
    return path.stat().st_size == offset + int(np.prod(shape)) * np.dtype(dtype).itemsize


def has_entry(cache_dir: str | Path, series_id: str) -> bool:
    """Whether a series is in the cache in full: its row is written and its volume has the
    size recorded with it (a truncated or missing .npy is not an entry: it is redone)."""
    root = Path(cache_dir)
    meta, npy = root / "volumes" / f"{series_id}.json", root / "volumes" / f"{series_id}.npy"
    if not (meta.exists() and npy.exists()):
        return False
    try:
        row = json.loads(meta.read_text())
        size = npy.stat().st_size
    except (OSError, ValueError):
        return False
    expected = row.get("npy_bytes") if isinstance(row, dict) else None
    if expected is None:
        return _npy_consistent(npy)
    return size == int(expected)


def write_entry(
    cache_dir: str | Path,
    row: dict[str, Any],
    volume: np.ndarray,
    mask: np.ndarray | None = None,
) -> None:
    """Write one series (volume first, row last, each atomically) from any process."""
    root = Path(cache_dir)
    missing = [c for c in REQUIRED_COLUMNS if c not in row]
    if missing:
        raise CacheError(f"manifest row for {row.get('series_id')!r} lacks {missing}")
    if volume.dtype != np.int16 or volume.ndim != 3:
        raise CacheError(f"cache volumes are int16 [Z, S, S], got {volume.dtype} {volume.shape}")
    sid = str(row["series_id"])
    if mask is not None:
        if mask.shape != volume.shape:
            raise CacheError(f"mask shape {mask.shape} != volume shape {volume.shape}")
        mask = mask.astype(np.uint8)
        atomic.save_npy(root / "masks" / f"{sid}.npy", mask)
    npy = atomic.save_npy(root / "volumes" / f"{sid}.npy", volume)
    row = {**row, "npy_bytes": npy.stat().st_size, "content_sha256": _arrays_sha256(volume, mask)}
    atomic.write_text(root / "volumes" / f"{sid}.json", json.dumps(row, sort_keys=True))


def _arrays_sha256(volume: np.ndarray, mask: np.ndarray | None) -> str:
    """SHA-256 of a series' voxels (shape, then little-endian int16 bytes) and of its mask."""
    h = hashlib.sha256()
    for a, dtype in ((volume, "<i2"), (mask, "u1")):
        if a is None:
            h.update(b"none")
            continue
        h.update(repr(tuple(a.shape)).encode())
        h.update(np.ascontiguousarray(a, dtype=dtype).tobytes())
    return h.hexdigest()


def _entry_sha256(root: Path, row: dict[str, Any]) -> str:
    """An entry's content hash: recorded at write time, else computed from its files
    (caches written before the hash was recorded)."""
    recorded = row.get("content_sha256")
    if isinstance(recorded, str) and recorded:
        return recorded
    sid = str(row["series_id"])
    return _arrays_sha256(load_volume(root, sid, mmap=False), load_mask(root, sid))


def _manifest_row(entry: dict[str, Any]) -> dict[str, Any]:
    """An entry's JSON row without its bookkeeping (ENTRY_KEYS): its manifest.csv row."""
    return {k: v for k, v in entry.items() if k not in ENTRY_KEYS}


def _entry_rows(root: Path) -> list[dict[str, Any]]:
    """Every entry's JSON row, bookkeeping included, in series_id (file name) order."""
    return [json.loads(p.read_text()) for p in sorted((root / "volumes").glob("*.json"))]


def _digest(root: Path, entries: Iterable[dict[str, Any]]) -> str:
    h = hashlib.sha256()
    for row in entries:
        h.update(json.dumps(_manifest_row(row), sort_keys=True, default=str).encode())
        h.update(_entry_sha256(root, row).encode())
    return h.hexdigest()


def content_digest(cache_dir: str | Path) -> str:
    """One SHA-256 over everything a run reads from a cache: each series' manifest row
    (labels, splits, slab) and the hash of its voxels and mask, in series_id order.

    Two machines that generate "the same" cohort can differ in a few voxels (numpy and
    scipy pick vector code paths by processor), and then so do the runs trained on it;
    equal digests rule that out, so a difference between runs is the training's.
    """
    root = Path(cache_dir)
    return _digest(root, _entry_rows(root))


def finalize(cache_dir: str | Path) -> Path:
    """Assemble manifest.csv from the per-series rows (sorted by series_id) and record the
    cache's `content_digest` in cache.json."""
    root = Path(cache_dir)
    entries = _entry_rows(root)
    path = write_manifest(root, [_manifest_row(r) for r in entries])
    meta_path = root / "cache.json"
    meta = _read_meta(meta_path) if meta_path.exists() else {}
    meta["content_digest"] = _digest(root, entries)
    atomic.write_text(meta_path, json.dumps(meta, indent=2, sort_keys=True))
    return path


def recorded_digest(cache_dir: str | Path) -> str | None:
    """The content digest that `finalize` wrote into cache.json (None for caches
    finalized before it was recorded)."""
    path = Path(cache_dir) / "cache.json"
    if not path.exists():
        return None
    digest = _read_meta(path).get("content_digest")
    return digest if isinstance(digest, str) else None


def write_manifest(cache_dir: str | Path, rows: Iterable[dict[str, Any]]) -> Path:
    rows = sorted(rows, key=lambda r: str(r["series_id"]))
    extra = sorted({k for r in rows for k in r} - set(REQUIRED_COLUMNS))
    path = Path(cache_dir) / "manifest.csv"
    with atomic.open_atomic(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=[*REQUIRED_COLUMNS, *extra])
        w.writeheader()
        for r in rows:
            w.writerow({k: csv_cell(r.get(k, "")) for k in w.fieldnames})
    return path


def read_manifest(cache_dir: str | Path) -> list[dict[str, str]]:
    path = Path(cache_dir) / "manifest.csv"
    if not path.exists():
        raise CacheError(
            f"{cache_dir} has no manifest.csv: not a prepared cache (or not finalized)"
        )
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if rows:
        missing = [c for c in REQUIRED_COLUMNS if c not in rows[0]]
        if missing:
            raise CacheError(f"{path} lacks columns {missing}")
    return rows


# np.load parses the .npy header with ast.literal_eval, which is not thread-safe on
# CPython 3.11 ("AST constructor recursion depth mismatch", gh-106905): Grain's reader
# threads load volumes concurrently, so every load of this module goes through one lock.
# Only the header parse and mmap set-up are serialised; pixel reads happen later.
_NPY_LOCK = threading.Lock()


def _load_npy(path: Path, mmap: bool) -> np.ndarray:
    with _NPY_LOCK:
        return np.load(path, mmap_mode="r" if mmap else None)


def load_volume(cache_dir: str | Path, series_id: str, mmap: bool = True) -> np.ndarray:
    return _load_npy(Path(cache_dir) / "volumes" / f"{series_id}.npy", mmap)


def load_mask(cache_dir: str | Path, series_id: str, mmap: bool = False) -> np.ndarray | None:
    path = Path(cache_dir) / "masks" / f"{series_id}.npy"
    return _load_npy(path, mmap=mmap) if path.exists() else None


# --------------------------------------------------------------------------- splits


def assign_splits(
    patient_ids: Iterable[str],
    *,
    seed: int,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
) -> dict[str, str]:
    """Patient-level split, fixed by `seed`: no patient is in two splits.

    Each patient's position comes from a hash of (seed, patient id), so adding a
    patient does not reshuffle the others.
    """
    ids = sorted(set(patient_ids))

    def key(pid: str) -> str:
        return hashlib.sha256(f"{seed}:{pid}".encode()).hexdigest()

    order = sorted(ids, key=key)
    n = len(order)
    n_test = int(round(n * test_fraction))
    n_val = int(round(n * val_fraction))
    out = {}
    for i, pid in enumerate(order):
        out[pid] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    return out
