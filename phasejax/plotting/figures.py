"""Paper figures drawn from results files: confusion matrices, ROC curves, per-phase sensitivity
with the published values, reliability diagrams, per-site external accuracy.

Every function takes `runs`: an ordered mapping {display label: results dict} (the schema of
phasejax.eval.results), never a live model, so `phasejax figures RUN_DIR` redraws all of them
without retraining. Strategy A (one-step) and B (two-step) keep their colours in every figure
(phasejax.plotting.style). No jax here: eval and plotting run on any machine.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from phasejax.eval import paper as published
from phasejax.eval.metrics import per_site_accuracy
from phasejax.eval.results import (
    RESULTS_FILE,
    load_results,
    predictions_arrays,
    split_metrics,
)
from phasejax.plotting.style import (
    DOUBLE_COLUMN_IN,
    PAPER_COLOR,
    PAPER_MARKER,
    SINGLE_COLUMN_IN,
    SPLIT_MARKERS,
    SPLIT_TITLES,
    STRATEGY_LABELS,
    new_figure,
    percent,
    phase_color,
    save_figure,
    strategy_color,
    styled,
)

log = logging.getLogger(__name__)

Runs = Mapping[str, Mapping[str, Any]]
DEFAULT_SPLITS = ("test", "external")
PAPER_LABEL = "Liu et al. 2025"


class NoFigureData(ValueError):
    """The runs hold nothing this figure can show (e.g. no external split)."""


# --------------------------------------------------------------------------- helpers


def _splits(runs: Runs, splits: Sequence[str]) -> list[str]:
    present = [s for s in splits if any(s in r["splits"] for r in runs.values())]
    if not present:
        raise NoFigureData(f"no run has any of the splits {list(splits)}")
    return present


def _nan(v: Any) -> float:
    return float("nan") if v is None else float(v)


def _err(value: float, ci: Sequence[Any]) -> tuple[float, float]:
    """Error-bar half lengths (below, above) in percent; 0 where the interval is undefined."""
    lo, hi = _nan(ci[0]), _nan(ci[1])
    below = 100 * (value - lo) if np.isfinite(lo) else 0.0
    above = 100 * (hi - value) if np.isfinite(hi) else 0.0
    return max(below, 0.0), max(above, 0.0)


def _offsets(n: int, width: float = 0.72) -> np.ndarray:
    if n == 1:
        return np.zeros(1)
    return np.linspace(-width / 2, width / 2, n)


def _split_style(split: str, color: str) -> dict[str, Any]:
    spec = SPLIT_MARKERS.get(split, {"marker": "^", "fillstyle": "full"})
    face = color if spec["fillstyle"] == "full" else "white"
    return {"marker": spec["marker"], "color": color, "mfc": face, "mec": color, "ms": 5.5}


def _paper_style(filled: bool = True) -> dict[str, Any]:
    return {
        "marker": PAPER_MARKER,
        "color": PAPER_COLOR,
        "mfc": PAPER_COLOR if filled else "white",
        "mec": PAPER_COLOR,
        "ms": 8,
    }


def _classes(runs: Runs) -> list[str]:
    out: list[str] = []
    for r in runs.values():
        out += [c for c in r["classes"] if c not in out]
    return out


def _color(runs: Runs, label: str) -> str:
    index = list(runs).index(label)
    return strategy_color(str(runs[label].get("strategy", "")), index)


def _no_data(ax: Any, text: str = "no data") -> None:
    ax.set_axis_off()
    ax.text(0.5, 0.5, text, ha="center", va="center", color="#777777", transform=ax.transAxes)


def _lower_ylim(values: list[float], floor: float = 0.0) -> float:
    finite = [v for v in values if np.isfinite(v)]
    if not finite:
        return floor
    return max(floor, 5 * np.floor((min(finite) - 2) / 5))


# --------------------------------------------------------------------------- figures


def draw_confusion(
    ax: Any,
    counts: np.ndarray,
    share: np.ndarray,
    columns: Sequence[str],
    rows: Sequence[str],
) -> Any:
    """Confusion cells on `ax`: coloured by `share` (NaN drawn as 0), labelled with the count
    and the share; returns the image for a colour bar. Rows and columns need not match
    (`phasejax evaluate` puts group labels such as AP on the rows)."""
    image = ax.imshow(np.nan_to_num(share), cmap="Blues", vmin=0.0, vmax=1.0)
    for r in range(counts.shape[0]):
        for c in range(counts.shape[1]):
            v = share[r, c]
            dark = np.isfinite(v) and v > 0.55
            if counts[r, c] == 0:
                ax.text(c, r, "0", ha="center", va="center", fontsize=7, color="#AAAAAA")
                continue
            ax.text(
                c, r, f"{counts[r, c]}\n{percent(v)}", ha="center", va="center",
                fontsize=6.5, color="white" if dark else "#222222", linespacing=1.1,
            )  # fmt: skip
    ax.set_xticks(range(len(columns)), list(columns))
    ax.set_yticks(range(len(rows)), list(rows))
    ax.tick_params(length=0)
    for side_name in ("top", "right", "left", "bottom"):
        ax.spines[side_name].set_visible(False)
    return image


@styled
def plot_confusion(runs: Runs, splits: Sequence[str] = DEFAULT_SPLITS) -> Figure:
    """Confusion matrices, rows = runs, columns = splits: cells coloured by the row-normalised
    share (per true class) and labelled with the count and that share."""
    splits = _splits(runs, splits)
    k = len(_classes(runs))
    side = 0.45 * k + 1.0
    fig, axes = new_figure(
        len(runs), len(splits), width=min(DOUBLE_COLUMN_IN, side * len(splits) + 0.8),
        height=side * len(runs) + 0.3,
    )  # fmt: skip
    image = None
    for i, (label, res) in enumerate(runs.items()):
        classes = list(res["classes"])
        for j, split in enumerate(splits):
            ax = axes[i, j]
            m = split_metrics(res, split)
            if m is None or not m.get("n"):
                _no_data(ax, f"{label}\n{SPLIT_TITLES.get(split, split)}: no data")
                continue
            counts = np.asarray(m["confusion"]["counts"], dtype=np.int64)
            share = np.array([[_nan(v) for v in row] for row in m["confusion"]["row_normalised"]])
            image = draw_confusion(ax, counts, share, classes, classes)
            ax.set_xlabel("Predicted phase")
            ax.set_ylabel("True phase")
            acc = m["accuracy"]
            ax.set_title(
                f"{label} · {SPLIT_TITLES.get(split, split)}\n"
                f"accuracy {acc['k']}/{acc['n']} = {percent(acc['value'])}"
            )
    if image is not None:
        cbar = fig.colorbar(image, ax=axes, shrink=0.5, aspect=25, pad=0.02)
        cbar.set_label("Share of the true phase")
        cbar.outline.set_visible(False)
    return fig


@styled
def plot_roc(runs: Runs, splits: Sequence[str] = DEFAULT_SPLITS) -> Figure:
    """One-vs-rest ROC curve per phase, rows = runs, columns = splits; AUC with its 95%
    bootstrap interval (by patient) in the legend, and a zoom on the top-left corner."""
    splits = _splits(runs, splits)
    fig, axes = new_figure(
        len(runs), len(splits), width=min(DOUBLE_COLUMN_IN, 3.3 * len(splits)),
        height=3.3 * len(runs),
    )  # fmt: skip
    for i, (label, res) in enumerate(runs.items()):
        for j, split in enumerate(splits):
            ax = axes[i, j]
            m = split_metrics(res, split)
            if m is None or not m.get("n"):
                _no_data(ax, f"{label}\n{SPLIT_TITLES.get(split, split)}: no data")
                continue
            zoom = ax.inset_axes((0.47, 0.5, 0.49, 0.32))
            for c_i, code in enumerate(res["classes"]):
                curve = m["roc"].get(code)
                if not curve:
                    continue
                auc = m["per_class"][code]["auc"]
                lo, hi = _nan(auc["ci"][0]), _nan(auc["ci"][1])
                ci = f" ({lo:.3f}–{hi:.3f})" if np.isfinite(lo) else ""
                style = {"color": phase_color(code, c_i), "lw": 1.4}
                ax.plot(curve["fpr"], curve["tpr"], label=f"{code}  {_nan(auc['value']):.3f}{ci}",
                        **style)  # fmt: skip
                zoom.plot(curve["fpr"], curve["tpr"], **style)
            ax.plot([0, 1], [0, 1], ls=(0, (3, 3)), color="#AAAAAA", lw=0.8)
            ax.set_xlim(-0.01, 1.01)
            ax.set_ylim(-0.01, 1.01)
            ax.set_aspect("equal")
            ax.set_xlabel("1 − specificity")
            ax.set_ylabel("Sensitivity")
            ax.set_title(f"{label} · {SPLIT_TITLES.get(split, split)}")
            ax.legend(loc="lower right", title="AUC (95% CI)", title_fontsize=7.5,
                      handlelength=1.2, borderaxespad=0.2)  # fmt: skip
            zoom.set_xlim(0.0, 0.2)
            zoom.set_ylim(0.8, 1.005)
            zoom.tick_params(labelsize=6, length=2)
            zoom.set_title("zoom", fontsize=6.5, pad=2)
            zoom.grid(True)
    return fig


@styled
def plot_sensitivity(
    runs: Runs, splits: Sequence[str] = DEFAULT_SPLITS, *, paper: bool = True
) -> Figure:
    """Per-phase sensitivity with 95% Wilson intervals for every run and split, next to the
    published external two-step sensitivities (black stars, Wilson intervals of their counts)."""
    splits = _splits(runs, splits)
    classes = _classes(runs)
    entries = [(lab, s) for lab in runs for s in splits if s in runs[lab]["splits"]]
    paper_sens = published.EXTERNAL_SENSITIVITY["two_step"] if paper else {}
    show_paper = any(c in paper_sens for c in classes)
    offsets = _offsets(len(entries) + int(show_paper))
    fig, axes = new_figure(1, 1, width=DOUBLE_COLUMN_IN, height=3.0)
    ax = axes[0, 0]
    lows: list[float] = []
    x = np.arange(len(classes))
    for e_i, (label, split) in enumerate(entries):
        m = split_metrics(runs[label], split)
        if m is None:
            continue
        xs, ys, err = [], [], []
        for c_i, code in enumerate(classes):
            sens = m["per_class"].get(code, {}).get("sensitivity") if m.get("per_class") else None
            if not sens or sens["value"] is None:
                continue
            xs.append(x[c_i] + offsets[e_i])
            ys.append(100 * sens["value"])
            err.append(_err(sens["value"], sens["ci"]))
            lows.append(100 * _nan(sens["ci"][0]))
        if not xs:
            continue
        ax.errorbar(
            xs, ys, yerr=np.array(err).T, ls="none", elinewidth=1.1,
            label=f"{label}, {SPLIT_TITLES.get(split, split).lower()}",
            **_split_style(split, _color(runs, label)),
        )  # fmt: skip
    if show_paper:
        xs, ys, err = [], [], []
        for c_i, code in enumerate(classes):
            if code in paper_sens:
                c = paper_sens[code]
                xs.append(x[c_i] + offsets[-1])
                ys.append(100 * c.value)
                err.append(_err(c.value, c.wilson()))
                lows.append(100 * c.wilson()[0])
        ax.errorbar(
            xs, ys, yerr=np.array(err).T, ls="none", elinewidth=1.1,
            label=f"{PAPER_LABEL} (two-step, external)", **_paper_style(),
        )  # fmt: skip
    ax.set_xticks(x, classes)
    ax.set_xlim(-0.6, len(classes) - 0.4)
    ax.set_ylim(_lower_ylim(lows), 103.0)
    ax.set_ylabel("Sensitivity (%)")
    ax.yaxis.grid(True)
    ax.set_axisbelow(True)
    for edge in x[:-1] + 0.5:
        ax.axvline(edge, color="#EEEEEE", lw=0.8, zorder=0)
    ax.set_title("Per-phase sensitivity (95% CI)")
    # Column-major legend: one column per run (its splits stacked), the paper last.
    ncol = len(runs) + int(show_paper) if len(splits) > 1 else 3
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=ncol, handletextpad=0.3)
    return fig


@styled
def plot_reliability(runs: Runs, splits: Sequence[str] = DEFAULT_SPLITS) -> Figure:
    """Reliability diagram per split (top-label confidence vs accuracy on equal-width bins,
    ECE in the legend) with the share of series in each bin below."""
    splits = _splits(runs, splits)
    fig, axes = new_figure(
        2, len(splits), width=min(DOUBLE_COLUMN_IN, 3.2 * len(splits)), height=3.9,
        height_ratios=(3, 1), sharex="col",
    )  # fmt: skip
    n_runs = len(runs)
    for j, split in enumerate(splits):
        top, bottom = axes[0, j], axes[1, j]
        top.plot([0, 1], [0, 1], ls=(0, (3, 3)), color="#AAAAAA", lw=0.8, label="perfect")
        for r_i, (label, res) in enumerate(runs.items()):
            m = split_metrics(res, split)
            if m is None or not m.get("n"):
                continue
            cal = m["calibration"]
            bins = cal["bins"]
            lower = np.asarray(bins["lower"], dtype=float)
            upper = np.asarray(bins["upper"], dtype=float)
            count = np.asarray(bins["count"], dtype=float)
            conf = np.array([_nan(v) for v in bins["confidence"]])
            acc = np.array([_nan(v) for v in bins["accuracy"]])
            color = _color(runs, label)
            filled = count > 0
            top.plot(conf[filled], acc[filled], color=color, lw=1.2,
                     label=f"{label} (ECE {percent(cal['ece'])})")  # fmt: skip
            # Marker area ~ bin size: a bin of 1 series at accuracy 0 should not look like a
            # calibration failure.
            share = count[filled] / max(count.sum(), 1)
            top.scatter(conf[filled], acc[filled], s=6 + 90 * share, color=color, zorder=3,
                        edgecolors="white", linewidths=0.5)  # fmt: skip
            width = (upper - lower) / (n_runs + 1)
            bottom.bar(lower + width * (r_i + 0.5 + 0.5), count / max(count.sum(), 1), width=width,
                       color=color, align="center")  # fmt: skip
        top.set_xlim(0, 1)
        top.set_ylim(0, 1.02)
        top.set_ylabel("Accuracy")
        top.set_title(SPLIT_TITLES.get(split, split))
        top.legend(loc="upper left")
        top.grid(True)
        bottom.set_xlabel("Confidence (highest probability)")
        bottom.set_ylabel("Share")
        bottom.set_ylim(0, 1)
    return fig


def _per_site(res: Mapping[str, Any], split: str) -> dict[str, dict]:
    m = split_metrics(res, split) or {}
    if m.get("per_site"):
        return dict(m["per_site"])
    y, probs, _, sites, _ = predictions_arrays(res["splits"][split], res["classes"])
    pred = probs.argmax(1) if len(y) else np.zeros(0, np.int64)
    return per_site_accuracy(y, pred, sites)


@styled
def plot_site_accuracy(runs: Runs, split: str = "external", *, paper: bool = True) -> Figure:
    """Accuracy per external site and overall, 95% Wilson intervals; the published overall
    external two-step accuracy as a black star (the paper gives no per-site numbers)."""
    labels = [lab for lab in runs if split in runs[lab]["splits"]]
    if not labels:
        raise NoFigureData(f"no run has a {split!r} split")
    per = {lab: _per_site(runs[lab], split) for lab in labels}
    sites = sorted({s for p in per.values() for s in p})
    if not sites:
        raise NoFigureData(f"the {split!r} split has no labelled series")
    names = [*sites, "All"]
    show_paper = paper and split == "external"
    offsets = _offsets(len(labels) + int(show_paper), width=0.5)
    width = min(DOUBLE_COLUMN_IN, max(4.8, 1.2 + 0.9 * len(names)))
    fig, axes = new_figure(1, 1, width=width, height=2.9)
    ax = axes[0, 0]
    lows: list[float] = []
    for r_i, label in enumerate(labels):
        overall = split_metrics(runs[label], split)["accuracy"]  # type: ignore[index]
        cells = [per[label].get(s) for s in sites] + [overall]
        xs = [i + offsets[r_i] for i, c in enumerate(cells) if c and c["value"] is not None]
        ys = [100 * c["value"] for c in cells if c and c["value"] is not None]
        err = [_err(c["value"], c["ci"]) for c in cells if c and c["value"] is not None]
        lows += [100 * _nan(c["ci"][0]) for c in cells if c and c["value"] is not None]
        ax.errorbar(xs, ys, yerr=np.array(err).T, ls="none", elinewidth=1.1, label=label,
                    **_split_style(split, _color(runs, label)))  # fmt: skip
    if show_paper:
        c = published.EXTERNAL_ACCURACY["two_step"]
        lows.append(100 * c.wilson()[0])
        ax.errorbar([len(sites) + offsets[-1]], [100 * c.value], yerr=np.array([_err(c.value, c.wilson())]).T,
                    ls="none", label=f"{PAPER_LABEL} (two-step, all external)", **_paper_style())  # fmt: skip
    first = per[labels[0]]
    overall_n = split_metrics(runs[labels[0]], split)["accuracy"]["n"]  # type: ignore[index]
    ticks = [f"{s}\nn={first[s]['n']}" if s in first else s for s in sites] + [
        f"All\nn={overall_n}"
    ]
    ax.set_xticks(range(len(names)), ticks)
    ax.axvline(len(sites) - 0.5, color="#CCCCCC", lw=0.8)
    ax.set_xlim(-0.6, len(names) - 0.4)
    ax.set_ylim(_lower_ylim(lows), 103.0)
    ax.set_ylabel("Accuracy (%)")
    ax.yaxis.grid(True)
    ax.set_axisbelow(True)
    ax.set_title(f"{SPLIT_TITLES.get(split, split)}: accuracy per site (95% CI)")
    ncol = len(labels) + int(show_paper) if width >= 6.5 else 2
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=ncol, handletextpad=0.3)
    return fig


@styled
def plot_accuracy(
    runs: Runs, splits: Sequence[str] = DEFAULT_SPLITS, *, paper: bool = True
) -> Figure:
    """Series-level accuracy with 95% Wilson intervals per split, next to the published accuracies
    (filled star = two-step, open star = one-step)."""
    splits = _splits(runs, splits)
    paper_pts: list[tuple[int, str, Any]] = []
    if paper:
        for j, split in enumerate(splits):
            table = {"test": published.INTERNAL_ACCURACY, "external": published.EXTERNAL_ACCURACY}
            for strategy, c in table.get(split, {}).items():
                paper_pts.append((j, strategy, c))
    # Paper slots after the runs, in the runs' order (one-step before two-step).
    paper_strategies = sorted({s for _, s, _ in paper_pts}, key=lambda s: STRATEGY_LABELS.get(s, s))
    offsets = _offsets(len(runs) + len(paper_strategies), width=0.55)
    fig, axes = new_figure(1, 1, width=SINGLE_COLUMN_IN, height=2.9)
    ax = axes[0, 0]
    lows: list[float] = []
    for r_i, (label, res) in enumerate(runs.items()):
        xs, ys, err = [], [], []
        for j, split in enumerate(splits):
            m = split_metrics(res, split)
            if m is None or m["accuracy"]["value"] is None:
                continue
            a = m["accuracy"]
            xs.append(j + offsets[r_i])
            ys.append(100 * a["value"])
            err.append(_err(a["value"], a["ci"]))
            lows.append(100 * _nan(a["ci"][0]))
        if xs:
            ax.errorbar(xs, ys, yerr=np.array(err).T, ls="none", label=label,
                        **_split_style("test", _color(runs, label)))  # fmt: skip
    for s_i, strategy in enumerate(paper_strategies):
        pts = [(j, c) for j, s, c in paper_pts if s == strategy]
        slot = offsets[len(runs) + s_i]
        err = np.array([_err(c.value, c.wilson()) for _, c in pts]).T
        lows += [100 * c.wilson()[0] for _, c in pts]
        name = STRATEGY_LABELS.get(strategy, strategy).split(": ")[-1]
        ax.errorbar([j + slot for j, _ in pts], [100 * c.value for _, c in pts], yerr=err,
                    ls="none", label=f"{PAPER_LABEL} ({name})",
                    **_paper_style(filled=strategy == "two_step"))  # fmt: skip
    ax.set_xticks(range(len(splits)), [SPLIT_TITLES.get(s, s) for s in splits])
    ax.set_xlim(-0.6, len(splits) - 0.4)
    ax.set_ylim(_lower_ylim(lows), 103.0)
    ax.set_ylabel("Accuracy per series (%)")
    ax.yaxis.grid(True)
    ax.set_axisbelow(True)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, handletextpad=0.3)
    return fig


FIGURES: dict[str, Callable[[Runs], Figure]] = {
    "accuracy": plot_accuracy,
    "confusion": plot_confusion,
    "roc": plot_roc,
    "sensitivity": plot_sensitivity,
    "reliability": plot_reliability,
    "site_accuracy": plot_site_accuracy,
}


# --------------------------------------------------------------------------- runs on disk


def _saliency_dir(run_dir: Path) -> Path | None:
    """The directory holding a run's saliency.npz: the run's own, else a seed ensemble's
    member's (reproduce computes Grad-CAM for its first member only)."""
    if (run_dir / "saliency.npz").is_file():
        return run_dir
    members = sorted(run_dir.glob("seed*/saliency.npz"))
    return members[0].parent if members else None


