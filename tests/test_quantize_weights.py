"""quantize_int8's per-channel weight rounding (_round_per_channel): the compiled pass gives numpy's
clip(round_half_away(w / s), -127, 127) for every layout's channel axis, ties included."""

import numpy as np
import pytest

from mcc.passes.quantize_int8 import _round_per_channel
from mcc.runtime.fixed_point import round_half_away


@pytest.mark.parametrize("shape, axis", [((8, 3, 3, 5), 0), ((1, 3, 3, 12), 3), ((7, 33), 0), ((4, 6, 2), 1)])
def test_weights_round_as_numpy_rounds_them(shape, axis):
    rng = np.random.default_rng(sum(shape))
    w = rng.standard_normal(shape).astype(np.float32)
    s = 2.0 ** -rng.integers(5, 8, shape[axis]).astype(np.float64)  # powers of two: exact halves below
    view = [1] * w.ndim
    view[axis] = -1
    ties = (rng.integers(-130, 130, shape) + 0.5) * s.reshape(view)  # ties away from zero, some past +-127
    w = np.where(rng.random(shape) < 0.3, ties.astype(np.float32), w)
    want = np.clip(round_half_away(w / s.reshape(view)), -127, 127).astype(np.int8)
    got = _round_per_channel(w, s, axis)
    assert got.dtype == np.int8 and np.array_equal(got, want)
    assert (np.abs(want) == 127).any() and (w / s.reshape(view) % 1 == 0.5).any()
