import dataclasses
import json
import typing

import pytest

from phasejax.config import Config, ConfigError, choices, load_config


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


ENUMERATED = sorted(choices())


def test_the_enumerated_settings_are_the_literal_typed_fields():
    assert sorted([
        "cohort.delayed_rule", "cohort.preset", "data.field_of_view", "data.label_set", "data.slab",
        "data.slice_mode",
        "data.slice_selection",
        "data.window", "model.aggregation", "model.depth", "model.dtype", "model.hu_head",
        "model.stem", "model.strategy",
        "train.optimizer", "train.schedule",
    ]) == ENUMERATED  # fmt: skip
    assert choices()["data.window"] == ("raw", "abdomen", "liver", "wide", "multi")


def _section(key: str) -> tuple[type, str]:
    section, name = key.split(".")
    return typing.get_type_hints(Config)[section], name


@pytest.mark.parametrize("key", ENUMERATED)
def test_enumerated_setting_is_checked_when_a_section_is_built(key):
    cls, name = _section(key)
    allowed = choices()[key]
    for value in allowed:  # every allowed value builds
        assert getattr(cls(**{name: value}), name) == value
    message = f"{key}='bogus' is not one of {', '.join(allowed)}"
    with pytest.raises(ConfigError) as e:
        cls(**{name: "bogus"})
    assert str(e.value) == message
    # ... and so is every other way to a Config: replace, override, from_dict
    with pytest.raises(ConfigError, match=message):
        dataclasses.replace(cls(), **{name: "bogus"})
    with pytest.raises(ConfigError, match=message):
        Config().override([f"{key}=bogus"])
    bad = Config().to_dict()
    bad[key.split(".")[0]][name] = "bogus"
    with pytest.raises(ConfigError, match=message):
        Config.from_dict(bad)


@pytest.mark.parametrize("key", ENUMERATED)
def test_bad_set_of_an_enumerated_setting_exits_2_with_the_allowed_values(key, capsys):
    from phasejax.cli import main

    assert main(["train", "--config", "debug", "--set", f"{key}=bogus", "--print-config"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        f"phasejax train: {key}='bogus' is not one of {', '.join(choices()[key])}"
    ]


def test_override_names_every_problem_at_once():
    with pytest.raises(ConfigError) as e:
        Config().override(["data.window=abdomne", "train.steps=x", "train.optimizer=lamb"])
    assert e.value.problems == (
        "data.window='abdomne' is not one of raw, abdomen, liver, wide, multi",
        "config key 'train.steps': 'x' is not a valid int",
        "train.optimizer='lamb' is not one of adamw, sgd",
    )


def test_modules_read_the_allowed_values_from_the_config():
    """The values each interpreting module knows are the Literal's (one definition)."""
    from phasejax.cohort.generate import PRESETS as COHORT_SIZES
    from phasejax.data.pipeline import SLICE_SELECTIONS
    from phasejax.data.windowing import MULTI, NAMES, WINDOWS
    from phasejax.models.classifiers import AGGREGATIONS, SLICE_MODES, STRATEGIES
    from phasejax.models.resnet import STAGES, STEMS, resolve_dtype
    from phasejax.phases import LABEL_SETS
    from phasejax.train.optim import OPTIMIZERS, SCHEDULES

    c = choices()
    assert c["data.window"] == NAMES and set(NAMES) == {"raw", *WINDOWS, "multi"}
    assert set(MULTI) <= set(WINDOWS)
    assert c["data.slice_selection"] == SLICE_SELECTIONS
    assert (
        c["data.slice_mode"], c["model.aggregation"], c["model.strategy"]
    ) == (SLICE_MODES, AGGREGATIONS, STRATEGIES)  # fmt: skip
    assert (c["train.optimizer"], c["train.schedule"]) == (OPTIMIZERS, SCHEDULES)
    # tables keyed by name: one entry per allowed value, in the same order
    assert tuple(STAGES) == c["model.depth"]
    assert c["model.stem"] == STEMS
    assert tuple(LABEL_SETS) == c["data.label_set"]
    assert tuple(COHORT_SIZES) == c["cohort.preset"]
    for dtype in c["model.dtype"]:
        resolve_dtype(dtype)


@pytest.mark.parametrize("command", ["train", "reproduce"])
def test_bad_choice_is_a_usage_error_listing_the_allowed_values(command, tmp_path, capsys):
    from phasejax.cli import main

    args = ["--config", "debug", "--out"]
    out = tmp_path / "run"
    rc = main([command, *args, str(out), "--set", "data.window=abdomne",
               "--set", "train.optimizer=lamb"])  # fmt: skip
    assert rc == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == (
        f"phasejax {command}: data.window='abdomne' is not one of raw, abdomen, liver, wide, "
        "multi; train.optimizer='lamb' is not one of adamw, sgd"
    )
    assert not out.exists()  # refused before anything was created


def test_a_bad_config_file_is_a_usage_error(tmp_path, capsys):
    from phasejax.cli import main

    own = tmp_path / "own.py"
    own.write_text(
        "from phasejax.config import Config, ModelConfig\n"
        "def get_config():\n    return Config(model=ModelConfig(depth='20'))\n"
    )
    assert main(["train", "--config", str(own), "--print-config"]) == 2
    assert "model.depth='20' is not one of tiny, tiny-bottleneck, 10, 18" in capsys.readouterr().err
    saved = tmp_path / "config.json"
    saved.write_text(json.dumps({**Config().to_dict(), "model": {"dtype": "float16"}}))
    assert main(["train", "--config", str(saved), "--print-config"]) == 2
    err = capsys.readouterr().err
    assert err == "phasejax train: model.dtype='float16' is not one of float32, bfloat16\n"


def test_ablate_refuses_a_suite_value_outside_the_choices(tmp_path, capsys):
    import shutil

    from phasejax.ablate.suites import ABLATIONS_DIR
    from phasejax.cli import main

    suites = tmp_path / "suites"
    suites.mkdir()
    shutil.copy(ABLATIONS_DIR / "presets.toml", suites)
    (suites / "win.toml").write_text(
        'name = "win"\nquestion = "q"\naxis = "data.window"\nvalues = ["abdomen", "hepatic"]\n'
        'baseline = "abdomen"\n'
    )
    argv = ["ablate", "--suite", "win", "--budget", "smoke", "--suites-dir", str(suites),
            "--out", str(tmp_path / "abl"), "--dry-run"]  # fmt: skip
    assert main(argv) == 2
    # refused when the suite file is read, naming the file and the value
    assert capsys.readouterr().err == (
        f"phasejax ablate: {suites / 'win.toml'}: value 'hepatic': data.window='hepatic' is not "
        "one of raw, abdomen, liver, wide, multi\n"
    )
    assert not (tmp_path / "abl").exists()


def test_named_configs_come_from_the_package_and_paths_from_anywhere(tmp_path):
    from phasejax.config import available_configs

    assert available_configs() == ["debug", "paper", "quick", "smoke"]
    assert load_config("smoke", ["train.steps=2"]).train.steps == 2
    own = tmp_path / "own.py"
    own.write_text(
        "from phasejax.config import Config\ndef get_config():\n    return Config(name='own')\n"
    )
    assert load_config(str(own)).name == "own"
    with pytest.raises(FileNotFoundError, match=r"config file .*missing\.py not found"):
        load_config(str(tmp_path / "missing.py"))
