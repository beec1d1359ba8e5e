"""Saliency of a trained classifier: Grad-CAM on representative series and its anatomical share.

`compute_saliency(run_dir, cache_dir)` picks, for each phase, a few correctly classified
series of a split, computes their Grad-CAM maps (phasejax.models.gradcam) on the exact
network input (the pipeline's `preprocess`), and writes

- `run_dir/saliency.npz`: per chosen series the HU slices on the input grid, the maps
  (combined and per network), the organ label masks on the same grid and the shares;
  `phasejax.plotting.saliency` draws the figures from it without jax;
- `run_dir/saliency.json`: the shares per phase and per series (JSON, no arrays).

The share of a structure group is the fraction of the total map mass (sum of map values
over the series' input slices) on the pixels of that group. Its baseline is the group's
area fraction, i.e. the share a uniform map would give, so share / area > 1 means the
network looks at that group more than its size explains. Masks exist for the synthetic
cohort (phasejax.cohort writes them into the cache); for a cache without masks the maps
are still drawn and the shares are null.

The groups follow what defines each phase (DESIGN.md section 2): arteries bright from the
early arterial phase, portal / splenic / mesenteric veins enhancing from the late
arterial phase, hepatic veins and IVC only from the portal venous phase, and the kidneys
(cortico-medullary contrast in the arterial phases, homogeneous nephrogram in the portal
venous phase, opacified collecting system in the delayed phase).

Representative series: among the correctly classified series of a phase, those whose
probability of the true phase is closest to the median of that phase (ties by series id),
different patients first. The target of each map is the true phase, which is also the
predicted one. The maps are taken at `layer` (phasejax.models.gradcam.resolve_layer;
"auto" by default: at the quick preset's 96 px ResNet-18's last stage is 3 x 3, so stage 3
at stride 16 is used); the stage, its stride and its grid are recorded in the files' meta
and in the npz as `cam_layer` / `cam_stride`. This module imports jax only inside the
functions that run the model.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from phasejax import atomic
from phasejax.cohort.structures import STRUCTURES, Label

if TYPE_CHECKING:
    from phasejax.data.crop import Crop

SALIENCY_NPZ = "saliency.npz"
SALIENCY_JSON = "saliency.json"
# 2: Grad-CAM at a chosen stage ("auto" by default), maps fading to zero past the last
# feature-pixel centre instead of repeating the edge row; version-1 files are recomputed.
SALIENCY_VERSION = 2

# Ordered structure groups; the one mapped to None takes every label that no other group
# lists. Renal veins are in "other body": they fill within seconds of the renal arteries
# (already in the arterial phases), unlike the hepatic veins and infrarenal IVC that
# define the portal venous phase, so grouping them there would blur that group's meaning.
# The hypervascular lesion model lives inside the liver mask, so it counts as liver.
GROUPS: dict[str, tuple[int, ...] | None] = {
    "aorta + arteries": (int(Label.AORTA), int(Label.CELIAC_SMA), int(Label.RENAL_ARTERY)),
    "portal / splenic / SMV": (int(Label.PORTAL_VEIN), int(Label.SPLENIC_VEIN), int(Label.SMV)),
    "hepatic veins + IVC": (int(Label.HEPATIC_VEIN), int(Label.IVC)),
    "kidneys": (
        int(Label.KIDNEY_CORTEX),
        int(Label.KIDNEY_MEDULLA),
        int(Label.KIDNEY_COLLECTING),
    ),
    "liver": (int(Label.LIVER), int(Label.LIVER_LESION)),
    "spleen": (int(Label.SPLEEN),),
    "other body": None,
    "outside body": (int(Label.BACKGROUND),),
}
# The vessels and organs the issue names as phase-defining; their summed share is reported.
PHASE_DEFINING = ("aorta + arteries", "portal / splenic / SMV", "hepatic veins + IVC", "kidneys")


class SaliencyError(RuntimeError):
    """Saliency cannot be computed (no series, no checkpoint, bad file); the message says why."""


# --------------------------------------------------------------------------- shares


def _group_lookup(
    groups: Mapping[str, Sequence[int] | None], max_label: int
) -> tuple[list[str], np.ndarray]:
    """(group names, lookup label -> group index; -1 = unassigned)."""
    names = list(groups)
    remainder = [g for g, labs in groups.items() if labs is None]
    if len(remainder) > 1:
        raise ValueError(f"at most one remainder group (None) allowed, got {remainder}")
    size = max(max_label, max((max(v) for v in groups.values() if v), default=0)) + 1
    lut = np.full(size, names.index(remainder[0]) if remainder else -1, np.int64)
    owner: dict[int, str] = {}
    for gi, (name, labs) in enumerate(groups.items()):
        for lab in labs or ():
            lab = int(lab)
            if lab < 0:
                raise ValueError(f"group {name!r}: negative label {lab}")
            if lab in owner:
                raise ValueError(f"label {lab} is in two groups: {owner[lab]!r} and {name!r}")
            owner[lab] = name
            lut[lab] = gi
    return names, lut


def anatomical_share(
    cam: np.ndarray,
    mask: np.ndarray,
    groups: Mapping[str, Sequence[int] | None] = GROUPS,
) -> dict[str, Any]:
    """Share of the total saliency mass on each structure group, and its area baseline.

    cam: non-negative map, any shape; mask: integer organ labels of the same shape
    (phasejax.cohort.structures.Label). groups: ordered {name: label ids}; one group may
    be None (every label no other group lists). Returns
    ``{"share": {group: float}, "area": {group: float}, "enrichment": {group: float},
    "cam_mass": float, "pixels": int}``: share = cam mass on the group / total mass
    (NaN when the map is zero everywhere), area = the group's pixel fraction (the share of
    a uniform map), enrichment = share / area (NaN where the group is absent).
    Raises ValueError on a shape mismatch, a negative or non-finite map, or a label that
    no group covers when there is no remainder group.
    """
    cam = np.asarray(cam, dtype=np.float64)
    mask = np.asarray(mask)
    if cam.shape != mask.shape:
        raise ValueError(f"cam shape {cam.shape} != mask shape {mask.shape}")
    if not np.issubdtype(mask.dtype, np.integer):
        raise ValueError(f"mask must hold integer labels, got dtype {mask.dtype}")
    if not np.all(np.isfinite(cam)) or (cam.size and cam.min() < 0):
        raise ValueError("cam must be finite and non-negative")
    if mask.size and mask.min() < 0:
        raise ValueError(f"mask holds negative label {int(mask.min())}")
    names, lut = _group_lookup(groups, int(mask.max()) if mask.size else 0)
    gi = lut[mask.ravel()]
    if np.any(gi < 0):
        missing = sorted(set(np.unique(mask.ravel()[gi < 0]).tolist()))
        raise ValueError(f"labels {missing} belong to no group and there is no remainder group")
    n = len(names)
    mass = np.bincount(gi, weights=cam.ravel(), minlength=n)
    count = np.bincount(gi, minlength=n).astype(np.float64)
    total = float(mass.sum())
    pixels = int(mask.size)
    share = mass / total if total > 0 else np.full(n, np.nan)
    area = count / pixels if pixels else np.full(n, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        enrichment = np.where(area > 0, share / np.where(area > 0, area, 1.0), np.nan)
    return {
        "share": dict(zip(names, share.tolist())),
        "area": dict(zip(names, area.tolist())),
        "enrichment": dict(zip(names, enrichment.tolist())),
        "cam_mass": total,
        "pixels": pixels,
    }


def group_label_names(groups: Mapping[str, Sequence[int] | None] = GROUPS) -> dict[str, list[str]]:
    """{group: structure names} for the summary ("every other label" for the remainder)."""
    return {
        g: ["every other body label"]
        if labs is None
        else [STRUCTURES[Label(int(lab))].name for lab in labs]
        for g, labs in groups.items()
    }


# --------------------------------------------------------------------------- selection


def choose_representative(
    labels: Sequence[int],
    probs: np.ndarray,
    patient_ids: Sequence[str],
    per_phase: int,
) -> dict[int, list[int]]:
    """{phase index: row indices} of up to `per_phase` representative correct series.

    A series is a candidate for its phase when the argmax of its probabilities is its
    label. Candidates are ordered by the distance of p(label) to the median over the
    phase's candidates, then by row (rows are sorted by series id); different patients
    are taken first, then the rest in the same order. Phases without a correct series
    map to an empty list.
    """
    labels = np.asarray(labels, np.int64)
    probs = np.asarray(probs, np.float64)
    if probs.ndim != 2 or probs.shape[0] != labels.shape[0] or len(patient_ids) != len(labels):
        raise ValueError(
            f"labels ({labels.shape[0]}), probs {probs.shape} and patient ids "
            f"({len(patient_ids)}) do not describe the same series"
        )
    if per_phase < 1:
        raise ValueError(f"per_phase must be >= 1, got {per_phase}")
    pred = np.argmax(probs, axis=1)
    out: dict[int, list[int]] = {}
    for k in range(probs.shape[1]):
        cand = np.flatnonzero((labels == k) & (pred == k))
        if cand.size == 0:
            out[k] = []
            continue
        conf = probs[cand, k]
        med = float(np.median(conf))
        order = [int(i) for _, i in sorted(zip(np.abs(conf - med).tolist(), cand.tolist()))]
        picked: list[int] = []
        seen: set[str] = set()
        for i in order:
            if len(picked) < per_phase and patient_ids[i] not in seen:
                picked.append(i)
                seen.add(patient_ids[i])
        for i in order:
            if len(picked) < per_phase and i not in picked:
                picked.append(i)
        out[k] = picked
    return out


# --------------------------------------------------------------------------- inputs


def resize_labels(mask: np.ndarray, size: int, crop: Crop | None = None) -> np.ndarray:
    """Organ labels [S, h, h] -> [S, size, size] by nearest neighbour.

    Same pixel-centre mapping as the image resize (phasejax.data.augment.resample_slices
    without augmentation): output pixel o samples input coordinate (o + 1/2) h / size - 1/2,
    so labels and image pixels stay registered. With a `crop` (phasejax.data.crop.Crop) it
    samples crop centre + (o - (size - 1) / 2) side / size; outside the image: label 0.
    """
    mask = np.asarray(mask)
    if mask.ndim != 3 or mask.shape[1] != mask.shape[2]:
        raise ValueError(f"expected square label slices [S, H, H], got shape {mask.shape}")
    h = mask.shape[1]
    if crop is None:
        idx = np.clip(np.floor((np.arange(size) + 0.5) * h / size).astype(np.int64), 0, h - 1)
        return mask[:, idx][:, :, idx]
    o = np.arange(size) - (size - 1) / 2.0
    rows = np.rint(crop.row + o * crop.side / size).astype(np.int64)
    cols = np.rint(crop.col + o * crop.side / size).astype(np.int64)
    out = mask[:, np.clip(rows, 0, h - 1)][:, :, np.clip(cols, 0, h - 1)]
    inside = ((rows >= 0) & (rows < h))[:, None] & ((cols >= 0) & (cols < h))[None, :]
    return np.where(inside[None], out, 0).astype(mask.dtype)


def series_inputs(
    cache_dir: str | Path, row: Mapping[str, str], data_cfg: Any
) -> dict[str, np.ndarray | bool]:
    """One series as the network sees it, plus what the figure and shares need.

    Returns {"image": float32 [S, H, W, C] (the pipeline's preprocess, no augmentation),
    "hu": float32 [S, H, W] (the same slices in HU on the input grid), "mask": uint8
    [S, H, W] (zeros when the cache has no mask), "has_mask": bool, "slice_index": [S]}.
    """
    from phasejax.data import augment
    from phasejax.data.cache import load_mask
    from phasejax.data.pipeline import (
        input_crop,
        load_cached,
        preprocess,
        row_pixel_mm,
        select_slices,
    )

    sid = row["series_id"]
    volume = load_cached(cache_dir, sid)
    z_lo, z_hi = int(row["z_lo"]), int(row["z_hi"])
    s = data_cfg.num_slices
    idx = select_slices(z_lo, z_hi, volume.shape[0], s, data_cfg.slice_selection)
    pixel_mm = row_pixel_mm(dict(row))
    crop = input_crop(volume, z_lo, z_hi, data_cfg, pixel_mm)
    image = preprocess(volume, z_lo, z_hi, data_cfg, pixel_mm=pixel_mm, crop=crop)
    hu = augment.resample_slices(
        np.asarray(volume[idx], np.float32), data_cfg.image_size, crop=crop
    )
    try:
        full = load_mask(cache_dir, sid)
    except (OSError, ValueError) as e:
        path = Path(cache_dir) / "masks" / f"{sid}.npy"
        raise SaliencyError(f"cannot read organ mask {path}: {e}") from e
    if full is not None and full.shape != volume.shape:
        raise SaliencyError(
            f"{Path(cache_dir) / 'masks' / sid}.npy: mask shape {full.shape} != volume shape "
            f"{volume.shape}"
        )
    if full is None:
        mask = np.zeros(hu.shape, np.uint8)
    else:
        mask = resize_labels(np.asarray(full[idx]), data_cfg.image_size, crop).astype(np.uint8)
    return {
        "image": image,
        "hu": hu,
        "mask": mask,
        "has_mask": full is not None,
        "slice_index": idx,
    }


def results_predictions(run_dir: str | Path, split: str, classes: Sequence[str]) -> dict | None:
    """{series_id: probs [K]} from run_dir/results.json, or None when absent or incompatible."""
    path = Path(run_dir) / "results.json"
    if not path.is_file():
        return None
    try:
        res = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if list(res.get("classes", [])) != list(classes) or split not in res.get("splits", {}):
        return None
    preds = res["splits"][split].get("predictions") or []
    return {p["series_id"]: np.asarray(p["probs"], np.float64) for p in preds}


# --------------------------------------------------------------------------- main


def _live_probs(model: Any, cache_dir: Path, rows: list[dict], data_cfg: Any) -> np.ndarray:
    from tqdm.auto import tqdm

    from phasejax.data.pipeline import row_input
    from phasejax.infer import Classifier

    clf = Classifier.for_model(model, batch_size=8)

    def network_input(r: dict) -> np.ndarray:
        return row_input(cache_dir, r, data_cfg)

    out = []
    with tqdm(total=len(rows), desc="saliency: classify split", unit="series") as bar:
        for _, p in clf.classify(rows, network_input):
            out.append(p)
            bar.update(1)
    return np.stack(out)


def saliency_for_model(
    model: Any,
    cfg: Any,
    cache_dir: str | Path,
    out_dir: str | Path,
    *,
    split: str = "test",
    per_phase: int = 2,
    predictions: Mapping[str, np.ndarray] | None = None,
    groups: Mapping[str, Sequence[int] | None] = GROUPS,
    batch_size: int = 8,
    extra_meta: Mapping[str, Any] | None = None,
    layer: str | int = "auto",
) -> Path:
    """Grad-CAM of representative series of `split` for a built classifier; writes
    out_dir/saliency.npz and out_dir/saliency.json and returns the npz path.

    predictions: {series_id: probabilities} used to pick correctly classified series (a
    run's results.json); series it lacks make the whole split be classified live.
    extra_meta: more provenance for the files' "meta" (e.g. run directory, checkpoint).
    layer: the Grad-CAM stage ("auto", "last", "stageK"; phasejax.models.gradcam).
    """
    from tqdm.auto import tqdm

    from phasejax.data.pipeline import label_index, split_rows
    from phasejax.models.gradcam import grad_cam, networks, resolve_layer
    from phasejax.phases import label_set

    cache_dir, out_dir = Path(cache_dir), Path(out_dir)
    labels_set = label_set(cfg.data.label_set)
    classes = list(labels_set.codes)
    rows = split_rows(cache_dir, split, cfg)
    if not rows:
        raise SaliencyError(
            f"{cache_dir}: split {split!r} has no labelled series in label set "
            f"{cfg.data.label_set!r}"
        )
    y = np.asarray([label_index(r["phase"], labels_set) for r in rows], np.int64)
    if predictions is not None and all(r["series_id"] in predictions for r in rows):
        probs = np.stack([np.asarray(predictions[r["series_id"]], np.float64) for r in rows])
        if probs.shape[1] != len(classes):
            raise SaliencyError(f"predictions have {probs.shape[1]} classes, expected {classes}")
        source = "results.json"
    else:
        probs = _live_probs(model, cache_dir, rows, cfg.data)
        source = "live"
    chosen = choose_representative(y, probs, [r["patient_id"] for r in rows], per_phase)
    picked = [i for k in range(len(classes)) for i in chosen[k]]
    if not picked:
        raise SaliencyError(f"split {split!r}: no correctly classified series to explain")

    size = (int(cfg.data.image_size), int(cfg.data.image_size))
    resolve_layer(model, layer, size)  # a bad layer fails before the series are loaded
    inputs = [series_inputs(cache_dir, rows[i], cfg.data) for i in picked]
    n = len(picked)
    net_names = list(networks(model))
    image = np.stack([d["image"] for d in inputs])
    target = y[picked]
    cams, by_net, lps = [], {m: [] for m in net_names}, []
    bs = max(1, min(batch_size, n))
    with tqdm(total=n, desc=f"saliency: Grad-CAM ({split})", unit="series") as bar:
        for start in range(0, n, bs):
            x = image[start : start + bs]
            t = target[start : start + bs]
            m = x.shape[0]
            if m < bs:  # pad to a fixed batch: one compilation
                x = np.concatenate([x, np.zeros((bs - m, *x.shape[1:]), x.dtype)])
                t = np.concatenate([t, np.zeros(bs - m, t.dtype)])
            g = grad_cam(model, x, t, layer=layer)
            cams.append(g.cam[:m])
            for name in net_names:
                by_net[name].append(g.by_network[name][:m])
            lps.append(g.log_probs[:m])
            bar.update(m)
    cam = np.concatenate(cams)
    cam_by_network = np.stack([np.concatenate(by_net[m]) for m in net_names], axis=1)
    live = np.exp(np.concatenate(lps).astype(np.float64))
    mask = np.stack([d["mask"] for d in inputs])
    has_mask = np.asarray([bool(d["has_mask"]) for d in inputs])

    group_names = list(groups)
    g_n = len(group_names)
    share = np.full((n, g_n), np.nan)
    area = np.full((n, g_n), np.nan)
    share_net = np.full((n, len(net_names), g_n), np.nan)
    for i in range(n):
        if not has_mask[i]:
            continue
        r = anatomical_share(cam[i], mask[i], groups)
        share[i] = [r["share"][g] for g in group_names]
        area[i] = [r["area"][g] for g in group_names]
        for j in range(len(net_names)):
            rn = anatomical_share(cam_by_network[i, j], mask[i], groups)
            share_net[i, j] = [rn["share"][g] for g in group_names]

    meta = {
        "version": SALIENCY_VERSION,
        "split": split,
        "per_phase": per_phase,
        "strategy": cfg.model.strategy,
        "slice_mode": cfg.data.slice_mode,
        "window": cfg.data.window,
        "image_size": cfg.data.image_size,
        "num_slices": cfg.data.num_slices,
        "cache_dir": str(cache_dir),
        "selection_source": source,
        "method": "Grad-CAM of the true (= predicted) phase's final log-probability",
        "layer_request": str(layer),
        "layer": g.layer,
        "stride": g.stride,
        "grid": list(g.grid),
        **dict(extra_meta or {}),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    npz_path = out_dir / SALIENCY_NPZ
    rows_p = [rows[i] for i in picked]
    atomic.savez_compressed(
        npz_path,
        classes=np.asarray(classes),
        series_id=np.asarray([r["series_id"] for r in rows_p]),
        patient_id=np.asarray([r["patient_id"] for r in rows_p]),
        site=np.asarray([r.get("site", "") for r in rows_p]),
        phase=np.asarray([classes[k] for k in target]),
        predicted=np.asarray([classes[k] for k in np.argmax(live, axis=1)]),
        probs=live.astype(np.float32),
        selection_probs=probs[picked].astype(np.float32),
        slice_index=np.stack([d["slice_index"] for d in inputs]).astype(np.int64),
        hu=np.stack([d["hu"] for d in inputs]).astype(np.float32),
        cam=cam.astype(np.float32),
        networks=np.asarray(net_names),
        cam_by_network=cam_by_network.astype(np.float32),
        mask=mask,
        has_mask=has_mask,
        groups=np.asarray(group_names),
        phase_defining=np.asarray([g for g in PHASE_DEFINING if g in groups]),
        share=share,
        area=area,
        share_by_network=share_net,
        cam_layer=np.asarray(g.layer),
        cam_stride=np.asarray(g.stride, np.int64),
        meta=np.asarray(json.dumps(meta, sort_keys=True)),
    )
    summary = summarize_saliency(npz_path)
    summary["groups"] = group_label_names(groups)
    summary["meta"] = meta
    from phasejax.eval.stats import jsonable

    atomic.write_json(out_dir / SALIENCY_JSON, jsonable(summary))  # NaN shares: null
    return npz_path


def _nanmean(rows: np.ndarray) -> np.ndarray:
    """Mean over axis 0 ignoring NaN rows; NaN (no warning) where every row is NaN."""
    valid = ~np.isnan(rows)
    count = valid.sum(axis=0)
    total = np.where(valid, rows, 0.0).sum(axis=0)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def summarize_saliency(npz_path: str | Path) -> dict[str, Any]:
    """Per-phase mean shares, area baselines and the phase-defining total from saliency.npz."""
    with np.load(npz_path, allow_pickle=False) as z:
        d = {k: z[k] for k in z.files}
    classes = [str(c) for c in d["classes"]]
    groups = [str(g) for g in d["groups"]]
    nets = [str(m) for m in d["networks"]]
    defining = [groups.index(str(g)) for g in d["phase_defining"]]
    phases = [str(p) for p in d["phase"]]
    per_phase: dict[str, Any] = {}
    for c in classes:
        rows = [i for i, p in enumerate(phases) if p == c]
        ok = [i for i in rows if d["has_mask"][i]]
        entry: dict[str, Any] = {"series": [str(d["series_id"][i]) for i in rows]}
        if not rows:
            entry["note"] = "no correctly classified series of this phase"
        if ok:
            # A map that is zero everywhere (every channel argued against the phase) has
            # no shares; average the others rather than lose the whole phase.
            share = _nanmean(d["share"][ok])
            area = d["area"][ok].mean(axis=0)
            entry["masked_series"] = len(ok)
            entry["empty_maps"] = int(np.isnan(d["share"][ok]).all(axis=1).sum())
            entry["share"] = dict(zip(groups, share.tolist()))
            entry["area"] = dict(zip(groups, area.tolist()))
            with np.errstate(divide="ignore", invalid="ignore"):
                entry["enrichment"] = dict(zip(groups, (share / area).tolist()))
            entry["phase_defining_share"] = float(share[defining].sum())
            entry["phase_defining_area"] = float(area[defining].sum())
            entry["by_network"] = {
                m: dict(zip(groups, _nanmean(d["share_by_network"][ok, j]).tolist()))
                for j, m in enumerate(nets)
            }
        elif rows:
            entry["note"] = "no organ masks for these series (shares need the cohort's masks)"
        per_phase[c] = entry
    series = []
    for i, sid in enumerate(d["series_id"]):
        rec: dict[str, Any] = {
            "series_id": str(sid),
            "patient_id": str(d["patient_id"][i]),
            "phase": phases[i],
            "predicted": str(d["predicted"][i]),
            "prob": float(d["probs"][i, classes.index(phases[i])]),
            "slice_index": d["slice_index"][i].tolist(),
        }
        if d["has_mask"][i]:
            rec["share"] = dict(zip(groups, d["share"][i].tolist()))
            rec["area"] = dict(zip(groups, d["area"][i].tolist()))
        series.append(rec)
    return {
        "classes": classes,
        "phase_defining_groups": [groups[j] for j in defining],
        "per_phase": per_phase,
        "series": series,
    }


def markdown_table(summary: Mapping[str, Any]) -> str:
    """The per-phase shares of saliency.json as a Markdown table for a report.

    One row per phase; each group's cell is "share (area)" in percent, the last column the
    summed share of the phase-defining groups. Phases without masked series show "n/a".
    """
    per_phase = summary["per_phase"]
    groups: list[str] = []
    for e in per_phase.values():
        groups += [g for g in e.get("share", {}) if g not in groups]
    header = ["phase", "n", *groups, "phase-defining total"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def cell(share: Any, area: Any) -> str:
        if share is None or area is None or not np.isfinite(share):
            return "n/a"
        return f"{100 * share:.1f}% ({100 * area:.1f}%)"

    for phase, e in per_phase.items():
        share, area = e.get("share", {}), e.get("area", {})
        cells = [cell(share.get(g), area.get(g)) for g in groups]
        total = cell(e.get("phase_defining_share"), e.get("phase_defining_area"))
        lines.append("| " + " | ".join([phase, str(len(e["series"])), *cells, total]) + " |")
    return "\n".join(lines) + "\n"


def _existing(run_dir: Path, split: str, per_phase: int, layer: str) -> Path | None:
    npz, js = run_dir / SALIENCY_NPZ, run_dir / SALIENCY_JSON
    if not (npz.is_file() and js.is_file()):
        return None
    try:
        meta = json.loads(js.read_text()).get("meta", {})
    except (OSError, ValueError):
        return None
    same = (
        meta.get("version"),
        meta.get("split"),
        meta.get("per_phase"),
        meta.get("layer_request"),
    ) == (SALIENCY_VERSION, split, per_phase, layer)
    return npz if same else None


def compute_saliency(
    run_dir: str | Path,
    cache_dir: str | Path | None = None,
    *,
    split: str = "test",
    per_phase: int = 2,
    which: str = "best",
    force: bool = False,
    layer: str | int = "auto",
) -> Path:
    """Grad-CAM saliency of a training run's checkpoint on `split`; returns run_dir/saliency.npz.

    cache_dir None: the run's data.cache_dir, or the built-in cohort its config names.
    An existing saliency.npz for the same split, per_phase and layer is reused unless
    `force` (so an interrupted `reproduce` does not redo it). layer: the Grad-CAM stage,
    "auto" (the deepest with >= 6 feature pixels per side at the run's image size),
    "last" or "stageK".
    """
    run_dir = Path(run_dir)
    if not force and (done := _existing(run_dir, split, per_phase, str(layer))) is not None:
        return done
    from phasejax.cohort import resolve_cache
    from phasejax.train.restore import load_trained

    cfg, model = load_trained(run_dir, which=which)
    cache = resolve_cache(cfg, cache_dir)
    preds = results_predictions(run_dir, split, list(_classes(cfg)))
    return saliency_for_model(
        model, cfg, cache, run_dir, split=split, per_phase=per_phase, predictions=preds,
        extra_meta={"run_dir": str(run_dir.absolute()), "checkpoint": which}, layer=layer,
    )  # fmt: skip


def _classes(cfg: Any) -> tuple[str, ...]:
    from phasejax.phases import label_set

    return label_set(cfg.data.label_set).codes
