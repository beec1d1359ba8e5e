"""Test session setup.

Eight fake CPU devices are configured before any JAX backend starts, so every
data-parallel test runs the same sharded program it would run on 8 accelerators.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("MPLBACKEND", "Agg")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)

REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The folder of real CT shipped beside the checkout; tests using it skip when absent."""
    if not REAL_DATA.is_dir():
        pytest.skip(f"real CT folder not found at {REAL_DATA}")
    return REAL_DATA
