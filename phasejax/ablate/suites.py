"""Ablation suites declared as data (`phasejax/ablations/*.toml`) and their expansion into runs.

The suites and presets that come with phasejax are package data (found with
importlib.resources, so a wheel install has them); `--suites-dir DIR` reads a folder of your
own instead.

A suite varies ONE axis of the config away from a shared baseline; see ablations/README.md for
the file format. Expansion turns suites x seeds into runs with stable ids, relative to the
output directory:

    _baseline/seed<k>            the shared baseline (trained once, used by every suite)
    <suite>/<value>/seed<k>      one variant of one suite

The shared baseline config is the preset's base config plus the baseline value of EVERY suite
in the suite directory (not only the selected ones), so it is the same model whichever suites
a command names, and a later `--suite other` reuses it. A suite's baseline cell points at the
shared run when its resolved config equals the shared baseline; a suite whose `fixed` overrides
change the config gets a baseline run of its own under its directory instead.

Seeds: seed k sets `train.seed = k` and nothing else, so all runs of a seed see the same cohort
and the same test series; the paired tests in phasejax.ablate.summarize rely on that.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from phasejax.cohort.kinetics import KVP_RANGE
from phasejax.config import Config, config_differences, flatten, load_config

# The suites shipped with phasejax. A Traversable, not a Path: package data need not be
# plain files (zip imports); a user's --suites-dir is a Path, which is a Traversable too.
ABLATIONS_DIR: Traversable = resources.files("phasejax") / "ablations"
PRESETS_FILE = "presets.toml"
BASELINE_DIR = "_baseline"
KINDS = ("train", "evaluate")
# Perturbations an evaluate-kind suite may put on its axis (see phasejax.ablate.runner).
# noise_hu: Gaussian noise SD (HU); kvp: the series re-read at that tube voltage (0 = as
# acquired). 0 leaves the input untouched for both.
PERTURBATIONS = ("noise_hu", "kvp")
_LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_SUITE_KEYS = {
    "name",
    "question",
    "kind",
    "axis",
    "axis_label",
    "values",
    "baseline",
    "fixed",
    "group_by",
    "notes",
    "presets",
}
_VALUE_KEYS = {"label", "set", "x", "group"}


class SuiteError(ValueError):
    """A suite or preset file that cannot be used; the message names the file and the reason."""


@dataclass(frozen=True, kw_only=True)
class Variant:
    """One value on a suite's axis."""

    label: str  # the <value> path component of its run ids
    overrides: tuple[tuple[str, str], ...]  # (dotted config key, value as text), sorted
    x: float | None = None  # numeric position on the plot axis; None = categorical
    group: str = ""  # one line per group in the suite's figure (e.g. slice mode)

    def as_dict(self) -> dict[str, str]:
        return dict(self.overrides)


@dataclass(frozen=True, kw_only=True)
class Suite:
    name: str
    question: str
    kind: str  # train | evaluate
    axis: str
    axis_label: str
    variants: tuple[Variant, ...]
    baseline: str  # label of the baseline variant
    fixed: tuple[tuple[str, str], ...] = ()
    group_by: tuple[str, ...] = ()
    notes: str = ""
    source: str = ""
    # Raw per-preset sections ({"smoke": {"values": [...], "baseline": ...}}), applied by
    # `for_preset`; kept raw so that one file can name several presets.
    presets: dict[str, dict[str, Any]] = field(default_factory=dict, compare=False)

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(v.label for v in self.variants)

    def variant(self, label: str) -> Variant:
        for v in self.variants:
            if v.label == label:
                return v
        raise SuiteError(f"suite {self.name!r} has no value {label!r}; values: {self.labels}")

    @property
    def baseline_variant(self) -> Variant:
        return self.variant(self.baseline)

    def for_preset(self, preset: str, *, fallback: str = "") -> Suite:
        """This suite with its `[presets.<preset>]` section (values, baseline) applied.

        Without such a section, the `[presets.<fallback>]` one: a budget passes the name of
        its base config, so that budget `full` (config quick at its own steps) runs a suite's
        quick values and shares their baseline, without a copy of the section per budget.
        """
        name = preset if preset in self.presets else fallback
        section = self.presets.get(name)
        if not section:
            return self
        where = f"{self.source} [presets.{name}]"
        unknown = set(section) - {"values", "baseline"}
        if unknown:
            raise SuiteError(f"{where}: unknown keys {sorted(unknown)}; allowed: values, baseline")
        variants = self.variants
        if "values" in section:
            # A string naming an existing value selects it (so a preset can pick a subset of
            # table values by label); anything else is a new value, parsed as at top level.
            raw = section["values"]
            if not isinstance(raw, list) or not raw:
                raise SuiteError(f"{where}: 'values' must be a non-empty list")
            known = {v.label: v for v in self.variants}
            picked = [known.get(item) if isinstance(item, str) else None for item in raw]
            fresh = [item for item, v in zip(raw, picked) if v is None]
            parsed = iter(_parse_values(fresh, self.axis, self.kind, where) if fresh else ())
            variants = tuple(v if v is not None else next(parsed) for v in picked)
            labels = [v.label for v in variants]
            if len(set(labels)) != len(labels):
                raise SuiteError(f"{where}: duplicate values {labels}")
        baseline = _label_of(section.get("baseline", self.baseline))
        suite = Suite(
            name=self.name,
            question=self.question,
            kind=self.kind,
            axis=self.axis,
            axis_label=self.axis_label,
            variants=variants,
            baseline=baseline,
            fixed=self.fixed,
            group_by=self.group_by,
            notes=self.notes,
            source=self.source,
            presets={},
        )
        _check_baseline(suite, where)
        return suite


