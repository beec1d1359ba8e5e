"""The automatic aorta reading against the hand-placed ROIs of real series (prints JSON).

    python experiments/real_aorta.py [--data ../shared/data/validation ../shared/data/real]
        [--roi docs/real_roi/real_roi.json] [--figure PNG]

Every readable series under --data is brought onto the built-in cohort's cache grid (5 mm,
192 px) with its liver-to-kidney slab, exactly as `phasejax predict` does, and
`phasejax.data.aorta.read_aorta` reads its aorta. The JSON gives, per series, the automatic
reading, the hand ROI's median (`experiments/real_roi.py`), their difference, and where the
aorta was found; the figure shows the found disc on one slice of every series so that a
person can check that it is the aorta.

With `--cohort CACHE` (a prepared cohort cache, e.g. the medium cohort's under
~/.cache/phasejax/cohorts) it instead reads `--cohort-series` random series of that cohort and
compares with the median HU inside the aorta's mask over the same slab, and the call with
the series' phase: how the reader does on the phantom's anatomy.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from phasejax.cohort.aorta_reference import call_accepted, call_from_aorta
from phasejax.cohort.structures import Label
from phasejax.data.aorta import DISC_MM, read_aorta
from phasejax.data.cache import CacheSpec, load_mask, load_volume, read_manifest
from phasejax.data.discover import discover, load_plan
from phasejax.data.prepare import cache_volume
from phasejax.eval.labels import read_eval_labels

ROOT = Path(__file__).resolve().parents[1]


def accepted(paths: list[Path]) -> dict[str, set[str]]:
    """series name (the last part of a row's `path` or `file`) -> accepted phase codes."""
    return {Path(r.path).name: set(r.accepts) for p in paths for r in read_eval_labels(p)}


def cohort_check(cache: Path, n: int, seed: int = 0) -> dict:
    """The reader on n random series of a cohort cache, against the aorta mask's median."""
    rows = read_manifest(cache)
    pick = np.random.default_rng(seed).choice(len(rows), size=min(n, len(rows)), replace=False)
    errors, right_calls, out = [], 0, []
    for i in sorted(int(k) for k in pick):
        r = rows[i]
        vol, mask = load_volume(cache, r["series_id"]), load_mask(cache, r["series_id"])
        lo, hi = int(r["z_lo"]), int(r["z_hi"])
        truth = float(np.median(vol[lo:hi][mask[lo:hi] == int(Label.AORTA)]))
        got = read_aorta(vol, lo, hi, float(r["spacing_xy"]))
        call = "" if got is None else call_from_aorta(got.hu).call
        ok = call_accepted(call, {r["phase"]})
        right_calls += ok
        if got is not None:
            errors.append(abs(got.hu - truth))
        out.append({
            "series_id": r["series_id"], "phase": r["phase"], "mask_hu": round(truth, 1),
            "auto_hu": None if got is None else round(got.hu, 1), "call": call, "correct": ok,
        })  # fmt: skip
    return {
        "what": "automatic aorta HU against the cohort's aorta mask, random cohort series",
        "cache": str(cache),
        "n": len(out),
        "found": len(errors),
        "abs_diff_hu": {
            "median": float(np.median(errors)) if errors else None,
            "p90": float(np.percentile(errors, 90)) if errors else None,
            "over_25": int(sum(e > 25 for e in errors)),
        },
        "calls_right": right_calls,
        "series": out,
    }


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
        s["file"]: s["rois"]["aorta"]["median"]
        for s in json.loads(args.roi.read_text())["series"]
        if s["rois"].get("aorta")
    }
    accepts = accepted([p for p in args.labels if p.is_file()])
    spec = CacheSpec(spacing_z=5.0, size=192)
    rows, shown = [], []
    for plan in discover(args.data).plans:
        series, _ = load_plan(plan)
        if series is None:
            continue
        cached = cache_volume(series, spec)
        got = read_aorta(cached.volume, cached.z_lo, cached.z_hi, cached.pixel_mm)
        name = Path(series.source).name
        ref = hand.get(name)
        call = None if got is None else call_from_aorta(got.hu)
        row = {
            "series": name,
            "auto_hu": None if got is None else round(got.hu, 1),
            "hand_hu": ref,
            "diff_hu": None if got is None or ref is None else round(got.hu - ref, 1),
            "slices_agreeing": None if got is None else got.slices,
            "slices_searched": None if got is None else got.searched,
            "slab": [cached.z_lo, cached.z_hi],
            "offset_mm": None if got is None else [round(v, 1) for v in got.offset_mm],
            "accepts": sorted(accepts.get(name, [])),
            "call": None if call is None else call.call,
            "probs": None if call is None else {k: round(v, 3) for k, v in call.probs.items()},
            "correct": None
            if name not in accepts
            else (call is not None and call_accepted(call.call, accepts[name])),
        }
        rows.append(row)
        if got is not None:
            z, r, c = got.positions[len(got.positions) // 2]
            shown.append((name, cached.volume[z], r, c, cached.pixel_mm, got.hu))
    diffs = [abs(r["diff_hu"]) for r in rows if r["diff_hu"] is not None]
    out = {
        "what": "automatic aorta HU (phasejax.data.aorta) against hand-placed ROI medians",
        "series": rows,
        "found": sum(r["auto_hu"] is not None for r in rows),
        "labelled": sum(r["correct"] is not None for r in rows),
        "correct": sum(bool(r["correct"]) for r in rows),
        "n": len(rows),
        "abs_diff_hu": {
            "median": float(np.median(diffs)) if diffs else None,
            "max": float(max(diffs)) if diffs else None,
        },
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(out, indent=1))
    if args.figure and shown:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        cols = 5
        nrow = (len(shown) + cols - 1) // cols
        fig, axes = plt.subplots(nrow, cols, figsize=(3.2 * cols, 3.4 * nrow), squeeze=False)
        for ax in axes.ravel():
            ax.axis("off")
        for ax, (name, sl, r, c, px, hu) in zip(axes.ravel(), shown):
            ax.imshow(sl, cmap="gray", vmin=-160, vmax=340)
            ax.add_patch(plt.Circle((c, r), DISC_MM / px, fill=False, color="red", lw=1.2))
            ax.set_title(f"{name[:30]}\naorta {hu:.0f} HU", fontsize=8)
        fig.tight_layout()
        args.figure.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.figure, dpi=110)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
