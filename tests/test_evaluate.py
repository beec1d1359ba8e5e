"""`phasejax evaluate`: labels with accepted phase sets, scoring with Wilson intervals,
outputs (series.csv, summary.json, confusion, contact sheets) and exit statuses.

The model is an untrained "smoke" network (two-stage tiny ResNet, width 8, 32 px)
written as a run directory with the real checkpointer, so no training step is
compiled here: the known answers come from the labels. A first pass reads the
model's predictions; the labels CSV of the second pass then accepts, per series,
either that prediction (right) or every other class (wrong), so accuracy and its
interval are known exactly whatever the weights. Inputs are phantom volumes of
tests/fake_cache.py written as NIfTI files and as one DICOM series
(tests/dicom_factory.py).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from dicom_factory import uid, write_series
from fake_cache import fake_volume

from phasejax.cli import main
from phasejax.config import load_config
from phasejax.data.discover import discover, load_plan
from phasejax.data.prepare import LabelsError
from phasejax.eval.labels import (
    label_order,
    match_eval_labels,
    parse_accepts,
    read_eval_labels,
    search_folders,
)
from phasejax.eval.stats import wilson_interval
from phasejax.phases import UnknownPhaseWord

REPO = Path(__file__).resolve().parents[1]
VALIDATION = REPO.parent / "shared" / "data" / "validation"
CLASSES = ("EAP", "LAP", "PVP", "DP")
NIFTI_PHASES = ("EAP", "LAP", "PVP", "DP")
SLICES = 24
PIXEL_MM = 6.0


@pytest.fixture(autouse=True)
def _no_persistent_compile_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PHASEJAX_COMPILATION_CACHE", "off")


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


# --------------------------------------------------------------------------- labels


def test_parse_accepts_maps_every_word_and_refuses_unknown_ones() -> None:
    assert parse_accepts("EAP|LAP") == {"EAP", "LAP"}
    assert parse_accepts(" portal venous | delayed ") == {"PVP", "DP"}
    assert parse_accepts("arterial|EQP|native") == {"LAP", "DP", "NC"}
    with pytest.raises(UnknownPhaseWord, match="'AP'"):
        parse_accepts("AP|PVP")
    with pytest.raises(ValueError, match="names no phase"):
        parse_accepts(" | ")


def test_labels_csv_keeps_group_labels_and_names_the_line_of_an_error(tmp_path: Path) -> None:
    good = _write_csv(
        tmp_path / "labels.csv",
        ["file", "patient", "phase", "accepts", "evidence"],
        [
            ["a.nii.gz", "P1", "AP", "EAP|LAP", "aorta ~337 HU"],
            ["b.nii.gz", "P1", "PVP_or_DP", "PVP|DP", ""],
            ["c.nii.gz", "P1", "native", "", ""],
            ["d.nii.gz", "P2", "arterial", "EAP|late arterial", ""],
            ["e.nii.gz", "P2", "EQP", "DP", ""],
        ],
    )
    rows = read_eval_labels(good)
    got = [(r.line, r.path, r.label, r.accepts_text) for r in rows]
    assert got == [
        (2, "a.nii.gz", "AP", "EAP|LAP"),
        (3, "b.nii.gz", "PVP_or_DP", "PVP|DP"),
        (4, "c.nii.gz", "NC", "NC"),  # no accepts: the phase itself, as its code
        (5, "d.nii.gz", "arterial", "EAP|LAP"),  # a phase word kept when it stands for a group
        (6, "e.nii.gz", "DP", "DP"),
    ]
    assert rows[0].extra == {"patient": "P1", "evidence": "aorta ~337 HU"}
    assert [r.contrast for r in rows] == [True, True, False, True, True]
    assert label_order((r.label, r.accepts) for r in rows) == [
        "NC", "AP", "arterial", "PVP_or_DP", "DP",
    ]  # fmt: skip

    def refused(rows: list[list[str]], header=("file", "phase", "accepts")) -> str:
        bad = _write_csv(tmp_path / "bad.csv", list(header), rows)
        with pytest.raises(LabelsError) as e:
            read_eval_labels(bad)
        return str(e.value)

    msg = refused([["a.nii.gz", "AP", "EAP|LAP"], ["b.nii.gz", "AP", "EAP|mystery"]])
    assert msg.startswith(f"{tmp_path / 'bad.csv'}:3: accepts: unknown phase word 'mystery'")
    msg = refused([["a.nii.gz", "AP", ""]])
    assert "bad.csv:2: unknown phase word 'AP'" in msg and "needs an 'accepts' cell" in msg
    assert "bad.csv:2: phase 'PVP' (PVP) is not among its accepts EAP|LAP" in refused(
        [["a.nii.gz", "PVP", "EAP|LAP"]]
    )
    assert "no 'phase' column" in refused([["a.nii.gz"]], header=("file",))
    assert "bad.csv:2: row names no series" in refused([["", "PVP", ""]])


@pytest.mark.skipif(not VALIDATION.is_dir(), reason="validation set not beside the checkout")
def test_the_shipped_validation_labels_match_every_file() -> None:
    csv_path = VALIDATION / "labels.csv"
    rows = read_eval_labels(csv_path)
    assert len(rows) == 12
    assert {r.label for r in rows} == {"NC", "AP", "PVP", "PVP_or_DP", "DP"}
    assert sum(not r.contrast for r in rows) == 2
    assert {"patient", "collection", "evidence"} <= set(rows[0].extra)
    plans = discover([VALIDATION]).plans
    matched, missing = match_eval_labels(plans, rows, search_folders(csv_path, [str(VALIDATION)]))
    assert missing == [] and len(matched) == 12


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A smoke model with seeded random weights saved as a run directory (config.json +
    'best' checkpoint), written with the real checkpointer."""
    import jax
    from flax import nnx

    from phasejax.models import build_classifier
    from phasejax.train.checkpoint import Checkpointer

    cfg = load_config("smoke", ["data.cache_size=64"])
    out = tmp_path_factory.mktemp("run")
    (out / "config.json").write_text(cfg.to_json())
    # Filled with numpy rather than initialised by flax: an eager initialisation compiles
    # one program per layer shape, which costs more than the rest of this file on 2 cores.
    abstract = nnx.state(nnx.eval_shape(lambda: build_classifier(cfg, rngs=nnx.Rngs(0))))
    rng = np.random.default_rng(0)

    def fill(path, x):
        name = jax.tree_util.keystr(path)
        if "['scale']" in name or "['var']" in name:
            return np.ones(x.shape, x.dtype)
        if "['bias']" in name or "['mean']" in name:
            return np.zeros(x.shape, x.dtype)
        fan_in = max(1, int(np.prod(x.shape[:-1])))
        return rng.normal(0.0, np.sqrt(2.0 / fan_in), x.shape).astype(x.dtype)

    state = jax.tree_util.tree_map_with_path(fill, abstract)
    with Checkpointer(out / "checkpoints", async_save=False) as ck:
        # No optimizer exists; the model state stands in for the one predict never reads.
        ck.save(0, state, state, which="best")
        ck.wait()
    return out


