"""Atomic file writes: a reader, or a resumed run, sees the old file or the new one, never
a part of one.

Everything phasejax writes that something else later trusts (results.json, the cache's
volumes and manifest, cohort progress markers, reports, saliency files) goes through
here. The data go to a temporary file beside the target, which then replaces it with
`os.replace`: a rename is atomic only within one file system, hence the same folder.
The temporary name holds the host, the process id and a random part, so processes
writing the same file (test workers, hosts sharing a disk) never write into each other's
temporary file, and it starts with a dot, so folder listings and globs such as "*.npy" pass over it. A write
that fails removes its temporary file and leaves the target as it was.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np

# Host and process: shards of one sweep on a shared file system may have equal pids.
_UNIQUE = f"{socket.gethostname()}.{os.getpid()}"


@contextmanager
def replacing(path: str | os.PathLike[str], *, suffix: str = "") -> Iterator[Path]:
    """A temporary path to write; on leaving the block without an error it replaces `path`.

    `suffix` ends the temporary name, for writers that insist on an extension (numpy's
    savez appends ".npz" to a name without it). The target's folder is created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{_UNIQUE}.{uuid.uuid4().hex[:8]}.tmp{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def open_atomic(path: str | os.PathLike[str], mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """`open(path, mode, **kwargs)` of a temporary file that replaces `path` once closed."""
    with replacing(path) as tmp, open(tmp, mode, **kwargs) as f:
        yield f


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    with replacing(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    with replacing(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_json(
    path: str | os.PathLike[str],
    obj: Any,
    *,
    indent: int | None = 2,
    sort_keys: bool = False,
    allow_nan: bool = False,
) -> Path:
    """JSON text and a final newline; NaN and infinities refused by default (not JSON)."""
    text = json.dumps(obj, indent=indent, sort_keys=sort_keys, allow_nan=allow_nan)
    return write_text(path, text + "\n")


def save_npy(path: str | os.PathLike[str], array: np.ndarray) -> Path:
    with open_atomic(path, "wb") as f:
        np.save(f, array)
    return Path(path)


def savez_compressed(path: str | os.PathLike[str], **arrays: np.ndarray) -> Path:
    with replacing(path, suffix=".npz") as tmp:
        np.savez_compressed(tmp, **arrays)
    return Path(path)
