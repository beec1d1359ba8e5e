"""What a structure-HU head reads on real scans, against hand-placed ROIs (prints JSON).

    python experiments/real_hu_readout.py RUN_DIR [--roi docs/real_roi/real_roi.json]

A run trained with `model.hu_head` ("auxiliary" or "bottleneck") estimates the mean HU of
the aorta, portal vein, liver, spleen and kidney compartments of its input slices
(phasejax.data.pipeline.HU_STRUCTURES). On the cohort those estimates are learned from the
organ masks; on real scans nothing says whether they hold. This script runs the model on
every real series that `experiments/real_roi.py` measured (their `source` paths), prepared
exactly as `phasejax predict` prepares them, and puts the estimates next to the ROI medians
of the same series. Large, phase-consistent errors in one structure show where the
network's reading of real anatomy fails (e.g. an aorta read at portal-venous HU in an
arterial scan), which is the kind of error the bottleneck passes on to the phase.

Caveats: an ROI is one circle on one slice; the estimate is the mean over all the input
slices of the structure (cortex and medulla partial volume included), so agreement within
~20-30 HU is all one can ask. For a two-step run the first network's estimates are shown
(it decides AP / PVP / DP); the second's are in `step2`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

# ROI name in real_roi.json -> phasejax.cohort.structures.Label name.
ROI_STRUCTURES = {
    "aorta": "AORTA",
    "portal_vein": "PORTAL_VEIN",
    "liver": "LIVER",
    "spleen": "SPLEEN",
    "renal_cortex": "KIDNEY_CORTEX",
    "renal_medulla": "KIDNEY_MEDULLA",
    "renal_pelvis": "KIDNEY_COLLECTING",
}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--roi", default="docs/real_roi/real_roi.json")
    args = ap.parse_args(argv)

    import jax.numpy as jnp

    from phasejax.data.discover import discover, load_plan
    from phasejax.data.pipeline import HU_STRUCTURES, HU_TARGET_CENTER, HU_TARGET_SCALE
    from phasejax.predict.inputs import model_grid, prepare_series
    from phasejax.train.restore import load_trained

    cfg, model = load_trained(args.run_dir)
    if cfg.model.hu_head == "none":
        raise SystemExit(f"{args.run_dir} has no structure-HU head (model.hu_head = 'none')")
    spec, _ = model_grid(cfg)
    names = [s.name for s in HU_STRUCTURES]
    rois = json.loads(Path(args.roi).read_text())["series"]
    rows = []
    for entry in rois:
        plans = discover([entry["source"]]).plans
        if len(plans) != 1:
            continue
        series, _ = load_plan(plans[0])
        if series is None:
            continue
        prep = prepare_series(series, cfg.data, spec)
        out = model(jnp.asarray(prep.image[None]))
        heads = {k: np.asarray(v)[0] * HU_TARGET_SCALE + HU_TARGET_CENTER
                 for k, v in out.heads.items() if k.startswith("hu")}  # fmt: skip
        first = heads.get("hu", heads.get("hu_step1"))
        probs = np.exp(np.asarray(out.log_probs)[0])
        row = {
            "file": entry["file"],
            "phase": entry["phase"],
            "predicted": cfg_classes(cfg)[int(np.argmax(probs))],
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
    print(json.dumps({"run": args.run_dir, "hu_head": cfg.model.hu_head, "summary": summary,
                      "series": rows}, indent=1))  # fmt: skip


def cfg_classes(cfg) -> tuple[str, ...]:
    from phasejax.phases import label_set

    return tuple(label_set(cfg.data.label_set).codes)


if __name__ == "__main__":
    main()
