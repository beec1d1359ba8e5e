import json
from pathlib import Path

import numpy as np
import pytest

from phasejax.data.cache import (
    CacheError,
    CacheSpec,
    assign_splits,
    content_digest,
    finalize,
    has_entry,
    init_cache,
    load_volume,
    read_manifest,
    read_spec,
    recorded_digest,
    resample_labels_to_cache,
    resample_to_cache,
    write_entry,
)


def _row(sid, **kw):
    row = dict(series_id=sid, patient_id="p1", split="train", site="internal", phase="PVP",
               num_slices=2, spacing_z=5.0, spacing_xy=1.0, z_lo=0, z_hi=2, source="x")  # fmt: skip
    row.update(kw)
    return row


def test_slab_average_along_z_and_inplane_size():
    # 10 slices at 1 mm, bright (100 HU) only at indices 4 and 5: each 5 mm slab averages its
    # five slices, so both slabs read 20 HU; a narrower slab would miss the bright slices.
    z = np.zeros(10, dtype=np.float32)
    z[4:6] = 100.0
    hu = np.broadcast_to(z[:, None, None], (10, 64, 64)).copy()
    out, pixel_mm = resample_to_cache(hu, (1.0, 0.5, 0.5), CacheSpec(spacing_z=5.0, size=32))
    assert out.dtype == np.int16 and out.shape == (2, 32, 32)
    assert pixel_mm == pytest.approx(1.0)  # 64 px * 0.5 mm / 32
    # The two 5 mm slabs are centred at 2 mm and 7 mm of the 0..9 mm range.
    assert out[0, 16, 16] == 20 and out[1, 16, 16] == 20
    # Finer input than the grid: linear interpolation between slices (2 mm -> 1 mm).
    ramp = np.broadcast_to(np.array([0.0, 10.0])[:, None, None], (2, 8, 8)).astype(np.float32)
    fine, _ = resample_to_cache(ramp, (2.0, 1.0, 1.0), CacheSpec(spacing_z=1.0, size=8))
    np.testing.assert_array_equal(fine[:, 4, 4], [0, 5, 10])


def test_non_square_fov_is_padded_with_air_and_clipped_to_ct_range():
    hu = np.full((1, 20, 40), 3000.0, dtype=np.float32)
    hu[0, :, :2] = 5000.0
    out, pixel_mm = resample_to_cache(hu, (1.0, 1.0, 1.0), CacheSpec(size=40))
    assert out.shape == (1, 40, 40) and pixel_mm == 1.0
    assert out[0, 0, 20] == -1000  # padding rows are air
    assert out[0, 20, 20] == 3000
    assert out.max() == 3071  # 5000 clipped to the int16 12-bit CT range


def test_labels_resample_nearest_keeps_label_values():
    lab = np.zeros((4, 16, 16), np.uint8)
    lab[:, 4:12, 4:12] = 7
    out = resample_labels_to_cache(lab, (2.0, 1.0, 1.0), CacheSpec(spacing_z=2.0, size=8))
    assert set(np.unique(out)) == {0, 7}
    assert out[0, 4, 4] == 7 and out[0, 0, 0] == 0


def test_entries_manifest_and_resume_markers(tmp_path):
    root = init_cache(tmp_path / "c", CacheSpec(size=8))
    vol = np.arange(2 * 8 * 8, dtype=np.int16).reshape(2, 8, 8)
    assert not has_entry(root, "s2")
    write_entry(root, _row("s2", kvp="100"), vol)
    write_entry(root, _row("s1"), vol + 1)
    assert has_entry(root, "s2")
    finalize(root)
    rows = read_manifest(root)
    assert [r["series_id"] for r in rows] == ["s1", "s2"]
    assert rows[1]["kvp"] == "100" and rows[0]["kvp"] == ""
    np.testing.assert_array_equal(load_volume(root, "s2"), vol)
    with pytest.raises(CacheError, match="another grid"):
        init_cache(root, CacheSpec(size=16))
    with pytest.raises(CacheError, match="lacks"):
        write_entry(root, {"series_id": "s3"}, vol)


