"""`phasejax predict`: a tiny model trained here on the tiny synthetic cohort, then run on
its DICOM, on a folder of broken inputs and on the real CT folder.

The module fixture generates the "tiny" cohort as DICOM plus the training cache made
from exactly those DICOM pixels, trains the debug config for 2 steps on it (64 px,
ResNet "tiny" of width 8) and loads the best checkpoint back with
`phasejax.train.restore.load_run`. Accuracy is meaningless after 2 steps; the tests
check ids, probabilities, the two-step cascade, inputs identical to the training
cache, failure handling and the command's exit statuses.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from dicom_factory import CORONAL, ct_dataset, save, uid, write_series
from pydicom.uid import RLELossless

from phasejax.cli import main
from phasejax.cohort.anatomy_reference import call_from_anatomy, combine_with_network
from phasejax.config import load_config
from phasejax.data.cache import CacheSpec, load_volume
from phasejax.data.discover import discover, load_plan
from phasejax.data.prepare import cache_volume
from phasejax.infer import Classifier, load_classifier
from phasejax.predict.confidence import input_checks
from phasejax.predict.driver import PredictOptions, predict_paths
from phasejax.predict.inputs import PreparedSeries, model_grid, prepare_series, prepared_inputs
from phasejax.predict.report_io import read_report
from phasejax.predict.schema import (
    STATUS_FAILED,
    STATUS_OK,
    STATUS_SKIPPED,
    phase_agreement,
    reference_kvp,
    series_row,
)
from phasejax.train.restore import ModelDirError, load_run, load_trained

SPEC = CacheSpec(spacing_z=5.0, size=128)  # the debug config's cohort grid
# 16 = the training eval batch: the library tests reuse its compiled eval step.
QUIET = PredictOptions(progress=False, batch_size=16)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from phasejax.cohort.generate import generate

    out = tmp_path_factory.mktemp("cohort")
    return generate("tiny", out, fmt="both", cache_spec=SPEC, progress=False)


@pytest.fixture(scope="module")
def labels(cohort: Path) -> dict[str, dict[str, str]]:
    with open(cohort / "labels.csv", newline="") as f:
        return {r["series_id"]: r for r in csv.DictReader(f)}


def _train_tiny(cohort: Path, out: Path, seed: int = 0) -> Path:
    from phasejax.train.loop import train

    cfg = load_config(
        "debug",
        [
            f"data.cache_dir={cohort / 'cache'}",
            "data.image_size=64",
            "model.width=8",
            "train.batch_size=8",
            "train.steps=2",
            "train.warmup_steps=1",
            "train.eval_every=2",
            "train.checkpoint_every=2",
            "train.log_every=2",
            "train.eval_batch_size=16",
            f"train.seed={seed}",
        ],
    )
    train(cfg, out)
    return out


@pytest.fixture(scope="module")
def run_dir(cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _train_tiny(cohort, tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def trained(run_dir: Path):
    run = load_run(run_dir)
    return run.cfg, run.model, Classifier.for_model(run.model, batch_size=16)


@pytest.fixture(autouse=True)
def _no_persistent_compile_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    # The command enables the persistent XLA cache; tests stay hermetic without it.
    monkeypatch.setenv("PHASEJAX_COMPILATION_CACHE", "off")


def _series_dirs(cohort: Path, labels: dict, *series_ids: str) -> list[Path]:
    return [cohort / "dicom" / labels[s]["path"] for s in series_ids]


# --------------------------------------------------------------------------- tiny cohort


def test_one_row_per_series_with_ids_and_normalised_probabilities(
    cohort: Path, labels: dict, trained
) -> None:
    cfg, model, clf = trained
    report = predict_paths([cohort / "dicom"], cfg, model, options=QUIET, classifier=clf)
    rows = report.rows
    assert [r["status"] for r in rows] == [STATUS_OK] * len(labels) == [STATUS_OK] * 36
    assert sorted(r["series_id"] for r in rows) == sorted(labels)
    for r in rows:
        lab = labels[r["series_id"]]
        assert (r["patient_id"], r["acquisition"]) == (lab["patient_id"], lab["acquisition"])
        assert r["study_uid"] == lab["study_uid"]
        phases = ("EAP", "LAP", "PVP", "DP")
        probs = np.array([r[f"p_{c}"] for c in phases])
        net = np.array([r[f"network_p_{c}"] for c in phases])
        assert abs(probs.sum() - 1.0) < 1e-5 and abs(net.sum() - 1.0) < 1e-5
        assert r["predicted"] == phases[int(np.argmax(probs))]
        assert r["network_phase"] == phases[int(np.argmax(net))]
        assert r["top_prob"] == pytest.approx(probs.max(), abs=1e-6)
        # The call is the network's posterior times the anatomy's likelihood.
        kvp = reference_kvp({"KVP": r["kvp"]})
        anatomy = call_from_anatomy(
            r["aorta_hu"], r["kidney_cortex_hu"], r["kidney_medulla_hu"], kvp=kvp
        )
        assert anatomy.call == r["anatomy_phase"]
        np.testing.assert_allclose(probs, combine_with_network(net, phases, anatomy), atol=2e-6)
        assert r["num_slices"] == int(lab["num_slices"])
    # The two acquisitions that share one SeriesInstanceUID (site EXT-E) are two rows.
    shared = [s for s, lab in labels.items() if lab["acquisition"]]
    assert len(shared) >= 2 and {r["acquisition"] for r in rows if r["series_id"] in shared} >= {
        "1",
        "2",
    }
    assert report.exit_status == 0
    counts = report.counts()
    assert counts["classified"] == 36 and counts["failed"] == 0 and counts["skipped"] == 0
    assert sum(counts["per_phase"].values()) == 36
    # 2 training steps cannot make a confident network; a row is flagged high only where
    # the anatomy agrees with it and makes the call sure.
    assert max(max(r[f"network_p_{c}"] for c in phases) for r in rows) < 0.6
    high = [r for r in rows if r["confidence"] == "high"]
    assert 0 < len(high) < 36 and counts["low_confidence"] == 36 - len(high)
    assert all(r["top_prob"] >= 0.6 and r["anatomy_agrees"] == "yes" for r in high)
    disagree = [r for r in rows if r["anatomy_agrees"] == "no"]
    assert disagree and all("network_anatomy_disagree" in r["confidence_reasons"] for r in disagree)


def test_inputs_equal_the_training_cache_and_the_cascade_is_applied(
    cohort: Path, labels: dict, trained
) -> None:
    cfg, model, clf = trained
    spec, source = model_grid(cfg)
    assert spec == SPEC and source.endswith("cache.json")
    ids = ["s0c0a50187c33", "seaff846abd01"]  # EXT-E: two acquisitions of one UID
    plans = [p for p in discover(_series_dirs(cohort, labels, *ids)).plans if p.series_id in ids]
    assert sorted(p.series_id for p in plans) == sorted(ids)
    report = predict_paths(
        _series_dirs(cohort, labels, *ids), cfg, model, options=QUIET, classifier=clf
    )
    by_id = {r["series_id"]: r for r in report.rows}
    for plan in plans:
        series, bad = load_plan(plan)
        assert series is not None and bad == []
        # The cached volume predict builds is bit-identical to the one training read.
        cached = cache_volume(series, spec)
        np.testing.assert_array_equal(
            cached.volume, load_volume(cohort / "cache", plan.series_id, mmap=False)
        )
        prep = prepare_series(series, cfg.data, spec)
        assert prep.image.shape == (3, 64, 64, 1)
        out = model(prep.image[None])
        p1 = np.asarray(jax_softmax(out.heads["step1"]))[0]  # (AP, PVP, DP)
        p2 = np.asarray(jax_softmax(out.heads["step2"]))[0]  # (EAP, LAP)
        expected = [p1[0] * p2[0], p1[0] * p2[1], p1[1], p1[2]]
        row = by_id[plan.series_id]
        got = [row[f"network_p_{c}"] for c in ("EAP", "LAP", "PVP", "DP")]
        np.testing.assert_allclose(got, expected, atol=1e-5)
        np.testing.assert_allclose(got, np.exp(np.asarray(out.log_probs[0])), atol=1e-5)


def jax_softmax(x):
    import jax

    return jax.nn.softmax(x.astype("float32"), axis=-1)


def test_prepared_inputs_yields_each_readable_series_as_prepare_series_makes_it(
    cohort: Path, labels: dict, trained, tmp_path: Path
) -> None:
    cfg, _, _ = trained
    ids = ["s7a04951c904c", "sc0bf95f4997d"]
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.dcm").write_bytes(b"DICM" + b"\x00" * 64)  # no plan: skipped at discovery
    # A plan whose voxels cannot be decoded: a NIfTI cut in half after a valid header.
    nib.save(nib.Nifti1Image(np.zeros((32, 32, 20), np.int16), np.diag([1.0, 1.0, 5.0, 1.0])),
             bad / "cut.nii")  # fmt: skip
    data = (bad / "cut.nii").read_bytes()
    (bad / "cut.nii").write_bytes(data[: len(data) // 2])
    assert len(discover([bad]).plans) == 1
    got = list(prepared_inputs([*_series_dirs(cohort, labels, *ids), bad], cfg))
    assert sorted(p.series_id for p in got) == sorted(ids)
    for prep in got:
        plan = next(p for p in discover(_series_dirs(cohort, labels, prep.series_id)).plans)
        want = prepare_series(load_plan(plan)[0], cfg.data, SPEC)
        np.testing.assert_array_equal(prep.image, want.image)
        assert (prep.z_lo, prep.z_hi) == (want.z_lo, want.z_hi)


def test_padding_and_batch_composition_do_not_change_probabilities(
    cohort: Path, labels: dict, trained, run_dir: Path
) -> None:
    cfg, _, clf = trained
    plans = discover(_series_dirs(cohort, labels, "s7a04951c904c", "sc0bf95f4997d")).plans
    images = np.stack([prepare_series(load_plan(p)[0], cfg.data, SPEC).image for p in plans])
    together = clf.probabilities(images)
    alone = np.concatenate([clf.probabilities(images[i : i + 1]) for i in range(len(images))])
    np.testing.assert_allclose(together, alone, atol=1e-6)
    assert clf.batch_size == 16
    with pytest.raises(ValueError, match="17 images for a batch of 16"):
        clf.log_probs(np.zeros((17, *images.shape[1:]), np.float32))
    # infer.load_classifier: the run's best checkpoint behind the same batches
    run, loaded = load_classifier(run_dir, batch_size=16)
    assert (run.which, loaded.batch_size) == ("best", 16)
    np.testing.assert_array_equal(loaded.probabilities(images), together)


# --------------------------------------------------------------------------- bad inputs


def _bad_folder(root: Path, cohort: Path, labels: dict) -> tuple[Path, list[str], Path]:
    """Two good series, one with a truncated file, plus a non-DICOM file, a scout and a SEG."""
    good = ["s7a04951c904c", "sc0bf95f4997d"]
    for sid, src in zip(good, _series_dirs(cohort, labels, *good)):
        shutil.copytree(src, root / sid)
    victim = sorted((root / good[0]).iterdir())[10]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) - 500])
    (root / "notes.txt").write_text("reading list, not an image\n")
    scout = ct_dataset(
        np.full((32, 32), 1000),
        series_uid=uid("scout"),
        orientation=CORONAL,
        image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"),
    )
    save(scout, root / "scout" / "topogram.dcm")
    seg = Path(pydicom.__file__).parent / "data" / "test_files" / "liver_1frame.dcm"
    if seg.exists():
        shutil.copy(seg, root / "seg.dcm")
    else:  # a minimal SEG object: skipped by its SOP class all the same
        save(
            ct_dataset(
                np.zeros((8, 8)),
                series_uid=uid("seg"),
                modality="SEG",
                sop_class="1.2.840.10008.5.1.4.1.1.66.4",
            ),
            root / "seg.dcm",
        )
    return root, good, victim


def _undecodable_series(folder: Path) -> str:
    """A readable CT series (headers fine) whose every pixel payload is cut: it fails."""
    from pydicom.encaps import encapsulate, generate_frames

    paths = write_series(
        folder, np.zeros((3, 16, 16)), series_uid=uid("undecodable"), compress=RLELossless
    )
    for p in paths:
        ds = pydicom.dcmread(p)
        (frame,) = generate_frames(ds.PixelData, number_of_frames=1)
        ds.PixelData = encapsulate([frame[:64]])  # the RLE header without its segments
        ds.save_as(p)
    return str(pydicom.dcmread(paths[0]).SeriesInstanceUID)


def test_broken_inputs_are_reported_and_only_a_failed_series_sets_exit_1(
    tmp_path: Path, cohort: Path, labels: dict, run_dir: Path, capsys
) -> None:
    folder, good, victim = _bad_folder(tmp_path / "in", cohort, labels)
    out = tmp_path / "report.csv"
    code = main(["predict", str(folder), "--model", str(run_dir), "--out", str(out),
                 "--quiet", "--device", "cpu"])  # fmt: skip
    assert code == 0
    rows = read_report(out)
    ok = [r for r in rows if r["status"] == STATUS_OK]
    assert sorted(r["series_id"] for r in ok) == sorted(good)
    truncated = next(r for r in ok if r["series_id"] == good[0])
    assert "missing_slices:1" in truncated["problems"]
    skipped = {Path(r["path"]).name: r["reason"] for r in rows if r["status"] == STATUS_SKIPPED}
    assert skipped == {
        victim.name: "truncated",
        "notes.txt": "not_dicom",
        "topogram.dcm": "localizer",
        "seg.dcm": "segmentation",
    }
    text = capsys.readouterr().out
    assert "classified 2 of 2 series" in text and "4 files skipped" in text

    # A readable series that cannot be decoded: a "failed" row, the others still classified,
    # exit status 1. JSON lines on stdout carry the same probabilities as the CSV did.
    _undecodable_series(folder / "broken")
    code = main(["predict", str(folder), "--model", str(run_dir), "--json", "--quiet"])
    assert code == 1
    captured = capsys.readouterr()
    lines = [json.loads(x) for x in captured.out.splitlines() if x.strip()]
    failed = [r for r in lines if r["status"] == STATUS_FAILED]
    assert len(failed) == 1 and failed[0]["reason"] == "decode_error"
    assert Path(failed[0]["path"]) == folder / "broken"
    assert failed[0]["detail"].count(".dcm: ") == 3  # every file named with its reason
    again = {r["series_id"]: r for r in lines if r["status"] == STATUS_OK}
    assert sorted(again) == sorted(good)
    for r in ok:
        for c in ("p_EAP", "p_LAP", "p_PVP", "p_DP"):
            assert again[r["series_id"]][c] == pytest.approx(float(r[c]), abs=1e-6)
    assert "1 FAILED" in captured.err


def test_resume_keeps_classified_series_and_finishes_the_rest(
    tmp_path: Path, cohort: Path, labels: dict, run_dir: Path, capsys
) -> None:
    ids = ["s7a04951c904c", "sc0bf95f4997d", "se33beb2fcd3c"]
    folder = tmp_path / "in"
    for sid, src in zip(ids, _series_dirs(cohort, labels, *ids)):
        shutil.copytree(src, folder / sid)
    out = tmp_path / "report.csv"
    args = ["predict", str(folder), "--model", str(run_dir), "--out", str(out), "--quiet"]
    assert main([*args, "--qc"]) == 0
    assert "findings over 3 classified series in 1 studies" in capsys.readouterr().out
    first = read_report(out)
    # As if the run had been stopped after its first row: only that row is in the file.
    # Its p_DP is marked, to see that resuming keeps the row instead of classifying again.
    with open(out, newline="") as f:
        header, kept, *_ = list(csv.reader(f))
    kept[header.index("p_DP")] = "0.123456"
    with open(out, "w", newline="") as f:
        csv.writer(f).writerows([header, kept])
    assert main([*args, "--resume"]) == 0
    text = capsys.readouterr().out
    assert "classified 2 of 3 series" in text and "1 already in the report (resumed)" in text
    second = {r["series_id"]: r["p_DP"] for r in read_report(out)}
    expected = {r["series_id"]: r["p_DP"] for r in first}
    assert second == {**expected, kept[0]: "0.123456"} and sorted(second) == sorted(ids)
    # A report of another label set is refused rather than mixed.
    out.write_text(out.read_text().replace("p_DP", "p_NC"))
    assert main([*args, "--resume"]) == 2
    assert "another model" in capsys.readouterr().err


def test_ensemble_reports_the_mean_of_its_runs_and_refuses_other_inputs(
    tmp_path: Path, cohort: Path, labels: dict, run_dir: Path, capsys
) -> None:
    ids = ["s7a04951c904c", "sc0bf95f4997d"]
    folder = tmp_path / "in"
    for sid, src in zip(ids, _series_dirs(cohort, labels, *ids)):
        shutil.copytree(src, folder / sid)
    seed1 = _train_tiny(cohort, tmp_path / "seed1", seed=1)

    def probs(*models: Path) -> dict[str, np.ndarray]:
        out = tmp_path / f"{len(models)}_{models[0].name}.csv"
        extra = [a for m in models[1:] for a in ("--ensemble", str(m))]
        args = ["predict", str(folder), "--model", str(models[0]), *extra, "--out", str(out)]
        assert main([*args, "--quiet"]) == 0
        cols = [c for c in read_report(out)[0] if c.startswith("network_p_")]
        return {r["series_id"]: np.array([float(r[c]) for c in cols]) for r in read_report(out)}

    a, b, both = probs(run_dir), probs(seed1), probs(run_dir, seed1)
    assert "+ model" in capsys.readouterr().err  # each member is named
    assert max(np.abs(a[i] - b[i]).max() for i in ids) > 1e-4  # two different networks
    for i in ids:
        np.testing.assert_allclose(both[i], (a[i] + b[i]) / 2, atol=2e-6)  # CSV: 6 digits
    # A member that prepares its input otherwise is refused, naming the setting.
    other = tmp_path / "other"
    shutil.copytree(seed1, other)
    cfg = json.loads((other / "config.json").read_text())
    cfg["data"]["slice_selection"] = "central"
    (other / "config.json").write_text(json.dumps(cfg))
    args = ["predict", str(folder), "--model", str(run_dir), "--ensemble", str(other)]
    assert main([*args, "--quiet"]) == 2
    assert "data.slice_selection differ" in capsys.readouterr().err


# --------------------------------------------------------------------------- model dir


def test_missing_incomplete_or_unmappable_model_dirs_are_refused(
    tmp_path: Path, run_dir: Path, cohort: Path, capsys
) -> None:
    data = str(cohort / "dicom" / "INT-0001")

    def refused(model: Path) -> str:
        assert main(["predict", data, "--model", str(model), "--quiet"]) == 2
        return capsys.readouterr().err

    assert "does not exist" in refused(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    assert "no config.json" in refused(tmp_path / "empty")
    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copy(run_dir / "config.json", partial / "config.json")
    assert "no complete 'best' checkpoint" in refused(partial)
    alien = tmp_path / "alien"
    shutil.copytree(run_dir, alien)
    cfg = json.loads((alien / "config.json").read_text())
    cfg["data"]["label_set"] = "paper7"
    (alien / "config.json").write_text(json.dumps(cfg))
    assert "label set 'paper7'" in refused(alien)
    with pytest.raises(ModelDirError, match="use one of"):
        load_trained(run_dir, "oldest")
    assert main(["predict", str(tmp_path / "missing"), "--model", str(run_dir)]) == 2


def test_load_trained_restores_the_checkpointed_weights_read_only(run_dir: Path) -> None:
    import jax
    from flax import nnx

    from phasejax.models import build_classifier
    from phasejax.train.checkpoint import Checkpointer

    before = sorted(p.relative_to(run_dir) for p in run_dir.rglob("*"))
    cfg, model = load_trained(run_dir, "latest")
    fresh = build_classifier(cfg, rngs=nnx.Rngs(cfg.train.seed))
    with Checkpointer(run_dir / "checkpoints", read_only=True) as ck:
        ref = ck.restore(nnx.state(fresh), which="latest")
    got, want = jax.tree.leaves(nnx.state(model)), jax.tree.leaves(ref.model_state)
    assert len(got) == len(want) > 0
    for a, b in zip(got, want):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # ...and differs from a fresh initialisation (training moved the weights).
    init = jax.tree.leaves(nnx.state(fresh, nnx.Param))
    trained = jax.tree.leaves(nnx.state(model, nnx.Param))
    assert any(not np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(init, trained))
    assert sorted(p.relative_to(run_dir) for p in run_dir.rglob("*")) == before


# --------------------------------------------------------------------------- real CT


def test_real_hcc_series_and_nifti_each_get_a_row(real_data: Path, trained) -> None:
    cfg, model, clf = trained
    report = predict_paths([real_data], cfg, model, options=QUIET, classifier=clf)
    ok = [r for r in report.rows if r["status"] == STATUS_OK]
    assert len(ok) == 3 and report.exit_status == 0
    hcc = [r for r in ok if r["patient_id"] == "HCC_015"]
    assert len(hcc) == 2 and len({r["series_id"] for r in hcc}) == 2
    assert sorted(r["num_slices"] for r in hcc) == [61, 62]
    (nii,) = [r for r in ok if r["format"] == "nifti"]
    assert Path(nii["path"]).name == "example_ct.nii.gz" and nii["num_slices"] == 112
    # "(AP)" in these descriptions is coverage, not a phase: no header hint, no agreement.
    assert [r["header_phase"] for r in hcc] == ["unknown", "unknown"]
    assert [r["header_agrees"] for r in hcc] == ["", ""]
    assert {r["reason"] for r in report.rows if r["status"] == STATUS_SKIPPED} == {"not_dicom"}


# --------------------------------------------------------------------------- units


def _prep(**kw) -> PreparedSeries:
    base = dict(
        series_id="s1", patient_id="P", study_uid="1.2", acquisition="", source="/x",
        fmt="dicom", header={"SeriesDescription": "portal venous", "ContrastBolusAgent": "X"},
        problems=(), image=np.zeros((3, 8, 8, 1), np.float32), num_slices=60, slice_mm=2.5,
        coverage_mm=147.5, hu=(-1000.0, -50.0, 400.0), oblique_deg=0.0, cached_slices=30,
        z_lo=5, z_hi=25, z_method="lung",
    )  # fmt: skip
    base.update(kw)
    return PreparedSeries(**base)  # type: ignore[arg-type]


def test_input_checks_name_each_out_of_range_reason() -> None:
    cfg = load_config("debug")
    assert input_checks(_prep(), cfg.data, SPEC) == []
    assert input_checks(_prep(z_lo=3, z_hi=5, cached_slices=6), cfg.data, SPEC) == [
        "few_slices:2<3"
    ]
    assert input_checks(_prep(coverage_mm=60.0), cfg.data, SPEC) == ["short_coverage:60mm"]
    assert input_checks(_prep(hu=(-20.0, 40.0, 300.0)), cfg.data, SPEC) == ["hu_range:-20/40/300"]
    assert input_checks(_prep(hu=(-1000.0, -900.0, 50.0)), cfg.data, SPEC) == [
        "hu_range:-1000/-900/50"
    ]
    assert input_checks(_prep(problems=("gantry_tilt:14.0deg",)), cfg.data, SPEC) == [
        "oblique:14deg"
    ]
    assert input_checks(_prep(oblique_deg=5.0), cfg.data, SPEC) == []
    assert input_checks(_prep(slice_mm=12.0), cfg.data, SPEC) == ["thick_slices:12mm"]
    # A volume with holes is never "in range": its probabilities can look sure of a
    # wrong answer once the hole is resampled over.
    assert input_checks(
        _prep(problems=("missing_rescale", "missing_slices:2", "gantry_tilt:0.7deg")),
        cfg.data,
        SPEC,
    ) == ["missing_rescale", "missing_slices:2"]
    assert input_checks(_prep(problems=("uneven_spacing:2.50-3.70mm",)), cfg.data, SPEC) == [
        "uneven_spacing:2.50-3.70mm"
    ]
    assert input_checks(_prep(problems=("unreadable_slices:1",)), cfg.data, SPEC) == [
        "unreadable_slices:1"
    ]
    assert input_checks(_prep(problems=("minority_orientation:1",)), cfg.data, SPEC) == []
    assert input_checks(_prep(slab_clipped_mm=20.0), cfg.data, SPEC) == []  # the estimate's error
    assert input_checks(_prep(slab_clipped_mm=45.0), cfg.data, SPEC) == ["slab_clipped:45mm"]


def test_confidence_flag_and_header_agreement() -> None:
    classes = ("EAP", "LAP", "PVP", "DP")
    probs = np.array([0.1, 0.15, 0.5, 0.25])
    row = series_row(_prep(), probs, classes, min_confidence=0.6, out_of_range=[])
    assert (row["predicted"], row["confidence"]) == ("PVP", "low")
    assert row["confidence_reasons"] == ["low_probability:0.50<0.6"]
    assert (row["header_phase"], row["header_agrees"]) == ("PVP", "yes")
    row = series_row(_prep(), probs, classes, min_confidence=0.4, out_of_range=[])
    assert (row["confidence"], row["confidence_reasons"]) == ("high", [])
    row = series_row(_prep(), probs, classes, min_confidence=0.4, out_of_range=["oblique:20deg"])
    assert (row["confidence"], row["confidence_reasons"]) == ("low", ["oblique:20deg"])
    nifti = series_row(_prep(fmt="nifti", header={}), probs, classes, min_confidence=0.4,
                       out_of_range=[])  # fmt: skip
    assert (nifti["header_phase"], nifti["header_agrees"], nifti["header_evidence"]) == ("", "", [])
    assert phase_agreement("AP", "LAP") == phase_agreement("AP", "EAP") == "yes"
    assert phase_agreement("AP", "PVP") == phase_agreement("DP", "PVP") == "no"
    assert phase_agreement("unknown", "PVP") == "" and phase_agreement("NC", "EAP") == "no"


def test_anatomy_second_opinion_columns() -> None:
    classes = ("NC", "EAP", "LAP", "PVP", "DP")
    probs = np.array([0.05, 0.6, 0.2, 0.1, 0.05])
    kw = {"classes": classes, "min_confidence": 0.4, "out_of_range": []}
    row = series_row(_prep(aorta_hu=352.4), probs, **kw)
    assert (row["aorta_hu"], row["anatomy_phase"], row["anatomy_agrees"]) == (352.4, "AP", "yes")
    row = series_row(_prep(aorta_hu=41.0), probs, **kw)
    assert (row["anatomy_phase"], row["anatomy_agrees"]) == ("NC", "no")
    # 125 HU in the aorta is portal venous or delayed; the kidneys decide.
    venous = _prep(aorta_hu=125.0, kidney_cortex_hu=175.0, kidney_medulla_hu=140.0)
    delayed = _prep(aorta_hu=125.0, kidney_cortex_hu=150.0, kidney_medulla_hu=200.0)
    row = series_row(venous, probs, **kw)
    assert (row["kidney_cortex_hu"], row["kidney_medulla_hu"]) == (175.0, 140.0)
    assert row["anatomy_phase"] == "PVP"
    assert series_row(delayed, probs, **kw)["anatomy_phase"] == "DP"
    # The reference follows the header's tube voltage: 150 HU is delayed at 80 kVp.
    at80 = _prep(aorta_hu=150.0, header={"KVP": "80"})
    assert (
        series_row(_prep(aorta_hu=150.0, header={"KVP": "120"}), probs, **kw)["anatomy_phase"]
        == "PVP"
    )
    assert series_row(at80, probs, **kw)["anatomy_phase"] == "DP"
    row = series_row(_prep(), probs, **kw)
    assert (row["aorta_hu"], row["anatomy_phase"], row["anatomy_agrees"]) == (None, "", "")


def test_run_config_carries_the_grid_training_used(tmp_path):
    # `phasejax train --cache DIR` keeps data.cache_dir empty in config.json; the grid
    # recorded in env.json must win so predict resamples exactly as training did.
    from phasejax.config import Config
    from phasejax.train.restore import read_run_config

    (tmp_path / "config.json").write_text(Config().to_json())
    assert read_run_config(tmp_path).data.cache_size == Config().data.cache_size
    (tmp_path / "env.json").write_text('{"cache_grid": {"spacing_z": 3.0, "size": 64}}')
    cfg = read_run_config(tmp_path)
    assert (cfg.data.cache_spacing_z, cfg.data.cache_size) == (3.0, 64)


# --------------------------------------------------------------------------- real archives


def _real_eap(real_data: Path) -> Path:
    return next((real_data / "HCC_015").glob("*/4.000000-*"))


def _link(files, folder: Path | bytes) -> None:
    os.makedirs(folder, exist_ok=True)
    for f in files:
        os.symlink(
            f, os.path.join(folder, os.fsencode(f.name) if isinstance(folder, bytes) else f.name)
        )


def test_a_missing_slice_never_leaves_the_confidence_high(
    tmp_path: Path, cohort: Path, labels: dict, trained
) -> None:
    cfg, model, clf = trained
    sid = "s7a04951c904c"
    (src,) = _series_dirs(cohort, labels, sid)
    files = sorted(src.iterdir(), key=lambda f: float(pydicom.dcmread(f).ImagePositionPatient[2]))
    _link(files, tmp_path / "whole")
    _link(files[: len(files) // 2] + files[len(files) // 2 + 1 :], tmp_path / "gap")
    # min_confidence 0: the two-step model's probabilities do not decide; the input does.
    opts = PredictOptions(progress=False, batch_size=16, min_confidence=0.0)
    whole, gap = (
        predict_paths([tmp_path / d], cfg, model, options=opts, classifier=clf).rows[0]
        for d in ("whole", "gap")
    )

    def input_reasons(row: dict) -> list[str]:  # the untrained network may contradict the anatomy
        return [r for r in row["confidence_reasons"] if r != "network_anatomy_disagree"]

    assert input_reasons(whole) == [] and whole["problems"] == []
    assert gap["problems"] == ["missing_slices:1"]
    assert gap["confidence"] == "low" and input_reasons(gap) == ["missing_slices:1"]


@pytest.mark.real
def test_real_series_missing_a_middle_slice_is_low_confidence(
    real_data: Path, tmp_path: Path, trained
) -> None:
    cfg, model, clf = trained
    files = sorted(_real_eap(real_data).glob("*.dcm"))  # 1-01 is the top slice
    _link(files[:30] + files[31:], tmp_path / "gap")
    opts = PredictOptions(progress=False, batch_size=16, min_confidence=0.0)
    (row,) = predict_paths([tmp_path / "gap"], cfg, model, options=opts, classifier=clf).rows
    assert row["num_slices"] == 60 and row["confidence"] == "low"
    assert "missing_slices:1" in row["confidence_reasons"]
    # The liver protocol starts at the lung bases and stops above the lower kidney poles.
    assert any(r.startswith("slab_clipped:") for r in row["confidence_reasons"])


@pytest.mark.real
def test_real_series_in_a_non_utf8_folder_is_written_in_csv_and_json(
    real_data: Path, tmp_path: Path, run_dir: Path, capsys
) -> None:
    folder = os.fsencode(tmp_path / "in") + b"/caf\xe9"  # Latin-1 name: not UTF-8
    _link(sorted(_real_eap(real_data).glob("*.dcm")), folder)
    (Path(os.fsdecode(folder)) / "readme.txt").write_text("not an image")
    shown = f"{tmp_path / 'in'}/caf\\xe9"
    out = tmp_path / "report.csv"
    args = ["predict", str(tmp_path / "in"), "--model", str(run_dir), "--quiet"]
    assert main([*args, "--out", str(out)]) == 0
    out.read_bytes().decode("utf-8")  # strict: every cell is valid UTF-8
    rows = read_report(out)
    assert [(r["status"], r["path"]) for r in rows] == [
        (STATUS_OK, shown),
        (STATUS_SKIPPED, f"{shown}/readme.txt"),
    ]
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "report.jsonl"), "--json"]) == 0
    lines = [json.loads(x) for x in (tmp_path / "report.jsonl").read_text("utf-8").splitlines()]
    assert [r["path"] for r in lines] == [shown, f"{shown}/readme.txt"]
    assert lines[0]["p_EAP"] == pytest.approx(float(rows[0]["p_EAP"]), abs=1e-6)


def test_unreadable_folder_is_a_skipped_row(
    tmp_path: Path, cohort: Path, labels: dict, trained, monkeypatch
) -> None:
    cfg, model, clf = trained
    ids = ["s7a04951c904c", "sc0bf95f4997d"]
    for sid, src in zip(ids, _series_dirs(cohort, labels, *ids)):
        shutil.copytree(src, tmp_path / sid)
    denied = tmp_path / ids[1]
    real = os.scandir

    def scandir(path=".", *a, **kw):
        # What a non-root user meets in a folder without read permission.
        if os.fsdecode(path) == str(denied):
            raise PermissionError(13, "Permission denied", os.fsdecode(path))
        return real(path, *a, **kw)

    monkeypatch.setattr(os, "scandir", scandir)
    report = predict_paths([tmp_path], cfg, model, options=QUIET, classifier=clf)
    got = [(r["status"], r["series_id"] or r["path"], r["reason"]) for r in report.rows]
    assert sorted(got) == sorted(
        [(STATUS_OK, ids[0], ""), (STATUS_SKIPPED, str(denied), "unreadable_dir")]
    )
    assert report.counts()["skipped_by_reason"] == {"unreadable_dir": 1}


def test_unreadable_training_cache_json_is_one_line_and_exit_2(
    cohort: Path, labels: dict, run_dir: Path, monkeypatch, capsys
) -> None:
    real = Path.read_text

    def read_text(self, *a, **kw):
        if self.name == "cache.json":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *a, **kw)

    monkeypatch.setattr(Path, "read_text", read_text)
    (data,) = _series_dirs(cohort, labels, "s7a04951c904c")
    assert main(["predict", str(data), "--model", str(run_dir), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("phasejax predict: --model ")
    assert "cache.json: cannot read (PermissionError: Permission denied)" in err[-1]


def test_report_cells_are_defused_and_paths_escaped(tmp_path: Path) -> None:
    from phasejax.predict.report_io import write_report
    from phasejax.predict.schema import complete_row, report_columns

    cols = report_columns(("EAP", "LAP", "PVP", "DP"))
    row = complete_row(
        {"series_id": "s1", "status": STATUS_OK, "path": os.fsdecode(b"/a/caf\xe9"),
         "description": "=HYPERLINK(\"http://x\")", "hu_p1": -1000.0, "p_EAP": 0.5,
         "problems": ["missing_slices:1"]},
        cols,
    )  # fmt: skip
    write_report(tmp_path / "r.csv", [row], cols, "csv")
    with open(tmp_path / "r.csv", newline="", encoding="utf-8") as f:
        (got,) = list(csv.DictReader(f))
    assert got["description"] == '\'=HYPERLINK("http://x")'
    assert got["path"] == "/a/caf\\xe9"
    assert (got["hu_p1"], got["p_EAP"], got["problems"]) == ("-1000.0", "0.5", "missing_slices:1")
    write_report(tmp_path / "r.jsonl", [row], cols, "jsonl")
    got = json.loads((tmp_path / "r.jsonl").read_text("utf-8"))
    assert got["path"] == "/a/caf\\xe9" and got["description"] == '=HYPERLINK("http://x")'


def test_summary_and_table_show_the_anatomy() -> None:
    from phasejax.predict.driver import PredictReport
    from phasejax.predict.text import format_summary, format_table

    classes = ("NC", "EAP", "LAP", "PVP", "DP")
    kw = {"classes": classes, "min_confidence": 0.4, "out_of_range": []}
    probs = np.array([0.05, 0.05, 0.05, 0.1, 0.75])
    rows = [
        series_row(
            _prep(aorta_hu=119.0, kidney_cortex_hu=149.0, kidney_medulla_hu=128.0), probs, **kw
        ),  # fmt: skip
        series_row(_prep(aorta_hu=95.0), probs, **kw),
        series_row(_prep(), probs, **kw),
    ]
    report = PredictReport(classes=classes, rows=rows, seconds={"total": 1.0})
    assert (
        "anatomy (aorta, kidneys) and image network: 1 agree, 1 disagree, 1 not read "
        "(the call weighs both; phasejax qc lists them)"
    ) in format_summary(report)
    table = format_table(rows, classes).splitlines()
    head = table[0].split()
    got = [[line.split()[head.index(c)] for c in ("phase", "network", "anatomy")]
           for line in table[-3:]]  # fmt: skip
    # The network is sure of DP (0.75): the anatomy's PVP lowers the call's probability
    # without overruling it.
    assert got == [["DP", "DP", "PVP"], ["DP", "DP", "DP"], ["DP", "DP", "-"]]
    assert rows[0]["top_prob"] < 0.75 < rows[1]["top_prob"]


def test_the_call_weighs_the_network_against_the_anatomy() -> None:
    classes = ("NC", "EAP", "LAP", "PVP", "DP")
    kw = {"classes": classes, "min_confidence": 0.6, "out_of_range": []}
    venous = {"aorta_hu": 150.0, "kidney_cortex_hu": 175.0, "kidney_medulla_hu": 120.0}
    # A network torn between PVP and DP: the kidneys' clear PVP decides the call.
    row = series_row(_prep(**venous), np.array([0.02, 0.03, 0.05, 0.4, 0.5]), **kw)
    assert (row["network_phase"], row["anatomy_phase"], row["predicted"]) == ("DP", "PVP", "PVP")
    assert row["network_p_DP"] == 0.5 and row["p_PVP"] > 0.8
    assert row["anatomy_agrees"] == "no" and row["confidence"] == "low"
    assert row["confidence_reasons"] == ["network_anatomy_disagree"]
    # A network sure of DP keeps it against an anatomy sure of PVP (DP at 0.0014): the
    # anatomy misreads 2 series in 15 (MISREAD_RATE), so it cannot veto.
    sure = _prep(aorta_hu=160.0, kidney_cortex_hu=200.0, kidney_medulla_hu=100.0)
    row = series_row(sure, np.array([0.0, 0.0, 0.0, 0.01, 0.99]), **kw)
    assert (row["network_phase"], row["anatomy_phase"], row["predicted"]) == ("DP", "PVP", "DP")
    assert 0.5 < row["p_DP"] < 0.99
    # An arterial aorta: the anatomy cannot tell early from late, the network splits them.
    net = np.array([0.05, 0.1, 0.2, 0.6, 0.05])
    row = series_row(_prep(aorta_hu=380.0), net, **kw)
    assert (row["network_phase"], row["anatomy_phase"], row["predicted"]) == ("PVP", "AP", "LAP")
    assert row["p_LAP"] / row["p_EAP"] == pytest.approx(2.0, rel=1e-4)
    # Nothing read: the call is the network's.
    row = series_row(_prep(), net, **kw)
    assert [row[f"p_{c}"] for c in classes] == [row[f"network_p_{c}"] for c in classes]
    # A 4-phase model and a non-contrast aorta: no class of the model is the anatomy's; of
    # its classes the delayed phase, whose aorta is the least enhanced, gains.
    four = ("EAP", "LAP", "PVP", "DP")
    row = series_row(_prep(aorta_hu=40.0), np.array([0.1, 0.2, 0.3, 0.4]), **kw | {"classes": four})
    assert row["anatomy_phase"] == "NC" and row["predicted"] == "DP"
    assert sum(row[f"p_{c}"] for c in four) == pytest.approx(1.0, abs=1e-5)
    assert row["p_DP"] > 0.4 and row["p_LAP"] / row["p_EAP"] == pytest.approx(2.0, rel=1e-4)
