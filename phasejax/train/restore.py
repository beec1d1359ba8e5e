"""A trained model back from its run directory, for prediction and evaluation.

    cfg, model = load_trained("runs/paper_B")          # best validation checkpoint
    cfg, model = load_trained("runs/paper_B", "latest")

The run directory is what `phasejax train` / `phasejax reproduce` write
(phasejax.train.workdir): config.json rebuilds the model exactly as it was trained
(`phasejax.models.build_classifier`, the builder training uses) and the checkpoint
under checkpoints/<which>/ fills in its parameters and BatchNorm statistics. The
checkpoint is opened read-only: nothing in the run directory is created or changed.

Everything that can be wrong with a model directory raises `ModelDirError` with the
path and the reason, before any weights are read where possible: a missing folder,
no or unreadable config.json, a label set or strategy this version does not know,
no checkpoint of the requested kind, or a checkpoint that does not fit the config.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from phasejax.config import Config, ConfigError
from phasejax.train import workdir as wd

CHECKPOINT_KINDS = ("best", "latest")


class ModelDirError(RuntimeError):
    """The run directory cannot give a trained model; the message says which file and why."""


def read_run_config(run_dir: str | Path) -> Config:
    """The run's Config from config.json; a setting this version does not know is an error."""
    from phasejax.phases import LABEL_SETS

    root = Path(run_dir)
    if not root.is_dir():
        raise ModelDirError(f"model directory {root} does not exist")
    path = root / wd.CONFIG_FILE
    if not path.is_file():
        raise ModelDirError(
            f"{root} is not a training run directory: no {wd.CONFIG_FILE} "
            "(give the --out of `phasejax train`, or OUT/strategy_A|B of `phasejax reproduce`)"
        )
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ModelDirError(
            f"{path}: cannot read the run's config ({type(e).__name__}: {e})"
        ) from e
    data = raw.get("data") if isinstance(raw, dict) else None
    label_set = data.get("label_set") if isinstance(data, dict) else None
    if label_set is not None and label_set not in LABEL_SETS:
        # The likeliest mismatch (a model of a newer phasejax), said in the words that matter.
        raise ModelDirError(
            f"{path}: the model was trained with label set {label_set!r}, which this "
            f"version of phasejax cannot map to phases (known: {sorted(LABEL_SETS)})"
        )
    try:
        cfg = Config.from_dict(raw)
    except ConfigError as e:
        raise ModelDirError(f"{path}: settings this version of phasejax does not know: {e}") from e
    except (ValueError, TypeError, AttributeError) as e:
        raise ModelDirError(
            f"{path}: cannot read the run's config ({type(e).__name__}: {e})"
        ) from e
    return _with_trained_grid(cfg, root)


def _with_trained_grid(cfg: Config, root: Path) -> Config:
    """The config with the cache grid training actually used (env.json's cache_grid).

    config.json keeps the user's config; a run trained on a prepared cache passed with
    `--cache` may have used another grid than data.cache_spacing_z / data.cache_size, and
    preprocessing at predict time must match the trained grid exactly.
    """
    try:
        grid = json.loads((root / wd.ENV_FILE).read_text()).get("cache_grid")
    except (OSError, json.JSONDecodeError):
        return cfg
    if not grid:
        return cfg
    return cfg.override(
        {"data.cache_spacing_z": float(grid["spacing_z"]), "data.cache_size": int(grid["size"])}
    )


def checkpoint_step(run_dir: str | Path, which: str = "best") -> int:
    """The step of the newest complete checkpoint of kind `which`; ModelDirError if none."""
    from phasejax.train.checkpoint import Checkpointer

    if which not in CHECKPOINT_KINDS:
        raise ModelDirError(f"checkpoint kind {which!r}: use one of {CHECKPOINT_KINDS}")
    folder = Path(run_dir) / wd.CHECKPOINT_DIR
    ckpt = Checkpointer(folder, read_only=True)
    try:
        step = ckpt.latest_step(which)
    finally:
        ckpt.close()
    if step is None:
        other = "latest" if which == "best" else "best"
        raise ModelDirError(
            f"{Path(run_dir)}: no complete '{which}' checkpoint under {folder / which} "
            f"(training not started, still running its first steps, or interrupted; "
            f"try --checkpoint {other} if that one exists)"
        )
    return int(step)


@dataclass(frozen=True)
class TrainedRun:
    run_dir: Path
    cfg: Config
    model: Any  # OneStepClassifier | TwoStepClassifier, in eval mode
    which: str  # "best" | "latest"
    step: int
    meta: dict[str, Any]  # the checkpoint's metadata (best_val_accuracy, wall time...)


def load_run(run_dir: str | Path, which: str = "best") -> TrainedRun:
    """The trained model of a run with its config and checkpoint step (see load_trained)."""
    import jax
    from flax import nnx

    from phasejax.models import build_classifier
    from phasejax.train.checkpoint import Checkpointer, CheckpointError

    cfg = read_run_config(run_dir)
    step = checkpoint_step(run_dir, which)
    try:
        # The same builder and seed as phasejax.train.loop.build_model_and_optimizer, but
        # abstract (nnx.eval_shape): the initial weights would be overwritten anyway, and
        # building them eagerly compiles one small program per layer shape, which costs
        # seconds per model on a CPU. The optimizer is not built at all.
        model = nnx.eval_shape(lambda: build_classifier(cfg, rngs=nnx.Rngs(cfg.train.seed)))
    except ValueError as e:
        raise ModelDirError(f"{Path(run_dir) / wd.CONFIG_FILE}: cannot build the model: {e}") from e
    # Restore onto this process's first device; callers replicate it over their mesh.
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    template = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), nnx.state(model)
    )
    ckpt = Checkpointer(Path(run_dir) / wd.CHECKPOINT_DIR, read_only=True)
    try:
        got_step, state, meta = ckpt.restore_model(template, which=which, step=step)
    except CheckpointError as e:
        raise ModelDirError(
            f"{Path(run_dir)}: the '{which}' checkpoint does not fit the run's config.json "
            f"(or is damaged): {e}"
        ) from e
    finally:
        ckpt.close()
    nnx.update(model, state)
    model.eval()
    return TrainedRun(Path(run_dir), cfg, model, which, got_step, meta)


def load_trained(run_dir: str | Path, which: str = "best") -> tuple[Config, Any]:
    """(Config, model) of a trained run: the model rebuilt from config.json with the
    `which` ("best" | "latest") checkpoint's parameters and BatchNorm statistics, in
    eval mode (BatchNorm uses its running averages). Raises ModelDirError."""
    run = load_run(run_dir, which)
    return run.cfg, run.model
