"""Accelerator proof in one run: environment, correctness, speed, pipeline, training, predict.

Started once from the repository root of a machine with an accelerator, it runs seven
stages and writes everything to ONE JSON file, `accelerator_check.json` in --out DIR
(default: $OUT, else runs/accelerator_check). The file is rewritten at the start and
end of every stage (and after every throughput job), so a run that is killed still
leaves what it measured; progress lines go to stderr. Exit status 0 when every
selected stage is "ok", 1 otherwise, 2 on bad usage.

    python experiments/accelerator_check.py --out $OUT              # GPU machine, <= 7.5 min
    python experiments/accelerator_check.py --dry-run --out /tmp/ac  # any CPU, tiny sizes
    python experiments/accelerator_check.py --dry-run --stages env,correctness --out /tmp/ac
    python experiments/accelerator_check.py --out $OUT --time-limit 900  # throughput: +450 s

It installs nothing and reaches no network. All JAX work happens in child processes
(this script re-invoked with --child, the benchmark scripts under
experiments/benchmarks/, `python -m phasejax.cli`), each under a timeout from its
stage's budget, so a hung or crashing stage costs its budget and no more, and the
parent never imports JAX. Each child leads its own process group, which a timeout ends
(Grain workers included).

Stages, in run order (--stages picks a subset; the order stays this one):

  env          versions of every dependency (or "absent") against pyproject.toml's pins,
               Python, JAX backend / device kind / device count, torch and CUDA,
               nvidia-smi, and whether every phasejax module imports.
  correctness  two training steps of the default test model (tests/test_train_step.py's
               tiny two-step ResNet, SGD, 16 series of 32 px) from the same weights and
               batches on the default device and on jax.devices('cpu'): losses, gradient
               norms and parameters compared within a stated tolerance per variant
               (CORRECTNESS_VARIANTS: float32 at XLA's default precision, where NVIDIA
               GPUs use TF32 for convolutions and matmuls: rtol 1e-2; float32 at
               "highest" precision: rtol 1e-4; bfloat16 compute: rtol 5e-2).
  tests        `python -m pytest -m "not slow" -q tests/test_train_step.py
               tests/test_parallel.py` (-n 4 with pytest-xdist) as a subprocess, on the
               8 fake CPU devices tests/conftest.py sets up: exit code and last lines.
  pipeline     experiments/benchmarks/pipeline_throughput.py with 0, 4 and 8 Grain
               workers at 224 px with the paper preset's input (5 slices, three windows,
               batch 64), compared with every model rate of `throughput` in series/s
               (the training benchmark counts one 3-slice series as one image, the
               pipeline one image per slice): keeps_up per worker count.
  paper        a reduced synthetic cohort (PAPER_COHORT: 58 exams instead of the paper
               preset's 1,390, rendered straight into the training cache), then
               `phasejax train --config paper --set train.steps=300` on it: steps/s and
               the time extrapolated to the paper preset's 4,000 steps.
  predict      `phasejax predict --device gpu` (cpu without an accelerator) of
               ../shared/data/validation with the run from `paper`, twice: cold (empty
               persistent compilation cache) and warm (the cache the first call filled).
  throughput   experiments/benchmarks/train_throughput.py for ResNet-18 and -50 at
               224 px, bfloat16 and float32, batch 128, 256 and 64: one child per depth
               and dtype (bfloat16 first), each with a share of the time left (ResNet-50
               twice ResNet-18's), the batches in that order: images/s, step time,
               compile time, FLOPs per step from XLA's cost analysis, TFLOP/s, MFU
               against the chip's peak (PEAK_TFLOPS, keyed by device kind; --peak-tflops
               overrides), and the PyTorch twin when torch sees CUDA ("torch absent" /
               "torch without CUDA" otherwise). It runs last so that it alone absorbs
               the time the others leave; configurations it could not fit are listed
               under `missing`.

--dry-run runs every stage with tiny sizes (tiny ResNet, 32 px, batch 8, a few steps, a
4-exam cohort, 0 and 1 Grain workers, tests/test_parallel.py only) so the whole script
is exercised on a CPU: about 100 s of CPU time on 2 cores; tests/test_accelerator_check.py
runs it.

Time: --time-limit (default 450 s: the 8 minutes asked for, less a margin) bounds the
run. Each stage has a budget (STAGE_BUDGETS_S; --budget STAGE=SECONDS changes one) that
the stages before it leave reserved; `throughput` is elastic: it gets all that is left.
A stage whose share is under MIN_STAGE_S is skipped with an error saying so.

Compilation cache: the children share one persistent compilation cache in the work
directory (model initialisation compiles one small program per layer shape; sharing
pays that once), so compile_s includes writing the executable to it; no train step is
compiled twice in one run, so no compile time is a cache hit. `predict` uses its own,
initially empty, cache so that "cold" means cold. Work files (cohort, run, caches) live
in a temporary folder removed at the end, or in --work DIR, kept.

JSON schema (`accelerator_check.json`; "schema" names its version):

  schema, mode ("full" | "dry-run"), command, started_at, updated_at, finished (bool),
  elapsed_s, time_limit_s, work_dir, kept_work (bool)
  repository     {commit, dirty}: git state of the checkout (null without git)
  host           {hostname, cpu_count}
  plan           the sizes this mode uses (throughput jobs, pipeline workers, cohort, ...)
  stages.<name>  {status, budget_s, elapsed_s, error, result}, for all seven names
                 status: pending | running | ok | failed (ran; the check did not pass)
                 | error (could not run) | timeout (budget exhausted; result may be
                 partial) | skipped (not selected, or no time left)
  summary        device_kind, backend, device_count, pin_differences (count),
                 correctness_ok, tests_ok, best_images_per_s {resnet<depth>_<dtype>},
                 pipeline_keeps_up, paper_steps_per_s, paper_extrapolated_full_s,
                 predict_cold_s, predict_warm_s, statuses {stage: status}; null where
                 a stage gave no number

  stages.env.result          python {version, implementation, executable, platform},
                             packages {distribution: version | "absent"},
                             pins {distribution: {required, group, installed, satisfied}},
                             pin_differences [text], jax {version, jaxlib, backend,
                             device_kind, device_count, local_device_count, devices,
                             cpu_device_count, process_count}, phasejax_import {ok,
                             modules, failed {module: error}, location, from_checkout,
                             installed}, torch {status, version, cuda, device},
                             nvidia_smi
  stages.correctness.result  accelerator {platform, device_kind}, cpu {platform,
                             device_kind}, same_device, model {strategy, depth, width,
                             image_size, batch, optimizer, learning_rate, steps, source},
                             variants.<name> {dtype, matmul_precision, rtol, atol, basis,
                             accelerator {loss, grad_norm}, cpu {loss, grad_norm} (one
                             value per step), loss_max_rel_diff, grad_norm_max_rel_diff,
                             param_max_abs_diff, param_max_abs, within_tolerance},
                             within_tolerance (all variants)
  stages.tests.result        command, files, exit_code, passed, counts {passed, failed,
                             ...}, wall_s, tail [last lines]
  stages.pipeline.result     settings {workers, sets, generated_cache, batches},
                             train_series, input_shape, runs [{workers, startup_s,
                             series_per_s, images_per_s, batches_per_s}], preprocess_only,
                             unit, reference_model {depth, dtype, batch, series_per_s,
                             why}, keeps_up {workers: bool}, keeps_up_any, per_model
                             [{depth, dtype, batch, model_series_per_s, keeps_up}],
                             comparison
  stages.paper.result        cohort {exams, internal, internal_test, internal_val,
                             external_per_site, series, series_per_split, cache_size,
                             workers, generate_s, reduced, note}, train {command,
                             overrides, exit_code, wall_s, steps, batch_size, images_per_s,
                             steps_per_s, timed_s, overhead_s, last_loss, val_accuracy},
                             paper_steps, extrapolated_train_s, extrapolated_full_s,
                             extrapolation_note, run_dir
  stages.predict.result      device, paths, model_run, compilation_cache_dir, runs
                             {cold, warm: {exit_code, wall_s, series_ok, skipped, failed,
                             predicted {series_id: phase}, tail}}, cache_entries_after_cold,
                             warm_speedup, same_predictions
  stages.throughput.result   peak {device_kind, table_key, source, tflops {dtype: v},
                             float32_basis}, torch_status, settings {size, width, steps,
                             repeats, warmup, compile_s_note, xla_mem_fraction}, jobs
                             [{depths, dtypes, batches, timeout_s, exit_code, timed_out,
                             wall_s, error}], runs [{depth, dtype, batch, images_per_s,
                             step_ms, compile_s, flops_per_step (of the step
                             lowered for the CPU), flops_per_step_compiled, tflops_per_s,
                             peak_tflops, mfu, mfu_vs_fp32_peak (float32), devices,
                             device_kind, torch {images_per_s, step_ms, tflops_per_s, mfu,
                             device, version} | {status}}], missing [{depth, dtype, batch}]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as _dt
import importlib.metadata
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "experiments" / "benchmarks"
SCHEMA = "phasejax.accelerator_check/1"
JSON_NAME = "accelerator_check.json"

# Run order. throughput goes last so that it alone absorbs what the others leave (it
# has the most configurations to fit); pipeline's comparison with it is filled in then.
STAGES = ("env", "correctness", "tests", "pipeline", "paper", "predict", "throughput")
# Seconds reserved per stage on the accelerator run; estimated from the CPU dry run and
# the expected speed of an H100/H200-class host (16 cores), not measured there yet.
STAGE_BUDGETS_S = {
    "env": 30.0,
    "correctness": 50.0,
    "tests": 45.0,
    "pipeline": 40.0,
    "paper": 130.0,
    "predict": 60.0,
    "throughput": 60.0,  # the minimum; elastic (gets what the others leave)
}
ELASTIC = "throughput"
DEFAULT_TIME_LIMIT_S = 450.0  # the 8 minutes, less a margin for the last write
MIN_STAGE_S = 5.0

# Dense peak TFLOP/s per dtype by device kind (vendor datasheets, no sparsity). XLA runs
# float32 convolutions and matmuls as TF32 on these GPUs by default, so float32 MFU is
# against the TF32 peak; the plain float32 peak is given beside it. Matched by substring
# of jax's device_kind, first match wins (the PCIe / NVL parts before the SXM ones).
PEAK_TFLOPS: dict[str, dict[str, float]] = {
    "H100 PCIe": {"bfloat16": 756.0, "float32": 378.0, "float32_no_tf32": 51.0},
    "H100 NVL": {"bfloat16": 835.0, "float32": 418.0, "float32_no_tf32": 60.0},
    "H200": {"bfloat16": 989.0, "float32": 495.0, "float32_no_tf32": 67.0},
    "H100": {"bfloat16": 989.0, "float32": 495.0, "float32_no_tf32": 67.0},
    "A100": {"bfloat16": 312.0, "float32": 156.0, "float32_no_tf32": 19.5},
}
FLOAT32_BASIS = (
    "TF32 dense peak: XLA's default float32 precision runs convolutions and matmuls in "
    "TF32 on NVIDIA Ampere and later; mfu_vs_fp32_peak uses the non-tensor-core peak"
)

# The correctness variants: (compute dtype, jax matmul precision or None, rtol, basis).
CORRECTNESS_VARIANTS: dict[str, tuple[str, str | None, float, str]] = {
    "float32": (
        "float32",
        None,
        1e-2,
        "float32 at XLA's default precision: TF32 convolutions/matmuls allowed on GPU",
    ),
    "float32_highest": (
        "float32",
        "highest",
        1e-4,
        "float32 with jax.default_matmul_precision('highest'): no TF32",
    ),
    "bfloat16": (
        "bfloat16",
        None,
        5e-2,
        "bfloat16 compute (parameters and BatchNorm float32): ~3 significant digits",
    ),
}
CORRECTNESS_ATOL = 1e-6

# pyproject.toml distribution names; "orbax" is orbax-checkpoint.
PACKAGES = (
    "jax",
    "jaxlib",
    "jax-cuda12-plugin",
    "jax-cuda12-pjrt",
    "jax-cuda13-plugin",
    "jax-cuda13-pjrt",
    "flax",
    "optax",
    "orbax-checkpoint",
    "grain",
    "pydicom",
    "pylibjpeg",
    "pylibjpeg-libjpeg",
    "pylibjpeg-openjpeg",
    "pylibjpeg-rle",
    "nibabel",
    "numpy",
    "scipy",
    "matplotlib",
    "tqdm",
    "torch",
    "pytest",
    "pytest-xdist",
    "phasejax",
)

# Keys each stage's result has (documented above; tests/test_accelerator_check.py holds
# the JSON to them).
RESULT_KEYS: dict[str, tuple[str, ...]] = {
    "env": ("python", "packages", "pins", "pin_differences", "jax", "phasejax_import", "torch"),
    "correctness": ("accelerator", "cpu", "same_device", "model", "variants", "within_tolerance"),
    "tests": ("command", "files", "exit_code", "passed", "counts", "wall_s", "tail"),
    "throughput": ("peak", "torch_status", "settings", "jobs", "runs", "missing"),
    "pipeline": (
        "settings",
        "runs",
        "unit",
        "reference_model",
        "keeps_up",
        "keeps_up_any",
        "per_model",
    ),
    "paper": (
        "cohort",
        "train",
        "paper_steps",
        "extrapolated_train_s",
        "extrapolated_full_s",
        "extrapolation_note",
        "run_dir",
    ),
    "predict": (
        "device",
        "paths",
        "model_run",
        "compilation_cache_dir",
        "runs",
        "warm_speedup",
        "same_predictions",
    ),
}


# --------------------------------------------------------------------------- plans


@dataclass(frozen=True)
class Plan:
    """Sizes of one mode; recorded in the JSON as `plan`."""

    mode: str
    correctness_variants: tuple[str, ...]
    test_files: tuple[str, ...]
    test_workers: int  # pytest-xdist processes when it is installed (0: none)
    # train_throughput.py: one job (child process) per (depths, dtypes), every batch in it
    tp_jobs: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...]
    tp_batches: tuple[int, ...]
    tp_size: int
    tp_width: int
    tp_steps: int
    tp_repeats: int
    tp_warmup: int
    pl_workers: tuple[int, ...]
    pl_patients: int
    pl_cache_size: int
    pl_cache_slices: int
    pl_batches: int
    pl_sets: tuple[str, ...]
    cohort: dict[str, int]
    train_steps: int
    train_sets: tuple[str, ...]
    predict_workers: int
    predict_batch_size: int


PAPER_COHORT = {"internal": 48, "internal_test": 6, "internal_val": 6, "external_per_site": 2}

FULL = Plan(
    mode="full",
    correctness_variants=tuple(CORRECTNESS_VARIANTS),
    test_files=("tests/test_train_step.py", "tests/test_parallel.py"),
    test_workers=4,
    # bfloat16 first: what the paper preset trains in, so it is measured if time runs out.
    tp_jobs=(
        (("18",), ("bfloat16",)),
        (("50",), ("bfloat16",)),
        (("18",), ("float32",)),
        (("50",), ("float32",)),
    ),
    tp_batches=(128, 256, 64),
    tp_size=224,
    tp_width=64,
    tp_steps=10,
    tp_repeats=3,
    tp_warmup=2,
    pl_workers=(0, 4, 8),
    pl_patients=12,
    pl_cache_size=256,
    pl_cache_slices=40,
    pl_batches=10,
    pl_sets=(
        "data.image_size=224",
        "data.num_slices=5",
        "data.window=multi",
        "train.batch_size=64",
    ),
    cohort={**PAPER_COHORT, "cache_size": 256},
    train_steps=300,
    train_sets=(),
    predict_workers=4,
    predict_batch_size=16,
)

DRY = Plan(
    mode="dry-run",
    # Each variant is one more compilation; bfloat16 is exercised by `throughput`.
    correctness_variants=("float32", "float32_highest"),
    test_files=("tests/test_parallel.py",),
    test_workers=0,
    tp_jobs=((("tiny",), ("float32", "bfloat16")),),
    tp_batches=(8,),
    tp_size=32,
    tp_width=8,
    tp_steps=2,
    tp_repeats=1,
    tp_warmup=1,
    pl_workers=(0, 1),
    pl_patients=6,
    pl_cache_size=64,
    pl_cache_slices=12,
    pl_batches=3,
    pl_sets=(
        "data.image_size=32",
        "data.num_slices=5",
        "data.window=multi",
        "train.batch_size=8",
    ),
    cohort={
        "internal": 4,
        "internal_test": 1,
        "internal_val": 1,
        "external_per_site": 0,
        "cache_size": 64,
    },
    train_steps=6,
    train_sets=(
        "model.depth=tiny",
        "model.width=8",
        "data.image_size=32",
        "data.cache_size=64",
        "data.worker_count=0",
        "train.batch_size=8",
        "train.eval_batch_size=8",
        "train.log_every=2",
    ),
    predict_workers=1,
    predict_batch_size=8,
)
# Generous: a dry run is about exercising every stage (about 100 s of CPU in all), on a
# CPU that may be busy with other work.
DRY_BUDGETS_S = dict.fromkeys(STAGES, 180.0)
DRY_TIME_LIMIT_S = 1500.0


# --------------------------------------------------------------------------- helpers


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _tail(text: str, n: int = 15) -> list[str]:
    # tqdm redraws with carriage returns: keep the last state of each line.
    lines = [ln.rsplit("\r", 1)[-1].rstrip() for ln in text.splitlines()]
    return [ln for ln in lines if ln][-n:]


class StageFailed(Exception):
    """The stage ran but its check did not pass (status 'failed')."""


class StageTimeout(Exception):
    """The stage's budget ran out (status 'timeout')."""


