"""Subcommands of the `phasejax` console script (see phasejax.cli)."""
