"""The one module that touches Grain (0.2.x), so a Grain API change is fixed here.

Grain 0.2.18 imports jax at import time (grain._src.core.config / profiler), and
phasejax.data must stay jax-free when imported (dataloading code, light Grain
workers, tools that never train). So `grain` is imported inside the functions,
never at module level. Worker processes that Grain spawns do import it (and with
it jax); that is Grain's cost, paid once per worker.

Data order: Grain's index shuffle over the split's rows, reshuffled every epoch
(`repeat` reseeds upstream shuffles with the epoch), then `map_with_index` hands
the element's global stream position to the element function, which derives its
own numpy Generator from (seed, position): the augmentations are a pure function
of (seed, position) and do not depend on Grain's internal RNG, the number of
processes, or the number of workers.

Per-process sharding: the stream is batched into per-process batches and process
p takes batches p, p + P, p + 2P, ...; global batch k is the concatenation of the
k-th batch of every process in process order, i.e. the same series in the same
order as one process with the global batch size would read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

Batch = dict[str, np.ndarray]


def stack_batch(elements: list[dict[str, np.ndarray]]) -> Batch:
    """Stack a list of element dicts into one batch dict (numpy only, no pytrees)."""
    return {k: np.stack([e[k] for e in elements]) for k in elements[0]}


def train_stream(
    num_rows: int,
    element_fn: Callable[[int, int], dict[str, np.ndarray]],
    *,
    seed: int,
    per_process_batch: int,
    process_index: int,
    process_count: int,
) -> Any:
    """An infinite grain.MapDataset of per-process training batches.

    element_fn(position, row) -> element dict, position = index in the global stream.
    """
    import grain

    # Grain's shuffle takes a seed in [0, 2**32).
    ds = grain.MapDataset.range(num_rows).shuffle(seed=seed % 2**32).repeat()
    ds = ds.map_with_index(element_fn)
    ds = ds.batch(per_process_batch, drop_remainder=True, batch_fn=stack_batch)
    return ds[process_index::process_count]


def to_iterator(ds: Any, *, worker_count: int = 0, num_threads: int = 2, buffer: int = 4) -> Any:
    """grain.DatasetIterator over a MapDataset of batches, with optional worker processes.

    The Grain default ReadOptions (16 threads, 500 prefetched elements) would
    prefetch 500 *batches*; we keep the buffer to a few batches per process.
    """
    import grain

    read = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=buffer)
    it_ds = ds.to_iter_dataset(read)
    if worker_count > 0:
        _mark_absl_flags_parsed()
        it_ds = it_ds.mp_prefetch(
            grain.MultiprocessingOptions(num_workers=worker_count, per_worker_buffer_size=2)
        ).map(_own_memory)
    return iter(it_ds)


def _own_memory(batch: Batch) -> Batch:
    # Worker batches arrive as views of shared-memory blocks that are unlinked when
    # the view is garbage collected; a copy (a few MB per batch, ~1 ms) gives the
    # caller ordinary arrays whose lifetime it controls.
    return {k: np.array(v, copy=True) for k, v in batch.items()}


def _mark_absl_flags_parsed() -> None:
    # Grain 0.2.18 reads an absl flag (worker profiling) when starting workers and
    # raises UnparsedFlagAccessError in programs that never run absl.app
    # (google/grain#1355, fixed upstream by #1362). Marking the flags parsed keeps
    # every flag at its default, which is what an unparsed program means anyway.
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def batch_map(num_batches: int, batch_fn: Callable[[int], Batch]) -> Any:
    """A finite grain.MapDataset whose element k is batch_fn(k)."""
    import grain

    return grain.MapDataset.range(num_batches).map(batch_fn)


def iterate(ds: Any, *, num_threads: int = 2) -> Iterator[Batch]:
    return to_iterator(ds, worker_count=0, num_threads=num_threads, buffer=max(2, num_threads))
