"""Which slice of a real series looks like another phase to a model? Slice swapping.

For every real series under the given paths, each of its input slices in turn replaces the
same slice of cohort test series that the model classifies right (the first `--per-phase`
of each phase), and the share of those cohort series whose predicted class changes, and to
what, is recorded. A real slice that turns most cohort series into one phase carries
evidence for that phase that the model learned on the phantom and finds on the real slice:
where the phantom's rendering of that level differs from a patient's (e.g. a real arterial
kidney at the hilum read as excretion, which turns cohort arterial series into "DP").
Occlusion (experiments/real_occlusion.py) asks what a decision rests on; this asks which
real anatomy pulls towards which phase, on inputs that are otherwise the cohort's.

    python experiments/real_slice_swap.py runs/quick/full5 ../shared/data/validation \
        --cohort CACHE --out docs/real/slice_swap

prints one JSON object (per real series and slice: the share of cohort series changed and
the classes they moved to) and writes slice_swap.json and slice_swap.png (series x slice,
colour = share changed, text = the class most moved to).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np


def slice_swap(clf, real: np.ndarray, cohort: np.ndarray, classes: list[str]) -> list[dict]:
    """Per slice k of `real` [S, H, W, C]: the share of `cohort` [N, S, H, W, C] inputs whose
    predicted class changes when their slice k is `real[k]`, and the classes they move to."""
    base = np.argmax(clf.classify_all(list(cohort)), axis=-1)
    out = []
    for k in range(real.shape[0]):
        swapped = cohort.copy()
        swapped[:, k] = real[k]
        pred = np.argmax(clf.classify_all(list(swapped)), axis=-1)
        moved = Counter(classes[int(p)] for p, b in zip(pred, base) if p != b)
        out.append(
            {
                "changed": round(float(np.mean(pred != base)), 3),
                "moved_to": {c: round(n / len(cohort), 3) for c, n in moved.most_common()},
            }
        )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir")
    ap.add_argument("paths", nargs="+")
    ap.add_argument("--cohort", required=True, help="the model's cohort cache (test series)")
    ap.add_argument("--per-phase", type=int, default=5, help="cohort series per phase")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from phasejax.data.pipeline import row_input, split_rows
    from phasejax.infer import load_classifier
    from phasejax.phases import label_set
    from phasejax.predict.inputs import prepared_inputs

    run, clf = load_classifier(args.run_dir, batch_size=32)
    cfg = run.cfg
    classes = [p.value for p in label_set(cfg.data.label_set).phases]

    # Cohort series the model gets right, the first --per-phase of each phase.
    chosen: list[np.ndarray] = []
    per_phase: Counter[str] = Counter()
    for r in split_rows(args.cohort, "test", cfg):
        if r["phase"] not in classes or per_phase[r["phase"]] >= args.per_phase:
            continue
        image = row_input(args.cohort, r, cfg.data)
        if classes[int(np.argmax(clf.probabilities(image[None])[0]))] == r["phase"]:
            chosen.append(image)
            per_phase[r["phase"]] += 1
    cohort = np.stack(chosen)
    rows = []
    for prep in prepared_inputs(args.paths, cfg):
        image = prep.image
        probs = clf.probabilities(image[None])[0]
        rows.append(
            {
                "series": Path(prep.source).name.replace(".nii.gz", ""),
                "predicted": classes[int(np.argmax(probs))],
                "slices": slice_swap(clf, image, cohort, classes),
            }
        )
    args.out.mkdir(parents=True, exist_ok=True)
    if rows:
        share = np.array([[s["changed"] for s in r["slices"]] for r in rows])
        fig, ax = plt.subplots(figsize=(1.2 * share.shape[1] + 3, 0.45 * len(rows) + 1.2))
        ax.imshow(share, cmap="Reds", vmin=0, vmax=1, aspect="auto")
        for i, r in enumerate(rows):
            for j, s in enumerate(r["slices"]):
                to = next(iter(s["moved_to"]), "")
                ax.text(j, i, f"{s['changed']:.2f} {to}", ha="center", va="center", fontsize=7)
        ax.set_yticks(
            range(len(rows)), [f"{r['series'][:28]} · predicted {r['predicted']}" for r in rows]
        )
        ax.set_xticks(range(share.shape[1]), [f"s{j}" for j in range(share.shape[1])])
        ax.set_title(
            f"share of {len(cohort)} right cohort series changed by one real slice "
            f"(s0 most inferior; {dict(per_phase)})",
            fontsize=8,
        )
        fig.tight_layout()
        fig.savefig(args.out / "slice_swap.png", dpi=90)
    out = {
        "run_dir": str(args.run_dir),
        "classes": classes,
        "cohort_series": dict(per_phase),
        "series": rows,
    }
    (args.out / "slice_swap.json").write_text(json.dumps(out, indent=1) + "\n")
    json.dump(out, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
