"""What a structure-HU head reads on real scans, against hand-placed ROIs (prints JSON).

    python experiments/real_hu_readout.py RUN_DIR [--roi docs/real_roi/real_roi.json] \
        [--cohort CACHE_DIR --cohort-series 60]

A run trained with `model.hu_head` ("auxiliary" or "bottleneck") estimates the mean HU of
the aorta, portal vein, liver, spleen and kidney compartments of its input slices
(phasejax.data.pipeline.HU_STRUCTURES). On the cohort those estimates are learned from the
organ masks; on real scans nothing says whether they hold. This script runs the model on
every real series that `experiments/real_roi.py` measured (their `source` paths), prepared
exactly as `phasejax predict` prepares them, and puts the estimates next to the ROI medians
of the same series. Large, phase-consistent errors in one structure show where the
network's reading of real anatomy fails (e.g. an aorta read at portal-venous HU in an
arterial scan), which is the kind of error the bottleneck passes on to the phase.

With `--cohort`, the same estimates on the first N test series of a prepared cohort cache
(with organ masks) against their exact targets: how well the head reads on the data it was
trained on, per structure (mean absolute error, and the spread of the truth for scale).

Caveats: an ROI is one circle on one slice; the estimate is the mean over all the input
slices of the structure (cortex and medulla partial volume included), so agreement within
~20-30 HU is all one can ask. For a two-step run the first network's estimates are shown
(it decides AP / PVP / DP); the second's are in `step2`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

# ROI name in real_roi.json -> phasejax.cohort.structures.Label name, as real_roi.py pairs them.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_roi import COHORT_LABEL as ROI_STRUCTURES  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--roi", default="docs/real_roi/real_roi.json")
    ap.add_argument("--cohort", default="", help="prepared cohort cache with organ masks")
    ap.add_argument("--cohort-series", type=int, default=60)
    ap.add_argument(
        "--figure", default="", help="roi head: its segmentation of every real series (PNG)"
    )
    args = ap.parse_args(argv)

    import jax.numpy as jnp

    from phasejax.data.discover import discover, load_plan
    from phasejax.data.pipeline import HU_STRUCTURES, HU_TARGET_CENTER, HU_TARGET_SCALE
    from phasejax.phases import label_set
    from phasejax.predict.inputs import model_grid, prepare_series
    from phasejax.train.restore import load_trained

    cfg, model = load_trained(args.run_dir)
    if cfg.model.hu_head == "none":
        raise SystemExit(f"{args.run_dir} has no structure-HU head (model.hu_head = 'none')")
    spec, _ = model_grid(cfg)
    names = [s.name for s in HU_STRUCTURES]
    rois = json.loads(Path(args.roi).read_text())["series"]
    rows = []
    panels: list[tuple[str, np.ndarray, np.ndarray]] = []
    for entry in rois:
        plans = discover([entry["source"]]).plans
        if len(plans) != 1:
            continue
        series, _ = load_plan(plans[0])
        if series is None:
            continue
        prep = prepare_series(series, cfg.data, spec)
        out = model(jnp.asarray(prep.image[None]))
        seg = out.heads.get("seg", out.heads.get("seg_step1"))
        if seg is not None:
            panels.append((entry["file"], prep.image, np.asarray(seg)[0]))
        heads = {k: np.asarray(v)[0] * HU_TARGET_SCALE + HU_TARGET_CENTER
                 for k, v in out.heads.items() if k.startswith("hu")}  # fmt: skip
        first = heads.get("hu", heads.get("hu_step1"))
        probs = np.exp(np.asarray(out.log_probs)[0])
        row = {
            "file": entry["file"],
            "phase": entry["phase"],
            "predicted": label_set(cfg.data.label_set).codes[int(np.argmax(probs))],
            "estimate": {n: round(float(v), 1) for n, v in zip(names, first, strict=True)},
            "roi_median": {},
            "error": {},
        }
        if "hu_step2" in heads:
            row["step2"] = {
                n: round(float(v), 1) for n, v in zip(names, heads["hu_step2"], strict=True)
            }
        for roi_name, label in ROI_STRUCTURES.items():
            roi = entry["rois"].get(roi_name)
            if roi is None:
                continue
            row["roi_median"][label] = roi["median"]
            row["error"][label] = round(row["estimate"][label] - roi["median"], 1)
        rows.append(row)
    summary = {}
    for label in ROI_STRUCTURES.values():
        errs = [r["error"][label] for r in rows if label in r["error"]]
        if errs:
            summary[label] = {
                "n": len(errs),
                "mean_error": round(float(np.mean(errs)), 1),
                "mean_abs_error": round(float(np.mean(np.abs(errs))), 1),
            }
    out = {"run": args.run_dir, "hu_head": cfg.model.hu_head, "summary": summary}
    if args.cohort:
        out["cohort"] = cohort_errors(model, cfg, args.cohort, args.cohort_series, panels)
    if args.figure and panels:
        draw_segmentations(panels, names, args.figure)
    print(json.dumps({**out, "series": rows}, indent=1))


def draw_segmentations(
    panels: list[tuple[str, np.ndarray, np.ndarray]], names: list[str], path: str
) -> None:
    """Per series: the middle input slice (wide window) and the roi head's argmax
    segmentation over it (first network), one colour per structure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    colours = plt.get_cmap("tab10").colors[: len(names)]
    cmap = ListedColormap(colours)
    cols = 5
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.4 * rows), squeeze=False)
    for ax, (title, image, seg) in zip(axes.flat, panels, strict=False):
        mid = image.shape[0] // 2
        ax.imshow(image[mid, :, :, -1], cmap="gray", vmin=0.2, vmax=0.6)
        lab = np.argmax(seg[mid], axis=-1)  # [g, g], last index = rest
        reps = image.shape[1] // lab.shape[0]
        lab = np.kron(lab, np.ones((reps, reps), int))[: image.shape[1], : image.shape[2]]
        ax.imshow(np.ma.masked_equal(lab, len(names)), cmap=cmap, vmin=0,
                  vmax=len(names) - 1, alpha=0.45, interpolation="nearest")  # fmt: skip
        ax.set_title(title.replace(".nii.gz", "")[:32], fontsize=8)
        ax.axis("off")
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")
    fig.legend(
        [Patch(color=c) for c in colours], [n.lower() for n in names], loc="lower center",
        ncol=len(names), fontsize=8,
    )  # fmt: skip
    fig.suptitle("roi head: segmentation of the middle input slice (argmax, first network)")
    fig.tight_layout(rect=(0, 0.04, 1, 0.97))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def cohort_errors(
    model, cfg, cache: str, n: int, panels: list[tuple[str, np.ndarray, np.ndarray]]
) -> dict:
    """Per structure: mean absolute error of the estimates on n cohort test series (the
    first five, with a roi head, are added to `panels` for the figure)."""
    import jax.numpy as jnp

    from phasejax.data.cache import load_mask
    from phasejax.data.pipeline import (
        HU_STRUCTURES,
        HU_TARGET_CENTER,
        HU_TARGET_SCALE,
        load_cached,
        preprocess_with_targets,
        row_pixel_mm,
        split_rows,
    )

    est, truth, present = [], [], []
    for r in split_rows(cache, "test", cfg)[:n]:
        got = preprocess_with_targets(
            load_cached(cache, r["series_id"]), int(r["z_lo"]), int(r["z_hi"]), cfg.data,
            None, load_mask(cache, r["series_id"]), pixel_mm=row_pixel_mm(r),
        )  # fmt: skip
        heads = model(jnp.asarray(got.image[None])).heads
        seg = heads.get("seg", heads.get("seg_step1"))
        if seg is not None and len(truth) < 5:
            panels.append((f"cohort {r['phase']} {r['series_id']}", got.image, np.asarray(seg)[0]))
        est.append(np.asarray(heads.get("hu", heads.get("hu_step1")))[0])
        truth.append(got.hu)
        present.append(got.present)
    scale = lambda a: np.asarray(a) * HU_TARGET_SCALE + HU_TARGET_CENTER  # noqa: E731
    e, t, p = scale(est), scale(truth), np.asarray(present) > 0
    return {
        s.name: {
            "n": int(p[:, j].sum()),
            "mean_abs_error": round(float(np.mean(np.abs(e[p[:, j], j] - t[p[:, j], j]))), 1),
            "truth_sd": round(float(np.std(t[p[:, j], j])), 1),
        }
        for j, s in enumerate(HU_STRUCTURES)
        if p[:, j].any()
    }


if __name__ == "__main__":
    main()
