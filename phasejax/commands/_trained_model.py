"""What `phasejax predict` and `phasejax evaluate` share: the options of running a trained
model over real series, their checks, the JAX device and loading the run.

A helper, not a subcommand (phasejax.cli skips modules whose name starts with "_"). Nothing
heavy is imported at module level: `phasejax --help` stays fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from phasejax.infer import Ensemble
    from phasejax.predict.driver import PredictOptions
    from phasejax.train.restore import TrainedRun

DEVICE_PLATFORMS = {"cpu": "cpu", "gpu": "cuda"}


def add_model_options(p: argparse.ArgumentParser) -> None:
    """--checkpoint, --device, --min-confidence, --batch-size, --workers and --ensemble."""
    p.add_argument(
        "--checkpoint", choices=("best", "latest"), default="best", help="which checkpoint"
    )
    p.add_argument("--device", choices=sorted(DEVICE_PLATFORMS), default=None, help="JAX platform")
    p.add_argument(
        "--min-confidence",
        type=float,
        default=0.6,
        help="top probability under which a prediction is flagged low confidence (0.6)",
    )
    p.add_argument("--batch-size", type=int, default=16, help="series per model call (16)")
    p.add_argument("--workers", type=int, default=1, help="decoding processes (default 1)")
    p.add_argument(
        "--ensemble",
        action="append",
        default=[],
        metavar="RUN_DIR",
        help="another run of the same inputs and classes (e.g. another seed): the "
        "probabilities are the mean over the model and these (repeatable)",
    )


def usage_error(command: str, msg: str) -> int:
    """Say what is wrong with the command line (stderr); exit status 2."""
    print(f"phasejax {command}: {msg}", file=sys.stderr)
    return 2


def check_inputs(args: argparse.Namespace, paths: Sequence[str]) -> str | None:
    """The usage error of `paths` that do not exist or of the options of
    `add_model_options`, or None."""
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        return f"no such file or folder: {', '.join(missing)}"
    if args.workers < 1 or args.batch_size < 1:
        return "--workers and --batch-size must be >= 1"
    if not 0.0 <= args.min_confidence <= 1.0:
        return f"--min-confidence {args.min_confidence} is not in [0, 1]"
    return None


def select_device(device: str | None) -> str | None:
    """Point JAX at the requested platform before its backend starts; an error text or None."""
    if device is None:
        return None
    platform = DEVICE_PLATFORMS[device]
    os.environ["JAX_PLATFORMS"] = platform
    import jax

    # The environment variable is read when jax is imported; the config covers a jax
    # imported earlier whose backend has not started yet.
    jax.config.update("jax_platforms", platform)
    try:
        backend = jax.default_backend()
    except (RuntimeError, AssertionError) as e:
        # jax raises RuntimeError for a platform that fails to start, and (0.10) trips an
        # assertion when the CUDA plugin is installed but no NVIDIA GPU is visible.
        detail = str(e) or f"{type(e).__name__} while starting the {platform} backend"
        return f"--device {device}: no usable {device} here ({detail})"
    if (backend == "cpu") != (device == "cpu"):
        return f"--device {device}: JAX already runs on {backend} in this process"
    return None


def load_model(args: argparse.Namespace, run_dir: str) -> TrainedRun | str:
    """Start JAX on --device, turn on the persistent compilation cache (the eval step's
    compilation, paid once per machine) and restore the --checkpoint of `run_dir`: the
    run, or the text of the usage error."""
    error = select_device(args.device)
    if error:
        return error
    from phasejax import parallel
    from phasejax.train.restore import ModelDirError, load_run

    parallel.enable_compilation_cache()
    try:
        return load_run(run_dir, args.checkpoint)
    except ModelDirError as e:
        return str(e)


# Settings that do not change a model's input: where its cache was and how it was read.
_INPUT_NEUTRAL = frozenset({"cache_dir", "worker_count"})


def load_ensemble(
    args: argparse.Namespace, run: TrainedRun, batch_size: int
) -> tuple[list[TrainedRun], Ensemble | None] | str:
    """The runs of --ensemble and the `Ensemble` of `run` with them (None without any), or
    the text of the usage error: a member must take the same input (every data.* setting
    but the cache's location, and the same cache grid) and have the same classes."""
    if not args.ensemble:
        return [], None
    from phasejax.infer import Classifier, Ensemble
    from phasejax.predict.inputs import model_grid
    from phasejax.train.restore import ModelDirError, load_run

    def data_of(r: TrainedRun) -> dict[str, Any]:
        return {k: v for k, v in r.cfg.to_dict()["data"].items() if k not in _INPUT_NEUTRAL}

    members = []
    for run_dir in args.ensemble:
        try:
            other = load_run(run_dir, args.checkpoint)
        except ModelDirError as e:
            return f"--ensemble {run_dir}: {e}"
        differ = sorted(k for k, v in data_of(other).items() if data_of(run).get(k) != v)
        if differ:
            return (
                f"--ensemble {run_dir}: another input than the model's "
                f"(data.{', data.'.join(differ)} differ)"
            )
        if model_grid(other.cfg)[0] != model_grid(run.cfg)[0]:
            return f"--ensemble {run_dir}: trained on another cache grid than the model"
        members.append(other)
    classifiers = [Classifier.for_model(r.model, batch_size=batch_size) for r in [run, *members]]
    return members, Ensemble(classifiers)


def model_line(run_dir: str, run: TrainedRun, classes: str) -> str:
    """The one line that says which model runs (for stderr)."""
    cfg = run.cfg
    return (
        f"model {run_dir}: {cfg.model.strategy} {cfg.model.depth} over "
        f"{classes}, '{run.which}' checkpoint step {run.step}"
    )


def predict_options(args: argparse.Namespace, **more: Any) -> PredictOptions:
    """`PredictOptions` from the options of `add_model_options` and --quiet."""
    from phasejax.predict.driver import PredictOptions

    return PredictOptions(
        min_confidence=args.min_confidence,
        batch_size=args.batch_size,
        workers=args.workers,
        progress=not args.quiet,
        **more,
    )
