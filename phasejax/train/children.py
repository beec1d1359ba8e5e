"""Trainings as child processes, several at a time on one host (`phasejax reproduce --jobs`).

On a host with several GPUs or TPU chips each child gets its own
(`phasejax.child_devices.device_slots`), one training per accelerator, where one process
would train the small ResNets one after another on one of them. On a CPU host it is measured
and barely pays: XLA:CPU runs the quick config's training step on two cores only 1.6 times
faster than on one (57 against 92 ms one-step, 100 against 165 ms two-step; session 27,
2-core Xeon 6/167, docs/benchmarks/stem_cost_quick_xeon_*.json), but with the input
pipelines sharing the cores two single-threaded two-step trainings side by side took 714 s
where one alone took 376 s in one process (3000 steps each), so there the default is one
training at a time, in this process.

Each child runs `phasejax train --config RUN/config.json --out RUN --cache CACHE`, so each
training is an ordinary run directory: resumable, and on the CPU bitwise the run that
`phasejax.train.loop.train` gives in one process (children keep XLA to one thread each but
are not pinned to a core; a pinned one trains differently).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from phasejax.config import Config
from phasejax.train import workdir as wd

LOG_FILE = "train.log"  # a child's stdout and stderr, in its run directory


@dataclass(frozen=True)
class TrainJob:
    """One training: `train(cfg, run_dir, cache_dir=cache)`."""

    cfg: Config
    run_dir: Path
    cache: Path

    @property
    def cost(self) -> int:
        # A two-step step runs two ResNets (1.6-1.8x a one-step step on the CPU).
        return int(self.cfg.train.steps) * (2 if self.cfg.model.strategy == "two_step" else 1)

    def finished(self) -> bool:
        done = wd.read_results(self.run_dir)
        return done is not None and "splits" in done


def auto_jobs(n_trainings: int, env: Mapping[str, str] | None = None) -> int:
    """Trainings at once by default: one per GPU or TPU chip on an accelerator host, never
    more than there are trainings; 1 on a CPU host (the module docstring says why). Reads no
    JAX backend, which would take the accelerators' memory before the children start."""
    from phasejax.child_devices import visible_gpus, visible_tpu_chips

    env = os.environ if env is None else env
    if env.get("JAX_PLATFORMS", "").strip().lower() == "cpu":
        return 1
    accelerators = visible_gpus(env) or visible_tpu_chips(env)
    return max(1, min(n_trainings, len(accelerators)))


def last_logged_step(metrics: Path) -> int:
    """The step of the last complete line of a run's metrics.jsonl (0 if none)."""
    import json

    try:
        with open(metrics, "rb") as fh:
            start = max(0, fh.seek(0, os.SEEK_END) - 4096)
            fh.seek(start)
            lines = fh.read().decode("utf-8", errors="replace").splitlines()
    except OSError:
        return 0
    # The first line read from the middle of the file may be cut; a last one being written
    # does not parse.
    for line in reversed(lines[1:] if start else lines):
        with contextlib.suppress(ValueError, TypeError, AttributeError, KeyError):
            return int(json.loads(line)["step"])
    return 0


def child_command(job: TrainJob) -> list[str]:
    from phasejax.child_cli import command

    return command(
        "train",
        "--config", str(job.run_dir / wd.CONFIG_FILE),
        "--out", str(job.run_dir),
        "--cache", str(job.cache),
    )  # fmt: skip


def train_all(
    jobs: Sequence[TrainJob],
    parallel: int = 1,
    *,
    stream: TextIO | None = None,
    poll_s: float = 1.0,
) -> None:
    """Train every job: in this process one after another (parallel 1), or as `parallel`
    child processes at a time, the most expensive first, with one progress bar over all
    their steps. A finished run is not started again. A child that fails stops the others
    (their runs resume from their last checkpoint) and raises RuntimeError with its log's
    tail; Ctrl-C stops them all and is re-raised. `stream`: the progress bar's (stderr)."""
    if parallel < 1:
        raise ValueError(f"jobs must be at least 1, got {parallel}")
    if parallel == 1:
        from phasejax.train.loop import train

        for job in jobs:
            train(job.cfg, job.run_dir, cache_dir=job.cache)
        return

    from tqdm.auto import tqdm

    from phasejax.child_devices import device_slots, interrupt, log_tail

    queue = sorted((j for j in jobs if not j.finished()), key=lambda j: -j.cost)
    done_steps = sum(int(j.cfg.train.steps) for j in jobs if j not in queue)
    slots = device_slots(min(parallel, max(1, len(queue))), pin_cpus=False)
    for job in queue:
        job.run_dir.mkdir(parents=True, exist_ok=True)
        wd.check_or_write_config(job.run_dir, job.cfg)  # what the child reads; a clash raises here
    total = sum(int(j.cfg.train.steps) for j in jobs)
    running: dict[int, tuple[TrainJob, subprocess.Popen]] = {}
    bar = tqdm(
        total=total, desc=f"train ({len(slots)} at a time)", unit="step", file=stream
    )  # None: stderr
    try:
        while queue or running:
            for k, slot in enumerate(slots):
                if k in running or not queue:
                    continue
                job = queue.pop(0)
                with open(job.run_dir / LOG_FILE, "a") as log:
                    proc = subprocess.Popen(
                        child_command(job),
                        env={**os.environ, **slot.env},
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                running[k] = (job, proc)
                bar.write(f"[train] {job.run_dir} on {slot.describe}: pid {proc.pid}, log "
                          f"{job.run_dir / LOG_FILE}")  # fmt: skip
            for k, (job, proc) in list(running.items()):
                rc = proc.poll()
                if rc is None:
                    continue
                del running[k]
                done_steps += int(job.cfg.train.steps)
                if rc != 0:
                    raise RuntimeError(
                        f"training {job.run_dir} failed (exit {rc}); the end of "
                        f"{job.run_dir / LOG_FILE}:\n{log_tail(job.run_dir / LOG_FILE)}"
                    )
                bar.write(f"[train] {job.run_dir} done")
            # Queued runs count the steps an interrupted earlier attempt logged.
            bar.n = done_steps + sum(
                min(last_logged_step(j.run_dir / wd.METRICS_FILE), int(j.cfg.train.steps))
                for j in [*queue, *(job for job, _ in running.values())]
            )
            bar.refresh()
            if queue or running:
                time.sleep(poll_s)
    finally:
        bar.close()
        interrupt([proc for _, proc in running.values()])
