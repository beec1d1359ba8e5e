"""experiments/real_tta.py: the slab moved by whole cache slices, and the log score."""

from __future__ import annotations

import math

import numpy as np
import pytest
from experiment_script import load_script

from phasejax.config import load_config
from phasejax.data.pipeline import preprocess
from phasejax.data.prepare import CachedVolume


def _module():
    return load_script("experiments/real_tta.py")


class _MeanHuClassifier:
    """Class 1's probability is the mean of the input (the abdomen window of a volume whose
    HU rise with z), so a shifted slab shows in the output."""

    def classify_all(self, items) -> np.ndarray:
        m = np.array([float(np.mean(a[..., 0])) for a in items])
        return np.stack([1.0 - m, m], axis=1)


def test_shifts_move_the_slab_and_shift_zero_is_the_predict_input():
    # the whole field: this volume is uniform in-plane, a crop would mix in the air around it
    cfg = load_config("quick", ["data.image_size=32", "data.window=abdomen", "data.crop_mm=0"]).data
    z = np.arange(40, dtype=np.int16)[:, None, None]
    volume = np.broadcast_to(-160 + 10 * z, (40, 32, 32)).astype(np.int16)  # HU rise with z
    cached = CachedVolume(
        volume=volume, spacing_z=5.0, pixel_mm=1.0, z_lo=10, z_hi=30, z_method="lung+kidney"
    )
    probs = _module().shifted_probabilities(_MeanHuClassifier(), cached, cfg, [-1, 0, 1])
    plain = preprocess(volume, 10, 30, cfg, pixel_mm=1.0)
    assert probs[1, 1] == pytest.approx(float(np.mean(plain[..., 0])))
    # one cache slice up is 10 HU brighter, in the 400-HU abdomen window 0.025
    np.testing.assert_allclose(np.diff(probs[:, 1]), [0.025, 0.025], atol=1e-6)


def test_score_counts_every_accepted_phase_and_floors_the_log_score():
    score = _module().score
    classes = ["NC", "EAP", "LAP", "PVP", "DP"]
    right, nll = score(np.array([0.0, 0.1, 0.2, 0.3, 0.4]), classes, frozenset({"PVP", "DP"}))
    assert right and nll == pytest.approx(-math.log(0.7))
    right, nll = score(np.array([1.0, 0.0, 0.0, 0.0, 0.0]), classes, frozenset({"DP"}))
    assert not right and nll == pytest.approx(-math.log(1e-3))
