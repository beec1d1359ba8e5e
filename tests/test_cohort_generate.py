"""Cohort generation: tiny cohort in both formats, determinism, resume, sites, labels.

Two tiny cohorts are generated once per module (DICOM at a 128 matrix + cache from
those pixels; and a cache rendered directly), both on a 64 px cache grid to stay small.
Cache-vs-DICOM tolerance (stated in phasejax.cohort.generate): same ids, labels,
splits and slice counts; organ label volumes agree on >= 92 % of voxels (liver Dice >=
0.9; at 512 -> 256 px it is ~98 %); organ median HU inside the eroded masks (as
`phasejax cohort validate` measures) within 3 HU for the liver, 6 HU for the spleen (its
arterial-phase arciform pattern is sampled differently) and 8 HU for the aorta (a 3-4 px
vessel at 64 px).
"""

from __future__ import annotations

import csv
import json
import shutil
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pydicom
import pytest

from phasejax import cli
from phasejax.cohort import generate as G
from phasejax.cohort.exam import NEIGHBOUR, given_label, plan_exam
from phasejax.cohort.kinetics import phase_of
from phasejax.cohort.sites import EXTERNAL_SITES, SITES
from phasejax.cohort.structures import Label
from phasejax.cohort.validate import structure_medians
from phasejax.config import CohortConfig, Config, DataConfig
from phasejax.data import cache as cache_mod
from phasejax.data.cache import CacheSpec
from phasejax.data.series import make_series_id
from phasejax.phases import Phase

