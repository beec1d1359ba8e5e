"""phasejax.atomic: the one place files are written atomically."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from phasejax import atomic


def test_writers_replace_the_target_and_leave_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "r.json"  # the folder is created
    atomic.write_json(target, {"b": 1, "a": [1.5]}, indent=1)
    assert target.read_text() == '{\n "b": 1,\n "a": [\n  1.5\n ]\n}\n'
    atomic.write_json(target, {"a": 2}, sort_keys=True, indent=None)
    assert json.loads(target.read_text()) == {"a": 2}
    with pytest.raises(ValueError, match="JSON compliant"):
        atomic.write_json(target, {"x": float("nan")})
    arr = np.arange(6, dtype=np.int16).reshape(2, 3)
    np.testing.assert_array_equal(np.load(atomic.save_npy(tmp_path / "v.npy", arr)), arr)
    npz = atomic.savez_compressed(tmp_path / "s.npz", a=arr)
    assert npz == tmp_path / "s.npz"
    with np.load(npz) as z:
        np.testing.assert_array_equal(z["a"], arr)
    with atomic.open_atomic(tmp_path / "t.csv", "w", newline="") as f:
        f.write("a,b\r\n")
    assert (tmp_path / "t.csv").read_bytes() == b"a,b\r\n"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["r.json", "s.npz", "sub", "t.csv",
                                                            "v.npy"]  # fmt: skip


def test_a_failed_write_keeps_the_old_file_and_removes_its_temporary(tmp_path: Path) -> None:
    target = atomic.write_text(tmp_path / "m.csv", "old\n")
    with pytest.raises(RuntimeError, match="disk full"), atomic.open_atomic(target, "w") as f:
        f.write("half of the new ")
        raise RuntimeError("disk full")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["m.csv"]
