"""Input pipeline: prepared cache -> fixed-shape numpy batches for training, eval and predict.

Batch (per process; the trainer assembles global arrays with
jax.make_array_from_process_local_data)::

    image   float32 [B, S, H, W, C]  S = data.num_slices, H = W = data.image_size,
                                     C = windows per slice (3 for window="multi")
    label   int32   [B]              index in label_set(data.label_set).phases; -1 unlabelled
    weight  float32 [B]              1 for a series, 0 for padding (eval's last batch)
    index   int32   [B]              row of the series in split_rows(...); -1 for padding

Training batches of a model with a structure-HU head (model.hu_head) also carry, from the
cohort's organ masks (`structure_hu`)::

    hu          float32 [B, K]       mean HU of each of HU_STRUCTURES over the input
                                     slices, as (HU - 100) / 100
    hu_present  float32 [B, K]       1 where the structure is in those slices
    seg         float32 [B, S, g, g, K + 1]  model.hu_head "roi" only: share of each pixel
                                     of the first-stage feature grid (g = seg_grid_size)
                                     covered by each structure, last channel the rest

One function, `preprocess`, turns a cached HU volume into the network input for
training (with an rng: slice jitter and augmentation), evaluation and prediction
(rng None: deterministic), so the three can never drift apart:

1. slice selection inside the series' liver-to-kidney range [z_lo, z_hi)
   ("central": S consecutive slices at its centre; "even": one slice at the centre
   of each of S equal parts of the range); training shifts each slice by up to
   +/- data.slice_jitter. Slices are stacked in increasing cache z index, i.e. in
   the cache's fixed anatomical order, whatever the order of selection;
2. training only: domain randomisation of the structures that do not define the
   phase (data.tissue_randomization, from the cohort's organ masks), kidney
   scrambling (data.kidney_scramble), per-structure enhancement jitter
   (data.structure_jitter; data.arterial_jitter in EAP / LAP series, all but the portal
   and hepatic veins) and an intensity offset in HU;
3. resize to data.image_size with an anti-aliasing prefilter, fused with the
   training rotation / scale / translation and elastic deformation (data.elastic; one
   transform per series); with data.crop_mm > 0 the resized field is that square in
   front of the spine (phasejax.data.crop; `input_crop` finds it once per series, on its
   evaluation slices, from the cache's pixel size, the manifest's `spacing_xy`), with
   data.field_of_view = "body" the square around the body's outline on those slices;
4. training only: random erasing (data.erase_boxes), random blur (data.blur_max_px) and
   Gaussian noise in HU;
5. HU windowing to [0, 1] (phasejax.data.windowing).

Randomness is a pure function of (train.seed, position in the sample stream): the
same batches and augmentations on any number of processes and workers, and after a
restart from a checkpointed iterator state.

Grain is used only through phasejax.data.grain_io, imported lazily (Grain imports jax).
"""

from __future__ import annotations

import functools
import hashlib
import math
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from phasejax.cohort.structures import Label
from phasejax.config import Config, DataConfig, SliceSelection
from phasejax.data import augment, windowing
from phasejax.data.cache import CacheError, load_mask, load_volume, read_manifest
from phasejax.data.crop import Crop, find_body_crop, find_crop
from phasejax.phases import ARTERIAL, LabelSet, label_set

SLICE_SELECTIONS: tuple[str, ...] = typing.get_args(SliceSelection)
# What the structure-HU head (model.hu_head) learns to read: the vessels and organs whose
# enhancement defines the phase (DESIGN.md; Liu et al. 2025 name aorta, portal vein,
# kidneys and excretion as the readers' cues), in this order.
HU_STRUCTURES: tuple[Label, ...] = (
    Label.AORTA, Label.PORTAL_VEIN, Label.HEPATIC_VEIN, Label.IVC, Label.LIVER, Label.SPLEEN,
    Label.KIDNEY_CORTEX, Label.KIDNEY_MEDULLA, Label.KIDNEY_COLLECTING,
)  # fmt: skip
# Targets as (HU - 100) / 100: blood and organs span about -10..450 HU, i.e. -1..3.5.
HU_TARGET_CENTER = 100.0
HU_TARGET_SCALE = 100.0
# On the 192 px cache grid (~2 mm pixels) 20 pixels are a vessel of ~10 mm in one slice.
HU_MIN_PIXELS = 20
# Separate numpy seed streams per purpose, so adding a random draw to one
# (e.g. a new augmentation) never changes the draws of another.
_STREAM_AUGMENT = 1
_STREAM_STEP2 = 2  # network 2's own batch (train.step2_own_batch): its augmentations
_STREAM_STEP2_ORDER = 3  # and the order of its arterial series