@dataclass
class Proc:
    cmd: list[str]
    returncode: int | None
    stdout: str
    stderr: str
    wall_s: float
    timed_out: bool


_ACTIVE: set[subprocess.Popen[str]] = set()


def _kill_group(p: subprocess.Popen[str]) -> None:
    # The child leads its own session: this reaches its Grain workers and pools too.
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, sig)
        try:
            p.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run_proc(cmd: Sequence[str], timeout: float, env: dict[str, str] | None = None) -> Proc:
    """Run `cmd` in the repository root; on timeout kill its whole process group."""
    t0 = time.perf_counter()
    p = subprocess.Popen(
        list(cmd),
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    _ACTIVE.add(p)
    timed_out = False
    try:
        out, err = p.communicate(timeout=max(timeout, 1.0))
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(p)
        out, err = p.communicate()
    finally:
        _ACTIVE.discard(p)
    return Proc(list(cmd), p.returncode, out or "", err or "", time.perf_counter() - t0, timed_out)


def _last_json(text: str) -> Any:
    """The JSON document a child printed last on stdout (the benchmarks print one)."""
    text = text.strip()
    start = text.find("{")
    if start < 0:
        raise ValueError("no JSON on stdout")
    return json.loads(text[start:])


def _json_lines(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            with contextlib.suppress(json.JSONDecodeError):
                obj = json.loads(line)
                if isinstance(obj, dict):
                    out.append(obj)
    return out


def _proc_error(proc: Proc, what: str) -> str:
    if proc.timed_out:
        return f"{what}: killed after {proc.wall_s:.0f} s (budget)"
    tail = _tail(proc.stderr, 6) or _tail(proc.stdout, 6)
    return f"{what}: exit {proc.returncode}: " + " | ".join(tail)


def peak_for(device_kind: str) -> tuple[str | None, dict[str, float] | None]:
    for key, peaks in PEAK_TFLOPS.items():
        if key.lower() in device_kind.lower():
            return key, peaks
    return None, None


def parse_peak_override(values: Sequence[str]) -> dict[str, float]:
    """--peak-tflops values ("989" or "bfloat16=989 float32=495") -> {dtype: TFLOP/s}."""
    out: dict[str, float] = {}
    for v in values:
        key, sep, num = v.rpartition("=")
        value = float(num)
        if not sep:
            out.update({"bfloat16": value, "float32": value})
        elif key in ("bfloat16", "float32"):
            out[key] = value
        else:
            raise ValueError(f"--peak-tflops {v!r}: dtype must be float32 or bfloat16")
    return out


def parse_pins(pyproject: Path) -> dict[str, dict[str, str]]:
    """{distribution: {"spec": ">=1.2", "group": "core" | extra}} from pyproject.toml."""
    import tomllib

    project = tomllib.loads(pyproject.read_text())["project"]
    groups = {"core": project.get("dependencies", [])}
    groups.update(project.get("optional-dependencies", {}))
    out: dict[str, dict[str, str]] = {}
    for group, reqs in groups.items():
        for req in reqs:
            m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*([^;]*)", req)
            if m:
                out.setdefault(m.group(1).lower(), {"spec": m.group(2).strip(), "group": group})
    return out


def satisfies(version: str, spec: str) -> bool | None:
    """Whether `version` meets the PEP 440 `spec`; None when `packaging` is missing."""
    try:
        from packaging.specifiers import SpecifierSet
        from packaging.version import InvalidVersion, Version
    except ImportError:
        return None
    try:
        return SpecifierSet(spec).contains(Version(version), prereleases=True)
    except InvalidVersion:
        return None


def dist_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def _git_state() -> dict[str, Any]:
    if not shutil.which("git"):
        return {"commit": None, "dirty": None}
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10
        )
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return {"commit": None, "dirty": None}
    if commit.returncode != 0:
        return {"commit": None, "dirty": None}
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}


