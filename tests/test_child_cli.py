"""A child phasejax process stops on its parent's SIGINT even when it inherited SIGINT ignored.

A background job of a non-interactive shell starts with SIGINT ignored and Python passes that
on to its children; `reproduce --jobs` and `ablate --parallel` stop their children by SIGINT.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from phasejax.child_cli import command

# A medium cohort at a tiny matrix: minutes of work, so the child is still busy when signalled.
GENERATE = ["cohort", "generate", "--size", "medium", "--format", "cache", "--cache-size", "16"]


def _start_with_sigint_ignored(argv: list[str]) -> subprocess.Popen:
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)  # inherited across exec, as from `cmd &`
    try:
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    finally:
        signal.signal(signal.SIGINT, old)


def _interrupt_once_started(proc: subprocess.Popen, out: Path) -> None:
    deadline = time.monotonic() + 60
    while not (out / ".progress").exists() and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)


def test_a_child_stops_on_sigint_though_started_with_it_ignored(tmp_path: Path) -> None:
    out = tmp_path / "child"
    proc = _start_with_sigint_ignored(command(*GENERATE, "--out", str(out), "--no-progress"))
    _interrupt_once_started(proc, out)
    try:
        assert proc.wait(timeout=60) == 130
    finally:
        proc.kill()
    assert "interrupted" in (proc.stdout.read() if proc.stdout else "")


def test_the_plain_command_keeps_sigint_ignored(tmp_path: Path) -> None:
    """The control: `python -m phasejax.cli` (what a user or script runs) honours the ignore."""
    out = tmp_path / "plain"
    argv = [sys.executable, "-m", "phasejax.cli", *GENERATE, "--out", str(out), "--no-progress"]
    proc = _start_with_sigint_ignored(argv)
    _interrupt_once_started(proc, out)
    try:
        time.sleep(3)
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()


def test_launch_gives_each_child_its_cores_and_the_child_pins_itself(tmp_path: Path) -> None:
    # ablate --parallel passes a CPU child its cores in PHASEJAX_CPUS (not a preexec_fn in the
    # threaded parent); the child (phasejax.child_cli) restricts itself before JAX starts.
    import io
    import os

    from phasejax.ablate.shard import Shard, launch
    from phasejax.child_devices import Slot

    cores = sorted(os.sched_getaffinity(0))
    probe = (
        "import os; from phasejax.child_cli import pin_cpus; pin_cpus(os.environ); "
        "print('affinity', sorted(os.sched_getaffinity(0)))"
    )
    argv = [sys.executable, "-c", probe]
    slots = [Slot({}, (cores[-1],), "the last core"), Slot({}, (), "inherit")]
    children = launch(
        [argv, argv], [Shard(0, 2), Shard(1, 2)], slots, tmp_path, stream=io.StringIO(), poll_s=0.05
    )
    assert [c.returncode for c in children] == [0, 0]
    logs = [c.log.read_text() for c in children]
    assert f"affinity [{cores[-1]}]" in logs[0]
    assert f"affinity {cores}" in logs[1]
