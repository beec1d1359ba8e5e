"""`phasejax reproduce`: the paper's experiment, strategy A (one step) vs B (two steps).

Both strategies are trained with the same data, preprocessing, steps and batch size
(the config's `train` section); only `model.strategy` differs. Each is an ordinary
training workdir (`OUT/strategy_A`, `OUT/strategy_B`), so an interrupted reproduce
resumes where it stopped: a finished training returns its results without retraining,
an interrupted one continues from its last checkpoint. The comparison, report and
figures are then redrawn from the two results.json files.

With `members` N > 1 each strategy is a seed ensemble: N trainings of the same config with
train.seed, seed + 1, ... in `OUT/strategy_K/seed<S>/`, and `OUT/strategy_K/results.json` the
mean of their probabilities (`phasejax.eval.results.ensemble_results`), which the comparison,
report and figures read; Grad-CAM explains the first member, and `full5` stays one network.
Why: B's seeds spread by up to 4 points on the 224 external series, and two-seed ensembles of
the baseline scored 96.0-96.9% where its single networks scored 93.8-96.4%
(README, "What narrows it is averaging").

The trainings (A's, B's and full5) are independent: `jobs` J > 1 runs J of them at once as
child processes (`phasejax.train.children`; the command's default is one per GPU or TPU
chip, and 1 on a CPU host), each the same run, bitwise on the CPU, as in one process.

A third model, `OUT/full5`, is the one to give `phasejax predict`: strategy B with the
`full5` label set (NC + the four phases, network 1 over NC / AP / PVP / DP). The paper's
comparison stays 4-class; real archives hold a non-contrast series in every multiphase
study, and a 4-class model can only call it one of the contrast phases.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from phasejax.config import Config, load_config
from phasejax.eval import paper
from phasejax.eval.results import load_results, paired_comparison
from phasejax.eval.stats import jsonable
from phasejax.tables import format_p

CONFIGS = ("debug", "quick", "paper")  # the named configs `reproduce --config` takes
STRATEGIES = {"A": "one_step", "B": "two_step"}
STRATEGY_LABELS = {"A": "A: one-step", "B": "B: two-step"}
PREDICT_MODEL = "full5"  # OUT/<this>: the model for `phasejax predict`


def reproduce_config(name: str, overrides: Sequence[str] = ()) -> Config:
    """The named config `name` (one of CONFIGS) with the overrides applied."""
    if name not in CONFIGS:
        raise ValueError(f"unknown config {name!r}; choose one of {', '.join(CONFIGS)}")
    return load_config(name, list(overrides))


def reproduce(
    out: str | Path,
    *,
    preset: str = "quick",
    data: str | Path | None = None,
    overrides: Sequence[str] = (),
    figures: bool = True,
    members: int = 1,
    jobs: int = 1,
) -> dict[str, Any]:
    """Train A and B, compare them, write OUT/results.json, OUT/report.md and OUT/figures/.

    members: networks per strategy; more than one makes each strategy a seed ensemble
    (module docstring). jobs: trainings at once, each in a child process
    (`phasejax.train.children`; `auto_jobs` is the command's default); 1 trains them one
    after another in this process. Either way each run is the same, bitwise on the CPU."""
    from phasejax.cohort import resolve_cache
    from phasejax.train.children import TrainJob, train_all

    out = Path(out).absolute()
    out.mkdir(parents=True, exist_ok=True)
    cfg = reproduce_config(preset, overrides)
    n = int(members)
    check_layout(out, n)
    t0 = time.perf_counter()
    cache = resolve_cache(cfg, data)
    cohort_s = time.perf_counter() - t0

    run_dirs: dict[str, Path] = {}
    member_dirs: dict[str, list[Path]] = {}
    trainings: list[TrainJob] = []
    for key, strategy in STRATEGIES.items():
        run_dirs[key] = out / f"strategy_{key}"
        run_cfg = cfg.override({"model.strategy": strategy, "data.cache_dir": str(cache)})
        print(f"[reproduce] strategy {key} ({strategy}) -> {run_dirs[key]}", flush=True)
        members_k = _members(run_cfg, run_dirs[key], n)
        member_dirs[key] = [d for _, d in members_k]
        trainings += [TrainJob(c, d, cache) for c, d in members_k]
    predict_dir = out / PREDICT_MODEL
    print(f"[reproduce] two-step over NC + 4 phases (for predict) -> {predict_dir}", flush=True)
    predict_cfg = cfg.override(
        {"model.strategy": "two_step", "data.label_set": "full5", "data.cache_dir": str(cache)}
    )
    trainings.append(TrainJob(predict_cfg, predict_dir, cache))
    train_all(trainings, jobs)
    if n > 1:
        from phasejax.eval.results import ensemble_results, write_results

        for key, dirs in member_dirs.items():
            write_results(run_dirs[key], ensemble_results([load_results(d) for d in dirs]))
    # Grad-CAM explains each strategy's first member.
    saliency_dirs = {key: dirs[0] for key, dirs in member_dirs.items()}

    summary = summarize_reproduction(run_dirs, preset=preset, data=str(cache))
    summary["members"] = n
    summary["predict_model"] = _predict_model_summary(predict_dir)
    summary["timing"] = {"data_s": cohort_s, "total_s": time.perf_counter() - t0, "jobs": jobs}
    summary["step2_own_batch"] = bool(cfg.train.step2_own_batch)
    if figures:
        from phasejax.plotting.figures import draw_all
        from phasejax.saliency import compute_saliency, summarize_saliency

        for key, run_dir in saliency_dirs.items():
            npz = compute_saliency(run_dir, cache, split="test", per_phase=2)
            summary["strategies"][key]["saliency"] = jsonable(summarize_saliency(npz))

        fig_dir = out / "figures"
        paths = draw_all({STRATEGY_LABELS[k]: d for k, d in run_dirs.items()}, fig_dir)
        summary["figures"] = sorted(str(p.relative_to(out)) for p in paths)
    write_reproduction(out, summary)
    return summary


def check_layout(out: str | Path, members: int) -> None:
    """Refuse (ValueError) a member count below 1, or an OUT whose strategy directories hold
    the other layout: a single network's run where `members` > 1 asks for seed<S>/ runs, or
    seed<S>/ runs where 1 asks for a single run. Checked for every strategy before any
    training, so a rerun with another member count cannot mix a single network into an
    ensemble, nor fail on B after A has trained."""
    if members < 1:
        raise ValueError(f"members must be at least 1, got {members}")
    for key in STRATEGIES:
        run_dir = Path(out) / f"strategy_{key}"
        single = (run_dir / "config.json").exists()
        member_dirs = sorted(d.name for d in run_dir.glob("seed*"))
        if members == 1 and member_dirs and not single:
            raise ValueError(
                f"{run_dir} holds a seed ensemble ({', '.join(member_dirs)}); "
                "rerun with its --members or another --out"
            )
        if members > 1 and single:
            raise ValueError(
                f"{run_dir} holds a single network's run; rerun without --members or use "
                "another --out"
            )


def _members(cfg: Config, run_dir: Path, members: int) -> list[tuple[Config, Path]]:
    """One strategy's trainings: run_dir itself (members 1), or one run per seed train.seed,
    +1, ... in run_dir/seed<S> (the layout was checked by `check_layout`)."""
    if members == 1:
        return [(cfg, run_dir)]
    seeds = [cfg.train.seed + i for i in range(members)]
    for s in seeds:
        print(f"[reproduce]   member seed {s} -> {run_dir / f'seed{s}'}", flush=True)
    return [(cfg.override({"train.seed": s}), run_dir / f"seed{s}") for s in seeds]


def summarize_reproduction(
    run_dirs: dict[str, Path], *, preset: str = "", data: str = ""
) -> dict[str, Any]:
    """Every number of the report, from the two runs' results.json files."""
    results = {k: load_results(d) for k, d in run_dirs.items()}
    a, b = results["A"], results["B"]
    comparisons = {}
    for split in ("test", "external"):
        if split in a["splits"] and split in b["splits"]:
            comparisons[split] = paired_comparison(a, b, split)
    strategies = {}
    for key, res in results.items():
        strategies[key] = {
            "strategy": res["strategy"],
            "run_dir": str(run_dirs[key]),
            "train": res.get("train", {}),
            "splits": {split: _split_summary(s["metrics"]) for split, s in res["splits"].items()},
        }
    return jsonable(
        {
            "preset": preset,
            "data": data,
            "classes": a["classes"],
            "label_set": a["label_set"],
            "published": paper.published(),
            "strategies": strategies,
            "comparison": comparisons,
        }
    )


def _predict_model_summary(run_dir: Path) -> dict[str, Any]:
    res = load_results(run_dir)
    return jsonable(
        {
            "run_dir": str(run_dir),
            "label_set": res["label_set"],
            "classes": res["classes"],
            "splits": {split: _split_summary(s["metrics"]) for split, s in res["splits"].items()},
        }
    )


def _split_summary(m: dict[str, Any]) -> dict[str, Any]:
    keep = ("n", "n_patients", "accuracy", "macro_f1", "log_loss", "per_site", "calibration")
    out = {k: m[k] for k in keep if k in m}
    out["per_class"] = {
        c: {k: v for k, v in pc.items() if k in ("sensitivity", "specificity", "ppv", "f1", "auc")}
        for c, pc in m.get("per_class", {}).items()
    }
    out["confusion"] = m.get("confusion", {}).get("counts")
    return out


def write_reproduction(out: Path, summary: dict[str, Any]) -> None:
    (out / "results.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
    (out / "report.md").write_text(render_report(summary))


# --------------------------------------------------------------------------- report


def _pct(d: dict[str, Any] | None, *, ci: bool = True) -> str:
    if not d or d.get("value") is None:
        return "n/a"
    s = f"{100 * d['value']:.1f}%"
    if "k" in d and "n" in d:
        s += f" ({d['k']}/{d['n']})"
    if ci and d.get("ci") and None not in d["ci"]:
        lo, hi = d["ci"]
        s += f" [{100 * lo:.1f}, {100 * hi:.1f}]"
    return s


def render_report(s: dict[str, Any]) -> str:
    pub = s["published"]
    st = s["strategies"]
    lines = [
        f"# phasejax reproduce: Liu et al. 2025, config `{s['preset']}`",
        "",
        f"Data: `{s['data']}`. Label set `{s['label_set']}` ({', '.join(s['classes'])}). "
        "All numbers are per series, with 95% Wilson intervals in brackets; paired tests are "
        "exact McNemar on the same series. Strategy A = one network over all phases; "
        "B = network 1 (AP / PVP / DP) then network 2 (EAP / LAP) on arterial series, "
        "p(EAP) = p1(AP) p2(EAP | AP). Same data, steps and batch size for both."
        + (
            f" Each strategy is a seed ensemble of {s['members']} networks (probabilities "
            "averaged over seeds; Grad-CAM shows the first), the same count for both."
            if s.get("members", 1) > 1
            else ""
        )
        + (
            " Network 2 learns from a batch of its own, as many arterial training series per "
            "step as the shared batch has series (`train.step2_own_batch`; the paper trains it "
            "on arterial images alone), so B preprocesses twice as many series per step."
            if s.get("step2_own_batch")
            else ""
        ),
        "",
        "## The paper's table next to ours",
        "",
        "| | Liu et al. 2025 | phasejax |",
        "|---|---|---|",
    ]

    def acc(key: str, split: str) -> dict | None:
        return st[key]["splits"].get(split, {}).get("accuracy")

    pub_int = pub["internal"]["accuracy"]
    pub_ext = pub["external"]["accuracy"]
    lines += [
        f"| Internal test, one-step (A) | {_pct(pub_int.get('one_step'))} | {_pct(acc('A', 'test'))} |",
        f"| Internal test, two-step (B) | {_pct(pub_int.get('two_step'))} | {_pct(acc('B', 'test'))} |",
    ]
    comp = s["comparison"].get("test")
    if comp:
        d = comp["difference"]
        lines.append(
            f"| B vs A, internal (McNemar) | {pub['internal']['p_value_text']} | "
            f"p {format_p(comp['mcnemar_p'])}; b={comp['b']}, c={comp['c']}; "
            f"difference {100 * d['value']:+.1f} pts [{100 * d['ci'][0]:+.1f}, "
            f"{100 * d['ci'][1]:+.1f}] |"
        )
    if "external" in st["B"]["splits"]:
        lines += [
            f"| External, two-step (B) | {_pct(pub_ext.get('two_step'))} | {_pct(acc('B', 'external'))} |",
            f"| External, one-step (A) | not reported | {_pct(acc('A', 'external'))} |",
        ]
        pub_sens = pub["external"]["sensitivity"].get("two_step", {})
        ext_b = st["B"]["splits"]["external"]["per_class"]
        for c in s["classes"]:
            ours = ext_b.get(c, {}).get("sensitivity")
            lines.append(
                f"| External sensitivity {c}, two-step | {_pct(pub_sens.get(c), ci=False)} | "
                f"{_pct(ours)} |"
            )
    lines += ["", "## Per phase (internal test)", ""]
    lines += ["| phase | sensitivity A | sensitivity B | PPV A | PPV B | AUC A | AUC B |"]
    lines += ["|---|---|---|---|---|---|---|"]
    ta = st["A"]["splits"].get("test", {}).get("per_class", {})
    tb = st["B"]["splits"].get("test", {}).get("per_class", {})
    for c in s["classes"]:
        ra, rb = ta.get(c, {}), tb.get(c, {})
        auc = [r.get("auc", {}) or {} for r in (ra, rb)]
        aucs = [f"{x['value']:.3f}" if x.get("value") is not None else "n/a" for x in auc]
        lines.append(
            f"| {c} | {_pct(ra.get('sensitivity'))} | {_pct(rb.get('sensitivity'))} | "
            f"{_pct(ra.get('ppv'), ci=False)} | {_pct(rb.get('ppv'), ci=False)} | "
            f"{aucs[0]} | {aucs[1]} |"
        )
    sites_a = st["A"]["splits"].get("external", {}).get("per_site", {})
    sites_b = st["B"]["splits"].get("external", {}).get("per_site", {})
    if sites_b:
        lines += [
            "",
            "## External sites",
            "",
            "| site | A: one-step | B: two-step |",
            "|---|---|---|",
        ]
        for site in sorted(sites_b):
            lines.append(f"| {site} | {_pct(sites_a.get(site))} | {_pct(sites_b[site])} |")
    lines += [
        "",
        "## Training",
        "",
        "| strategy | steps | wall time | images/s |",
        "|---|---|---|---|",
    ]
    for key in ("A", "B"):
        t = st[key]["train"]
        lines.append(
            f"| {key} ({st[key]['strategy']}) | {t.get('steps', 'n/a')} | "
            f"{t.get('wall_time_s', float('nan')):.0f} s | {t.get('images_per_s', float('nan')):.1f} |"
        )
    saliency = {k: st[k].get("saliency") for k in ("A", "B") if st[k].get("saliency")}
    if saliency:
        from phasejax.saliency import markdown_table

        lines += [
            "",
            "## Where the networks look (Grad-CAM)",
            "",
            "Share of the Grad-CAM mass of correctly classified internal test series inside "
            "each structure group, with the group's share of the image area in brackets: a "
            "share well above the area means the network attends to that structure. On the "
            "synthetic cohort the organ masks are exact.",
        ]
        for k, sal in saliency.items():
            lines += ["", f"### Strategy {k}", "", markdown_table(sal)]
    pm = s.get("predict_model")
    if pm:
        sp = pm["splits"]
        lines += [
            "",
            "## The model for `phasejax predict`",
            "",
            f"`{pm['run_dir']}`: two-step over {', '.join(pm['classes'])} (NC included, so a "
            "non-contrast series is not forced into a contrast phase). Accuracy: internal test "
            f"{_pct(sp.get('test', {}).get('accuracy'))}, external "
            f"{_pct(sp.get('external', {}).get('accuracy'))}.",
        ]
    figs = s.get("figures", [])
    if figs:
        lines += ["", "## Figures", ""]
        for f in figs:
            if f.endswith(".png"):
                lines.append(f"![{Path(f).stem}]({f})")
    lines.append("")
    return "\n".join(lines)