# --------------------------------------------------------------------------- the run


@dataclass
class Check:
    plan: Plan
    out_path: Path
    work: Path
    time_limit_s: float
    budgets: dict[str, float]
    selected: tuple[str, ...]
    peak_override: dict[str, float]
    predict_paths: tuple[str, ...]
    report: dict[str, Any] = field(default_factory=dict)
    t0: float = field(default_factory=time.monotonic)
    _jax_info: dict[str, Any] | None = None
    _torch_info: dict[str, Any] | None = None
    paper_run: Path | None = None

    # ---- bookkeeping

    def log(self, msg: str) -> None:
        print(f"[accelerator_check {time.monotonic() - self.t0:6.1f}s] {msg}", file=sys.stderr)

    def save(self) -> None:
        self.report["updated_at"] = _now()
        self.report["elapsed_s"] = round(time.monotonic() - self.t0, 2)
        self.report["summary"] = summarize(self.report)
        self.out_path.parent.mkdir(parents=True, exist_ok=True)
        # Not phasejax.atomic: this parent process writes its report even when phasejax
        # itself does not import (that is one of the things the env stage checks).
        tmp = self.out_path.with_name(f".{self.out_path.name}.tmp")
        tmp.write_text(json.dumps(self.report, indent=2, default=str) + "\n")
        os.replace(tmp, self.out_path)

    def remaining(self) -> float:
        return self.time_limit_s - (time.monotonic() - self.t0)

    def allowance(self, name: str) -> float:
        later = self.selected[self.selected.index(name) + 1 :]
        reserved = sum(self.budgets[s] for s in later)
        free = self.remaining() - reserved
        if name == ELASTIC:
            return free
        return min(self.budgets[name], free)

    def child_env(self, cache: str = "shared") -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(REPO), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])]
        )
        env["JAX_COMPILATION_CACHE_DIR"] = str(self.work / f"xla_{cache}")
        # Small programs too: model initialisation is one per layer shape.
        env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
        env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
        env.setdefault("MPLBACKEND", "Agg")
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def child_proc(self, what: str, timeout: float, *extra: str) -> Proc:
        return run_proc(
            [sys.executable, str(Path(__file__).resolve()), "--child", what, *extra],
            timeout,
            self.child_env(),
        )

    def child(self, what: str, timeout: float, *extra: str) -> dict[str, Any]:
        """This script as `--child WHAT`: one JSON document on stdout."""
        proc = self.child_proc(what, timeout, *extra)
        if proc.timed_out or proc.returncode != 0:
            raise (StageTimeout if proc.timed_out else RuntimeError)(
                _proc_error(proc, f"child {what}")
            )
        return _last_json(proc.stdout)

    def jax_info(self, deadline: float) -> dict[str, Any]:
        """Backend and device kind (from the env stage, else a short probe)."""
        if self._jax_info is None:
            self._jax_info = self.child("devices", min(60.0, deadline - time.monotonic()))
        return self._jax_info

    def torch_info(self, deadline: float) -> dict[str, Any]:
        """torch's version and whether it sees CUDA, probed once per run."""
        if self._torch_info is None:
            try:
                self._torch_info = self.child("torch", min(60.0, deadline - time.monotonic()))
            except (RuntimeError, StageTimeout) as e:
                self._torch_info = {"status": "torch import failed", "error": str(e)}
        return self._torch_info

    # ---- driver

    def run(self) -> None:
        self.report.update(
            schema=SCHEMA,
            mode=self.plan.mode,
            command=[sys.executable, *sys.argv],
            started_at=_now(),
            finished=False,
            time_limit_s=self.time_limit_s,
            work_dir=str(self.work),
            repository=_git_state(),
            host={"hostname": platform.node(), "cpu_count": os.cpu_count()},
            plan=asdict(self.plan),
            stages={
                s: {
                    "status": "pending" if s in self.selected else "skipped",
                    "budget_s": None,
                    "elapsed_s": None,
                    "error": None if s in self.selected else "not selected (--stages)",
                    "result": None,
                }
                for s in STAGES
            },
        )
        self.save()
        functions: dict[str, Callable[[Check, dict[str, Any], float], None]] = {
            "env": stage_env,
            "correctness": stage_correctness,
            "tests": stage_tests,
            "throughput": stage_throughput,
            "pipeline": stage_pipeline,
            "paper": stage_paper,
            "predict": stage_predict,
        }
        for name in self.selected:
            self.run_stage(name, functions[name])
        self.report["finished"] = True
        self.save()

    def run_stage(self, name: str, fn: Callable[[Check, dict[str, Any], float], None]) -> None:
        entry = self.report["stages"][name]
        budget = self.allowance(name)
        if budget < MIN_STAGE_S:
            entry.update(status="skipped", error=f"out of time: {max(budget, 0):.0f} s left")
            self.log(f"{name}: skipped (out of time)")
            self.save()
            return
        result: dict[str, Any] = {}
        entry.update(status="running", budget_s=round(budget, 1), result=result)
        self.log(f"{name}: start (budget {budget:.0f} s)")
        self.save()
        t0 = time.monotonic()
        try:
            fn(self, result, t0 + budget)
            entry["status"] = "ok"
        except StageFailed as e:
            entry.update(status="failed", error=str(e))
        except StageTimeout as e:
            entry.update(status="timeout", error=str(e))
        except Exception as e:
            entry.update(
                status="error",
                error=f"{type(e).__name__}: {e}",
                traceback=_tail(traceback.format_exc(), 12),
            )
        entry["elapsed_s"] = round(time.monotonic() - t0, 2)
        if name in ("pipeline", "throughput"):
            try:
                compare_pipeline(self.report)
            except (KeyError, TypeError, ValueError) as e:
                self.report["stages"]["pipeline"]["comparison_error"] = f"{type(e).__name__}: {e}"
        self.log(
            f"{name}: {entry['status']} in {entry['elapsed_s']:.1f} s"
            + (f" ({entry['error']})" if entry.get("error") else "")
        )
        self.save()