@dataclass(frozen=True, kw_only=True)
class Preset:
    """A base config (a named config, phasejax/configs/<config>.py, or a .py path) plus the
    budget all its runs share."""

    name: str
    config: str
    seeds: int
    overrides: tuple[tuple[str, str], ...] = ()
    description: str = ""

    def base_config(self) -> Config:
        return load_config(self.config).override(dict(self.overrides))


def for_budget(suites: Mapping[str, Suite], budget: Preset) -> dict[str, Suite]:
    """Each suite with the `[presets.*]` section of `budget` applied, or else the section
    named after the budget's base config (see `Suite.for_preset`)."""
    return {k: s.for_preset(budget.name, fallback=budget.config) for k, s in suites.items()}


# --------------------------------------------------------------------------- loading


def _text(value: Any) -> str:
    """Override values as text, parsed by Config.override against the field's type.

    Going through text makes a TOML integer 18 land as the string "18" in the str field
    model.depth and as 18 in an int field, so equal settings give equal configs.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return str(value)
    raise TypeError(f"{value!r} is not a scalar setting")


def _label_of(value: Any) -> str:
    return value if isinstance(value, str) else _text(value)


def _as_overrides(table: dict[str, Any], where: str) -> tuple[tuple[str, str], ...]:
    try:
        flat = {k: _text(v) for k, v in flatten(table).items()}
    except TypeError as e:
        raise SuiteError(f"{where}: {e}") from None
    return tuple(sorted(flat.items()))


def number_or_none(value: Any) -> float | None:
    """float(value), or None for anything that is not a number (text, empty, None, bools)."""
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _parse_values(raw: Any, axis: str, kind: str, where: str) -> tuple[Variant, ...]:
    if not isinstance(raw, list) or not raw:
        raise SuiteError(f"{where}: 'values' must be a non-empty list")
    variants = []
    for item in raw:
        if isinstance(item, dict):
            unknown = set(item) - _VALUE_KEYS
            if unknown or "label" not in item or "set" not in item:
                raise SuiteError(
                    f"{where}: a value table needs 'label' and 'set' (optional 'x', 'group'), "
                    f"got keys {sorted(item)}"
                )
            label = _label_of(item["label"])
            if not isinstance(item["set"], dict) or not item["set"]:
                raise SuiteError(f"{where}: value {label!r}: 'set' must be a non-empty table")
            overrides = _as_overrides(item["set"], f"{where} value {label!r}")
            x = number_or_none(item["x"]) if "x" in item else None
            if "x" in item and x is None:
                raise SuiteError(f"{where}: value {label!r}: x = {item['x']!r} is not a number")
            variants.append(
                Variant(label=label, overrides=overrides, x=x, group=str(item.get("group", "")))
            )
        else:
            if "." not in axis and kind == "train":
                raise SuiteError(
                    f"{where}: scalar values need a dotted config path as axis, got {axis!r}"
                )
            try:
                text = _text(item)
            except TypeError:
                raise SuiteError(f"{where}: value {item!r} is not a scalar") from None
            variants.append(Variant(label=text, overrides=((axis, text),), x=number_or_none(item)))
    labels = [v.label for v in variants]
    for label in labels:
        if not _LABEL_RE.match(label):
            raise SuiteError(
                f"{where}: value label {label!r} is not usable as a directory name "
                "(letters, digits, . _ + - only)"
            )
    dupes = sorted({lb for lb in labels if labels.count(lb) > 1})
    if dupes:
        raise SuiteError(f"{where}: duplicate values {dupes}")
    if any(v.x is not None for v in variants) and any(v.x is None for v in variants):
        # Mixed numeric/categorical positions cannot share one axis of a figure.
        for v in variants:
            if v.x is None:
                raise SuiteError(f"{where}: value {v.label!r} needs an x like the others")
    return tuple(variants)


def _check_baseline(suite: Suite, where: str) -> None:
    if suite.baseline not in suite.labels:
        raise SuiteError(
            f"{where}: baseline {suite.baseline!r} is not one of the values {suite.labels}"
        )


def _check_applies(suite: Suite, where: str) -> None:
    """Every override must name a real config field with a parseable value."""
    if suite.kind == "evaluate":
        for v in suite.variants:
            for key, value in v.overrides:
                if key not in PERTURBATIONS:
                    raise SuiteError(
                        f"{where}: value {v.label!r}: {key!r} is not a known perturbation "
                        f"{PERTURBATIONS}"
                    )
                if number_or_none(value) is None or float(value) < 0:
                    raise SuiteError(f"{where}: value {v.label!r}: {key} must be a number >= 0")
                if key == "kvp" and float(value) > 0:
                    lo, hi = KVP_RANGE
                    if not lo <= float(value) <= hi:
                        raise SuiteError(
                            f"{where}: value {v.label!r}: kvp {value} is outside {lo:g}-{hi:g} "
                            "(0 = as acquired)"
                        )
        return
    base = Config()
    for what, overrides in [("fixed", suite.fixed)] + [
        (f"value {v.label!r}", v.overrides) for v in suite.variants
    ]:
        try:
            base.override(dict(overrides))
        except ValueError as e:
            raise SuiteError(f"{where}: {what}: {e}") from None
        if any(k == "train.seed" for k, _ in overrides):
            raise SuiteError(f"{where}: {what}: train.seed is set by --seeds, not by a suite")


def parse_suite(data: dict[str, Any], source: str = "<suite>") -> Suite:
    """Validate one suite table (as read from TOML) and build a Suite."""
    where = source
    unknown = set(data) - _SUITE_KEYS
    if unknown:
        raise SuiteError(f"{where}: unknown keys {sorted(unknown)}; allowed: {sorted(_SUITE_KEYS)}")
    for key in ("name", "question", "axis", "values", "baseline"):
        if key not in data:
            raise SuiteError(f"{where}: missing required key {key!r}")
    name = str(data["name"])
    if not _LABEL_RE.match(name) or name.startswith("_"):
        raise SuiteError(f"{where}: suite name {name!r} must be a plain directory name")
    kind = str(data.get("kind", "train"))
    if kind not in KINDS:
        raise SuiteError(f"{where}: kind {kind!r} is not one of {KINDS}")
    axis = str(data["axis"])
    fixed = _as_overrides(data.get("fixed", {}), f"{where} fixed")
    if kind == "evaluate" and fixed:
        raise SuiteError(f"{where}: an evaluate suite re-uses the baseline models: no 'fixed'")
    group_by = data.get("group_by", [])
    if not isinstance(group_by, list) or not all(isinstance(g, str) for g in group_by):
        raise SuiteError(f"{where}: group_by must be a list of manifest column names")
    presets = data.get("presets", {})
    if not isinstance(presets, dict) or not all(isinstance(s, dict) for s in presets.values()):
        raise SuiteError(f"{where}: 'presets' must hold one table per preset name")
    suite = Suite(
        name=name,
        question=" ".join(str(data["question"]).split()),
        kind=kind,
        axis=axis,
        axis_label=str(data.get("axis_label", axis)),
        variants=_parse_values(data["values"], axis, kind, where),
        baseline=_label_of(data["baseline"]),
        fixed=fixed,
        group_by=tuple(group_by),
        notes=str(data.get("notes", "")),
        source=source,
        presets=presets,
    )
    _check_baseline(suite, where)
    _check_applies(suite, where)
    for preset in presets:
        _check_applies(suite.for_preset(preset), f"{where} [presets.{preset}]")
    return suite


def _as_dir(directory: str | Path | Traversable | None) -> Traversable:
    if directory is None:
        return ABLATIONS_DIR
    return Path(directory) if isinstance(directory, str) else directory


def load_suite(path: str | Path | Traversable) -> Suite:
    path = Path(path) if isinstance(path, str) else path
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise SuiteError(f"{path}: not valid TOML: {e}") from None
    suite = parse_suite(data, str(path))
    if suite.name != path.name.removesuffix(".toml"):
        raise SuiteError(f"{path}: suite name {suite.name!r} must match the file name")
    return suite


def load_suites(directory: str | Path | Traversable | None = None) -> dict[str, Suite]:
    """Every suite file (*.toml except presets.toml) of a directory (default: the suites
    shipped with phasejax), by name, in name order."""
    directory = _as_dir(directory)
    if not directory.is_dir():
        raise SuiteError(f"{directory}: suites directory not found")
    files = sorted(
        (p for p in directory.iterdir() if p.name.endswith(".toml") and p.name != PRESETS_FILE),
        key=lambda p: p.name,
    )
    if not files:
        raise SuiteError(f"{directory}: no suite files (*.toml)")
    return {s.name: s for s in map(load_suite, files)}


def load_presets(directory: str | Path | Traversable | None = None) -> dict[str, Preset]:
    directory = _as_dir(directory)
    path = directory / PRESETS_FILE
    if not path.is_file():
        raise SuiteError(f"{path}: presets file not found")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise SuiteError(f"{path}: not valid TOML: {e}") from None
    presets = {}
    for name, section in data.items():
        where = f"{path} [{name}]"
        if not isinstance(section, dict) or "config" not in section:
            raise SuiteError(f"{where}: a preset needs at least 'config'")
        unknown = set(section) - {"config", "seeds", "set", "description"}
        if unknown:
            raise SuiteError(f"{where}: unknown keys {sorted(unknown)}")
        seeds = section.get("seeds", 3)
        if not isinstance(seeds, int) or seeds < 1:
            raise SuiteError(f"{where}: seeds must be a positive integer")
        overrides = _as_overrides(section.get("set", {}), where)
        try:
            Config().override(dict(overrides))
        except ValueError as e:
            raise SuiteError(f"{where}: {e}") from None
        config = str(section["config"])
        if config.endswith(".py") and isinstance(directory, Path):
            # A config file of a user's suites folder, named relative to that folder.
            config = str(directory / config)
        presets[name] = Preset(
            name=name,
            config=config,
            seeds=seeds,
            overrides=overrides,
            description=" ".join(str(section.get("description", "")).split()),
        )
    return presets


def select_suites(suites: dict[str, Suite], names: Iterable[str]) -> list[Suite]:
    """Resolve --suite names ('all' = every suite, in name order)."""
    names = list(names)
    if not names or "all" in names:
        return list(suites.values())
    unknown = [n for n in names if n not in suites]
    if unknown:
        raise SuiteError(f"unknown suite(s) {unknown}; known: {sorted(suites)} or 'all'")
    return [suites[n] for n in dict.fromkeys(names)]


# --------------------------------------------------------------------------- expansion


def shared_baseline_overrides(suites: Iterable[Suite]) -> dict[str, str]:
    """The union of every train suite's baseline value; two suites disagreeing is an error."""
    merged: dict[str, str] = {}
    owner: dict[str, str] = {}
    for suite in suites:
        if suite.kind != "train":
            continue
        for key, value in suite.baseline_variant.overrides:
            if key in merged and merged[key] != value:
                raise SuiteError(
                    f"baselines disagree on {key}: suite {owner[key]!r} says {merged[key]!r}, "
                    f"suite {suite.name!r} ({suite.source}) says {value!r}"
                )
            merged[key] = value
            owner[key] = suite.name
    return merged


