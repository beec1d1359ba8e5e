"""Wall time of training with the input pipeline in-process vs in Grain worker processes.

On a CPU the jit step and the preprocessing share the cores: in-process (data.worker_count
0) Grain's read threads make each batch while XLA runs the step, under the GIL; a worker
process makes it outside. Whether that pays depends on how much of the cores XLA leaves
idle. One JSON document: for each worker count, `phasejax train` of the named config for
--steps steps (periodic validation off, the final evaluation included in wall_s but not in
the training rate), its training wall time and series/s from results.json, and whether its
per-step training losses equal those of the first setting bit for bit (Grain makes the
same batches whatever the worker count).

    python experiments/benchmarks/train_workers.py --config quick --steps 200 --workers 0 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _losses(run: Path) -> list[float]:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x]
    return [r["loss"] for r in rows if r.get("split") == "train"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="quick")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--set", action="append", default=[], metavar="a.b=v")
    args = ap.parse_args()
    out = []
    first: list[float] | None = None
    with tempfile.TemporaryDirectory(prefix="phasejax-workers-") as tmp:
        for i, w in enumerate(args.workers):
            run = Path(tmp) / f"{i}_w{w}"  # a worker count may repeat: each run trains anew
            sets = [
                f"train.steps={args.steps}",
                f"train.eval_every={args.steps}",
                f"train.checkpoint_every={args.steps}",
                f"data.worker_count={w}",
                *args.set,
            ]
            cmd = [sys.executable, "-m", "phasejax.cli", "train", "--config", args.config]
            cmd += ["--out", str(run)] + [x for s in sets for x in ("--set", s)]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                out.append({"workers": w, "error": proc.stderr[-2000:]})
                continue
            res = json.loads((run / "results.json").read_text())["train"]
            losses = _losses(run)
            first = losses if first is None else first
            out.append(
                {
                    "workers": w,
                    "wall_s": round(wall, 1),
                    "train_wall_s": res["wall_time_s"],
                    "series_per_s": res["images_per_s"],
                    "same_losses_as_first": losses == first,
                }
            )
            print(json.dumps(out[-1]), file=sys.stderr, flush=True)
    report = {
        "benchmark": "train_workers",
        "config": args.config,
        "steps": args.steps,
        "cpu_count": os.cpu_count(),
        "sets": args.set,
        "runs": out,
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