# --------------------------------------------------------------------------- stages


def stage_env(ck: Check, result: dict[str, Any], deadline: float) -> None:
    result["python"] = {
        "version": platform.python_version(),
        "implementation": platform.python_implementation(),
        "executable": sys.executable,
        "platform": platform.platform(),
    }
    packages = {name: dist_version(name) for name in PACKAGES}
    result["packages"] = packages
    pins, differences = {}, []
    for name, pin in parse_pins(REPO / "pyproject.toml").items():
        installed = dist_version(name)
        ok = None if installed == "absent" else satisfies(installed, pin["spec"])
        pins[name] = {
            "required": pin["spec"],
            "group": pin["group"],
            "installed": installed,
            "satisfied": False if installed == "absent" else ok,
        }
        if installed == "absent":
            differences.append(f"{name}: absent (pyproject {pin['group']}: {name}{pin['spec']})")
        elif ok is False:
            differences.append(f"{name} {installed} outside {name}{pin['spec']} ({pin['group']})")
    for plugin in ("jax-cuda12-plugin", "jax-cuda13-plugin"):
        # A CUDA plugin must match jaxlib exactly, or JAX falls back to the CPU.
        v = packages[plugin]
        if v not in ("absent", packages["jaxlib"]):
            differences.append(f"{plugin} {v} differs from jaxlib {packages['jaxlib']}")
    result["pins"] = pins
    result["pin_differences"] = differences
    if shutil.which("nvidia-smi"):
        query = "name,driver_version,memory.total,compute_cap"
        smi = run_proc(
            ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
            min(15.0, deadline - time.monotonic()),
        )
        result["nvidia_smi"] = _tail(smi.stdout) if smi.returncode == 0 else _tail(smi.stderr)
    else:
        result["nvidia_smi"] = "nvidia-smi absent"
    ck.save()
    info = ck.child("env", deadline - time.monotonic())
    result["jax"] = info["jax"]
    result["phasejax_import"] = info["phasejax_import"]
    result["phasejax_import"]["installed"] = packages["phasejax"]
    ck._jax_info = info["jax"]
    ck.save()
    result["torch"] = ck.torch_info(deadline)
    errors = []
    if not info["phasejax_import"]["ok"]:
        errors.append(f"phasejax modules failed to import: {info['phasejax_import']['failed']}")
    if "error" in info["jax"]:
        errors.append(f"jax: {info['jax']['error']}")
    if errors:
        raise StageFailed("; ".join(errors))


def stage_correctness(ck: Check, result: dict[str, Any], deadline: float) -> None:
    variants = ck.plan.correctness_variants
    proc = ck.child_proc(
        "correctness", deadline - time.monotonic(), "--variants", ",".join(variants)
    )
    if proc.returncode == 0 and not proc.timed_out:
        info = _last_json(proc.stdout)
    else:
        # What the child finished before it stopped: one progress line per variant.
        done = [e for e in _json_lines(proc.stderr) if "variant" in e]
        result["variants"] = {e["variant"]: e["result"] for e in done}
        result["missing_variants"] = [v for v in variants if v not in result["variants"]]
        err = _proc_error(proc, "child correctness")
        raise StageTimeout(err) if proc.timed_out else RuntimeError(err)
    result.update(info)
    bad = [k for k, v in info["variants"].items() if not v["within_tolerance"]]
    if bad:
        raise StageFailed(f"accelerator and CPU differ beyond tolerance: {', '.join(bad)}")


def stage_tests(ck: Check, result: dict[str, Any], deadline: float) -> None:
    import importlib.util

    files = list(ck.plan.test_files)
    cmd = [sys.executable, "-m", "pytest", "-m", "not slow", "-q", *files]
    if ck.plan.test_workers and importlib.util.find_spec("xdist") is not None:
        cmd += ["-n", str(ck.plan.test_workers)]
    result.update(command="python " + " ".join(cmd[1:]), files=files)
    if importlib.util.find_spec("pytest") is None:
        raise RuntimeError("pytest absent (pip install -e '.[test]' or carry its wheel)")
    env = ck.child_env()
    # tests/conftest.py puts the suite on 8 fake CPU devices unless JAX_PLATFORMS says
    # otherwise; the data-parallel tests need those 8.
    env.pop("JAX_PLATFORMS", None)
    proc = run_proc(cmd, deadline - time.monotonic(), env)
    text = proc.stdout + proc.stderr
    counts = {
        kind: int(n)
        for n, kind in re.findall(r"(\d+) (passed|failed|errors?|skipped|deselected)", text)
    }
    result.update(
        exit_code=proc.returncode,
        passed=proc.returncode == 0,
        counts=counts,
        wall_s=round(proc.wall_s, 2),
        tail=_tail(proc.stdout, 15),
    )
    if proc.timed_out:
        raise StageTimeout(_proc_error(proc, "pytest"))
    if proc.returncode != 0:
        raise StageFailed(f"pytest exit {proc.returncode}")