# --------------------------------------------------------------------------- rows


def label_index(phase: str, labels: LabelSet) -> int:
    """Index of `phase` in the label set; -1 for an unlabelled series ("")."""
    return labels.index(phase) if phase else -1


def split_rows(
    cache_dir: str | Path, split: str, cfg: Config, *, include_unlabelled: bool = False
) -> list[dict[str, str]]:
    """Manifest rows of `split`, sorted by series_id, restricted to the label set.

    Rows whose phase is outside the label set (e.g. NC with "paper4") are dropped.
    Unlabelled rows (phase "") are dropped unless `include_unlabelled` (prediction
    only: training and metrics need labels). For split "train", data.train_fraction
    < 1 keeps that share of training PATIENTS (all their series), chosen by a hash
    of (train.seed, patient_id): a smaller fraction keeps a subset of the patients
    a larger one keeps, so learning-curve points are nested.
    """
    labels = label_set(cfg.data.label_set)
    rows = [r for r in read_manifest(cache_dir) if r["split"] == split]
    rows = [
        r for r in rows if (r["phase"] in labels.codes) or (include_unlabelled and r["phase"] == "")
    ]
    rows.sort(key=lambda r: r["series_id"])
    frac = cfg.data.train_fraction
    if not 0.0 < frac <= 1.0:
        raise ValueError(f"data.train_fraction must be in (0, 1], got {frac}")
    if split == "train" and frac < 1.0 and rows:
        patients = sorted({r["patient_id"] for r in rows})
        seed = cfg.train.seed

        def key(pid: str) -> str:
            return hashlib.sha256(f"{seed}:{pid}".encode()).hexdigest()

        n_keep = max(1, int(round(frac * len(patients))))
        keep = set(sorted(patients, key=key)[:n_keep])
        rows = [r for r in rows if r["patient_id"] in keep]
    if cfg.data.slab == "image":
        rows = [{**r, **image_slab(cache_dir, r)} for r in rows]
    return rows


_IMAGE_SLABS: dict[tuple[str, str], dict[str, str]] = {}


def image_slab(cache_dir: str | Path, row: dict[str, str]) -> dict[str, str]:
    """{"z_lo", "z_hi"} of a cached series by `find_slab` on its volume (data.slab "image"),
    found once per process and series."""
    from phasejax.data.prepare import find_slab

    key = (str(cache_dir), row["series_id"])
    if key not in _IMAGE_SLABS:
        volume = np.asarray(load_cached(cache_dir, row["series_id"]))
        slab = find_slab(volume, float(row["spacing_z"]), row_pixel_mm(row))
        _IMAGE_SLABS[key] = {"z_lo": str(int(slab.z_lo)), "z_hi": str(int(slab.z_hi))}
    return _IMAGE_SLABS[key]


def class_counts(cache_dir: str | Path, cfg: Config) -> np.ndarray:
    """Training series per class of the label set (int64 [K]), as training sees them."""
    labels = label_set(cfg.data.label_set)
    idx = [label_index(r["phase"], labels) for r in split_rows(cache_dir, "train", cfg)]
    return np.bincount(np.asarray(idx, np.int64), minlength=labels.num_classes)


# --------------------------------------------------------------------------- preprocessing


