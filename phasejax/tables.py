"""How phasejax prints tables: plain-text columns for terminals and p-values in reports.

`text_table` lays out the terminal tables of `phasejax inspect`, `predict` and `evaluate`;
`format_p` writes a p-value the same way in every report (reproduce's report.md, the
ablation summaries).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

R = TypeVar("R")

Column = tuple[str, Callable[[R], str]]

# Below this a p-value is written as a bound: more digits would claim a precision that
# exact tests on a few hundred series do not have.
P_FLOOR = 0.001


def text_table(columns: Sequence[Column[R]], rows: Iterable[R]) -> list[str]:
    """The header line and one line per row: each column as wide as its widest cell,
    left-aligned, two spaces apart, trailing blanks stripped. columns: (header, cell of a row)."""
    cells = [[cell(r) for _, cell in columns] for r in rows]
    widths = [max([len(name)] + [len(c[i]) for c in cells]) for i, (name, _) in enumerate(columns)]
    lines = ["  ".join(name.ljust(w) for (name, _), w in zip(columns, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    return lines


def format_p(p: Any, missing: str = "n/a") -> str:
    """ "< 0.001" below P_FLOOR, else three decimals; `missing` for None or NaN."""
    if p is None or (isinstance(p, float) and not math.isfinite(p)):
        return missing
    return f"< {P_FLOOR:g}" if p < P_FLOOR else f"{p:.3f}"
