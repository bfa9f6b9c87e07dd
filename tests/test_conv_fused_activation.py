"""The float conv kernels clamp their fused activation in the store (activations.clamp_value, conv.py _lanes_finish)
instead of a numpy pass after them: bit for bit activations.fused_activation, which is np.maximum(y, 0) for relu
(-0.0 becomes +0.0) and np.clip(y, lo, hi) for relu6 / relu_n1_to_1 (-0.0 stays), NaN payloads kept. Checked on
the corner values themselves, on each kernel called directly (register tiles dense and depthwise, 3x3 depthwise
rows, the multiplier loop) and through the runtime on random convs whose outputs hit NaN, +-0.0, +-inf and the
bounds exactly, in TFLite's order and XNNPACK's."""

import numba
import numpy as np
import pytest

from mcc.runtime.kernels import conv
from mcc.runtime.kernels.activations import CLAMPS, clamp_bounds, clamp_value, fused_activation
from test_conv_order_fuzz import random_case, run_conv

ACTIVATIONS = [None, *CLAMPS]
NANS = np.array([0x7FC00000, 0xFFC00000, 0x7FC00123, 0xFFC00456, 0x7F800001], np.uint32).view(np.float32)


def corner_values():
    """NaNs (quiet, negative, with payloads, signalling), signed zeros and infinities, each bound exactly and its
    float32 neighbours, subnormals and ordinary values."""
    bounds = np.array([-1, 0, 1, 6], np.float32)
    near = np.concatenate([np.nextafter(bounds, np.float32(np.inf)), np.nextafter(bounds, np.float32(-np.inf))])
    tiny = np.array([1e-45, -1e-45, 1e-38, -1e-38], np.float32)
    plain = np.array([-0.0, 0.0, np.inf, -np.inf, -7.5, -0.5, 0.5, 3.0, 7.0, 1e30, -1e30], np.float32)
    return np.concatenate([NANS, bounds, near, tiny, plain])


@numba.njit(cache=True)
def _clamp_all(values, lo, hi, at_lo):
    out = np.empty_like(values)
    for i in range(values.size):  # a loop LLVM vectorises: the select form the kernels' row loops take
        out[i] = clamp_value(values[i], lo, hi, at_lo)
    return out


def same_bits(a, b):
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_clamp_is_fused_activation_on_the_corner_values(activation):
    values = corner_values()
    values = np.concatenate([values, values[::-1], values[1:]])  # vector bodies and a scalar tail
    want = fused_activation(values.copy(), activation)
    lo, hi, at_lo = clamp_bounds(activation)
    assert same_bits(_clamp_all(values, lo, hi, at_lo), want)
    for i in range(values.size):  # one value alone: the scalar loop
        assert same_bits(_clamp_all(values[i:i + 1], lo, hi, at_lo), want[i:i + 1]), values[i:i + 1].view(np.uint32)
    if activation == "relu":  # the two numpy semantics the clamp keeps apart really differ here
        assert not np.signbit(want[values == 0]).any()
    if activation == "relu6":
        assert np.signbit(want[values == 0]).any()


def special(rng, a):
    """a with some signed zeros, infinities and NaNs (payloads too) sprinkled in."""
    a = a.copy()
    pick = rng.random(a.shape)
    a[pick < 0.05] = -0.0
    a[(pick >= 0.05) & (pick < 0.08)] = rng.choice([np.inf, -np.inf])
    a[(pick >= 0.08) & (pick < 0.09)] = rng.choice(NANS)
    return a


def corner_bias(rng, channels):
    """Biases that, with an all-zero filter column, make outputs land on the bounds exactly (and +-0, +-inf)."""
    return rng.choice(np.array([-1, 0, 1, 6, -0.0, np.inf, -np.inf, 2.5, -2.5, 7], np.float32), channels)


def clamped(kernel, *args, activation):
    """The kernel's output with its clamp for `activation`, and with none."""
    return kernel(*args, *clamp_bounds(activation)), kernel(*args, *clamp_bounds(None))


