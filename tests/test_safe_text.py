"""One helper for every writer: undecodable file-name bytes and spreadsheet formulas."""

from __future__ import annotations

import csv
import io
import json
import os

import pytest

from phasejax.safe_text import clean_json, clean_text, csv_cell, path_text


def test_undecodable_path_bytes_become_visible_escapes() -> None:
    raw = b"/archive/caf\xe9/1-01.dcm"  # Latin-1 e-acute: not UTF-8
    text = path_text(raw)
    assert text == "/archive/caf\\xe9/1-01.dcm"
    assert path_text(os.fsdecode(raw)) == text  # str with surrogates from os.walk
    text.encode("utf-8")  # writable by any UTF-8 writer
    assert path_text("/ok/ü.dcm") == "/ok/ü.dcm"  # valid UTF-8 names are untouched
    assert clean_text("x\ud800y") == "x\\ud800y"  # a surrogate that is no file-name byte


def test_clean_json_reaches_nested_strings_and_keys() -> None:
    bad = os.fsdecode(b"caf\xe9")
    doc = clean_json({"paths": [bad], bad: {"n": 1, "s": (bad, 2.5, None)}})
    assert doc == {"paths": ["caf\\xe9"], "caf\\xe9": {"n": 1, "s": ["caf\\xe9", 2.5, None]}}
    json.dumps(doc, ensure_ascii=False).encode("utf-8")


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        ('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")'),
        ("+1+cmd", "'+1+cmd"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1", "'\t=1"),
        ("-1000.0", "-1000.0"),  # a plain number is no formula and must stay a number
        ("+5", "+5"),
        (-3, -3),
        (0.25, 0.25),
        (None, ""),
        ("portal venous", "portal venous"),
    ],
)
def test_csv_cell_defuses_formulas_but_not_numbers(value, cell) -> None:
    assert csv_cell(value) == cell


def test_csv_cell_writes_a_non_utf8_path_through_a_strict_writer() -> None:
    buf = io.StringIO()
    csv.writer(buf).writerow([csv_cell(os.fsdecode(b"/a/caf\xe9")), csv_cell(3)])
    buf.getvalue().encode("utf-8", "strict")
    assert buf.getvalue() == "/a/caf\\xe9,3\r\n"
