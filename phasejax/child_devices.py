"""Child processes on one host: which devices each may use, and how the parent stops them.

Used by `phasejax ablate --parallel` (phasejax.ablate.shard.launch) and `phasejax reproduce
--jobs` (phasejax.train.children): each child gets a `Slot` (`device_slots`): its own GPUs
(CUDA_VISIBLE_DEVICES), its own TPU chip (TPU_VISIBLE_CHIPS and the libtpu bounds of a
one-chip process), or on a CPU host an even share of the cores, with the thread pools of XLA,
OpenMP and BLAS sized to them. Imports no JAX: looking at a backend from the parent would take
the accelerators' memory before the children start.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

_TPU_BASE_PORT = 8476  # libtpu's default mesh controller port; one per child from there


class DeviceSlotError(ValueError):
    """Children that the visible devices cannot serve; the message says why."""


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
        raise DeviceSlotError(f"--parallel must be >= 1, got {parallel}")
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
            raise DeviceSlotError(f"{parallel} children, but only {len(gpu_list)} GPU(s) visible")
        for k, group in enumerate(_split_even(gpu_list, parallel)):
            devices = ",".join(group)
            slots.append(
                Slot({"CUDA_VISIBLE_DEVICES": devices}, tuple(core_sets[k]), f"GPU {devices}")
            )
        return slots
    if tpu_list:
        if len(tpu_list) < parallel:
            raise DeviceSlotError(
                f"{parallel} children, but only {len(tpu_list)} TPU chip(s) visible"
            )
        if len(tpu_list) // parallel != 1:
            # Several chips per process need the chip topology in the bounds; one chip each is
            # the layout that libtpu documents for independent processes on one VM.
            raise DeviceSlotError(
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


def log_tail(path: Path, lines: int = 15) -> str:
    """The last `lines` lines of a child's log, each progress-bar line in its last state."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    # Progress bars rewrite one line with \r: keep the last state of each line.
    rows = [r.rsplit("\r", 1)[-1] for r in text.splitlines()]
    return "\n".join(rows[-lines:])


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
