"""The integer accumulation of the int8 and 16x8 conv2d, depthwise_conv2d and fully_connected kernels.

Each output is sum(w * (x - x_zp)) over its window, padding counting as the real value 0. An integer sum does not
depend on its order, so mcc computes it where it is fastest and exact: conv2d and fully_connected as one float GEMM
(numpy's BLAS) of the raw input's columns (im2col, the padding filled with x_zp; a 1x1 stride-1 conv uses the input
itself) by the pre-packed weights, with x_zp * sum(w) per output channel subtracted from the bias instead (XNNPACK
folds it into its packed bias the same way), so no pass centres the input; depthwise_conv2d in its own loop over
output rows of the centred input, vectorised along each row. The operands are the integers themselves in float32
when every partial sum of every channel stays below 2**24 (sum|w| * max|x| < 2**24, so each product, sum and fused
multiply-add is exact: int8 GEMMs up to sum|w| of 131,071 per channel, int8 depthwise layers, whose |x - x_zp|
reaches 255, up to 65,793), else in float64 (exact below 2**53: any int8 layer, and 16x8 layers up to
2**53 / (32768 * 127) taps).
Why BLAS: numpy has no int8 x int8 -> int32 GEMM, and its float32 SGEMM runs MobileNetV2's 1x1 convs at 37 to 51
GMAC/s on one core of this machine (float64: half that), where the vectorised depthwise loop below reaches 5 to 9.
BLAS runs on one thread (runtime/threads.py); the compiled loops use numba's threads.

TFLite's reference kernels and XNNPACK accumulate in int32 (XNNPACK with VNNI/madd microkernels over packed int8
weights); mcc gets the same integers from float arithmetic, and the output stage (int8_output.requantize_rows)
then applies the rule set's requantization to them, which is where the peers differ.
"""

from __future__ import annotations

import contextlib

import numba
import numpy as np

from .int8_output import requantize_block, requantize_rows

_FLOAT32_EXACT = float(1 << 24)
_PARALLEL_WORK = 1 << 20  # output elements below which a layer runs on one thread


@contextlib.contextmanager
def _threads_for(elements: int):
    """Run a small layer's compiled loops on one thread: a parallel region costs a fork and a join, and on a busy
    machine the join waits for a descheduled worker (measured on the shared 2-core box: 2 threads, every region
    parallel, ran MobileNetV2 50x slower than 1 thread), so only layers with enough work use them all."""
    threads = numba.get_num_threads()
    if elements >= _PARALLEL_WORK or threads == 1:
        yield
        return
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(threads)


def operand_dtype(w_rows: np.ndarray, largest: int):
    """(dtype, reach): reach = the largest sum|w| over an output channel's row of `w_rows` [O, K] times `largest`,
    the largest |operand| on the input side, which bounds every |accumulator| (the output stage's `reach`); dtype
    float32 when reach < 2**24, else float64 (see the module docstring)."""
    reach = float(np.abs(w_rows.astype(np.int64)).sum(axis=1).max(initial=0) * largest)
    return (np.float32 if reach < _FLOAT32_EXACT else np.float64), reach