def check_data_config(data_cfg: DataConfig) -> None:
    """Raise ValueError naming a bad data.* option, before any Grain thread or worker
    would hit it in the middle of a batch."""
    windowing.window_names(data_cfg.window)
    if data_cfg.slice_selection not in SLICE_SELECTIONS:
        raise ValueError(
            f"unknown data.slice_selection {data_cfg.slice_selection!r}; known: {SLICE_SELECTIONS}"
        )
    for key in ("num_slices", "image_size"):
        if getattr(data_cfg, key) < 1:
            raise ValueError(f"data.{key} must be >= 1, got {getattr(data_cfg, key)}")
    for key in (
        "slice_jitter",
        "erase_boxes",
        "kidney_scramble",
        "hu_scramble",
        "crop_mm",
        "structure_jitter",
        "arterial_jitter",
        "elastic",
    ):
        if getattr(data_cfg, key) < 0:
            raise ValueError(f"data.{key} must be >= 0, got {getattr(data_cfg, key)}")
    if data_cfg.crop_mm > 0 and data_cfg.field_of_view != "scan":
        raise ValueError(
            f"data.crop_mm = {data_cfg.crop_mm} is a square in front of the spine and "
            f"data.field_of_view = {data_cfg.field_of_view!r} another field of view; set one"
        )


def uses_masks(data_cfg: DataConfig) -> bool:
    """Whether training augmentation reads the cohort's organ masks."""
    return (
        data_cfg.tissue_randomization > 0
        or data_cfg.kidney_scramble > 0
        or data_cfg.structure_jitter > 0
        or data_cfg.arterial_jitter > 0
    )


def input_shape(data_cfg: DataConfig) -> tuple[int, int, int, int]:
    """(S, H, W, C) of one preprocessed series."""
    c = windowing.num_channels(data_cfg.window)
    return (data_cfg.num_slices, data_cfg.image_size, data_cfg.image_size, c)


