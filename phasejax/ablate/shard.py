"""Sweeps across machines and devices: a deterministic share of an ablation plan per process.

The sharding rule (`assign`): the plan's training runs, in plan order, are dealt round-robin,
the i-th training run to shard i % N; an evaluate run goes to the shard of the trained run it
evaluates. Every process that expands the same suites, preset and seeds computes the same
plan, hence the same assignment, with no coordination: shards only share the output
directory. Dealing training runs only keeps the expensive work balanced (shard sizes differ
by at most one training); evaluations take seconds and, riding with their model, never wait
for another shard. Dealing is also composable: shard k of P inside shard K of N is shard
K + N*k of N*P, which is how `--parallel` splits a host's share.

Where K/N comes from (`resolve_shard`): an explicit `--shard K/N`; else a SLURM job array
(SLURM_ARRAY_TASK_ID, SLURM_ARRAY_TASK_COUNT, SLURM_ARRAY_TASK_MIN / _STEP); else a
Kubernetes Indexed Job (JOB_COMPLETION_INDEX, with the count in PHASEJAX_SHARD_COUNT, as the
Job does not export its `completions`); else the whole plan (0/1).

`--parallel P` (`device_slots`, `launch`): P child processes on one host, each running
`phasejax ablate ... --shard k/P` pinned to its own devices: CUDA_VISIBLE_DEVICES for GPUs,
TPU_VISIBLE_CHIPS (+ the libtpu bounds of a one-chip process) for TPUs, and on a CPU host
its own cores (affinity) with the thread pools of XLA, OpenMP and BLAS sized to them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from phasejax.ablate.suites import Plan, Run
from phasejax.child_cli import CPUS_ENV

SHARD_COUNT_ENV = "PHASEJAX_SHARD_COUNT"
LOG_DIR = "_logs"  # under the ablation directory; "_" names are never suites
_SHARD_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
_TPU_BASE_PORT = 8476  # libtpu's default mesh controller port; one per child from there


class ShardError(ValueError):
    """A shard specification that cannot be used; the message says which and why."""


@dataclass(frozen=True)
class Shard:
    index: int  # 0-based
    count: int
    origin: str = field(default="--shard", compare=False)  # where it came from, for messages

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ShardError(f"shard {self.index}/{self.count} ({self.origin}): need 0 <= K < N")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def is_whole(self) -> bool:
        return self.count == 1

    def split(self, parts: int, k: int) -> Shard:
        """Part k of `parts` of this shard, as a shard of the whole plan (see the module doc)."""
        return Shard(self.index + self.count * k, self.count * parts, f"--parallel {parts}")


WHOLE = Shard(0, 1, "default")


def parse_shard(text: str, origin: str = "--shard") -> Shard:
    m = _SHARD_RE.match(text)
    if not m:
        raise ShardError(f"{origin} {text!r}: expected K/N, e.g. 0/4 (K counts from 0)")
    return Shard(int(m.group(1)), int(m.group(2)), origin)


def _env_int(env: Mapping[str, str], name: str) -> int | None:
    value = env.get(name, "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise ShardError(f"{name}={value!r} is not an integer") from None


def shard_from_env(env: Mapping[str, str]) -> Shard | None:
    """The shard a SLURM job array or a Kubernetes Indexed Job says this process is."""
    task, count = _env_int(env, "SLURM_ARRAY_TASK_ID"), _env_int(env, "SLURM_ARRAY_TASK_COUNT")
    if task is not None and count is not None:
        # --array=1-8 or --array=0-15:2 are as valid as 0-7: number the tasks from 0.
        low = _env_int(env, "SLURM_ARRAY_TASK_MIN") or 0
        step = _env_int(env, "SLURM_ARRAY_TASK_STEP") or 1
        return Shard((task - low) // step, count, "SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT")
    index = _env_int(env, "JOB_COMPLETION_INDEX")
    if index is not None:
        total = _env_int(env, SHARD_COUNT_ENV)
        if total is None:
            raise ShardError(
                f"JOB_COMPLETION_INDEX={index} (a Kubernetes Indexed Job) needs the number of "
                f"shards: set {SHARD_COUNT_ENV} to the Job's completions, or pass --shard K/N"
            )
        return Shard(index, total, f"JOB_COMPLETION_INDEX/{SHARD_COUNT_ENV}")
    return None


def resolve_shard(explicit: str | None, env: Mapping[str, str] | None = None) -> Shard:
    """--shard K/N if given, else the job array's, else the whole plan."""
    if explicit is not None:
        return parse_shard(explicit)
    return shard_from_env(os.environ if env is None else env) or WHOLE


# --------------------------------------------------------------------------- assignment


