"""The one-screen summary printed when `phasejax train` ends: what the run reached and where
its files are. Read from results.json and metrics.jsonl only, so a finished run prints the
same summary when the command is run again."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from phasejax.train import workdir as wd
from phasejax.train.tensorboard import TB_DIR


def _accuracy(metrics: Mapping[str, Any]) -> str:
    acc = metrics.get("accuracy")
    if not isinstance(acc, Mapping) or acc.get("value") is None:
        return "n/a (no labelled series)"
    text = f"{acc['value']:.4f} ({acc.get('k')}/{acc.get('n')})"
    ci = acc.get("ci")
    if isinstance(ci, list) and len(ci) == 2 and None not in ci:
        text += f", 95% CI {100 * ci[0]:.1f}-{100 * ci[1]:.1f}%"
    return text


def _duration(seconds: float) -> str:
    minutes, s = divmod(int(round(seconds)), 60)
    hours, m = divmod(minutes, 60)
    return f"{hours} h {m:02d} min" if hours else (f"{m} min {s:02d} s" if m else f"{s} s")


def run_summary(
    workdir: str | Path, results: Mapping[str, Any], records: Iterable[Mapping[str, Any]] = ()
) -> str:
    """Lines: steps, final and best validation accuracy, test / external accuracy, wall time
    and throughput, then the run's files."""
    workdir = Path(workdir)
    t = results.get("train", {})
    val = [r for r in records if r.get("split") == "val" and r.get("accuracy") is not None]
    rows: list[tuple[str, str]] = [("steps", str(t.get("steps")))]
    if val or t.get("best_val_accuracy") is not None:
        parts = []
        if val:
            parts.append(f"final {val[-1]['accuracy']:.4f} (step {val[-1]['step']})")
        if t.get("best_val_accuracy") is not None:
            parts.append(f"best {t['best_val_accuracy']:.4f} (step {t.get('best_step')})")
        rows.append(("val accuracy", ", ".join(parts)))
    for split, entry in results.get("splits", {}).items():
        if split == "val":
            continue
        rows.append((f"{split} accuracy", _accuracy(entry.get("metrics", {}))))
    if t.get("best_step") is not None:
        rows.append(("evaluated", f"best checkpoint (step {t['best_step']})"))
    if t.get("wall_time_s") is not None:
        rows.append(("wall time", _duration(float(t["wall_time_s"]))))
    if t.get("images_per_s") is not None:
        rows.append(("throughput", f"{float(t['images_per_s']):.1f} training images/s"))
    files = [
        f"{wd.RESULTS_FILE} (per-series predictions, metrics)",
        f"{wd.METRICS_FILE} (curves)",
        f"{wd.CHECKPOINT_DIR}/",
        wd.CONFIG_FILE,
    ]
    rows.append(("files", f"{workdir}/: " + ", ".join(files)))
    if (workdir / TB_DIR).is_dir():
        rows.append(("tensorboard", f"tensorboard --logdir {workdir / TB_DIR}"))
    rows.append(("figures", f"phasejax figures {workdir}"))
    width = max(len(k) for k, _ in rows)
    return "\n".join([f"run finished: {workdir}"] + [f"  {k:<{width}}  {v}" for k, v in rows])
