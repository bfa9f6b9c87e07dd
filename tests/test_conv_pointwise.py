"""The 1x1 stride-1 unpadded convs (runtime/kernels/conv.py _pointwise: one base pointer, constant per-pixel
offsets) give the general register tiles' bits and the per-element reference's, in TFLite's order and XNNPACK's,
with every fused activation: random shapes whose pixel count is not a multiple of the tile's 8 (the last run moved
back), channels not a multiple of the lane count, groups, batches, and inputs with -0.0, infinities and NaNs."""

import numpy as np
import pytest

from mcc.runtime.kernels import conv
from mcc.runtime.kernels.activations import CLAMPS, clamp_bounds
from test_conv_fused_activation import corner_bias, same_bits, special
from test_conv_order_fuzz import NARROWER, passes_with_lanes, reference, run_conv

ACTIVATIONS = [None, *CLAMPS]


def random_pointwise(rng):
    """x NHWC, HWIO 1x1 weight, bias, groups: at least a tile's pixels, odd counts mostly."""
    groups = 1 if rng.random() < 0.7 else int(rng.integers(2, 4))
    group_c = int(rng.integers(1, 40))
    per_group = int(rng.choice([1, 7, conv.L, conv.L + 3, 2 * conv.L + 5, 96]))
    n = int(rng.integers(1, 3))
    while True:
        h, w = (int(v) for v in rng.integers(1, 14, 2))
        if n * h * w >= 8:
            break
    x = special(rng, rng.standard_normal((n, h, w, groups * group_c)).astype(np.float32) * 3)
    taps = rng.standard_normal((1, 1, group_c, groups * per_group)).astype(np.float32)
    taps[..., rng.random(groups * per_group) < 0.3] = rng.choice([0.0, -0.0])  # outputs of the bias alone
    bias = corner_bias(rng, groups * per_group) if rng.random() < 0.5 else \
        rng.standard_normal(groups * per_group).astype(np.float32)
    return x, taps, bias, groups


def same_but_nan_payloads(a, b):
    """Bit for bit, except that the scalar reference may give another NaN than the vector code (x86 propagates
    the first operand's NaN, and LLVM may swap the operands of a sum), as the general tiles do too."""
    nan = np.isnan(a)
    return np.array_equal(nan, np.isnan(b)) and same_bits(np.where(nan, 0, a), np.where(nan, 0, b))


@pytest.mark.parametrize("seed", range(40))
def test_pointwise_equals_the_general_tiles(seed):
    check(seed)


@pytest.mark.slow
@pytest.mark.parametrize("cpu, features, lanes", NARROWER)
def test_pointwise_with_narrower_vectors(cpu, features, lanes):
    """The same checks compiled for 8- and 4-lane vectors (AVX2, SSE), as test_conv_order_fuzz's lanes tests; there
    LLVM swaps the operands of some rounded sums (w * x + total) in one kernel and not the other, and x86 keeps the
    first operand's NaN, so where two NaNs meet the payloads may differ (as against the scalar reference)."""
    passes_with_lanes(cpu, features, lanes, "test_conv_pointwise",
                      "[m.check(seed, payloads=False) for seed in range(60)]")


def check(seed, payloads=True):
    """_pointwise against the general tiles (every bit, or with `payloads` False any NaN for a NaN) with each
    activation, against the reference, and through the runtime."""
    rng = np.random.default_rng(seed)
    x, taps, bias, groups = random_pointwise(rng)
    n, h, w, c = x.shape
    group_c, out_c = taps.shape[2], taps.shape[3]
    assert conv.takes_pointwise(False, 1, 1, 1, 1, [0, 0, 0, 0], x.shape)  # the runtime's choice for these convs
    lanes = conv._tile_channels(False)
    packed_w, packed_b = conv._tile_pack(taps, groups, lanes), conv._tile_bias(bias, groups, lanes)
    for fused in (False, True):
        want = reference(x, taps, bias, groups, (1, 1), (0, 0), (1, 1), (h, w), fused, False)
        for activation in ACTIVATIONS:
            clamp = clamp_bounds(activation)
            got = conv._POINTWISE[fused](x, packed_w, packed_b, groups, group_c, out_c // groups, *clamp)
            tiles = conv._TILES[fused, False](x, packed_w, packed_b, groups, group_c, out_c // groups, 1, 1, False,
                                              1, 1, 0, 0, 1, 1, h, w, *clamp)
            same = same_bits if payloads else same_but_nan_payloads
            assert same(got, tiles), (seed, fused, activation, x.shape, taps.shape, groups)
            if activation is None:
                bare = got
                assert same_but_nan_payloads(got, want), (seed, fused, x.shape, taps.shape, groups)
        # through the runtime (a conv2d node, no activation): the same bits, NaN payloads too
        attrs = {"stride": [1, 1], "padding": [0, 0, 0, 0], "dilation": [1, 1], "groups": groups}
        assert same_bits(run_conv("conv2d", x, taps, bias, attrs, "litert-xnnpack" if fused else "litert-ref"),
                         bare), (seed, fused)


def test_pointwise_takes_only_its_convs():
    assert conv.takes_pointwise(False, 1, 1, 1, 1, [0, 0, 0, 0], (1, 2, 4, 3))  # 8 pixels: one whole tile
    assert not conv.takes_pointwise(False, 1, 1, 1, 1, [0, 0, 0, 0], (1, 1, 7, 3))  # under a tile's pixels
    assert not conv.takes_pointwise(False, 1, 1, 2, 2, [0, 0, 0, 0], (1, 8, 8, 3))  # strided
    assert not conv.takes_pointwise(False, 1, 1, 1, 1, [0, 1, 0, 0], (1, 8, 8, 3))  # padded
    assert not conv.takes_pointwise(False, 3, 3, 1, 1, [0, 0, 0, 0], (1, 8, 8, 3))
    assert not conv.takes_pointwise(True, 1, 1, 1, 1, [0, 0, 0, 0], (1, 8, 8, 3))  # depthwise


def test_pointwise_variants_have_their_own_names():
    names = {f.py_func.__qualname__ for f in [*conv._TILES.values(), *conv._POINTWISE.values()]}
    assert len(names) == len(conv._TILES) + len(conv._POINTWISE)
