import numpy as np
import pytest

from phasejax.data.windowing import apply_window, num_channels


@pytest.mark.parametrize(
    ("name", "hu", "expected"),
    [
        # abdomen W400/L40: [-160, 240] -> [0, 1]
        ("abdomen", [40, 240, -160, 440, -1000, 140], [0.5, 1.0, 0.0, 1.0, 0.0, 0.75]),
        # liver W150/L80: [5, 155] -> [0, 1]
        ("liver", [80, 5, 155, 42.5, 300], [0.5, 0.0, 1.0, 0.25, 1.0]),
        # wide W1500/L300: [-450, 1050] -> [0, 1]
        ("wide", [300, -450, 1050, 675, -1000], [0.5, 0.0, 1.0, 0.75, 0.0]),
        # raw: the 12-bit CT range [-1024, 3071] -> [0, 1]
        ("raw", [-1024, 3071, 0, -2000, 4000], [0.0, 1.0, 1024 / 4095, 0.0, 1.0]),
    ],
)
def test_window_maps_known_hu(name, hu, expected):
    out = apply_window(np.array(hu, dtype=np.float32), name)
    assert out.dtype == np.float32 and out.shape == (len(hu), 1)
    np.testing.assert_allclose(out[:, 0], expected, atol=1e-6)


def test_multi_window_stacks_abdomen_liver_wide_as_channels():
    hu = np.array([[80.0, 300.0]])
    out = apply_window(hu, "multi")
    assert out.shape == (1, 2, 3) and num_channels("multi") == 3
    np.testing.assert_allclose(out[0, 0], [240 / 400, 0.5, 530 / 1500], atol=1e-6)
    # A 300 HU aorta saturates the abdomen and liver windows, not the wide one.
    np.testing.assert_allclose(out[0, 1], [1.0, 1.0, 0.5], atol=1e-6)


def test_unknown_window_is_named_in_the_error():
    with pytest.raises(ValueError, match="'bone'"):
        apply_window(np.zeros(3), "bone")
    assert num_channels("abdomen") == 1