SPEC = CacheSpec(spacing_z=5.0, size=64)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def tiny_both(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cohort") / "both"
    G.generate("tiny", out, fmt="both", cache_spec=SPEC, progress=False)
    return out


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cohort") / "cache"
    argv = ["cohort", "generate", "--size", "tiny", "--out", str(out), "--format", "cache"]
    argv += ["--cache-size", "64", "--no-progress"]
    assert cli.main(argv) == 0
    return out


def test_tiny_layout_counts_and_patient_level_splits(tiny_both: Path) -> None:
    rows = read_csv(tiny_both / "labels.csv")
    info = json.loads((tiny_both / "cohort.json").read_text())
    assert info["complete"] and info["num_series"] == len(rows)
    assert [r["series_id"] for r in rows] == sorted(r["series_id"] for r in rows)
    assert len({r["series_id"] for r in rows}) == len(rows)
    patients = defaultdict(set)
    for r in rows:
        patients[r["patient_id"]].add(r["split"])
    assert all(len(s) == 1 for s in patients.values())  # a patient never spans splits
    split_of = {p: next(iter(s)) for p, s in patients.items()}
    internal = Counter(s for p, s in split_of.items() if p.startswith("INT-"))
    assert internal == {"train": 4, "val": 1, "test": 1}
    ext = {p for p in split_of if not p.startswith("INT-")}
    assert len(ext) == len(EXTERNAL_SITES) == 5
    assert {split_of[p] for p in ext} == {"external"}
    # Every exam: one arterial, one portal venous, one delayed series (+ optional NC).
    by_patient = defaultdict(list)
    for r in rows:
        by_patient[r["patient_id"]].append(r["protocol_phase"])
    for prot in by_patient.values():
        assert sorted(p for p in prot if p != "nc") == ["arterial", "delayed", "portal"]
    # Every series has its DICOM folder and organ volume; the cache holds every series.
    for r in rows:
        assert list((tiny_both / "dicom" / r["path"]).glob("IM*.dcm"))
        organ = np.load(tiny_both / r["organ_path"])
        assert organ["labels"].shape[0] == int(r["num_slices"])
        assert "liver" in list(organ["label_names"])
    manifest = cache_mod.read_manifest(tiny_both / "cache")
    assert [m["series_id"] for m in manifest] == [r["series_id"] for r in rows]
    assert not list(tiny_both.rglob("*.tmp"))


def test_labels_are_the_physiological_rule_not_the_protocol(tiny_both: Path) -> None:
    rows = read_csv(tiny_both / "labels.csv")
    for r in rows:
        site, idx = SITES[r["site"]], int(r["patient_id"].rsplit("-", 1)[1])
        plan = plan_exam(site, idx, cohort_seed=0, namespace="tiny", min_slice_thickness_mm=5.0)
        s = next(s for s in plan.series if s.series_id == r["series_id"])
        assert r["true_phase"] == str(phase_of(plan.patient, s.t)) == r["phase"]  # no noise
        assert float(r["seconds"]) == pytest.approx(s.seconds)
    assert {r["phase"] for r in rows if r["protocol_phase"] == "nc"} <= {"NC"}
    # A delayed scan that shows neither excretion nor equilibrium yet is read as PVP.
    delayed = [r["phase"] for r in rows if r["protocol_phase"] == "delayed"]
    assert set(delayed) <= {"PVP", "DP"} and delayed.count("DP") > len(delayed) / 2


def test_dicom_loader_finds_every_series_with_the_same_ids_geometry_and_hu(tiny_both: Path) -> None:
    from phasejax.data.dicom import load_dicom_folder

    rows = {r["series_id"]: r for r in read_csv(tiny_both / "labels.csv")}
    series, skipped = load_dicom_folder(tiny_both / "dicom")
    assert skipped == []
    assert sorted(s.series_id for s in series) == sorted(rows)
    for s in series:
        r = rows[s.series_id]
        organ = np.load(tiny_both / r["organ_path"])
        assert s.hu.shape == organ["labels"].shape
        assert s.ordering == "normal" and not s.problems
        assert s.spacing[0] == pytest.approx(float(r["slice_thickness"]))
        assert s.spacing[1] == pytest.approx(float(r["pixel_spacing"]), abs=1e-4)
        np.testing.assert_allclose(s.origin, organ["positions"][0], atol=1e-4)
        assert s.acquisition == r["acquisition"] and s.patient_id == r["patient_id"]
        # The cache of a "both" cohort is exactly the DICOM pixels, resampled.
        vol, _ = cache_mod.resample_to_cache(s.hu, s.spacing, SPEC)
        np.testing.assert_array_equal(vol, cache_mod.load_volume(tiny_both / "cache", s.series_id))
    # Index 0 is the most inferior slice: the kidneys sit below the liver dome.
    lab = np.load(tiny_both / next(iter(rows.values()))["organ_path"])["labels"]
    liver_z = np.nonzero((lab == Label.LIVER).any(axis=(1, 2)))[0]
    kidney_z = np.nonzero((lab == Label.KIDNEY_CORTEX).any(axis=(1, 2)))[0]
    assert kidney_z.min() < liver_z.max()


def test_shared_uid_site_exports_two_phases_under_one_series_uid(tiny_both: Path) -> None:
    rows = [r for r in read_csv(tiny_both / "labels.csv") if r["site"] == "EXT-E"]
    shared = [r for r in rows if r["acquisition"]]
    assert sorted(r["protocol_phase"] for r in shared) == ["arterial", "portal"]
    a, b = shared
    assert a["series_uid"] == b["series_uid"] and a["path"] == b["path"]
    assert a["acquisition"] != b["acquisition"]
    for r in shared:
        assert r["series_id"] == make_series_id(r["series_uid"], r["acquisition"])
    files = sorted((tiny_both / "dicom" / a["path"]).glob("IM*.dcm"))
    dss = [pydicom.dcmread(p, stop_before_pixels=True) for p in files]
    n = int(a["num_slices"])
    assert len(files) == 2 * n
    assert Counter(str(d.AcquisitionNumber) for d in dss) == {
        a["acquisition"]: n,
        b["acquisition"]: n,
    }
    assert sorted(d.InstanceNumber for d in dss) == list(range(1, 2 * n + 1))


def _tm_seconds(tm: str) -> float:
    return int(tm[:2]) * 3600 + int(tm[2:4]) * 60 + float(tm[4:])


def test_site_header_habits(tiny_both: Path) -> None:
    rows = read_csv(tiny_both / "labels.csv")
    seen = set()
    for r in rows:
        files = sorted((tiny_both / "dicom" / r["path"]).glob("IM*.dcm"))
        dss = (pydicom.dcmread(p, stop_before_pixels=True) for p in files)
        ds = next(
            d for d in dss if not r["acquisition"] or str(d.AcquisitionNumber) == r["acquisition"]
        )
        site = SITES[r["site"]]
        v = site.vendor
        seen.add(r["site"])
        assert ds.Manufacturer == v.manufacturer
        assert float(ds.RescaleIntercept) == v.encoding.rescale_intercept
        assert ds.PixelRepresentation == int(v.encoding.signed)
        assert ds.BitsStored == v.encoding.bits_stored
        assert ds.SeriesDescription == r["series_description"]
        assert float(ds.KVP) == float(r["kvp"])
        assert str(ds.PatientName).startswith("SYNTH^") and ds.PatientBirthDate == ""
        assert ("AcquisitionTime" in ds) == v.write_acquisition_time
        contrast = r["protocol_phase"] != "nc"
        if contrast:
            assert ds.ContrastBolusAgent == v.contrast_agent
            # seconds after injection = scan time - ContrastBolusStartTime, to the centisecond
            t_scan = _tm_seconds(ds.AcquisitionTime if "AcquisitionTime" in ds else ds.ContentTime)
            assert t_scan - _tm_seconds(ds.ContrastBolusStartTime) == pytest.approx(
                float(r["seconds"]), abs=0.011
            )
    assert seen == set(SITES)
    assert "AcquisitionTime" not in pydicom.dcmread(
        next((tiny_both / "dicom").glob("EXT-C-*/*/*/IM00001.dcm"))
    )


def test_cache_format_matches_the_dicom_path(tiny_both: Path, tiny_cache: Path) -> None:
    a = {r["series_id"]: r for r in cache_mod.read_manifest(tiny_both / "cache")}
    b = {r["series_id"]: r for r in cache_mod.read_manifest(tiny_cache / "cache")}
    assert sorted(a) == sorted(b)
    assert read_csv(tiny_cache / "labels.csv")[0]["path"] == ""  # no DICOM written
    for sid in a:
        for key in (
            "phase",
            "true_phase",
            "split",
            "site",
            "patient_id",
            "num_slices",
            "seconds",
            "kvp",
        ):
            assert a[sid][key] == b[sid][key], (sid, key)
        assert abs(int(a[sid]["z_lo"]) - int(b[sid]["z_lo"])) <= 1
        assert abs(int(a[sid]["z_hi"]) - int(b[sid]["z_hi"])) <= 1
        assert float(a[sid]["spacing_xy"]) == pytest.approx(float(b[sid]["spacing_xy"]), rel=1e-4)
        va = cache_mod.load_volume(tiny_both / "cache", sid).astype(np.float32)
        vb = cache_mod.load_volume(tiny_cache / "cache", sid).astype(np.float32)
        ma, mb = (
            cache_mod.load_mask(tiny_both / "cache", sid),
            cache_mod.load_mask(tiny_cache / "cache", sid),
        )
        assert va.shape == vb.shape
        # Nearest-neighbour resampling vs direct sampling: boundaries shift by <= half a
        # DICOM pixel, which at 5.5 mm cache pixels is a few % of all voxels.
        assert np.mean(ma == mb) >= 0.92
        la, lb = ma == Label.LIVER, mb == Label.LIVER
        assert 2 * np.sum(la & lb) / (la.sum() + lb.sum()) >= 0.9  # liver Dice
        # Organ HU as validation measures it (median inside the in-plane-eroded mask).
        ha, hb = structure_medians(va, ma), structure_medians(vb, mb)
        for name, tol in (("liver", 3.0), ("spleen", 6.0), ("aorta", 8.0)):
            assert abs(ha[name] - hb[name]) <= tol, (sid, name, ha[name], hb[name])


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def test_same_seed_same_bytes_whatever_the_worker_count(tiny_cache: Path, tmp_path: Path) -> None:
    G.generate("tiny", tmp_path / "again", fmt="cache", cache_spec=SPEC, workers=2, progress=False)
    first, again = _tree_bytes(tiny_cache), _tree_bytes(tmp_path / "again")
    assert sorted(first) == sorted(again)
    assert [k for k in first if first[k] != again[k]] == []


def test_a_preset_of_ones_own_reaches_spawned_workers(tmp_path: Path) -> None:
    # Workers are spawned processes that know only the built-in presets by name; a
    # caller's own Preset used to fail there ("unknown cohort preset") once workers > 1.
    own = G.Preset(name="own", internal=3, internal_test=1, internal_val=1, external_per_site=0)
    assert own.name not in G.PRESETS
    for workers in (1, 2):
        G.generate(
            own, tmp_path / f"w{workers}", fmt="cache", cache_spec=SPEC, workers=workers,
            progress=False,
        )  # fmt: skip
    one, two = _tree_bytes(tmp_path / "w1"), _tree_bytes(tmp_path / "w2")
    rows = list(csv.DictReader((tmp_path / "w2" / "labels.csv").open()))
    splits = {r["patient_id"]: r["split"] for r in rows}
    assert sorted(Counter(splits.values()).items()) == [("test", 1), ("train", 1), ("val", 1)]
    assert sorted(one) == sorted(two)
    assert [k for k in one if one[k] != two[k]] == []


def test_dicom_bytes_are_reproducible(tiny_both: Path, tmp_path: Path) -> None:
    job = next(
        j
        for j in G._jobs(tmp_path, G.get_preset("tiny"), 0, "dicom", SPEC, 0.0)
        if j.site == "EXT-E"
    )
    (tmp_path / ".progress").mkdir()
    rows = G.run_exam(job)
    assert rows
    for r in rows:
        for p in sorted((tmp_path / "dicom" / r["path"]).glob("IM*.dcm")):
            assert p.read_bytes() == (tiny_both / "dicom" / r["path"] / p.name).read_bytes()
        assert (tmp_path / r["organ_path"]).read_bytes() == (
            tiny_both / r["organ_path"]
        ).read_bytes()


def test_different_seeds_give_different_patients_and_uids() -> None:
    site = SITES["INT"]
    p0, p0b, p1 = (plan_exam(site, 0, cohort_seed=s) for s in (0, 0, 1))
    assert p0.patient == p0b.patient and p0.series == p0b.series
    assert p0.patient != p1.patient
    assert p0.patient.weight_kg != p1.patient.weight_kg
    assert {s.series_uid for s in p0.series}.isdisjoint(s.series_uid for s in p1.series)


def test_resume_after_interruption_redoes_only_missing_series(
    tiny_cache: Path, tmp_path: Path
) -> None:
    work = tmp_path / "cohort"
    shutil.copytree(tiny_cache, work)
    original = _tree_bytes(work)
    ids = sorted(p.stem for p in (work / "cache" / "volumes").glob("*.json"))
    # As a kill in mid-run leaves it: two series without their completion record, one
    # without its progress marker, no manifest / labels, cohort.json not complete.
    for sid in ids[:2]:
        (work / "cache" / "volumes" / f"{sid}.json").unlink()
    (work / ".progress" / f"{ids[2]}.json").unlink()
    (work / "cache" / "manifest.csv").unlink()
    (work / "labels.csv").unlink()
    info = json.loads((work / "cohort.json").read_text())
    (work / "cohort.json").write_text(json.dumps({**info, "complete": False}))
    assert not G.is_complete(work)
    untouched = work / "cache" / "volumes" / f"{ids[5]}.npy"
    mtime = untouched.stat().st_mtime_ns
    G.generate("tiny", work, fmt="cache", cache_spec=SPEC, progress=False)
    assert G.is_complete(work)
    assert _tree_bytes(work) == original
    assert untouched.stat().st_mtime_ns == mtime  # finished series are not redone


def test_refuses_a_different_cohort_in_the_same_directory(tiny_cache: Path) -> None:
    with pytest.raises(G.CohortError, match="seed"):
        G.generate("tiny", tiny_cache, seed=1, fmt="cache", cache_spec=SPEC, progress=False)
    with pytest.raises(G.CohortError, match="cache_size"):
        G.generate("tiny", tiny_cache, fmt="cache", cache_spec=CacheSpec(size=32), progress=False)
    with pytest.raises(ValueError, match="preset"):
        G.generate("huge", tiny_cache / "x", progress=False)


def test_label_noise_rate_neighbours_and_nesting() -> None:
    phases = [Phase.EAP, Phase.LAP, Phase.PVP, Phase.DP] * 5000
    keys = [f"k{i}" for i in range(len(phases))]
    given = [
        given_label(p, label_noise=0.2, cohort_seed=0, series_key=k) for p, k in zip(phases, keys)
    ]
    rate = np.mean([f for _, f in given])
    assert abs(rate - 0.2) < 4 * np.sqrt(0.2 * 0.8 / len(phases))  # binomial, 4 sigma
    for p, (g, f) in zip(phases, given):
        assert g == (NEIGHBOUR[p] if f else p)
    lower = [
        given_label(p, label_noise=0.1, cohort_seed=0, series_key=k)[1]
        for p, k in zip(phases, keys)
    ]
    assert all(f_hi for f_lo, (_, f_hi) in zip(lower, given) if f_lo)  # a superset flips at 0.2
    assert given_label(Phase.NC, label_noise=1.0, cohort_seed=0, series_key="x") == (
        Phase.NC,
        False,
    )
    assert not any(
        given_label(p, label_noise=0.0, cohort_seed=0, series_key=k)[1]
        for p, k in zip(phases[:200], keys)
    )
    with pytest.raises(ValueError, match="label_noise"):
        given_label(Phase.EAP, label_noise=1.5, cohort_seed=0, series_key="x")


def test_label_noise_changes_labels_only() -> None:
    site = SITES["EXT-A"]
    clean = [plan_exam(site, i, cohort_seed=0) for i in range(12)]
    noisy = [plan_exam(site, i, cohort_seed=0, label_noise=0.5) for i in range(12)]
    flips = 0
    for c, n in zip(clean, noisy):
        assert c.patient == n.patient
        for sc, sn in zip(c.series, n.series):
            assert (sc.t, sc.noise_seed, sc.series_id, sc.true_phase) == (
                sn.t,
                sn.noise_seed,
                sn.series_id,
                sn.true_phase,
            )
            assert sn.label_flipped == (sn.phase != sn.true_phase)
            flips += sn.label_flipped
    assert flips > 0


def test_sites_differ_in_arterial_timing() -> None:
    def arterial_labels(name: str, n: int = 20) -> Counter:
        return Counter(
            str(s.true_phase)
            for i in range(n)
            for s in plan_exam(SITES[name], i, cohort_seed=0).series
            if s.protocol_phase == "arterial"
        )

    early, late = arterial_labels("EXT-E"), arterial_labels("EXT-D")
    assert early.most_common(1)[0][0] == "EAP"  # fixed 25 s: early arterial
    assert late.most_common(1)[0][0] == "LAP"  # tracking + 15 s: late arterial


def test_paper_preset_mirrors_the_paper() -> None:
    p = G.get_preset("paper")
    exams = G.exam_list(p)
    assert sum(1 for s, _ in exams if s == "INT") == 1175
    assert Counter(s for s, _ in exams if s != "INT") == {s: 43 for s in EXTERNAL_SITES}
    assert sum(1 for s, _ in exams if s != "INT") == 215
    assert Counter(G.internal_splits(p, seed=0).values())["test"] == 96
    quick = G.get_preset("quick")
    assert quick.num_exams == 150 + 5 * 15
    medium = G.get_preset("medium")
    assert Counter(G.internal_splits(medium, seed=0).values()) == {"train": 315, "test": 90,
                                                                   "val": 45}  # fmt: skip


def test_every_cohort_size_of_the_config_is_a_generator_preset() -> None:
    import typing

    from phasejax.commands.cohort import SIZES
    from phasejax.config import CohortSize

    assert SIZES == typing.get_args(CohortSize) == tuple(G.PRESETS)


def test_ensure_cohort_cache_generates_once_then_reuses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PHASEJAX_HOME", str(tmp_path / "home"))
    cfg, spec = CohortConfig(preset="tiny", seed=0, label_noise=0.1), CacheSpec(size=32)
    from phasejax.cohort import ensure_cohort_cache

    path = ensure_cohort_cache(cfg, spec)
    assert path.parent.parent == tmp_path / "home" / "cohorts"
    assert path.parent.name == f"cohort-tiny-v{G.COHORT_VERSION}-seed0-noise0.1-dpexcretion-z5-px32"
    assert json.loads((path / "cache.json").read_text())["cohort_version"] == G.COHORT_VERSION
    rows = cache_mod.read_manifest(path)
    assert len(rows) == len(read_csv(path.parent / "labels.csv")) > 30
    assert cache_mod.read_spec(path) == spec

    def boom(*a: object, **k: object) -> None:
        raise AssertionError("a complete cohort must be reused, not regenerated")

    monkeypatch.setattr(G, "generate", boom)
    assert ensure_cohort_cache(cfg, spec) == path
    # resolve_cache: where training data comes from. No cache given: the cohort's, on the
    # config's grid; a given cache wins over data.cache_dir; a folder without a manifest
    # is refused by name.
    from phasejax.cohort import resolve_cache

    run_cfg = Config(cohort=cfg, data=DataConfig(cache_size=32))
    assert resolve_cache(run_cfg) == path
    assert resolve_cache(run_cfg.override({"data.cache_dir": str(tmp_path)}), path) == path
    with pytest.raises(FileNotFoundError, match="is not a prepared cache"):
        resolve_cache(run_cfg, tmp_path)

    # A generator change (version bump) must not reuse the old cohort: new folder, and the
    # old one no longer counts as complete.
    monkeypatch.setattr(G, "COHORT_VERSION", G.COHORT_VERSION + 1)
    assert G.cohort_dir_name(cfg, spec) != path.parent.name
    assert not G.is_complete(path.parent)
    assert not G._cache_current(path)


def test_direct_cache_render_noise_follows_the_kernel() -> None:
    # Downsampling 0.75 -> 1.5 mm with the cache's anti-aliasing filter: a soft kernel's
    # coarse grain survives it far better than a sharp kernel's fine grain. The factor is
    # measured through the renderer's own noise filter (the white-noise fallback would
    # give 0.5 for every kernel).
    soft = G._inplane_noise_factor("soft", 0.75, 1.5)
    sharp = G._inplane_noise_factor("sharp", 0.75, 1.5)
    assert 0.3 < sharp < 0.5 < soft < 1.0
    assert soft - sharp > 0.2
    assert G._inplane_noise_factor("soft", 0.75, 0.75) == 1.0
    # Along z, 1 mm slices averaged into 5 mm cache slices: ~5 slices each.
    counts = G._slab_counts(100, 1.0, 5.0)
    assert counts.min() >= 5 and counts.max() <= 6


def _collecting_hu(patient, t: float) -> float:
    from phasejax.cohort.kinetics import compartment_hu

    return compartment_hu(patient, t, 120.0)[Label.KIDNEY_COLLECTING]


def test_delayed_rule_relabels_equilibrium_series_and_changes_nothing_else() -> None:
    # The rule reads the same images: same times, noise, UIDs; only series that the
    # equilibrium rule calls DP without excretion (collecting system below urine 8 + 100 HU)
    # become PVP under the excretion rule (the default), never the other way round.
    site = SITES["INT"]
    changed = 0
    for i in range(40):
        a = plan_exam(
            site, i, cohort_seed=0, namespace="t", delayed_rule="excretion_or_equilibrium"
        )
        b = plan_exam(site, i, cohort_seed=0, namespace="t")
        assert len(a.series) == len(b.series)
        for sa, sb in zip(a.series, b.series):
            assert (sa.t, sa.noise_seed, sa.series_uid) == (sb.t, sb.noise_seed, sb.series_uid)
            if sb.phase == Phase.DP:
                assert _collecting_hu(b.patient, sb.t) >= 108.0
            if sa.phase != sb.phase:
                assert (sa.phase, sb.phase) == (Phase.DP, Phase.PVP)
                assert _collecting_hu(a.patient, sa.t) < 108.0
                changed += 1
    assert changed >= 3


def test_cohort_folder_names_every_rule_but_the_one_older_folders_hold(
    tmp_path: Path,
) -> None:
    spec = CacheSpec(spacing_z=5.0, size=192)
    v = G.COHORT_VERSION
    # the default (excretion, since session 20) is named: an untagged folder holds the
    # labels of the rule that was the default before, and must not be reused for these
    default = CohortConfig(preset="medium")
    assert default.delayed_rule == "excretion"
    assert (
        G.cohort_dir_name(default, spec) == f"cohort-medium-v{v}-seed0-noise0-dpexcretion-z5-px192"
    )
    equilibrium = CohortConfig(preset="medium", delayed_rule="excretion_or_equilibrium")
    assert G.cohort_dir_name(equilibrium, spec) == f"cohort-medium-v{v}-seed0-noise0-z5-px192"
    # A cohort.json written before the rule existed holds the then-default rule's labels
    # (excretion or equilibrium): the same cohort for that rule, another one for today's.
    info = G._cohort_info(G.get_preset("tiny"), 0, "cache", spec, 0.0, "excretion_or_equilibrium")
    old = {k: v for k, v in info.items() if k != "delayed_rule"}
    (tmp_path / "cohort.json").write_text(json.dumps(old))
    G._check_same_cohort(tmp_path, info)
    other = G._cohort_info(G.get_preset("tiny"), 0, "cache", spec, 0.0, "excretion")
    with pytest.raises(
        G.CohortError, match="delayed_rule: 'excretion_or_equilibrium' != 'excretion'"
    ):
        G._check_same_cohort(tmp_path, other)


def test_cohort_generate_passes_the_delayed_rule_on(monkeypatch, tmp_path: Path) -> None:
    seen = {}

    def fake_generate(size, out, **kw):
        seen.update(kw, size=size)
        return Path(out)

    monkeypatch.setattr(G, "generate", fake_generate)
    argv = ["cohort", "generate", "--size", "tiny", "--out", str(tmp_path)]
    assert cli.main([*argv, "--delayed-rule", "excretion_or_equilibrium"]) == 0
    assert (seen["size"], seen["delayed_rule"]) == ("tiny", "excretion_or_equilibrium")
    assert cli.main(argv) == 0
    assert seen["delayed_rule"] == "excretion"
    with pytest.raises(SystemExit):
        cli.main([*argv, "--delayed-rule", "washout"])


def test_a_disk_too_small_for_the_cache_is_refused_before_rendering(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    medium = G.get_preset("medium")
    # the cache scales with the pixels per slice and the slices per scan
    full = G.cache_bytes_estimate(medium, CacheSpec(size=192, spacing_z=5.0))
    assert G.cache_bytes_estimate(medium, CacheSpec(size=96, spacing_z=5.0)) == full // 4
    assert G.cache_bytes_estimate(medium, CacheSpec(size=192, spacing_z=2.5)) == full * 2
    assert 8e9 < full < 11e9  # the medium v8 cache measured 9.66 GB
    # one extra arterial series per training exam (the quick config's cohort): 11.40 GB measured
    artx1 = G.cache_bytes_estimate(medium, CacheSpec(size=192, spacing_z=5.0), extra_arterial=1)
    assert 11.0e9 < artx1 < 11.8e9
    assert G.cache_bytes_estimate(medium, CacheSpec(size=96), extra_arterial=1) == artx1 // 4

    tiny = G.get_preset("tiny")
    need = G.cache_bytes_estimate(tiny, CacheSpec(size=32))
    usage = shutil.disk_usage(tmp_path)

    def small_disk(path: object) -> object:
        return usage._replace(free=need // 2)

    monkeypatch.setattr(shutil, "disk_usage", small_disk)

    def boom(*a: object, **k: object) -> None:
        raise AssertionError("nothing may be rendered on a disk that cannot hold the cohort")

    monkeypatch.setattr(G, "run_exam", boom)
    with pytest.raises(G.CohortError, match=r"needs about .* GB more .* PHASEJAX_HOME"):
        G.generate(
            "tiny", tmp_path / "c", fmt="cache", cache_spec=CacheSpec(size=32), progress=False
        )
    # what is written already counts: a cache that is nearly complete needs only the rest
    vols = tmp_path / "c" / "cache" / "volumes"
    vols.mkdir(parents=True, exist_ok=True)
    (vols / "done.npy").write_bytes(b"\0" * (need - need // 4))
    G.check_free_space(tmp_path / "c" / "cache", tiny, CacheSpec(size=32))
    # extra arterial series count: a disk that holds the plain cohort but not its extras
    need_x = G.cache_bytes_estimate(tiny, CacheSpec(size=32), extra_arterial=1)
    assert need_x > need
    monkeypatch.setattr(
        shutil, "disk_usage", lambda path: usage._replace(free=(need + need_x) // 2)
    )
    with pytest.raises(G.CohortError, match=r"needs about"):
        G.generate(
            "tiny",
            tmp_path / "x",
            fmt="cache",
            cache_spec=CacheSpec(size=32),
            extra_arterial=1,
            progress=False,
        )


def test_extra_arterial_series_sit_at_the_portal_threshold_and_leave_the_exam_as_it_was() -> None:
    from phasejax.cohort.exam import EXTRA_ARTERIAL_PORTAL_HU, portal_vein_time
    from phasejax.cohort.kinetics import EAP_LAP_PORTAL_HU, structure_hu

    lo, hi = EXTRA_ARTERIAL_PORTAL_HU
    phases, portal = Counter(), []
    # EXT-E shares one UID between its arterial and portal series: an extra one must not.
    assert SITES["EXT-E"].vendor.shared_uid_phases == ("arterial", "portal")
    for site in (SITES["INT"], SITES["EXT-E"]):
        for i in range(16):
            plain = plan_exam(site, i, cohort_seed=0, namespace="t")
            more = plan_exam(site, i, cohort_seed=0, namespace="t", extra_arterial=2)
            n = len(plain.series)
            assert more.series[:n] == plain.series and len(more.series) == n + 2
            uids = {s.series_uid for s in plain.series}
            for s in more.series[n:]:
                assert s.protocol_phase == "arterial" and s.series_uid not in uids
                assert s.acquisition == "" and s.series_number > max(
                    p.series_number for p in plain.series
                )
                pv = float(structure_hu(more.patient, np.array([s.t]))[Label.PORTAL_VEIN][0])
                portal.append(pv)
                phases[s.phase] += 1
                if s.phase in (Phase.EAP, Phase.LAP):
                    assert (s.phase == Phase.LAP) == (pv >= EAP_LAP_PORTAL_HU)
            assert len({s.series_id for s in more.series}) == n + 2
    # Within the band (below it only where a patient's unenhanced portal vein is brighter
    # than its lower end), and both sides of the threshold well represented.
    assert lo - 1e-6 <= min(portal) and max(portal) <= hi + 1e-6
    assert np.mean(np.array(portal) < EAP_LAP_PORTAL_HU) == pytest.approx(0.5, abs=0.2)
    assert phases[Phase.EAP] >= 15 and phases[Phase.LAP] >= 10
    # The time at which the portal vein reaches a level is where its curve crosses it.
    p = plain.patient
    t = portal_vein_time(p, 90.0)
    before, at = structure_hu(p, np.array([t - 0.5, t]))[Label.PORTAL_VEIN]
    assert before < 90.0 and at == pytest.approx(90.0, abs=1e-6)


def test_extra_arterial_series_go_to_training_exams_only(tiny_cache: Path, tmp_path: Path) -> None:
    from phasejax.cohort.exam import replan_series

    out = tmp_path / "artx"
    argv = ["cohort", "generate", "--size", "tiny", "--out", str(out), "--format", "cache"]
    assert cli.main([*argv, "--cache-size", "64", "--no-progress", "--extra-arterial", "1"]) == 0
    plain = {r["series_id"]: r for r in read_csv(tiny_cache / "cache" / "manifest.csv")}
    more = {r["series_id"]: r for r in read_csv(out / "cache" / "manifest.csv")}
    extra = sorted(set(more) - set(plain))
    assert set(plain) <= set(more)
    train = {r["patient_id"] for r in plain.values() if r["split"] == "train"}
    assert sorted(more[s]["patient_id"] for s in extra) == sorted(train)
    assert {more[s]["protocol_phase"] for s in extra} == {"arterial"}
    # Every series of the cohort without extras is byte for byte the same.
    a, b = _tree_bytes(tiny_cache / "cache" / "volumes"), _tree_bytes(out / "cache" / "volumes")
    assert [k for k in a if a[k] != b[k]] == []
    # replan_series finds the extra series again (the experiments read structure HU that way).
    info = json.loads((out / "cohort.json").read_text())
    assert info["extra_arterial"] == 1
    plans: dict = {}
    for sid in extra:
        _, s = replan_series(more[sid], info, plans)
        assert s.phase.value == more[sid]["phase"]
    with pytest.raises(G.CohortError, match="extra_arterial: 1 != 0"):
        G.generate("tiny", out, fmt="cache", cache_spec=SPEC, progress=False)
    # A folder without the option is the cohort without extras.
    spec = CacheSpec(spacing_z=5.0, size=192)
    assert G.cohort_dir_name(CohortConfig(preset="medium", extra_arterial=1), spec).endswith(
        "-dpexcretion-artx1-z5-px192"
    )
    (tmp_path / "old").mkdir()
    old = {
        k: v
        for k, v in G._cohort_info(G.get_preset("tiny"), 0, "cache", SPEC, 0.0, "excretion").items()
        if k != "extra_arterial"
    }
    (tmp_path / "old" / "cohort.json").write_text(json.dumps(old))
    G._check_same_cohort(
        tmp_path / "old", G._cohort_info(G.get_preset("tiny"), 0, "cache", SPEC, 0.0, "excretion")
    )


def test_extra_training_exams_are_new_training_patients_and_change_no_other_exam(
    tiny_cache: Path, tmp_path: Path
) -> None:
    out = tmp_path / "trainx"
    argv = ["cohort", "generate", "--size", "tiny", "--out", str(out), "--format", "cache"]
    assert cli.main([*argv, "--cache-size", "64", "--no-progress", "--extra-train-exams", "2"]) == 0
    plain = {r["series_id"]: r for r in read_csv(tiny_cache / "cache" / "manifest.csv")}
    more = {r["series_id"]: r for r in read_csv(out / "cache" / "manifest.csv")}
    assert set(plain) <= set(more)
    assert all(more[s]["split"] == r["split"] for s, r in plain.items())
    extra = {(more[s]["patient_id"], more[s]["split"]) for s in set(more) - set(plain)}
    tiny = G.get_preset("tiny")
    assert extra == {
        (f"INT-{tiny.internal:04d}", "train"),
        (f"INT-{tiny.internal + 1:04d}", "train"),
    }
    a, b = _tree_bytes(tiny_cache / "cache" / "volumes"), _tree_bytes(out / "cache" / "volumes")
    assert [k for k in a if a[k] != b[k]] == []
    info = json.loads((out / "cohort.json").read_text())
    assert (info["extra_train_exams"], info["num_exams"]) == (2, tiny.num_exams + 2)
    with pytest.raises(G.CohortError, match="extra_train_exams: 2 != 0"):
        G.generate("tiny", out, fmt="cache", cache_spec=SPEC, progress=False)
    with pytest.raises(ValueError, match="extra_train_exams must be >= 0"):
        G.generate("tiny", tmp_path / "neg", extra_train_exams=-1, progress=False)
    spec = CacheSpec(spacing_z=5.0, size=192)
    cfg = CohortConfig(preset="medium", extra_train_exams=315)
    assert G.cohort_dir_name(cfg, spec).endswith("-dpexcretion-trainx315-z5-px192")


def test_num_train_exams_is_the_training_split_of_every_preset_and_seed() -> None:
    # the cache estimate counts extra arterial series by Preset.num_train_exams: it must be
    # what internal_splits assigns, with extra training patients too
    import dataclasses

    for name in ("tiny", "quick", "medium", "paper"):
        p = G.get_preset(name)
        for preset in (p, dataclasses.replace(p, extra_train=7)):
            for seed in (0, 5):
                splits = G.internal_splits(preset, seed).values()
                assert preset.num_train_exams == sum(s == "train" for s in splits)
