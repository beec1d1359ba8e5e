"""Figures (matplotlib object API, no jax): paper figures from results files."""