def _nifti(path: Path, phase: str, seed: int) -> Path:
    vol = fake_volume(phase, size=64, slices=SLICES, rng=np.random.default_rng(seed))
    # fake_volume is [Z, row (anterior first), column (patient right first)]; NIfTI stores
    # [i, j, k] = [x, y, z] in RAS, hence the transposition and the two flips.
    data = vol.transpose(2, 1, 0)[::-1, ::-1, :].astype(np.int16)
    nib.save(nib.Nifti1Image(data, np.diag([PIXEL_MM, PIXEL_MM, 5.0, 1.0])), path)
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four labelled NIfTI series, one labelled DICOM series of a non-contrast scan, one
    NIfTI that no labels row names."""
    root = tmp_path_factory.mktemp("data")
    for i, phase in enumerate(NIFTI_PHASES):
        _nifti(root / f"case_{phase}.nii.gz", phase, i)
    _nifti(root / "extra_PVP.nii.gz", "PVP", 9)
    nc = fake_volume("NC", size=64, slices=SLICES, rng=np.random.default_rng(7))
    write_series(
        root / "dicom" / "nc", nc.astype(np.int32) + 1024, series_uid=uid("nc"), dz=5.0,
        pixel_spacing=(PIXEL_MM, PIXEL_MM), slice_thickness=5.0,
    )  # fmt: skip
    return root


def _first_pass_predictions(run_dir: Path, data: Path, tmp_path: Path):
    from phasejax.evaluate import evaluate_paths
    from phasejax.predict.driver import PredictOptions
    from phasejax.train.restore import load_run

    run = load_run(run_dir)
    everything = "EAP|LAP|PVP|DP"
    labels_csv = _write_csv(
        tmp_path / "all.csv",
        ["file", "series_uid", "phase", "accepts"],
        [[f"case_{p}.nii.gz", "", "any", everything] for p in NIFTI_PHASES]
        + [["", uid("nc"), "NC", ""]],
    )
    labels = read_eval_labels(labels_csv)
    ev = evaluate_paths(
        [data], labels, run.cfg, run.model,
        folders=search_folders(labels_csv, [str(data)]),
        options=PredictOptions(progress=False),
    )  # fmt: skip
    return run, ev


def test_library_scores_known_answers_and_keeps_the_network_inputs(
    run_dir: Path, data: Path, tmp_path: Path
) -> None:
    from phasejax.evaluate import evaluation_summary
    from phasejax.predict.inputs import model_grid, prepare_series

    run, ev = _first_pass_predictions(run_dir, data, tmp_path)
    names = [r["name"] for r in ev.rows]
    assert names == [f"case_{p}" for p in NIFTI_PHASES] + [ev.rows[-1]["series_id"]]
    assert [u["path"] for u in ev.unlabelled] == [str(data / "extra_PVP.nii.gz")]
    # "any" accepts all four classes: right whatever the model says; NC cannot be right.
    assert [r["correct"] for r in ev.rows] == [1, 1, 1, 1, 0]
    assert all(r["predicted"] in CLASSES for r in ev.rows)
    s = evaluation_summary(ev)
    assert (s["accuracy"]["k"], s["accuracy"]["n"]) == (4, 5)
    assert s["accuracy"]["ci"] == pytest.approx(wilson_interval(4, 5))
    assert (s["accuracy_contrast"]["k"], s["accuracy_contrast"]["n"]) == (4, 4)
    assert s["inexpressible"] == [names[-1]]
    assert s["confusion"]["rows"] == ["NC", "any"]
    assert np.asarray(s["confusion"]["counts"]).sum(1).tolist() == [1, 4]
    assert s["per_label"]["NC"]["expressible"] is False
    # Log score: "any" puts all probability on accepted phases (0 nats), NC none (the floor).
    assert s["nll"] == pytest.approx(-math.log(1e-3) / 5, abs=1e-4) and s["nll_floor"] == 1e-3
    # The aorta reader is scored over the series whose aorta was found, and only those.
    read = [r for r in ev.rows if r["anatomy_phase"]]
    assert all(r["anatomy_correct"] == "" for r in ev.rows if not r["anatomy_phase"])
    assert s["anatomy_read"] == s["anatomy_accuracy"]["n"] == len(read)
    assert s["anatomy_accuracy"]["k"] == sum(r["anatomy_correct"] for r in read)
    first = {**ev.rows[0], "aorta_hu": None, "anatomy_phase": "", "anatomy_correct": ""}
    s2 = evaluation_summary(dataclasses.replace(ev, rows=[first, *ev.rows[1:]]))
    assert (
        s2["anatomy_read"]
        == s2["anatomy_accuracy"]["n"]
        == len([r for r in read if r is not ev.rows[0]])
    )

    # The kept input is the one predict built: prepare_series on the decoded series.
    plan = next(p for p in discover([data / "case_PVP.nii.gz"]).plans)
    prep = prepare_series(load_plan(plan)[0], run.cfg.data, model_grid(run.cfg)[0])
    kept = ev.images[plan.series_id]
    assert kept.shape == prep.image.shape == (3, 32, 32, 1) and kept.dtype == np.uint8
    np.testing.assert_array_equal(kept, np.round(prep.image * 255).astype(np.uint8))
    row = next(r for r in ev.rows if r["series_id"] == plan.series_id)
    assert len(row["slices"]) == 3 and row["z_lo"] <= row["slices"][0] < row["slices"][-1]
    assert ev.exit_status == 0


def test_ablation_real_scores_are_the_network_alone(
    run_dir: Path, data: Path, tmp_path: Path
) -> None:
    from phasejax.ablate.runner import RealSet, evaluate_real

    labels = _write_csv(
        tmp_path / "four.csv", ["file", "phase"], [[f"case_{p}.nii.gz", p] for p in NIFTI_PHASES]
    )
    doc = evaluate_real(run_dir, RealSet(paths=(str(data),), labels=str(labels)))
    _, ev = _first_pass_predictions(run_dir, data, tmp_path)
    by_id = {r["series_id"]: r for r in ev.rows}
    preds = doc["splits"]["real"]["predictions"]
    assert len(preds) == len(NIFTI_PHASES)

    def column(prefix: str, p: dict) -> list[float]:
        return [float(by_id[p["series_id"]][f"{prefix}{c}"]) for c in doc["classes"]]

    # Ablation runs differ in their networks only: the anatomy's weight would blur them.
    for p in preds:
        np.testing.assert_allclose(p["probs"], column("network_p_", p), atol=1e-6)
    assert any(not np.allclose(p["probs"], column("p_", p), atol=1e-3) for p in preds)


def test_score_row_scores_the_aorta_call_against_the_accepted_phases() -> None:
    from phasejax.eval.labels import EvalLabel
    from phasejax.evaluate import score_row

    arterial = EvalLabel(line=2, path="a.nii.gz", label="AP", accepts=frozenset({"EAP", "LAP"}))
    venous = EvalLabel(line=3, path="b.nii.gz", label="PVP", accepts=frozenset({"PVP"}))
    pred = {"status": "ok", "predicted": "DP", "aorta_hu": 340.0, "anatomy_phase": "AP"}
    assert score_row(pred, arterial, CLASSES)["anatomy_correct"] == 1  # AP = EAP or LAP
    assert score_row(pred, venous, CLASSES)["anatomy_correct"] == 0
    assert score_row({**pred, "anatomy_phase": "PVP"}, venous, CLASSES)["anatomy_correct"] == 1
    unread = {**pred, "aorta_hu": None, "anatomy_phase": ""}
    assert score_row(unread, venous, CLASSES)["anatomy_correct"] == ""
    failed = {"status": "failed", "predicted": "", "anatomy_phase": ""}
    assert score_row(failed, venous, CLASSES)["anatomy_correct"] == ""
    # The call and the image network alone are scored apart.
    row = score_row({**pred, "network_phase": "LAP"}, arterial, CLASSES)
    assert (row["correct"], row["network_correct"]) == (0, 1)
    assert score_row(failed, venous, CLASSES)["network_correct"] == ""


def test_command_writes_exact_accuracy_sheets_and_reports_missing_rows(
    run_dir: Path, data: Path, tmp_path: Path, capsys
) -> None:
    _, first = _first_pass_predictions(run_dir, data, tmp_path)
    predicted = {r["series_id"]: r["predicted"] for r in first.rows}
    by_name = {r["name"]: r["predicted"] for r in first.rows}
    # Right for EAP, PVP and DP (the reference is the prediction itself), wrong for LAP
    # (a group accepting every other class), wrong for the non-contrast series (the model
    # has no NC class): 3/5 overall, 3/4 over contrast-enhanced series.
    lap = by_name["case_LAP"]
    others = "|".join(c for c in CLASSES if c != lap)
    rows = [[f"case_{p}.nii.gz", by_name[f"case_{p}"], "", f"site{p}"] for p in ("EAP", "PVP")]
    rows.insert(1, ["case_LAP.nii.gz", f"not_{lap}", others, "siteLAP"])
    rows.append(["case_DP.nii.gz", by_name["case_DP"], "", "siteDP"])
    rows.append(["dicom/nc", "native", "", "siteN"])  # a DICOM series named by its folder
    rows.append(["gone.nii.gz", "DP", "", "siteX"])  # names nothing: missing
    labels_csv = _write_csv(tmp_path / "labels.csv", ["path", "reference", "accepts", "site"], rows)
    out = tmp_path / "out"
    args = [str(run_dir), str(data), "--labels", str(labels_csv), "--out", str(out), "--quiet"]
    # No "phase" column (it is called "reference" here): a usage error naming the file.
    assert main(["evaluate", *args]) == 2
    assert f"{labels_csv}: no 'phase' column" in capsys.readouterr().err
    labels_csv.write_text(labels_csv.read_text().replace("reference", "phase", 1))

    assert main(["evaluate", *args]) == 0
    stdout = capsys.readouterr().out
    lo, hi = wilson_interval(3, 5)
    assert f"accuracy 3/5 = 60.0% [{100 * lo:.1f}, {100 * hi:.1f}] (95% Wilson)" in stdout
    assert "contrast-enhanced only (no NC accepted): 3/4 = 75.0%" in stdout
    assert "missing: 1 CSV rows name no series" in stdout and "line 7: path 'gone.nii.gz'" in stdout
    assert "unlabelled: 1 series" in stdout and "extra_PVP.nii.gz" in stdout
    assert "log score " in stdout and "nats: mean -ln(probability of the accepted" in stdout

    summary = json.loads((out / "summary.json").read_text())
    assert (summary["correct"], summary["n"], summary["n_labels"]) == (3, 5, 6)
    assert summary["accuracy"]["ci"] == pytest.approx([lo, hi])
    assert summary["accuracy_contrast"]["ci"] == pytest.approx(list(wilson_interval(3, 4)))
    assert summary["missing"] == [{"line": 7, "names": "path 'gone.nii.gz'", "reference": "DP"}]
    assert summary["model"]["run_dir"] == str(run_dir) and summary["label_set"] == "paper4"
    assert summary["confusion"]["rows"][0] == "NC" and summary["confusion"]["columns"] == list(
        CLASSES
    )
    assert summary["per_label"][f"not_{lap}"] == {
        "accepts": others, "expressible": True, "k": 0, "n": 1, "value": 0.0,
        "ci": pytest.approx(list(wilson_interval(0, 1))),
    }  # fmt: skip
    counts = np.asarray(summary["confusion"]["counts"])
    assert counts.sum() == 5 and counts[0].sum() == 1  # the NC row

    with open(out / "series.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [(r["name"], r["correct"]) for r in table] == [
        ("case_EAP", "1"), ("case_LAP", "0"), ("case_PVP", "1"), ("case_DP", "1"), ("nc", "0"),
    ]  # fmt: skip
    assert [r["site"] for r in table] == ["siteEAP", "siteLAP", "sitePVP", "siteDP", "siteN"]
    assert (table[4]["reference"], table[4]["accepts"], table[4]["format"]) == ("NC", "NC", "dicom")
    # The summary's log score is the mean over the scored rows of -ln p(accepted phases).
    p_acc = [
        sum(float(r[f"p_{c}"]) for c in CLASSES if c in r["accepts"].split("|")) for r in table
    ]
    want = np.mean([-math.log(min(max(p, 1e-3), 1.0)) for p in p_acc])
    assert summary["nll"] == pytest.approx(want, abs=1e-4)
    for r in table:
        assert r["predicted"] == predicted[r["series_id"]]  # the same model, the same answer
        assert sum(float(r[f"p_{c}"]) for c in CLASSES) == pytest.approx(1.0, abs=1e-5)
    sheets = sorted(p.name for p in (out / "contact_sheets").iterdir())
    assert sheets == sorted(f"{r['name']}.png" for r in table)
    assert (out / "contact_sheet.png").stat().st_size > 0 and (out / "confusion.png").is_file()


def test_a_labelled_series_that_cannot_be_read_sets_exit_1(
    run_dir: Path, data: Path, tmp_path: Path, capsys
) -> None:
    broken = tmp_path / "broken.nii"
    _nifti(broken, "PVP", 3)
    raw = broken.read_bytes()
    broken.write_bytes(raw[: len(raw) // 3])  # header intact, voxels cut
    labels_csv = _write_csv(
        tmp_path / "labels.csv",
        ["file", "phase"],
        [["broken.nii", "PVP"], [str(data / "case_DP.nii.gz"), "DP"]],
    )
    out = tmp_path / "out"
    code = main(["evaluate", str(run_dir), str(tmp_path), str(data / "case_DP.nii.gz"),
                 "--labels", str(labels_csv), "--out", str(out), "--quiet", "--no-sheets"])  # fmt: skip
    assert code == 1
    stdout = capsys.readouterr().out
    assert "FAILED: 1 labelled series could not be read" in stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n"] == 1 and [f["name"] for f in summary["failed"]] == ["broken"]
    assert not (out / "contact_sheets").exists()


def test_bad_usage_exits_2_before_loading_a_model(tmp_path: Path, capsys) -> None:
    labels_csv = _write_csv(
        tmp_path / "l.csv", ["file", "phase", "accepts"], [["a", "AP", "EAP|x"]]
    )
    args = ["evaluate", str(tmp_path), str(tmp_path), "--labels", str(labels_csv), "--out",
            str(tmp_path / "o")]  # fmt: skip
    assert main(args) == 2
    assert f"{labels_csv}:2: accepts: unknown phase word 'x'" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "nope"), str(tmp_path), "--labels", "x", "--out",
                 "o"]) == 2  # fmt: skip
    assert "no such file or folder" in capsys.readouterr().err
