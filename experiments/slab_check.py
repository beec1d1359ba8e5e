"""Where does the liver-to-kidney slab land on real scans? (prints JSON, writes figures)

    python experiments/slab_check.py PATH [PATH ...] [--out runs/slab_check] [--size 192]
        [--spacing-z 5] [--num-slices 5] [--cohort-cache DIR]

Every series under the paths (DICOM folders, NIfTI files: `phasejax.data.discover`) goes
through `phasejax.data.prepare.cache_volume`, exactly as `phasejax prepare` and
`phasejax predict` do, then `phasejax.data.pipeline.select_slices` ("even") picks the
model's slices. Per series one JSON line (slab [z_lo, z_hi), method, landmark slices:
lung_base, dome, kidney_lo / kidney_hi) and one PNG: mid-sagittal, right paramedian
sagittal (through the right kidney), mid-coronal and posterior coronal (through the
kidneys) reformats with the slab (red), the landmarks (dashed: lung base cyan, dome
magenta, kidneys orange / yellow) and the selected slices (green, dotted), then the
selected axial slices in the abdomen window (W400/L40). The model was trained on
synthetic slabs from the liver dome to the kidneys' lower poles: the top selected slice
should be just below the dome, the bottom one at the lower renal poles.

`--cohort-cache` adds the series of a synthetic cohort cache (`phasejax cohort generate
--format cache`), whose stored organ masks give the true liver dome and lower kidney poles
(printed as `mask_dome` / `mask_kidney_lo` beside the image-based slab).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from phasejax.data.cache import CacheSpec, load_mask, load_volume, read_manifest
from phasejax.data.discover import discover, load_plan
from phasejax.data.pipeline import select_slices
from phasejax.data.prepare import CachedVolume, cache_volume, find_slab

ABDOMEN = (40.0 - 200.0, 40.0 + 200.0)  # W400/L40


def _name(source: str) -> str:
    base = Path(source).name
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", base.removesuffix(".gz").removesuffix(".nii"))[:60]


def figure(
    vol: np.ndarray,
    spacing_z: float,
    pixel_mm: float,
    z_lo: int,
    z_hi: int,
    picked: np.ndarray,
    landmarks: dict[str, int | None],
    title: str,
) -> Figure:
    """Reformats with the slab and picked slices, plus the picked axial slices."""
    lo_hu, hi_hu = ABDOMEN
    nz, h, w = vol.shape
    body = vol > -300
    ys, xs = np.nonzero(body.any(axis=0))
    cy = int(ys.mean()) if ys.size else h // 2
    cx = int(xs.mean()) if xs.size else w // 2
    # Right kidney: roughly 1/4 of the body width to the patient's right (image left) of
    # the midline; the coronal plane through the vertebral bodies (posterior third).
    x0 = int(xs.min()) if xs.size else 0
    x_rk = (x0 + cx) // 2
    y_post = int(np.percentile(ys, 70)) if ys.size else h // 2
    views = [
        ("mid-sagittal", vol[:, :, cx]),
        ("R paramedian sagittal", vol[:, :, x_rk]),
        ("mid-coronal", vol[:, cy, :]),
        ("posterior coronal", vol[:, y_post, :]),
    ]
    ncols = max(len(views), len(picked))
    fig = Figure(figsize=(3.2 * ncols, 8.0))
    aspect = spacing_z / pixel_mm
    colours = {"lung_base": "c", "dome": "m", "kidney_lo": "orange", "kidney_hi": "y"}
    for i, (label, img) in enumerate(views):
        ax = fig.add_subplot(2, ncols, i + 1)
        ax.imshow(img[::-1], cmap="gray", vmin=lo_hu, vmax=hi_hu, aspect=aspect,
                  extent=(0, img.shape[1], 0, nz))  # fmt: skip
        for z in (z_lo, z_hi):
            ax.axhline(z, color="r", lw=1.2)
        for z in picked:
            ax.axhline(z + 0.5, color="lime", lw=0.8, ls=":")
        for key, z in landmarks.items():
            if z is not None:
                ax.axhline(z + 0.5, color=colours.get(key, "w"), lw=0.8, ls="--")
        ax.set_title(label, fontsize=8)
        ax.set_yticks(range(0, nz, 5))
        ax.tick_params(labelsize=6)
        ax.grid(axis="y", color="w", lw=0.3, alpha=0.4)
        ax.set_xticks([])
    for j, z in enumerate(picked):
        ax = fig.add_subplot(2, ncols, ncols + j + 1)
        ax.imshow(vol[int(z)], cmap="gray", vmin=lo_hu, vmax=hi_hu)
        ax.set_title(f"slice {int(z)}", fontsize=8)
        ax.axis("off")
    marks = ", ".join(f"{k} {v}" for k, v in landmarks.items() if v is not None)
    fig.suptitle(f"{title}\nslab [{z_lo}, {z_hi}) red; landmarks: {marks}", fontsize=9)
    fig.tight_layout()
    return fig


def check(
    name: str,
    cached: CachedVolume,
    landmarks: dict[str, int | None],
    out: Path,
    num_slices: int,
    extra: dict[str, object] | None = None,
) -> dict[str, object]:
    vol = np.asarray(cached.volume)
    picked = select_slices(cached.z_lo, cached.z_hi, vol.shape[0], num_slices, "even")
    rec: dict[str, object] = {
        "series": name,
        "num_slices": int(vol.shape[0]),
        "spacing_z": cached.spacing_z,
        "z_lo": cached.z_lo,
        "z_hi": cached.z_hi,
        "method": cached.z_method,
        "landmarks": landmarks,
        "selected": [int(z) for z in picked],
        **(extra or {}),
    }
    title = f"{name}: {vol.shape[0]} x {cached.spacing_z:g} mm, method {cached.z_method}"
    fig = figure(vol, cached.spacing_z, cached.pixel_mm, cached.z_lo, cached.z_hi, picked,
                 landmarks, title)  # fmt: skip
    path = out / f"{name}.png"
    fig.savefig(path, dpi=90)
    rec["figure"] = str(path)
    return rec


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="*", help="DICOM folders and NIfTI files / folders")
    ap.add_argument("--out", default="runs/slab_check")
    ap.add_argument("--size", type=int, default=192)
    ap.add_argument("--spacing-z", type=float, default=5.0)
    ap.add_argument("--num-slices", type=int, default=5)
    ap.add_argument("--cohort-cache", default="", help="a synthetic cohort cache (with masks)")
    ap.add_argument("--limit", type=int, default=0, help="at most this many cohort series")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    spec = CacheSpec(spacing_z=args.spacing_z, size=args.size)
    if args.paths:
        for plan in discover(args.paths).plans:
            series, skipped = load_plan(plan)
            if series is None:
                print(json.dumps({"series": plan.source, "skipped": [str(s) for s in skipped]}))
                continue
            cached = cache_volume(series, spec)
            rec = check(_name(plan.source), cached, cached.landmarks, out, args.num_slices)
            print(json.dumps(rec), flush=True)
    if args.cohort_cache:
        from phasejax.cohort.render import liver_kidney_range

        rows = read_manifest(args.cohort_cache)
        for row in rows[: args.limit or None]:
            sid = row["series_id"]
            vol = np.asarray(load_volume(args.cohort_cache, sid))
            sz = float(row["spacing_z"])
            slab = find_slab(vol, sz, float(row["spacing_xy"]))
            cached = CachedVolume(volume=vol, spacing_z=sz, pixel_mm=float(row["spacing_xy"]),
                                  z_lo=slab.z_lo, z_hi=slab.z_hi, z_method=slab.method)  # fmt: skip
            mask = load_mask(args.cohort_cache, sid)
            extra: dict[str, object] = {}
            if mask is not None:
                k_lo, l_hi = liver_kidney_range(mask)
                extra = {"mask_kidney_lo": k_lo, "mask_dome": l_hi - 1}
            name = f"cohort_{row['patient_id']}_{row['phase']}_{sid}"
            print(json.dumps(check(name, cached, slab.landmarks, out, args.num_slices, extra)),
                  flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