@pytest.mark.parametrize("seed", range(12))
def test_each_kernel_clamps_as_fused_activation(seed):
    rng = np.random.default_rng(seed)
    activation = ACTIVATIONS[seed % len(ACTIVATIONS)]
    n, h, w, c = 2, int(rng.integers(3, 9)), int(rng.integers(3, 9)), int(rng.choice([5, 16, 37]))
    x = special(rng, rng.standard_normal((n, h, w, c)).astype(np.float32) * 3)
    stride = [int(s) for s in rng.integers(1, 3, 2)]
    top, left, bottom, right = (int(p) for p in rng.integers(0, 3, 4))
    for fused in (False, True):
        # dense register tiles, a 1x1 and a 3x3
        for k in (1, 3):
            out_c = int(rng.choice([7, 16, 40]))
            taps = rng.standard_normal((k, k, c, out_c)).astype(np.float32)
            taps[..., rng.random(out_c) < 0.4] = rng.choice([0.0, -0.0])  # these channels give the bias alone
            bias = corner_bias(rng, out_c)
            out_h, out_w = (h + top + bottom - k) // stride[0] + 1, (w + left + right - k) // stride[1] + 1
            lanes = conv._tile_channels(False)
            args = (x, conv._tile_pack(taps, 1, lanes), conv._tile_bias(bias, 1, lanes), 1, c, out_c, k, k, False,
                    *stride, top, left, 1, 1, out_h, out_w)
            got, bare = clamped(conv._TILES[fused, False], *args, activation=activation)
            assert same_bits(got, fused_activation(bare, activation)), (seed, fused, k)
        # depthwise: spread tiles (5x5), rows (3x3), the multiplier loop
        out_h, out_w = (h + top + bottom - 3) // stride[0] + 1, (w + left + right - 3) // stride[1] + 1
        taps = rng.standard_normal((3, 3, 1, c)).astype(np.float32)
        taps[..., rng.random(c) < 0.4] = 0.0
        bias = corner_bias(rng, c)
        got, bare = clamped(conv._depthwise3x3, x, taps.reshape(3, 3, c), bias, fused, *stride, top, left, out_h,
                            out_w, activation=activation)
        assert same_bits(got, fused_activation(bare, activation)), (seed, fused, "rows")
        big = rng.standard_normal((5, 5, 1, c)).astype(np.float32)
        lanes = conv._tile_channels(True)
        o5 = ((h + top + bottom - 5) // stride[0] + 1, (w + left + right - 5) // stride[1] + 1)
        if min(o5) > 0:
            args = (x, conv._tile_pack(big, 1, lanes), conv._tile_bias(bias, 1, lanes), 1, 1, c, 5, 5, fused,
                    *stride, top, left, 1, 1, *o5)
            got, bare = clamped(conv._TILES[fused, True], *args, activation=activation)
            assert same_bits(got, fused_activation(bare, activation)), (seed, fused, "spread")
        twice = rng.standard_normal((3, 3, 1, 2 * c)).astype(np.float32)
        twice[..., rng.random(2 * c) < 0.4] = -0.0
        bias2 = corner_bias(rng, 2 * c)
        got, bare = clamped(conv._conv_loop, x, twice, bias2, fused, fused, False, *stride, top, left, 1, 1, out_h,
                            out_w, activation=activation)
        assert same_bits(got, fused_activation(bare, activation)), (seed, fused, "multiplier")


@pytest.mark.parametrize("seed", range(40))
def test_runtime_conv_with_activation_is_the_bare_conv_clamped(seed):
    """Through the runtime (the kernel the runtime picks for each random conv), both rule sets' orders."""
    rng = np.random.default_rng(1000 + seed)
    op, x, w, bias, groups, attrs = random_case(rng)
    x = special(rng, x)
    out_c = w.shape[3]
    w[..., rng.random(out_c) < 0.3] = rng.choice([0.0, -0.0])
    if bias is not None and rng.random() < 0.7:
        bias = corner_bias(rng, out_c)
    activation = ACTIVATIONS[seed % len(ACTIVATIONS)]
    for rules in ("litert-ref", "litert-xnnpack"):
        bare = run_conv(op, x, w, bias, {**attrs, "activation": None}, rules)
        got = run_conv(op, x, w, bias, {**attrs, "activation": activation}, rules)
        assert same_bits(got, fused_activation(bare, activation)), (seed, op, attrs, activation, rules)
