"""`phasejax predict` speed: one 100-slice 512x512 DICOM series on disk -> its phase, on CPU.

Prints one JSON document:

- `cold_s`: a fresh `phasejax predict` process with an empty persistent compilation
  cache: Python and JAX start-up, model restore, XLA compilation, decode, preprocess,
  forward. What a user waits for the first time.
- `cold_cached_s`: the same command again in a fresh process, the compilation now read
  from the persistent cache (~/.cache/phasejax/xla in normal use; a temporary folder here).
- `warm_s`: in one process after a first call (model loaded, step compiled): the same
  series again, with its breakdown (discover, decode + resample + preprocess, model).
- `throughput`: series/s over a folder of `--series` distinct series of the same size,
  warm, for each `--workers` setting (decoding processes).

The model is the config's architecture with its initial weights (speed does not depend
on the weights), saved as a run directory the way training saves one. Default config:
`Config()` (two-step ResNet-18, 3 slices at 128 px, abdomen window). The phantom is an
ellipse body with lungs at the top, liver, kidneys, aorta and spine, 0.75 mm pixels,
2.5 mm slices: what matters for speed is the size on disk, not the anatomy.

    /work/venv/bin/python experiments/benchmarks/predict.py
    /work/venv/bin/python experiments/benchmarks/predict.py --series 16 --workers 1 2 4 \
        --set data.image_size=224 --set model.depth=34
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
os.environ.setdefault("JAX_PLATFORMS", "cpu")


def phantom(slices: int, size: int, seed: int) -> np.ndarray:
    """HU [Z, size, size]: lung bases in the top fifth, abdomen below, with noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    body = ((yy - 0.5) / 0.36) ** 2 + ((xx - 0.5) / 0.44) ** 2 <= 1
    vol = np.full((slices, size, size), -1000.0, np.float32)
    for z in range(slices):
        img = np.where(body, -90.0, -1000.0)  # fat
        img[((yy - 0.45) / 0.3) ** 2 + ((xx - 0.5) / 0.38) ** 2 <= 1] = 40.0  # muscle/bowel
        img[((yy - 0.42) / 0.16) ** 2 + ((xx - 0.33) / 0.14) ** 2 <= 1] = 110.0  # liver
        img[((yy - 0.62) / 0.05) ** 2 + ((xx - 0.5) / 0.05) ** 2 <= 1] = 400.0  # vertebra
        img[((yy - 0.55) / 0.025) ** 2 + ((xx - 0.47) / 0.025) ** 2 <= 1] = 180.0  # aorta
        if z < slices * 0.45:
            for cx in (0.36, 0.64):  # kidneys
                img[((yy - 0.6) / 0.06) ** 2 + ((xx - cx) / 0.045) ** 2 <= 1] = 160.0
        if z >= slices * 0.8:
            for cx in (0.3, 0.7):  # posterior lung bases, both sides
                img[((yy - 0.62) / 0.1) ** 2 + ((xx - cx) / 0.12) ** 2 <= 1] = -850.0
        vol[z] = img
    vol += rng.normal(0.0, 12.0, vol.shape).astype(np.float32) * body
    return vol


def write_phantom_series(folder: Path, index: int, slices: int, size: int) -> None:
    from phasejax.cohort.dicom_writer import SeriesMeta, make_uid, write_series

    t = dt.datetime(2024, 1, 1, 10, 0, 0) + dt.timedelta(minutes=index)
    meta = SeriesMeta(
        patient_id=f"BENCH{index:03d}",
        patient_name="BENCHMARK^PHANTOM",
        study_uid=make_uid("bench-study", index),
        series_uid=make_uid("bench-series", index),
        frame_of_reference_uid=make_uid("bench-for", index),
        study_datetime=t,
        series_datetime=t,
        acquisition_datetime=t,
        content_datetime=t,
        contrast_start=None,
        series_description="Abdomen portal venous 2.5",
        slice_thickness_mm=2.5,
    )
    px = 384.0 / size
    positions = [(-192.0, -192.0, -400.0 + 2.5 * k) for k in range(slices)]
    write_series(
        folder,
        phantom(slices, size, index),
        positions=positions,
        pixel_spacing=(px, px),
        meta=meta,
    )


