"""The named configs: `quick` is the base, `debug` and `paper` derive from it and `smoke` from
debug, so that one change to quick reaches them all; their resolved values stay pinned."""

from __future__ import annotations

import pytest

from phasejax.config import config_differences, load_config

# A few values that define each config (what the README's configs table and the timings
# documented in each module rely on).
PINNED = {
    "quick": {
        "cohort.preset": "medium", "cohort.extra_arterial": 1, "data.intensity_jitter_hu": 5.0,
        "data.image_size": 96, "data.num_slices": 5,
        "data.window": "multi", "data.cache_size": 192, "model.depth": "18", "model.width": 16,
        "model.strategy": "two_step", "model.dtype": "float32", "train.batch_size": 16,
        "train.steps": 3000, "train.learning_rate": 2e-3, "train.optimizer": "adamw",
        "train.schedule": "cosine", "train.eval_every": 250,
    },
    "debug": {
        "cohort.preset": "tiny", "cohort.extra_arterial": 0, "data.image_size": 64,
        "data.num_slices": 3,
        "data.window": "abdomen", "data.cache_size": 128, "model.depth": "tiny",
        "model.width": 16, "train.batch_size": 16, "train.steps": 200,
        "train.learning_rate": 3e-3, "train.warmup_steps": 10, "train.eval_every": 50,
    },
    "smoke": {
        "cohort.preset": "tiny", "data.image_size": 32, "data.num_slices": 3,
        "data.cache_size": 128, "model.depth": "tiny", "model.width": 8, "train.batch_size": 8,
        "train.steps": 6, "train.eval_every": 3, "train.checkpoint_every": 3,
        "train.eval_batch_size": 16,
    },
    "paper": {
        "cohort.preset": "paper", "cohort.extra_arterial": 0, "data.intensity_jitter_hu": 5.0,
        "data.image_size": 224, "data.num_slices": 5,
        "data.window": "multi", "data.cache_size": 256, "data.worker_count": 8,
        "model.depth": "18", "model.width": 64, "model.dtype": "bfloat16",
        "train.batch_size": 64, "train.steps": 4000, "train.learning_rate": 1e-3,
        "train.warmup_steps": 300,
    },
}  # fmt: skip

# What each derived config sets itself; everything else is its base's.
OWN_KEYS = {
    ("quick", "debug"): {
        "name", "cohort.preset", "cohort.extra_arterial", "data.image_size", "data.num_slices", "data.window",
        "data.cache_size", "model.depth", "train.steps", "train.learning_rate",
        "train.warmup_steps", "train.eval_every", "train.checkpoint_every",
    },
    ("debug", "smoke"): {
        "name", "data.image_size", "model.width", "train.batch_size", "train.steps",
        "train.warmup_steps", "train.eval_every", "train.checkpoint_every", "train.log_every",
        "train.eval_batch_size",
    },
    ("quick", "paper"): {
        "name", "cohort.preset", "cohort.extra_arterial", "data.image_size", "data.cache_size", "data.worker_count",
        "model.width", "model.dtype", "train.batch_size", "train.steps", "train.learning_rate",
        "train.warmup_steps", "train.eval_every", "train.checkpoint_every", "train.log_every",
        "train.eval_batch_size",
    },
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(PINNED))
def test_named_config_values_are_pinned(name: str) -> None:
    cfg = load_config(name)
    assert cfg.name == name
    for key, value in PINNED[name].items():
        section, field = key.split(".")
        assert getattr(getattr(cfg, section), field) == value, (name, key)


@pytest.mark.parametrize(("base", "derived"), sorted(OWN_KEYS))
def test_derived_config_differs_from_its_base_only_where_it_says(base: str, derived: str) -> None:
    diff = config_differences(load_config(base).to_dict(), load_config(derived).to_dict())
    assert set(diff) == OWN_KEYS[(base, derived)]


def test_a_change_to_quick_reaches_every_derived_config(monkeypatch: pytest.MonkeyPatch) -> None:
    from phasejax.configs import quick

    original = quick.get_config
    changed = {"data.label_set": "full5", "train.weight_decay": 0.5, "data.num_slices": 7}
    monkeypatch.setattr(quick, "get_config", lambda: original().override(changed))
    for name in ("debug", "smoke", "paper"):
        cfg = load_config(name)
        assert cfg.data.label_set == "full5" and cfg.train.weight_decay == 0.5, name
        # paper takes quick's slices; debug (and so smoke) sets its own
        assert cfg.data.num_slices == (7 if name == "paper" else 3), name
    # ... and the derived configs' own values are unchanged
    assert load_config("smoke").train.steps == 6


def test_a_setting_missing_from_an_older_config_counts_as_its_default():
    new = load_config("quick").to_dict()
    old = load_config("quick").to_dict()
    del old["data"]["erase_boxes"]  # a config.json written before the setting existed
    assert config_differences(old, new) == {}
    new["data"]["erase_boxes"] = 2
    assert config_differences(old, new) == {"data.erase_boxes": (0, 2)}
