"""Orbax checkpoints of a training run (the ONLY module that imports orbax).

A checkpoint holds the model state (parameters and BatchNorm statistics), the
optimizer state (with its step count, which drives the schedule), every process's
data-iterator state (Grain `get_state()`, as JSON) and a small metadata dict (step,
best validation accuracy, accumulated wall time). Two Orbax managers live under
`<workdir>/checkpoints/`: `latest/` (every N steps, the last few kept) and `best/`
(the best validation accuracy, one kept), so that a restart resumes from `latest`
while results are computed from `best`.

A checkpoint that does not restore (a disk that filled up mid-write, a copy cut short)
does not end the run when an older one does: `restore_newest` falls back to the
newest step that restores and moves every newer, damaged step out of the manager's
folder to `<directory>/corrupt/<kind>_<step>` (kept for inspection, never deleted,
and out of the way of the saves that will write those step numbers again).

Orbax's API moves fast; everything version-specific stays in this file.
"""

from __future__ import annotations

import base64
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx


class CheckpointError(RuntimeError):
    pass


@dataclass(frozen=True)
class Restored:
    step: int
    model_state: Any  # nnx.State, same structure and shardings as the template given
    opt_state: Any | None
    data_state: Any | None  # this process's iterator state as saved (dict or bytes)
    meta: dict[str, Any]


def _encode_data_state(state: Any) -> Any:
    """Grain iterator states are dicts of JSON values, or bytes for some iterators."""
    if state is None:
        return None
    if isinstance(state, bytes | bytearray):
        return {"__bytes_b64__": base64.b64encode(bytes(state)).decode("ascii")}
    return state


def _decode_data_state(state: Any) -> Any:
    if isinstance(state, dict) and set(state) == {"__bytes_b64__"}:
        return base64.b64decode(state["__bytes_b64__"])
    return state


def _allgather_json(obj: Any) -> list[Any]:
    """Every process's JSON value, in process order (orbax writes from the primary host only,
    so each host's iterator position has to reach it)."""
    text = json.dumps(obj, sort_keys=True)
    if jax.process_count() == 1:
        return [json.loads(text)]
    from jax.experimental import multihost_utils

    raw = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    lengths = np.asarray(multihost_utils.process_allgather(np.array([raw.size], np.int32)))
    padded = np.zeros(int(lengths.max()), np.uint8)
    padded[: raw.size] = raw
    every = np.asarray(multihost_utils.process_allgather(padded))
    return [
        json.loads(bytes(every[p, : int(lengths.reshape(-1)[p])]).decode("utf-8"))
        for p in range(every.shape[0])
    ]


def _pure(state: Any) -> Any:
    return nnx.to_pure_dict(state)


def _abstract(pure: Any) -> Any:
    def leaf(x: Any) -> Any:
        sharding = getattr(x, "sharding", None)
        return jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding)

    return jax.tree.map(leaf, pure)


def _fill(template: Any, pure: Any) -> Any:
    out = jax.tree.map(lambda x: x, template)  # a copy: replace_by_pure_dict mutates
    nnx.replace_by_pure_dict(out, pure)
    return out


