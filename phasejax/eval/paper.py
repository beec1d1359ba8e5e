"""The published numbers of Liu et al. 2025, as data, for side-by-side tables and figures.

Source: Liu et al., "A two-step automatic identification of contrast phases for abdominal CT
images based on residual networks", Insights into Imaging 2025, doi:10.1186/s13244-025-01995-7.
All results are per series (not per patient). Only the headline numbers quoted in
DESIGN.md are kept; add others (e.g. internal per-phase results) only from the paper's text or
tables, never read off a figure by eye.

Strategy keys follow phasejax's config: "one_step" = strategy A, "two_step" = strategy B.
"""

from __future__ import annotations

from dataclasses import dataclass

from phasejax.eval.stats import wilson_interval

CITATION = "Liu et al., Insights into Imaging 2025"
DOI = "10.1186/s13244-025-01995-7"


@dataclass(frozen=True)
class Count:
    """A published proportion as counts, with the percentage as printed in the paper."""

    k: int
    n: int
    printed_percent: float

    @property
    def value(self) -> float:
        return self.k / self.n

    def wilson(self) -> tuple[float, float]:
        return wilson_interval(self.k, self.n)

    def as_dict(self) -> dict:
        return {
            "value": self.value,
            "k": self.k,
            "n": self.n,
            "ci": list(self.wilson()),
            "printed_percent": self.printed_percent,
        }


# Internal test set: 288 series (96 exams x 3 phases).
INTERNAL_ACCURACY: dict[str, Count] = {
    "two_step": Count(283, 288, 98.3),
    "one_step": Count(264, 288, 91.7),
}
# The paper gives only a bound; the test is consistent with McNemar on the 288 paired series.
INTERNAL_P_VALUE_BOUND = 0.001
INTERNAL_P_VALUE_TEXT = "p < 0.001"

# External test set: 215 exams from 5 hospitals, 645 series, two-step method only.
EXTERNAL_EXAMS = 215
EXTERNAL_SITES = 5
EXTERNAL_ACCURACY: dict[str, Count] = {"two_step": Count(639, 645, 99.1)}
EXTERNAL_SENSITIVITY: dict[str, dict[str, Count]] = {
    "two_step": {
        "EAP": Count(58, 61, 95.1),
        "LAP": Count(153, 154, 99.4),
        "PVP": Count(214, 215, 99.5),
        "DP": Count(214, 215, 99.5),
    }
}


def published() -> dict:
    """Every published number as a JSON-ready dict (with Wilson intervals computed by us)."""
    return {
        "citation": CITATION,
        "doi": DOI,
        "internal": {
            "accuracy": {s: c.as_dict() for s, c in INTERNAL_ACCURACY.items()},
            "p_value_bound": INTERNAL_P_VALUE_BOUND,
            "p_value_text": INTERNAL_P_VALUE_TEXT,
        },
        "external": {
            "exams": EXTERNAL_EXAMS,
            "sites": EXTERNAL_SITES,
            "accuracy": {s: c.as_dict() for s, c in EXTERNAL_ACCURACY.items()},
            "sensitivity": {
                s: {ph: c.as_dict() for ph, c in by_phase.items()}
                for s, by_phase in EXTERNAL_SENSITIVITY.items()
            },
        },
    }
