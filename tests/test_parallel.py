"""Mesh, shardings and global batch assembly on the 8 fake CPU devices."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from phasejax import parallel


def test_mesh_over_all_devices() -> None:
    mesh = parallel.make_mesh()
    assert mesh.axis_names == ("data",)
    assert mesh.devices.size == 8
    assert sorted(d.id for d in mesh.devices.flat) == sorted(d.id for d in jax.devices())
    assert parallel.make_mesh(jax.devices()[:2]).devices.size == 2
    assert parallel.batch_sharding(mesh).spec == P("data")
    assert parallel.replicated(mesh).spec == P()
    assert parallel.is_main_process()


def test_to_global_shards_rows_over_devices() -> None:
    mesh = parallel.make_mesh()
    image = np.arange(16 * 3, dtype=np.float32).reshape(16, 3)
    label = np.arange(16, dtype=np.int32)
    g = parallel.to_global({"image": image, "label": label}, mesh)
    assert g["image"].shape == (16, 3) and g["label"].dtype == np.int32
    shards = g["label"].addressable_shards
    assert len(shards) == 8
    # Each device holds 2 consecutive rows, together every row exactly once.
    held = sorted(int(v) for s in shards for v in np.asarray(s.data))
    assert held == list(range(16))
    assert all(np.asarray(s.data).shape == (2,) for s in shards)
    np.testing.assert_array_equal(parallel.to_host(g["image"]), image)


def test_batch_sizes_that_do_not_split_are_refused() -> None:
    mesh = parallel.make_mesh()
    assert parallel.local_batch_size(32, mesh) == 32  # one process holds the whole batch
    with pytest.raises(ValueError, match="not a multiple of the 8 devices"):
        parallel.local_batch_size(12, mesh)
    with pytest.raises(ValueError, match="'label': 12 local rows"):
        parallel.to_global({"label": np.zeros(12, np.int32)}, mesh)


def test_initialize_distributed_is_noop_for_one_process(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in (
        "JAX_COORDINATOR_ADDRESS",
        "JAX_NUM_PROCESSES",
        "JAX_PROCESS_ID",
        "SLURM_NTASKS",
        "OMPI_COMM_WORLD_SIZE",
        "PHASEJAX_DISTRIBUTED",
    ):
        monkeypatch.delenv(var, raising=False)
    assert parallel.maybe_initialize_distributed() is False
    monkeypatch.setenv("SLURM_NTASKS", "1")  # a one-task SLURM job is not multi-process
    assert parallel.maybe_initialize_distributed() is False
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "127.0.0.1:1")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "1")
    assert parallel.maybe_initialize_distributed() is False
    assert not jax.distributed.is_initialized()
    monkeypatch.setenv("JAX_NUM_PROCESSES", "two")
    with pytest.raises(ValueError, match="JAX_NUM_PROCESSES='two'"):
        parallel.maybe_initialize_distributed()


def test_compilation_cache_respects_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    monkeypatch.setenv("PHASEJAX_COMPILATION_CACHE", "off")
    assert parallel.enable_compilation_cache() is None
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", "/somewhere/else")
    assert parallel.enable_compilation_cache() == "/somewhere/else"  # left to JAX