class Checkpointer:
    """Save / restore the run state under `directory` (`latest/` and `best/`)."""

    def __init__(
        self,
        directory: str | Path,
        *,
        max_to_keep: int = 2,
        async_save: bool = True,
        read_only: bool = False,
    ):
        """read_only: open a finished run for prediction; nothing is created or written
        under `directory` (a model directory may be shared or on read-only storage)."""
        self.directory = Path(directory).absolute()
        self.read_only = read_only
        self._keep = {"latest": max_to_keep, "best": 1}
        self._async = async_save
        self._latest = self._manager(self.directory / "latest", max_to_keep, async_save, read_only)
        self._best = self._manager(self.directory / "best", 1, async_save, read_only)

    @staticmethod
    def _manager(
        path: Path, keep: int, async_save: bool, read_only: bool = False
    ) -> ocp.CheckpointManager:
        if read_only:
            # Orbax warns about (and ignores) retention, interval and create options on a
            # read-only manager, so none are given; its "directory is read only" notice is
            # what was asked for, and is kept out of the user's terminal.
            options = ocp.CheckpointManagerOptions(
                read_only=True, create=False, save_interval_steps=0
            )
            absl_log = logging.getLogger("absl")
            level = absl_log.level
            absl_log.setLevel(logging.ERROR)
            try:
                return ocp.CheckpointManager(path, options=options)
            finally:
                absl_log.setLevel(level)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=async_save
        )
        return ocp.CheckpointManager(path, options=options)

    def _mgr(self, which: str) -> ocp.CheckpointManager:
        if which not in ("latest", "best"):
            raise ValueError(f"checkpoint kind {which!r}: latest | best")
        return self._latest if which == "latest" else self._best

    # ------------------------------------------------------------------ save
    def save(
        self,
        step: int,
        model_state: Any,
        opt_state: Any,
        *,
        data_state: Any = None,
        meta: dict[str, Any] | None = None,
        which: str = "latest",
    ) -> None:
        """Save (asynchronously) on every process; orbax writes arrays from all hosts'
        shards and JSON from the primary host. Call `wait()` before reading it back."""
        mgr = self._mgr(which)
        if mgr.latest_step() == step:
            return
        data_states = _allgather_json(_encode_data_state(data_state))
        args = ocp.args.Composite(
            model=ocp.args.StandardSave(_pure(model_state)),
            opt=ocp.args.StandardSave(_pure(opt_state)),
            data=ocp.args.JsonSave({"processes": data_states}),
            meta=ocp.args.JsonSave({"step": int(step), **(meta or {})}),
        )
        mgr.save(int(step), args=args)

    # --------------------------------------------------------------- restore
    def latest_step(self, which: str = "latest") -> int | None:
        return self._mgr(which).latest_step()

    def restore(
        self,
        model_template: Any,
        opt_template: Any | None = None,
        *,
        step: int | None = None,
        which: str = "latest",
    ) -> Restored:
        """Restore into the structure and shardings of the given states (nnx.State of
        the freshly built model / optimizer on the mesh). `opt_template=None` restores
        the model alone (evaluation from `best/`)."""
        items: dict[str, Any] = {"data": ocp.args.JsonRestore()}
        if opt_template is not None:
            items["opt"] = ocp.args.StandardRestore(_abstract(_pure(opt_template)))
        step, got = self._restore(which, step, model_template, items)
        data = got["data"] or {}
        processes = data.get("processes") or []
        p = jax.process_index()
        if processes and len(processes) != jax.process_count():
            raise CheckpointError(
                f"{self.directory / which} step {step} was written by {len(processes)} "
                f"processes, this job has {jax.process_count()}: the data order cannot resume"
            )
        return Restored(
            step=step,
            model_state=_fill(model_template, got["model"]),
            opt_state=None if opt_template is None else _fill(opt_template, got["opt"]),
            data_state=_decode_data_state(processes[p]) if processes else None,
            meta=dict(got["meta"] or {}),
        )

    def restore_newest(
        self, model_template: Any, opt_template: Any | None = None, *, which: str = "latest"
    ) -> tuple[Restored, list[tuple[int, str, Path]]]:
        """`restore` from the newest step that restores, and [(step, error, kept at)] for
        each newer step that did not (moved aside, see the module docstring).

        Raises CheckpointError naming every step tried when none restores.
        """
        mgr = self._mgr(which)
        mgr.wait_until_finished()
        steps = sorted(mgr.all_steps(), reverse=True)
        if not steps:
            raise CheckpointError(f"no checkpoint under {self.directory / which}")
        failed: list[tuple[int, str]] = []
        for step in steps:
            try:
                restored = self.restore(model_template, opt_template, step=step, which=which)
            except CheckpointError as e:
                failed.append((step, str(e)))
                continue
            return restored, self._set_aside(which, failed)
        tried = ", ".join(str(s) for s in steps)
        raise CheckpointError(
            f"no checkpoint under {self.directory / which} restores (steps {tried}); "
            f"newest: {failed[0][1]}"
        )

    def _set_aside(self, which: str, failed: list[tuple[int, str]]) -> list[tuple[int, str, Path]]:
        """Move damaged steps out of the manager's folder and reopen the manager, so that
        saving those step numbers again neither collides with them nor deletes them."""
        if not failed or self.read_only:
            return [(step, err, self.directory / which / str(step)) for step, err in failed]
        out = []
        for step, err in failed:
            dest = self.directory / "corrupt" / f"{which}_{step}"
            k = 1
            while dest.exists():
                k += 1
                dest = self.directory / "corrupt" / f"{which}_{step}.{k}"
            if jax.process_index() == 0:
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(self.directory / which / str(step)), str(dest))
            out.append((step, err, dest))
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(f"phasejax_ckpt_set_aside_{which}")
        self._mgr(which).close()
        mgr = self._manager(self.directory / which, self._keep[which], self._async)
        if which == "latest":
            self._latest = mgr
        else:
            self._best = mgr
        return out

    def restore_model(
        self, model_template: Any, *, which: str = "best", step: int | None = None
    ) -> tuple[int, Any, dict[str, Any]]:
        """(step, model state, meta) alone, for prediction and evaluation.

        Unlike `restore`, the data-iterator states are not read, so a model trained by
        several processes loads in one (the process-count check only matters to resume
        the data order)."""
        step, got = self._restore(which, step, model_template, {})
        return step, _fill(model_template, got["model"]), dict(got["meta"] or {})

    def _restore(
        self, which: str, step: int | None, model_template: Any, extra: dict[str, Any]
    ) -> tuple[int, Any]:
        """Restore the model and meta items plus `extra` from step (default: the latest)."""
        mgr = self._mgr(which)
        mgr.wait_until_finished()
        step = mgr.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"no checkpoint under {self.directory / which}")
        items = {
            "model": ocp.args.StandardRestore(_abstract(_pure(model_template))),
            "meta": ocp.args.JsonRestore(),
            **extra,
        }
        try:
            got = mgr.restore(step, args=ocp.args.Composite(**items))
        except Exception as e:  # orbax raises several types; name the checkpoint
            # First line only: orbax/tensorstore messages run to many lines of context,
            # and this one is printed as the single line a failed command ends with.
            first = (str(e).strip().splitlines() or [""])[0][:300]
            raise CheckpointError(
                f"cannot restore {self.directory / which} step {step}: {type(e).__name__}: {first}"
            ) from e
        return int(step), got

    def wait(self) -> None:
        self._latest.wait_until_finished()
        self._best.wait_until_finished()

    def close(self) -> None:
        self._latest.close()
        self._best.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
