"""The automatic aorta and kidney readings against the hand-placed ROIs of real series (JSON).

    python experiments/real_anatomy.py [--data ../shared/data/validation ../shared/data/real]
        [--roi docs/real_roi/real_roi.json] [--figure PNG]

Every readable series under --data is brought onto the built-in cohort's cache grid (5 mm,
192 px) with its liver-to-kidney slab, exactly as `phasejax predict` does;
`phasejax.data.aorta.read_aorta` reads its aorta and `phasejax.data.kidney.read_kidneys` its
renal cortex and medulla. The JSON gives, per series, the automatic readings, the hand ROI
medians (`experiments/real_roi.py`), their differences, the call from the aorta alone and
from aorta and kidneys (`phasejax.cohort.anatomy_reference`), and `reading_sd_hu`: 1.4826 x
the median absolute difference from the hand ROIs per structure, the reading noise that the
reference uses, and `misread`: the series with a reading more than 3 of those SDs off, whose
share is the doubt that predict's combined call keeps about the anatomy
(`anatomy_reference.MISREAD_RATE`). The figure shows the found aorta disc and kidney outlines on one slice of
every series so that a person can check that they are the aorta and the kidneys.

With `--cohort CACHE` (a prepared cohort cache, e.g. the medium cohort's under
~/.cache/phasejax/cohorts) it instead reads `--cohort-series` random series of that cohort and
compares with the median HU inside the aorta's and kidneys' masks, and the calls with the
series' phase: how the readers do on the phantom's anatomy; `core_cortex_fraction` is how much
of the phantom's kidney core (deeper than the medulla reading's depth) is cortex,
`aorta_read_on` which phantom structure the aorta reader's disc centres fall on, and
`mask_aorta_offset_mm` where the phantom's aorta lies from the vertebral body centre, to
compare with `aorta_offset_mm` of the real series (the reader's positions there).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from phasejax.cohort.anatomy_reference import call_accepted, call_from_anatomy
from phasejax.cohort.structures import Label
from phasejax.data.aorta import DISC_MM, AortaReading, read_aorta
from phasejax.data.cache import CacheSpec, load_mask, load_volume, read_manifest
from phasejax.data.discover import discover, load_plan
from phasejax.data.kidney import MEDULLA_DEPTH_MM, KidneyReading, read_kidneys
from phasejax.data.prepare import SliceAnatomy, cache_volume, find_slab
from phasejax.eval.labels import read_eval_labels

ROOT = Path(__file__).resolve().parents[1]
HAND = {"aorta": "aorta", "cortex": "renal_cortex", "medulla": "renal_medulla"}


def accepted(paths: list[Path]) -> dict[str, set[str]]:
    """series name (the last part of a row's `path` or `file`) -> accepted phase codes."""
    return {Path(r.path).name: set(r.accepts) for p in paths for r in read_eval_labels(p)}


def _r(x: float | None) -> float | None:
    return None if x is None else round(float(x), 1)


def read_all(
    vol: np.ndarray,
    z_lo: int,
    z_hi: int,
    landmarks: dict,
    pixel_mm: float,
    anatomy: SliceAnatomy | None = None,
) -> tuple[AortaReading | None, KidneyReading | None]:
    """The aorta and kidney readings of one cached series, as `phasejax predict` reads them."""
    aorta = read_aorta(vol, z_lo, z_hi, pixel_mm, anatomy)
    lo, hi = landmarks.get("kidney_lo"), landmarks.get("kidney_hi")
    return aorta, read_kidneys(vol, lo, hi, pixel_mm, anatomy)


def hu_of(aorta: AortaReading | None, kid: KidneyReading | None) -> dict[str, float | None]:
    """aorta, cortex, medulla HU (None: not read)."""
    return {
        "aorta": None if aorta is None else aorta.hu,
        "cortex": None if kid is None else kid.cortex_hu,
        "medulla": None if kid is None else kid.medulla_hu,
    }


def core_cortex_fraction(mask: np.ndarray, pixel_mm: float) -> float | None:
    """Of the phantom's kidney voxels deeper than the reader's medulla depth (per slice, from
    the kidney's edge), the fraction that is cortex: what its "medulla" reading averages."""
    from scipy import ndimage

    kidney = (Label.KIDNEY_CORTEX, Label.KIDNEY_MEDULLA, Label.KIDNEY_COLLECTING)
    core = []
    for sl in mask:
        inside = np.isin(sl, kidney)
        if inside.any():
            depth = ndimage.distance_transform_edt(inside) * pixel_mm
            core.append(sl[depth >= MEDULLA_DEPTH_MM])
    core_all = np.concatenate(core) if core else np.zeros(0)
    return float(np.mean(core_all == int(Label.KIDNEY_CORTEX))) if core_all.size else None


def _read_on(mask: np.ndarray, aorta: AortaReading | None) -> str:
    """The mask label under most of the aorta reader's disc centres ("" when not read)."""
    if aorta is None:
        return ""
    labs = Counter(int(mask[z, int(r), int(c)]) for z, r, c in aorta.positions)
    return Label(labs.most_common(1)[0][0]).name.lower()


def _mask_offset(
    mask: np.ndarray, lo: int, hi: int, anatomy: SliceAnatomy | None, px: float
) -> list[float] | None:
    """Median (anterior, left) mm of the phantom aorta's centroid from the vertebral body
    centre that the slab finder found, over the slab: the reader's `offset_mm` on real
    scans is the same measurement."""
    if anatomy is None:
        return None
    off = []
    for z in range(lo, hi):
        spine, sel = anatomy.spines[z], mask[z] == int(Label.AORTA)
        if spine is not None and sel.any():
            ys, xs = np.nonzero(sel)
            off.append(((spine[0] - ys.mean()) * px, (xs.mean() - spine[1]) * px))
    return [round(float(v), 1) for v in np.median(off, axis=0)] if off else None


def _spine_on_vertebra(
    mask: np.ndarray, lo: int, hi: int, anatomy: SliceAnatomy | None
) -> list[int]:
    """[slab slices whose found vertebral body centre lies on the phantom's spine (body,
    cortex, disc or canal), slab slices with a centre]: whether offsets measured from it
    are the phantom's geometry or the finder's error."""
    spine = {int(x) for x in (Label.VERTEBRA, Label.BONE_CORTICAL, Label.DISC, Label.SPINAL_CANAL)}
    on = n = 0
    for z in range(lo, hi):
        sp = None if anatomy is None else anatomy.spines[z]
        if sp is not None:
            n += 1
            on += int(mask[z, int(round(sp[0])), int(round(sp[1]))]) in spine
    return [on, n]


def _median_offset(offsets: Iterable[list[float] | tuple[float, float] | None]) -> list | None:
    got = [o for o in offsets if o is not None]
    return [round(float(v), 1) for v in np.median(got, axis=0)] if got else None


def cohort_check(cache: Path, n: int, seed: int = 0) -> dict:
    """The readers on n random series of a cohort cache, against the masks' medians."""
    rows = read_manifest(cache)
    pick = np.random.default_rng(seed).choice(len(rows), size=min(n, len(rows)), replace=False)
    labels = {"aorta": Label.AORTA, "cortex": Label.KIDNEY_CORTEX, "medulla": Label.KIDNEY_MEDULLA}
    errors: dict[str, list[float]] = {k: [] for k in labels}
    right = {"aorta": 0, "anatomy": 0}
    out, cores = [], []
    for i in sorted(int(k) for k in pick):
        r = rows[i]
        vol, mask = load_volume(cache, r["series_id"]), load_mask(cache, r["series_id"])
        lo, hi, px = int(r["z_lo"]), int(r["z_hi"]), float(r["spacing_xy"])
        slab = find_slab(vol, float(r["spacing_z"]), px)
        aorta, kid = read_all(vol, lo, hi, slab.landmarks, px, slab.anatomy)
        got = hu_of(aorta, kid)
        core = core_cortex_fraction(mask, px)
        row = {
            "series_id": r["series_id"],
            "phase": r["phase"],
            "core_cortex_fraction": core,
            # What the aorta reader's disc centres fall on, by the phantom's masks.
            "aorta_read_on": _read_on(mask, aorta),
            "mask_aorta_offset_mm": _mask_offset(mask, lo, hi, slab.anatomy, px),
            "spine_on_vertebra": _spine_on_vertebra(mask, lo, hi, slab.anatomy),
        }
        if core is not None:
            cores.append(core)
        for k, lab in labels.items():
            sel = mask == int(lab)
            if k == "aorta":
                sel[:lo], sel[hi:] = False, False
            truth = float(np.median(vol[sel])) if sel.any() else None
            row[f"mask_{k}_hu"], row[f"auto_{k}_hu"] = _r(truth), _r(got[k])
            if truth is not None and got[k] is not None:
                errors[k].append(abs(got[k] - truth))
        aorta_call = call_from_anatomy(aorta=got["aorta"]).call
        call = call_from_anatomy(got["aorta"], got["cortex"], got["medulla"]).call
        row |= {"aorta_call": aorta_call, "call": call}
        right["aorta"] += call_accepted(aorta_call, {r["phase"]})
        right["anatomy"] += call_accepted(call, {r["phase"]})
        out.append(row)
    return {
        "what": "automatic aorta / kidney HU against the cohort's masks, random cohort series",
        "cache": str(cache),
        "n": len(out),
        "abs_diff_hu": {
            k: {
                "read": len(e),
                "median": float(np.median(e)) if e else None,
                "p90": float(np.percentile(e, 90)) if e else None,
                "over_25": int(sum(x > 25 for x in e)),
            }
            for k, e in errors.items()
        },
        "calls_right": right,
        "core_cortex_fraction_median": float(np.median(cores)) if cores else None,
        "aorta_read_on": dict(Counter(r["aorta_read_on"] for r in out).most_common()),
        "mask_aorta_offset_mm_median": _median_offset(r["mask_aorta_offset_mm"] for r in out),
        "spine_on_vertebra": [sum(r["spine_on_vertebra"][i] for r in out) for i in (0, 1)],
        "series": out,
    }


MISREAD_SDS = 3.0  # a reading this many reading SDs from the hand ROI is a misreading


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--data",
        nargs="+",
        default=[
            str(ROOT.parent / "shared/data/validation"),
            str(ROOT.parent / "shared/data/real"),
        ],
    )
    ap.add_argument("--roi", type=Path, default=ROOT / "docs/real_roi/real_roi.json")
    ap.add_argument(
        "--labels",
        type=Path,
        nargs="+",
        default=[
            ROOT.parent / "shared/data/validation/labels.csv",
            ROOT / "experiments/real_labels.csv",
        ],
    )
    ap.add_argument("--figure", type=Path, default=None)
    ap.add_argument("--cohort", type=Path, default=None, help="check on this cohort cache instead")
    ap.add_argument("--cohort-series", type=int, default=60)
    args = ap.parse_args()
    if args.cohort is not None:
        print(json.dumps(cohort_check(args.cohort, args.cohort_series), indent=1))
        return 0
    t0 = time.perf_counter()
    hand = {
        s["file"]: {k: (s["rois"].get(roi) or {}).get("median") for k, roi in HAND.items()}
        for s in json.loads(args.roi.read_text())["series"]
    }
    accepts = accepted([p for p in args.labels if p.is_file()])
    spec = CacheSpec(spacing_z=5.0, size=192)
    rows, shown = [], []
    diffs: dict[str, list[float]] = {k: [] for k in HAND}
    for plan in discover(args.data).plans:
        series, _ = load_plan(plan)
        if series is None:
            continue
        cached = cache_volume(series, spec)
        readings = read_all(
            cached.volume,
            cached.z_lo,
            cached.z_hi,
            cached.landmarks,
            cached.pixel_mm,
            cached.anatomy,
        )
        got = hu_of(*readings)
        name = Path(series.source).name
        ref = hand.get(name, {})
        row: dict = {"series": name}
        for k in HAND:
            d = None if got[k] is None or ref.get(k) is None else got[k] - ref[k]
            row |= {f"auto_{k}_hu": _r(got[k]), f"hand_{k}_hu": ref.get(k), f"diff_{k}_hu": _r(d)}
            if d is not None:
                diffs[k].append(abs(d))
        aorta = readings[0]
        row["aorta_offset_mm"] = (
            None if aorta is None else [round(float(v), 1) for v in aorta.offset_mm]
        )
        aorta_only = call_from_anatomy(aorta=got["aorta"])
        call = call_from_anatomy(got["aorta"], got["cortex"], got["medulla"])
        acc = accepts.get(name)
        row |= {
            "accepts": sorted(acc or []),
            "aorta_call": aorta_only.call,
            "aorta_correct": None if acc is None else call_accepted(aorta_only.call, acc),
            "call": call.call,
            "structures": list(call.structures),
            "probs": {k: round(v, 3) for k, v in call.probs.items()},
            "correct": None if acc is None else call_accepted(call.call, acc),
        }
        rows.append(row)
        shown.append((name, cached, *readings))
    labelled = [r for r in rows if r["correct"] is not None]
    out = {
        "what": "automatic aorta and kidney HU (phasejax.data.aorta, phasejax.data.kidney) "
        "against hand-placed ROI medians, and the calls they give",
        "series": rows,
        "read": {k: sum(r[f"auto_{k}_hu"] is not None for r in rows) for k in HAND},
        "labelled": len(labelled),
        "correct": sum(bool(r["correct"]) for r in labelled),
        "aorta_correct": sum(bool(r["aorta_correct"]) for r in labelled),
        "n": len(rows),
        "abs_diff_hu": {
            k: {"median": float(np.median(d)), "max": float(max(d))} if d else None
            for k, d in diffs.items()
        },
        "reading_sd_hu": {k: round(1.4826 * float(np.median(d)), 1) for k, d in diffs.items() if d},
        # (anterior, left) mm of the aorta from the vertebral body centre; `--cohort` gives
        # the phantom's from its masks.
        "aorta_offset_mm_median": _median_offset(r["aorta_offset_mm"] for r in rows),
    }
    sd = out["reading_sd_hu"]
    # Gross misreadings, which a median spread ignores: the share that MISREAD_RATE keeps.
    out["misread"] = [
        r["series"]
        for r in rows
        if any(
            r[f"diff_{k}_hu"] is not None and abs(r[f"diff_{k}_hu"]) > MISREAD_SDS * sd[k]
            for k in sd
        )
    ]
    out["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out, indent=1))
    if args.figure and shown:
        figure(args.figure, shown)
    return 0


def figure(path: Path, shown: list) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 5
    nrow = (len(shown) + cols - 1) // cols
    fig, axes = plt.subplots(nrow, cols, figsize=(3.2 * cols, 3.6 * nrow), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (name, cached, aorta, kid) in zip(axes.ravel(), shown):
        # The slice with the most kidney outlines, among those where the aorta was read if
        # any (or the aorta's middle slice).
        zs = [z for z, _ in kid.outlines] if kid else []
        aorta_zs = {p[0] for p in aorta.positions} if aorta else set()
        both = [z for z in zs if z in aorta_zs]
        zs = both or zs
        z = max(set(zs), key=zs.count) if zs else None
        if z is None and aorta is not None:
            z = aorta.positions[len(aorta.positions) // 2][0]
        if z is None:
            z = (cached.z_lo + cached.z_hi) // 2
        ax.imshow(cached.volume[z], cmap="gray", vmin=-160, vmax=340)
        text = []
        if aorta is not None:
            # The disc only where the aorta was read on this very slice.
            for zz, row, col in aorta.positions:
                if zz == z:
                    circle = plt.Circle((col, row), DISC_MM / cached.pixel_mm, fill=False)
                    ax.add_patch(circle)
                    circle.set(color="red", lw=1.2)
            text.append(f"aorta {aorta.hu:.0f}")
        if kid is not None:
            for zz, hull in kid.outlines:
                if zz == z:
                    ax.contour(hull, [0.5], colors="yellow", linewidths=0.8)
            text.append(f"cortex {kid.cortex_hu:.0f} medulla {kid.medulla_hu:.0f}")
        ax.set_title(f"{name[:30]}\n{' | '.join(text) or 'not read'}", fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    raise SystemExit(main())