def find_runs(path: str | Path) -> dict[str, Path]:
    """Run directories under `path`: {path.name: path} for a training run (results.json inside);
    for a reproduce directory (its results.json is the A-vs-B summary), its strategy runs
    labelled as `phasejax reproduce` draws them ("A: one-step", "B: two-step"); otherwise
    every immediate subdirectory holding results.json, sorted by name."""
    path = Path(path)
    if (path / RESULTS_FILE).is_file():
        runs = _reproduce_runs(path)
        return runs if runs is not None else {path.name: path}
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such directory")
    found = {p.name: p for p in sorted(path.iterdir()) if (p / RESULTS_FILE).is_file()}
    if not found:
        raise FileNotFoundError(
            f"{path}: neither a run (no {RESULTS_FILE}) nor a directory of runs "
            f"(no subdirectory with {RESULTS_FILE})"
        )
    return found


def _reproduce_runs(path: Path) -> dict[str, Path] | None:
    """The strategy runs of a reproduce directory, or None when `path` is a single run.

    A reproduce summary has "strategies" ({"A": {"strategy", "run_dir"}, ...}) and no
    "splits"; each run is looked for at OUT/strategy_<key> first (the directory may have
    moved since), then at the run_dir it recorded.
    """
    try:
        doc = json.loads((path / RESULTS_FILE).read_text())
    except (OSError, ValueError):
        return None  # load_results reports what is wrong with it
    strategies = doc.get("strategies") if isinstance(doc, dict) else None
    if not isinstance(strategies, dict) or "splits" in doc:
        return None
    runs: dict[str, Path] = {}
    for key, entry in sorted(strategies.items()):
        entry = entry if isinstance(entry, dict) else {}
        here = path / f"strategy_{key}"
        recorded = Path(str(entry.get("run_dir") or here))
        run = here if (here / RESULTS_FILE).is_file() or not recorded.is_dir() else recorded
        runs[STRATEGY_LABELS.get(str(entry.get("strategy")), f"strategy_{key}")] = run
    return runs


