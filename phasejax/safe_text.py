"""Text that is safe to write: file system paths and user-supplied cells.

Two hazards, one place that handles each, used by every writer of reports, manifests
and tables (`phasejax predict`, `inspect`, `prepare`, `ablate summarize`):

- Paths. On POSIX a file name is bytes; Python turns the bytes that are not UTF-8
  into lone surrogates (PEP 383), which no UTF-8 writer accepts: one such name in an
  archive ended a whole CSV report with UnicodeEncodeError. `path_text` and
  `clean_text` write each such byte as the visible escape `\\xNN` instead, so a path
  like b"caf\\xe9" reads "caf\\xe9" in every output (CSV, JSON lines, tables, logs).
  The escape is for people; the files themselves are always opened by the original
  path, never by this text.
- Spreadsheet formulas. A CSV cell starting with =, +, -, @ (or a tab / carriage
  return) runs as a formula when the file is opened in a spreadsheet. `csv_cell`
  prefixes such text with a single quote. Numbers, and text that is a plain number
  such as "-1000.0", are left alone: they cannot be formulas and must stay numbers.

This module imports nothing but the standard library (phasejax.data uses it).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def clean_text(text: str) -> str:
    """`text` with every undecodable file-name byte (a lone surrogate) written as \\xNN."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        # Surrogates that did not come from file-name bytes: escape them as code points.
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def path_text(path: str | bytes | os.PathLike[Any]) -> str:
    """Any path (str, bytes or PathLike) as text every writer accepts (see the module)."""
    return clean_text(os.fsdecode(path))


def clean_json(value: Any) -> Any:
    """`value` with `clean_text` applied to every string in it (dict keys included)."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, Mapping):
        return {clean_json(k): clean_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean_json(v) for v in value]
    if isinstance(value, bytes | os.PathLike):
        return path_text(value)
    return value


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def csv_cell(value: Any) -> Any:
    """One CSV cell: None -> "", numbers unchanged, text cleaned and defused (module doc)."""
    if value is None:
        return ""
    if isinstance(value, bool | int | float):
        return value
    text = path_text(value) if isinstance(value, bytes | os.PathLike) else clean_text(str(value))
    if text.startswith(FORMULA_PREFIXES) and not _is_number(text):
        return "'" + text
    return text
