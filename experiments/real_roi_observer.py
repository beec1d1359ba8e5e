"""Does the cohort's physiology name the real series from their hand-placed ROIs? (prints JSON)

    python experiments/real_roi_observer.py [--roi docs/real_roi/real_roi.json] [--exams 3000]
        [--roi-noise 10] [--seeds 5] [--delayed-rule excretion_or_equilibrium|excretion]

Separates the two halves of the sim-to-real gap. `experiments/cohort_ceiling.py`'s ideal
observer (an MLP on each series' mean structure HU) is trained on the cohort's exams, here on
only the structures that `experiments/real_roi.py` measured by hand in the real series
(aorta, portal vein, liver, spleen, renal cortex, medulla and pelvis) and with NC as a fifth
class, all read at 120 kVp (the real NIfTI series carry no voltage; HCC-TACE-Seg was scanned
at 120 kVp). It is then given each real series' ROI medians. Where a structure has no ROI in
a series (no portal vein in an NC series, no pelvis in view), the observer for that series
is one trained without it, so nothing is imputed.

If this observer names the real series right, the cohort's HU per phase carry the phase of
real scans and the network's misses come from what the images look like; where it fails,
the cohort's physiology itself places that real series in another phase. The real ROI
values are measurements by one reader at hand-chosen coordinates, used here only to score.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from cohort_ceiling import observations, train_mlp
from real_anatomy import accepted

from phasejax.cohort.kinetics import DEFAULT_DELAYED_RULE, DELAYED_RULES
from phasejax.cohort.sites import INTERNAL_SITE
from phasejax.cohort.structures import Label
from phasejax.phases import Phase

# real_roi.json's ROI names -> cohort structures
ROI_STRUCTURES: dict[str, Label] = {
    "aorta": Label.AORTA,
    "portal_vein": Label.PORTAL_VEIN,
    "liver": Label.LIVER,
    "spleen": Label.SPLEEN,
    "renal_cortex": Label.KIDNEY_CORTEX,
    "renal_medulla": Label.KIDNEY_MEDULLA,
    "renal_pelvis": Label.KIDNEY_COLLECTING,
}
CLASSES5 = (Phase.NC, Phase.EAP, Phase.LAP, Phase.PVP, Phase.DP)
ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--roi", type=Path, default=ROOT / "docs/real_roi/real_roi.json")
    ap.add_argument(
        "--labels",
        type=Path,
        action="append",
        default=None,
        help="labels CSV(s) with `file` and `accepts` (default: the validation set's)",
    )
    ap.add_argument("--exams", type=int, default=3000, help="internal cohort exams to train on")
    ap.add_argument("--roi-noise", type=float, default=10.0, help="SD (HU) added in training")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument(
        "--structures",
        default=",".join(ROI_STRUCTURES),
        help="comma-separated ROI names the observer may read (default: all measured)",
    )
    ap.add_argument("--delayed-rule", choices=DELAYED_RULES, default=DEFAULT_DELAYED_RULE)
    args = ap.parse_args()
    t0 = time.perf_counter()
    labels = args.labels or [ROOT.parent / "shared/data/validation/labels.csv"]
    accepts = accepted(labels)
    allowed = [name.strip() for name in args.structures.split(",")]
    unknown = sorted(set(allowed) - set(ROI_STRUCTURES))
    if unknown:
        ap.error(f"unknown ROI name(s) {unknown}; known: {list(ROI_STRUCTURES)}")
    roi = json.loads(args.roi.read_text())
    series = [s for s in roi["series"] if s["file"] in accepts]
    if not series:
        ap.error(f"no series of {args.roi} is in the labels CSV(s)")

    structures = tuple(ROI_STRUCTURES.values())
    rng = np.random.default_rng(0)
    x, y, _ = observations(
        INTERNAL_SITE, args.exams, 0.0, rng, args.delayed_rule,
        structures=structures, classes=CLASSES5, kvp=120.0,
    )  # fmt: skip
    x = x[:, :-1]  # the voltage is fixed at 120: no information
    observers: dict[tuple[int, ...], list] = {}
    rows = []
    for s in series:
        cols = tuple(
            i for i, name in enumerate(ROI_STRUCTURES) if name in allowed and s["rois"].get(name)
        )
        if cols not in observers:
            observers[cols] = []
            for seed in range(args.seeds):
                noisy = x[:, cols] + rng.normal(0, args.roi_noise, (len(x), len(cols)))
                observers[cols].append(
                    train_mlp(noisy.astype(np.float32), y, seed, num_classes=len(CLASSES5))
                )
        names = [list(ROI_STRUCTURES)[i] for i in cols]
        feat = np.array([[s["rois"][name]["median"] for name in names]], np.float32)
        p = np.mean([np.asarray(f(feat))[0] for f in observers[cols]], axis=0)
        pred = CLASSES5[int(np.argmax(p))].value
        rows.append({
            "file": s["file"],
            "accepts": sorted(accepts[s["file"]]),
            "predicted": pred,
            "correct": pred in accepts[s["file"]],
            "probs": {c.value: round(float(v), 3) for c, v in zip(CLASSES5, p)},
            "structures": names,
        })  # fmt: skip
    out = {
        "what": "cohort-trained ideal observer on hand-placed real ROI medians",
        "delayed_rule": args.delayed_rule,
        "structures": allowed,
        "train_series": int(len(y)),
        "roi_noise_hu": args.roi_noise,
        "seeds": args.seeds,
        "correct": sum(r["correct"] for r in rows),
        "n": len(rows),
        "series": rows,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
