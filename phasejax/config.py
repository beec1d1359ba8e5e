"""The one config system: frozen keyword-only dataclasses with dotted overrides.

Every run writes its resolved Config to config.json; `Config.from_dict` reads it
back, so a run directory is enough to rebuild the model and its preprocessing.
Named configs are the modules `phasejax/configs/NAME.py`, each with `get_config() -> Config`;
they are package data, found with importlib.resources so that a wheel install sees them too.

Settings that take one of a fixed set of names (data.window, model.depth, train.optimizer,
...) are typed `Literal[...]`: the Literal is the one place their allowed values are
written down. Every section checks them when it is built (`__post_init__`), so a Config
with a bad name cannot exist: not from a named config, a config.json, `Config.override`
nor `--set`. The modules that interpret a setting read its values from the Literal
(`typing.get_args`); `choices()` lists them all by dotted key.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar, Literal

REPO_ROOT = Path(__file__).resolve().parents[1]  # the checkout (meaningless in a wheel install)
CONFIG_PACKAGE = "phasejax.configs"

# The enumerated settings. Their order is the order error messages list them in.
# Synthetic cohort sizes (phasejax.cohort.generate.PRESETS has one entry per name).
CohortSize = Literal["tiny", "quick", "medium", "paper"]
# Label sets (phasejax.phases.LABEL_SETS has one entry per name).
LabelSetName = Literal["paper4", "full5"]
# HU windows of the input channels (phasejax.data.windowing): one window per channel, or
# "multi" = abdomen + liver + wide as three channels.
Window = Literal["raw", "abdomen", "liver", "wide", "multi"]
SliceMode = Literal["channels", "per_slice"]
SliceSelection = Literal["central", "even"]
SlabSource = Literal["manifest", "image"]
FieldOfView = Literal["scan", "body"]
# ResNet depths (phasejax.models.resnet.STAGES has one entry per name).
Depth = Literal["tiny", "tiny-bottleneck", "10", "18", "34", "50", "101", "152"]
Strategy = Literal["one_step", "two_step"]
# ResNet stems (phasejax.models.resnet.STEMS).
Stem = Literal["standard", "stride4", "conv3"]
Aggregation = Literal["mean_logprob", "majority"]
HuHead = Literal["none", "auxiliary", "bottleneck", "roi"]
Dtype = Literal["float32", "bfloat16"]
Optimizer = Literal["adamw", "sgd"]
Schedule = Literal["cosine", "constant"]
# What makes a synthetic series delayed (phasejax.cohort.kinetics.phase_from_hu).
DelayedRule = Literal["excretion", "excretion_or_equilibrium"]


class ConfigError(ValueError):
    """Settings a Config cannot take; `problems` holds one message per setting."""

    def __init__(self, problems: Iterable[str] | str):
        # A str is one message (also how a pickled ConfigError is rebuilt from its args).
        self.problems = (problems,) if isinstance(problems, str) else tuple(dict.fromkeys(problems))
        super().__init__("; ".join(self.problems))


@functools.cache
def _literal_fields(cls: type) -> dict[str, tuple[Any, ...]]:
    """{field name: allowed values} of the Literal-typed fields of a dataclass."""
    hints = typing.get_type_hints(cls)
    return {
        f.name: typing.get_args(hints[f.name])
        for f in dataclasses.fields(cls)
        if typing.get_origin(hints[f.name]) is Literal
    }


class _Section:
    """Base of the config sections: checks every Literal-typed field when one is built."""

    SECTION: ClassVar[str]  # the section's key in Config ("data", "model", ...)

    def __post_init__(self) -> None:
        problems = []
        for name, allowed in _literal_fields(type(self)).items():
            value = getattr(self, name)
            if value not in allowed:
                problems.append(
                    f"{self.SECTION}.{name}={value!r} is not one of " + ", ".join(map(str, allowed))
                )
        if problems:
            raise ConfigError(problems)


@dataclass(frozen=True, kw_only=True)
class CohortConfig(_Section):
    """The built-in synthetic cohort used when `data.cache_dir` is empty."""

    SECTION: ClassVar[str] = "cohort"
    preset: CohortSize = "tiny"  # the cohort's size (`phasejax cohort generate --size`)
    seed: int = 0
    # Reader-disagreement label noise: share of series whose label is replaced by a
    # neighbouring phase (EAP<->LAP, PVP<->DP), as two readers would disagree.
    label_noise: float = 0.0
    # What a reader needs to call a series delayed (DP): iodine in the renal collecting
    # system (the default since session 20), or that or the equilibrium image (vessels and
    # liver converged, medulla above cortex; the default of cohorts v6-v8). DESIGN.md's DP row
    # names both. Excretion alone is what the image decides: the ideal observer reads those
    # labels at 99.3% against 98.1% (experiments/cohort_ceiling.py, medium v8), since the
    # equilibrium thresholds leave more series near a boundary; on real scans it cost nothing
    # with label smoothing (sim2real suite, 6 seeds: predict's call 67 against 66 of 72).
    delayed_rule: DelayedRule = "excretion"
    # Arterial series added to each training exam, scanned when the portal vein lies within
    # 30 HU of the EAP/LAP threshold (phasejax.cohort.exam.EXTRA_ARTERIAL_PORTAL_HU), so that
    # the training data pin that boundary; the other splits are the same whatever its value.
    extra_arterial: int = 0
    # Internal training exams added to the preset's (patients of their own, all in the
    # training split): more training data while the test, validation and external series stay
    # the same, so runs with and without them are scored on the same series.
    extra_train_exams: int = 0


@dataclass(frozen=True, kw_only=True)
class DataConfig(_Section):
    SECTION: ClassVar[str] = "data"
    cache_dir: str = ""  # prepared cache (phasejax prepare / cohort generate); "" = built-in cohort
    label_set: LabelSetName = "paper4"
    image_size: int = 128  # model input, pixels per side
    num_slices: int = 3
    # channels (2.5D) | per_slice (classify each slice, aggregate per series)
    slice_mode: SliceMode = "channels"
    # central | even (evenly spaced over the liver-to-kidney range)
    slice_selection: SliceSelection = "even"
    slice_jitter: int = 1  # training only: +/- slices of random shift per selected slice
    window: Window = "abdomen"
    augment: bool = True
    rotation_deg: float = 7.0
    scale: float = 0.08
    translate: float = 0.06  # fraction of the image side
    intensity_jitter_hu: float = 15.0
    noise_hu: float = 10.0
    flip_lr: bool = False  # off: abdominal anatomy is lateralised (liver right, spleen left)
    # Elastic deformation (training only): SD of a smooth random in-plane displacement, as a
    # fraction of the image side (phasejax.data.augment.elastic_field). 0 = off.
    elastic: float = 0.0
    # Sim-to-real domain randomisation (training only; phasejax.data.augment): per-series HU
    # offsets of every structure that does not define the phase, scaled by this strength
    # (0 = off; needs the cohort's organ masks), and a random in-plane blur up to this sigma
    # in input pixels.
    tissue_randomization: float = 0.0
    blur_max_px: float = 0.0
    # Random erasing (training only): boxes per selected slice, each hiding up to a third of
    # the image side behind soft tissue, so that no single structure decides the phase.
    erase_boxes: int = 0
    # Kidney parenchyma scrambling (training only, needs the cohort's organ masks): the share
    # of series whose renal cortex and medulla get random HU (30-260, each its own), so that
    # the network cannot decide the phase from the kidneys alone. The collecting system keeps
    # its excretion. Occlusion of real series showed the decision resting on one kidney.
    kidney_scramble: float = 0.0
    # With kidney_scramble: the collecting system (and ureters) too, from urine to dense
    # excretion, so that nothing in the kidneys tells the phase in the scrambled series.
    kidney_scramble_collecting: bool = False
    # Counterfactual structure HU (training only, with model.hu_head): the share of series
    # whose phase-defining structures (HU_STRUCTURES) each get an independent random HU; the
    # HU targets follow and the phase label is dropped, so the HU head must read each
    # structure's own pixels instead of inferring its HU from the phase.
    hu_scramble: float = 0.0
    # Enhancement jitter (training only, needs the cohort's organ masks): each phase-defining
    # structure's enhancement above ~40 HU scaled by its own factor exp(N(0, this)) per series
    # (phasejax.data.augment.jitter_structures); the label is kept. 0 = off.
    structure_jitter: float = 0.0
    # Arterial enhancement jitter (training only, needs the cohort's organ masks): in series
    # labelled EAP or LAP, every structure of augment.ARTERIAL_JITTER (aorta, arteries, heart,
    # liver, spleen, pancreas, renal cortex and medulla) gets its own enhancement factor
    # exp(N(0, this)); the portal vein, which alone decides EAP vs LAP, and the veins that
    # drain into it or gate the arterial phase are left as they are. 0 = off.
    arterial_jitter: float = 0.0
    # Field of view (phasejax.data.crop): 0 = the whole reconstruction; > 0 = a square of this
    # side in mm centred crop_anterior_mm in front of the spine's centre (near the aorta),
    # found from the image in training, evaluation and predict alike.
    crop_mm: float = 0.0
    crop_anterior_mm: float = 40.0
    # "scan": the reconstruction's field of view as stored (or the crop_mm square); "body":
    # the square around the body's outline on the series' evaluation slices, so that the
    # patient fills the input whatever the field of view and the patient's size
    # (phasejax.data.crop.find_body_crop).
    field_of_view: FieldOfView = "scan"
    # Where a series' liver-to-kidney slab comes from: "manifest" = the cache's z_lo / z_hi
    # (the built-in cohort: its organ masks, liver dome to the kidneys' lower poles; a
    # prepared cache: the image-based finder); "image" = phasejax.data.prepare.find_slab on
    # the cached volume, the rule `predict` applies to real scans, so that training on the
    # cohort sees the slab as real inputs get it (it lands within one slice of the masks'
    # slab in 75-85% of cohort series).
    slab: SlabSource = "manifest"
    train_fraction: float = 1.0  # learning-curve ablation: share of training patients kept
    worker_count: int = 0  # Grain worker processes (0 = in-process)
    cache_spacing_z: float = 5.0  # mm between cached slices
    cache_size: int = 256  # cached in-plane matrix (the full reconstruction FOV)


@dataclass(frozen=True, kw_only=True)
class ModelConfig(_Section):
    SECTION: ClassVar[str] = "model"
    depth: Depth = "18"
    width: int = 64  # channels of the first stage (64 = standard ResNet)
    # "standard": 7x7/2 conv + 3x3/2 max pool (torchvision); "stride4": one 7x7 conv of
    # stride 4; "conv3": a 3x3/2 conv + the max pool. The same first-stage grid for a quarter
    # (9/49) of the stem's FLOPs (phasejax.models.resnet); both lost accuracy at the quick
    # config's budget (quick_defaults m_stem4 / m_stem3, ablations/README.md).
    stem: Stem = "standard"
    strategy: Strategy = "two_step"  # one_step (strategy A) | two_step (strategy B)
    aggregation: Aggregation = "mean_logprob"  # how per_slice mode combines its slices
    dtype: Dtype = "float32"  # compute dtype (params and BatchNorm stay float32)
    # Structure-HU head (phasejax.models.classifiers): each network also regresses the mean
    # HU of the phase-defining structures (aorta, portal vein, kidneys, ...) of its input,
    # learned from the cohort's organ masks. "auxiliary": an extra loss on the shared
    # features; "bottleneck": the phase is classified from those HU estimates only; "roi":
    # each network segments those structures and the phase is classified from the HU
    # measured inside its segmentation (window "multi" or "wide").
    hu_head: HuHead = "none"
    hu_loss_weight: float = 1.0
    # Two-step only (one-step ignores it): network 2 (EAP vs LAP) sees the central step2_zoom
    # fraction of the input's side, enlarged to the full input (classifiers.zoom_centre).
    # 1 = the same input as network 1, as in the paper. Early and late arterial differ in
    # the portal vein's enhancement (80 HU, DESIGN.md 2), a vessel of a few input pixels.
    # 0.6 at the quick config's budget tied with 1 (suite quick_defaults, m_zoom06, 3 seeds:
    # 96.2 / 95.1% against 95.4 / 95.4%; ablations/README.md), so the configs keep 1.
    step2_zoom: float = 1.0


@dataclass(frozen=True, kw_only=True)
class TrainConfig(_Section):
    SECTION: ClassVar[str] = "train"
    seed: int = 0
    batch_size: int = 32  # global batch (series per step), split over all devices
    steps: int = 1000
    optimizer: Optimizer = "adamw"
    learning_rate: float = 1e-3
    warmup_steps: int = 50
    schedule: Schedule = "cosine"
    weight_decay: float = 1e-4
    momentum: float = 0.9
    grad_clip: float = 0.0  # global-norm clip; 0 = off
    eval_every: int = 200
    checkpoint_every: int = 200
    log_every: int = 10
    eval_batch_size: int = 64
    tensorboard: bool = False
    # Weight each head's cross-entropy by the inverse frequency of its classes among the
    # training series (per head: step 1 over AP / PVP / DP (+ NC), step 2 over EAP / LAP),
    # so that a rare phase (EAP is half as frequent as LAP) counts as much as a common one.
    class_balance: bool = False
    # Label smoothing (Szegedy et al. 2016, "Rethinking the Inception architecture"): each
    # head's target puts 1 - e on the label and e spread evenly over the head's classes, so
    # training cannot drive a wrong phase's probability to 0 (Mueller et al. 2019: better
    # calibrated networks). On real scans the phantom-trained networks give the right phase
    # of some series < 0.01, which no anatomy reading in predict's call can overrule. 0 = off
    # here; the named configs (quick and those built on it) use 0.1.
    label_smoothing: float = 0.0
    # Two-step only (one-step ignores it, as reproduce trains A from B's config): network 2
    # (EAP vs LAP) gets a batch of its own, batch_size arterial training series per step in
    # an order of their own, instead of the arterial rows of the shared batch (about a third
    # of it; the rest costs network 2 a forward and backward pass and counts only in its
    # BatchNorm statistics). The paper trains network 2 on arterial images alone; this does
    # so at the same network FLOPs, with ~2.9x the arterial series per step, for twice the
    # preprocessing. At the quick config's budget it ties (EAP/LAP 94.8 / 89.2% internal /
    # external against 93.0 / 91.4%, 3 seeds; quick_defaults m_step2_own, session 24), so
    # it is off in every named config.
    step2_own_batch: bool = False


@dataclass(frozen=True, kw_only=True)
class Config:
    name: str = "default"
    cohort: CohortConfig = field(default_factory=CohortConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Config:
        return _from_dict(cls, d)

    @classmethod
    def from_json_file(cls, path: str | Path) -> Config:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def replace(self, **kw: Any) -> Config:
        return dataclasses.replace(self, **kw)

    def override(self, assignments: list[str] | tuple[str, ...] | dict[str, Any]) -> Config:
        """Apply `a.b=value` overrides (strings parsed against the field's type).

        Raises ConfigError naming every override that cannot apply (an unknown key, a value
        that does not parse, a name outside a Literal's values), not only the first.
        """
        items = assignments.items() if isinstance(assignments, dict) else assignments
        cfg: Any = self
        problems: list[str] = []
        for item in items:
            try:
                key, value = item if isinstance(item, tuple) else _split(item)
                cfg = _set_path(cfg, key.split("."), value, key)
            except ConfigError as e:
                problems += e.problems
        if problems:
            raise ConfigError(problems)
        return cfg


def choices() -> dict[str, tuple[str, ...]]:
    """Every enumerated setting by dotted key, with its allowed values (from its Literal)."""
    out = {}
    for section in dataclasses.fields(Config):
        cls = typing.get_type_hints(Config)[section.name]
        if dataclasses.is_dataclass(cls):
            for name, allowed in _literal_fields(cls).items():
                out[f"{section.name}.{name}"] = allowed
    return out


def _split(assignment: str) -> tuple[str, str]:
    if "=" not in assignment:
        raise ConfigError([f"override {assignment!r} is not of the form a.b=value"])
    key, value = assignment.split("=", 1)
    return key.strip(), value.strip()


def _set_path(obj: Any, parts: list[str], value: Any, full: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(obj)}
    name = parts[0]
    if name not in fields:
        raise ConfigError(
            [f"unknown config key {full!r}: {type(obj).__name__} has {sorted(fields)}"]
        )
    current = getattr(obj, name)
    if len(parts) > 1:
        if not dataclasses.is_dataclass(current):
            raise ConfigError([f"config key {full!r}: {name} is not a section"])
        return dataclasses.replace(obj, **{name: _set_path(current, parts[1:], value, full)})
    if dataclasses.is_dataclass(current):
        raise ConfigError([f"config key {full!r} names a section, not a value"])
    hint = typing.get_type_hints(type(obj))[name]
    return dataclasses.replace(obj, **{name: _coerce(value, hint, full)})


def _coerce(value: Any, hint: Any, key: str) -> Any:
    if not isinstance(value, str):
        return value
    if isinstance(hint, types.UnionType):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    try:
        if hint is bool:
            low = value.lower()
            if low not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(value)
            return low in ("true", "1", "yes")
        if hint is int:
            return int(value)
        if hint is float:
            return float(value)
    except ValueError:
        raise ConfigError(
            [f"config key {key!r}: {value!r} is not a valid {hint.__name__}"]
        ) from None
    return value


def _from_dict(cls: type, d: dict[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs = {}
    problems: list[str] = []  # of every section, not only the first bad one
    for f in dataclasses.fields(cls):
        if f.name not in d:
            continue
        hint = hints[f.name]
        v = d[f.name]
        try:
            kwargs[f.name] = _from_dict(hint, v) if dataclasses.is_dataclass(hint) else v
        except ConfigError as e:
            problems += e.problems
    unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        problems.append(f"unknown keys for {cls.__name__}: {sorted(unknown)}")
    if problems:
        raise ConfigError(problems)
    return cls(**kwargs)


# Keys that may change between a run and its restart without changing what is trained:
# logging/checkpoint cadence, evaluation batch size, worker processes and where the (same)
# cache lives. Anything else is a different experiment.
RESUMABLE_CHANGES = frozenset(
    {
        "train.log_every",
        "train.checkpoint_every",
        "train.eval_batch_size",
        "train.tensorboard",
        "data.worker_count",
        "data.cache_dir",
    }
)


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"data": {"num_slices": 1}} -> {"data.num_slices": 1} (dotted keys, as `--set` takes)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_differences(
    old: Mapping[str, Any], new: Mapping[str, Any]
) -> dict[str, tuple[Any, Any]]:
    """Dotted keys whose values differ between two config dicts: {key: (old, new)}.

    A key that one side lacks counts as its default: a config.json written before a setting
    existed describes the same experiment as one that has it at its default value.
    """
    a, b = flatten(old), flatten(new)
    default = flatten(Config().to_dict())
    out = {}
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k, default.get(k)), b.get(k, default.get(k))
        if va != vb:
            out[k] = (va, vb)
    return out


def available_configs() -> list[str]:
    names = (p.name for p in resources.files(CONFIG_PACKAGE).iterdir())
    return sorted(n[:-3] for n in names if n.endswith(".py") and not n.startswith("_"))


def load_config(name_or_path: str, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load a named config (phasejax/configs/NAME.py), a .py file of your own or a run's
    config.json, and apply overrides."""
    path = Path(name_or_path)
    if path.suffix == ".json" and path.is_file():
        cfg = Config.from_json_file(path)
    elif path.suffix == ".py":
        if not path.is_file():
            raise FileNotFoundError(f"config file {name_or_path} not found")
        spec = importlib.util.spec_from_file_location(f"phasejax_config_{path.stem}", path)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        cfg = module.get_config()
    else:
        if name_or_path not in available_configs():
            raise FileNotFoundError(
                f"config {name_or_path!r} not found; available: {available_configs()} "
                "or a path to a .py / config.json file"
            )
        cfg = importlib.import_module(f"{CONFIG_PACKAGE}.{name_or_path}").get_config()
    return cfg.override(list(overrides))
