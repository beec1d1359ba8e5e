"""Wall time of one ablation plan run by P processes on one host (prints one JSON line).

    python experiments/benchmarks/ablate_parallel.py [--suite strategy,depth,resolution]
        [--budget smoke] [--parallel 1 2] [--cache DIR]

For each P, `phasejax ablate --suite S --budget BUDGET --parallel P --no-summary` runs into a
fresh temporary directory as its own process (P = 1 runs the plan in that process; P > 1
starts P children pinned to their own devices or cores, phasejax.ablate.shard), and its wall
time is measured from start to exit. The default suites give 4 training runs on the smoke
budget, 2 per child at P = 2. The data is the budget's built-in cohort (generated once before
timing) unless --cache names a prepared cache. JAX's persistent compilation cache is off, so
every P pays its compilations as a first sweep would.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def plan_size(suite: str, preset: str) -> int:
    from phasejax.ablate.suites import expand, for_budget, load_presets, load_suites, select_suites

    p = load_presets()[preset]
    suites = for_budget(load_suites(), p)
    selected = select_suites(suites, suite.split(","))
    plan = expand(selected, p.base_config(), range(p.seeds), preset=preset,
                  all_suites=list(suites.values()))  # fmt: skip
    return len(plan.runs)


def warm_cohort(preset: str) -> str:
    """The built-in cohort the preset trains on, generated now so no timing includes it."""
    from phasejax.ablate.suites import load_presets
    from phasejax.train.loop import resolve_cache

    return str(resolve_cache(load_presets()[preset].base_config()))


def run_once(suite: str, preset: str, parallel: int, cache: str | None) -> dict:
    with tempfile.TemporaryDirectory(prefix="phasejax-ablate-bench-") as tmp:
        out = Path(tmp) / "abl"
        cmd = [sys.executable, "-m", "phasejax.cli", "ablate", "--suite", suite, "--budget",
               preset, "--out", str(out), "--parallel", str(parallel), "--no-summary"]  # fmt: skip
        if cache:
            cmd += ["--cache", cache]
        env = {**os.environ, "PHASEJAX_COMPILATION_CACHE": "off", "JAX_PLATFORMS": "cpu"}
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        done = sum(1 for _ in out.glob("**/results.json"))
        if proc.returncode != 0:
            sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
    return {"parallel": parallel, "wall_s": round(wall, 1), "runs_done": done,
            "exit": proc.returncode}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", default="strategy,depth,resolution")
    ap.add_argument("--budget", "--preset", dest="preset", default="smoke")
    ap.add_argument("--parallel", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--cache", default=None, help="prepared cache (default: built-in cohort)")
    args = ap.parse_args()
    cache = args.cache or warm_cohort(args.preset)
    load_start = os.getloadavg()
    results = [run_once(args.suite, args.preset, p, args.cache) for p in args.parallel]
    base = results[0]["wall_s"]
    for r in results:
        r["speedup_vs_first"] = round(base / r["wall_s"], 2) if r["wall_s"] else None
    load = os.getloadavg()
    print(
        json.dumps(
            {
                "benchmark": "ablate_parallel",
                "suite": args.suite,
                "preset": args.preset,
                "runs": plan_size(args.suite, args.preset),
                "cache": cache,
                "results": results,
                "cpus": len(os.sched_getaffinity(0)),
                # other jobs on the machine: the 1/5/15-minute load averages around the runs
                "load_avg_at_start": [round(x, 2) for x in load_start],
                "load_avg_at_end": [round(x, 2) for x in load],
                "machine": platform.machine(),
                "python": platform.python_version(),
            }
        )
    )
    return 0 if all(r["exit"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
