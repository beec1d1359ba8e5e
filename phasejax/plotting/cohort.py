"""Validation figures of the synthetic cohort (matplotlib object API, no jax).

Drawn from arrays that phasejax.cohort.validate prepares, never from the renderer:
- `plot_time_curves`: time-attenuation curves of the main structures with the phase
  windows of the labelling rule shaded, and the series medians measured in the images;
- `plot_montage`: one patient at three levels (liver dome, hepatic hilum, kidneys) in
  every phase of the exam, soft-tissue window W400/L40 (what a radiologist checks first).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from phasejax.plotting.style import (
    DOUBLE_COLUMN_IN,
    new_figure,
    phase_color,
    save_figure,
    styled,
)

SOFT_TISSUE_WINDOW = (400.0, 40.0)  # (width, level) HU


def _sqrt(x: np.ndarray) -> np.ndarray:
    return np.sqrt(np.clip(x, 0.0, None))


@styled
def plot_time_curves(
    t: np.ndarray,
    curves: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
    windows: Sequence[tuple[float, float, str]],
    out_stem: str | Path,
    *,
    points: Mapping[str, Sequence[tuple[float, float, str]]] | None = None,
    title: str = "",
    t_max: float | None = None,
) -> list[Path]:
    """One panel per structure: median curve with a p10-p90 band over patients.

    curves: {structure: (median, p10, p90)} sampled at `t` (s after injection start).
    windows: (t0, t1, phase code) of the labelling rule for a typical patient, shaded.
    points: {structure: [(seconds, median HU in the series' mask, phase code), ...]}
    measured in generated images, drawn as dots coloured by phase.
    """
    names = list(curves)
    ncols = 3 if len(names) > 4 else 2
    nrows = int(np.ceil(len(names) / ncols))
    fig, axes = new_figure(nrows, ncols, width=DOUBLE_COLUMN_IN, height=2.0 * nrows + 0.4)
    t_max = float(t_max if t_max is not None else t[-1])
    seen: set[str] = set()
    for i, name in enumerate(names):
        ax = axes[i // ncols, i % ncols]
        med, lo, hi = curves[name]
        for t0, t1, code in windows:
            if t0 < t_max:
                ax.axvspan(t0, min(t1, t_max), color=phase_color(code), alpha=0.12, lw=0)
        ax.fill_between(t, lo, hi, color="#555555", alpha=0.25, lw=0)
        ax.plot(t, med, color="#000000", lw=1.2)
        for sec, hu, code in (points or {}).get(name, ()):
            if 0 <= sec <= t_max:
                lab = code if code not in seen else None
                seen.add(code)
                ax.plot(sec, hu, "o", ms=2.5, color=phase_color(code), alpha=0.8, label=lab)
        ax.set_title(name)
        # Square-root time axis: the arterial phases last ~10-20 s of a 5 min curve and
        # would be slivers on a linear axis.
        ax.set_xscale("function", functions=(_sqrt, np.square))
        ax.set_xlim(0, t_max)
        ticks = [v for v in (0, 20, 40, 70, 120, 180, 300, 600) if v <= t_max]
        ax.set_xticks(ticks)
        ax.set_xlabel("s after injection start (sqrt scale)")
        ax.set_ylabel("HU")
        ax.grid(True)
    for j in range(len(names), nrows * ncols):
        axes[j // ncols, j % ncols].set_axis_off()
    handles = []
    from matplotlib.patches import Patch

    for code in ("NC", "EAP", "LAP", "PVP", "DP"):
        if any(w[2] == code for w in windows) or code in seen:
            handles.append(Patch(color=phase_color(code), alpha=0.5, label=code))
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), title=None)
    if title:
        fig.suptitle(title)
    return save_figure(fig, out_stem, dpi=150)


@styled
def plot_montage(
    images: Sequence[Sequence[np.ndarray | None]],
    out_stem: str | Path,
    *,
    row_labels: Sequence[str],
    col_titles: Sequence[str],
    col_colors: Sequence[str] | None = None,
    title: str = "",
    window: tuple[float, float] = SOFT_TISSUE_WINDOW,
    pixel_mm: float | None = None,
) -> list[Path]:
    """A grid of axial slices (rows: levels, columns: series) in one grey window.

    images[r][c] is a 2-D HU array (rows anterior -> posterior, columns patient right ->
    left, i.e. radiological display) or None for an empty cell. A 5 cm scale bar is
    drawn in the first panel when `pixel_mm` is given.
    """
    nrows, ncols = len(images), max(len(r) for r in images)
    cell = min(1.55, DOUBLE_COLUMN_IN / max(ncols, 1))
    fig, axes = new_figure(nrows, ncols, width=cell * ncols, height=cell * nrows + 0.45)
    width, level = window
    vmin, vmax = level - width / 2.0, level + width / 2.0
    for r in range(nrows):
        for c in range(ncols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
            img = images[r][c] if c < len(images[r]) else None
            if img is None:
                continue
            ax.imshow(img, cmap="gray", vmin=vmin, vmax=vmax, interpolation="bilinear")
            if r == 0:
                color = col_colors[c] if col_colors else "#000000"
                ax.set_title(col_titles[c], fontsize=7, color=color)
            if c == 0:
                ax.set_ylabel(row_labels[r], fontsize=7.5)
            if r == 0 and c == 0 and pixel_mm:
                n = 50.0 / pixel_mm
                h, w = img.shape
                ax.plot([w * 0.06, w * 0.06 + n], [h * 0.93] * 2, color="#FFFFFF", lw=1.5)
                ax.text(w * 0.06, h * 0.9, "5 cm", color="#FFFFFF", fontsize=6)
    if title:
        fig.suptitle(title, fontsize=8.5)
    return save_figure(fig, out_stem, dpi=150)