def _torch_flag(ck: Check, deadline: float) -> tuple[list[str], str]:
    """Flags for train_throughput.py and the torch_status text."""
    t = ck.torch_info(deadline)
    status = t.get("status", "torch absent")
    if status == "torch with CUDA":
        return [], status
    if status == "torch without CUDA" and ck.plan.mode == "dry-run":
        return [], status + " (dry run: CPU reference)"
    return ["--no-torch"], status


def stage_throughput(ck: Check, result: dict[str, Any], deadline: float) -> None:
    plan = ck.plan
    jax_info = ck.jax_info(deadline)
    kind = str(jax_info.get("device_kind", ""))
    key, table = peak_for(kind)
    peaks = dict(table or {})
    source = f"PEAK_TFLOPS[{key!r}]" if key else "none: device kind not in PEAK_TFLOPS"
    if ck.peak_override:
        peaks.update(ck.peak_override)
        source = "--peak-tflops" + (f" over PEAK_TFLOPS[{key!r}]" if key else "")
    flags, torch_status = _torch_flag(ck, deadline)
    env = ck.child_env()
    if torch_status == "torch with CUDA":
        # JAX takes 75% of GPU memory at start-up; the torch twin runs in the same process.
        env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.5")
    result.update(
        peak={
            "device_kind": kind,
            "table_key": key,
            "source": source,
            "tflops": peaks or None,
            "float32_basis": FLOAT32_BASIS,
        },
        torch_status=torch_status,
        settings={
            "size": plan.tp_size,
            "width": plan.tp_width,
            "steps": plan.tp_steps,
            "repeats": plan.tp_repeats,
            "warmup": plan.tp_warmup,
            "compile_s_note": "lowering + XLA compile + write to the shared persistent cache",
            "xla_mem_fraction": env.get("XLA_PYTHON_CLIENT_MEM_FRACTION"),
        },
        jobs=[],
        runs=[],
        missing=[],
    )
    wanted = [
        (d, dt, b)
        for depths, dtypes in plan.tp_jobs
        for d in depths
        for dt in dtypes
        for b in plan.tp_batches
    ]
    # ResNet-50 and deeper take about twice ResNet-18's compile and step time.
    weights = [sum(2 if d in ("50", "101", "152") else 1 for d in ds) for ds, _ in plan.tp_jobs]
    for i, (depths, dtypes) in enumerate(plan.tp_jobs):
        left = deadline - time.monotonic()
        share = left * weights[i] / sum(weights[i:])
        job: dict[str, Any] = {
            "depths": list(depths),
            "dtypes": list(dtypes),
            "batches": list(plan.tp_batches),
            "timeout_s": round(share, 1),
        }
        result["jobs"].append(job)
        if share < MIN_STAGE_S:
            job.update(exit_code=None, timed_out=False, wall_s=0.0, error="no time left")
            continue
        ck.log(f"throughput: ResNet-{'/'.join(depths)} {'/'.join(dtypes)} ({share:.0f} s)")
        cmd = [
            sys.executable,
            str(BENCH / "train_throughput.py"),
            "--depth",
            *depths,
            "--dtype",
            *dtypes,
            "--batch",
            *map(str, plan.tp_batches),
            "--size",
            str(plan.tp_size),
            "--width",
            str(plan.tp_width),
            "--steps",
            str(plan.tp_steps),
            "--repeats",
            str(plan.tp_repeats),
            "--warmup",
            str(plan.tp_warmup),
            *flags,
        ]
        proc = run_proc(cmd, share, env)
        entries = _json_lines(proc.stderr)
        job.update(
            exit_code=proc.returncode,
            timed_out=proc.timed_out,
            wall_s=round(proc.wall_s, 2),
            error=None if proc.returncode == 0 else _proc_error(proc, "train_throughput.py"),
        )
        for e in entries:
            if "phasejax" in e and "batch" in e:
                result["runs"].append(_throughput_row(e, peaks))
        compare_pipeline(ck.report)
        ck.save()
    got = {(r["depth"], r["dtype"], r["batch"]) for r in result["runs"]}
    result["missing"] = [
        {"depth": d, "dtype": dt, "batch": b} for d, dt, b in wanted if (d, dt, b) not in got
    ]
    if result["missing"]:
        timed_out = any(
            j.get("timed_out") or j.get("error") == "no time left" for j in result["jobs"]
        )
        msg = f"{len(result['missing'])} of {len(wanted)} configurations not measured"
        if timed_out:
            raise StageTimeout(msg)
        raise RuntimeError(
            msg + ": " + "; ".join(j["error"] for j in result["jobs"] if j.get("error"))
        )


def _throughput_row(entry: dict[str, Any], peaks: dict[str, float]) -> dict[str, Any]:
    pj = entry["phasejax"]
    dtype = entry["dtype"]
    peak = peaks.get(dtype)
    tflops = pj.get("tflops_per_s")
    row = {
        "depth": entry["depth"],
        "dtype": dtype,
        "batch": entry["batch"],
        "images_per_s": pj.get("images_per_s"),
        "step_ms": pj.get("step_ms"),
        "compile_s": pj.get("compile_s"),
        "flops_per_step": pj.get("flops_per_step"),
        "flops_per_step_compiled": pj.get("flops_per_step_compiled"),
        "tflops_per_s": tflops,
        "peak_tflops": peak,
        "mfu": round(tflops / peak, 4) if tflops is not None and peak else None,
        "devices": pj.get("devices"),
        "device_kind": pj.get("device_kind"),
    }
    if dtype == "float32" and tflops is not None and peaks.get("float32_no_tf32"):
        row["mfu_vs_fp32_peak"] = round(tflops / peaks["float32_no_tf32"], 4)
    t = entry.get("torch")
    if t is None:
        row["torch"] = {"status": "not run"}
    elif "step_ms" in t:
        tt = t.get("tflops_per_s")
        row["torch"] = {
            "images_per_s": t["images_per_s"],
            "step_ms": t["step_ms"],
            "tflops_per_s": tt,
            "mfu": round(tt / peak, 4) if tt is not None and peak else None,
            "device": t.get("device"),
            "version": t.get("torch"),
        }
    else:
        row["torch"] = {"status": t.get("error", "no result")}
    return row


def stage_pipeline(ck: Check, result: dict[str, Any], deadline: float) -> None:
    plan = ck.plan
    cmd = [
        sys.executable,
        str(BENCH / "pipeline_throughput.py"),
        "--workers",
        *map(str, plan.pl_workers),
        "--patients",
        str(plan.pl_patients),
        "--cache-size",
        str(plan.pl_cache_size),
        "--cache-slices",
        str(plan.pl_cache_slices),
        "--batches",
        str(plan.pl_batches),
    ]
    for s in plan.pl_sets:
        cmd += ["--set", s]
    result["settings"] = {
        "workers": list(plan.pl_workers),
        "sets": list(plan.pl_sets),
        "generated_cache": {
            "patients": plan.pl_patients,
            "size": plan.pl_cache_size,
            "slices": plan.pl_cache_slices,
        },
        "batches": plan.pl_batches,
    }
    proc = run_proc(cmd, deadline - time.monotonic(), ck.child_env())
    if proc.timed_out:
        raise StageTimeout(_proc_error(proc, "pipeline_throughput.py"))
    if proc.returncode != 0:
        raise RuntimeError(_proc_error(proc, "pipeline_throughput.py"))
    bench = _last_json(proc.stdout)
    result.update(
        train_series=bench["train_series"],
        input_shape=bench["input_shape"],
        runs=bench["runs"],
        preprocess_only=bench.get("preprocess_only"),
        unit=(
            "series/s: the pipeline's images_per_s counts every slice (series/s x "
            "num_slices), the training benchmark's counts one 3-slice series as one image"
        ),
    )
    result.update(
        reference_model=None,
        keeps_up=None,
        keeps_up_any=None,
        per_model=[],
        comparison="pending: filled in when the throughput stage has measured the model"
        if "throughput" in ck.selected
        else "none: the throughput stage is not selected",
    )
    compare_pipeline(ck.report)