def select_slices(
    z_lo: int,
    z_hi: int,
    num_z: int,
    num_slices: int,
    mode: str,
    *,
    jitter: int = 0,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Cache slice indices (int, ascending, length num_slices) inside [0, num_z).

    "central": num_slices consecutive slices whose middle is the middle of
    [z_lo, z_hi) (ties towards z_hi, so that central and even pick the same
    middle slice for odd counts). "even": the slice containing the centre of each of
    num_slices equal parts of [z_lo, z_hi), symmetric about the range's centre.
    A range with z_hi <= z_lo (unknown anatomy) falls back to the whole volume.
    With `rng` and `jitter` > 0 every slice moves independently by a uniform
    integer in [-jitter, jitter], then indices are clipped to the volume and sorted
    so the stack keeps its anatomical order.
    """
    if mode not in SLICE_SELECTIONS:
        raise ValueError(f"unknown data.slice_selection {mode!r}; known: {SLICE_SELECTIONS}")
    if num_slices < 1:
        raise ValueError(f"data.num_slices must be >= 1, got {num_slices}")
    lo, hi = int(z_lo), int(z_hi)
    lo, hi = max(lo, 0), min(hi, num_z)
    if hi <= lo:
        lo, hi = 0, num_z
    n = hi - lo
    k = np.arange(num_slices)
    if mode == "central":
        idx = lo + (n - num_slices + 1) // 2 + k
    else:
        idx = lo + ((2 * k + 1) * n) // (2 * num_slices)
    if rng is not None and jitter > 0:
        idx = idx + rng.integers(-jitter, jitter + 1, size=num_slices)
    return np.sort(np.clip(idx, 0, num_z - 1)).astype(np.int64)


def crops_input(data_cfg: DataConfig) -> bool:
    """Whether the field of view is less than the whole image (crop_mm or the body square)."""
    return data_cfg.crop_mm > 0 or data_cfg.field_of_view == "body"


def input_crop(
    volume: np.ndarray, z_lo: int, z_hi: int, data_cfg: DataConfig, pixel_mm: float | None
) -> Crop | None:
    """The field of view of a series: None (the whole image) unless data.crop_mm > 0
    (`phasejax.data.crop.find_crop`, which needs `pixel_mm`) or data.field_of_view is
    "body" (`phasejax.data.crop.find_body_crop`). Found on the series'
    evaluation slices (no jitter), so it is a property of the series: training, evaluation
    and predict crop the same square whatever slices they then take."""
    if not crops_input(data_cfg):
        return None
    body = data_cfg.field_of_view == "body"
    if not body and pixel_mm is None:
        raise ValueError("data.crop_mm needs the cached pixel size (the manifest's spacing_xy)")
    idx = select_slices(z_lo, z_hi, volume.shape[0], data_cfg.num_slices, data_cfg.slice_selection)
    hu = np.asarray(volume[idx], dtype=np.float32)
    if body:
        return find_body_crop(hu)
    return find_crop(hu, pixel_mm, data_cfg.crop_mm, data_cfg.crop_anterior_mm)


def seg_grid_size(image_size: int) -> int:
    """Side of the ResNets' first-stage feature map for an input side of `image_size`: the
    grid of the "roi" head's segmentation (stride-2 stem convolution, stride-2 max pool,
    each ceil(n / 2); phasejax.models.resnet.ResNet.feature_size(size, 1))."""
    n = int(image_size)
    for _ in range(2):
        n = math.ceil(n / 2)
    return n


def structure_fractions(
    labels: np.ndarray, grid: int, affine: augment.Affine, crop: Crop | None = None
) -> np.ndarray:
    """Soft segmentation target float32 [S, grid, grid, len(HU_STRUCTURES) + 1]: the share of
    each output pixel covered by each structure (last channel: everything else), after the
    same crop, resize and transform as the image (`augment.resample_slices`)."""
    labels = np.asarray(labels)
    chans = [
        augment.resample_slices((labels == s).astype(np.float32), grid, affine, 0.0, crop)
        for s in HU_STRUCTURES
    ]
    frac = np.clip(np.stack(chans, axis=-1), 0.0, 1.0)
    rest = np.clip(1.0 - frac.sum(axis=-1, keepdims=True), 0.0, 1.0)
    return np.concatenate([frac, rest], axis=-1).astype(np.float32)


def structure_hu(hu: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Targets of the structure-HU head from HU slices and their organ masks (same shape).

    Returns (target, present), float32 [len(HU_STRUCTURES)] each: the mean HU of each
    structure over all given slices, as (HU - HU_TARGET_CENTER) / HU_TARGET_SCALE, and 1
    where it covers at least HU_MIN_PIXELS pixels (else target 0, present 0: no loss).
    """
    lab = np.asarray(labels).reshape(-1).astype(np.int64)
    n = max(int(s) for s in HU_STRUCTURES) + 1
    keep = lab < n
    lab = lab[keep]
    sums = np.bincount(lab, weights=np.asarray(hu, np.float64).reshape(-1)[keep], minlength=n)
    counts = np.bincount(lab, minlength=n)
    idx = np.asarray([int(s) for s in HU_STRUCTURES])
    present = counts[idx] >= HU_MIN_PIXELS
    mean = np.where(present, sums[idx] / np.maximum(counts[idx], 1), HU_TARGET_CENTER)
    target = (mean - HU_TARGET_CENTER) / HU_TARGET_SCALE
    return target.astype(np.float32), present.astype(np.float32)


def preprocess(
    volume: np.ndarray,
    z_lo: int,
    z_hi: int,
    data_cfg: DataConfig,
    rng: np.random.Generator | None = None,
    labels: np.ndarray | None = None,
    pixel_mm: float | None = None,
    crop: Crop | None = None,
    *,
    arterial: bool = False,
) -> np.ndarray:
    """HU volume [Z, H, H] (int16 cache or float) -> float32 [S, size, size, C].

    rng None: deterministic (eval, predict). rng given and data_cfg.augment:
    slice jitter, affine, intensity offset and noise, all drawn from `rng`.
    With data_cfg.augment False the rng is ignored, so a training input equals
    the evaluation input of the same series. `labels` (the cohort's organ masks on the
    cache grid) enable data.tissue_randomization during training. `pixel_mm` (mm per
    cached pixel) is needed by data.crop_mm; `crop`, that series' `input_crop` when the
    caller has it already (it is found from the image otherwise). `arterial`: the series is
    labelled EAP or LAP, which data.arterial_jitter needs to know.
    """
    return _preprocess(
        volume, z_lo, z_hi, data_cfg, rng, labels, pixel_mm, crop, targets=False, arterial=arterial
    )[0]


