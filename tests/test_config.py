import json

import pytest

from phasejax.config import Config, load_config


def test_override_parses_types_and_keeps_frozen_original():
    base = Config()
    cfg = base.override(["model.depth=50", "train.steps=7", "train.learning_rate=0.5",
                         "data.augment=false", "data.window=multi"])  # fmt: skip
    assert (cfg.model.depth, cfg.train.steps, cfg.train.learning_rate) == ("50", 7, 0.5)
    assert cfg.data.augment is False and cfg.data.window == "multi"
    assert base.train.steps == Config().train.steps


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("train.stepz=3", "unknown config key"),
        ("train.steps=three", "not a valid int"),
        ("train=3", "names a section"),
        ("data.augment=maybe", "not a valid bool"),
        ("novalue", "a.b=value"),
    ],
)
def test_bad_overrides_are_named(assignment, message):
    with pytest.raises(ValueError, match=message):
        Config().override([assignment])


def test_json_round_trip(tmp_path):
    cfg = Config().override(["model.strategy=one_step", "cohort.label_noise=0.05"])
    path = tmp_path / "config.json"
    path.write_text(cfg.to_json())
    assert Config.from_json_file(path) == cfg
    assert json.loads(path.read_text())["model"]["strategy"] == "one_step"


def test_missing_named_config_lists_available():
    with pytest.raises(FileNotFoundError, match="available"):
        load_config("no-such-config")
