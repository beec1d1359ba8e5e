"""Rendered phantom volumes: anatomy, ROI medians per phase, confounders, determinism."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from phasejax.cohort import anatomy
from phasejax.cohort import kinetics as K
from phasejax.cohort.patient import Population, sample_patient
from phasejax.cohort.render import (
    Grid,
    Scanner,
    liver_kidney_range,
    noise_sd_for,
    patient_grid,
    render,
)
from phasejax.cohort.structures import Label
from phasejax.phases import Phase

MATRIX = 128  # small grids keep the suite fast; anatomy is analytic, so it scales


def _patient(seed: int, **confounders):
    p = sample_patient(f"R{seed}", seed, Population())
    if confounders:
        p = dataclasses.replace(p, confounders=dataclasses.replace(p.confounders, **confounders))
    return p


@pytest.fixture(scope="module")
def patients():
    return [_patient(21), _patient(22)]


def _grid(p, thickness: float = 5.0, **kw) -> Grid:
    return patient_grid(p, slice_thickness_mm=thickness, matrix=MATRIX, **kw)


def _times(p) -> dict[Phase, float | None]:
    trig = K.aorta_trigger_time(p)
    # 300 s: late enough that both patients show excretion, which the default rule needs for
    # DP (its boundary's p95 is ~237 s; at 180 s one patient in three shows none yet, and the
    # image-based rule calls that PVP)
    return {Phase.NC: None, Phase.EAP: trig + 7.0, Phase.LAP: trig + 17.0, Phase.PVP: 70.0,
            Phase.DP: 300.0}  # fmt: skip


def _roi(hu: np.ndarray, labels: np.ndarray, label: Label) -> float:
    m = labels == int(label)
    assert m.sum() > 20, f"{label.name} has only {m.sum()} voxels"
    return float(np.median(hu[m]))


@pytest.fixture(scope="module")
def phases(patients):
    """{patient index: {phase: (hu, labels)}} at typical protocol times."""
    out = {}
    for i, p in enumerate(patients):
        g = _grid(p)
        out[i] = {ph: render(p, t, g, Scanner(), noise_seed=5) for ph, t in _times(p).items()}
    return out


def test_patient_grid_covers_lung_bases_to_below_kidneys(patients):
    for p in patients:
        g = _grid(p, thickness=2.5)
        assert g.shape[1:] == (MATRIX, MATRIX)
        assert g.spacing[0] == 2.5
        fov = g.spacing[1] * MATRIX
        assert 320.0 <= fov <= 500.0
        z_lo, z_hi = anatomy.scan_range(p)
        assert g.origin[2] == pytest.approx(p.anatomy.table_z_mm + z_lo, abs=1e-3)
        assert g.z_positions()[-1] <= p.anatomy.table_z_mm + z_hi + 1e-6
        lm = anatomy.label_map(p, g)
        lab = lm.labels
        kz = [k for k in range(g.shape[0]) if (lab[k] == Label.LUNG).any()]
        assert kz and min(kz) > g.shape[0] // 3  # lung bases (costophrenic recesses) only up top
        assert (lab[-1] == Label.LUNG).any()  # top slice: lung bases above the liver dome
        assert not (lab[0] == Label.LIVER).any()  # bottom slice: below the liver
        kid = (lab == Label.KIDNEY_CORTEX).any(axis=(1, 2))
        assert not kid[0] and kid.any()  # below the kidneys' lower poles
        z_lo_i, z_hi_i = liver_kidney_range(lab)
        assert 0 < z_lo_i < z_hi_i < g.shape[0]
        assert (lab[z_hi_i - 1] == Label.LIVER).any() and not (lab[z_hi_i:] == Label.LIVER).any()


def test_heart_rests_on_the_diaphragm_in_the_top_input_slice():
    # Cohort v7: the heart sits on the central tendon, so the slab's top slice (the liver
    # dome) cuts it, also in the scans that start below the dome (patient 4 here).
    starts_below_dome = []
    for seed in (0, 4):
        p = _patient(seed)
        lay = anatomy._layout(p)
        starts_below_dome.append(lay.z_hi < lay.diaphragm.right_z)
        g = _grid(p)
        lab = anatomy.label_map(p, g).labels
        _, z_hi = liver_kidney_range(lab)
        top = lab[z_hi - 1]
        assert (top == Label.LIVER).any() and (top == Label.HEART).sum() > 100
        heart_z = np.nonzero((lab == Label.HEART).any(axis=(1, 2)))[0]
        # its lower pole below the liver dome, not floating above the slab
        assert heart_z.min() < z_hi - 1
    assert starts_below_dome == [False, True]


def test_one_scan_in_five_starts_below_the_liver_dome():
    below = [
        (lay.z_hi < lay.diaphragm.right_z, lay.z_hi >= lay.diaphragm.right_z - 30.0)
        for lay in (anatomy._layout(_patient(seed)) for seed in range(300))
    ]
    share = np.mean([b for b, _ in below])
    assert 0.12 < share < 0.28
    assert all(within for _, within in below)  # at most 30 mm below


def _centroid_mm(lab: np.ndarray, g: Grid, label: Label) -> np.ndarray:
    kz, ky, kx = np.nonzero(lab == int(label))
    x = g.origin[0] + g.spacing[2] * kx.mean()
    y = g.origin[1] + g.spacing[1] * ky.mean()
    z = g.origin[2] + g.spacing[0] * kz.mean()
    return np.array([x, y, z])


def test_anatomy_is_where_a_radiologist_expects_it(patients):
    for p in patients:
        g = _grid(p)
        lab = anatomy.label_map(p, g).labels
        c = {lb: _centroid_mm(lab, g, lb) for lb in (Label.LIVER, Label.SPLEEN, Label.AORTA,
             Label.IVC, Label.VERTEBRA, Label.STOMACH, Label.GALLBLADDER, Label.PANCREAS)}  # fmt: skip
        # LPS: +x is the patient's left. Liver right, spleen and stomach left.
        assert c[Label.LIVER][0] < -30.0 < 30.0 < c[Label.SPLEEN][0]
        assert c[Label.STOMACH][0] > 0.0 and c[Label.GALLBLADDER][0] < 0.0
        # Aorta left-anterior of the spine, IVC right of the aorta.
        assert c[Label.AORTA][0] > c[Label.VERTEBRA][0] > c[Label.IVC][0]
        assert c[Label.AORTA][1] < c[Label.VERTEBRA][1]
        assert c[Label.SPLEEN][2] > c[Label.PANCREAS][2] - 40.0
        # Kidneys paravertebral, one on each side, behind the aorta.
        kz, ky, kx = np.nonzero(lab == int(Label.KIDNEY_CORTEX))
        x = g.origin[0] + g.spacing[2] * kx
        assert (x < -40).sum() > 100 and (x > 40).sum() > 100
        assert not ((x > -25) & (x < 25)).any()
        # Image orientation: the liver (patient right) is on the image left.
        assert np.nonzero(lab == int(Label.LIVER))[2].mean() < MATRIX / 2
        # Every structure of a normal abdomen is present.
        missing = {Label.LIVER_LESION, Label.CYST}
        present = set(np.unique(lab).tolist())
        assert {int(x) for x in Label} - {int(x) for x in missing} <= present


def test_anatomy_varies_between_patients_and_is_the_same_in_every_phase(patients, phases):
    a, b = patients
    la, lb = anatomy.label_map(a, _grid(a)).labels, anatomy.label_map(b, _grid(b)).labels
    assert la.shape != lb.shape or (la != lb).mean() > 0.05
    vol = {lab: [(la == lab).sum(), (lb == lab).sum()] for lab in (Label.LIVER, Label.SPLEEN)}
    assert all(v[0] != v[1] for v in vol.values())
    first = phases[0][Phase.NC][1]
    for ph in (Phase.EAP, Phase.LAP, Phase.PVP, Phase.DP):
        assert np.array_equal(phases[0][ph][1], first)


def test_roi_medians_match_kinetics_and_reference_ranges(patients, phases):
    for i, p in enumerate(patients):
        r = {ph: (lambda lab, ph=ph, i=i: _roi(*phases[i][ph], lab)) for ph in phases[i]}
        for ph, t in _times(p).items():
            assert K.phase_of(p, t) == ph  # these protocol times land in the intended phase
            ref = K.compartment_hu(p, t)
            for lab in (Label.AORTA, Label.PORTAL_VEIN, Label.LIVER, Label.SPLEEN,
                        Label.KIDNEY_CORTEX, Label.KIDNEY_MEDULLA):  # fmt: skip
                assert r[ph](lab) == pytest.approx(ref[lab], abs=4.0), (ph, lab)
        nc = {lab: r[Phase.NC](lab) for lab in Label if (phases[i][Phase.NC][1] == lab).sum() > 20}
        assert 28.0 <= nc[Label.AORTA] <= 48.0
        assert 50.0 <= nc[Label.LIVER] <= 70.0
        assert 40.0 <= nc[Label.SPLEEN] <= 60.0
        assert 220.0 <= r[Phase.LAP](Label.AORTA) <= 420.0  # peak 250-400 absolute
        assert 120.0 <= r[Phase.PVP](Label.AORTA) <= 200.0  # ~150-180 absolute
        assert r[Phase.EAP](Label.PORTAL_VEIN) - nc[Label.PORTAL_VEIN] < 25.0  # unenhanced
        assert r[Phase.LAP](Label.PORTAL_VEIN) - nc[Label.PORTAL_VEIN] > 40.0  # enhancing
        assert r[Phase.PVP](Label.PORTAL_VEIN) >= r[Phase.PVP](Label.AORTA) - 10.0
        assert 10.0 <= r[Phase.LAP](Label.LIVER) - nc[Label.LIVER] <= 40.0
        # heavy: 150 mL; the liver gain spread (x0.75-1.4, cohort v3) adds ~10 HU
        assert 30.0 <= r[Phase.PVP](Label.LIVER) - nc[Label.LIVER] <= 110.0
        assert r[Phase.DP](Label.AORTA) < r[Phase.PVP](Label.AORTA)


def test_kidneys_corticomedullary_in_arterial_closing_in_pvp(phases):
    for i in phases:
        gap = {
            ph: _roi(*phases[i][ph], Label.KIDNEY_CORTEX)
            - _roi(*phases[i][ph], Label.KIDNEY_MEDULLA)
            for ph in (Phase.EAP, Phase.LAP, Phase.PVP)
        }
        assert gap[Phase.EAP] > 80.0 and gap[Phase.LAP] > 80.0
        # portal venous: the gap is closing (cohort v8: late corticomedullary at 70 s,
        # nephrographic from ~80-120 s, Yuh & Cohan 1999), the medulla not above the cortex
        assert 10.0 < gap[Phase.PVP] < 100.0 and gap[Phase.PVP] < 0.6 * gap[Phase.LAP]


def test_collecting_system_bright_only_in_delayed():
    # A delayed scan late enough for excretion in any patient, vs the same patient's PVP.
    for seed in (31, 32):
        p = _patient(seed)
        g = _grid(p)
        t_dp = p.physiology.excretion_onset_s + 60.0
        assert K.phase_of(p, t_dp) == Phase.DP
        dp = _roi(*render(p, t_dp, g, Scanner(), noise_seed=1), Label.KIDNEY_COLLECTING)
        pvp = _roi(*render(p, 70.0, g, Scanner(), noise_seed=1), Label.KIDNEY_COLLECTING)
        assert dp > 150.0
        assert pvp < 40.0


def test_oral_contrast_bright_in_every_phase():
    p = _patient(23, oral_contrast=True, oral_contrast_hu=300.0)
    plain = _patient(23)
    g = _grid(p)
    for t in _times(p).values():
        assert _roi(*render(p, t, g, Scanner(), noise_seed=2), Label.BOWEL_CONTENT) > 200.0
        assert _roi(*render(plain, t, g, Scanner(), noise_seed=2), Label.BOWEL_CONTENT) < 40.0


def test_kvp_scales_rendered_enhancement(patients):
    p = patients[0]
    g = _grid(p)
    t = _times(p)[Phase.LAP]

    def delta(kvp: float) -> float:
        s = Scanner(kvp=kvp, noise_sd=4.0)
        return _roi(*render(p, t, g, s, noise_seed=1), Label.AORTA) - _roi(
            *render(p, None, g, s, noise_seed=1), Label.AORTA
        )

    d120, d80, d100 = delta(120.0), delta(80.0), delta(100.0)
    assert d80 / d120 == pytest.approx(1.6, rel=0.03)
    assert d100 / d120 == pytest.approx(1.25, rel=0.03)


def test_render_is_deterministic_and_seeded(patients):
    p = patients[0]
    g = _grid(p)
    a_hu, a_lab = render(p, 40.0, g, Scanner(), noise_seed=9)
    anatomy.clear_cache()  # rebuilt from scratch: still identical
    b_hu, b_lab = render(p, 40.0, g, Scanner(), noise_seed=9)
    assert np.array_equal(a_hu, b_hu) and np.array_equal(a_lab, b_lab)
    assert a_hu.dtype == np.float32 and a_lab.dtype == np.uint8 and a_hu.shape == g.shape
    c_hu, c_lab = render(p, 40.0, g, Scanner(), noise_seed=10)
    assert np.array_equal(c_lab, a_lab)
    assert np.abs(c_hu - a_hu).mean() > 3.0  # new noise realisation
    other = sample_patient("R21", 99, Population())
    assert not np.array_equal(anatomy.label_map(other, _grid(other)).labels, a_lab)


def test_noise_level_and_kernel_texture(patients):
    p = patients[0]
    g = _grid(p)
    air = anatomy.label_map(p, g).labels == Label.BACKGROUND  # no tissue texture in air
    for kernel in ("soft", "standard", "sharp"):
        s = Scanner(noise_sd=15.0, kernel=kernel)
        hu, _ = render(p, None, g, s, noise_seed=4)
        assert np.std(hu[air]) == pytest.approx(noise_sd_for(p, s), rel=0.08), kernel
    # Noise grain: neighbouring pixels correlate with a soft kernel, hardly with a sharp one
    # (checked at 512 px of ~0.7 mm, where the kernels differ by more than a pixel).
    g512 = patient_grid(p, slice_thickness_mm=40.0, matrix=512)

    def lag1(kernel: str) -> float:
        hu, lab = render(p, None, g512, Scanner(noise_sd=15.0, kernel=kernel), noise_seed=4)
        n = (hu + 1000.0)[lab == Label.BACKGROUND].reshape(-1)
        h = (hu + 1000.0)[:, :, :-1][(lab[:, :, :-1] == 0) & (lab[:, :, 1:] == 0)]
        h2 = (hu + 1000.0)[:, :, 1:][(lab[:, :, :-1] == 0) & (lab[:, :, 1:] == 0)]
        assert n.size > 1000
        return float(np.corrcoef(h, h2)[0, 1])

    assert lag1("soft") > 0.5 > 0.25 > lag1("sharp")
    with pytest.raises(ValueError, match="kernel"):
        Scanner(kernel="bone")


def test_parenchyma_has_texture_and_spleen_is_arciform_early(patients):
    p = patients[1]
    g = _grid(p)
    hu, lab = render(p, None, g, Scanner(noise_sd=0.0), noise_seed=0)
    assert np.std(hu[lab == Label.LIVER]) > 2.0  # textured, not a flat fill
    s = Scanner(noise_sd=0.0)
    lap, _ = render(p, _times(p)[Phase.LAP], g, s, noise_seed=0)
    pvp, _ = render(p, 70.0, g, s, noise_seed=0)
    sp = lab == Label.SPLEEN
    assert np.std(lap[sp]) > 2.0 * np.std(pvp[sp])


def test_small_fov_cuts_the_body_and_circle_is_padded(patients):
    p = patients[0]
    g = _grid(p, fov_mm=250.0)
    lab = anatomy.label_map(p, g).labels
    mid = g.shape[0] // 2
    assert lab[mid, MATRIX // 2, 0] != Label.BACKGROUND  # the body runs off the image edge
    hu, _ = render(p, 70.0, g, Scanner(fov_mm=250.0), noise_seed=1)
    assert hu[mid, 0, 0] == -1024.0  # corner outside the reconstruction circle
    assert hu[mid, MATRIX // 2, MATRIX // 2] != -1024.0


def test_lesions_and_cysts_sit_in_their_organs():
    p = _patient(24, n_lesions=3, n_cysts=3, fatty_liver=False, liver_fat_fraction=0.02)
    g = _grid(p, thickness=2.5)
    lab = anatomy.label_map(p, g).labels
    assert (lab == Label.LIVER_LESION).sum() > 10
    assert (lab == Label.CYST).sum() > 10
    les = np.argwhere(lab == Label.LIVER_LESION)
    # every lesion voxel has liver (or lesion/vessel) around it in its slice
    k, i, j = les[len(les) // 2]
    around = lab[k, max(i - 8, 0) : i + 9, max(j - 8, 0) : j + 9]
    assert (around == Label.LIVER).any()
    t = _times(p)[Phase.LAP]
    hu, _ = render(p, t, g, Scanner(noise_sd=5.0), noise_seed=1)
    assert _roi(hu, lab, Label.LIVER_LESION) > _roi(hu, lab, Label.LIVER) + 25.0
    hu, _ = render(p, 70.0, g, Scanner(noise_sd=5.0), noise_seed=1)
    assert _roi(hu, lab, Label.LIVER_LESION) < _roi(hu, lab, Label.LIVER)
    assert abs(_roi(hu, lab, Label.CYST) - 8.0) < 8.0


def test_liver_kidney_range_errors():
    lab = np.zeros((4, 8, 8), dtype=np.uint8)
    with pytest.raises(ValueError, match="no liver"):
        liver_kidney_range(lab)
    lab[3, 2, 2] = Label.LIVER
    with pytest.raises(ValueError, match="no kidney"):
        liver_kidney_range(lab)
    lab[1, 4, 4] = Label.KIDNEY_MEDULLA
    assert liver_kidney_range(lab) == (1, 4)
    with pytest.raises(ValueError, match="slice_thickness"):
        patient_grid(_patient(1), slice_thickness_mm=0.0)
