"""Reference labels of `phasejax evaluate`: a labels CSV with a set of accepted phases per series.

A row names its series exactly as the labels CSV of `phasejax prepare` does
(`phasejax.data.prepare`): by the first of `series_id`, `path` (or its alias `file`)
and `series_uid`, optionally narrowed by `acquisition`. A relative path is looked up
under the CSV's own folder first, then under each DATA folder in turn.

Label columns:

- `phase`: the reference label, any word `phasejax.phases.phase_from_word` accepts
  ("PVP", "portal venous", "EQP", ...).
- `accepts` (optional): the predicted phases that count as right, `|`-separated phase
  words (`EAP|LAP` for an arterial series whose early/late split is not known,
  `PVP|DP`). Every word goes through `phase_from_word`; an unknown one is an error
  naming the CSV line. With `accepts`, `phase` may be a free-text group label that is
  no phase word (`AP`, `PVP_or_DP`): it is kept as the label shown in tables and the
  confusion matrix. Without `accepts` (column absent or cell empty) a series accepts
  exactly its `phase`.

Every other column (e.g. `patient`, `collection`, `evidence`) is carried as text into
the per-series rows. No jax here.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from phasejax.data.discover import Plan
from phasejax.data.prepare import (
    LabelsError,
    SeriesIndex,
    ambiguous_match,
    labels_reader,
    parse_labels_file,
)
from phasejax.phases import Phase, UnknownPhaseWord, phase_from_word

ID_COLUMNS = ("series_id", "path", "file", "series_uid", "acquisition")
LABEL_COLUMNS = ("phase", "accepts")
ACCEPTS_SEPARATOR = "|"
PHASE_ORDER = tuple(p.value for p in Phase)  # NC, EAP, LAP, PVP, DP: display order


@dataclass(frozen=True, kw_only=True)
class EvalLabel:
    line: int  # 1-based line of the CSV (the header is line 1)
    series_id: str = ""
    path: str = ""  # `path`, else `file`
    series_uid: str = ""
    acquisition: str | None = None  # None: not given
    label: str  # a Phase code, or the row's own group label (e.g. "AP") with `accepts`
    accepts: frozenset[str]  # Phase codes that count as right
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def contrast(self) -> bool:
        """A contrast-enhanced reference: no non-contrast phase is accepted."""
        return Phase.NC.value not in self.accepts

    @property
    def accepts_text(self) -> str:
        return format_accepts(self.accepts)

    def names(self) -> str:
        """How the row names its series, for messages."""
        if self.series_id:
            how = f"series_id {self.series_id}"
        elif self.path:
            how = f"path {self.path!r}"
        else:
            how = f"series_uid {self.series_uid}"
        return how + (f" acquisition {self.acquisition}" if self.acquisition is not None else "")


def parse_accepts(text: str) -> frozenset[str]:
    """`|`-separated phase words -> the set of Phase codes. Raises UnknownPhaseWord for a
    word phase_from_word does not know, ValueError when no word is given."""
    words = [w.strip() for w in text.split(ACCEPTS_SEPARATOR)]
    codes = frozenset(phase_from_word(w).value for w in words if w)
    if not codes:
        raise ValueError(f"accepts {text!r} names no phase")
    return codes


def format_accepts(accepts: Iterable[str]) -> str:
    return ACCEPTS_SEPARATOR.join(sorted(accepts, key=_phase_rank))


def _phase_rank(code: str) -> int:
    return PHASE_ORDER.index(code) if code in PHASE_ORDER else len(PHASE_ORDER)


def label_order(labels: Iterable[tuple[str, frozenset[str]]]) -> list[str]:
    """Distinct labels in phase order: a group sits at the mean position of what it accepts,
    so AP (EAP|LAP) comes between EAP and LAP and PVP_or_DP between PVP and DP."""
    seen: dict[str, frozenset[str]] = {}
    for label, accepts in labels:
        seen.setdefault(label, accepts)

    def key(label: str) -> tuple[float, int, str]:
        acc = seen[label]
        mean = sum(_phase_rank(a) for a in acc) / max(len(acc), 1)
        return (mean, len(acc), label)

    return sorted(seen, key=key)


def read_eval_labels(path: str | os.PathLike[str]) -> list[EvalLabel]:
    """Parse and check a labels CSV (see the module docstring). Raises LabelsError
    naming the file and line."""
    return parse_labels_file(path, _parse)


def _parse(f: Any, path: str) -> list[EvalLabel]:
    reader = labels_reader(
        f,
        path,
        ("series_id", "path", "file", "series_uid"),
        "'series_id', 'path' (or 'file') or 'series_uid'",
    )
    rows: list[EvalLabel] = []
    for raw in reader:
        i = reader.line_num  # physical line (quoted fields may span lines)
        rec = {k: (v or "").strip() for k, v in raw.items() if k is not None}
        if not any(rec.values()):
            continue
        where = f"{path}:{i}"
        file_path = rec.get("path") or rec.get("file", "")
        if not (rec.get("series_id") or file_path or rec.get("series_uid")):
            raise LabelsError(f"{where}: row names no series (series_id, path/file or series_uid)")
        label, accepts = _label_and_accepts(rec.get("phase", ""), rec.get("accepts", ""), where)
        acq = rec.get("acquisition", "")
        rows.append(
            EvalLabel(
                line=i,
                series_id=rec.get("series_id", ""),
                path=file_path,
                series_uid=rec.get("series_uid", ""),
                acquisition=acq if acq else None,
                label=label,
                accepts=accepts,
                extra={k: v for k, v in rec.items() if k not in ID_COLUMNS + LABEL_COLUMNS},
            )
        )
    return rows


def _label_and_accepts(word: str, accepts_text: str, where: str) -> tuple[str, frozenset[str]]:
    if not accepts_text:
        if not word:
            raise LabelsError(f"{where}: empty phase")
        try:
            code = phase_from_word(word).value
        except UnknownPhaseWord as e:
            raise LabelsError(
                f"{where}: {e} (a group label such as 'AP' needs an 'accepts' cell, e.g. EAP|LAP)"
            ) from None
        return code, frozenset({code})
    try:
        accepts = parse_accepts(accepts_text)
    except ValueError as e:  # UnknownPhaseWord is a ValueError
        raise LabelsError(f"{where}: accepts: {e}") from None
    if not word:
        return format_accepts(accepts), accepts
    try:
        code = phase_from_word(word).value
    except UnknownPhaseWord:
        return word, accepts  # a group label of the user's own ("AP", "PVP_or_DP")
    if code not in accepts:
        raise LabelsError(
            f"{where}: phase {word!r} ({code}) is not among its accepts {format_accepts(accepts)}"
        )
    # "arterial" with accepts EAP|LAP stays "arterial": showing its code (LAP) would claim
    # a late-arterial reference the row does not give.
    return (code if accepts == {code} else word), accepts


def search_folders(labels_csv: str | os.PathLike[str], data: Sequence[str]) -> list[str]:
    """Where a relative path of the CSV is looked up: the CSV's folder, then each DATA
    folder (a DATA file stands for its folder)."""
    out = [os.path.dirname(os.path.abspath(labels_csv))]
    for d in data:
        folder = d if os.path.isdir(d) else os.path.dirname(os.path.abspath(d))
        if folder not in out:
            out.append(folder)
    return out


def match_eval_labels(
    plans: Sequence[Plan], rows: Sequence[EvalLabel], folders: Sequence[str]
) -> tuple[dict[str, EvalLabel], list[EvalLabel]]:
    """Series id -> its label row, and the rows that matched no series. A row that matches
    several series, or two rows that label one series differently, raise LabelsError."""
    index = SeriesIndex(plans)
    out: dict[str, EvalLabel] = {}
    missing: list[EvalLabel] = []
    for row in rows:
        cands, how = index.find(
            series_id=row.series_id,
            path=row.path,
            bases=folders,
            series_uid=row.series_uid,
            acquisition=row.acquisition,
        )
        if not cands:
            missing.append(row)
            continue
        if len(cands) > 1:
            raise ambiguous_match(row.line, how, cands)
        sid = cands[0].series_id
        prev = out.get(sid)
        if prev is not None and (prev.label, prev.accepts) != (row.label, row.accepts):
            raise LabelsError(
                f"labels lines {prev.line} and {row.line} label series {sid} differently "
                f"({prev.label} accepting {prev.accepts_text}, {row.label} accepting "
                f"{row.accepts_text})"
            )
        out.setdefault(sid, row)
    return out, missing
