"""Reports on disk: CSV or JSON lines, written row by row or whole, and read back.

CSV cells of list columns are joined with `LIST_SEPARATOR` and split again on reading;
every cell is made safe for spreadsheets and UTF-8 (`phasejax.safe_text.csv_cell`).
JSON lines keep lists and numbers.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TextIO

from phasejax import atomic
from phasejax.predict.schema import LIST_COLUMNS, LIST_SEPARATOR, STATUS_OK, sort_key
from phasejax.safe_text import csv_cell


def _cell(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return csv_cell(LIST_SEPARATOR.join(str(v) for v in value))
    return csv_cell(value)


class ReportWriter:
    """Rows to a CSV file or JSON lines (a file, or a stream such as stdout), one row at a
    time and flushed: a run that is interrupted, even killed, leaves a valid report of
    every row written so far, which `--resume` continues."""

    def __init__(self, target: str | Path | TextIO, columns: Sequence[str], fmt: str) -> None:
        if fmt not in ("csv", "jsonl"):
            raise ValueError(f"report format {fmt!r}: csv | jsonl")
        self.fmt, self.columns = fmt, list(columns)
        self.path = None if hasattr(target, "write") else Path(target)  # type: ignore[arg-type]
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Kept open across calls by design (streamed rows); closed by finish().
            self.f: TextIO = open(self.path, "w", newline="")  # noqa: SIM115
        else:
            self.f = target  # type: ignore[assignment]
        self._csv = csv.writer(self.f) if fmt == "csv" else None
        if self._csv is not None:
            self._csv.writerow(self.columns)
            self.f.flush()

    def write(self, row: dict[str, Any]) -> None:
        if self._csv is not None:
            self._csv.writerow([_cell(row.get(c)) for c in self.columns])
        else:
            self.f.write(json.dumps({c: row.get(c) for c in self.columns}) + "\n")
        self.f.flush()

    def finish(self, rows: Iterable[dict[str, Any]] | None = None) -> None:
        """Close; a file is then rewritten (atomically) with `rows` in report order."""
        if self.path is None:
            self.f.flush()
            return
        self.f.close()
        if rows is not None:
            write_report(self.path, sorted(rows, key=sort_key), self.columns, self.fmt)


def write_report(
    path: str | Path, rows: Iterable[dict[str, Any]], columns: Sequence[str], fmt: str
) -> Path:
    """Write a whole report atomically (CSV or JSON lines)."""
    path = Path(path)
    with atomic.open_atomic(path, "w", newline="") as f:
        if fmt == "csv":
            w = csv.writer(f)
            w.writerow(list(columns))
            for r in rows:
                w.writerow([_cell(r.get(c)) for c in columns])
        else:
            for r in rows:
                f.write(json.dumps({c: r.get(c) for c in columns}) + "\n")
    return path


class ReportError(ValueError):
    """A report file that cannot be read; the message names it and says why."""


def read_report(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a report written by `phasejax predict` (CSV or JSON lines, detected from
    the content). CSV list cells are split back into lists; other CSV cells stay text."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ReportError(f"{path}: cannot read the report ({type(e).__name__}: {e})") from e
    if not text.strip():
        raise ReportError(f"{path}: empty report")
    if text.lstrip().startswith("{"):
        rows = []
        for i, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ReportError(f"{path}:{i}: not a JSON line ({e})") from e
            if not isinstance(row, dict):
                raise ReportError(f"{path}:{i}: a JSON line must be an object")
            rows.append(row)
    else:
        reader = csv.DictReader(text.splitlines())
        rows = []
        for row in reader:
            for c in LIST_COLUMNS:
                if c in row:
                    cell = row[c] or ""
                    row[c] = cell.split(LIST_SEPARATOR) if cell else []
            rows.append(row)
    missing = [c for c in ("status", "series_id", "predicted") if rows and c not in rows[0]]
    if missing or not rows:
        raise ReportError(
            f"{path}: not a phasejax predict report"
            + (f" (no column {missing})" if missing else " (no rows)")
        )
    return rows


def classified_ids(rows: Iterable[dict[str, Any]]) -> set[str]:
    return {
        str(r["series_id"]) for r in rows if r.get("status") == STATUS_OK and r.get("series_id")
    }
