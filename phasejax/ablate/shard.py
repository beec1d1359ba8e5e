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

`--parallel P` (`launch`): P child processes on one host, each running `phasejax ablate ...
--shard k/P` on its own devices (phasejax.child_devices.device_slots).
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from phasejax.ablate.suites import Plan, Run
from phasejax.child_cli import CPUS_ENV
from phasejax.child_devices import Slot, interrupt, log_tail

SHARD_COUNT_ENV = "PHASEJAX_SHARD_COUNT"
LOG_DIR = "_logs"  # under the ablation directory; "_" names are never suites
_SHARD_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


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
