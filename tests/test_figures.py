"""Figures render headless from small hand-made results files (no model, no jax)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from phasejax.cli import main as cli_main
from phasejax.eval.results import make_results, predictions_from_rows, split_results, write_results
from phasejax.plotting.figures import (
    FIGURES,
    draw_all,
    find_runs,
    label_runs,
    plot_confusion,
    plot_sensitivity,
    plot_site_accuracy,
)

CLASSES = ["EAP", "LAP", "PVP", "DP"]


def _split(site_names: list[str], n_pat: int, wrong: set[int], tag: str) -> dict:
    rows = []
    for i in range(n_pat):
        art = "EAP" if i % 3 == 0 else "LAP"
        for ph in (art, "PVP", "DP"):
            rows.append({"series_id": f"{tag}{i}{ph}", "patient_id": f"{tag}P{i}",
                         "site": site_names[i % len(site_names)], "phase": ph})  # fmt: skip
    probs = np.full((len(rows), 4), 0.1)
    for j, r in enumerate(rows):
        t = CLASSES.index(r["phase"])
        probs[j, (t + 1) % 4 if j in wrong else t] = 0.7
    return split_results(predictions_from_rows(rows, probs, CLASSES), CLASSES, n_bootstrap=40)


def _write_run(run_dir: Path, strategy: str, wrong_test: set[int], wrong_ext: set[int],
               external: bool = True) -> None:  # fmt: skip
    splits = {"test": _split(["internal"], 8, wrong_test, "t")}
    if external:
        splits["external"] = _split(["Site A", "Site B"], 6, wrong_ext, "e")
    train = {"steps": 5, "wall_time_s": 2.0, "images_per_s": 10.0, "best_step": 5,
             "best_val_accuracy": 0.9}  # fmt: skip
    write_results(run_dir, make_results(classes=CLASSES, label_set="paper4", strategy=strategy,
                                        train=train, splits=splits))  # fmt: skip


@pytest.fixture(scope="module")
def reproduce_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("reproduce")
    _write_run(root / "strategy_A", "one_step", {0, 3, 4, 9}, {1, 2, 5})
    _write_run(root / "strategy_B", "two_step", {3}, {2})
    return root


def _check_files(paths: list[Path]) -> None:
    for p in paths:
        head = p.read_bytes()[:8]
        assert p.stat().st_size > 2000, p
        assert head.startswith(b"\x89PNG" if p.suffix == ".png" else b"%PDF"), p


def test_draw_all_writes_every_figure_as_png_and_pdf(reproduce_dir, tmp_path):
    runs = find_runs(reproduce_dir)
    assert list(runs) == ["strategy_A", "strategy_B"]
    paths = draw_all(runs, tmp_path / "figs")
    expected = {f"{name}.{ext}" for name in FIGURES for ext in ("png", "pdf")}
    assert {p.name for p in paths} == expected
    _check_files(paths)


def test_single_run_without_external_skips_the_site_figure(tmp_path):
    _write_run(tmp_path / "run", "two_step", {1}, set(), external=False)
    assert cli_main(["figures", str(tmp_path / "run")]) == 0
    written = sorted(p.name for p in (tmp_path / "run" / "figures").iterdir())
    assert "site_accuracy.png" not in written
    assert {"confusion.png", "roc.pdf", "sensitivity.png", "reliability.pdf"} <= set(written)


def test_figures_command_reports_a_missing_run(tmp_path, capsys):
    assert cli_main(["figures", str(tmp_path / "nowhere")]) == 1
    assert "nowhere: no such directory" in capsys.readouterr().err


def test_runs_are_labelled_by_strategy_a_before_b(reproduce_dir):
    results = {name: json.loads((d / "results.json").read_text())
               for name, d in reversed(find_runs(reproduce_dir).items())}  # fmt: skip
    assert list(label_runs(results)) == ["A: one-step", "B: two-step"]


def test_figure_content_comes_from_the_results(reproduce_dir):
    runs = label_runs(
        {
            n: json.loads((d / "results.json").read_text())
            for n, d in find_runs(reproduce_dir).items()
        }  # fmt: skip
    )
    # sensitivity: the published external two-step sensitivities are drawn as given
    fig = plot_sensitivity(runs)
    ax = fig.axes[0]
    stars = [ln for ln in ax.lines if ln.get_marker() == "*"]
    assert len(stars) == 1
    assert stars[0].get_ydata() == pytest.approx([100 * 58 / 61, 100 * 153 / 154,
                                                  100 * 214 / 215, 100 * 214 / 215])  # fmt: skip
    # confusion: one-step internal test had 4 errors of 24 series -> title 20/24
    titles = [a.get_title() for a in plot_confusion(runs).axes]
    assert any("A: one-step · Internal test" in t and "20/24" in t for t in titles)
    # site accuracy: one x tick per site plus "All", n from the predictions
    ticks = [t.get_text() for t in plot_site_accuracy(runs).axes[0].get_xticklabels()]
    assert ticks == ["Site A\nn=9", "Site B\nn=9", "All\nn=18"]


def test_figures_command_redraws_a_reproduce_directory(reproduce_dir, tmp_path, capsys):
    import shutil

    from phasejax.reproduce import summarize_reproduction, write_reproduction

    out = tmp_path / "quick"
    for key in "AB":
        shutil.copytree(reproduce_dir / f"strategy_{key}", out / f"strategy_{key}")
    # As `phasejax reproduce` leaves it: the A-vs-B summary as OUT/results.json, with the
    # run_dir paths of where it ran (this directory has moved since).
    summary = summarize_reproduction(
        {"A": reproduce_dir / "strategy_A", "B": reproduce_dir / "strategy_B"}, preset="quick"
    )
    write_reproduction(out, summary)
    assert find_runs(out) == {"A: one-step": out / "strategy_A", "B: two-step": out / "strategy_B"}
    assert cli_main(["figures", str(out)]) == 0
    assert "runs: A: one-step" in capsys.readouterr().out
    written = {p.name for p in (out / "figures").iterdir()}
    assert written == {f"{name}.{ext}" for name in FIGURES for ext in ("png", "pdf")}
    _check_files(sorted((out / "figures").iterdir()))
    # A single run's results.json is still a run, not a reproduce directory.
    assert find_runs(out / "strategy_B") == {"strategy_B": out / "strategy_B"}
