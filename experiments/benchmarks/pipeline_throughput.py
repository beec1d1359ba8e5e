"""Input-pipeline throughput: can the Grain pipeline feed an accelerator?

Prints one JSON document: training-stream throughput (series/s and images/s, an
image being one slice of one series, so images/s = series/s x data.num_slices)
with 0, 1 and 2 Grain worker processes, plus a bare `preprocess` loop without
Grain, on a generated cache (tests/fake_cache.py phantoms on the 256-px cache
grid) or on a prepared cache given with --cache. Put the numbers next to
train_throughput.py's images/s: if the pipeline is slower, training is input-bound.

    /work/venv/bin/python experiments/benchmarks/pipeline_throughput.py
    /work/venv/bin/python experiments/benchmarks/pipeline_throughput.py --workers 0 4 \
        --set data.image_size=224 --set data.window=multi --cache /path/to/cache

Worker start-up (a spawned Python that imports Grain, and Grain imports jax) is
reported separately and excluded from the rates.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def _fake_cache_module():
    spec = importlib.util.spec_from_file_location("fake_cache", REPO / "tests" / "fake_cache.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", default="", help="prepared cache (default: generate one)")
    ap.add_argument("--patients", type=int, default=12, help="generated cache: patients x 4")
    ap.add_argument("--cache-size", type=int, default=256, help="generated cache: in-plane px")
    ap.add_argument("--cache-slices", type=int, default=40, help="generated cache: slices")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=2, help="Grain read threads per process")
    ap.add_argument("--batches", type=int, default=20, help="timed batches per setting")
    ap.add_argument("--set", action="append", default=[], metavar="a.b=v")
    args = ap.parse_args()

    from phasejax.config import Config
    from phasejax.data import pipeline
    from phasejax.data.cache import load_volume

    cfg = Config().override(["train.batch_size=32", "data.image_size=128", *args.set])
    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache
        if not cache:
            cache = _fake_cache_module().make_fake_cache(
                Path(tmp) / "cache",
                patients=args.patients,
                size=args.cache_size,
                slices=args.cache_slices,
            )
        rows = pipeline.split_rows(cache, "train", cfg)
        s = cfg.data.num_slices
        result = {
            "benchmark": "pipeline_throughput",
            "host": platform.node(),
            "cpu_count": os.cpu_count(),
            "cache": str(args.cache or "generated"),
            "train_series": len(rows),
            "batch_size": cfg.train.batch_size,
            "input_shape": list(pipeline.input_shape(cfg.data)),
            "augment": cfg.data.augment,
            "threads": args.threads,
            "runs": [],
        }

        # Bare preprocess loop: the per-series cost without any Grain machinery.
        import numpy as np

        n = min(len(rows), 64)
        t0 = time.perf_counter()
        for i in range(n):
            r = rows[i % len(rows)]
            vol = load_volume(cache, r["series_id"])
            pipeline.preprocess(
                vol,
                int(r["z_lo"]),
                int(r["z_hi"]),
                cfg.data,
                np.random.default_rng(i),
                pixel_mm=pipeline.row_pixel_mm(r),
            )
        dt = time.perf_counter() - t0
        result["preprocess_only"] = {"series_per_s": n / dt, "images_per_s": n * s / dt}

        for w in args.workers:
            wcfg = cfg.override([f"data.worker_count={w}"])
            t0 = time.perf_counter()
            it = pipeline.train_iterator(cache, wcfg, num_threads=args.threads)
            next(it)
            startup = time.perf_counter() - t0
            t0 = time.perf_counter()
            for _ in range(args.batches):
                next(it)
            dt = time.perf_counter() - t0
            it.close()
            series = args.batches * cfg.train.batch_size
            result["runs"].append(
                {
                    "workers": w,
                    "startup_s": round(startup, 3),
                    "series_per_s": round(series / dt, 1),
                    "images_per_s": round(series * s / dt, 1),
                    "batches_per_s": round(args.batches / dt, 2),
                }
            )
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
