"""What decides a trained model's phase on a real series? Occlusion sensitivity.

For every series under the given paths (DICOM folders or NIfTI files), the network input is
made exactly as `phasejax predict` makes it; then each input slice in turn, and each 16 x 16
patch (stride 8, through all slices at once), is replaced by 40 HU soft tissue, and the drop
of the predicted class's probability is recorded. A decision that rests on one slice or one
patch (a single kidney, say) is a shortcut that a real scan can trip; one spread over the
aorta, portal vein, liver and kidneys is what a reader uses.

    python experiments/real_occlusion.py runs/quick/full5 ../shared/data/validation \
        --out docs/real/occlusion

prints one JSON object (per series: prediction, probabilities, per-slice drop, the share of
the patch-drop mass held by the strongest patch) and writes occlusion.png: every series' input
slices (liver window) with the per-slice drop in the title, and the patch map.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

PATCH, STRIDE, FILL_HU = 16, 8, 40.0


def occlusion(clf, image: np.ndarray, fill: np.ndarray) -> dict:
    """Probabilities of `image` [S, H, W, C] and of its occluded copies."""
    base = clf.probabilities(image[None])[0]
    k = int(np.argmax(base))
    s, h, w, _ = image.shape
    coords = [
        (y, x) for y in range(0, h - PATCH + 1, STRIDE) for x in range(0, w - PATCH + 1, STRIDE)
    ]

    def variants():
        for y, x in coords:
            a = image.copy()
            a[:, y : y + PATCH, x : x + PATCH, :] = fill
            yield a
        for i in range(s):
            a = image.copy()
            a[i] = fill
            yield a

    probs = clf.classify_all(variants())
    patch_drop = base[k] - probs[: len(coords), k]
    heat = np.zeros((h, w))
    count = np.zeros((h, w))
    for (y, x), d in zip(coords, patch_drop):
        heat[y : y + PATCH, x : x + PATCH] += d
        count[y : y + PATCH, x : x + PATCH] += 1
    positive = np.clip(patch_drop, 0.0, None)
    return {
        "base": base,
        "predicted": k,
        "slice_drop": base[k] - probs[len(coords) :, k],
        "heat": heat / np.maximum(count, 1),
        "top_patch_share": float(positive.max() / positive.sum()) if positive.sum() > 0 else 0.0,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir")
    ap.add_argument("paths", nargs="+")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from phasejax.data.windowing import apply_window
    from phasejax.infer import load_classifier
    from phasejax.phases import label_set
    from phasejax.predict.inputs import prepared_inputs

    run, clf = load_classifier(args.run_dir, batch_size=32)
    cfg = run.cfg
    classes = [p.value for p in label_set(cfg.data.label_set).phases]
    fill = apply_window(np.array([FILL_HU], np.float32), cfg.data.window)[0]
    rows, figs = [], []
    for prep in prepared_inputs(args.paths, cfg):
        image = prep.image
        r = occlusion(clf, image, fill)
        name = Path(prep.source).name.replace(".nii.gz", "")
        rows.append(
            {
                "series": name,
                "predicted": classes[r["predicted"]],
                "probabilities": {c: round(float(p), 4) for c, p in zip(classes, r["base"])},
                "slice_drop": [round(float(d), 3) for d in r["slice_drop"]],
                "top_patch_share": round(r["top_patch_share"], 3),
            }
        )
        figs.append((name, image, r))
    args.out.mkdir(parents=True, exist_ok=True)
    if figs:
        s = figs[0][1].shape[0]
        fig, axes = plt.subplots(len(figs), s + 1, figsize=(2.2 * (s + 1), 2.3 * len(figs)))
        axes = np.atleast_2d(axes)
        ch = min(1, figs[0][1].shape[-1] - 1)  # the liver window of "multi"
        for i, (name, image, r) in enumerate(figs):
            for j in range(s):
                ax = axes[i, j]
                ax.imshow(image[j, :, :, ch], cmap="gray", vmin=0, vmax=1)
                ax.set_title(f"{name[:22]} s{j}: {r['slice_drop'][j]:+.2f}", fontsize=6)
                ax.axis("off")
            ax = axes[i, s]
            ax.imshow(image[s // 2, :, :, 0], cmap="gray", vmin=0, vmax=1)
            ax.imshow(r["heat"], cmap="bwr", alpha=0.5, vmin=-0.5, vmax=0.5)
            ax.set_title(f"{classes[r['predicted']]} {r['base'][r['predicted']]:.2f}", fontsize=6)
            ax.axis("off")
        fig.tight_layout()
        fig.savefig(args.out / "occlusion.png", dpi=80)
    out = {"run_dir": str(args.run_dir), "classes": classes, "series": rows}
    (args.out / "occlusion.json").write_text(json.dumps(out, indent=1) + "\n")
    json.dump(out, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