def row_input(cache_dir: str | Path, row: dict[str, str], data_cfg: DataConfig) -> np.ndarray:
    """The evaluation input of one manifest row of a prepared cache (`preprocess`, no rng)."""
    return preprocess(
        load_cached(cache_dir, row["series_id"]),
        int(row["z_lo"]),
        int(row["z_hi"]),
        data_cfg,
        pixel_mm=row_pixel_mm(row),
    )


class WithTargets(NamedTuple):
    """A network input with its structure-HU targets (see `preprocess_with_targets`)."""

    image: np.ndarray  # float32 [S, size, size, C]
    hu: np.ndarray  # float32 [len(HU_STRUCTURES)], (HU - HU_TARGET_CENTER) / HU_TARGET_SCALE
    present: np.ndarray  # float32 [len(HU_STRUCTURES)], 1 where the structure is in the slices
    scrambled: bool  # data.hu_scramble moved the structures: no physiological phase
    seg: np.ndarray | None = None  # structure_fractions on the roi head's grid, if asked


def preprocess_with_targets(
    volume: np.ndarray,
    z_lo: int,
    z_hi: int,
    data_cfg: DataConfig,
    rng: np.random.Generator | None,
    labels: np.ndarray,
    seg_grid: int = 0,
    pixel_mm: float | None = None,
    crop: Crop | None = None,
    *,
    arterial: bool = False,
) -> WithTargets:
    """`preprocess` plus the structure-HU targets of exactly those slices (`structure_hu`).

    The targets are read after the HU augmentations that change a structure's mean
    (intensity offset, kidney scrambling, data.hu_scramble), so they describe the image the
    network gets. Without data.hu_scramble no random draw is added, so the image equals
    `preprocess`'s for the same rng. `seg_grid` > 0 adds the soft segmentation target of the
    "roi" head on that grid (`structure_fractions`).
    """
    image, found = _preprocess(
        volume,
        z_lo,
        z_hi,
        data_cfg,
        rng,
        labels,
        pixel_mm,
        crop,
        targets=True,
        seg_grid=seg_grid,
        arterial=arterial,
    )
    assert found is not None
    return WithTargets(image, *found)


def _preprocess(
    volume: np.ndarray,
    z_lo: int,
    z_hi: int,
    data_cfg: DataConfig,
    rng: np.random.Generator | None,
    labels: np.ndarray | None,
    pixel_mm: float | None,
    crop: Crop | None,
    *,
    targets: bool,
    seg_grid: int = 0,
    arterial: bool = False,
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, bool, np.ndarray | None] | None]:
    if volume.ndim != 3 or volume.shape[1] != volume.shape[2]:
        raise ValueError(f"expected a cached volume [Z, H, H], got shape {volume.shape}")
    if targets and labels is None:
        raise ValueError("structure-HU targets need the organ masks (labels)")
    train = rng is not None and data_cfg.augment
    idx = select_slices(
        z_lo,
        z_hi,
        volume.shape[0],
        data_cfg.num_slices,
        data_cfg.slice_selection,
        jitter=data_cfg.slice_jitter if train else 0,
        rng=rng if train else None,
    )
    # Fancy indexing on a memmap reads only the selected slices from disk.
    hu = np.asarray(volume[idx], dtype=np.float32)
    if crop is None:
        crop = input_crop(volume, z_lo, z_hi, data_cfg, pixel_mm)
    selected = None
    if labels is not None and (targets or (train and uses_masks(data_cfg))):
        selected = np.asarray(labels[idx])  # read the memmap's slices once
    affine, scrambled = augment.IDENTITY, False
    if train:
        assert rng is not None
        affine = augment.sample_affine(rng, data_cfg)
        offset = augment.intensity_offset(rng, data_cfg)
        if selected is not None and uses_masks(data_cfg):
            if data_cfg.tissue_randomization > 0:
                hu = augment.randomize_tissues(hu, selected, rng, data_cfg.tissue_randomization)
            if data_cfg.kidney_scramble > 0:
                hu = augment.scramble_kidneys(
                    hu,
                    selected,
                    rng,
                    data_cfg.kidney_scramble,
                    data_cfg.kidney_scramble_collecting,
                )
            if data_cfg.structure_jitter > 0:
                hu = augment.jitter_structures(
                    hu, selected, rng, data_cfg.structure_jitter, HU_STRUCTURES
                )
            if arterial and data_cfg.arterial_jitter > 0:
                hu = augment.jitter_structures(
                    hu, selected, rng, data_cfg.arterial_jitter, augment.ARTERIAL_JITTER
                )
        hu = hu + np.float32(offset)
        if targets and data_cfg.hu_scramble > 0:
            hu, scrambled = augment.scramble_structures(
                hu, selected, rng, data_cfg.hu_scramble, HU_STRUCTURES
            )
    found = None
    if targets:
        seg = structure_fractions(selected, seg_grid, affine, crop) if seg_grid else None
        found = (*structure_hu(hu, selected), scrambled, seg)
    hu = augment.resample_slices(hu, data_cfg.image_size, affine, crop=crop)
    if train:
        hu = augment.erase_boxes(hu, rng, data_cfg.erase_boxes)
        hu = augment.blur(hu, rng, data_cfg.blur_max_px)
        hu = augment.add_noise(hu, rng, data_cfg.noise_hu)
    return windowing.apply_window(hu, data_cfg.window), found