def seed_config(cfg: Config, seed: int) -> Config:
    return cfg.override({"train.seed": seed})


@dataclass(frozen=True, kw_only=True)
class Run:
    """One unit of work: train a config, or evaluate a trained run under a perturbation."""

    run_id: str  # relative path under the output directory
    kind: str  # train | evaluate
    seed: int
    config: Config  # evaluate runs: the config of the model they evaluate
    source: str = ""  # evaluate runs: run_id of the trained model
    perturbation: tuple[tuple[str, str], ...] = ()
    cells: tuple[tuple[str, str], ...] = ()  # (suite, value) cells this run fills

    @property
    def is_baseline(self) -> bool:
        return self.run_id.startswith(BASELINE_DIR + "/")


@dataclass(frozen=True, kw_only=True)
class Plan:
    preset: str
    seeds: tuple[int, ...]
    suites: tuple[Suite, ...]
    baseline: Config  # shared baseline, seed not applied
    runs: tuple[Run, ...]  # unique, in execution order
    # suite -> value -> seed -> run_id (every cell of the selected suites, --only ignored)
    cells: dict[str, dict[str, dict[int, str]]]

    def run(self, run_id: str) -> Run:
        for r in self.runs:
            if r.run_id == run_id:
                return r
        raise KeyError(run_id)


