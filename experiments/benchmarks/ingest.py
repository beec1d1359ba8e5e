"""DICOM ingestion throughput: load + HU of uncompressed 512x512 CT, slices per second.

Prints one JSON document comparing, on the same files:

- `plain_pydicom`: a bare `pydicom.dcmread` + `pydicom.pixels.apply_modality_lut`
  loop (no grouping, no ordering, no checks: the floor any loader pays);
- `phasejax_serial`: `phasejax.data.discover.discover` (header pass, grouping,
  ordering, geometry checks) + `load_plan` (decode, HU, padding) in one process,
  with the header pass and the decode reported separately too;
- `phasejax_workers`: the same decode over N spawned worker processes
  (`map_plans`, as `phasejax inspect/prepare --workers N` run it; workers decode
  whole series and return only a summary). Worker start-up (spawning Python and
  importing pydicom/numpy: ~1 s) is reported as `startup_s` and excluded from the
  rate, as it is paid once per command, not per series.

By default it writes --series synthetic series of --slices slices (12-bit unsigned,
intercept -1024, explicit VR little endian) to a temporary folder; --dir measures
an existing folder instead (e.g. ../shared/data/real/HCC_015). Each number is the
best of --repeats runs (page cache warm after the first).

    /work/venv/bin/python experiments/benchmarks/ingest.py
    /work/venv/bin/python experiments/benchmarks/ingest.py --series 8 --workers 2 4 8
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


def _factory():
    spec = importlib.util.spec_from_file_location(
        "dicom_factory", REPO / "tests" / "dicom_factory.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_synthetic(root: Path, n_series: int, n_slices: int) -> None:
    import numpy as np

    f = _factory()
    rng = np.random.default_rng(0)
    body = f.body_phantom(512, 512, 40.0) + 1024
    for s in range(n_series):
        noise = rng.normal(0, 12, size=(n_slices, 512, 512))
        stored = np.clip(np.rint(body[None] + noise), 0, 4095).astype(np.int32)
        f.write_series(
            root / f"series{s:02d}",
            stored,
            series_uid=f.uid("bench", s),
            pixel_spacing=(0.7, 0.7),
            patient_id=f"BENCH{s:02d}",
        )


def _noop(x: int) -> int:
    return x


def _decode_only(plan):  # module level: picklable for spawned workers
    from phasejax.data.discover import load_plan

    series, _ = load_plan(plan)
    return 0 if series is None else series.num_slices


def best_of(repeats: int, fn) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--series", type=int, default=4)
    ap.add_argument("--slices", type=int, default=48)
    ap.add_argument("--workers", type=int, nargs="+", default=[2])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dir", default=None, help="measure this folder instead of synthetic data")
    args = ap.parse_args()

    import numpy as np
    import pydicom
    from pydicom.pixels import apply_modality_lut

    from phasejax.data.discover import discover, load_plan, map_plans, worker_pool

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.dir) if args.dir else Path(tmp)
        if not args.dir:
            write_synthetic(root, args.series, args.slices)
        files = sorted(str(p) for p in root.rglob("*.dcm"))
        n = len(files)

        def plain() -> int:
            for f in files:
                ds = pydicom.dcmread(f)
                hu = apply_modality_lut(ds.pixel_array, ds)
            return int(hu.shape[0])

        def headers():
            return discover([root])

        t_plain, _ = best_of(args.repeats, plain)
        t_head, disc = best_of(args.repeats, headers)
        plans = disc.plans
        n_planned = sum(p.num_slices for p in plans)

        def decode() -> int:
            total = 0
            for p in plans:
                s, _ = load_plan(p)
                total += s.num_slices
                del s
            return total

        t_decode, n_loaded = best_of(args.repeats, decode)
        workers = []
        for w in args.workers:
            best = (float("inf"), 0.0, 0)
            for _ in range(args.repeats):
                with worker_pool(w) as pool:
                    t0 = time.perf_counter()
                    list(map_plans(_noop, list(range(2 * w)), workers=w, pool=pool))
                    t1 = time.perf_counter()
                    d = discover([root], workers=w, pool=pool)
                    n_w = sum(r for _, r in map_plans(_decode_only, d.plans, workers=w, pool=pool))
                    t2 = time.perf_counter()
                if t2 - t1 < best[0]:
                    best = (t2 - t1, t1 - t0, n_w)
            t_w, t_start, n_w = best
            workers.append(
                {
                    "workers": w,
                    "startup_s": round(t_start, 3),
                    "seconds": round(t_w, 3),
                    "slices_per_s": round(n_w / t_w, 1),
                    "speedup_vs_serial": round((t_head + t_decode) / t_w, 2),
                }
            )

    doc = {
        "benchmark": "ingest",
        "data": args.dir or f"synthetic {args.series} x {args.slices} slices, 512x512 uint16",
        "files": n,
        "series": len(plans),
        "slices_loaded": int(n_loaded),
        "repeats": args.repeats,
        "plain_pydicom": {"seconds": round(t_plain, 3), "slices_per_s": round(n / t_plain, 1)},
        "phasejax_serial": {
            "seconds": round(t_head + t_decode, 3),
            "slices_per_s": round(n_planned / (t_head + t_decode), 1),
            "header_pass_slices_per_s": round(n / t_head, 1),
            "decode_hu_slices_per_s": round(n_planned / t_decode, 1),
        },
        "phasejax_workers": workers,
        "machine": {
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "pydicom": pydicom.__version__,
            "platform": platform.platform(),
        },
    }
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
