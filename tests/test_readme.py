"""The README's documented commands: every `phasejax ...` line parses with today's CLI, and
the ones that run in seconds here do run (the reproduce directory's `figures` is exercised
in test_reproduce.py; training presets are too long for a test)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from phasejax.cli import build_parser, main
from phasejax.config import load_config
from phasejax.reproduce import reproduce_config

REPO = Path(__file__).resolve().parents[1]


def _is_template(argv: list[str]) -> bool:
    """A usage line such as `phasejax inspect PATH... [--json]`, not a command to run."""
    return any(re.fullmatch(r"[A-Z_]{2,}(\.\.\.)?", a) or any(c in a for c in "[]|") for a in argv)


def _commands(markdown: Path) -> list[list[str]]:
    """argv (without the program) of every phasejax command in the file: lines of its code
    blocks, and inline `phasejax ...` spans that are not usage templates."""
    text = markdown.read_text()
    lines = [
        line
        for block in re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.S | re.M)
        # a trailing backslash continues a shell command on the next line
        for line in re.sub(r"\\\n\s*", " ", block).splitlines()
    ]
    # Inline spans that name a subcommand alone (`phasejax predict`) are mentions.
    lines += [
        span
        for span in re.findall(r"`((?:\.venv/bin/)?phasejax [^`]+)`", text)
        if len(span.split()) > 2 and "..." not in span
    ]
    out = []
    for line in lines:
        line = line.split("#", 1)[0].strip()
        for part in line.split("&&"):
            argv = shlex.split(part)
            if argv and argv[0] in ("phasejax", ".venv/bin/phasejax") and not _is_template(argv):
                out.append(argv[1:])
    return out


@pytest.mark.parametrize("doc", ["README.md", "ablations/README.md"])
def test_every_documented_command_parses(doc: str, capsys: pytest.CaptureFixture[str]) -> None:
    commands = _commands(REPO / doc)
    assert commands, f"no phasejax command found in {doc}"
    parser = build_parser()
    for argv in commands:
        args = parser.parse_args(argv)  # argparse exits (a test failure) on a stale flag
        assert callable(args.func), argv
        assert "deprecated" not in capsys.readouterr().err, argv  # documented: the new names
        # The documented configs and overrides are valid (a bad one raises ConfigError).
        if argv[0] == "train":
            load_config(args.config, args.overrides)
        elif argv[0] == "reproduce":
            reproduce_config(args.config, args.overrides)


def test_readme_lists_the_commands_it_documents() -> None:
    shown = {argv[0] for argv in _commands(REPO / "README.md")}
    assert {"reproduce", "inspect", "cohort", "figures"} <= shown


@pytest.mark.real
def test_readme_inspect_block_runs_from_the_repository_root(
    real_data: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(REPO)
    inspect = [a for a in _commands(REPO / "README.md") if a[0] == "inspect"]
    assert inspect == [
        ["inspect", "../shared/data/real"],
        ["inspect", "../shared/data/real", "--json"],
    ]
    for argv in inspect[:2]:
        assert main([*argv, "--quiet"]) == 0
    # "the two HCC_015 series + the NIfTI", as the README's comment says.
    assert capsys.readouterr().out.count('"num_slices"') == 3