def baseline_run_id(seed: int) -> str:
    return f"{BASELINE_DIR}/seed{seed}"


def variant_run_id(suite: str, label: str, seed: int) -> str:
    return f"{suite}/{label}/seed{seed}"


def expand(
    suites: Sequence[Suite],
    base: Config,
    seeds: Sequence[int],
    *,
    preset: str = "",
    all_suites: Sequence[Suite] | None = None,
    only: Sequence[str] = (),
) -> Plan:
    """Expand suites x seeds into unique runs with stable ids.

    `suites` are the selected suites (already `for_preset`); `all_suites` (default: the
    selected ones) define the shared baseline. `only` keeps the runs of those value labels
    (plus the baseline runs that evaluate runs need); the plan's cells always cover every
    value, so a summary sees the whole suite.
    """
    baseline = base.override(shared_baseline_overrides(all_suites or suites))
    baseline = baseline.replace(name=f"ablate-{preset or 'custom'}/{BASELINE_DIR}")
    only = [str(o) for o in only]
    if only:
        known = {v.label for s in suites for v in s.variants}
        missing = [o for o in only if o not in known]
        if missing:
            raise SuiteError(
                f"--only {missing}: no such value in the selected suites; values: "
                + "; ".join(f"{s.name}: {', '.join(s.labels)}" for s in suites)
            )
    runs: dict[str, Run] = {}
    wanted: set[str] = set()
    cells: dict[str, dict[str, dict[int, str]]] = {}

    def add(run: Run, cell: tuple[str, str], keep: bool) -> None:
        old = runs.get(run.run_id)
        runs[run.run_id] = dataclasses.replace(
            old or run, cells=(*(old.cells if old else ()), cell)
        )
        if keep:
            wanted.add(run.run_id)
        cells.setdefault(cell[0], {}).setdefault(cell[1], {})[run.config.train.seed] = run.run_id

    for seed in seeds:
        shared = seed_config(baseline, seed)
        for suite in suites:
            for v in suite.variants:
                keep = not only or v.label in only
                cell = (suite.name, v.label)
                if suite.kind == "evaluate":
                    if v.label == suite.baseline:
                        add(_baseline_run(shared, seed), cell, keep)
                        continue
                    rid = variant_run_id(suite.name, v.label, seed)
                    run = Run(
                        run_id=rid,
                        kind="evaluate",
                        seed=seed,
                        config=shared,
                        source=baseline_run_id(seed),
                        perturbation=v.overrides,
                    )
                    add(run, cell, keep)
                    if keep:
                        wanted.add(baseline_run_id(seed))
                    continue
                cfg = shared.override(dict(suite.fixed)).override(v.as_dict())
                if cfg == shared:
                    add(_baseline_run(shared, seed), cell, keep)
                    continue
                cfg = cfg.replace(name=f"ablate-{preset or 'custom'}/{suite.name}/{v.label}")
                rid = variant_run_id(suite.name, v.label, seed)
                add(Run(run_id=rid, kind="train", seed=seed, config=cfg), cell, keep)
    # Baseline first within a seed so that paired tests are available early; seed-major so a
    # first full picture (one seed of everything) arrives before the repeats.
    order = {s.name: i for i, s in enumerate(suites)}

    def rank(r: Run) -> tuple:
        suite, label = r.cells[0]
        s = next(x for x in suites if x.name == suite)
        return (r.seed, not r.is_baseline, r.kind != "train", order[suite], s.labels.index(label))

    selected = sorted((runs[rid] for rid in wanted), key=rank)
    return Plan(
        preset=preset,
        seeds=tuple(seeds),
        suites=tuple(suites),
        baseline=baseline,
        runs=tuple(selected),
        cells=cells,
    )


def _baseline_run(shared: Config, seed: int) -> Run:
    return Run(run_id=baseline_run_id(seed), kind="train", seed=seed, config=shared)


def config_diff(cfg: Config, ref: Config) -> dict[str, Any]:
    """Dotted keys where cfg differs from ref (name and train.seed ignored)."""
    diff = config_differences(ref.to_dict(), cfg.to_dict())
    return {k: new for k, (_, new) in diff.items() if k not in ("name", "train.seed")}
