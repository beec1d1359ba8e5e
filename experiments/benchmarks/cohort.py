"""Cohort generation throughput: series per second for DICOM and cache output (prints JSON).

    python experiments/benchmarks/cohort.py [--exams-per-site 1] [--workers 1] [--size quick]

Renders the first exams of every site of a preset (real preset settings: 512 matrix DICOM
at the site's slice thickness; cache format straight onto the 5 mm / 256 px cache grid)
into a temporary directory, once per format, and reports wall time and series/s. The
`quick_cache_estimate_s` field extrapolates to the whole quick cohort at the measured
rate (the README's "cohort generation takes ~N min" comes from here).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from phasejax.cohort import generate as G
from phasejax.data.cache import CacheSpec, init_cache


def bench(fmt: str, preset: str, per_site: int, workers: int, spec: CacheSpec) -> dict:
    p = G.get_preset(preset)
    with tempfile.TemporaryDirectory(prefix="phasejax-bench-") as tmp:
        out = Path(tmp)
        (out / ".progress").mkdir()
        if fmt in ("cache", "both"):
            init_cache(out / "cache", spec)
        jobs = [j for j in G._jobs(out, p, 0, fmt, spec, 0.0) if j.index < per_site]
        t0 = time.perf_counter()
        if workers <= 1:
            n = sum(len(G.run_exam(j)) for j in jobs)
        else:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as ex:
                n = sum(len(r) for r in ex.map(G.run_exam, jobs))
        dt = time.perf_counter() - t0
        size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    return {
        "format": fmt,
        "exams": len(jobs),
        "series": n,
        "seconds": round(dt, 2),
        "series_per_s": round(n / dt, 3),
        "mb_per_series": round(size / max(n, 1) / 2**20, 2),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", "--preset", dest="preset", default="quick", help="cohort size")
    ap.add_argument("--exams-per-site", type=int, default=1)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--formats", default="cache,dicom")
    ap.add_argument("--cache-size", type=int, default=256)
    ap.add_argument("--cache-spacing-z", type=float, default=5.0)
    args = ap.parse_args()
    spec = CacheSpec(spacing_z=args.cache_spacing_z, size=args.cache_size)
    results = [
        bench(f, args.preset, args.exams_per_site, args.workers, spec)
        for f in args.formats.split(",")
    ]
    report: dict = {
        "benchmark": "cohort_generation",
        "preset": args.preset,
        "workers": args.workers,
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "python": sys.version.split()[0],
        "results": results,
    }
    quick = G.get_preset("quick")
    for r in results:
        if r["format"] == "cache":
            per_exam = r["seconds"] / max(r["exams"], 1)
            report["quick_cache_estimate_s"] = round(per_exam * quick.num_exams, 1)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
