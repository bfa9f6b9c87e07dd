"""The 3x3 depthwise row kernel (runtime/kernels/conv.py _depthwise3x3) against the spread tiles it replaced for
those convs and against the per-element reference sequence of tests/test_conv_order_fuzz.py, bit for bit, in
TFLite's order and XNNPACK's: strides 1 and 2, asymmetric padding (inputs smaller than the window too), channel
counts off the vector width, batches, signed zeros and infinities (a skipped padding tap shows as a sign or a NaN).
Each case also checks that the row kernel is the one the runtime takes."""

import numpy as np
import pytest

from mcc.runtime.kernels import conv
from test_conv_order_fuzz import reference, run_conv


def random_depthwise(rng):
    stride = [int(s) for s in rng.integers(1, 3, 2)]
    pad = [int(p) for p in rng.integers(0, 3, 4)]
    h, w = (int(v) for v in rng.integers(1, 12, 2))
    h, w = max(h, 3 - pad[0] - pad[2]), max(w, 3 - pad[1] - pad[3])  # at least one window
    channels = int(rng.choice([1, 5, 16, 32, 37, 96, 144]))
    x = rng.standard_normal((int(rng.integers(1, 3)), h, w, channels)).astype(np.float32) * 3
    taps = rng.standard_normal((3, 3, 1, channels)).astype(np.float32)
    bias = rng.standard_normal(channels).astype(np.float32)
    if rng.random() < 0.3:
        x[rng.random(x.shape) < 0.5] = -0.0
        taps[rng.random(taps.shape) < 0.5] = 0.0
        bias[rng.random(bias.shape) < 0.5] = 0.0
    if rng.random() < 0.1:
        x[rng.random(x.shape) < 0.05] = np.inf
    return x, taps, bias, stride, pad


@pytest.mark.parametrize("seed", range(40))
def test_rows_equal_the_tiles_and_the_reference(seed):
    rng = np.random.default_rng(seed)
    x, taps, bias, stride, (top, left, bottom, right) = random_depthwise(rng)
    out_h = (x.shape[1] + top + bottom - 3) // stride[0] + 1
    out_w = (x.shape[2] + left + right - 3) // stride[1] + 1
    channels = x.shape[3]
    attrs = {"stride": stride, "padding": [top, left, bottom, right], "dilation": [1, 1], "multiplier": 1}
    for fused in (False, True):
        assert conv.takes_rows(True, 3, 3, 1, 1, fused, fused)  # the runtime's choice for these convs
        got = run_conv("depthwise_conv2d", x, taps, bias, attrs, "litert-xnnpack" if fused else "litert-ref")
        lanes = conv._tile_channels(True)
        tiles = conv._TILES[fused, True](x, conv._tile_pack(taps, 1, lanes), conv._tile_bias(bias, 1, lanes), 1, 1,
                                         channels, 3, 3, fused, *stride, top, left, 1, 1, out_h, out_w)
        want = reference(x, taps, bias, channels, tuple(stride), (top, left), (1, 1), (out_h, out_w), fused, fused)
        for other in (tiles, want):
            assert got.shape == other.shape and np.array_equal(got.view(np.int32), other.view(np.int32)), \
                (seed, fused, x.shape, stride, top, left, bottom, right)


def test_other_depthwise_convs_keep_the_tiles():
    assert not conv.takes_rows(True, 3, 3, 2, 2, False, False)  # dilated
    assert not conv.takes_rows(True, 5, 5, 1, 1, False, False)
    assert not conv.takes_rows(False, 3, 3, 1, 1, False, False)  # a multiplier or a dense conv
