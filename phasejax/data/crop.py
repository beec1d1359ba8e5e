"""The network's field of view: the whole reconstruction (default), a square in millimetres
in front of the spine (`data.crop_mm`), or the square around the body (`data.field_of_view =
"body"`); numpy / scipy only.

Why a crop: the structures whose HU define the phase in every reading guide (aorta, IVC,
portal and splenic veins, hepatic veins near the dome, the renal hila) lie within a few
centimetres of the aorta, and they are a few pixels across when the whole field of view
(35-50 cm) is resized to the model's 96-224 pixels. A fixed square in millimetres centred
there shows them larger and leaves out what differs most between a phantom and a patient
and says nothing about the phase: the body wall, arms, table, bowel, and the scanner's
choice of field of view.

The centre is found the same way on the cohort and on real scans, from the image only: the
spine's bone region on each of the series' evaluation slices
(`phasejax.data.prepare.vertebral_body`, the finder of the slab's kidney search), the median
of its centres, moved `data.crop_anterior_mm` (default 40 mm) forwards. That region's centre
lies between the vertebral body and the spinal canal (its filled cortical ring takes in the
posterior elements); the aorta lies on the vertebral body's front. On the three series of
../shared/data/real the centre lands 8-23 mm from the aorta (hand-placed ROIs, tests). The
aorta lies 20-46 mm (p10-p90 over cohort slices) in front of that region's centre, but 32-62
mm on those real series, so squares of 60-80 mm miss it on some real scans; random shifts in
training (`data.translate`) did not make up for it (sim2real rows `crop_*`,
ablations/README.md). Centring instead on the most vessel-like bright disc in front of the
spine was tried and dropped: in non-contrast series no vessel stands out, the disc lands on
the vertebra, and the crop's position then tells the phase by itself.

The body square answers a different problem: how much of the input the patient fills.
The body's larger extent spans 80-100% of the stored field on the cohort (p10-p90, median
93%) and 84-99% on the 15 real series of ../shared/data (session 21), so at p10 the patient
fills a fifth less of the input than at p90. Fitting the square to the body's outline, the
same rule on both, gives every patient the whole input and the air's pixels to the
structures; nothing is cut but air and the table. (At the main job's budget it did not lift
the two-step network: suite quick_defaults, m_body.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from phasejax.data.prepare import body_mask, vertebral_body


@dataclass(frozen=True, kw_only=True)
class Crop:
    """A square of the input slices: centre (row, col) and side, in input pixels."""

    row: float
    col: float
    side: float


def find_crop(hu: np.ndarray, pixel_mm: float, side_mm: float, anterior_mm: float) -> Crop:
    """The crop of HU slices [S, H, H] (cache orientation: rows anterior to posterior).

    Centre: the median centre of the spine's bone region (`prepare.vertebral_body`) over
    the slices where it is found, moved `anterior_mm` forwards; without any, the centre of
    the body's outline on the middle slice; without a body, the image centre. Side:
    `side_mm` / `pixel_mm`.
    """
    hu = np.asarray(hu)
    if hu.ndim != 3:
        raise ValueError(f"expected HU slices [S, H, W], got shape {hu.shape}")
    if pixel_mm <= 0 or side_mm <= 0:
        raise ValueError(f"crop needs pixel_mm > 0 and side_mm > 0, got {pixel_mm}, {side_mm}")
    h, w = hu.shape[1:]
    found = []
    for sl in hu:
        sl = np.asarray(sl, dtype=np.float32)
        body = body_mask(sl)
        spine = None if body is None else vertebral_body(sl, body, pixel_mm)
        if spine is not None:
            found.append((spine[0] - anterior_mm / pixel_mm, spine[1]))
    if found:
        row, col = np.median(np.asarray(found, dtype=np.float64), axis=0)
    else:
        body = body_mask(np.asarray(hu[len(hu) // 2], dtype=np.float32))
        if body is None:
            row, col = (h - 1) / 2.0, (w - 1) / 2.0
        else:
            ys, xs = np.nonzero(body)
            row, col = 0.5 * (ys.min() + ys.max()), 0.5 * (xs.min() + xs.max())
    return Crop(row=float(row), col=float(col), side=float(side_mm / pixel_mm))


# Air kept around the body on each side, as a fraction of its larger extent: the skin line
# stays in the input (the body mask's outline is at the skin), so the body's size is seen;
# training shifts (data.translate) may still move an edge out, as on the whole field.
BODY_MARGIN = 0.04


def find_body_crop(hu: np.ndarray, margin: float = BODY_MARGIN) -> Crop | None:
    """The square around the body on HU slices [S, H, W]: centred on the bounding box of the
    union of the slices' body outlines (`prepare.body_mask`), its side the box's larger
    extent plus `margin` of it on each side. None where no slice shows a body (the caller
    then keeps the whole image)."""
    hu = np.asarray(hu)
    if hu.ndim != 3:
        raise ValueError(f"expected HU slices [S, H, W], got shape {hu.shape}")
    union = np.zeros(hu.shape[1:], dtype=bool)
    for sl in hu:
        body = body_mask(np.asarray(sl, dtype=np.float32))
        if body is not None:
            union |= body
    if not union.any():
        return None
    rows, cols = np.nonzero(union.any(axis=1))[0], np.nonzero(union.any(axis=0))[0]
    height = rows[-1] - rows[0] + 1
    width = cols[-1] - cols[0] + 1
    return Crop(
        row=0.5 * (rows[0] + rows[-1]),
        col=0.5 * (cols[0] + cols[-1]),
        side=float(max(height, width) * (1.0 + 2.0 * margin)),
    )
