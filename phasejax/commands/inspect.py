"""`phasejax inspect PATH... [--json]`: what series are on disk, and what was skipped.

Walks the paths (files or folders, recursively), groups DICOM images into series
(one per SeriesInstanceUID and acquisition), loads NIfTI files, decodes every
series to HU and prints one table row per series, then every skipped file with
its reason. Exit status: 0 when at least one series loaded, 1 when none did, 2 on
bad usage (including a path that does not exist).

JSON document (`--json`, one document on stdout)::

    {
      "phasejax_version": str,
      "paths": [str],                      # as given
      "series": [                          # sorted by patient_id, source, series_id
        {
          "series_id": str,                # make_series_id(series_uid, acquisition)
          "patient_id": str,               # DICOM PatientID ("" for NIfTI)
          "study_uid": str,
          "series_uid": str,               # SeriesInstanceUID, or "nifti:<name>:<sha1[:16]>"
          "acquisition": str,              # "" unless the UID held several acquisitions
          "format": "dicom" | "nifti",
          "source": str,                   # folder (DICOM) or file (NIfTI)
          "num_files": int,
          "num_slices": int,
          "shape": [Z, H, W],
          "spacing": [z, y, x],            # mm; z from slice positions
          "kvp": str,                      # header KVP ("" if absent)
          "description": str,              # SeriesDescription
          "phase_hint": "NC"|"EAP"|"LAP"|"AP"|"PVP"|"DP"|"unknown",   # header only, not a label
          "phase_hint_evidence": [str],
          "seconds_after_injection": float | null,
          "hu_p1": float, "hu_p50": float, "hu_p99": float,   # HU percentiles
          "ordering": "normal"|"slice_location"|"instance_number"|"nifti",
          "problems": [str]                # "code" or "code:detail" (phasejax.data.dicom)
        }
      ],
      "skipped": [{"path": str, "reason": str, "detail": str}],   # reason: dicom.SKIP_REASONS
      "counts": {"files": int, "series": int, "skipped": int,
                 "skipped_by_reason": {reason: int}}
    }

No patient names or birth dates appear: identifiers are PatientID and UIDs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from phasejax.tables import text_table


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "inspect",
        help="list the CT series (DICOM/NIfTI) under paths, with HU statistics and problems",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or folders to walk")
    p.add_argument("--json", action="store_true", help="print one JSON document instead")
    p.add_argument("--workers", type=int, default=1, help="decoding processes (default 1)")
    p.add_argument(
        "--max-skipped", type=int, default=50, help="skipped files listed in the table (0 = all)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from phasejax.data.discover import inspect_paths

    missing = [p for p in args.paths if not os.path.exists(p)]
    if missing:
        print(f"phasejax inspect: no such file or folder: {', '.join(missing)}", file=sys.stderr)
        return 2
    if args.workers < 1:
        print("phasejax inspect: --workers must be >= 1", file=sys.stderr)
        return 2
    doc = inspect_paths(args.paths, workers=args.workers, progress=not args.quiet)
    if args.json:
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(format_table(doc, max_skipped=args.max_skipped))
    return 0 if doc["series"] else 1


def _fmt_spacing(sp: list[float]) -> str:
    return "x".join(f"{v:g}" for v in sp)


def format_table(doc: dict[str, Any], max_skipped: int = 50) -> str:
    cols = [
        ("series_id", lambda r: r["series_id"]),
        ("patient", lambda r: r["patient_id"] or "-"),
        ("acq", lambda r: r["acquisition"] or "-"),
        ("slices", lambda r: str(r["num_slices"])),
        ("shape", lambda r: "x".join(map(str, r["shape"]))),
        ("spacing_mm", lambda r: _fmt_spacing(r["spacing"])),
        ("kVp", lambda r: r["kvp"] or "-"),
        ("description", lambda r: (r["description"] or "-")[:32]),
        ("hint", lambda r: r["phase_hint"]),
        ("HU p1/p50/p99", lambda r: f"{r['hu_p1']:.0f}/{r['hu_p50']:.0f}/{r['hu_p99']:.0f}"),
        ("order", lambda r: r["ordering"]),
        ("problems", lambda r: ",".join(r["problems"]) or "-"),
    ]
    lines = text_table(cols, doc["series"])
    counts = doc["counts"]
    lines.append("")
    lines.append(
        f"{counts['series']} series from {counts['files']} files; {counts['skipped']} skipped"
        + (
            " (" + ", ".join(f"{k}: {v}" for k, v in counts["skipped_by_reason"].items()) + ")"
            if counts["skipped"]
            else ""
        )
    )
    skipped = doc["skipped"]
    shown = skipped if max_skipped <= 0 else skipped[:max_skipped]
    if shown:
        lines.append("skipped:")
        for s in shown:
            detail = f" ({s['detail']})" if s["detail"] else ""
            lines.append(f"  {s['path']}: {s['reason']}{detail}")
        if len(shown) < len(skipped):
            lines.append(f"  ... and {len(skipped) - len(shown)} more (--max-skipped 0 or --json)")
    return "\n".join(lines)
