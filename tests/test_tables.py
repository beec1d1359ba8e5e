"""phasejax.tables: the terminal table layout and the p-value format of every report."""

from __future__ import annotations

import math

from phasejax.tables import format_p, text_table


def test_text_table_aligns_columns_to_the_widest_cell() -> None:
    cols = [("id", lambda r: r[0]), ("phase", lambda r: r[1]), ("note", lambda r: r[2])]
    lines = text_table(cols, [("s1", "EAP", "-"), ("series22", "DP", "few_slices:3<8")])
    assert lines == [
        "id        phase  note",
        "s1        EAP    -",
        "series22  DP     few_slices:3<8",
    ]
    assert text_table(cols, []) == ["id  phase  note"]


def test_format_p_is_a_bound_below_a_thousandth_and_three_decimals_above() -> None:
    assert [format_p(p) for p in (0.0, 0.0004, 0.001, 0.2891, 1.0)] == [
        "< 0.001", "< 0.001", "0.001", "0.289", "1.000",
    ]  # fmt: skip
    assert format_p(None) == format_p(math.nan) == "n/a"
    assert format_p(None, missing="") == ""
