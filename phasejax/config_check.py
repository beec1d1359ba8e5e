"""Settings of a Config that must be one of a fixed set of names, checked before a run.

`--set data.window=abdomne` used to surface as a traceback from deep inside the input
pipeline, minutes into a run. `choice_problems(cfg)` names every such setting whose
value is not allowed, with the allowed values, so that `train`, `reproduce` and
`ablate` can refuse the command as a usage error (exit status 2) before anything
starts. The allowed values are read from the modules that interpret them, so this
list cannot drift from what the code accepts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from phasejax.config import Config


def _windows() -> Sequence[str]:
    from phasejax.data.windowing import PRESETS

    return PRESETS


def _label_sets() -> Sequence[str]:
    from phasejax.phases import LABEL_SETS

    return sorted(LABEL_SETS)


def _slice_selections() -> Sequence[str]:
    from phasejax.data.pipeline import SLICE_SELECTIONS

    return SLICE_SELECTIONS


def _classifier(name: str) -> Callable[[], Sequence[str]]:
    def allowed() -> Sequence[str]:
        from phasejax.models import classifiers

        return getattr(classifiers, name)

    return allowed


def _depths() -> Sequence[str]:
    from phasejax.models.resnet import STAGES

    return list(STAGES)


def _optim(name: str) -> Callable[[], Sequence[str]]:
    def allowed() -> Sequence[str]:
        from phasejax.train import optim

        return getattr(optim, name)

    return allowed


def _cohort_presets() -> Sequence[str]:
    from phasejax.cohort.generate import PRESETS

    return sorted(PRESETS)


# dotted key -> the names its value may take
CHOICES: dict[str, Callable[[], Sequence[str]]] = {
    "data.window": _windows,
    "data.label_set": _label_sets,
    "data.slice_mode": _classifier("SLICE_MODES"),
    "data.slice_selection": _slice_selections,
    "model.strategy": _classifier("STRATEGIES"),
    "model.aggregation": _classifier("AGGREGATIONS"),
    "model.depth": _depths,
    "train.optimizer": _optim("OPTIMIZERS"),
    "train.schedule": _optim("SCHEDULES"),
    "cohort.preset": _cohort_presets,
}


def choice_problems(cfg: Config) -> list[str]:
    """One message per setting of `cfg` outside its allowed names ([] when all are fine)."""
    out = []
    for key, allowed in CHOICES.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        names = list(allowed())
        if value not in names:
            out.append(f"{key}={value!r} is not one of {', '.join(names)}")
    return out