def compare_pipeline(report: dict[str, Any]) -> None:
    """Pipeline series/s against every measured model rate (throughput runs last)."""
    pipe = report["stages"]["pipeline"].get("result") or {}
    runs = pipe.get("runs")
    model_runs = (report["stages"]["throughput"].get("result") or {}).get("runs") or []
    model_runs = [r for r in model_runs if r.get("images_per_s")]
    if not runs or not model_runs:
        return

    def keeps(rate: float) -> dict[str, bool]:
        return {str(r["workers"]): r["series_per_s"] >= rate for r in runs}

    # The paper preset's network and dtype when measured: the consumer that matters.
    paper_like = [r for r in model_runs if r["depth"] == "18" and r["dtype"] == "bfloat16"]
    ref = max(paper_like or model_runs, key=lambda r: r["images_per_s"])
    pipe["reference_model"] = {
        "depth": ref["depth"],
        "dtype": ref["dtype"],
        "batch": ref["batch"],
        "series_per_s": ref["images_per_s"],
        "why": "fastest ResNet-18 bfloat16 run (the paper preset's model)"
        if paper_like
        else "fastest measured run (no ResNet-18 bfloat16 run)",
    }
    pipe["keeps_up"] = keeps(ref["images_per_s"])
    pipe["keeps_up_any"] = any(pipe["keeps_up"].values())
    pipe["per_model"] = [
        {
            "depth": r["depth"],
            "dtype": r["dtype"],
            "batch": r["batch"],
            "model_series_per_s": r["images_per_s"],
            "keeps_up": keeps(r["images_per_s"]),
        }
        for r in model_runs
    ]
    pipe["comparison"] = f"against {len(model_runs)} throughput run(s)"


def stage_paper(ck: Check, result: dict[str, Any], deadline: float) -> None:
    from phasejax.config import load_config

    plan = ck.plan
    cohort_dir = ck.work / "cohort"
    spec = plan.cohort
    workers = max(1, min(8, (os.cpu_count() or 1) - 1))
    ck.log(
        f"paper: generating a cohort of {spec['internal']} internal exams and "
        f"{spec['external_per_site']} per external site"
    )
    info = ck.child(
        "cohort",
        deadline - time.monotonic(),
        "--cohort-out",
        str(cohort_dir),
        "--cohort-spec",
        json.dumps({**spec, "workers": workers}),
    )
    paper_cfg = load_config("paper")
    result["cohort"] = {
        **info,
        "reduced": True,
        "note": (
            f"{info['exams']} exams instead of the paper preset's 1,390 (cache format, "
            f"{spec['cache_size']} px); rates per step do not depend on the cohort size"
        ),
    }
    ck.save()
    run_dir = ck.work / "paper_run"
    overrides = [f"train.steps={plan.train_steps}", *plan.train_sets]
    cmd = [sys.executable, "-m", "phasejax.cli", "train", "--config", "paper"]
    cmd += ["--out", str(run_dir), "--cache", str(cohort_dir / "cache")]
    for o in overrides:
        cmd += ["--set", o]
    ck.log(f"paper: {plan.train_steps} training steps")
    proc = run_proc(cmd, deadline - time.monotonic(), ck.child_env())
    train: dict[str, Any] = {
        "command": " ".join(["phasejax", *cmd[3:]]),
        "overrides": overrides,
        "exit_code": proc.returncode,
        "wall_s": round(proc.wall_s, 2),
    }
    result["train"] = train
    result["run_dir"] = str(run_dir)
    if proc.timed_out or proc.returncode != 0:
        train["tail"] = _tail(proc.stderr, 10)
        err = _proc_error(proc, "phasejax train")
        raise StageTimeout(err) if proc.timed_out else RuntimeError(err)
    res = json.loads((run_dir / "results.json").read_text())["train"]
    cfg = json.loads((run_dir / "config.json").read_text())
    batch = int(cfg["train"]["batch_size"])
    ips = float(res["images_per_s"])
    steps_per_s = ips / batch
    steps = int(res["steps"])
    # The loop's clock starts after the first (compiling) step and excludes evaluation
    # and checkpoints: steps - 1 timed steps.
    timed = (steps - 1) / steps_per_s
    log = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines() if ln]
    last_train = [r for r in log if r.get("split") == "train"][-1:]
    val = [r for r in log if r.get("split") == "val"][-1:]
    train.update(
        steps=steps,
        batch_size=batch,
        images_per_s=round(ips, 2),
        steps_per_s=round(steps_per_s, 3),
        timed_s=round(timed, 2),
        overhead_s=round(proc.wall_s - timed, 2),
        last_loss=last_train[0]["loss"] if last_train else None,
        val_accuracy=val[0].get("accuracy") if val else None,
    )
    paper_steps = int(paper_cfg.train.steps)
    result["paper_steps"] = paper_steps
    result["extrapolated_train_s"] = round(paper_steps / steps_per_s, 1)
    result["extrapolated_full_s"] = round(paper_steps / steps_per_s + proc.wall_s - timed, 1)
    result["extrapolation_note"] = (
        f"paper preset: {paper_steps} steps at the measured steady-state rate; _full_s adds "
        "this run's start-up, compilation and final evaluation; the paper preset's "
        f"{paper_steps // paper_cfg.train.eval_every} periodic validations on a full-size "
        "validation split and the cohort generation are not included"
        + (
            "; dry run: tiny model, so the rate says nothing about the paper model"
            if plan.mode == "dry-run"
            else ""
        )
    )
    ck.paper_run = run_dir


def stage_predict(ck: Check, result: dict[str, Any], deadline: float) -> None:
    if ck.paper_run is None:
        raise RuntimeError("no trained run: the paper stage did not finish in this run")
    missing = [p for p in ck.predict_paths if not Path(p).exists()]
    if missing:
        raise RuntimeError(f"no such path: {', '.join(missing)}")
    backend = str(ck.jax_info(deadline).get("backend", "cpu"))
    device = "cpu" if backend == "cpu" else "gpu"
    cache = ck.work / "xla_predict"
    shutil.rmtree(cache, ignore_errors=True)
    result.update(
        device=device,
        paths=list(ck.predict_paths),
        model_run=str(ck.paper_run),
        compilation_cache_dir=str(cache),
        runs={},
    )
    env = ck.child_env("predict")
    for label in ("cold", "warm"):
        out_csv = ck.work / f"predict_{label}.csv"
        cmd = [sys.executable, "-m", "phasejax.cli", "predict", *ck.predict_paths]
        cmd += ["--model", str(ck.paper_run), "--device", device, "--out", str(out_csv)]
        cmd += ["--workers", str(ck.plan.predict_workers), "--quiet"]
        cmd += ["--batch-size", str(ck.plan.predict_batch_size)]
        ck.log(f"predict: {label} on {device}")
        proc = run_proc(cmd, deadline - time.monotonic(), env)
        run: dict[str, Any] = {
            "exit_code": proc.returncode,
            "wall_s": round(proc.wall_s, 2),
            "tail": _tail(proc.stdout + proc.stderr, 6),
        }
        result["runs"][label] = run
        if proc.timed_out:
            raise StageTimeout(_proc_error(proc, f"predict ({label})"))
        if not out_csv.exists():
            raise RuntimeError(_proc_error(proc, f"predict ({label}) wrote no report"))
        with out_csv.open(newline="") as f:
            rows = list(csv.DictReader(f))
        for status in ("ok", "skipped", "failed"):
            run[f"series_{status}" if status == "ok" else status] = sum(
                r["status"] == status for r in rows
            )
        run["predicted"] = {r["series_id"]: r["predicted"] for r in rows if r["status"] == "ok"}
        ck.save()
        if proc.returncode != 0:
            raise StageFailed(_proc_error(proc, f"predict ({label})"))
        if label == "cold":
            result["cache_entries_after_cold"] = sum(1 for p in cache.rglob("*") if p.is_file())
    cold, warm = result["runs"]["cold"], result["runs"]["warm"]
    result["warm_speedup"] = round(cold["wall_s"] / max(warm["wall_s"], 1e-9), 3)
    result["same_predictions"] = cold["predicted"] == warm["predicted"]
    if not cold["series_ok"]:
        raise StageFailed("no series classified")
    if not result["same_predictions"]:
        raise StageFailed("cold and warm runs predicted differently")


