"""Ablation figures: accuracy along each suite's axis, internal and external (no jax).

Drawn from the summary rows of phasejax.ablate.summarize (one dict per value with
`x`, `group`, `baseline`, `internal_acc_mean/_lo/_hi`, `external_acc_mean/_lo/_hi`), never
from a live run. Error bars are the 95% intervals of those rows (t over seeds, or Wilson
for a single seed).
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from phasejax.plotting.style import (
    DOUBLE_COLUMN_IN,
    FALLBACK_COLORS,
    SINGLE_COLUMN_IN,
    SPLIT_MARKERS,
    new_figure,
    save_figure,
    styled,
)

# "real": a labelled real set (ablate --real); drawn only where a suite has it.
SPLITS = (("internal", "test", "-"), ("external", "external", "--"), ("real", "real", ":"))
Row = Mapping[str, Any]


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _positions(rows: Sequence[Row]) -> tuple[list[float], list[str] | None]:
    """Numeric x when every row has one, else categorical positions 0..n-1 with tick labels."""
    if rows and all(_finite(r.get("x")) for r in rows):
        return [float(r["x"]) for r in rows], None
    return [float(i) for i in range(len(rows))], [str(r["value"]) for r in rows]


def _with_results(rows: Sequence[Row]) -> list[Row]:
    return [r for r in rows if any(_finite(r.get(f"{p}_acc_mean")) for p, _, _ in SPLITS)]


def _draw_axis(
    ax: Any,
    rows: Sequence[Row],
    meta: Mapping[str, Any],
    *,
    legend: bool,
    legend_outside: bool = False,
) -> bool:
    """Draw one suite on `ax`; True when its legend went beside the axes (legend_outside and
    more entries than one group's splits), which the figure must make room for."""
    xs, ticklabels = _positions(rows)
    kept = _with_results(rows)
    if ticklabels is not None and kept:
        # A categorical suite run in part (`--only`): only the values with results get a
        # place, or a few recipes would sit among twenty empty tick labels.
        rows = kept
        xs, ticklabels = _positions(rows)
    groups = list(dict.fromkeys(str(r.get("group", "")) for r in rows))
    # Offset the groups and splits a little so that error bars do not hide each other.
    log_x = ticklabels is None and min(xs) > 0 and max(xs) / min(xs) >= 8
    if log_x:
        # Shares of the data (0.1 .. 1) are read as ratios: a log axis spaces them evenly.
        ax.set_xscale("log")
    span = (max(xs) - min(xs)) if len(xs) > 1 else 1.0
    step = 0.025 * span if ticklabels is None else 0.08
    splits = [s for s in SPLITS if any(_finite(r.get(f"{s[0]}_acc_mean")) for r in rows)]
    n_series = len(groups) * len(splits)
    k = 0
    for gi, group in enumerate(groups):
        idx = [i for i, r in enumerate(rows) if str(r.get("group", "")) == group]
        for si, (prefix, split, ls) in enumerate(splits):
            # One line per group (colour) and split (marker/line style); with one group the
            # two splits get their own colours.
            color = FALLBACK_COLORS[(gi if len(groups) > 1 else si) % len(FALLBACK_COLORS)]
            pts = [
                (xs[i], rows[i][f"{prefix}_acc_mean"], rows[i][f"{prefix}_acc_lo"],
                 rows[i][f"{prefix}_acc_hi"])
                for i in idx
                if _finite(rows[i].get(f"{prefix}_acc_mean"))
            ]  # fmt: skip
            shift = (k - (n_series - 1) / 2) * step
            k += 1
            if not pts:
                continue
            x = np.array([p[0] for p in pts])
            x = x * (1 + 0.6 * shift / span) if log_x else x + shift
            y = 100 * np.array([p[1] for p in pts])
            lo = np.array([p[2] if _finite(p[2]) else p[1] for p in pts]) * 100
            hi = np.array([p[3] if _finite(p[3]) else p[1] for p in pts]) * 100
            label = f"{group}, {prefix}" if group else prefix
            ax.errorbar(
                x,
                y,
                yerr=np.vstack([y - lo, hi - y]).clip(min=0),
                # Categories (windows, strategies) have no order: no connecting line.
                linestyle=ls if ticklabels is None else "none",
                color=color,
                label=label,
                **SPLIT_MARKERS[split],
            )
    base = [i for i, r in enumerate(rows) if r.get("baseline")]
    if ticklabels is not None:
        ax.set_xticks(xs)
        many = len(xs) > 3
        ax.set_xticklabels(ticklabels, rotation=35 if many else 0, ha="right" if many else "center")
        for i in base:  # the baseline category in bold (no room for a second line of text)
            ax.get_xticklabels()[i].set_fontweight("bold")
        ax.set_xlim(min(xs) - 0.5, max(xs) + 0.5)
    else:
        for i in base:
            ax.axvline(xs[i], color="#999999", linestyle=":", linewidth=0.8, zorder=0)
        uniq = sorted(set(xs))
        ax.set_xticks(uniq)
        ax.set_xticklabels([f"{u:g}" for u in uniq])
        ax.minorticks_off()
        if base:
            ax.text(
                xs[base[0]], 1.0, " baseline", transform=ax.get_xaxis_transform(),
                fontsize=6.5, color="#777777", va="top", ha="left",
            )  # fmt: skip
    lo_y, hi_y = ax.get_ylim()
    ax.set_ylim(max(lo_y, 0.0), min(hi_y, 101.0))
    xlabel = str(meta.get("axis_label") or meta.get("axis", ""))
    ax.set_xlabel(xlabel + (" (baseline bold)" if ticklabels is not None and base else ""))
    ax.set_ylabel("accuracy (%)")
    ax.grid(True, axis="y")
    if legend or len(groups) > 1:
        if legend_outside and len(ax.get_legend_handles_labels()[1]) > len(SPLITS):
            # Two groups x three splits (A and B of learning_curve_ab, or the slice modes): six
            # entries inside the axes cover the curves whatever corner "best" picks; it starts
            # below the top, where the " baseline" mark of an axis at x = max runs out of the axes.
            ax.legend(loc="upper left", bbox_to_anchor=(1.02, 0.88), borderaxespad=0.0)
            return True
        ax.legend(loc="best")
    return False


def _draw_groups(ax: Any, groups: Sequence[Row], by: str) -> bool:
    rows = [g for g in groups if g["group_by"] == by and _finite(g.get("acc_mean"))]
    if not rows:
        return False
    labels = list(dict.fromkeys(g["group"] for g in rows))
    for si, (prefix, split, _) in enumerate(SPLITS):
        sel = {g["group"]: g for g in rows if g["split"] == prefix}
        if not sel:
            continue
        xs = [i + (si - 0.5) * 0.3 for i, lb in enumerate(labels) if lb in sel]
        vals = [sel[lb] for lb in labels if lb in sel]
        y = np.array([100 * v["acc_mean"] for v in vals])
        lo = np.array(
            [100 * (v["acc_lo"] if _finite(v["acc_lo"]) else v["acc_mean"]) for v in vals]
        )
        hi = np.array(
            [100 * (v["acc_hi"] if _finite(v["acc_hi"]) else v["acc_mean"]) for v in vals]
        )
        ax.errorbar(
            xs,
            y,
            yerr=np.vstack([y - lo, hi - y]).clip(min=0),
            linestyle="none",
            color=FALLBACK_COLORS[si],
            label=prefix,
            **SPLIT_MARKERS[split],
        )
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=30 if len(labels) > 4 else 0)
    ax.set_xlabel(by)
    ax.set_ylabel("accuracy (%)")
    ax.grid(True, axis="y")
    ax.legend(loc="lower right")
    return True


