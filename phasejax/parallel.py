"""Data parallelism over every device of every host: one mesh, one global program.

The original request was a "pmap-sharded" loop. `jax.pmap` is in maintenance mode
(since JAX 0.8 it is reimplemented on top of jit + shard_map); its data-parallel
semantics are reproduced here with global-view SPMD: one `jax.jit` step over a 1-D
`Mesh(('data',))`, the batch sharded by `NamedSharding(mesh, P('data'))` and the
parameters replicated. The compiler inserts the gradient all-reduce that pmap users
wrote by hand with `lax.pmean`, and BatchNorm statistics are reduced over the GLOBAL
batch (pmap's per-device BatchNorm needed an explicit `axis_name` for that).

Multi-host: `maybe_initialize_distributed()` starts `jax.distributed` before any
backend is touched, each host loads its own share of the batch, and `to_global`
assembles those shares into one global array with
`jax.make_array_from_process_local_data`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"

# Environment variables set by the launchers jax.distributed knows how to read
# (its own, SLURM, Open MPI / mpirun). One of them with more than one process means
# "this is a multi-process job".
_PROCESS_COUNT_VARS = ("JAX_NUM_PROCESSES", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE")


def _env_int(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    try:
        return int(value) if value else None
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def maybe_initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    local_device_ids: Sequence[int] | None = None,
    initialization_timeout: int = 300,
) -> bool:
    """Start `jax.distributed` when this process is one of several; a no-op otherwise.

    Multi-process when arguments are given, or when the environment says so:
    JAX_COORDINATOR_ADDRESS (+ JAX_NUM_PROCESSES / JAX_PROCESS_ID), a SLURM or Open MPI
    job with more than one task, or PHASEJAX_DISTRIBUTED=1 (TPU pods and other clusters
    that jax.distributed detects by itself). Must run before any JAX computation:
    the backend's device list is fixed when it first starts. Returns True when
    distributed JAX is (now) initialised.
    """
    if jax.distributed.is_initialized():
        return True
    env_coordinator = os.environ.get("JAX_COORDINATOR_ADDRESS", "").strip() or None
    coordinator_address = coordinator_address or env_coordinator
    if num_processes is None:
        num_processes = _env_int("JAX_NUM_PROCESSES")
    if process_id is None:
        process_id = _env_int("JAX_PROCESS_ID")
    launched_multi = any((_env_int(v) or 1) > 1 for v in _PROCESS_COUNT_VARS)
    forced = os.environ.get("PHASEJAX_DISTRIBUTED", "").strip().lower() in ("1", "true", "yes")
    if coordinator_address is None and not launched_multi and not forced:
        return False
    if num_processes == 1:
        return False
    kwargs: dict[str, Any] = {"initialization_timeout": initialization_timeout}
    if local_device_ids is not None:
        kwargs["local_device_ids"] = list(local_device_ids)
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
        **kwargs,
    )
    return True


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """1-D mesh ('data',) over all devices of all hosts (or the given ones).

    Axis type Auto (not the Explicit default of `jax.make_mesh` in recent JAX): the
    step is written in global view and sharding propagation places the collectives.
    """
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("make_mesh: no devices")
    try:
        auto = (jax.sharding.AxisType.Auto,)
        return jax.make_mesh((len(devices),), (DATA_AXIS,), axis_types=auto, devices=devices)
    except (TypeError, AttributeError):  # older JAX without axis types / devices=
        return Mesh(np.asarray(devices), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over 'data'; the other axes whole on every device."""
    return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def is_main_process() -> bool:
    """Process 0 alone writes files and logs."""
    return jax.process_index() == 0


def local_batch_size(global_batch: int, mesh: Mesh) -> int:
    """This process's share of a global batch; refuses sizes the mesh cannot split evenly."""
    n_dev = mesh.devices.size
    if global_batch % n_dev:
        raise ValueError(
            f"global batch size {global_batch} is not a multiple of the {n_dev} devices of the "
            f"mesh; choose a batch size divisible by {n_dev}"
        )
    return global_batch // jax.process_count()


def to_global(batch_local: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """This process's rows -> global arrays sharded on 'data' (rows of process p after
    those of process p-1, as `make_array_from_process_local_data` lays them out)."""
    sharding = batch_sharding(mesh)
    out = {}
    for key, value in batch_local.items():
        value = np.asarray(value)
        n_local = mesh.local_mesh.devices.size
        if value.shape[0] % n_local:
            raise ValueError(
                f"batch field {key!r}: {value.shape[0]} local rows do not split over the "
                f"{n_local} local devices"
            )
        out[key] = jax.make_array_from_process_local_data(sharding, value)
    return out


def to_host(x: jax.Array) -> np.ndarray:
    """A global array as one numpy array on every process (an all-gather when multi-host)."""
    if x.is_fully_addressable:
        return np.asarray(x)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def sync(name: str) -> None:
    """Barrier across processes (no-op on one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def enable_compilation_cache(path: str | os.PathLike[str] | None = None) -> str | None:
    """Persist XLA executables across processes (restarts, ablation runs, test workers).

    Default location: $PHASEJAX_COMPILATION_CACHE, else ~/.cache/phasejax/xla; "off"
    disables it, and an explicit JAX_COMPILATION_CACHE_DIR is left alone. Small
    compilations are cached too: model initialisation compiles one tiny program per
    layer shape, which on a CPU costs more than the training step's compilation.
    Returns the directory in use, or None.
    """
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return os.environ["JAX_COMPILATION_CACHE_DIR"]
    if path is None:
        path = os.environ.get("PHASEJAX_COMPILATION_CACHE", "").strip() or None
    if path is not None and str(path).lower() in ("off", "0", "none", "false"):
        return None
    if path is None:
        path = os.path.join(os.path.expanduser("~"), ".cache", "phasejax", "xla")
    os.makedirs(path, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return str(path)


def broadcast_from_main(value: int) -> int:
    """Process 0's integer on every process (a decision only process 0 can make, e.g.
    from files it alone reads); the value itself on a single process."""
    if jax.process_count() == 1:
        return int(value)
    from jax.experimental import multihost_utils

    return int(multihost_utils.broadcast_one_to_all(np.int32(value)))
