"""Evaluation: metrics with intervals, paired statistics, results files, published numbers.

Host-side numpy/scipy only (no jax), so results can be re-analysed anywhere.
"""

from phasejax.eval.metrics import aggregate_slices, combine_two_step, summarize
from phasejax.eval.results import (
    ResultsError,
    load_results,
    make_results,
    paired_comparison,
    predictions_arrays,
    predictions_from_rows,
    split_results,
    write_results,
)
from phasejax.eval.stats import compare_paired, mcnemar_exact, wilson_interval

__all__ = [
    "ResultsError",
    "aggregate_slices",
    "combine_two_step",
    "compare_paired",
    "load_results",
    "make_results",
    "mcnemar_exact",
    "paired_comparison",
    "predictions_arrays",
    "predictions_from_rows",
    "split_results",
    "summarize",
    "wilson_interval",
    "write_results",
]
