"""Figures of `phasejax evaluate`: the confusion of reference labels x model classes, and
contact sheets of the exact network inputs.

A contact sheet shows, per series, one panel per input slice per window channel: the
array the network received (`phasejax.predict.inputs.PreparedSeries.image`, [S, H, W, C] in
[0, 1]), drawn in grey from 0 to 1 with no further windowing, so what is seen is what
was classified. The title carries the series, its reference, the predicted phase and
its probability; green when the prediction is accepted, red when not (the words
"right" / "WRONG" say the same for readers who cannot tell the colours apart).
No jax here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from phasejax.plotting.figures import draw_confusion
from phasejax.plotting.style import new_figure, percent, style_context, styled

RIGHT_COLOR = "#1B7837"  # dark green
WRONG_COLOR = "#C62828"  # dark red
PANEL_IN = 1.1  # inches per image panel
SHEET_DPI = 110
MAX_SHEET_PX = 60000  # below Agg's 2**16 pixel limit per side


@dataclass(frozen=True, kw_only=True)
class SheetRow:
    """One classified series on a contact sheet."""

    name: str
    image: np.ndarray  # [S, H, W, C], float in [0, 1] or uint8 in [0, 255]
    channels: Sequence[str]  # window name of each channel
    reference: str  # the reference label (a phase code or a group label such as AP)
    accepts: str  # "EAP|LAP"
    predicted: str
    probability: float
    correct: bool
    slices: Sequence[int] = ()  # cache slice index of each input slice, when known
    note: str = ""  # e.g. "low confidence"

    @property
    def title(self) -> str:
        ref = (
            self.reference
            if self.accepts == self.reference
            else f"{self.reference} [{self.accepts}]"
        )
        verdict = "right" if self.correct else "WRONG"
        note = f" · {self.note}" if self.note else ""
        return (
            f"{self.name} · reference {ref} · predicted {self.predicted} "
            f"{self.probability:.2f} · {verdict}{note}"
        )


def _draw_row(fig: Figure, row: SheetRow) -> None:
    image = np.asarray(row.image)
    s, _, _, c = image.shape
    top = 255.0 if image.dtype == np.uint8 else 1.0
    axes = fig.subplots(1, s * c, squeeze=False)[0]
    for i in range(s):
        for j in range(c):
            ax = axes[i * c + j]
            ax.imshow(image[i, :, :, j], cmap="gray", vmin=0.0, vmax=top)
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            where = f"z{row.slices[i]}" if len(row.slices) == s else f"slice {i + 1}"
            channel = row.channels[j] if j < len(row.channels) else f"ch{j}"
            ax.set_title(f"{where} · {channel}", fontsize=6.5, pad=2)
    fig.suptitle(
        row.title,
        color=RIGHT_COLOR if row.correct else WRONG_COLOR,
        fontsize=8,
        fontweight="bold",
        ha="left",
        x=0.005,
    )


def _sheet_size(rows: Sequence[SheetRow]) -> tuple[float, float]:
    s, _, _, c = np.asarray(rows[0].image).shape
    return max(s * c * PANEL_IN, 4.0), len(rows) * (PANEL_IN + 0.4)


@styled
def plot_contact_sheet(rows: Sequence[SheetRow]) -> Figure:
    """Every series one row of panels (slice x window channel), in the given order."""
    if not rows:
        raise ValueError("a contact sheet needs at least one series")
    width, height = _sheet_size(rows)
    fig = Figure(figsize=(width, height), layout="constrained")
    subfigs = fig.subfigures(len(rows), 1, squeeze=False)[:, 0]
    for sub, row in zip(subfigs, rows):
        _draw_row(sub, row)
    return fig


def save_sheet(fig: Figure, path: str | Path) -> Path:
    """PNG only (a PDF of raster panels adds bytes, not detail), at a resolution that keeps
    a sheet of many series under the image size Agg can write."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = fig.get_size_inches()
    dpi = min(SHEET_DPI, int(MAX_SHEET_PX / max(width, height)))
    with style_context():
        fig.savefig(path, dpi=max(dpi, 10))
    return path


@styled
def plot_label_confusion(
    counts: np.ndarray,
    row_labels: Sequence[str],
    columns: Sequence[str],
    accepted: Sequence[frozenset[str]],
    *,
    title: str = "",
) -> Figure:
    """Reference labels (rows, group labels included) x model classes (columns): cells
    coloured by the share of the row, counts and shares written in, and every cell that
    counts as right outlined."""
    counts = np.asarray(counts, dtype=np.int64)
    totals = counts.sum(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(totals > 0, counts / np.where(totals > 0, totals, 1), np.nan)
    k, m = len(row_labels), len(columns)
    fig, axes = new_figure(1, 1, width=0.55 * m + 2.2, height=0.45 * k + 1.2)
    ax = axes[0, 0]
    image = draw_confusion(ax, counts, share, columns, row_labels)
    for r, acc in enumerate(accepted):
        for c, code in enumerate(columns):
            if code in acc:
                ax.add_patch(
                    Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, ec=RIGHT_COLOR, lw=1.6)
                )
    ax.set_xlabel("Predicted phase (outlined: counts as right)")
    ax.set_ylabel("Reference")
    if title:
        ax.set_title(title)
    cbar = fig.colorbar(image, ax=ax, shrink=0.8, aspect=20, pad=0.02)
    cbar.set_label("Share of the reference")
    cbar.outline.set_visible(False)
    return fig


def accuracy_title(k: int, n: int, ci: Sequence[float]) -> str:
    lo, hi = ci
    return (
        f"accuracy {k}/{n} = {percent(k / n if n else float('nan'))} [{percent(lo)}, {percent(hi)}]"
    )
