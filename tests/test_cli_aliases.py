"""Renamed options: the new name works silently, the old one still works for one release and
says so in one line on stderr (phasejax/commands/_aliases.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from phasejax.cli import build_parser, main

# (command words and required options, old name, new name, value, namespace attribute, parsed)
RENAMED = [
    (["cohort", "generate", "--out", "c"], "--preset", "--size", "quick", "size", "quick"),
    (["train", "--config", "debug"], "--workdir", "--out", "runs/x", "out", "runs/x"),
    (["reproduce", "--out", "r"], "--preset", "--config", "paper", "config", "paper"),
    (["reproduce", "--out", "r"], "--data", "--cache", "cache", "cache", "cache"),
    (["ablate", "--suite", "all"], "--preset", "--budget", "smoke", "budget", "smoke"),
    (["prepare", "--root", "d", "--out", "c"], "--size", "--cache-size", "64", "cache_size", 64),
    (["prepare", "--root", "d", "--out", "c"], "--spacing-z", "--cache-spacing-z", "2.5",
     "cache_spacing_z", 2.5),
]  # fmt: skip
IDS = [f"{argv[0]} {old}" for argv, old, *_ in RENAMED]


def _parse(argv: list[str]) -> argparse.Namespace:
    return build_parser().parse_args(argv)


@pytest.mark.parametrize(("argv", "old", "new", "value", "attr", "parsed"), RENAMED, ids=IDS)
def test_new_name_works_without_a_note(argv, old, new, value, attr, parsed, capsys):
    assert getattr(_parse([*argv, new, value]), attr) == parsed
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(("argv", "old", "new", "value", "attr", "parsed"), RENAMED, ids=IDS)
def test_old_name_still_works_and_warns_in_one_line(argv, old, new, value, attr, parsed, capsys):
    prog = "phasejax " + " ".join(argv[: 2 if argv[0] == "cohort" else 1])
    for form in ([old, value], [f"{old}={value}"]):
        assert getattr(_parse([*argv, *form]), attr) == parsed
        assert capsys.readouterr().err.splitlines() == [
            f"{prog}: {old} is deprecated, use {new} (the old name will be removed in the next "
            "release)"
        ]


@pytest.mark.parametrize(("argv", "old", "new", "value", "attr", "parsed"), RENAMED, ids=IDS)
def test_old_name_is_hidden_from_help(argv, old, new, value, attr, parsed, capsys):
    words = argv[: 2 if argv[0] == "cohort" else 1]
    with pytest.raises(SystemExit) as e:
        main([*words, "--help"])
    assert e.value.code == 0
    shown = capsys.readouterr().out
    assert new in shown and f"{old} " not in shown.replace(new, "")


def test_old_name_keeps_the_choices_of_the_new_one(capsys):
    with pytest.raises(SystemExit) as e:
        _parse(["cohort", "generate", "--out", "c", "--preset", "huge"])
    assert e.value.code == 2
    assert "invalid choice: 'huge'" in capsys.readouterr().err


def test_the_default_stays_when_neither_name_is_given():
    assert _parse(["cohort", "generate", "--out", "c"]).size == "tiny"
    assert _parse(["reproduce", "--out", "r"]).config == "quick"
    args = _parse(["ablate", "--suite", "all"])
    assert args.budget == "quick" and args.cache is None


def test_old_names_run_end_to_end(tmp_path: Path, capsys):
    """The commands themselves, not only the parser, honour the old names."""
    out = tmp_path / "abl"
    rc = main(["ablate", "--suite", "strategy", "--preset", "smoke", "--out", str(out),
               "--dry-run"])  # fmt: skip
    assert rc == 0
    captured = capsys.readouterr()
    assert "ablate: budget smoke (config smoke)" in captured.out
    assert "--preset is deprecated, use --budget" in captured.err
    # reproduce: the old names reach the config check (a bad --set is still refused with 2)
    rc = main(["reproduce", "--preset", "debug", "--data", str(tmp_path / "c"), "--out",
               str(tmp_path / "r"), "--set", "data.window=bogus"])  # fmt: skip
    assert rc == 2
    assert capsys.readouterr().err.splitlines() == [
        "phasejax reproduce: --preset is deprecated, use --config (the old name will be removed "
        "in the next release)",
        "phasejax reproduce: --data is deprecated, use --cache (the old name will be removed in "
        "the next release)",
        "phasejax reproduce: data.window='bogus' is not one of raw, abdomen, liver, wide, multi",
    ]
    assert not (tmp_path / "r").exists()
    rc = main(["train", "--config", "smoke", "--workdir", str(tmp_path / "t"), "--print-config"])
    assert rc == 0 and '"name": "smoke"' in capsys.readouterr().out


def test_parallel_children_get_the_new_names():
    from phasejax.commands.ablate import _child_argv

    args = _parse(["ablate", "--suite", "strategy", "--preset", "smoke", "--out", "o",
                   "--cache", "c"])  # fmt: skip
    argv = _child_argv(args, "0/2")
    assert argv[argv.index("--budget") + 1] == "smoke" and "--preset" not in argv
    assert argv[argv.index("--cache") + 1] == "c"


def test_reproduce_offers_exactly_its_configs(capsys):
    from phasejax.reproduce import CONFIGS

    for name in CONFIGS:
        assert _parse(["reproduce", "--out", "r", "--config", name]).config == name
    with pytest.raises(SystemExit):
        _parse(["reproduce", "--out", "r", "--config", "smoke"])
    assert "invalid choice: 'smoke'" in capsys.readouterr().err
