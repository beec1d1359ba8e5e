"""phasejax.infer: the one way to run a model over many series (8 fake CPU devices)."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

from phasejax import parallel
from phasejax.config import Config, DataConfig, ModelConfig
from phasejax.infer import Classifier, Ensemble, device_multiple, probabilities_from_log
from phasejax.models import build_classifier


@pytest.fixture(scope="module")
def model() -> nnx.Module:
    cfg = Config(
        data=DataConfig(image_size=32, num_slices=3, window="abdomen"),
        model=ModelConfig(depth="tiny", width=8, strategy="two_step"),
    )
    m = build_classifier(cfg, rngs=nnx.Rngs(0))
    m.eval()
    return m


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 3, 32, 32, 1)).astype(np.float32)


def test_device_multiple_rounds_up_to_whole_rows_per_device() -> None:
    assert [device_multiple(n, 8) for n in (0, 1, 8, 9, 16, 17)] == [8, 8, 8, 16, 16, 24]
    assert [device_multiple(n, 1) for n in (0, 1, 5)] == [1, 1, 5]
    with pytest.raises(ValueError, match="device count"):
        device_multiple(4, 0)


def test_probabilities_from_log_renormalises_in_float64() -> None:
    lp = np.log(np.asarray([[0.2, 0.3, 0.5], [0.7, 0.2, 0.1]], np.float32))
    p = probabilities_from_log(lp)
    assert p.dtype == np.float64
    np.testing.assert_array_equal(p.sum(axis=1), [1.0, 1.0])
    np.testing.assert_allclose(p, [[0.2, 0.3, 0.5], [0.7, 0.2, 0.1]], rtol=1e-6)


def test_classify_pads_batches_and_matches_the_model_in_item_order(model) -> None:
    assert jax.device_count() == 8
    clf = Classifier.for_model(model, batch_size=3)
    assert (clf.batch_size, clf.local_batch_size) == (8, 8)  # rounded up to the 8 devices
    images = _images(11)
    expected = probabilities_from_log(np.asarray(model(images).log_probs))
    items = [f"s{i}" for i in range(11)]
    got = list(clf.classify(items, transform=lambda s: images[int(s[1:])]))
    assert [s for s, _ in got] == items
    np.testing.assert_allclose(np.stack([p for _, p in got]), expected, atol=1e-5)
    assert clf.batches == 2  # 8 + 3 (padded to 8): one shape, one compilation
    # on one device the same model gives the same numbers (the step is one global program)
    one = Classifier.for_model(model, batch_size=3, mesh=parallel.make_mesh(jax.devices()[:1]))
    assert one.batch_size == 3
    np.testing.assert_allclose(one.classify_all(images), expected, atol=1e-5)
    # the model object is not touched: still usable as it was built
    np.testing.assert_allclose(
        probabilities_from_log(np.asarray(model(images).log_probs)), expected, atol=1e-6
    )


def test_classify_draws_items_lazily_one_batch_at_a_time(model) -> None:
    clf = Classifier.for_model(model, batch_size=8)
    drawn: list[int] = []

    def items():
        for i in range(20):
            drawn.append(i)
            yield i

    images = _images(20, seed=1)
    out = clf.classify(items(), transform=lambda i: images[i])
    first = next(out)
    assert first[0] == 0 and len(drawn) == 8  # the first batch, not the whole input
    rest = list(out)
    assert len(drawn) == 20 and [i for i, _ in rest] == list(range(1, 20))


def test_batch_limits_and_empty_input(model) -> None:
    clf = Classifier.for_model(model, batch_size=8)
    with pytest.raises(ValueError, match="9 images for a batch of 8"):
        clf.log_probs(_images(9))
    assert clf.classify_all([]).shape == (0, 4)
    assert clf.log_probs_all(_images(2)).shape == (8, 4)  # padding rows included


def test_ensemble_is_the_mean_of_its_members_probabilities(model) -> None:
    cfg = Config(
        data=DataConfig(image_size=32, num_slices=3, window="abdomen"),
        model=ModelConfig(depth="tiny", width=8, strategy="two_step"),
    )
    other = build_classifier(cfg, rngs=nnx.Rngs(1))
    other.eval()
    a, b = Classifier.for_model(model, batch_size=8), Classifier.for_model(other, batch_size=8)
    images = _images(5, seed=3)
    pa, pb = a.probabilities(images), b.probabilities(images)
    assert np.abs(pa - pb).max() > 1e-3  # two different networks
    ens = Ensemble([a, b])
    np.testing.assert_allclose(ens.probabilities(images), (pa + pb) / 2, atol=1e-12)
    got = ens.classify_all(list(images))  # through the batched path, item order kept
    np.testing.assert_allclose(got, (pa + pb) / 2, atol=1e-12)
    with pytest.raises(ValueError, match="batch size"):
        Ensemble([a, Classifier.for_model(other, batch_size=16)])
    with pytest.raises(ValueError, match="at least one"):
        Ensemble([])