def summarize(report: dict[str, Any]) -> dict[str, Any]:
    stages = report.get("stages", {})

    def res(name: str) -> dict[str, Any]:
        return (stages.get(name) or {}).get("result") or {}

    jax_info = res("env").get("jax") or {}
    best: dict[str, float] = {}
    for r in res("throughput").get("runs") or []:
        k = f"resnet{r['depth']}_{r['dtype']}"
        if r.get("images_per_s") is not None:
            best[k] = max(best.get(k, 0.0), r["images_per_s"])
    cold = (res("predict").get("runs") or {}).get("cold") or {}
    warm = (res("predict").get("runs") or {}).get("warm") or {}
    return {
        "device_kind": jax_info.get("device_kind"),
        "backend": jax_info.get("backend"),
        "device_count": jax_info.get("device_count"),
        "pin_differences": len(res("env").get("pin_differences") or []) if res("env") else None,
        "correctness_ok": res("correctness").get("within_tolerance"),
        "tests_ok": res("tests").get("passed"),
        "best_images_per_s": best or None,
        "pipeline_keeps_up": res("pipeline").get("keeps_up_any"),
        "paper_steps_per_s": (res("paper").get("train") or {}).get("steps_per_s"),
        "paper_extrapolated_full_s": res("paper").get("extrapolated_full_s"),
        "predict_cold_s": cold.get("wall_s"),
        "predict_warm_s": warm.get("wall_s"),
        "statuses": {k: v.get("status") for k, v in stages.items()},
    }


# --------------------------------------------------------------------------- children
# These run in a fresh interpreter (--child) and print one JSON document.


def child_devices() -> dict[str, Any]:
    import jax

    try:
        devices = jax.devices()
    except RuntimeError as e:
        return {"version": jax.__version__, "error": str(e)}
    try:
        cpu_count = len(jax.devices("cpu"))
    except RuntimeError:
        cpu_count = 0
    return {
        "version": jax.__version__,
        "jaxlib": dist_version("jaxlib"),
        "backend": jax.default_backend(),
        "device_kind": devices[0].device_kind,
        "device_count": jax.device_count(),
        "local_device_count": jax.local_device_count(),
        "devices": [str(d) for d in devices],
        "cpu_device_count": cpu_count,
        "process_count": jax.process_count(),
    }


def child_env() -> dict[str, Any]:
    import importlib
    import pkgutil

    try:
        jax_info = child_devices()
    except Exception as e:
        jax_info = {"error": f"{type(e).__name__}: {e}"}
    failed: dict[str, str] = {}
    modules = 0
    location = None
    try:
        import phasejax

        location = str(Path(phasejax.__file__).resolve().parent)
        names = [m.name for m in pkgutil.walk_packages(phasejax.__path__, "phasejax.")]
    except Exception as e:
        names = []
        failed["phasejax"] = f"{type(e).__name__}: {e}"
    for name in names:
        modules += 1
        try:
            importlib.import_module(name)
        except Exception as e:
            failed[name] = f"{type(e).__name__}: {e}"
    return {
        "jax": jax_info,
        "phasejax_import": {
            "ok": not failed,
            "modules": modules,
            "failed": failed,
            "location": location,
            "from_checkout": location is not None and Path(location).is_relative_to(REPO.resolve()),
        },
    }


def child_torch() -> dict[str, Any]:
    try:
        import torch
    except ImportError:
        return {"status": "torch absent"}
    cuda = bool(torch.cuda.is_available())
    return {
        "status": "torch with CUDA" if cuda else "torch without CUDA",
        "version": torch.__version__,
        "cuda": torch.version.cuda,
        "device": torch.cuda.get_device_name(0) if cuda else None,
    }


def _test_model_config(dtype: str) -> Any:
    from phasejax.config import Config, DataConfig, ModelConfig, TrainConfig

    # tests/test_train_step.py's `_cfg()` (its default strategy and optimizer), so the
    # numbers here are those of the model the test suite trains.
    return Config(
        data=DataConfig(image_size=32, num_slices=3, window="abdomen"),
        model=ModelConfig(depth="tiny", width=8, strategy="two_step", dtype=dtype),
        train=TrainConfig(batch_size=16, optimizer="sgd", learning_rate=0.1, warmup_steps=0),
    )


def _test_batch(seed: int, batch: int = 16) -> dict[str, Any]:
    import numpy as np

    # tests/test_train_step.py's `_batch()`: every phase, class-dependent brightness.
    rng = np.random.default_rng(seed)
    label = np.arange(batch, dtype=np.int32) % 4
    image = rng.normal(size=(batch, 3, 32, 32, 1)).astype(np.float32)
    image += label[:, None, None, None, None]
    return {"image": image, "label": label, "weight": np.ones(batch, np.float32)}


def _rel_diff(a: Sequence[float], b: Sequence[float]) -> float:
    return max(abs(x - y) / max(abs(y), 1e-12) for x, y in zip(a, b, strict=True))


def child_correctness(variants: Sequence[str]) -> dict[str, Any]:
    import jax
    import numpy as np
    from flax import nnx

    from phasejax import parallel
    from phasejax.models import build_classifier
    from phasejax.train import optim, step

    accel = jax.devices()[0]
    cpu = jax.devices("cpu")[0]
    steps = 2
    out: dict[str, Any] = {
        "accelerator": {"platform": accel.platform, "device_kind": accel.device_kind},
        "cpu": {"platform": cpu.platform, "device_kind": cpu.device_kind},
        "same_device": accel == cpu,
        "model": {
            "strategy": "two_step",
            "depth": "tiny",
            "width": 8,
            "image_size": 32,
            "batch": 16,
            "optimizer": "sgd",
            "learning_rate": 0.1,
            "steps": steps,
            "source": "tests/test_train_step.py _cfg() / _batch()",
        },
        "variants": {},
    }
    batches = [_test_batch(s) for s in range(steps)]
    for name in variants:
        dtype, precision, rtol, basis = CORRECTNESS_VARIANTS[name]
        cfg = _test_model_config(dtype)
        # One set of initial weights, copied to both devices: the runs differ only in
        # where they execute (and one build: initialisation compiles per layer shape).
        graphdef, init = nnx.split(build_classifier(cfg, rngs=nnx.Rngs(0)))
        init = jax.device_get(init)
        sides: dict[str, Any] = {}
        params: dict[str, list[np.ndarray]] = {}
        for side, device in (("accelerator", accel), ("cpu", cpu)):
            mesh = parallel.make_mesh([device])
            model = nnx.merge(graphdef, jax.tree.map(np.array, init))
            opt = optim.create_optimizer(model, cfg.train)
            losses, norms = [], []
            ctx = jax.default_matmul_precision(precision) if precision else contextlib.nullcontext()
            with ctx:
                for b in batches:
                    m = jax.device_get(step.train_step(model, opt, b, mesh=mesh))
                    losses.append(float(m["loss"]))
                    norms.append(float(m["grad_norm"]))
            sides[side] = {"loss": losses, "grad_norm": norms}
            params[side] = [
                np.asarray(x, np.float64)
                for x in jax.tree.leaves(jax.device_get(nnx.state(model, nnx.Param)))
            ]
        a, c = sides["accelerator"], sides["cpu"]
        loss_ok = np.allclose(a["loss"], c["loss"], rtol=rtol, atol=CORRECTNESS_ATOL)
        norm_ok = np.allclose(a["grad_norm"], c["grad_norm"], rtol=rtol, atol=CORRECTNESS_ATOL)
        param_diff = max(
            float(np.max(np.abs(x - y))) for x, y in zip(params["accelerator"], params["cpu"])
        )
        param_scale = max(float(np.max(np.abs(y))) for y in params["cpu"])
        param_ok = param_diff <= rtol * param_scale + CORRECTNESS_ATOL
        out["variants"][name] = {
            "dtype": dtype,
            "matmul_precision": precision or "default",
            "rtol": rtol,
            "atol": CORRECTNESS_ATOL,
            "basis": basis,
            "accelerator": a,
            "cpu": c,
            "loss_max_rel_diff": _rel_diff(a["loss"], c["loss"]),
            "grad_norm_max_rel_diff": _rel_diff(a["grad_norm"], c["grad_norm"]),
            "param_max_abs_diff": param_diff,
            "param_max_abs": param_scale,
            "within_tolerance": bool(loss_ok and norm_ok and param_ok),
        }
        # Progress for the parent: a child killed at its budget still reports these.
        print(json.dumps({"variant": name, "result": out["variants"][name]}), file=sys.stderr)
    out["within_tolerance"] = all(v["within_tolerance"] for v in out["variants"].values())
    return out


