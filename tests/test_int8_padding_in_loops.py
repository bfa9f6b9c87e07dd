"""The int8 / 16x8 depthwise conv and the conv's im2col read their padding as x_zp (runtime/kernels/int8_depthwise.py
_fill_row's padded rows, int8_gemm.py _im2col) instead of padding a copy of the input: against the same kernels on
an explicitly padded copy (every window inside, so the im2col takes its one-run copy everywhere) and against integer
sums in numpy put through the output stage of each compiled rounding, for random kernels (3x3 ones on the vector
path), strides, dilations, asymmetric padding (windows wider than the input too), channel counts that are not
a multiple of the vector width, channel multipliers, groups and both input types. The kernels against LiteRT:
tests/test_int8_kernels.py."""

import numpy as np
import pytest

from mcc.runtime.kernels import int8_depthwise, int8_gemm
from mcc.runtime.kernels.int8_output import ROW_ROUNDINGS, RowRequant, requantize_block
from mcc.runtime.kernels.layout import pad_constant
from mcc.runtime.rules import Rule


def random_case(rng):
    kh, kw = (3, 3) if rng.random() < 0.6 else tuple(int(k) for k in rng.integers(1, 6, 2))
    stride, dil = [int(s) for s in rng.integers(1, 3, 2)], [int(d) for d in rng.integers(1, 3, 2)]
    if rng.random() < 0.5:
        dil = [1, 1]
    pad = [int(p) for p in rng.integers(0, 4, 4)]
    h = max(int(rng.integers(1, 12)), dil[0] * (kh - 1) + 1 - pad[0] - pad[2])
    w = max(int(rng.integers(1, 12)), dil[1] * (kw - 1) + 1 - pad[1] - pad[3])
    dtype = "int8" if rng.random() < 0.8 else "int16"
    channels, multiplier = int(rng.choice([1, 3, 16, 37, 64])), int(rng.choice([1, 1, 2]))
    limit = 128 if dtype == "int8" else 1 << 15
    x = rng.integers(-limit, limit, (int(rng.integers(1, 3)), h, w, channels)).astype(dtype)
    zero_point = int(rng.integers(-128, 128)) if dtype == "int8" else 0
    taps = rng.integers(-127, 128, (channels * multiplier, kh, kw, 1)).astype(np.int8)
    return x, zero_point, taps, stride, dil, pad


def run(x, zero_point, taps, stride, dil, pad, rounding="double_rounding"):
    kh, kw = taps.shape[1:3]
    out_h = (x.shape[1] + pad[0] + pad[2] - dil[0] * (kh - 1) - 1) // stride[0] + 1
    out_w = (x.shape[2] + pad[1] + pad[3] - dil[1] * (kw - 1) - 1) // stride[1] + 1
    packed = int8_depthwise.pack_depthwise(taps, str(x.dtype))
    out_c = taps.shape[0]
    bias = np.random.default_rng(out_c).integers(-5000, 5000, out_c)
    requant = RowRequant(np.full(out_c, 2.0 ** -9), Rule("tflite", rounding), 5, (-128, 127))
    return int8_depthwise.depthwise(x, zero_point, packed, stride, dil, pad, out_h, out_w, bias, requant, "int8"), \
        (packed, bias, requant, out_h, out_w)