@styled
def plot_suite(
    rows: Sequence[Row],
    meta: Mapping[str, Any],
    out_stem: str | Path,
    *,
    groups: Sequence[Row] = (),
) -> list[Path]:
    """One suite: accuracy vs the axis (internal solid, external dashed, 95% error bars);
    an evaluate suite adds one panel per group_by column (e.g. per external site)."""
    by = [b for b in meta.get("group_by", []) if any(g["group_by"] == b for g in groups)]
    ncols = 1 + len(by)
    width = SINGLE_COLUMN_IN * 1.25 if ncols == 1 else min(DOUBLE_COLUMN_IN, 2.6 * ncols)
    fig, axes = new_figure(1, ncols, width=width, height=2.7)
    if _draw_axis(axes[0, 0], rows, meta, legend=True, legend_outside=True):
        fig.set_figwidth(width + 1.4)  # room for the legend (constrained layout runs at save)
    for j, b in enumerate(by, start=1):
        _draw_groups(axes[0, j], groups, b)
        axes[0, j].set_title(f"clean baseline by {b}")
    fig.suptitle(_title(meta), fontsize=8.5)
    return save_figure(fig, out_stem)


def _title(meta: Mapping[str, Any], width: int = 70) -> str:
    name = meta.get("name") or ""
    question = str(meta.get("question", ""))
    # At most three lines; a longer question ends in " ..." rather than mid-list.
    text = f"{name}{': ' if name else ''}{question}"
    return "\n".join(textwrap.wrap(text, width, max_lines=3, placeholder=" ..."))


@styled
def plot_overview(
    suites: Sequence[tuple[Sequence[Row], Mapping[str, Any]]], out_stem: str | Path
) -> list[Path]:
    """Every suite in one figure: one panel each, same layout as plot_suite."""
    n = len(suites)
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    fig, axes = new_figure(nrows, ncols, width=DOUBLE_COLUMN_IN, height=2.3 * nrows)
    for i, (rows, meta) in enumerate(suites):
        ax = axes[i // ncols, i % ncols]
        _draw_axis(ax, rows, meta, legend=i == 0)
        ax.set_title(str(meta.get("name") or meta.get("axis", "")))
    for j in range(n, nrows * ncols):
        axes[j // ncols, j % ncols].set_visible(False)
    return save_figure(fig, out_stem)
