"""Old option names that keep working for one release, with a note on stderr.

Options were renamed so that one name means one thing across the commands:

    cohort generate --preset   -> --size         (cohort size: tiny, quick, medium, paper)
    reproduce --preset         -> --config       (a named config, as `train --config`)
    ablate --preset            -> --budget       (smoke, quick, paper in presets.toml)
    reproduce --data           -> --cache        (a prepared cache, as `train` / `ablate`)
    train --workdir            -> --out          (the directory a command writes)
    prepare --size             -> --cache-size   (as `cohort generate`)
    prepare --spacing-z        -> --cache-spacing-z

`add_alias(parser, old, new)` registers the old name as a hidden alias of the new option
(same destination, type and choices); using it prints one line to stderr and then works
exactly as the new name. The aliases go away in the release after the rename.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any


class _DeprecatedAlias(argparse.Action):
    def __init__(self, option_strings: Sequence[str], dest: str, *, new: str, **kw: Any):
        self.new = new
        super().__init__(option_strings, dest, **kw)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        print(
            f"{parser.prog}: {option_string} is deprecated, use {self.new} "
            "(the old name will be removed in the next release)",
            file=sys.stderr,
        )
        setattr(namespace, self.dest, values)


def add_alias(parser: argparse.ArgumentParser, old: str, new: str) -> None:
    """Accept `old` as a deprecated, hidden name of the already added option `new`."""
    target = next(a for a in parser._actions if new in a.option_strings)
    parser.add_argument(
        old,
        dest=target.dest,
        action=_DeprecatedAlias,
        new=new,
        type=target.type,
        choices=target.choices,
        metavar=target.metavar,
        default=argparse.SUPPRESS,  # the new option's default stands
        help=argparse.SUPPRESS,
    )
