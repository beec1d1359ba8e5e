"""The training run: data, model, jit-compiled steps, validation, checkpoints, results.

`train(cfg, workdir)` is resumable: every `train.checkpoint_every` steps the model,
optimizer and data-iterator states are saved, and a restart in the same workdir
continues from the latest checkpoint with the same batches it would have seen; a
finished run (results.json present) returns its results without retraining.

Multi-host: every process runs this same function; each loads its share of every
batch, the step is one global program, and only process 0 writes files and logs.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from phasejax import parallel
from phasejax.cohort import resolve_cache
from phasejax.config import Config
from phasejax.phases import label_set
from phasejax.train import optim
from phasejax.train import workdir as wd
from phasejax.train.checkpoint import Checkpointer
from phasejax.train.step import Trainer

RESULT_SPLITS = ("val", "test", "external")


# --------------------------------------------------------------------------- data


@dataclass
class SplitPredictions:
    rows: list[dict[str, str]]
    labels: np.ndarray  # int [N], -1 unlabelled
    log_probs: np.ndarray  # float32 [N, K]


def predict_split(
    trainer: Trainer,
    cache_dir: Path,
    split: str,
    cfg: Config,
    *,
    include_unlabelled: bool = False,
    desc: str | None = None,
) -> SplitPredictions:
    """log-probabilities of every series of `split`, each exactly once, in row order.

    Padded rows (weight 0) are dropped after the step; every process receives the
    full result (an all-gather when multi-host).
    """
    from phasejax.data import pipeline
    from phasejax.infer import Classifier

    rows = pipeline.split_rows(cache_dir, split, cfg, include_unlabelled=include_unlabelled)
    n, k = len(rows), label_set(cfg.data.label_set).num_classes
    out = np.full((n, k), np.nan, np.float32)
    labels = np.full(n, -1, np.int64)
    seen = np.zeros(n, np.int64)
    if n == 0:
        return SplitPredictions(rows, labels, out)
    clf = Classifier(
        trainer.model_def,
        trainer.model_state,
        trainer.mesh,
        batch_size=cfg.train.eval_batch_size,
    )
    batches = pipeline.eval_batches(
        cache_dir,
        split,
        cfg,
        batch_size=clf.batch_size,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        include_unlabelled=include_unlabelled,
    )
    from tqdm.auto import tqdm

    bar = tqdm(
        total=n,
        desc=desc or f"eval {split}",
        unit="series",
        leave=False,
        disable=not parallel.is_main_process(),
    )
    for batch in batches:
        g = parallel.to_global(
            {"index": batch["index"], "label": batch["label"], "weight": batch["weight"]},
            trainer.mesh,
        )
        lp = clf.log_probs_all(batch["image"])
        idx = parallel.to_host(g["index"])
        w = parallel.to_host(g["weight"])
        lab = parallel.to_host(g["label"])
        real = (w > 0) & (idx >= 0)
        out[idx[real]] = lp[real]
        labels[idx[real]] = lab[real]
        np.add.at(seen, idx[real], 1)
        bar.update(int(real.sum()))
    bar.close()
    if not np.all(seen == 1):
        bad = np.flatnonzero(seen != 1)[:5]
        raise RuntimeError(
            f"eval on {split!r}: series counted {seen[bad].tolist()} times at rows "
            f"{bad.tolist()}; every series must be counted exactly once"
        )
    return SplitPredictions(rows, labels, out)


def split_accuracy(pred: SplitPredictions) -> dict[str, float]:
    lab = pred.labels >= 0
    if not lab.any():
        return {"accuracy": float("nan"), "nll": float("nan"), "count": 0}
    y = pred.labels[lab]
    lp = pred.log_probs[lab]
    return {
        "accuracy": float(np.mean(np.argmax(lp, 1) == y)),
        "nll": float(-np.mean(lp[np.arange(len(y)), y])),
        "count": int(lab.sum()),
    }


# --------------------------------------------------------------------------- results


def _split_results(pred: SplitPredictions, classes: tuple[str, ...]) -> dict[str, Any]:
    from phasejax.eval.results import predictions_from_rows, split_results
    from phasejax.infer import probabilities_from_log

    probs = probabilities_from_log(pred.log_probs)
    return split_results(predictions_from_rows(pred.rows, probs, classes), classes)


def _finite(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


# --------------------------------------------------------------------------- training


def build_model_and_optimizer(cfg: Config) -> tuple[nnx.Module, nnx.Optimizer]:
    """The classifier of `cfg` (initialised from train.seed) and its nnx.Optimizer.

    Built eagerly: each initializer op compiles once per shape and is then cached for
    the process (and across processes with the persistent compilation cache, see
    `parallel.enable_compilation_cache`); one jit of the whole init would recompile
    on every call, and is no faster on CPU.
    """
    from phasejax.models import build_classifier

    model = build_classifier(cfg, rngs=nnx.Rngs(cfg.train.seed))
    return model, optim.create_optimizer(model, cfg.train)


def _mean_metrics(history: list[dict[str, jax.Array]]) -> dict[str, float]:
    host = jax.device_get(history)
    keys = host[0].keys()
    return {k: float(np.mean([h[k] for h in host])) for k in keys}


def train(
    cfg: Config,
    workdir: str | Path,
    *,
    cache_dir: str | Path | None = None,
    stop_at: int | None = None,
    mesh: Mesh | None = None,
) -> dict[str, Any]:
    """Train `cfg` in `workdir` and return results.json's content.

    stop_at: leave after that global step with a checkpoint, as a preemption would
    (time-sliced jobs; the resume test); the returned dict then has no "splits".
    mesh: defaults to all devices of all processes.
    """
    workdir = Path(workdir).absolute()
    main = parallel.is_main_process()
    if main:
        workdir.mkdir(parents=True, exist_ok=True)
    wd.check_or_write_config(workdir, cfg, write=main)
    done = wd.read_results(workdir) if main else None
    # Process 0 decides, so that all processes skip (or all run) the collective steps.
    if parallel.broadcast_from_main(int(done is not None and "splits" in done)):
        return done if done is not None else (wd.read_results(workdir) or {})

    cache = resolve_cache(cfg, cache_dir)  # the prepared cache, or the built-in cohort's
    mesh = parallel.make_mesh() if mesh is None else mesh
    n_dev = mesh.devices.size
    if cfg.train.batch_size % n_dev:
        raise ValueError(
            f"train.batch_size={cfg.train.batch_size} is not a multiple of the {n_dev} devices"
        )
    if main:
        from phasejax.data.cache import read_spec, recorded_digest

        # The grid the model was trained on: `phasejax train --cache DIR` leaves
        # data.cache_dir empty in config.json, and predict must resample onto this grid.
        grid = read_spec(cache)
        env = {
            **wd.environment_info(),
            "mesh_devices": n_dev,
            "cache_dir": str(cache),
            "cache_grid": {"spacing_z": grid.spacing_z, "size": grid.size},
            # Runs on two machines agree bitwise only if their caches do (see
            # cache.content_digest); null for caches finalized before it was recorded.
            "cache_digest": recorded_digest(cache),
        }
        wd.write_json(workdir / wd.ENV_FILE, env)
    labels = label_set(cfg.data.label_set)
    classes = labels.codes

    from phasejax.data import pipeline

    model, optimizer = build_model_and_optimizer(cfg)
    if not 0.0 <= cfg.train.label_smoothing < 1.0:
        raise ValueError(
            f"train.label_smoothing must be in [0, 1), got {cfg.train.label_smoothing}"
        )
    model.label_smoothing = float(cfg.train.label_smoothing)
    if cfg.train.class_balance:
        counts = pipeline.class_counts(cache, cfg)
        model.set_class_counts(counts)
        if main:
            print(f"class balance: {dict(zip(classes, counts.tolist()))} training series, loss "
                  f"weights per head {model.class_weights}", file=sys.stderr, flush=True)  # fmt: skip
    trainer = Trainer(model, optimizer, mesh)
    del model, optimizer
    schedule = optim.make_schedule(cfg.train)
    ckpt = Checkpointer(workdir / wd.CHECKPOINT_DIR)
    log = wd.MetricsLog(workdir / wd.METRICS_FILE)
    it = pipeline.train_iterator(
        cache,
        cfg,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    has_val = bool(pipeline.split_rows(cache, "val", cfg))

    start, best_acc, best_step, wall, train_time, timed_images = 0, -1.0, -1, 0.0, 0.0, 0
    latest = ckpt.latest_step()
    if latest is not None:
        try:
            r, damaged = ckpt.restore_newest(trainer.model_state, trainer.opt_state)
        except Exception:
            # Their threads would otherwise outlive the failed run.
            ckpt.close()
            if hasattr(it, "close"):
                it.close()
            raise
        for bad_step, why, kept in damaged:
            if main:
                print(
                    f"checkpoint step {bad_step} does not restore ({why}); resuming from "
                    f"step {r.step}; the damaged one is kept in {kept}",
                    file=sys.stderr,
                    flush=True,
                )
        trainer.model_state, trainer.opt_state = r.model_state, r.opt_state
        if r.data_state is not None:
            it.set_state(r.data_state)
        start = r.step
        best_acc = float(r.meta.get("best_val_accuracy", -1.0))
        best_step = int(r.meta.get("best_step", -1))
        wall = float(r.meta.get("wall_time_s", 0.0))
        train_time = float(r.meta.get("train_time_s", 0.0))
        timed_images = int(r.meta.get("timed_images", 0))
        if main:
            log.truncate_after(start)
    steps = int(cfg.train.steps)
    end = steps if stop_at is None else min(steps, int(stop_at))
    tb = None
    if main and cfg.train.tensorboard:
        from phasejax.train import tensorboard

        # A resumed run purges what the interrupted one logged after its last checkpoint,
        # as metrics.jsonl's truncate_after(start) does (TensorBoard drops steps >= purge).
        tb = tensorboard.open_writer(workdir, purge_step=start + 1 if start else None)

    def record(rec: dict[str, Any]) -> None:
        log.append(rec)
        if tb is not None:
            tb.add_record(rec)

    def meta() -> dict[str, Any]:
        return {
            "best_val_accuracy": best_acc,
            "best_step": best_step,
            "wall_time_s": wall + (time.perf_counter() - t_run),
            "train_time_s": train_time,
            "timed_images": timed_images,
        }

    def save(step: int) -> None:
        ckpt.save(
            step, trainer.model_state, trainer.opt_state, data_state=it.get_state(), meta=meta()
        )

    from tqdm.auto import tqdm

    if main:
        print(
            f"{cfg.name}: {cfg.model.strategy} ResNet-{cfg.model.depth} (width "
            f"{cfg.model.width}) on {n_dev} {jax.devices()[0].device_kind} device(s), "
            f"{jax.process_count()} process(es); batch {cfg.train.batch_size} "
            f"({cfg.train.batch_size // n_dev}/device); cache {cache}"
            + (f"; resuming at step {start}" if start else ""),
            file=sys.stderr,
            flush=True,
        )
    t_run = time.perf_counter()
    bar = tqdm(total=steps, initial=start, desc=f"train {cfg.name}", unit="step", disable=not main)
    history: list[dict[str, jax.Array]] = []
    t_log, images_log = time.perf_counter(), 0
    bs = cfg.train.batch_size
    try:
        for step in range(start + 1, end + 1):
            batch = next(it)
            history.append(trainer.step(batch))
            images_log += bs
            if step == start + 1:
                # The first step compiles: wait for it and start the throughput clock
                # after it, so images/s is the steady-state rate.
                jax.block_until_ready(history[-1])
                t_log, images_log = time.perf_counter(), 0
            if step % cfg.train.log_every == 0 or step == end:
                means = _mean_metrics(history)  # the host sync: the steps are done here
                now = time.perf_counter()
                rate = images_log / max(now - t_log, 1e-9)
                rec = {
                    "step": step,
                    "split": "train",
                    **{k: _finite(v) for k, v in means.items()},
                    "learning_rate": float(schedule(step - 1)),
                    "images_per_s": rate,
                }
                if main:
                    record(rec)
                    bar.set_postfix(
                        loss=f"{means['loss']:.3f}",
                        acc=f"{means['accuracy']:.3f}",
                        img_s=f"{rate:.1f}",
                    )
                history.clear()
                train_time += now - t_log
                timed_images += images_log
                t_log, images_log = now, 0
            bar.update(1)
            last = step == steps
            if has_val and (step % cfg.train.eval_every == 0 or last):
                t_eval = time.perf_counter()
                val = split_accuracy(predict_split(trainer, cache, "val", cfg))
                if main:
                    record(
                        {"step": step, "split": "val", **{k: _finite(v) for k, v in val.items()}}
                    )
                    bar.write(f"step {step}: val accuracy {val['accuracy']:.4f} (n={val['count']})")
                if val["accuracy"] > best_acc:
                    best_acc, best_step = val["accuracy"], step
                    ckpt.save(
                        step, trainer.model_state, trainer.opt_state,
                        data_state=it.get_state(), meta=meta(), which="best",
                    )  # fmt: skip
                t_log += time.perf_counter() - t_eval  # eval time is not training throughput
            if step % cfg.train.checkpoint_every == 0 or step == end:
                t_ck = time.perf_counter()
                save(step)
                t_log += time.perf_counter() - t_ck
    finally:
        bar.close()
        ckpt.wait()
        if tb is not None:
            tb.flush()
        if hasattr(it, "close"):
            it.close()

    if end < steps:
        ckpt.close()
        if tb is not None:
            tb.close()
        return {"train": {"steps": end, "stopped_at": end, "finished": False}}

    # ---- results from the best checkpoint (the last one when there is no val split)
    if best_step < 0 or ckpt.latest_step("best") is None:
        ckpt.save(steps, trainer.model_state, trainer.opt_state, meta=meta(), which="best")
        best_step = steps
        ckpt.wait()
    r = ckpt.restore(trainer.model_state, which="best")
    final_state = trainer.model_state
    trainer.model_state = r.model_state
    splits: dict[str, Any] = {}
    for split in RESULT_SPLITS:
        pred = predict_split(trainer, cache, split, cfg, include_unlabelled=True)
        if not pred.rows:
            continue
        splits[split] = _split_results(pred, classes)
    trainer.model_state = final_state
    wall_total = wall + (time.perf_counter() - t_run)
    from phasejax.eval.results import make_results, write_results

    results = make_results(
        classes=classes,
        label_set=labels.name,
        strategy=cfg.model.strategy,
        train={
            "steps": steps,
            "wall_time_s": round(wall_total, 3),
            "images_per_s": round(timed_images / max(train_time, 1e-9), 3),
            "best_step": int(best_step),
            "best_val_accuracy": _finite(float(best_acc)) if best_acc >= 0 else None,
        },
        splits=splits,
    )
    if main:
        write_results(workdir, results)
    if tb is not None:
        tb.add_results(results, steps)
        tb.close()
    ckpt.close()
    parallel.sync("phasejax_train_done")
    return results
