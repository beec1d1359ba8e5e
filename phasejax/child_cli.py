"""`python -m phasejax.child_cli ARGS...`: the phasejax command run as another one's child.

`phasejax reproduce --jobs` and `phasejax ablate --parallel` stop their children with SIGINT
(phasejax.child_devices.interrupt: each child stops as on Ctrl-C, its last checkpoint kept). A
parent started as a background job of a non-interactive shell (`phasejax reproduce ... &` in
a script, CI's runners) starts with SIGINT ignored (bash: "asynchronous commands ignore SIGINT
and SIGQUIT"); Python leaves an ignored SIGINT ignored, and a child inherits it, so the
children ran on after their parent's SIGINT until `interrupt` killed them 60 s later (seen in
session 27's `.ci/run`). A child therefore restores Python's own handler before anything else.
The parent itself keeps what it was given: a script that backgrounds it asked for that.

A child given CPU cores (`ablate --parallel` on a CPU host) pins itself to them, from
PHASEJAX_CPUS, before JAX starts its thread pools: pinning from the parent between fork and
exec (subprocess's preexec_fn) is unsafe in a parent that runs threads, which a phasejax
process with JAX loaded does.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Mapping

# Comma-separated core ids the child restricts itself to (phasejax.ablate.shard.launch).
CPUS_ENV = "PHASEJAX_CPUS"


def command(*args: str) -> list[str]:
    """The argv that runs `phasejax ARGS...` as a child of this process."""
    return [sys.executable, "-m", "phasejax.child_cli", *args]


def pin_cpus(env: Mapping[str, str]) -> set[int] | None:
    """Restrict this process to the cores that env[CPUS_ENV] names; the cores, or None."""
    value = env.get(CPUS_ENV, "").strip()
    if not value:
        return None
    cores = {int(c) for c in value.split(",")}
    os.sched_setaffinity(0, cores)
    return cores


def main() -> int:
    signal.signal(signal.SIGINT, signal.default_int_handler)
    pin_cpus(os.environ)
    from phasejax.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
