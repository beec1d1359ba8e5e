"""`phasejax cohort validate`: ROI medians, reference marking, figures."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from phasejax import cli
from phasejax.cohort import generate as G
from phasejax.cohort.structures import Label
from phasejax.cohort.validate import (
    PHASES,
    REFERENCE,
    ROWS,
    ValidationError,
    body_box,
    hu_table,
    load_dicom_series,
    montage_levels,
    structure_medians,
    validate,
)
from phasejax.data.cache import CacheSpec

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cohort") / "tiny"
    G.generate("tiny", out, fmt="cache", cache_spec=CacheSpec(size=64), progress=False)
    return out


@pytest.fixture(scope="module")
def validated(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """`phasejax cohort validate` run once (figures are the slow part): (out dir, stdout)."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("validation")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert cli.main(["cohort", "validate", str(tiny), "--out", str(out)]) == 0
    return out, buf.getvalue()


def test_validate_writes_tables_and_figures(validated: tuple[Path, str]) -> None:
    out, stdout = validated
    with open(out / "hu_table.csv", newline="") as f:
        table = list(csv.DictReader(f))
    n_rows = len(ROWS) + 1  # + the derived cortex - medulla gap
    assert len(table) == n_rows * len(PHASES)
    assert {r["in_range"] for r in table} <= {"yes", "no", ""}
    n_in = sum(r["in_range"] == "yes" for r in table)
    n_marked = sum(r["in_range"] != "" for r in table)
    assert f"reference cells in range: {n_in}/{n_marked}" in stdout
    assert n_in > n_marked - n_in  # the phantom is calibrated to DESIGN.md
    # Aorta: bright in arterial phases, far above its unenhanced value.
    aorta = {r["phase"]: r for r in table if r["structure"] == "aorta"}
    measured = [p for p in ("EAP", "LAP") if aorta[p]["n"] != "0"]
    assert measured and all(float(aorta[p]["median"]) > 150 for p in measured)
    md = (out / "hu_table.md").read_text()
    assert "| aorta |" in md and ("✓" in md or "✗" in md)
    stems = ["curves"] + [
        f"montage_{s}" for s in ("INT", "EXT-A", "EXT-B", "EXT-C", "EXT-D", "EXT-E")
    ]
    for stem in stems:
        assert (out / f"{stem}.png").read_bytes()[:8] == PNG_MAGIC
        assert (out / f"{stem}.pdf").read_bytes()[:5] == b"%PDF-"


def test_validate_errors_name_the_problem(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["cohort", "validate", str(tmp_path / "nothing")]) == 1
    assert "no labels.csv" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "labels.csv").write_text("series_id,patient_id\n")
    with pytest.raises(ValidationError, match="no series"):
        validate(tmp_path / "empty", progress=False)


def test_structure_medians_of_known_volume() -> None:
    lab = np.zeros((4, 20, 20), np.uint8)
    hu = np.full(lab.shape, -100.0, np.float32)
    lab[:, 2:10, 2:10] = Label.AORTA
    hu[:, 2:10, 2:10] = 100.0  # rim: partial volume
    hu[:, 3:9, 3:9] = 300.0  # core
    lab[:, 12:18, 12:18] = Label.LIVER
    hu[:, 12:18, 12:18] = 60.0
    lab[:, 12:18, 2:8] = Label.KIDNEY_CORTEX
    hu[:, 12:18, 2:8] = 200.0
    lab[:, 14:16, 4:6] = Label.KIDNEY_MEDULLA
    hu[:, 14:16, 4:6] = 70.0
    m = structure_medians(hu, lab)
    assert m["aorta"] == 300.0  # eroded: the rim does not count
    assert m["liver"] == 60.0
    assert m["renal medulla"] == 70.0  # 16 voxels: too few to erode, whole mask used
    assert m["cortex - medulla"] == m["renal cortex"] - 70.0
    assert "spleen" not in m


def test_reference_marking() -> None:
    row = {"true_phase": "PVP"}
    table = hu_table(
        [(row, {"liver": 120.0, "aorta": 250.0}), (row, {"liver": 118.0, "aorta": 260.0})]
    )
    cell = {(r["structure"], r["phase"]): r for r in table}
    assert cell[("liver", "PVP")]["median"] == 119.0 and cell[("liver", "PVP")]["in_range"] == "yes"
    assert REFERENCE["aorta"]["PVP"].hi < 255
    assert cell[("aorta", "PVP")]["in_range"] == "no"
    assert cell[("liver", "EAP")]["n"] == 0 and cell[("liver", "EAP")]["in_range"] == ""
    assert cell[("pancreas", "PVP")]["reference"] == ""  # DESIGN.md gives no number


def test_montage_levels_and_crop() -> None:
    lab = np.zeros((60, 32, 32), np.uint8)  # index 0 = most inferior
    lab[30:50, 5:25, 5:25] = Label.LIVER
    lab[34:37, 10:14, 10:14] = Label.PORTAL_VEIN
    lab[35, 10:16, 10:16] = Label.PORTAL_VEIN  # largest portal cross-section at z=35
    lab[5:21, 20:26, 20:26] = Label.KIDNEY_CORTEX
    lab[12, 19:27, 19:27] = Label.KIDNEY_CORTEX  # widest kidney slice
    levels = montage_levels(lab, slice_mm=5.0)
    assert levels == {"liver dome": 46, "hilum": 35, "kidneys": 12}
    with pytest.raises(ValidationError, match="liver"):
        montage_levels(np.zeros((3, 4, 4), np.uint8), slice_mm=5.0)
    vol = np.full((2, 40, 40), -1000.0)
    vol[:, 10:20, 8:30] = 40.0
    ys, xs = body_box([vol], margin=0)
    assert (ys.start, ys.stop, xs.start, xs.stop) == (4, 26, 8, 30)


def test_dicom_source_reads_series_back_in_z_order(tmp_path: Path) -> None:
    spec = CacheSpec(size=64)
    job = next(
        j
        for j in G._jobs(tmp_path, G.get_preset("tiny"), 0, "dicom", spec, 0.0)
        if j.site == "EXT-E"
    )
    (tmp_path / ".progress").mkdir()
    rows = G.run_exam(job)
    shared = [r for r in rows if r["acquisition"]]
    assert len(shared) == 2
    vols = []
    for r in shared:
        hu, lab, px = load_dicom_series(tmp_path, r)
        assert hu.shape == lab.shape and hu.shape[0] == int(r["num_slices"])
        assert px == pytest.approx(float(r["pixel_spacing"]), abs=1e-4)
        vols.append((hu, lab))
    (a_hu, lab), (p_hu, _) = vols
    # Only the right acquisition is read: arterial aorta brighter than portal-venous aorta.
    aorta = lab == Label.AORTA
    assert np.median(a_hu[aorta]) > np.median(p_hu[aorta]) + 50
    z_liver = np.nonzero((lab == Label.LIVER).any(axis=(1, 2)))[0]
    z_kidney = np.nonzero((lab == Label.KIDNEY_CORTEX).any(axis=(1, 2)))[0]
    assert z_kidney.min() < z_liver.max()  # index 0 inferior, as the cache


def test_curve_phase_windows_follow_the_cohort_delayed_rule() -> None:
    from phasejax.cohort.validate import population_curves

    def dp_start(rule: str) -> float:
        _, _, windows = population_curves(n_patients=12, delayed_rule=rule)
        return min(t0 for t0, _, phase in windows if phase == "DP")

    # excretion comes after the equilibrium image in most patients: DP begins later
    assert dp_start("excretion") > dp_start("excretion_or_equilibrium") + 10.0
