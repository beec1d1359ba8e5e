"""Saliency figures drawn from saliency.npz (phasejax.saliency); numpy + matplotlib, no jax.

- Overlays: per phase a row of the chosen series' input slices in the soft-tissue window
  (W400/L40, what a reader would look at) with the Grad-CAM map as a translucent heat map
  whose opacity grows with the map value, so unimportant pixels keep the plain CT.
- Shares: per structure group and phase, the share of the map's mass on the group (bars)
  against the share a uniform map would give, i.e. the group's area (black ticks), and
  below it their ratio on a log scale (above 1 = looked at more than its size explains).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from phasejax.plotting.style import (
    DOUBLE_COLUMN_IN,
    new_figure,
    phase_color,
    save_figure,
    styled,
)

SOFT_TISSUE = (400.0, 40.0)  # (width, level) HU: the abdomen window of phasejax.data.windowing
CAM_CMAP = "inferno"  # perceptually uniform and readable in greyscale (unlike "jet")
CAM_MAX_ALPHA = 0.65
NPZ_NAME = "saliency.npz"


class NoSaliencyData(ValueError):
    """The saliency file holds nothing this figure can show (e.g. no organ masks)."""


def load_saliency(source: str | Path) -> dict[str, Any]:
    """saliency.npz (or a run directory holding it) as {key: array} plus parsed "meta"."""
    import json

    path = Path(source)
    if path.is_dir():
        path = path / NPZ_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no saliency file (run phasejax.saliency first)")
    with np.load(path, allow_pickle=False) as z:
        d: dict[str, Any] = {k: z[k] for k in z.files}
    d["meta"] = json.loads(str(d["meta"])) if "meta" in d else {}
    return d


def _window(hu: np.ndarray) -> np.ndarray:
    width, level = SOFT_TISSUE
    return np.clip((hu - (level - width / 2)) / width, 0.0, 1.0)


def _rows_by_phase(sal: Mapping[str, Any]) -> list[tuple[str, list[int]]]:
    phases = [str(p) for p in sal["phase"]]
    return [(str(c), [i for i, p in enumerate(phases) if p == str(c)]) for c in sal["classes"]]


@styled
def plot_saliency_overlays(sal: Mapping[str, Any], *, max_columns: int = 8) -> Figure:
    """Rows = phases, columns = the slices of each chosen series (only each series' middle
    slice when all of them would exceed `max_columns`), Grad-CAM over the soft-tissue CT."""
    rows = _rows_by_phase(sal)
    n_slices = int(sal["hu"].shape[1])
    per_row = max((len(idx) for _, idx in rows), default=0)
    if per_row == 0:
        raise NoSaliencyData("the saliency file holds no series")
    slices = list(range(n_slices)) if per_row * n_slices <= max_columns else [n_slices // 2]
    ncols = per_row * len(slices)
    cell = min(1.25, DOUBLE_COLUMN_IN / ncols)
    fig, axes = new_figure(
        len(rows), ncols, width=cell * ncols + 0.7, height=cell * len(rows) + 0.5
    )
    meta = sal.get("meta", {})
    image = None
    for r, (code, idx) in enumerate(rows):
        for c in range(ncols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ax.spines.values():
                side.set_visible(False)
            k, s_pos = divmod(c, len(slices))
            if k >= len(idx):
                if c == 0:
                    ax.text(0.5, 0.5, "no correctly\nclassified series", ha="center",
                            va="center", fontsize=7, color="#777777", transform=ax.transAxes)  # fmt: skip
                continue
            i, s = idx[k], slices[s_pos]
            ax.imshow(_window(sal["hu"][i, s]), cmap="gray", vmin=0.0, vmax=1.0)
            cam = np.asarray(sal["cam"][i, s], np.float64)
            image = ax.imshow(
                cam, cmap=CAM_CMAP, vmin=0.0, vmax=1.0, alpha=CAM_MAX_ALPHA * np.clip(cam, 0, 1),
                interpolation="bilinear",
            )  # fmt: skip
            z = int(sal["slice_index"][i, s])
            title = f"{sal['series_id'][i]}\nz={z}" if s_pos == 0 else f"z={z}"
            ax.set_title(title, fontsize=6)
            if c == 0:
                ax.set_ylabel(code, color=phase_color(code, r), fontsize=9, fontweight="bold")
    if image is not None:
        cbar = fig.colorbar(image, ax=axes, shrink=0.6, aspect=30, pad=0.01)
        cbar.set_label("Grad-CAM (normalised per series)")
        cbar.outline.set_visible(False)
    strategy = meta.get("strategy", "")
    layer = f", {meta['layer']} (stride {meta.get('stride', '?')} px)" if meta.get("layer") else ""
    fig.suptitle(
        f"Grad-CAM, {meta.get('split', '')} split"
        + (f", {strategy.replace('_', '-')} ({meta.get('slice_mode', '')})" if strategy else "")
        + layer,
        fontsize=9,
    )
    return fig


@styled
def plot_saliency_shares(sal: Mapping[str, Any]) -> Figure:
    """Share of the Grad-CAM mass per structure group and phase, with the area baseline
    (top), and the ratio share / area on a log scale (bottom). Needs organ masks."""
    groups = [str(g) for g in sal["groups"]]
    has = np.asarray(sal["has_mask"], bool)
    rows = [(c, [i for i in idx if has[i]]) for c, idx in _rows_by_phase(sal)]
    rows = [(c, idx) for c, idx in rows if idx]
    if not rows:
        raise NoSaliencyData("no series with organ masks: shares need the synthetic cohort's masks")
    fig, axes = new_figure(2, 1, width=DOUBLE_COLUMN_IN, height=4.6, sharex=True)
    top, bottom = axes[0, 0], axes[1, 0]
    x = np.arange(len(groups))
    width = 0.8 / len(rows)
    for j, (code, idx) in enumerate(rows):
        with warnings.catch_warnings():  # a phase whose maps are all empty: NaN, drawn as 0
            warnings.simplefilter("ignore", RuntimeWarning)
            share = np.nanmean(np.asarray(sal["share"])[idx], axis=0)
        area = np.mean(np.asarray(sal["area"])[idx], axis=0)
        xs = x - 0.4 + width * (j + 0.5)
        color = phase_color(code, j)
        top.bar(xs, 100 * share, width * 0.92, color=color, label=f"{code} (n={len(idx)})")
        top.hlines(100 * area, xs - width * 0.46, xs + width * 0.46, colors="black", lw=1.2,
                   label="uniform map (area)" if j == 0 else None)  # fmt: skip
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = share / area
        ok = np.isfinite(ratio) & (ratio > 0)
        # Stems from 1 (no excess), not bars from the axis floor: on a log scale a bar's
        # length depends on where the axis happens to start.
        bottom.vlines(xs[ok], 1.0, ratio[ok], colors=color, lw=1.6)
        bottom.plot(xs[ok], ratio[ok], "o", color=color, ms=4.5)
    top.set_ylabel("Share of Grad-CAM mass (%)")
    # Outside the axes: the large "other / outside body" bars fill the top right.
    top.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    top.grid(axis="y")
    bottom.set_yscale("log")
    bottom.axhline(1.0, color="black", lw=0.8, ls="--")
    bottom.set_ylabel("Share / area")
    bottom.grid(axis="y")
    bottom.set_xticks(x, groups, rotation=25, ha="right")
    meta = sal.get("meta", {})
    top.set_title(
        f"Where the saliency falls ({meta.get('split', '')} split, "
        f"{str(meta.get('strategy', '')).replace('_', '-')})"
    )
    return fig


def draw_saliency(source: str | Path, out: str | Path, *, name: str = "saliency") -> list[Path]:
    """Draw OUT/NAME_overlays.(png|pdf) and OUT/NAME_shares.(png|pdf) from a saliency.npz
    (or the run directory holding it); the shares figure is skipped without organ masks."""
    sal = load_saliency(source)
    out = Path(out)
    paths = save_figure(plot_saliency_overlays(sal), out / f"{name}_overlays")
    with contextlib.suppress(NoSaliencyData):  # no organ masks: overlays only
        paths += save_figure(plot_saliency_shares(sal), out / f"{name}_shares")
    return paths
