"""`phasejax qc REPORT`: header/image contradictions and inconsistent studies in a predict report.

REPORT is the CSV or JSON-lines file written by `phasejax predict --out` (the format is
detected from the content). Lists the series whose header contradicts the image (a
description that says "arterial" on a portal venous image, an empty contrast agent on an
enhanced series) and the studies whose phases are inconsistent (two PVP and no arterial;
a later phase acquired before an earlier one). The checks are described in phasejax.qc.
Exit status: 0 when the report was read (findings or not), 1 when it cannot be read.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "qc",
        help="quality control of a predict report: header vs image, phase order per study",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    p.add_argument("report", metavar="REPORT", help="CSV or JSON lines from `phasejax predict`")
    p.add_argument("--json", action="store_true", help="print the findings as JSON lines")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from phasejax.predict.report_io import ReportError, read_report
    from phasejax.qc import check_rows, format_findings

    try:
        rows = read_report(args.report)
    except ReportError as e:
        print(f"phasejax qc: {e}", file=sys.stderr)
        return 1
    findings = check_rows(rows)
    if args.json:
        for f in findings:
            print(json.dumps({**asdict(f), "series_ids": list(f.series_ids)}))
    else:
        print(format_findings(findings, rows))
    return 0
