"""HU windows: Hounsfield units -> network input channels in [0, 1].

A window (W, L) maps HU linearly so that L - W/2 -> 0 and L + W/2 -> 1, clipped
outside, exactly what a reader's display does. The windows (data.window, whose values
are the `phasejax.config.Window` Literal) are the display windows radiologists use for
the abdomen:

- "abdomen" W400/L40: soft tissue; the window the related phase-classification
  work uses (W400/L40-50, see DESIGN.md §1).
- "liver" W150/L80: narrow, to separate parenchymal enhancement (+15-30 HU in LAP,
  +55-65 HU in PVP).
- "wide" W1500/L300: keeps dense contrast (aorta 250-400 HU in the arterial
  phases, the opacified collecting system in DP) from saturating, which the
  abdomen window clips at 240 HU.
- "raw": the whole 12-bit CT range, (HU + 1024) / 4095 clipped to [0, 1], so -1024
  (air / padding) -> 0 and 3071 -> 1: no window at all, for the windowing ablation.
- "multi": channels [abdomen, liver, wide], C = 3.

Outputs are not standardised (no mean/std): BatchNorm after the first
convolution absorbs the offset, and [0, 1] keeps windows comparable.
"""

from __future__ import annotations

import typing

import numpy as np

from phasejax.config import Window
from phasejax.hu import HU_MAX, HU_MIN

# name -> (width, level) in HU
WINDOWS: dict[str, tuple[float, float]] = {
    "abdomen": (400.0, 40.0),
    "liver": (150.0, 80.0),
    "wide": (1500.0, 300.0),
}
RAW_RANGE = (float(HU_MIN), float(HU_MAX))  # the cache's int16 12-bit CT range
MULTI = ("abdomen", "liver", "wide")
NAMES: tuple[str, ...] = typing.get_args(Window)  # "raw", the WINDOWS, "multi"


def window_names(name: str) -> tuple[str, ...]:
    """The single windows that make up data.window `name`, one per output channel."""
    if name == "multi":
        return MULTI
    if name == "raw" or name in WINDOWS:
        return (name,)
    raise ValueError(f"unknown window {name!r}; known: {list(NAMES)}")


def num_channels(name: str) -> int:
    return len(window_names(name))


def hu_range(name: str) -> tuple[float, float]:
    """(lo, hi) HU that single window `name` maps to 0 and 1 (clipped outside)."""
    if name == "raw":
        return RAW_RANGE
    width, level = WINDOWS[name]
    return level - width / 2.0, level + width / 2.0


def _single(hu: np.ndarray, name: str) -> np.ndarray:
    lo, hi = hu_range(name)
    out = (hu - np.float32(lo)) * np.float32(1.0 / (hi - lo))
    return np.clip(out, 0.0, 1.0, out=out)


def apply_window(hu: np.ndarray, name: str) -> np.ndarray:
    """HU array [...] -> float32 [..., C] in [0, 1], C = num_channels(name)."""
    hu = np.asarray(hu, dtype=np.float32)
    return np.stack([_single(hu, n) for n in window_names(name)], axis=-1)
