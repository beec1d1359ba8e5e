"""The one figure style of phasejax: colours, sizes, fonts, and PNG + PDF saving.

Matplotlib OBJECT API only: figures are `matplotlib.figure.Figure` instances created here,
never through pyplot, so no global figure state leaks between calls and nothing needs a
display (Figure.savefig uses the Agg/PDF canvases directly). rcParams are read when an
artist is created, so draw everything inside `style_context()` (or decorate the drawing
function with `@styled`).

Colours are the Okabe-Ito palette (Wong, Nature Methods 2011;8:441), distinguishable with
the common colour-vision deficiencies: arterial phases warm, venous/delayed cool.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import matplotlib as mpl
import numpy as np
from matplotlib.figure import Figure

PHASE_COLORS: dict[str, str] = {
    "NC": "#7F7F7F",  # grey: no iodine
    "EAP": "#D55E00",  # vermillion
    "LAP": "#E69F00",  # orange
    "PVP": "#0072B2",  # blue
    "DP": "#009E73",  # bluish green
}
STRATEGY_COLORS: dict[str, str] = {
    "one_step": "#56B4E9",  # strategy A: sky blue
    "two_step": "#CC79A7",  # strategy B: reddish purple
}
STRATEGY_LABELS: dict[str, str] = {"one_step": "A: one-step", "two_step": "B: two-step"}
FALLBACK_COLORS = ("#0072B2", "#D55E00", "#009E73", "#E69F00", "#CC79A7", "#56B4E9", "#000000")
PAPER_COLOR = "#000000"  # published values are always black stars
PAPER_MARKER = "*"

SPLIT_TITLES: dict[str, str] = {
    "test": "Internal test",
    "external": "External test",
    "val": "Validation",
    "train": "Training",
}
# Internal = filled circle, external = open square: readable in greyscale print too.
SPLIT_MARKERS: dict[str, dict[str, Any]] = {
    "test": {"marker": "o", "fillstyle": "full"},
    "external": {"marker": "s", "fillstyle": "none"},
    "val": {"marker": "D", "fillstyle": "full"},
    "real": {"marker": "^", "fillstyle": "full"},
}

SINGLE_COLUMN_IN = 3.5  # journal single column width, inches
DOUBLE_COLUMN_IN = 7.2  # double column
PNG_DPI = 300

RC: dict[str, Any] = {
    "font.family": "DejaVu Sans",
    "font.size": 8.5,
    "axes.titlesize": 9,
    "axes.labelsize": 8.5,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 7.5,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.linewidth": 0.8,
    "lines.linewidth": 1.4,
    "lines.markersize": 5,
    "errorbar.capsize": 2.5,
    "grid.color": "#DDDDDD",
    "grid.linewidth": 0.6,
    "savefig.bbox": "tight",
    "savefig.pad_inches": 0.03,
    # TrueType (Type 42) fonts in PDF keep text editable, and journals reject Type 3 fonts.
    "pdf.fonttype": 42,
    "ps.fonttype": 42,
    "image.interpolation": "nearest",
}

P = ParamSpec("P")
R = TypeVar("R")


@contextlib.contextmanager
def style_context() -> Iterator[None]:
    with mpl.rc_context(RC):
        yield


def styled(fn: Callable[P, R]) -> Callable[P, R]:
    """Run a drawing function inside style_context()."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with style_context():
            return fn(*args, **kwargs)

    return wrapper


def new_figure(
    nrows: int = 1,
    ncols: int = 1,
    *,
    width: float = DOUBLE_COLUMN_IN,
    height: float | None = None,
    squeeze: bool = False,
    **subplots_kw: Any,
) -> tuple[Figure, Any]:
    """A constrained-layout Figure and its axes grid (2-D array unless squeeze=True)."""
    if height is None:
        height = width * 0.42 * nrows / max(ncols, 1) * 2
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=squeeze, **subplots_kw)
    return fig, axes


def strategy_color(strategy: str, index: int = 0) -> str:
    return STRATEGY_COLORS.get(strategy, FALLBACK_COLORS[index % len(FALLBACK_COLORS)])


def phase_color(code: str, index: int = 0) -> str:
    return PHASE_COLORS.get(code, FALLBACK_COLORS[index % len(FALLBACK_COLORS)])


def percent(v: float | None, digits: int = 1) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{100 * v:.{digits}f}%"


def save_figure(fig: Figure, path_stem: str | Path, *, dpi: int = PNG_DPI) -> list[Path]:
    """Write path_stem.png and path_stem.pdf; returns both paths."""
    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = []
    with style_context():
        for ext in ("png", "pdf"):
            path = stem.with_name(stem.name + "." + ext)
            # No creation date in the PDF: the same results give the same bytes.
            meta = {"CreationDate": None} if ext == "pdf" else None
            fig.savefig(path, dpi=dpi, metadata=meta)
            out.append(path)
    return out