def make_run_dir(run_dir: Path, overrides: list[str]) -> dict:
    from flax import nnx

    from phasejax.config import Config
    from phasejax.train import workdir as wd
    from phasejax.train.checkpoint import Checkpointer
    from phasejax.train.loop import build_model_and_optimizer

    cfg = Config(name="bench_predict").override(overrides)
    model, opt = build_model_and_optimizer(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    wd.write_json(run_dir / wd.CONFIG_FILE, cfg.to_dict())
    with Checkpointer(run_dir / wd.CHECKPOINT_DIR) as ck:
        ck.save(0, nnx.state(model), nnx.state(opt), meta={"benchmark": True}, which="best")
        ck.wait()
    return {
        "strategy": cfg.model.strategy,
        "depth": cfg.model.depth,
        "width": cfg.model.width,
        "image_size": cfg.data.image_size,
        "num_slices": cfg.data.num_slices,
        "window": cfg.data.window,
        "cache_size": cfg.data.cache_size,
    }


def timed_command(series: Path, run_dir: Path, out: Path, cache_dir: Path) -> float:
    env = {**os.environ, "PHASEJAX_COMPILATION_CACHE": str(cache_dir), "JAX_PLATFORMS": "cpu"}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    cmd = [sys.executable, "-m", "phasejax.cli", "predict", str(series), "--model", str(run_dir),
           "--out", str(out), "--device", "cpu", "--quiet"]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"predict failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return wall


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--slices", type=int, default=100)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--series", type=int, default=8, help="series in the throughput folder")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--set", action="append", default=[], metavar="a.b=v")
    ap.add_argument("--skip-cold", action="store_true", help="no fresh-process timings")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="phasejax_bench_predict_") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        one = root / "one"
        write_phantom_series(one, 0, args.slices, args.size)
        many = root / "many"
        for i in range(args.series):
            write_phantom_series(many / f"series{i:03d}", i + 1, args.slices, args.size)
        write_s = time.perf_counter() - t0
        run_dir = root / "run"
        model_info = make_run_dir(run_dir, args.set)

        result: dict = {
            "benchmark": "predict",
            "host": {
                "platform": platform.platform(),
                "cpu_count": os.cpu_count(),
                "python": platform.python_version(),
            },
            "model": model_info,
            "series": {"slices": args.slices, "matrix": args.size, "bytes_on_disk": _size(one)},
            "setup_write_s": round(write_s, 2),
        }
        if not args.skip_cold:
            cache = root / "xla_cache"
            result["cold_s"] = round(timed_command(one, run_dir, root / "a.csv", cache), 3)
            result["cold_cached_s"] = round(timed_command(one, run_dir, root / "b.csv", cache), 3)

        from phasejax.data.pipeline import input_shape
        from phasejax.infer import Classifier
        from phasejax.predict.driver import PredictOptions, predict_paths
        from phasejax.train.restore import load_run

        run = load_run(run_dir)
        # One series, as the command does it (a batch of one): the first call compiles.
        opts = PredictOptions(progress=False, batch_size=args.batch_size)
        first = predict_paths([one], run.cfg, run.model, options=opts)
        assert first.counts()["classified"] == 1, first.rows
        t0 = time.perf_counter()
        rep = predict_paths([one], run.cfg, run.model, options=opts)
        result["warm_s"] = round(time.perf_counter() - t0, 3)
        result["warm_breakdown_s"] = {k: round(v, 3) for k, v in rep.seconds.items()}
        result["predicted"] = rep.rows[0]["predicted"]

        # The folder: the batch the command would use for it, compiled before timing.
        clf = Classifier.for_model(run.model, batch_size=min(args.batch_size, args.series))
        clf.log_probs(np.zeros((1, *input_shape(run.cfg.data)), np.float32))
        result["batch_size"] = clf.batch_size
        result["throughput"] = []
        for w in args.workers:
            opts_w = PredictOptions(progress=False, batch_size=args.batch_size, workers=w)
            clf.seconds = 0.0
            t0 = time.perf_counter()
            rep = predict_paths([many], run.cfg, run.model, options=opts_w, classifier=clf)
            wall = time.perf_counter() - t0
            n = rep.counts()["classified"]
            result["throughput"].append(
                {
                    "workers": w,
                    "series": n,
                    "seconds": round(wall, 3),
                    "series_per_s": round(n / wall, 3),
                    "breakdown_s": {k: round(v, 3) for k, v in rep.seconds.items()},
                }
            )
        import jax

        result["jax"] = {"version": jax.__version__, "backend": jax.default_backend()}
    print(json.dumps(result, indent=2))
    return 0


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


if __name__ == "__main__":
    sys.exit(main())