# --------------------------------------------------------------------------- elements


_CROPS: dict[tuple[str, str, DataConfig], Crop | None] = {}


@dataclass(frozen=True)
class _Series:
    """Loads and preprocesses one row of a split; picklable for Grain workers."""

    cache_dir: str
    rows: tuple[dict[str, str], ...]
    data_cfg: DataConfig
    seed: int
    training: bool
    hu_targets: bool = False  # training elements also carry "hu" / "hu_present"
    seg_grid: int = 0  # > 0: and "seg", the roi head's segmentation target on this grid
    # Indices into `rows` of the arterial series: when given, each training element also
    # carries one of them, for network 2's own batch ("image2", "label2", "weight2";
    # train.step2_own_batch), each once per pass over them in an order of their own.
    arterial: tuple[int, ...] = ()

    def element(self, row_index: int, position: int = -1) -> dict[str, np.ndarray]:
        out = self._element(self.rows[row_index], position, _STREAM_AUGMENT)
        out["index"] = np.int32(row_index)
        if self.arterial:
            k = self.arterial[arterial_slot(self.seed, len(self.arterial), position)]
            second = self._element(self.rows[k], position, _STREAM_STEP2)
            out.update(image2=second["image"], label2=second["label"], weight2=second["weight"])
        return out

    def _element(self, row: dict[str, str], position: int, stream: int) -> dict[str, np.ndarray]:
        rng = None
        if self.training:
            rng = np.random.default_rng([self.seed, stream, position])
        labels = None
        if self.training and (uses_masks(self.data_cfg) or self.hu_targets):
            labels = load_mask(self.cache_dir, row["series_id"], mmap=True)
        volume = load_cached(self.cache_dir, row["series_id"])
        z_lo, z_hi = int(row["z_lo"]), int(row["z_hi"])
        pixel_mm = row_pixel_mm(row)
        crop = self._crop(row["series_id"], volume, z_lo, z_hi, pixel_mm)
        arterial = row["phase"] in ARTERIAL  # Phase is a StrEnum: "EAP" == Phase.EAP
        out: dict[str, np.ndarray] = {}
        if self.training and self.hu_targets:
            if labels is None:
                raise CacheError(
                    f"{self.cache_dir}: series {row['series_id']} has no organ mask; "
                    "model.hu_head learns from the masks of the built-in cohort"
                )
            got = preprocess_with_targets(
                volume,
                z_lo,
                z_hi,
                self.data_cfg,
                rng,
                labels,
                self.seg_grid,
                pixel_mm,
                crop,
                arterial=arterial,
            )
            image, out["hu"], out["hu_present"] = got.image, got.hu, got.present
            if got.seg is not None:
                out["seg"] = got.seg
            # A scrambled series teaches only the HU head: its structures show no phase.
            phase = "" if got.scrambled else row["phase"]
        else:
            image = preprocess(
                volume, z_lo, z_hi, self.data_cfg, rng, labels, pixel_mm, crop, arterial=arterial
            )
            phase = row["phase"]
        return {
            "image": image,
            "label": np.int32(label_index(phase, label_set(self.data_cfg.label_set))),
            "weight": np.float32(1.0),
            **out,
        }

    def _crop(
        self, series_id: str, volume: np.ndarray, z_lo: int, z_hi: int, pixel_mm: float | None
    ) -> Crop | None:
        # A series' crop is fixed (input_crop); finding it costs more than the rest of the
        # preprocessing, so each process finds it once per series.
        if not crops_input(self.data_cfg):
            return None
        key = (self.cache_dir, series_id, self.data_cfg)
        if key not in _CROPS:
            _CROPS[key] = input_crop(volume, z_lo, z_hi, self.data_cfg, pixel_mm)
        return _CROPS[key]

    def __call__(self, position: int, row_index: int) -> dict[str, np.ndarray]:
        # grain map_with_index: (index in the stream, element = row index)
        return self.element(int(row_index), int(position))


