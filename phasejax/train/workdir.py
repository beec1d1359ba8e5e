"""A run directory: config.json, env.json, metrics.jsonl, checkpoints/, results.json.

Only process 0 writes here (callers check `parallel.is_main_process()`); every file
is replaced atomically so an interrupted run never leaves a half-written JSON file.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from phasejax import atomic
from phasejax.atomic import write_json  # wd.write_json: the name the loop knows it by
from phasejax.config import REPO_ROOT, RESUMABLE_CHANGES, Config, config_differences

CONFIG_FILE = "config.json"
ENV_FILE = "env.json"
METRICS_FILE = "metrics.jsonl"
RESULTS_FILE = "results.json"
CHECKPOINT_DIR = "checkpoints"

PACKAGES = (
    "jax",
    "jaxlib",
    "flax",
    "optax",
    "orbax-checkpoint",
    "grain",
    "numpy",
    "scipy",
    "pydicom",
    "nibabel",
    "phasejax",
)


class WorkdirError(RuntimeError):
    pass


def check_or_write_config(workdir: Path, cfg: Config, *, write: bool = True) -> None:
    """Write config.json, or check that a restarted run has the same experiment config.

    A restart may change only the keys in RESUMABLE_CHANGES (config.json is then
    rewritten with the new values); any other difference raises WorkdirError naming
    the keys, since resuming would silently mix two experiments.
    """
    path = Path(workdir) / CONFIG_FILE
    new = cfg.to_dict()
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise WorkdirError(f"{path}: not valid JSON ({e}); remove it or use a new --out") from e
        diff = config_differences(old, new)
        blocking = {k: v for k, v in diff.items() if k not in RESUMABLE_CHANGES}
        if blocking:
            lines = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in blocking.items())
            raise WorkdirError(
                f"{path} belongs to a run with another config ({lines}); "
                f"use a new --out or the same settings"
            )
        if not diff:
            return
    if write:
        write_json(path, new)


def git_sha() -> str:
    """HEAD of the checkout phasejax runs from, '+dirty' when it has local changes."""
    try:
        sha = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def host_cpu() -> dict[str, Any]:
    """CPU model, core count and the vector extensions XLA:CPU compiles for on this host.

    XLA:CPU generates code for the host's instruction set, so the same training on a VM
    with AVX-512 and on one without can round differently and drift apart over thousands of
    steps: two hosts' runs are comparable only when this matches.
    """
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:  # Linux; elsewhere only platform.processor()
            for line in f:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
                if "model name" in fields and "flags" in fields:
                    break
    except OSError:
        pass
    model = fields.get("model name") or platform.processor() or "unknown"
    flags = set(fields.get("flags", "").split())
    isa = [f for f in ("avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_tile") if f in flags]
    # Cloud VMs report one "model name" (e.g. "AMD EPYC") for several generations with the
    # same flags above; family/model tell them apart (AMD 25/17 is Zen 4).
    family, number = fields.get("cpu family"), fields.get("model")
    family_model = f"{family}/{number}" if family and number else None
    return {"model": model, "family_model": family_model, "cores": os.cpu_count(), "isa": isa}


def environment_info() -> dict[str, Any]:
    """Package versions, git sha, devices and processes (no user or patient data)."""
    import jax

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    devices = jax.devices()
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": host_cpu(),
        "packages": versions,
        "git_sha": git_sha(),
        "backend": jax.default_backend(),
        "device_kind": devices[0].device_kind if devices else None,
        "device_count": jax.device_count(),
        "local_device_count": jax.local_device_count(),
        "process_count": jax.process_count(),
    }


class MetricsLog:
    """metrics.jsonl: one JSON object per line, each with a "step" and a "split"."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def append(self, record: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by a kill mid-write
        return out

    def truncate_after(self, step: int) -> None:
        """Drop records past `step` (written after the checkpoint a restart resumes
        from; they are written again as the run repeats those steps)."""
        if not self.path.exists():
            return
        keep = [r for r in self.read() if int(r.get("step", 0)) <= step]
        atomic.write_text(self.path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in keep))


def read_results(workdir: Path) -> dict[str, Any] | None:
    path = Path(workdir) / RESULTS_FILE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise WorkdirError(f"{path}: not valid JSON ({e}); remove it to recompute") from e
