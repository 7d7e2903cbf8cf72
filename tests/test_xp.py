import numpy as np

from models.xp import array_module, smoothstep, to_numpy


def test_smoothstep_clamps_and_is_flat_at_both_edges():
    x = np.linspace(-1.0, 3.0, 401)
    y = smoothstep(x, 0.5, 2.0)
    assert y[x <= 0.5].max() == 0.0 and y[x >= 2.0].min() == 1.0
    assert np.all(np.diff(y) >= 0.0)
    assert smoothstep(1.25, 0.5, 2.0) == 0.5  # symmetric about the midpoint
    h = 1e-4
    for edge in (0.5, 2.0):  # no slope jump where the ramp meets 0 or 1
        slope = (smoothstep(edge + h, 0.5, 2.0) - smoothstep(edge - h, 0.5, 2.0)) / (2 * h)
        assert abs(slope) < 1e-3
    assert (smoothstep(x, 0.5, 2.0) - 0.5).max() <= 0.5


def test_smoothstep_with_reversed_edges_falls():
    y = smoothstep(np.array([0.0, 0.25, 1.0]), 1.0, 0.0)
    np.testing.assert_allclose(y, [1.0, 0.84375, 0.0])


def test_host_arrays_stay_numpy():
    a = np.zeros(3)
    assert array_module(a) is np and to_numpy(a) is a