@numba.njit(cache=True, parallel=True)
def _centred(x, zero_point, top, left, out):
    """x - zero_point into the padded `out` [phases, N, Hp, Wp / phases, C]: padded column j = left + i
    of row top + y lands in phase j % phases at column j // phases. One phase: each row as one run of w * c
    elements (a loop over a pixel's few channels, 3 for an RGB image, does not vectorise)."""
    n, h, w, c = x.shape
    phases = out.shape[0]
    for job in numba.prange(n * h):
        b, y = job // h, job % h
        if phases == 1:
            row, source = out[0, b, top + y].reshape(-1)[left * c:(left + w) * c], x[b, y].reshape(-1)
            for i in range(w * c):
                row[i] = source[i] - zero_point
            continue
        for i in range(w):
            j = left + i
            pixel = out[j % phases, b, top + y, j // phases]
            for ch in range(c):
                pixel[ch] = x[b, y, i, ch] - zero_point


def centred(x: np.ndarray, zero_point: int, dtype, pad_hw=(0, 0, 0, 0), phases: int = 1,
            fill: int = 0) -> np.ndarray:
    """x - zero_point in `dtype` (exact), NHWC x padded with `fill` by [top, left, bottom, right], its columns split
    into `phases` interleaved phases (a stride-s loop then reads each phase contiguously): [phases, N, Hp, Wp / s,
    C]."""
    top, left, bottom, right = pad_hw
    n, h, w, c = x.shape
    width = w + left + right
    shape = (phases, n, h + top + bottom, -(-width // phases), c)
    # unless every element is written, the padding (and a last phase's spare column) holds `fill`
    out = np.full(shape, fill, dtype) if any(pad_hw) or width % phases else np.empty(shape, dtype)
    _centred(np.ascontiguousarray(x), dtype(zero_point), top, left, out)
    return out


def _window_padding(x, kh, kw, stride, dilation, padding, out_h, out_w):
    """[top, left, bottom, right] padding that makes every window of the output lie inside the padded input (the
    bottom and right as far as the windows reach, which may be less or more than the node's attributes say)."""
    (sh, sw), (dh, dw) = stride, dilation
    top, left = padding[:2]
    bottom = max(0, (out_h - 1) * sh + (kh - 1) * dh + 1 - top - x.shape[1])
    right = max(0, (out_w - 1) * sw + (kw - 1) * dw + 1 - left - x.shape[2])
    return top, left, bottom, right


@numba.njit(cache=True, parallel=True)
def _im2col(xp, kh, kw, stride_h, stride_w, dil_h, dil_w, out_h, out_w, groups, cols):
    """cols[(b, oy, ox), (g, ky, kx, ci)] = xp[b, oy * sh + ky * dh, ox * sw + kx * dw, g * Cg + ci]."""
    n, _, _, c = xp.shape
    group_c = c // groups
    for job in numba.prange(n * out_h):
        b, oy = job // out_h, job % out_h
        for ox in range(out_w):
            row = (b * out_h + oy) * out_w + ox
            col = 0
            for g in range(groups):
                for ky in range(kh):
                    iy = oy * stride_h + ky * dil_h
                    for kx in range(kw):
                        ix = ox * stride_w + kx * dil_w
                        for ci in range(group_c):
                            cols[row, col + ci] = xp[b, iy, ix, g * group_c + ci]
                        col += group_c


def pack_gemm(w_ohwi: np.ndarray, groups: int, x_dtype: str) -> tuple[np.ndarray, np.ndarray, float]:
    """OHWI int8 weights as the GEMM's right operand [groups, kh * kw * Cg, O / groups] in the operand dtype for raw
    `x_dtype` inputs, each output channel's sum(w) (int64), which the zero point multiplies, and the reach of the
    accumulators (operand_dtype)."""
    out_c = w_ohwi.shape[0]
    rows = w_ohwi.reshape(out_c, -1)
    dtype, reach = operand_dtype(rows, 128 if x_dtype == "int8" else 1 << 15)
    packed_w = np.ascontiguousarray(rows.reshape(groups, out_c // groups, -1).transpose(0, 2, 1), dtype)
    return packed_w, rows.astype(np.int64).sum(axis=1), reach


def conv_gemm(x, x_zero_point, packed, kernel_hw, stride, dilation, padding, out_h, out_w, bias, requant,
              dtype) -> np.ndarray:
    """The requantized conv2d of NHWC int8 / int16 `x` (any groups) with `packed` from pack_gemm: the raw columns
    times the weights, then the output stage (int8_output.RowRequant `requant`) with the bias less x_zero_point *
    sum(w). Returns NHWC `dtype`."""
    packed_w, weight_sums, reach = packed
    n, c = x.shape[0], x.shape[3]
    groups, depth, group_out = packed_w.shape
    with _threads_for(n * out_h * out_w * groups * group_out):
        kh, kw = kernel_hw
        rows = n * out_h * out_w
        if (kh, kw) == (1, 1) and tuple(stride) == (1, 1) and not any(padding):
            cols = x.reshape(rows, c).astype(packed_w.dtype)
        else:
            pad = _window_padding(x, kh, kw, stride, dilation, padding, out_h, out_w)
            cols = np.empty((rows, groups * depth), packed_w.dtype)
            raw = centred(x, 0, packed_w.dtype.type, pad, fill=x_zero_point)[0]
            _im2col(raw, kh, kw, *stride, *dilation, out_h, out_w, groups, cols)
        if groups == 1:
            acc = cols @ packed_w[0]
        else:
            acc = np.matmul(cols.reshape(rows, groups, depth).transpose(1, 0, 2), packed_w)
            acc = acc.transpose(1, 0, 2).reshape(rows, groups * group_out)
        out = np.empty((rows, groups * group_out), dtype)
        requantize_rows(acc, reach, bias - x_zero_point * weight_sums, *requant.args, out)
    return out.reshape(n, out_h, out_w, groups * group_out)


def pack_depthwise(w_ohwi: np.ndarray, x_dtype: str, out_w: int) -> tuple[np.ndarray, float]:
    """Depthwise OHWI weights [C * m, kh, kw, 1] as [kh, kw, out_w * C * m] in the operand dtype: each tap's
    channel weights repeated for every output column, so one tap is one multiply-add over a whole output row; and
    the reach of the accumulators (operand_dtype)."""
    rows = w_ohwi.reshape(w_ohwi.shape[0], -1)
    largest = 255 if x_dtype == "int8" else 1 << 15  # |x - x_zp|; 16x8 activations are symmetric
    dtype, reach = operand_dtype(rows, largest)
    taps = np.ascontiguousarray(w_ohwi[..., 0].transpose(1, 2, 0), dtype)
    return np.tile(taps, (1, 1, out_w)), reach


@numba.njit(cache=True)
def _tap(phases, w, b, y, ky, kx, dil_w, width):
    """Tap (ky, kx)'s weights over a row and the contiguous run of padded input row y that it multiplies."""
    stride_w, c = phases.shape[0], phases.shape[4]
    column = kx * dil_w
    first = (column // stride_w) * c
    return w[ky, kx], phases[column % stride_w, b, y].reshape(-1)[first:first + width]


@numba.njit(cache=True, parallel=True)
def _depthwise(phases, w, stride_h, dil_h, dil_w, out_h, out_w, reach, bias, code, multiplier, shift, real, scale32,
               zero_point, low, high, out):
    """Each output row of a multiplier-1 depthwise conv of the centred, padded, phase-split input (centred with
    phases = the column stride): for each tap, the row's out_w * C accumulators take one multiply-add against a
    contiguous run of the tap's input row (a long loop that vectorises, where a loop over the C channels of one
    pixel is often too short to); then the output stage on the row."""
    stride_w, n, _, _, c = phases.shape
    kh, kw, width = w.shape
    for job in numba.prange(n * out_h):
        b, oy = job // out_h, job % out_h
        acc = np.zeros(width, w.dtype)
        for ky in range(kh):
            y = oy * stride_h + ky * dil_h
            kx = 0
            while kx < kw:  # taps three at a time: one load and store of the accumulators per three products
                t0, r0 = _tap(phases, w, b, y, ky, min(kx, kw - 1), dil_w, width)
                t1, r1 = _tap(phases, w, b, y, ky, min(kx + 1, kw - 1), dil_w, width)
                t2, r2 = _tap(phases, w, b, y, ky, min(kx + 2, kw - 1), dil_w, width)
                if kx + 3 <= kw:
                    for i in range(width):  # indexing by the loop variable alone lets numba drop its
                        acc[i] += t0[i] * r0[i] + t1[i] * r1[i] + t2[i] * r2[i]  # negative-index handling
                else:
                    for i in range(width):
                        acc[i] += t0[i] * r0[i]
                    if kx + 2 == kw:
                        for i in range(width):
                            acc[i] += t1[i] * r1[i]
                kx += 3
        requantize_block(acc.reshape(out_w, c), reach, bias, code, multiplier, shift, real, scale32, zero_point, low,
                         high, out[b, oy])


def depthwise(x, x_zero_point, packed, stride, dilation, padding, out_h, out_w, bias, requant,
              dtype) -> np.ndarray:
    """The requantized depthwise_conv2d of NHWC `x` with `packed` from pack_depthwise. A channel multiplier m
    repeats each input channel m times (output channel c * m + j reads input channel c, TFLite's indexing), so
    one multiplier-1 loop serves every m."""
    packed_w, reach = packed
    kh, kw, width = packed_w.shape
    out_c = width // out_w
    pad = _window_padding(x, kh, kw, stride, dilation, padding, out_h, out_w)
    phases = centred(x, x_zero_point, packed_w.dtype.type, pad, stride[1])
    if out_c != x.shape[3]:
        phases = np.repeat(phases, out_c // x.shape[3], axis=4)
    out = np.empty((x.shape[0], out_h, out_w, out_c), dtype)
    with _threads_for(out.size):
        _depthwise(phases, packed_w, stride[0], *dilation, out_h, out_w, reach, bias, *requant.args, out)
    return out
