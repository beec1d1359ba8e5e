"""Hand-placed ROI attenuation of the real validation scans, against the synthetic cohort.

What it measures
----------------
Mean, median and SD of HU inside circular ROIs (one axial slice each) in the aorta (coeliac
trunk / upper-kidney level), the main portal vein at the hilum, right-lobe liver parenchyma
(away from vessels and lesions), spleen, renal cortex, renal medulla and the renal pelvis /
collecting system, in every real series under the data folders:

- `../shared/data/validation/*.nii.gz`: 12 series of 4 patients (TCIA HCC-TACE-Seg, Moawad et
  al. 2021, doi:10.7937/TCIA.5FNA-0924, HCC_005 and HCC_009; TCIA RadCTTACEomics, patients
  1720 and 2144; both CC BY 4.0). Reference phase: the `phase` column of `labels.csv`.
- `../shared/data/real`: HCC_015 of HCC-TACE-Seg, two DICOM series (`4.000000-Recon 2 LIVER 3
  PHASE AP`: early arterial; `103.000000-LIVER 3 PHASE AP`: portal venous) and the
  TotalSegmentator test image `example_ct.nii.gz` (Apache-2.0; non-contrast). Phases as in
  that folder's README.md (read from ROI attenuation there, not from reports).

It then prints the synthetic cohort's p10/p50/p90 per structure and phase, computed by
`phasejax.cohort.kinetics._calibration_report` (the table `python -m
phasejax.cohort.kinetics` prints: bolus-tracked EAP = trigger + 7 s, LAP = trigger + 17 s,
PVP 70 s, DP 180 s, 120 kVp; NC from `compartment_hu(patient, None)` of the same patients),
and marks every real median as inside or outside the cohort's p10-p90 of the phase(s) its
reference label accepts (AP: EAP or LAP; PVP_or_DP: PVP or DP).

How the coordinates were chosen
-------------------------------
By hand: axial slices of each series were rendered with a pixel grid (soft-tissue window) and
read; the slice index z (0 = most inferior), row (anterior -> posterior), column (patient
right -> left, so the liver is on the image left) and radius in pixels are constants in
`ROIS` below, one entry per series file (or DICOM folder) name, each with a short comment.
Radii: ~5-8 mm in the aorta, liver and spleen, ~4-5 mm in the portal vein; 2-4 mm in the
renal cortex, medulla and pelvis, which are thinner than a larger circle (in the arterial
series the cortex ROI sits in the bright rim, the medulla ROI in a dark pyramid). The series
of one exam are not assumed to be registered: each has its own coordinates. No detector
runs here. The figure this script draws (`--figure`) shows every ROI on its slice so the
placement can be checked; it was checked (docs/real_roi/rois.png). A structure that is not
in the scan, or that could not be told apart with confidence (the portal vein without
contrast, a renal pelvis hidden in sinus fat), is None.

Caveats: one circle per structure and series, a handful of series per phase; the tube
voltage of the validation series is not recorded (the cohort table is at 120 kVp); the
cohort percentiles are the integer-rounded values of the printed table.

Command (from the project root)::

    python experiments/real_roi.py \
        --data ../shared/data/validation ../shared/data/real \
        --figure docs/real_roi/rois.png > docs/real_roi/real_roi.json

The JSON goes to stdout, a compact comparison table to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import re
import sys
from pathlib import Path

import numpy as np

from phasejax.cohort import kinetics
from phasejax.data.discover import discover, load_plan

# (z, row, col, radius_px) per structure; None: not in the scan / not identifiable.
Roi = tuple[int, int, int, int] | None

STRUCTURES = (
    "aorta",
    "portal_vein",
    "liver",
    "spleen",
    "renal_cortex",
    "renal_medulla",
    "renal_pelvis",
)

# Cohort label (phasejax.cohort.structures.Label name) of each measured structure.
COHORT_LABEL = {
    "aorta": "AORTA",
    "portal_vein": "PORTAL_VEIN",
    "liver": "LIVER",
    "spleen": "SPLEEN",
    "renal_cortex": "KIDNEY_CORTEX",
    "renal_medulla": "KIDNEY_MEDULLA",
    "renal_pelvis": "KIDNEY_COLLECTING",
}

# Cohort phases a reference label accepts (labels.csv `accepts`).
ACCEPTS = {
    "NC": ("NC",),
    "EAP": ("EAP",),
    "AP": ("EAP", "LAP"),
    "LAP": ("LAP",),
    "PVP": ("PVP",),
    "PVP_or_DP": ("PVP", "DP"),
    "DP": ("DP",),
}

# Reference phases of the series in ../shared/data/real (its README.md).
REAL_PHASES = {
    "4.000000-Recon 2 LIVER 3 PHASE AP-06472": "EAP",
    "103.000000-LIVER 3 PHASE AP-44492": "PVP",
    "example_ct.nii.gz": "NC",
}

ROIS: dict[str, dict[str, Roi]] = {
    # HCC-TACE-Seg HCC_005, 1999-01, pre-contrast (5 mm slices, 1.64 mm pixels). Portal vein
    # not separable from the hepatoduodenal ligament without contrast; extrarenal pelvis of
    # the right kidney (urine, ~0 HU) at the hilum.
    "HCC_005_1999-01_PRE.nii.gz": {
        "aorta": (21, 138, 128, 4),
        "portal_vein": None,
        "liver": (21, 125, 50, 5),
        "spleen": (21, 160, 200, 5),
        "renal_cortex": (10, 156, 66, 2),  # right kidney, outer parenchyma (NC: no CMD)
        "renal_medulla": (10, 147, 66, 2),  # right kidney, inner parenchyma
        "renal_pelvis": (10, 141, 91, 2),
    },
    # HCC_005 1999-01 acquisition 1 (arterial; 2.5 mm). Aorta at the coeliac origin; portal
    # vein: unenhanced oval posterior to the hepatic artery, anterior to the IVC; left kidney
    # with corticomedullary differentiation (cortex rim vs. dark pyramid).
    "HCC_005_1999-01_acq1.nii.gz": {
        "aorta": (43, 140, 130, 4),
        "portal_vein": (44, 105, 100, 3),
        "liver": (43, 120, 50, 5),
        "spleen": (40, 150, 205, 5),
        "renal_cortex": (26, 141, 172, 2),
        "renal_medulla": (26, 148, 162, 2),
        "renal_pelvis": (17, 146, 90, 2),  # right extrarenal pelvis
    },
    # HCC_005 1999-01 acquisition 3 (portal venous or delayed); same table position as acq1.
    "HCC_005_1999-01_acq3.nii.gz": {
        "aorta": (43, 140, 130, 4),
        "portal_vein": (44, 104, 93, 3),  # bright main trunk entering the hilum
        "liver": (43, 120, 50, 5),
        "spleen": (40, 150, 205, 5),
        "renal_cortex": (26, 143, 178, 2),
        "renal_medulla": (23, 152, 180, 2),
        "renal_pelvis": (17, 146, 90, 2),  # right extrarenal pelvis, not yet opacified
    },
    # HCC_005 1999-04 acquisition 1 (arterial). The patient sits ~2 slices lower than in
    # acq2/acq3: coeliac trunk and the unenhanced portal vein at z 32-34.
    "HCC_005_1999-04_acq1.nii.gz": {
        "aorta": (32, 150, 130, 4),
        "portal_vein": (32, 120, 106, 3),
        "liver": (36, 120, 50, 5),
        "spleen": (34, 170, 200, 5),
        "renal_cortex": (20, 155, 170, 2),  # left kidney, upper cortex rim
        "renal_medulla": (20, 160, 160, 2),  # left kidney, dark pyramid
        "renal_pelvis": (12, 156, 87, 2),  # right extrarenal pelvis
    },
    # HCC_005 1999-04 acquisition 2 (portal venous).
    "HCC_005_1999-04_acq2.nii.gz": {
        "aorta": (34, 151, 127, 4),
        "portal_vein": (30, 116, 104, 3),  # oblique bright main trunk
        "liver": (36, 120, 50, 5),
        "spleen": (34, 170, 200, 5),
        "renal_cortex": (16, 178, 166, 2),  # left kidney, posterior rim
        "renal_medulla": (16, 171, 178, 2),  # left kidney, pyramid (still darker)
        "renal_pelvis": (9, 153, 89, 2),  # right extrarenal pelvis
    },
    # HCC_005 1999-04 acquisition 3 (portal venous or delayed).
    "HCC_005_1999-04_acq3.nii.gz": {
        "aorta": (34, 151, 127, 4),
        "portal_vein": (30, 115, 108, 3),
        "liver": (36, 120, 50, 5),
        "spleen": (34, 170, 200, 5),
        "renal_cortex": (16, 179, 168, 2),
        "renal_medulla": (16, 170, 161, 2),
        "renal_pelvis": (10, 155, 89, 2),  # right extrarenal pelvis, not opacified
    },
    # HCC_009 1998-02 pre-contrast (10 mm slices, 1.48 mm pixels): portal vein not
    # separable, renal sinus is fat only (no fluid-filled pelvis visible).
    "HCC_009_1998-02_PRE.nii.gz": {
        "aorta": (10, 139, 128, 4),
        "portal_vein": None,
        "liver": (10, 130, 50, 5),
        "spleen": (10, 165, 208, 4),
        "renal_cortex": (2, 150, 57, 2),  # right kidney, outer parenchyma (NC)
        "renal_medulla": (2, 140, 61, 2),  # right kidney, inner parenchyma
        "renal_pelvis": None,
    },
    # HCC_009 1998-02 acquisition 1 (arterial). Large tumour in the left/central liver: the
    # liver ROI is in the posterior right lobe. Right kidney: cortex rim vs. dark pyramid.
    # Renal sinus is fat only.
    "HCC_009_1998-02_acq1.nii.gz": {
        "aorta": (24, 141, 131, 4),
        "portal_vein": (21, 124, 100, 3),  # oval behind the hepatic arteries, above the IVC
        "liver": (33, 130, 50, 5),
        "spleen": (27, 155, 205, 5),
        "renal_cortex": (10, 137, 68, 2),
        "renal_medulla": (10, 148, 62, 2),
        "renal_pelvis": None,
    },
    # RadCTTACEomics 1720 arterial (5 mm, 1.49 mm pixels). Liver nodules are anterior; the
    # ROI is lateral right lobe. Portal vein: darker oblique band behind the hepatic artery
    # (located with the EQP series). Right kidney with clear CMD; unopacified pelvis.
    "RadCTTACEomics_1720_AP.nii.gz": {
        "aorta": (28, 134, 128, 4),
        "portal_vein": (29, 119, 94, 3),
        "liver": (34, 125, 45, 5),
        "spleen": (34, 168, 180, 5),  # arciform: away from a vessel
        "renal_cortex": (28, 179, 80, 2),
        "renal_medulla": (28, 169, 78, 2),
        "renal_pelvis": (28, 164, 92, 2),
    },
    # RadCTTACEomics 1720 equilibrium (delayed): excreted contrast in the right renal pelvis
    # (the ROI is in its opacified part), medulla brighter than cortex.
    "RadCTTACEomics_1720_EQP.nii.gz": {
        "aorta": (28, 135, 130, 4),
        "portal_vein": (30, 118, 92, 3),
        "liver": (34, 125, 45, 5),
        "spleen": (34, 168, 180, 5),
        "renal_cortex": (28, 179, 80, 2),
        "renal_medulla": (28, 169, 78, 2),
        "renal_pelvis": (28, 167, 98, 2),
    },
    # RadCTTACEomics 2144 portal venous (abdomen + pelvis, 5 mm, 1.95 mm pixels). Right
    # kidney; the renal sinus shows no separable fluid-filled pelvis.
    "RadCTTACEomics_2144_PP.nii.gz": {
        "aorta": (72, 149, 134, 4),
        "portal_vein": (70, 124, 101, 3),
        "liver": (72, 130, 72, 4),
        "spleen": (72, 155, 185, 4),
        "renal_cortex": (57, 158, 77, 2),
        "renal_medulla": (57, 163, 84, 2),
        "renal_pelvis": None,
    },
    # RadCTTACEomics 2144 equilibrium (delayed). Portal vein nearly isodense with the liver:
    # placed on the oval outlined at the porta (moderate confidence). Excreted contrast in
    # the right pelvis is only ~3 px thick, hence radius 1.
    "RadCTTACEomics_2144_EQP.nii.gz": {
        "aorta": (34, 149, 135, 4),
        "portal_vein": (30, 125, 102, 3),
        "liver": (34, 130, 60, 4),
        "spleen": (30, 140, 196, 4),
        "renal_cortex": (20, 150, 84, 2),  # right kidney, upper rim
        "renal_medulla": (20, 170, 100, 2),
        "renal_pelvis": (18, 154, 104, 1),
    },
    # HCC-TACE-Seg HCC_015, early arterial (512 x 512, 0.66 mm pixels, 2.5 mm). Portal vein:
    # the unenhanced round vessel ringed by bright hepatic arteries at the hilum. Right
    # kidney: cortex rim vs. dark pyramid. No fluid-filled pelvis identifiable.
    "4.000000-Recon 2 LIVER 3 PHASE AP-06472": {
        "aorta": (33, 266, 268, 7),
        "portal_vein": (33, 212, 200, 6),
        "liver": (42, 250, 120, 10),
        "spleen": (42, 300, 380, 10),
        "renal_cortex": (21, 302, 160, 3),
        "renal_medulla": (21, 272, 134, 3),
        "renal_pelvis": None,
    },
    # HCC_015 portal venous (same geometry). Aorta with a calcified wall: ROI kept central.
    "103.000000-LIVER 3 PHASE AP-44492": {
        "aorta": (33, 267, 266, 7),
        "portal_vein": (30, 206, 207, 7),  # main trunk in cross-section, anterior to the IVC
        "liver": (42, 250, 120, 10),
        "spleen": (42, 300, 380, 10),
        "renal_cortex": (24, 300, 160, 3),
        "renal_medulla": (24, 270, 145, 3),
        "renal_pelvis": None,
    },
    # TotalSegmentator example (non-contrast, 3 mm voxels): radii 1-3 px. Portal vein not
    # separable; renal sinus is fat.
    "example_ct.nii.gz": {
        "aorta": (98, 52, 66, 2),
        "portal_vein": None,
        "liver": (104, 40, 30, 3),
        "spleen": (108, 66, 92, 2),
        "renal_cortex": (92, 63, 35, 1),  # right kidney, lateral parenchyma
        "renal_medulla": (92, 61, 39, 1),  # right kidney, inner parenchyma
        "renal_pelvis": None,
    },
}


# ---------------------------------------------------------------------------------------
# Measurement


def series_name(source: str) -> str:
    return os.path.basename(str(source).rstrip("/"))


def reference_phases(data_dirs: list[str]) -> dict[str, str]:
    out = dict(REAL_PHASES)
    for d in data_dirs:
        p = Path(d) / "labels.csv"
        if p.is_file():
            with p.open() as f:
                out.update({row["file"]: row["phase"] for row in csv.DictReader(f)})
    return out


def roi_mask(shape: tuple[int, int], row: int, col: int, radius: int) -> np.ndarray:
    rr, cc = np.ogrid[: shape[0], : shape[1]]
    return (rr - row) ** 2 + (cc - col) ** 2 <= radius**2


def measure(hu: np.ndarray, roi: tuple[int, int, int, int]) -> dict[str, float | int]:
    z, row, col, radius = roi
    v = hu[z][roi_mask(hu.shape[1:], row, col, radius)]
    return {
        "z": z,
        "row": row,
        "col": col,
        "radius_px": radius,
        "mean": round(float(v.mean()), 1),
        "median": round(float(np.median(v)), 1),
        "sd": round(float(v.std(ddof=1)), 1),
        "n": int(v.size),
    }


# ---------------------------------------------------------------------------------------
# Synthetic cohort


def cohort_percentiles(n: int) -> dict[str, dict[str, list[float]]]:
    """Label name -> phase -> [p10, p50, p90] HU of `n` cohort patients.

    EAP/LAP/PVP/DP: parsed from the table `kinetics._calibration_report(n)` prints (the
    module's __main__ with n patients). NC: `compartment_hu(p, None)` of the same patients.
    """
    from phasejax.cohort.patient import Population, sample_patient
    from phasejax.cohort.structures import REFERENCE_STRUCTURES

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        kinetics._calibration_report(n)
    lines = buf.getvalue().splitlines()
    header = next(ln for ln in lines if ln.startswith("structure")).split()[1:]
    names = {lab.name for lab in REFERENCE_STRUCTURES}
    out: dict[str, dict[str, list[float]]] = {}
    for ln in lines:
        parts = ln.split(maxsplit=1)
        if parts and parts[0] in names:
            nums = [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?", parts[1])]
            out[parts[0]] = {ph: nums[3 * i : 3 * i + 3] for i, ph in enumerate(header)}
    pop = Population()
    nc: dict[str, list[float]] = {k: [] for k in names}
    for i in range(n):
        hu = kinetics.compartment_hu(sample_patient(f"p{i}", i, pop), None)
        for lab in REFERENCE_STRUCTURES:
            nc[lab.name].append(hu[lab])
    for k, v in nc.items():
        out[k]["NC"] = [round(float(q)) for q in np.percentile(v, [10, 50, 90])]
    return out


def check(median: float, phase: str, cohort: dict[str, list[float]]) -> dict[str, object]:
    """Is `median` inside the cohort's p10-p90 of any phase the reference label accepts?"""
    ranges = {ph: cohort[ph] for ph in ACCEPTS.get(phase, ()) if ph in cohort}
    inside = any(q[0] <= median <= q[2] for q in ranges.values())
    return {"cohort_p10_p50_p90": ranges, "inside_p10_p90": inside}


# ---------------------------------------------------------------------------------------
# Figure


def draw(series: list[dict], volumes: dict[str, np.ndarray], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle

    ncol = len(STRUCTURES)
    height = len(series) * 2.5 + 0.4
    fig, axs = plt.subplots(len(series), ncol, figsize=(ncol * 2.3, height), squeeze=False)
    for i, s in enumerate(series):
        hu, spacing = volumes[s["file"]]
        for j, name in enumerate(STRUCTURES):
            # Field of view around the ROI: 60 mm for the kidney structures, 90 mm otherwise.
            half = int(round((30.0 if name.startswith("renal") else 45.0) / spacing[1]))
            ax = axs[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            r = s["rois"][name]
            if j == 0:
                ax.set_ylabel(f"{s['file'][:26]}\n{s['phase']}", fontsize=6)
            if r is None:
                ax.set_facecolor("0.85")
                ax.text(0.5, 0.5, f"{name}\nnull", ha="center", va="center", fontsize=7)
                continue
            z, row, col, rad = r["z"], r["row"], r["col"], r["radius_px"]
            r0, r1 = max(row - half, 0), min(row + half, hu.shape[1])
            c0, c1 = max(col - half, 0), min(col + half, hu.shape[2])
            ax.imshow(
                hu[z, r0:r1, c0:c1],
                cmap="gray",
                vmin=-160,
                vmax=340,
                extent=(c0 - 0.5, c1 - 0.5, r1 - 0.5, r0 - 0.5),
                interpolation="nearest",
            )
            ax.add_patch(Circle((col, row), rad, fill=False, ec="red", lw=0.8))
            ax.set_title(
                f"{name} z{z} ({row},{col}) r{rad}\nmed {r['median']:.0f} sd {r['sd']:.0f}",
                fontsize=6,
            )
    fig.suptitle(
        "Hand-placed ROIs (red) on their slices; crops 90 mm (kidney 60 mm), window -160..340 HU;"
        " rows: series and reference phase",
        fontsize=8,
        y=1 - 0.08 / height,
        va="top",
    )
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / height))
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--data", nargs="+", default=["../shared/data/validation", "../shared/data/real"]
    )
    ap.add_argument("--figure", default="docs/real_roi/rois.png")
    ap.add_argument("--cohort-n", type=int, default=400, help="cohort patients (0: skip)")
    ap.add_argument("--only", default="", help="measure only series whose name contains this")
    args = ap.parse_args(argv)

    phases = reference_phases(args.data)
    # One data folder at a time, so the series keep the folders' order.
    plans = [p for d in args.data for p in sorted(discover([d]).plans, key=lambda p: p.source)]
    series: list[dict] = []
    volumes: dict[str, tuple[np.ndarray, tuple[float, float, float]]] = {}
    for plan in plans:
        name = series_name(plan.source)
        if args.only not in name:
            continue
        if name not in ROIS:
            print(f"no ROIs for {name}: skipped", file=sys.stderr)
            continue
        s, _ = load_plan(plan)
        if s is None:
            print(f"could not load {name}", file=sys.stderr)
            continue
        volumes[name] = (s.hu, s.spacing)
        rois = {k: (measure(s.hu, v) if (v := ROIS[name].get(k)) else None) for k in STRUCTURES}
        series.append(
            {
                "file": name,
                "source": str(s.source),
                "phase": phases.get(name, "?"),
                "spacing_mm": [round(float(x), 3) for x in s.spacing],
                "rois": rois,
            }
        )

    cohort = cohort_percentiles(args.cohort_n) if args.cohort_n > 0 else {}
    for s in series:
        for k, r in s["rois"].items():
            if r is not None and cohort:
                r.update(check(r["median"], s["phase"], cohort[COHORT_LABEL[k]]))

    summary: dict[str, dict[str, dict]] = {}
    present = {s["phase"] for s in series}
    for ph in [p for p in ACCEPTS if p in present] + sorted(present - set(ACCEPTS)):
        for k in STRUCTURES:
            meds = [s["rois"][k]["median"] for s in series if s["phase"] == ph and s["rois"][k]]
            if not meds:
                continue
            entry: dict[str, object] = {
                "median_of_medians": round(float(np.median(meds)), 1),
                "n_series": len(meds),
                "series_medians": meds,
            }
            if cohort:
                entry.update(check(float(np.median(meds)), ph, cohort[COHORT_LABEL[k]]))
            summary.setdefault(ph, {})[k] = entry

    out = {
        "description": "hand-placed circular ROI HU in real CT (see experiments/real_roi.py)",
        "series": series,
        "summary_by_phase": summary,
        "cohort": {
            "n_patients": args.cohort_n,
            "times": "EAP trigger+7 s, LAP trigger+17 s (+100 HU trigger), PVP 70 s, DP 180 s;"
            " 120 kVp; NC = compartment_hu(p, None)",
            "p10_p50_p90": {k: cohort.get(v, {}) for k, v in COHORT_LABEL.items()},
        },
    }
    json.dump(out, sys.stdout, indent=1)
    print()

    # Compact table on stderr.
    print(
        f"{'structure':14s} {'phase':10s} {'real med (n)':>14s}  cohort p10/p50/p90",
        file=sys.stderr,
    )
    for ph, d in summary.items():
        for k, e in d.items():
            rng = "; ".join(
                f"{p} {q[0]:.0f}/{q[1]:.0f}/{q[2]:.0f}"
                for p, q in e.get("cohort_p10_p50_p90", {}).items()
            )
            flag = "" if e.get("inside_p10_p90", True) else "  OUTSIDE"
            cell = f"{e['median_of_medians']:.0f} ({e['n_series']})"
            print(f"{k:14s} {ph:10s} {cell:>14s}  {rng}{flag}", file=sys.stderr)

    if args.figure and series:
        draw(series, volumes, args.figure)


if __name__ == "__main__":
    main()