def test_patient_level_splits_are_stable_and_disjoint():
    pids = [f"p{i:03d}" for i in range(200)]
    a = assign_splits(pids, seed=3)
    assert assign_splits(reversed(pids), seed=3) == a
    counts = {s: sum(v == s for v in a.values()) for s in ("train", "val", "test")}
    assert counts == {"train": 160, "val": 20, "test": 20}
    b = assign_splits(pids, seed=4)
    assert a != b
    # Adding a patient moves nobody else.
    c = assign_splits([*pids, "p999"], seed=3)
    assert sum(c[p] != a[p] for p in pids) <= 2


def test_a_truncated_volume_is_not_an_entry(tmp_path):
    root = init_cache(tmp_path / "c", CacheSpec(size=8))
    vol = np.arange(3 * 8 * 8, dtype=np.int16).reshape(3, 8, 8)
    write_entry(root, _row("s1"), vol)
    npy = root / "volumes" / "s1.npy"
    row = json.loads((root / "volumes" / "s1.json").read_text())
    assert row["npy_bytes"] == npy.stat().st_size == 128 + vol.nbytes
    assert has_entry(root, "s1")
    finalize(root)
    assert "npy_bytes" not in read_manifest(root)[0]  # bookkeeping, not a manifest column
    data = npy.read_bytes()
    npy.write_bytes(data[:-100])  # a copy cut short: the header still parses
    assert not has_entry(root, "s1")
    # Entries written before sizes were recorded are checked against the .npy header.
    del row["npy_bytes"]
    (root / "volumes" / "s1.json").write_text(json.dumps(row))
    assert not has_entry(root, "s1")
    npy.write_bytes(data)
    assert has_entry(root, "s1")


def _digest_cache(root, vol, mask, phase="PVP"):
    init_cache(root, CacheSpec(size=8))
    write_entry(root, _row("s1", phase=phase), vol, mask)
    write_entry(root, _row("s2"), vol[::-1].copy())
    finalize(root)
    return recorded_digest(root)


def test_content_digest_tells_identical_caches_from_caches_one_voxel_apart(tmp_path):
    vol = np.arange(3 * 8 * 8, dtype=np.int16).reshape(3, 8, 8)
    mask = (vol % 3).astype(np.uint8)
    same = _digest_cache(tmp_path / "a", vol, mask)
    assert len(same) == 64 and same == _digest_cache(tmp_path / "b", vol, mask)
    assert "content_sha256" not in read_manifest(tmp_path / "a")[0]  # bookkeeping only
    one_hu = vol.copy()
    one_hu[1, 4, 4] += 1
    assert _digest_cache(tmp_path / "c", one_hu, mask) != same
    one_label = mask.copy()
    one_label[0, 0, 0] = 7
    assert _digest_cache(tmp_path / "d", vol, one_label) != same
    assert _digest_cache(tmp_path / "e", vol, mask, phase="DP") != same  # a relabelled series
    # Caches written before entries recorded their hash: computed from the files, the same.
    for p in (tmp_path / "a" / "volumes").glob("*.json"):
        row = json.loads(p.read_text())
        del row["content_sha256"]
        p.write_text(json.dumps(row))
    assert content_digest(tmp_path / "a") == same
    # Reopening a cache to add entries drops the digest until the next finalize.
    init_cache(tmp_path / "a", CacheSpec(size=8))
    assert recorded_digest(tmp_path / "a") is None


def test_unreadable_cache_json_is_a_cache_error(tmp_path, monkeypatch):
    root = init_cache(tmp_path / "c", CacheSpec(size=8))
    assert read_spec(root) == CacheSpec(size=8)
    (root / "cache.json").write_text("{not json")
    with pytest.raises(CacheError, match="cache.json: not valid JSON"):
        read_spec(root)
    real = Path.read_text

    def denied(self, *a, **kw):
        if self.name == "cache.json":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *a, **kw)

    monkeypatch.setattr(Path, "read_text", denied)
    with pytest.raises(CacheError, match=r"cache.json: cannot read \(PermissionError"):
        read_spec(root)
    with pytest.raises(CacheError, match="cannot read"):
        init_cache(root, CacheSpec(size=8))
