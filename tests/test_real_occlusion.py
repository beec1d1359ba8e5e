"""experiments/real_occlusion.py finds the slice and the patch a decision rests on."""

from __future__ import annotations

import numpy as np
from experiment_script import load_script


def _module():
    return load_script("experiments/real_occlusion.py")


class _OneCueClassifier:
    """Class 1 ("DP") exactly as bright as one 8 x 8 spot on slice 2 is."""

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        cue = images[:, 2, 40:48, 40:48, 0].mean(axis=(1, 2))
        return np.stack([1.0 - cue, cue], axis=1)

    def classify_all(self, items) -> np.ndarray:
        return np.concatenate([self.probabilities(a[None]) for a in items])


def test_the_one_slice_and_the_patch_that_decide_are_found():
    image = np.zeros((5, 96, 96, 3), np.float32)
    image[2, 40:48, 40:48, :] = 1.0
    r = _module().occlusion(_OneCueClassifier(), image, np.zeros(3, np.float32))
    assert r["predicted"] == 1 and r["base"][1] == 1.0
    np.testing.assert_allclose(r["slice_drop"], [0, 0, 1, 0, 0])
    y, x = np.unravel_index(np.argmax(r["heat"]), r["heat"].shape)
    assert 32 <= y < 56 and 32 <= x < 56  # the patches that cover the spot
    assert r["heat"][0:24, 0:24].max() == 0.0  # nothing elsewhere matters
    assert r["top_patch_share"] > 0.1
