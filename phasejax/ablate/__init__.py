"""Ablation suites: declared as data in phasejax/ablations/*.toml, run over seeds, summarised.

- phasejax.ablate.suites: load and validate suites and presets, expand suites x seeds into
  runs with stable ids (`DIR/<suite>/<value>/seed<k>/`, shared `DIR/_baseline/seed<k>/`).
- phasejax.ablate.runner: run a plan (skip finished, resume interrupted, progress), the
  perturbed evaluation of the robustness suite.
- phasejax.ablate.summarize: tables, paired tests and figures from the results files alone.

No module here imports jax at import time; training is injected (`train_fn=`).
"""
