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


def test_every_named_config_passes_the_choice_check():
    from phasejax.config import available_configs
    from phasejax.config_check import choice_problems

    for name in available_configs():
        assert choice_problems(load_config(name)) == [], name


@pytest.mark.parametrize("command", ["train", "reproduce"])
def test_bad_choice_is_a_usage_error_listing_the_allowed_values(command, tmp_path, capsys):
    from phasejax.cli import main

    args = (
        ["--config", "debug", "--workdir"] if command == "train" else ["--preset", "debug", "--out"]
    )
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
    argv = ["ablate", "--suite", "win", "--preset", "smoke", "--suites-dir", str(suites),
            "--out", str(tmp_path / "abl"), "--dry-run"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "run win/hepatic/seed0: data.window='hepatic' is not one of raw, abdomen" in err


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