def assign(runs: Sequence[Run], count: int) -> dict[str, int]:
    """run_id -> shard index (the rule of the module docstring)."""
    shard: dict[str, int] = {}
    n_train = 0
    for run in runs:
        if run.kind == "train":
            shard[run.run_id] = n_train % count
            n_train += 1
    for i, run in enumerate(runs):
        if run.kind != "train":
            # The source is in the plan whenever the plan came from `expand`; a hand-made plan
            # without it deals the run by its position.
            shard[run.run_id] = shard.get(run.source, i % count)
    return shard


def shard_plan(plan: Plan, shard: Shard) -> Plan:
    """The plan with only this shard's runs, in plan order. Suites and cells stay whole, so
    every shard writes the same plan.json."""
    if shard.is_whole:
        return plan
    owner = assign(plan.runs, shard.count)
    return dataclasses.replace(
        plan, runs=tuple(r for r in plan.runs if owner[r.run_id] == shard.index)
    )


# --------------------------------------------------------------------------- devices


@dataclass(frozen=True)
class Slot:
    """What one child process of `--parallel` may use."""

    env: dict[str, str]  # variables set for the child (on top of the parent's)
    cpus: tuple[int, ...] = ()  # CPU affinity; () = inherit
    describe: str = ""


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def visible_gpus(env: Mapping[str, str]) -> list[str]:
    """GPU ids this process may use: CUDA_VISIBLE_DEVICES when set, else nvidia-smi's list."""
    if "CUDA_VISIBLE_DEVICES" in env:
        return [g for g in _csv(env["CUDA_VISIBLE_DEVICES"]) if g != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return _csv(out.replace("\n", ","))


def visible_tpu_chips(env: Mapping[str, str]) -> list[str]:
    """TPU chips of this host: TPU_VISIBLE_CHIPS when set, else the accel / vfio devices."""
    if env.get("TPU_VISIBLE_CHIPS", "").strip():
        return _csv(env["TPU_VISIBLE_CHIPS"])
    found = glob.glob("/dev/accel[0-9]*") or glob.glob("/dev/vfio/[0-9]*")
    return [str(i) for i in range(len(found))]


def _split_even(items: Sequence[str] | Sequence[int], parts: int) -> list[list]:
    per = len(items) // parts
    return [list(items[k * per : (k + 1) * per]) for k in range(parts)]


def device_slots(
    parallel: int,
    env: Mapping[str, str] | None = None,
    *,
    cpus: Sequence[int] | None = None,
    gpus: Sequence[str] | None = None,
    tpu_chips: Sequence[str] | None = None,
    pin_cpus: bool = True,
) -> list[Slot]:
    """One Slot per child: its devices and, on every host, an even share of the CPU cores.

    The platform is the first found of GPUs, TPU chips and CPU, unless JAX_PLATFORMS names
    cpu. Accelerators are split evenly (the remainder stays idle); fewer accelerators than
    children is an error, as two trainings on one chip would only contend for it.
    pin_cpus False: CPU children keep their thread limits but not an affinity (the slots'
    cpus are ()), which `phasejax reproduce --jobs` needs: on the CPU an unpinned child
    trains bitwise as the same run in one process does, a pinned one does not.
    """
    env = os.environ if env is None else env
    if parallel < 1:
        raise ShardError(f"--parallel must be >= 1, got {parallel}")
    cpu_list = sorted(os.sched_getaffinity(0)) if cpus is None else list(cpus)
    platforms = env.get("JAX_PLATFORMS", "").strip().lower()
    cpu_only = platforms == "cpu"
    gpu_list = [] if cpu_only else list(visible_gpus(env) if gpus is None else gpus)
    tpu_list = [] if cpu_only or gpu_list else list(
        visible_tpu_chips(env) if tpu_chips is None else tpu_chips
    )  # fmt: skip
    # Cores for each child's own work (input pipeline, host code); () when too few to split.
    core_sets = _split_even(cpu_list, parallel) if len(cpu_list) >= parallel else [[]] * parallel
    slots = []
    if gpu_list:
        if len(gpu_list) < parallel:
            raise ShardError(f"{parallel} children, but only {len(gpu_list)} GPU(s) visible")
        for k, group in enumerate(_split_even(gpu_list, parallel)):
            devices = ",".join(group)
            slots.append(
                Slot({"CUDA_VISIBLE_DEVICES": devices}, tuple(core_sets[k]), f"GPU {devices}")
            )
        return slots
    if tpu_list:
        if len(tpu_list) < parallel:
            raise ShardError(f"{parallel} children, but only {len(tpu_list)} TPU chip(s) visible")
        if len(tpu_list) // parallel != 1:
            # Several chips per process need the chip topology in the bounds; one chip each is
            # the layout that libtpu documents for independent processes on one VM.
            raise ShardError(
                f"--parallel {parallel} on {len(tpu_list)} TPU chips: use one process per chip "
                f"(--parallel {len(tpu_list)})"
            )
        for k, chip in enumerate(tpu_list[:parallel]):
            port = str(_TPU_BASE_PORT + k)
            tpu_env = {
                "TPU_VISIBLE_CHIPS": chip,
                "TPU_VISIBLE_DEVICES": chip,  # the name older libtpu releases read
                "TPU_CHIPS_PER_PROCESS_BOUNDS": "1,1,1",
                "TPU_PROCESS_BOUNDS": "1,1,1",
                "TPU_PROCESS_PORT": port,
                "TPU_MESH_CONTROLLER_ADDRESS": f"localhost:{port}",
                "TPU_MESH_CONTROLLER_PORT": port,
            }
            slots.append(Slot(tpu_env, tuple(core_sets[k]), f"TPU chip {chip}"))
        return slots
    threads = max(1, len(cpu_list) // parallel)
    xla_flags = env.get("XLA_FLAGS", "")
    if threads == 1:
        # One core each: XLA's Eigen pool and intra-op threads would only contend.
        xla_flags = (
            f"{xla_flags} --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        ).strip()
    for k in range(parallel):
        cpu_env = {
            "JAX_PLATFORMS": "cpu",
            "OMP_NUM_THREADS": str(threads),
            "OPENBLAS_NUM_THREADS": str(threads),
            "MKL_NUM_THREADS": str(threads),
        }
        if xla_flags:
            cpu_env["XLA_FLAGS"] = xla_flags
        cores = tuple(core_sets[k]) if pin_cpus else ()
        what = f"CPU cores {','.join(map(str, cores))}" if cores else "CPU (shared cores)"
        slots.append(Slot(cpu_env, cores, what))
    return slots


# --------------------------------------------------------------------------- processes


@dataclass
class Child:
    shard: Shard
    slot: Slot
    log: Path
    proc: subprocess.Popen | None = None
    started: float = 0.0
    returncode: int | None = None
    seconds: float = 0.0


def log_tail(path: Path, lines: int = 15) -> str:
    """The last `lines` lines of a child's log, each progress-bar line in its last state."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    # Progress bars rewrite one line with \r: keep the last state of each line.
    rows = [r.rsplit("\r", 1)[-1] for r in text.splitlines()]
    return "\n".join(rows[-lines:])


def launch(
    commands: Sequence[Sequence[str]],
    shards: Sequence[Shard],
    slots: Sequence[Slot],
    log_dir: Path,
    *,
    stream: TextIO | None = None,
    poll_s: float = 1.0,
) -> list[Child]:
    """Start one child per command with its slot's environment and cores; wait for all.

    The commands are `phasejax.child_cli.command(...)` argvs: a child is given its slot's
    cores in PHASEJAX_CPUS and pins itself to them. Each child's output goes to
    log_dir/shard-K-of-N.log; a line is printed as each one starts and ends, with the tail of
    the log of a child that failed. Ctrl-C interrupts every child
    (each stops at once, as a single `phasejax ablate` would) and is re-raised.
    """
    stream = stream or sys.stdout
    log_dir.mkdir(parents=True, exist_ok=True)
    children = []
    for cmd, shard, slot in zip(commands, shards, slots, strict=True):
        log = log_dir / f"shard-{shard.index}-of-{shard.count}.log"
        child = Child(shard, slot, log)
        env = {**os.environ, **slot.env}
        env.pop(CPUS_ENV, None)
        if slot.cpus:
            # The child pins itself (phasejax.child_cli), not a preexec_fn in this threaded parent
            env[CPUS_ENV] = ",".join(map(str, sorted(slot.cpus)))
        with open(log, "w") as fh:
            child.proc = subprocess.Popen(list(cmd), env=env, stdout=fh, stderr=subprocess.STDOUT)
        child.started = time.perf_counter()
        print(f"shard {shard} on {slot.describe}: pid {child.proc.pid}, log {log}", file=stream)
        children.append(child)
    try:
        while any(c.returncode is None for c in children):
            for c in children:
                if c.returncode is None and c.proc is not None and c.proc.poll() is not None:
                    c.returncode = c.proc.returncode
                    c.seconds = time.perf_counter() - c.started
                    print(
                        f"shard {c.shard} finished: exit {c.returncode} in {c.seconds:.0f} s",
                        file=stream,
                    )
                    if c.returncode != 0:
                        print(log_tail(c.log), file=stream)
            time.sleep(poll_s)
    except KeyboardInterrupt:
        interrupt([c.proc for c in children if c.proc is not None])
        raise
    return children


def interrupt(procs: Sequence[subprocess.Popen], grace_s: float = 60.0) -> None:
    """SIGINT every child still running (each stops as on Ctrl-C, its last checkpoint kept),
    then wait for all of them; one still running after `grace_s` is killed, so the parent never
    waits forever (children run as phasejax.child_cli, which honours SIGINT even where it was
    inherited ignored; the kill covers any child that still does not stop)."""
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + grace_s
    for proc in procs:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