@functools.lru_cache(maxsize=4)
def _arterial_order(seed: int, n: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, _STREAM_STEP2_ORDER, epoch]).permutation(n)


def arterial_slot(seed: int, n: int, position: int) -> int:
    """Which of n arterial series network 2's own batch takes at stream `position`: a fresh
    permutation of all n every n positions, a pure function of (seed, position) like the
    augmentations, so resuming and any process or worker count give the same series."""
    if position < 0:
        raise ValueError("network 2's own batch needs the element's stream position")
    epoch, j = divmod(position, n)
    return int(_arterial_order(seed, n, epoch)[j])


def row_pixel_mm(row: dict[str, str]) -> float | None:
    """mm per cached pixel of a manifest row (`spacing_xy`), None where it is not given."""
    text = row.get("spacing_xy", "")
    return float(text) if text else None


def load_cached(cache_dir: str | Path, series_id: str) -> np.ndarray:
    """The cached volume (memory-mapped), with an error that names the file on failure."""
    try:
        return load_volume(cache_dir, series_id, mmap=True)
    except (OSError, ValueError) as e:
        path = Path(cache_dir) / "volumes" / f"{series_id}.npy"
        raise CacheError(f"cannot read cached volume {path}: {e}") from e


def padding_element(shape: tuple[int, int, int, int]) -> dict[str, np.ndarray]:
    return {
        "image": np.zeros(shape, np.float32),
        "label": np.int32(-1),
        "weight": np.float32(0.0),
        "index": np.int32(-1),
    }


# --------------------------------------------------------------------------- iterators


def _per_process(batch_size: int, process_index: int, process_count: int) -> int:
    if process_count < 1 or not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} not in [0, {process_count})")
    if batch_size < process_count or batch_size % process_count:
        raise ValueError(
            f"batch size {batch_size} must be a positive multiple of the process count "
            f"{process_count}"
        )
    return batch_size // process_count


