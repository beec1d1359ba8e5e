"""TensorBoard scalars of a training run, next to metrics.jsonl (the optional extra).

metrics.jsonl stays the record that figures and summaries are drawn from. With
`train.tensorboard=true` the trainer also writes every metrics.jsonl record as TensorBoard
scalars (`<split>/<key>`: train/loss, train/accuracy, train/learning_rate,
train/images_per_s, val/accuracy, ...) and, when the run ends, the final evaluation of the best
checkpoint (test/accuracy, external/accuracy, macro F1, log loss, per-phase sensitivity) to
RUN_DIR/tensorboard/. The writer is tensorboardX, which needs no TensorFlow:
`pip install 'phasejax[tensorboard]'`. To look at them: `pip install tensorboard`, then
`tensorboard --logdir RUN_DIR/tensorboard` (or the parent folder of several runs).

A resumed run writes a new event file that starts with TensorBoard's purge marker at the
step it resumed from, so the steps logged after the last checkpoint by the interrupted
process are dropped, as metrics.jsonl drops them.
"""

from __future__ import annotations

import struct
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

TB_DIR = "tensorboard"
MISSING = (
    "train.tensorboard=true, but tensorboardX is not installed: pip install "
    "'phasejax[tensorboard]' (training goes on; metrics.jsonl has the same numbers)"
)
_SKIP_KEYS = {"step", "split", "count"}  # bookkeeping, not curves


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


class ScalarWriter:
    """metrics.jsonl records and final results as TensorBoard scalars (tensorboardX)."""

    def __init__(self, logdir: str | Path, *, purge_step: int | None = None) -> None:
        from tensorboardX import SummaryWriter

        self.logdir = Path(logdir)
        # The file name's own stamp is in whole seconds: a restart within the same second
        # would reuse (and truncate) the interrupted run's file. The suffix keeps names
        # unique and in write order. purge_step=None on a fresh run: nothing to discard.
        self._writer = SummaryWriter(
            str(self.logdir),
            purge_step=purge_step or None,
            filename_suffix=f".{time.time_ns()}",
        )

    def add_record(self, rec: Mapping[str, Any]) -> None:
        """One metrics.jsonl record: every number becomes `<split>/<key>` at its step."""
        step, split = int(rec["step"]), str(rec.get("split", "train"))
        for key, value in rec.items():
            x = _number(value)
            if key not in _SKIP_KEYS and x is not None:
                self._writer.add_scalar(f"{split}/{key}", x, step)

    def add_results(self, results: Mapping[str, Any], step: int) -> None:
        """The final evaluation of results.json: per split, accuracy, macro F1, log loss and
        per-phase sensitivity, at the last step."""
        for split, entry in results.get("splits", {}).items():
            metrics = entry.get("metrics", {})
            for name in ("accuracy", "macro_f1", "log_loss"):
                value = metrics.get(name)
                x = _number(value.get("value") if isinstance(value, Mapping) else value)
                if x is not None:
                    self._writer.add_scalar(f"{split}/final_{name}", x, step)
            for phase, per in metrics.get("per_class", {}).items():
                sens = per.get("sensitivity") if isinstance(per, Mapping) else None
                x = _number(sens.get("value")) if isinstance(sens, Mapping) else None
                if x is not None:
                    self._writer.add_scalar(f"{split}/final_sensitivity_{phase}", x, step)

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


def open_writer(
    workdir: str | Path, *, purge_step: int | None = None, stream: TextIO | None = None
) -> ScalarWriter | None:
    """The writer of RUN_DIR/tensorboard, or None (and one line why) without tensorboardX."""
    try:
        import tensorboardX  # noqa: F401
    except ImportError:
        print(MISSING, file=stream or sys.stderr, flush=True)
        return None
    return ScalarWriter(Path(workdir) / TB_DIR, purge_step=purge_step)


# --------------------------------------------------------------------------- reading


def _records(path: Path) -> list[bytes]:
    """The records of a TFRecord file (length, masked CRC, payload, masked CRC); a torn
    record at the end of a file being written is ignored."""
    data = path.read_bytes()
    out, pos = [], 0
    while pos + 12 <= len(data):
        (length,) = struct.unpack_from("<Q", data, pos)
        end = pos + 12 + length + 4
        if end > len(data):
            break
        out.append(data[pos + 12 : pos + 12 + length])
        pos = end
    return out


def read_scalars(logdir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} of every event file under `logdir`, as TensorBoard shows
    them: files in write order, and a purge marker (a resumed run) drops the points at or
    after its step written before it. Needs tensorboardX (its protobuf definitions)."""
    from tensorboardX.proto import event_pb2

    scalars: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(Path(logdir).rglob("events.out.tfevents.*")):
        for raw in _records(path):
            event = event_pb2.Event.FromString(raw)
            if event.HasField("session_log") and event.session_log.status == 1:  # START
                for tag, points in scalars.items():
                    scalars[tag] = [(s, v) for s, v in points if s < event.step]
            if not event.HasField("summary"):
                continue
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    x = float(value.simple_value)
                elif value.HasField("tensor") and value.tensor.float_val:
                    x = float(value.tensor.float_val[0])
                else:
                    continue
                scalars.setdefault(value.tag, []).append((int(event.step), x))
    return scalars
