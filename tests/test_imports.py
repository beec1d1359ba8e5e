"""Import hygiene: the modules that must stay light import no JAX, Flax, Optax or Grain.

Each group is imported in a fresh interpreter: summaries, figures, evaluation and the data
pipeline's worker-side modules run where JAX is absent or unwanted (plotting machines,
Grain worker processes, predict's decoding workers), and importing JAX costs seconds.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("jax", "jaxlib", "flax", "optax", "orbax", "grain")

GROUPS = {
    "ablation summaries": ["phasejax.ablate.summarize", "phasejax.plotting.ablation",
                           "phasejax.commands.ablate"],
    "evaluation": ["phasejax.plotting.evaluation", "phasejax.eval.labels", "phasejax.evaluate",
                   "phasejax.commands.evaluate"],
    "figures": ["phasejax.plotting.figures", "phasejax.eval", "phasejax.commands.figures"],
    "data pipeline": ["phasejax.data.pipeline", "phasejax.data.grain_io", "phasejax.data.augment",
                      "phasejax.data.windowing", "phasejax.data.cache", "phasejax.data.series"],
    "saliency shares": ["phasejax.plotting.saliency", "phasejax.saliency"],
    "predict workers": ["phasejax.predict.inputs", "phasejax.predict.confidence",
                        "phasejax.predict.schema", "phasejax.predict.driver",
                        "phasejax.predict.report_io", "phasejax.predict.text", "phasejax.qc",
                        "phasejax.infer", "phasejax.cohort", "phasejax.commands.predict"],
}  # fmt: skip


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_light_modules_do_not_import_jax(group: str) -> None:
    code = (
        f"import sys; import {', '.join(GROUPS[group])}; "
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, f"{group}: {proc.stdout}{proc.stderr}"
