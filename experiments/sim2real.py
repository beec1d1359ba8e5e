"""Sim-to-real: how a model trained only on the synthetic cohort does on real CT, as JSON.

    python experiments/sim2real.py RUN_DIR [--shared ../shared/data] [--out DIR]

Scores RUN_DIR (a `phasejax train` / `reproduce` run) with `phasejax.evaluate` on the real
validation set (`<shared>/validation`, its labels.csv: 12 series, accepted phase sets) and
on the real examples (`<shared>/real`, labelled by experiments/real_labels.csv from that
folder's README: HCC_015 early arterial and portal venous, a non-contrast NIfTI), and prints
one JSON object: per set and combined, the accuracy of predict's call (the image network and
the anatomy reader combined) with its 95% Wilson interval over all series and over
contrast-enhanced series (NC excluded), per reference label, and every series' prediction,
and the log score (`nll`: mean -ln of the probability given to the accepted phases, floored
at 0.001; phasejax.evaluate); the same for the image network alone (`network_accuracy`,
`network_accuracy_contrast`, `network_nll`; `network_all` / `network_contrast` combined), and
the accuracy of the anatomy reader alone (`anatomy_accuracy`, over the series where it read
the aorta or the kidneys; phasejax.data.aorta, phasejax.data.kidney). With --out, each set's
evaluate outputs (series.csv, summary.json, confusion figure, contact sheets) are written to
OUT/<set>/.

Measure with it; never train or tune on these series (DEVELOPERS' guide).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SETS = {
    "validation": ("validation", "validation/labels.csv"),
    "examples": ("real", str(HERE / "real_labels.csv")),
}


def _series(ev: Any) -> list[dict[str, Any]]:
    keep = ("name", "reference", "accepts", "predicted", "correct", "top_prob", "confidence",
            "network_phase", "network_correct", "aorta_hu", "kidney_cortex_hu", "kidney_medulla_hu", "anatomy_phase",
            "anatomy_correct")  # fmt: skip
    net = tuple(k for k in ev.rows[0] if k.startswith("network_p_")) if ev.rows else ()
    return [{k: r.get(k) for k in (*keep, *net, "kvp")} for r in ev.rows]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--shared", type=Path, default=HERE.parent.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=None, help="write evaluate outputs per set here")
    args = ap.parse_args(argv)

    from phasejax.eval.labels import read_eval_labels
    from phasejax.eval.stats import jsonable, wilson_interval
    from phasejax.evaluate import evaluate_paths, evaluation_summary, write_evaluation
    from phasejax.predict.driver import PredictOptions
    from phasejax.train.restore import load_run

    run = load_run(args.run_dir)
    out: dict[str, Any] = {"run_dir": str(args.run_dir), "label_set": run.cfg.data.label_set}
    totals = {k: [0, 0] for k in ("all", "contrast", "network_all", "network_contrast")}
    for name, (folder, labels) in SETS.items():
        data = args.shared / folder
        csv_path = Path(labels) if Path(labels).is_absolute() else args.shared / labels
        if not data.exists():
            out[name] = {"skipped": f"{data} not found"}
            continue
        ev = evaluate_paths(
            [str(data)],
            read_eval_labels(csv_path),
            run.cfg,
            run.model,
            options=PredictOptions(progress=False),
        )
        summary = evaluation_summary(ev)
        if args.out:
            write_evaluation(ev, summary, args.out / name)
        out[name] = {
            "accuracy": summary["accuracy"],
            "accuracy_contrast": summary["accuracy_contrast"],
            "nll": summary["nll"],
            "network_accuracy": summary["network_accuracy"],
            "network_accuracy_contrast": summary["network_accuracy_contrast"],
            "network_nll": summary["network_nll"],
            "anatomy_accuracy": summary["anatomy_accuracy"],
            "per_label": summary["per_label"],
            "series": _series(ev),
        }
        for key, acc in (
            ("all", "accuracy"),
            ("contrast", "accuracy_contrast"),
            ("network_all", "network_accuracy"),
            ("network_contrast", "network_accuracy_contrast"),
        ):
            totals[key][0] += int(summary[acc]["k"])
            totals[key][1] += int(summary[acc]["n"])
    out["combined"] = {
        key: {"k": k, "n": n, "value": k / n if n else None, "ci": list(wilson_interval(k, n))}
        for key, (k, n) in totals.items()
        if n
    }
    json.dump(jsonable(out), sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
