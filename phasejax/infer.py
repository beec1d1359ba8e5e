"""One way to run a trained model: fixed-shape, device-sized batches through the eval step.

    run, clf = load_classifier("runs/paper_B")
    for row, probs in clf.classify(rows, transform=lambda r: my_preprocess(r)):
        ...

`Classifier` holds a model's state replicated on a mesh (global-view SPMD: the jit-compiled
eval step of `phasejax.train.step`, batch sharded on 'data', no pmap) and a batch size
rounded up to a multiple of the device count (`device_multiple`). Every call pads its
images to that batch, so the step compiles once per process whatever the number of
series; padded rows are dropped. Probabilities are exp(log-probabilities) renormalised
in float64 (`probabilities_from_log`).

Its callers: training's split evaluation (`phasejax.train.loop.predict_split`, batches from
the input pipeline, every process's rows gathered with `log_probs_all`), perturbed
evaluation (`phasejax.ablate.runner.evaluate_perturbed`), saliency's live classification
and `phasejax predict` / `phasejax evaluate` (`classify` with a transform that takes the
network input of each item). `Ensemble` puts several classifiers of the same inputs and
classes behind the same `classify`: the mean of their probabilities (`--ensemble`).

This module imports no JAX at module level (predict's worker processes import it); the
model-side methods import it when called.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

if TYPE_CHECKING:
    from jax.sharding import Mesh

    from phasejax.train.restore import TrainedRun

T = TypeVar("T")


def device_multiple(n: int, devices: int) -> int:
    """`n` rounded up to a multiple of `devices`, and at least one row per device: the
    batch is split evenly over the 'data' axis."""
    if devices < 1:
        raise ValueError(f"device count must be >= 1, got {devices}")
    return max(devices, math.ceil(max(1, int(n)) / devices) * devices)


def probabilities_from_log(log_probs: np.ndarray) -> np.ndarray:
    """exp(log-probabilities) [..., K] as float64 rows summing to 1."""
    # exp(log_softmax) sums to 1 only up to float32 rounding: renormalise in float64.
    p = np.exp(np.asarray(log_probs, dtype=np.float64))
    return p / p.sum(axis=-1, keepdims=True)


class _Batched:
    """`classify` / `classify_all` over `probabilities` of batches of `local_batch_size`."""

    local_batch_size: int
    num_classes: int | None

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def classify(
        self, items: Iterable[T], transform: Callable[[T], np.ndarray] | None = None
    ) -> Iterator[tuple[T, np.ndarray]]:
        """(item, probabilities [K]) of every item, in order, yielded batch by batch.

        `transform` makes an item's network input [S, H, W, C] (None: the item is one);
        it runs as the item is drawn, so a batch is all that is held in memory. Items are
        drawn lazily: a caller's generator may do other work between them.
        """
        batch: list[T] = []
        images: list[np.ndarray] = []
        for item in items:
            batch.append(item)
            images.append(np.asarray(item if transform is None else transform(item)))
            if len(batch) == self.local_batch_size:
                yield from zip(batch, self.probabilities(np.stack(images)))
                batch, images = [], []
        if batch:
            yield from zip(batch, self.probabilities(np.stack(images)))

    def classify_all(
        self, items: Iterable[T], transform: Callable[[T], np.ndarray] | None = None
    ) -> np.ndarray:
        """Probabilities [N, K] (float64) of every item, in order (see `classify`)."""
        probs = [p for _, p in self.classify(items, transform)]
        if not probs:
            return np.zeros((0, self.num_classes or 0), np.float64)
        return np.stack(probs)


class Classifier(_Batched):
    """A model state on a mesh behind fixed-shape batches of `batch_size` (global) rows.

    model_state must be the state of `nnx.split(model)` with `model_def`; it is placed
    replicated on the mesh (a no-op for a state already there, such as a Trainer's).
    On a mesh that spans several processes each process passes its own share of every
    batch (`local_batch_size` rows), as the training input pipeline yields them.
    """

    def __init__(
        self,
        model_def: Any,
        model_state: Any,
        mesh: Mesh,
        *,
        batch_size: int = 16,
        num_classes: int | None = None,
    ) -> None:
        import jax

        from phasejax import parallel
        from phasejax.train.step import compiled_eval

        self.mesh = mesh
        n_dev = int(mesh.devices.size)
        self.batch_size = device_multiple(batch_size, n_dev)
        # This process's rows of a global batch: all of it on a mesh of local devices.
        n_local = int(mesh.local_mesh.devices.size)
        self.local_batch_size = self.batch_size * n_local // n_dev
        # Rows of process p follow those of processes < p (make_array_from_process_local_data).
        self._offset = 0 if n_local == n_dev else jax.process_index() * self.local_batch_size
        self.model_state = jax.device_put(model_state, parallel.replicated(mesh))
        self.num_classes = num_classes
        self._eval = compiled_eval(model_def, mesh)
        self.seconds = 0.0  # spent in the model (step and transfer back), for throughput
        self.batches = 0

    @classmethod
    def for_model(cls, model: Any, *, batch_size: int = 16, mesh: Mesh | None = None) -> Classifier:
        """A built (or restored) classifier on a mesh over this process's devices; the
        model object itself is left as it is."""
        import jax
        from flax import nnx

        from phasejax import parallel

        mesh = mesh if mesh is not None else parallel.make_mesh(jax.local_devices())
        model_def, state = nnx.split(model)
        labels = getattr(model, "label_set", None)
        k = labels.num_classes if labels is not None else None
        return cls(model_def, state, mesh, batch_size=batch_size, num_classes=k)

    def log_probs_all(self, images: np.ndarray) -> np.ndarray:
        """log-probabilities [batch_size, K] (float32) of the whole global batch, every
        process's rows in mesh order, padding included; `images` are this process's rows
        [n <= local_batch_size, S, H, W, C], zero-padded to its share."""
        from phasejax import parallel

        n = int(images.shape[0])
        if not 0 < n <= self.local_batch_size:
            raise ValueError(f"{n} images for a batch of {self.local_batch_size}")
        if n < self.local_batch_size:
            batch = np.zeros((self.local_batch_size, *images.shape[1:]), np.float32)
            batch[:n] = images
        else:
            batch = np.asarray(images, np.float32)
        t0 = time.perf_counter()
        image = parallel.to_global({"image": batch}, self.mesh)["image"]
        lp = parallel.to_host(self._eval(self.model_state, image))
        self.seconds += time.perf_counter() - t0
        self.batches += 1
        return lp

    def log_probs(self, images: np.ndarray) -> np.ndarray:
        """log-probabilities [N, K] (float64) of this process's images [N <= local batch]."""
        n = int(images.shape[0])
        lp = self.log_probs_all(images)
        return np.asarray(lp[self._offset : self._offset + n], dtype=np.float64)

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Probabilities [N, K], each row summing to 1 (float64)."""
        return probabilities_from_log(self.log_probs(images))


class Ensemble(_Batched):
    """Several classifiers of the same inputs and classes as one: the mean of their
    probabilities (e.g. the seeds of one recipe, whose single runs differ on real scans by
    a few series each; phasejax predict / evaluate --ensemble)."""

    def __init__(self, members: Sequence[Classifier]) -> None:
        if not members:
            raise ValueError("an ensemble needs at least one classifier")
        sizes = {m.local_batch_size for m in members}
        classes = {m.num_classes for m in members}
        if len(sizes) > 1 or len(classes) > 1:
            raise ValueError(
                f"ensemble members differ in batch size {sorted(sizes)} or classes {classes}"
            )
        self.members = list(members)
        self.local_batch_size = members[0].local_batch_size
        self.num_classes = members[0].num_classes

    @property
    def seconds(self) -> float:
        return sum(m.seconds for m in self.members)

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Probabilities [N, K]: the members' mean, each row summing to 1 (float64)."""
        p = np.mean([m.probabilities(images) for m in self.members], axis=0)
        return p / p.sum(axis=-1, keepdims=True)


def load_classifier(
    run_dir: str | Path,
    which: str = "best",
    *,
    batch_size: int = 16,
    mesh: Mesh | None = None,
) -> tuple[TrainedRun, Classifier]:
    """A trained run (`phasejax.train.restore.load_run`: config, model, checkpoint step)
    and its Classifier on `mesh` (default: this process's devices). Raises ModelDirError."""
    from phasejax.train.restore import load_run

    run = load_run(run_dir, which)
    return run, Classifier.for_model(run.model, batch_size=batch_size, mesh=mesh)