def child_cohort(out_dir: str, spec: dict[str, int]) -> dict[str, Any]:
    from phasejax.cohort import generate as G
    from phasejax.data.cache import CacheSpec

    preset = G.Preset(
        name="accelerator_check",
        internal=spec["internal"],
        internal_test=spec["internal_test"],
        internal_val=spec["internal_val"],
        external_per_site=spec["external_per_site"],
    )
    t0 = time.perf_counter()
    out = G.generate(
        preset,
        Path(out_dir),
        fmt="cache",
        workers=spec["workers"],
        cache_spec=CacheSpec(size=spec["cache_size"]),
        progress=False,
    )
    seconds = time.perf_counter() - t0
    with (out / "labels.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    splits: dict[str, int] = {}
    for r in rows:
        splits[r["split"]] = splits.get(r["split"], 0) + 1
    return {
        "exams": preset.num_exams,
        "internal": preset.internal,
        "internal_test": preset.internal_test,
        "internal_val": preset.internal_val,
        "external_per_site": preset.external_per_site,
        "series": len(rows),
        "series_per_split": splits,
        "cache_size": spec["cache_size"],
        "workers": spec["workers"],
        "generate_s": round(seconds, 2),
        "path": str(out),
    }


def run_child(args: argparse.Namespace) -> int:
    if args.child == "correctness":
        jp = os.environ.get("JAX_PLATFORMS", "")
        # The comparison needs the CPU backend next to the accelerator.
        if jp and "cpu" not in jp.split(","):
            os.environ["JAX_PLATFORMS"] = jp + ",cpu"
    if args.child == "devices":
        out = child_devices()
    elif args.child == "env":
        out = child_env()
    elif args.child == "torch":
        out = child_torch()
    elif args.child == "correctness":
        out = child_correctness([v for v in args.variants.split(",") if v])
    elif args.child == "cohort":
        out = child_cohort(args.cohort_out, json.loads(args.cohort_spec))
    else:
        raise SystemExit(f"unknown --child {args.child}")
    sys.stdout.write(json.dumps(out, default=str) + "\n")
    return 0


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="The JSON schema is in the module docstring (python -m pydoc on this file).",
    )
    ap.add_argument("--out", default=None, help="output folder (default $OUT, else runs/...)")
    ap.add_argument("--dry-run", action="store_true", help="tiny sizes, any CPU, ~2 min")
    ap.add_argument(
        "--stages",
        default=",".join(STAGES),
        help=f"comma-separated subset of {','.join(STAGES)} (run in that order)",
    )
    ap.add_argument("--time-limit", type=float, default=None, help="seconds for the whole run")
    ap.add_argument(
        "--budget",
        action="append",
        default=[],
        metavar="STAGE=SECONDS",
        help="a stage's budget (repeatable)",
    )
    ap.add_argument(
        "--peak-tflops",
        nargs="+",
        default=[],
        metavar="[DTYPE=]TFLOPS",
        help="chip peak for MFU instead of PEAK_TFLOPS: one number, or per dtype",
    )
    ap.add_argument(
        "--predict-paths",
        nargs="+",
        default=[str(REPO.parent / "shared" / "data" / "validation")],
        help="what the predict stage classifies (default ../shared/data/validation)",
    )
    ap.add_argument(
        "--correctness-variants",
        default=None,
        help=f"comma-separated subset of {','.join(CORRECTNESS_VARIANTS)} (default: the mode's)",
    )
    ap.add_argument("--work", default=None, help="work folder (kept); default: a temp folder")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--variants", default="", help=argparse.SUPPRESS)
    ap.add_argument("--cohort-out", default="", help=argparse.SUPPRESS)
    ap.add_argument("--cohort-spec", default="{}", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        sys.path.insert(0, str(REPO))
        return run_child(args)

    # phasejax.config (no JAX) for the paper preset's step count, also from a bare checkout.
    sys.path.insert(0, str(REPO))
    selected = tuple(s.strip() for s in args.stages.split(",") if s.strip())
    unknown = [s for s in selected if s not in STAGES]
    if unknown or not selected:
        print(f"--stages: unknown {unknown}; known: {','.join(STAGES)}", file=sys.stderr)
        return 2
    selected = tuple(s for s in STAGES if s in selected)
    plan = DRY if args.dry_run else FULL
    if args.correctness_variants:
        variants = tuple(v for v in args.correctness_variants.split(",") if v)
        bad = [v for v in variants if v not in CORRECTNESS_VARIANTS]
        if bad or not variants:
            print(f"--correctness-variants: unknown {bad}", file=sys.stderr)
            return 2
        plan = replace(plan, correctness_variants=variants)
    budgets = dict(DRY_BUDGETS_S if args.dry_run else STAGE_BUDGETS_S)
    for b in args.budget:
        name, _, value = b.partition("=")
        if name not in STAGES:
            print(f"--budget {b!r}: unknown stage", file=sys.stderr)
            return 2
        budgets[name] = float(value)
    try:
        peak_override = parse_peak_override(args.peak_tflops)
    except ValueError as e:
        print(e, file=sys.stderr)
        return 2
    out_dir = Path(args.out or os.environ.get("OUT") or REPO / "runs" / "accelerator_check")
    limit = args.time_limit or (DRY_TIME_LIMIT_S if args.dry_run else DEFAULT_TIME_LIMIT_S)
    keep = args.work is not None
    work = Path(args.work) if keep else Path(tempfile.mkdtemp(prefix="phasejax-accel-"))
    work.mkdir(parents=True, exist_ok=True)
    check = Check(
        plan=plan,
        out_path=out_dir / JSON_NAME,
        work=work.resolve(),
        time_limit_s=limit,
        budgets=budgets,
        selected=selected,
        peak_override=peak_override,
        predict_paths=tuple(args.predict_paths),
    )
    check.report["kept_work"] = keep

    def on_signal(signum: int, _frame: Any) -> None:
        for p in list(_ACTIVE):
            _kill_group(p)
        for entry in check.report.get("stages", {}).values():
            if entry["status"] == "running":
                entry.update(status="error", error=f"interrupted by signal {signum}")
        check.save()
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        check.run()
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    statuses = [check.report["stages"][s]["status"] for s in selected]
    print(
        f"{check.out_path}: " + ", ".join(f"{s} {st}" for s, st in zip(selected, statuses)),
        file=sys.stderr,
    )
    return 0 if all(st == "ok" for st in statuses) else 1


if __name__ == "__main__":
    sys.exit(main())