@pytest.mark.parametrize("seed", range(80))
def test_padding_in_the_loop_equals_a_padded_copy_and_integer_sums(seed):
    rng = np.random.default_rng(seed)
    x, zero_point, taps, stride, dil, pad = random_case(rng)
    got, (packed, bias, requant, out_h, out_w) = run(x, zero_point, taps, stride, dil, pad,
                                                     ROW_ROUNDINGS[seed % len(ROW_ROUNDINGS)])
    top, left, bottom, right = pad
    copy = pad_constant(x, ((0, 0), (top, bottom), (left, right), (0, 0)), zero_point)
    kh, kw = taps.shape[1:3]
    inside = int8_depthwise.depthwise(copy, zero_point, packed, stride, dil, [0, 0, 0, 0], out_h, out_w, bias, requant,
                                 "int8")
    np.testing.assert_array_equal(got, inside)
    # integer sums: w * (x - zp) over each window of the padded copy, the padding counting 0
    centred = np.repeat(copy.astype(np.int64) - zero_point, taps.shape[0] // x.shape[3], axis=3)
    acc = np.zeros((x.shape[0], out_h, out_w, taps.shape[0]), np.int64)
    for ky in range(kh):
        for kx in range(kw):
            window = centred[:, ky * dil[0]::stride[0], kx * dil[1]::stride[1]][:, :out_h, :out_w]
            acc += window * taps[:, ky, kx, 0].astype(np.int64)
    want = np.empty(acc.shape, np.int8)
    requantize_block(acc.reshape(-1, acc.shape[3]), np.inf, bias, *requant.args, want.reshape(-1, acc.shape[3]))
    np.testing.assert_array_equal(got, want)


def window_sums(centred, w_ohwi, groups, stride, dil, out_h, out_w):
    """sum(w * centred) over each window, per group, in int64."""
    out_c, kh, kw, group_c = w_ohwi.shape
    per_group = out_c // groups
    acc = np.zeros((centred.shape[0], out_h, out_w, out_c), np.int64)
    for ky in range(kh):
        for kx in range(kw):
            window = centred[:, ky * dil[0]::stride[0], kx * dil[1]::stride[1]][:, :out_h, :out_w]
            for g in range(groups):
                part = window[..., g * group_c:(g + 1) * group_c]
                taps = w_ohwi[g * per_group:(g + 1) * per_group, ky, kx].astype(np.int64)
                acc[..., g * per_group:(g + 1) * per_group] += part @ taps.T
    return acc


@pytest.mark.parametrize("seed", range(60))
def test_im2col_padding_equals_a_padded_copy_and_integer_sums(seed):
    rng = np.random.default_rng(1000 + seed)
    x, zero_point, _, stride, dil, (top, left, bottom, right) = random_case(rng)
    kh, kw = (int(k) for k in rng.integers(1, 5, 2))
    h = max(x.shape[1], dil[0] * (kh - 1) + 1 - top - bottom)
    w = max(x.shape[2], dil[1] * (kw - 1) + 1 - left - right)
    x = np.resize(x, (x.shape[0], h, w, x.shape[3]))  # at least one window
    groups = int(rng.choice([g for g in (1, 1, 2, 4) if x.shape[3] % g == 0]))
    out_c = groups * int(rng.integers(1, 20))
    w_ohwi = rng.integers(-127, 128, (out_c, kh, kw, x.shape[3] // groups)).astype(np.int8)
    out_h = (h + top + bottom - dil[0] * (kh - 1) - 1) // stride[0] + 1
    out_w = (w + left + right - dil[1] * (kw - 1) - 1) // stride[1] + 1
    packed = int8_gemm.pack_gemm(w_ohwi, groups, str(x.dtype))
    bias = rng.integers(-5000, 5000, out_c)
    requant = RowRequant(np.full(out_c, 2.0 ** -10), Rule("tflite", "double_rounding"), -3, (-128, 127))
    args = (out_h, out_w, bias, requant, "int8")
    got = int8_gemm.conv_gemm(x, zero_point, packed, (kh, kw), stride, dil, [top, left, bottom, right], *args)
    copy = pad_constant(x, ((0, 0), (top, bottom), (left, right), (0, 0)), zero_point)
    inside = int8_gemm.conv_gemm(copy, zero_point, packed, (kh, kw), stride, dil, [0, 0, 0, 0], *args)
    np.testing.assert_array_equal(got, inside)
    acc = window_sums(copy.astype(np.int64) - zero_point, w_ohwi, groups, stride, dil, out_h, out_w)
    want = np.empty(acc.shape, np.int8)
    requantize_block(acc.reshape(-1, out_c), np.inf, bias, *requant.args, want.reshape(-1, out_c))
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("seed", range(6))
def test_depthwise_bands_give_the_whole_output(seed):
    """The depthwise conv splits a sample's output rows into bands, one a thread, each with its own ring of rows
    (int8_depthwise.depthwise sizes them by the thread count): any band size gives the same output."""
    rng = np.random.default_rng(2000 + seed)
    x, zero_point, taps, stride, dil, pad = random_case(rng)
    whole, (packed, bias, requant, out_h, out_w) = run(x, zero_point, taps, stride, dil, pad)
    if taps.shape[0] != x.shape[3]:
        x = np.repeat(x, taps.shape[0] // x.shape[3], axis=3)
    w, weight_sums, reach = packed
    for band in range(1, out_h + 1):
        out = np.empty_like(whole)
        int8_depthwise._depthwise(x, w, *stride, *dil, *pad[:2], x.dtype.type(zero_point), out_h, out_w, band,
                                  reach, bias - zero_point * weight_sums, *requant.args, out)
        np.testing.assert_array_equal(out, whole)