def label_runs(results: Mapping[str, Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """Relabel {name: results} for display: "A: one-step" / "B: two-step" when each run has a
    distinct known strategy, the given names otherwise; A is drawn before B."""
    strategies = [r.get("strategy") for r in results.values()]
    if len(set(strategies)) == len(strategies) and all(s in STRATEGY_LABELS for s in strategies):
        ordered = sorted(results.values(), key=lambda r: STRATEGY_LABELS[r["strategy"]])
        return {STRATEGY_LABELS[r["strategy"]]: r for r in ordered}
    return dict(results)


def draw_all(run_dirs: Mapping[str, str | Path], out: str | Path) -> list[Path]:
    """Draw every figure of the given runs into `out` (NAME.png and NAME.pdf each); figures the
    runs hold no data for (e.g. no external split) are skipped. Saliency overlays and shares
    are drawn for runs that hold a saliency.npz, or whose seed ensemble's member does
    (RUN/seed<S>/saliency.npz, `phasejax reproduce --members`). Returns the written paths."""
    runs = label_runs({name: load_results(d) for name, d in run_dirs.items()})
    out = Path(out)
    paths: list[Path] = []
    for name, fn in FIGURES.items():
        try:
            fig = fn(runs)
        except NoFigureData as e:
            log.info("figure %s skipped: %s", name, e)
            continue
        paths += save_figure(fig, out / name)
    from phasejax.plotting.saliency import draw_saliency

    for name, d in run_dirs.items():
        d = _saliency_dir(Path(d))
        if d is not None:
            slug = re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_")
            paths += draw_saliency(d, out, name=f"saliency_{slug}")
    return paths