def train_iterator(
    cache_dir: str | Path,
    cfg: Config,
    *,
    process_index: int = 0,
    process_count: int = 1,
    num_threads: int = 2,
) -> Any:
    """Infinite, checkpointable grain.DatasetIterator of this process's training batches.

    Shuffled by cfg.train.seed, reshuffled every epoch, repeated forever (so there
    is no remainder to drop: an epoch boundary falls inside a batch, and each series
    is seen once per epoch). Per-process batch = cfg.train.batch_size //
    process_count. `get_state()` returns a small JSON-serialisable dict;
    `set_state(state)` on a fresh iterator continues with exactly the same batches.
    With data.worker_count > 0 batches are made in Grain worker processes: call
    `close()` on the iterator when done.
    """
    from phasejax.data import grain_io

    check_data_config(cfg.data)
    if cfg.data.hu_scramble > 0 and cfg.model.hu_head == "none":
        raise ValueError("data.hu_scramble trains the structure-HU head: set model.hu_head too")
    bp = _per_process(cfg.train.batch_size, process_index, process_count)
    rows = split_rows(cache_dir, "train", cfg)
    if not rows:
        raise CacheError(
            f"{cache_dir}: no training series with phases in label set {cfg.data.label_set!r}"
        )
    series = _Series(
        str(cache_dir),
        tuple(rows),
        cfg.data,
        cfg.train.seed,
        training=True,
        hu_targets=cfg.model.hu_head != "none",
        seg_grid=seg_grid_size(cfg.data.image_size) if cfg.model.hu_head == "roi" else 0,
        arterial=step2_rows(rows, cfg),
    )
    ds = grain_io.train_stream(
        len(rows),
        series,
        seed=cfg.train.seed,
        per_process_batch=bp,
        process_index=process_index,
        process_count=process_count,
    )
    return grain_io.to_iterator(ds, worker_count=cfg.data.worker_count, num_threads=num_threads)


def step2_rows(rows: list[dict[str, str]], cfg: Config) -> tuple[int, ...]:
    """Indices of the arterial rows that network 2's own batch draws from; () unless
    train.step2_own_batch is on for a two-step model (a one-step model ignores it)."""
    if not cfg.train.step2_own_batch or cfg.model.strategy != "two_step":
        return ()
    if cfg.model.hu_head != "none":
        raise ValueError(
            "train.step2_own_batch needs model.hu_head 'none': the structure-HU targets "
            "come with the shared batch only"
        )
    labels = label_set(cfg.data.label_set)
    paths = labels.two_step_paths()
    arterial = tuple(i for i, r in enumerate(rows) if paths[labels.index(r["phase"])][1] >= 0)
    if not arterial:
        raise CacheError("train.step2_own_batch: no arterial training series for network 2")
    return arterial


def num_eval_batches(num_series: int, batch_size: int) -> int:
    return math.ceil(num_series / batch_size)


@dataclass(frozen=True)
class _EvalBatch:
    series: _Series
    batch_size: int  # global
    per_process: int
    process_index: int
    shape: tuple[int, int, int, int]

    def __call__(self, k: int) -> dict[str, np.ndarray]:
        from phasejax.data.grain_io import stack_batch

        start = int(k) * self.batch_size + self.process_index * self.per_process
        n = len(self.series.rows)
        elements = [
            self.series.element(p) if p < n else padding_element(self.shape)
            for p in range(start, start + self.per_process)
        ]
        return stack_batch(elements)


def eval_batches(
    cache_dir: str | Path,
    split: str,
    cfg: Config,
    *,
    batch_size: int,
    process_index: int = 0,
    process_count: int = 1,
    include_unlabelled: bool = False,
    num_threads: int = 2,
) -> Iterator[dict[str, np.ndarray]]:
    """Finite, deterministic batches of `split` (global `batch_size`, split over processes).

    Global batch k holds rows [k * batch_size, (k + 1) * batch_size) of
    split_rows(...) in order, process p its p-th contiguous share; rows past the end
    are padding (weight 0, index -1, label -1, zero image). Every process yields the
    same number of batches, ceil(N / batch_size), so a jitted step sees one shape
    and every series is counted exactly once over all processes.
    """
    from phasejax.data import grain_io

    check_data_config(cfg.data)
    bp = _per_process(batch_size, process_index, process_count)
    rows = split_rows(cache_dir, split, cfg, include_unlabelled=include_unlabelled)
    series = _Series(str(cache_dir), tuple(rows), cfg.data, cfg.train.seed, training=False)
    fn = _EvalBatch(series, batch_size, bp, process_index, input_shape(cfg.data))
    ds = grain_io.batch_map(num_eval_batches(len(rows), batch_size), fn)
    return grain_io.iterate(ds, num_threads=num_threads)
