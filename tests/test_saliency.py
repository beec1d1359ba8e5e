"""Anatomical share of saliency maps, representative-series choice, saliency files and figures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from phasejax.cohort.structures import NUM_LABELS, Label
from phasejax.data.augment import resample_slices
from phasejax.data.cache import CacheSpec, finalize, init_cache, write_entry
from phasejax.plotting.saliency import (
    draw_saliency,
    load_saliency,
    plot_saliency_overlays,
    plot_saliency_shares,
)
from phasejax.saliency import (
    GROUPS,
    anatomical_share,
    choose_representative,
    markdown_table,
    resize_labels,
    summarize_saliency,
)

L = Label

# --------------------------------------------------------------------------- anatomical_share


def test_anatomical_share_gives_exact_shares_and_area_baselines():
    mask = np.array(
        [
            [L.AORTA, L.AORTA, L.PORTAL_VEIN, L.PORTAL_VEIN],
            [L.LIVER, L.LIVER, L.LIVER, L.LIVER],
            [L.MUSCLE, L.MUSCLE, L.RENAL_VEIN, L.VERTEBRA],
            [L.BACKGROUND, L.BACKGROUND, L.BACKGROUND, L.BACKGROUND],
        ],
        dtype=np.uint8,
    )
    cam = np.array(
        [
            [3.0, 1.0, 2.0, 0.0],
            [0.5, 0.5, 0.5, 0.5],
            [0.0, 0.0, 0.0, 0.0],
            [2.0, 0.0, 0.0, 0.0],
        ]
    )  # total mass 10
    r = anatomical_share(cam, mask)
    assert list(r["share"]) == list(GROUPS)
    assert r["cam_mass"] == 10.0 and r["pixels"] == 16
    expected_share = {
        "aorta + arteries": 0.4, "portal / splenic / SMV": 0.2, "hepatic veins + IVC": 0.0,
        "kidneys": 0.0, "liver": 0.2, "spleen": 0.0, "other body": 0.0, "outside body": 0.2,
    }  # fmt: skip
    expected_area = {
        "aorta + arteries": 2 / 16, "portal / splenic / SMV": 2 / 16, "hepatic veins + IVC": 0.0,
        "kidneys": 0.0, "liver": 4 / 16, "spleen": 0.0, "other body": 4 / 16,
        "outside body": 4 / 16,
    }  # fmt: skip
    assert r["share"] == pytest.approx(expected_share)
    assert r["area"] == pytest.approx(expected_area)
    assert r["enrichment"]["aorta + arteries"] == pytest.approx(3.2)
    assert r["enrichment"]["liver"] == pytest.approx(0.8)
    assert r["enrichment"]["other body"] == 0.0
    assert np.isnan(r["enrichment"]["kidneys"])  # absent group: no baseline to compare with
    # A uniform map reproduces the area baseline exactly: the baseline's definition.
    u = anatomical_share(np.ones((4, 4)), mask)
    assert u["share"] == pytest.approx(u["area"])


@pytest.mark.parametrize(
    "label,group",
    [
        (L.AORTA, "aorta + arteries"),
        (L.CELIAC_SMA, "aorta + arteries"),
        (L.RENAL_ARTERY, "aorta + arteries"),
        (L.SPLENIC_VEIN, "portal / splenic / SMV"),
        (L.SMV, "portal / splenic / SMV"),
        (L.HEPATIC_VEIN, "hepatic veins + IVC"),
        (L.IVC, "hepatic veins + IVC"),
        (L.KIDNEY_COLLECTING, "kidneys"),
        (L.KIDNEY_MEDULLA, "kidneys"),
        (L.LIVER_LESION, "liver"),
        (L.SPLEEN, "spleen"),
        (L.RENAL_VEIN, "other body"),
        (L.BOWEL_CONTENT, "other body"),
        (L.BACKGROUND, "outside body"),
    ],
)
def test_default_groups_put_each_structure_where_its_enhancement_belongs(label, group):
    mask = np.arange(NUM_LABELS, dtype=np.uint8)  # one pixel of every label
    cam = (mask == label).astype(np.float64)
    r = anatomical_share(cam, mask)
    assert r["share"][group] == 1.0
    assert sum(r["area"].values()) == pytest.approx(1.0)


def test_anatomical_share_refuses_ambiguous_groups_and_bad_maps():
    mask = np.array([[1, 2], [3, 0]], np.uint8)
    cam = np.ones((2, 2))
    with pytest.raises(ValueError, match="label 2 is in two groups"):
        anatomical_share(cam, mask, {"a": (1, 2), "b": (2,)})
    with pytest.raises(ValueError, match=r"labels \[3\] belong to no group"):
        anatomical_share(cam, mask, {"a": (0, 1, 2)})
    with pytest.raises(ValueError, match="at most one remainder"):
        anatomical_share(cam, mask, {"a": None, "b": None})
    with pytest.raises(ValueError, match="shape"):
        anatomical_share(np.ones((2, 3)), mask)
    with pytest.raises(ValueError, match="non-negative"):
        anatomical_share(-cam, mask)
    zero = anatomical_share(np.zeros((2, 2)), mask, {"a": (1,), "rest": None})
    assert np.isnan(zero["share"]["a"]) and zero["area"] == {"a": 0.25, "rest": 0.75}


# --------------------------------------------------------------------------- selection / grid


def test_choose_representative_takes_median_confidence_correct_series_from_distinct_patients():
    # phase 0: four correct rows with p = .875 .625 .75 .5 (median .6875), plus row 4 that is
    # labelled 0 but predicted 1; phase 1: only a wrong row; phase 2: none.
    labels = [0, 0, 0, 0, 0, 1]
    probs = np.array(
        [
            [0.875, 0.125, 0.0],
            [0.625, 0.375, 0.0],
            [0.75, 0.25, 0.0],
            [0.5, 0.25, 0.25],
            [0.25, 0.75, 0.0],
            [0.75, 0.25, 0.0],
        ]
    )
    patients = ["B", "A", "A", "C", "D", "E"]
    # distance to the median: rows 1 and 2 (.0625) then 0 and 3 (.1875); row 2 shares
    # patient A with row 1, so it comes after the other patients.
    assert choose_representative(labels, probs, patients, 2) == {0: [1, 0], 1: [], 2: []}
    assert choose_representative(labels, probs, patients, 3)[0] == [1, 0, 3]
    assert choose_representative(labels, probs, patients, 9)[0] == [1, 0, 3, 2]
    with pytest.raises(ValueError, match="per_phase"):
        choose_representative(labels, probs, patients, 0)


@pytest.mark.parametrize("h,size", [(64, 16), (64, 48), (128, 64)])
def test_resized_labels_stay_registered_with_the_resized_image(h, size):
    # A ramp image (value = column index) is resampled linearly, so the output holds the input
    # coordinate each output pixel sampled; the nearest label must be within half a pixel.
    ramp = np.broadcast_to(np.arange(h, dtype=np.float32), (1, h, h))
    sampled = resample_slices(ramp, size)[0, size // 2]
    labels = resize_labels(np.broadcast_to(np.arange(h, dtype=np.uint8), (1, h, h)), size)
    inner = slice(2, size - 2)  # the anti-aliasing prefilter bends the ramp at the borders
    assert np.all(np.abs(labels[0, size // 2, inner] - sampled[inner]) <= 0.5 + 1e-4)
    assert labels.shape == (1, size, size) and labels.dtype == np.uint8


# --------------------------------------------------------------------------- saliency files


def _phantom(phase: str, size: int, slices: int) -> tuple[np.ndarray, np.ndarray]:
    """HU volume and its organ labels: body, aorta, liver with a portal vein, two kidneys."""
    from fake_cache import PHASE_HU

    hu = PHASE_HU[phase]
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    c, s = size / 2, size / 32

    def disc(cy, cx, r):
        return (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2

    lab = np.zeros((size, size), np.uint8)
    lab[disc(c, c, 13 * s)] = L.MUSCLE
    lab[disc(c - 2 * s, c - 6 * s, 5 * s)] = L.LIVER
    lab[disc(c - 2 * s, c - 4 * s, 1.5 * s)] = L.PORTAL_VEIN
    lab[disc(c + 4 * s, c + 1 * s, 2 * s)] = L.AORTA
    for side in (-1, 1):
        lab[disc(c + 4 * s, c + side * 8 * s, 3 * s)] = L.KIDNEY_CORTEX
        lab[disc(c + 4 * s, c + side * 8 * s, 1.5 * s)] = L.KIDNEY_MEDULLA
    value = {
        L.BACKGROUND: -1000, L.MUSCLE: 45, L.LIVER: hu["liver"], L.PORTAL_VEIN: hu["portal"],
        L.AORTA: hu["aorta"], L.KIDNEY_CORTEX: hu["cortex"], L.KIDNEY_MEDULLA: hu["medulla"],
    }  # fmt: skip
    img = np.zeros((size, size), np.float32)
    for k, v in value.items():
        img[lab == k] = v
    vol = np.broadcast_to(img, (slices, size, size))
    vol = vol + np.arange(slices, dtype=np.float32)[:, None, None]  # tell slices apart
    return vol.astype(np.int16), np.broadcast_to(lab, (slices, size, size)).copy()


def make_masked_cache(root: Path, *, size: int = 32, slices: int = 8) -> Path:
    """Test split of 2 patients x 4 phases; patient P000 has organ masks, P001 has none."""
    init_cache(root, CacheSpec(spacing_z=5.0, size=size), source="tests/test_saliency.py")
    for p in range(2):
        for phase in ("EAP", "LAP", "PVP", "DP"):
            vol, lab = _phantom(phase, size, slices)
            row = {
                "series_id": f"p{p:03d}_{phase}", "patient_id": f"P{p:03d}", "split": "test",
                "site": "siteA", "phase": phase, "num_slices": slices, "spacing_z": 5.0,
                "spacing_xy": 1.0, "z_lo": 1, "z_hi": slices - 1, "source": "test",
            }  # fmt: skip
            write_entry(root, row, vol, lab if p == 0 else None)
    finalize(root)
    return root


def tiny_config(cache: Path, strategy: str = "one_step"):
    from phasejax.config import Config, DataConfig, ModelConfig, TrainConfig

    return Config(
        name="saliency-test",
        data=DataConfig(cache_dir=str(cache), image_size=32, num_slices=3, cache_size=32),
        model=ModelConfig(depth="tiny", width=4, strategy=strategy),
        train=TrainConfig(batch_size=8, steps=1),
    )


def fake_predictions(cache: Path) -> dict[str, np.ndarray]:
    """What a run's results.json would hold: every series right, P001 more confident (both
    equally far from the median, so the row order decides)."""
    out = {}
    for p, conf in ((0, 0.625), (1, 0.875)):
        for k, phase in enumerate(("EAP", "LAP", "PVP", "DP")):
            probs = np.full(4, (1 - conf) / 3)
            probs[k] = conf
            out[f"p{p:03d}_{phase}"] = probs
    return out


@pytest.fixture(scope="module")
def saliency_run(tmp_path_factory):
    from flax import nnx

    from phasejax.models import build_classifier
    from phasejax.saliency import saliency_for_model

    root = tmp_path_factory.mktemp("saliency")
    cache = make_masked_cache(root / "cache")
    cfg = tiny_config(cache, "two_step")
    model = build_classifier(cfg, rngs=nnx.Rngs(0))
    npz = saliency_for_model(
        model, cfg, cache, root / "run", split="test", per_phase=2,
        predictions=fake_predictions(cache),
    )  # fmt: skip
    return npz, cache, cfg, model


def test_saliency_file_holds_inputs_maps_masks_and_shares_of_each_phase(saliency_run):
    from phasejax.data.cache import load_mask, load_volume
    from phasejax.data.pipeline import preprocess
    from phasejax.models.gradcam import grad_cam

    npz, cache, cfg, model = saliency_run
    d = load_saliency(npz)
    assert d["classes"].tolist() == ["EAP", "LAP", "PVP", "DP"]
    # per phase: both patients (different patients first), the median-confidence tie broken
    # by series id; phases in label-set order
    assert d["series_id"].tolist() == [
        "p000_EAP", "p001_EAP", "p000_LAP", "p001_LAP",
        "p000_PVP", "p001_PVP", "p000_DP", "p001_DP",
    ]  # fmt: skip
    assert d["phase"].tolist() == ["EAP", "EAP", "LAP", "LAP", "PVP", "PVP", "DP", "DP"]
    assert d["networks"].tolist() == ["step1", "step2"]
    n = 8
    assert d["hu"].shape == d["cam"].shape == d["mask"].shape == (n, 3, 32, 32)
    assert d["cam_by_network"].shape == (n, 2, 3, 32, 32)
    assert d["has_mask"].tolist() == [True, False] * 4
    # "even" selection of 3 slices in [1, 7): the centres of three 2-slice parts
    assert d["slice_index"].tolist() == [[2, 4, 6]] * n
    # HU slices on the input grid (32 px cache = 32 px input: the cached values) and masks
    vol = load_volume(cache, "p000_LAP", mmap=False)
    np.testing.assert_array_equal(d["hu"][2], vol[[2, 4, 6]].astype(np.float32))
    np.testing.assert_array_equal(d["mask"][2], load_mask(cache, "p000_LAP")[[2, 4, 6]])
    assert not d["mask"][3].any()  # no mask in the cache: zeros, flagged by has_mask
    # the maps are Grad-CAM of the pipeline's input for the true phase, at the "auto" layer:
    # the tiny net's last stage is 4 x 4 at 32 px (< 6), so stage 1 (8 x 8, stride 4)
    x = preprocess(vol, 1, 7, cfg.data)[None]
    g = grad_cam(model, x, [1], layer="auto")
    np.testing.assert_allclose(d["cam"][2], g.cam[0], atol=1e-5)
    assert (g.layer, g.stride, g.grid) == ("stage1", 4, (8, 8))
    assert (str(d["cam_layer"]), int(d["cam_stride"])) == ("stage1", 4)
    meta = d["meta"]
    assert (meta["layer_request"], meta["layer"], meta["stride"], meta["grid"]) == (
        "auto", "stage1", 4, [8, 8],
    )  # fmt: skip
    assert not np.allclose(d["cam"][2], grad_cam(model, x, [1], layer="last").cam[0], atol=1e-3)
    # shares: exact area fractions of the stored mask, masses summing to 1; NaN without mask
    m = d["mask"][0]
    groups = d["groups"].tolist()
    assert d["area"][0, groups.index("kidneys")] == pytest.approx(
        np.isin(m, [L.KIDNEY_CORTEX, L.KIDNEY_MEDULLA]).mean()
    )
    assert d["area"][0, groups.index("aorta + arteries")] == pytest.approx((m == L.AORTA).mean())
    assert (d["cam"][0::2].max(axis=(1, 2, 3)) > 0).sum() >= 2  # shares below are checked
    for i in range(0, n, 2):
        assert d["area"][i].sum() == pytest.approx(1.0)
        if d["cam"][i].max() > 0:
            assert d["share"][i].sum() == pytest.approx(1.0)
            expected = anatomical_share(d["cam"][i], d["mask"][i])["share"]
            np.testing.assert_allclose(d["share"][i], [expected[g] for g in groups])
    assert np.all(np.isnan(d["share"][1::2])) and np.all(np.isnan(d["area"][1::2]))
    np.testing.assert_allclose(d["probs"].sum(axis=1), 1.0, rtol=1e-5)
    assert d["meta"]["selection_source"] == "results.json"


def test_saliency_summary_reports_masked_series_only(saliency_run):
    npz = saliency_run[0]
    summary = json.loads((npz.parent / "saliency.json").read_text())
    assert summary == json.loads(json.dumps(summary))  # plain JSON (NaN written as null)
    assert (summary["meta"]["layer"], summary["meta"]["stride"]) == ("stage1", 4)
    eap = summary["per_phase"]["EAP"]
    assert eap["series"] == ["p000_EAP", "p001_EAP"]
    d = load_saliency(npz)
    # the mean over masked series = P000's own shares
    assert eap["area"]["liver"] == pytest.approx(d["area"][0, d["groups"].tolist().index("liver")])
    defining = summary["phase_defining_groups"]
    assert defining == ["aorta + arteries", "portal / splenic / SMV", "hepatic veins + IVC",
                        "kidneys"]  # fmt: skip
    assert eap["phase_defining_area"] == pytest.approx(sum(eap["area"][g] for g in defining))
    assert set(eap["by_network"]) == {"step1", "step2"}
    assert summary["groups"]["kidneys"] == ["renal cortex", "renal medulla",
                                            "renal collecting system"]  # fmt: skip
    assert summarize_saliency(npz)["per_phase"]["DP"]["series"] == ["p000_DP", "p001_DP"]
    table = markdown_table(summary).splitlines()
    assert table[0].startswith("| phase | n | aorta + arteries |")
    assert len(table) == 2 + 4
    for line, phase in zip(table[2:], ["EAP", "LAP", "PVP", "DP"]):
        e = summary["per_phase"][phase]
        assert line.startswith(f"| {phase} | 2 | ")
        share, area = e["share"]["liver"], e["area"]["liver"]  # share null: the map is all 0
        cells = line.strip("| ").split(" | ")
        liver = cells[2 + list(e["share"]).index("liver")]
        assert liver == ("n/a" if share is None else f"{100 * share:.1f}% ({100 * area:.1f}%)")


def test_compute_saliency_from_a_run_directory_reuses_its_result(saliency_run, tmp_path):
    from flax import nnx

    from phasejax.saliency import compute_saliency
    from phasejax.train.checkpoint import Checkpointer
    from phasejax.train.optim import create_optimizer

    _, cache, cfg, model = saliency_run
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(cfg.to_json())
    with Checkpointer(run / "checkpoints") as ck:
        ck.save(1, nnx.state(model), nnx.state(create_optimizer(model, cfg.train)), which="best")
        ck.wait()
    preds = fake_predictions(cache)
    results = {
        "classes": ["EAP", "LAP", "PVP", "DP"],
        "splits": {"test": {"predictions": [
            {"series_id": k, "probs": v.tolist()} for k, v in sorted(preds.items())
        ]}},
    }  # fmt: skip
    (run / "results.json").write_text(json.dumps(results))

    npz = compute_saliency(run, cache, per_phase=1)
    assert npz == run / "saliency.npz" and (run / "saliency.json").is_file()
    d = load_saliency(npz)
    assert d["series_id"].tolist() == ["p000_EAP", "p000_LAP", "p000_PVP", "p000_DP"]
    assert d["meta"]["selection_source"] == "results.json"
    assert d["meta"]["checkpoint"] == "best" and d["meta"]["run_dir"] == str(run)
    # the restored checkpoint explains like the model that was saved
    ref = load_saliency(saliency_run[0])
    np.testing.assert_allclose(d["cam"], ref["cam"][0::2], atol=1e-5)
    stamp = npz.stat().st_mtime_ns
    assert compute_saliency(run, cache, per_phase=1) == npz  # reused, not recomputed
    assert npz.stat().st_mtime_ns == stamp
    # another layer is not the stored result: recomputed, and recorded as asked
    compute_saliency(run, cache, per_phase=1, layer="last")
    assert npz.stat().st_mtime_ns != stamp
    last = load_saliency(npz)["meta"]
    assert (last["layer_request"], last["layer"], last["stride"]) == ("last", "stage2", 8)
    (run / "results.json").unlink()
    compute_saliency(run, cache, per_phase=1, force=True)  # no results: classify live
    assert load_saliency(npz)["meta"]["selection_source"] == "live"


# --------------------------------------------------------------------------- figures


def small_npz(path: Path, *, masks: bool = True) -> Path:
    """A hand-made saliency.npz (no model): 4 phases, EAP with 2 series (the second with an
    empty map), DP with none."""
    rng = np.random.default_rng(0)
    classes = ["EAP", "LAP", "PVP", "DP"]
    phases = ["EAP", "EAP", "LAP", "PVP"]
    n, s, h = len(phases), 3, 24
    mask = np.zeros((n, s, h, h), np.uint8)
    mask[:, :, 4:20, 4:20] = L.MUSCLE
    mask[:, :, 8:12, 8:12] = L.AORTA
    mask[:, :, 12:18, 12:18] = L.LIVER
    cam = rng.random((n, s, h, h)).astype(np.float32)
    cam[1] = 0.0  # an empty map (every channel argued against the phase): no shares
    groups = list(GROUPS)
    share = np.stack([[anatomical_share(c, m)["share"][g] for g in groups]
                      for c, m in zip(cam, mask)])  # fmt: skip
    area = np.stack([[anatomical_share(c, m)["area"][g] for g in groups]
                     for c, m in zip(cam, mask)])  # fmt: skip
    if not masks:
        share[:] = np.nan
        area[:] = np.nan
    np.savez_compressed(
        path,
        classes=np.asarray(classes), series_id=np.asarray([f"s{i}" for i in range(n)]),
        patient_id=np.asarray([f"P{i}" for i in range(n)]), site=np.asarray(["a"] * n),
        phase=np.asarray(phases), predicted=np.asarray(phases),
        probs=np.full((n, 4), 0.25, np.float32), selection_probs=np.full((n, 4), 0.25),
        slice_index=np.tile([3, 5, 7], (n, 1)), hu=rng.normal(40, 80, (n, s, h, h)),
        cam=cam, networks=np.asarray(["net"]), cam_by_network=cam[:, None],
        mask=mask, has_mask=np.full(n, masks), groups=np.asarray(groups),
        phase_defining=np.asarray(["aorta + arteries", "kidneys"]), share=share, area=area,
        share_by_network=share[:, None],
        meta=np.asarray(json.dumps({"split": "test", "strategy": "one_step",
                                    "slice_mode": "channels", "layer": "stage3",
                                    "stride": 16})),
    )  # fmt: skip
    return path


def test_saliency_figures_render_from_a_small_npz(tmp_path):
    npz = small_npz(tmp_path / "saliency.npz")
    sal = load_saliency(tmp_path)  # a run directory works as well as the file
    fig = plot_saliency_overlays(sal)
    # 4 phase rows x (2 EAP series x 3 slices) columns, plus the colour bar
    assert len(fig.axes) == 4 * 6 + 1
    assert fig.axes[0].get_ylabel() == "EAP"
    assert fig._suptitle.get_text().endswith(", stage3 (stride 16 px)")
    narrow = plot_saliency_overlays(sal, max_columns=4)  # middle slice of each series only
    assert len(narrow.axes) == 4 * 2 + 1
    shares = plot_saliency_shares(sal)
    assert [t.get_text() for t in shares.axes[1].get_xticklabels()] == list(GROUPS)
    paths = draw_saliency(npz, tmp_path / "fig", name="sal_A")
    assert sorted(p.name for p in paths) == [
        "sal_A_overlays.pdf", "sal_A_overlays.png", "sal_A_shares.pdf", "sal_A_shares.png",
    ]  # fmt: skip
    for p in paths:
        assert p.stat().st_size > 1000
        assert p.read_bytes()[:4] in (b"\x89PNG", b"%PDF")
    summary = summarize_saliency(npz)
    assert summary["per_phase"]["DP"]["note"].startswith("no correctly classified")
    eap = summary["per_phase"]["EAP"]
    assert (eap["masked_series"], eap["empty_maps"]) == (2, 1)
    # the empty map has no shares: the phase's shares are the other series' own
    share0 = np.load(npz)["share"][0]
    assert eap["phase_defining_share"] == pytest.approx(float(share0[[0, 3]].sum()))
    assert list(eap["share"].values()) == pytest.approx(share0.tolist())


def test_without_masks_only_the_overlays_are_drawn(tmp_path):
    npz = small_npz(tmp_path / "saliency.npz", masks=False)
    paths = draw_saliency(npz, tmp_path / "fig")
    assert sorted(p.name for p in paths) == ["saliency_overlays.pdf", "saliency_overlays.png"]
    summary = summarize_saliency(npz)
    assert "share" not in summary["per_phase"]["EAP"]
    assert "no organ masks" in summary["per_phase"]["EAP"]["note"]
    with pytest.raises(FileNotFoundError, match="no saliency file"):
        load_saliency(tmp_path / "nowhere")
