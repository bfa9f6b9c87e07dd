"""The integer accumulation of the int8 and 16x8 conv2d and fully_connected kernels (depthwise_conv2d:
int8_depthwise).

Each output is sum(w * (x - x_zp)) over its window, padding counting as the real value 0. An integer sum does not
depend on its order, so mcc computes it where it is fastest and exact: conv2d and fully_connected as one float GEMM
(numpy's BLAS) of the raw input's columns (im2col, the padding filled with x_zp; a 1x1 stride-1 conv uses the input
itself) by the pre-packed weights, with x_zp * sum(w) per output channel subtracted from the bias instead (XNNPACK
folds it into its packed bias the same way), so no pass centres the input (int8_depthwise likewise). The operands
are the integers themselves in float32 when every partial sum of every channel stays below 2**24 (sum|w| * max|x|
< 2**24, so each product, sum and fused multiply-add is exact: int8 layers up to sum|w| of 131,071 per channel),
else in float64 (exact below 2**53: any int8 layer, and 16x8 layers up to 2**53 / (32768 * 127) taps).
Why BLAS: numpy has no int8 x int8 -> int32 GEMM, and its float32 SGEMM runs MobileNetV2's 1x1 convs at 37 to 51
GMAC/s on one core of this machine (float64: half that), where a compiled loop reached 14 to 16.
BLAS runs on one thread (runtime/threads.py); the compiled loops use numba's threads. Where numba compiles for a
CPU with AVX-512 VNNI, one-group int8 products run on its int8 dot products instead (int8_vnni: the same int32
sums, MobileNetV2's convs 2x faster than BLAS on one Zen 4 core); other targets keep BLAS.

TFLite's reference kernels and XNNPACK accumulate in int32 (XNNPACK with VNNI/madd microkernels over packed int8
weights); mcc gets the same integers from float arithmetic, and the output stage (int8_output.requantize_rows)
then applies the rule set's requantization to them, which is where the peers differ.
"""

from __future__ import annotations

import contextlib

import numba
import numpy as np

from .int8_output import requantize_block, requantize_rows
from .int8_vnni import VNNI, pack_vnni, vnni_product

_FLOAT32_EXACT = float(1 << 24)
_INT32_EXACT = float(1 << 31)
_PARALLEL_WORK = 1 << 20  # output elements below which a layer runs on one thread


@contextlib.contextmanager
def _threads_for(elements: int):
    """Run a small layer's compiled loops on one thread: a parallel region costs a fork and a join, and on a busy
    machine the join waits for a descheduled worker (measured on the shared 2-core box: 2 threads, every region
    parallel, ran MobileNetV2 50x slower than 1 thread), so only layers with enough work use them all."""
    if elements >= _PARALLEL_WORK:
        yield
        return
    threads = numba.get_num_threads()
    if threads == 1:
        yield
        return
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(threads)


def operand_dtype(w_rows: np.ndarray, largest: int):
    """(dtype, reach, sums): reach = the largest sum|w| over an output channel's row of `w_rows` [O, K] times
    `largest`, the largest |operand| on the input side, which bounds every |accumulator| (the output stage's
    `reach`); dtype float32 when reach < 2**24, else float64 (see the module docstring); sums = each row's sum(w)
    (int64), which the zero point multiplies."""
    sums, magnitudes = _row_sums(w_rows)
    reach = float(magnitudes.max(initial=0) * largest)
    return (np.float32 if reach < _FLOAT32_EXACT else np.float64), reach, sums


@numba.njit(cache=True, nogil=True)
def _row_sums(rows):
    """Each row's sum(w) and sum(|w|) in int64, in one pass. numpy's widened copy of the weights, its abs and their
    sums made [O, K] int64 temporaries, which the allocator returned to the system and faulted in again on every
    weight: operand_dtype of MobileNetV2's 1280 x 320 1x1 conv took 3.9 ms of CPU, 28x the sums alone."""
    sums = np.zeros(rows.shape[0], np.int64)
    magnitudes = np.zeros(rows.shape[0], np.int64)
    for o in range(rows.shape[0]):
        total, size = np.int64(0), np.int64(0)
        for k in range(rows.shape[1]):
            v = np.int64(rows[o, k])
            total += v
            size += abs(v)
        sums[o], magnitudes[o] = total, size
    return sums, magnitudes


def _window_padding(x, kh, kw, stride, dilation, padding, out_h, out_w):
    """[top, left, bottom, right] padding that makes every window of the output lie inside the padded input (the
    bottom and right as far as the windows reach, which may be less or more than the node's attributes say)."""
    (sh, sw), (dh, dw) = stride, dilation
    top, left = padding[:2]
    bottom = max(0, (out_h - 1) * sh + (kh - 1) * dh + 1 - top - x.shape[1])
    right = max(0, (out_w - 1) * sw + (kw - 1) * dw + 1 - left - x.shape[2])
    return top, left, bottom, right


@numba.njit(cache=True, nogil=True, parallel=True)
def _im2col(x, kh, kw, stride_h, stride_w, dil_h, dil_w, pad_top, pad_left, zero_point, out_h, out_w, groups,
            cols):
    """cols[(b, oy, ox), (g, ky, kx, ci)] = x[b, oy * sh - top + ky * dh, ox * sw - left + kx * dw, g * Cg + ci],
    or `zero_point` where that lies in the padding: the raw codes gathered from the unpadded input, no padded copy
    made. With one group and no column dilation, a window row's kw * C values inside the input are one run in the
    input row, copied as one (a loop per channel of an RGB image's 3 was half the speed)."""
    n, h, wd, c = x.shape
    group_c, width = c // groups, cols.shape[1]
    flat = cols.reshape(-1)
    for job in numba.prange(n * out_h):
        b, oy = job // out_h, job % out_h
        if groups == 1 and dil_w == 1:
            run = kw * c
            # the windows from column `first` to `last` (exclusive) lie inside the input's columns
            first = min(out_w, (pad_left + stride_w - 1) // stride_w)
            last = max(first, min(out_w, (wd - kw + pad_left) // stride_w + 1 if wd - kw + pad_left >= 0 else 0))
            for ky in range(kh):
                iy = oy * stride_h - pad_top + ky * dil_h
                inside_rows = 0 <= iy < h
                source = x[b, min(max(iy, 0), h - 1)].reshape(-1)
                if inside_rows:  # unsigned offsets: no negative-index handling (as int8_depthwise)
                    for ox in range(first, last):
                        at = np.uint64((ox * stride_w - pad_left) * c)
                        to = np.uint64(((b * out_h + oy) * out_w + ox) * width + ky * run)
                        for i in range(np.uint64(run)):
                            flat[to + i] = source[at + i]
                for ox in range(out_w):
                    if inside_rows and first <= ox < last:
                        continue
                    ix = ox * stride_w - pad_left
                    dst = cols[(b * out_h + oy) * out_w + ox, ky * run:(ky + 1) * run]
                    for kx in range(kw):
                        inside = inside_rows and 0 <= ix + kx < wd
                        for ci in range(c):
                            dst[kx * c + ci] = source[(ix + kx) * c + ci] if inside else zero_point
            continue
        for ox in range(out_w):
            row = (b * out_h + oy) * out_w + ox
            col = 0
            for g in range(groups):
                for ky in range(kh):
                    iy = oy * stride_h - pad_top + ky * dil_h
                    for kx in range(kw):
                        ix = ox * stride_w - pad_left + kx * dil_w
                        inside = 0 <= iy < h and 0 <= ix < wd
                        for ci in range(group_c):
                            cols[row, col + ci] = x[b, iy, ix, g * group_c + ci] if inside else zero_point
                        col += group_c


def pack_gemm(w_ohwi: np.ndarray, groups: int, x_dtype: str) -> tuple:
    """OHWI int8 weights as the GEMM's right operand [groups, kh * kw * Cg, O / groups] in the operand dtype for raw
    `x_dtype` inputs, each output channel's sum(w) (int64), which the zero point multiplies, the reach of the
    accumulators (operand_dtype), for one group the int8 rows [O, kh * kw * C] that _dot_rows takes, and where
    int8_vnni takes the product (one group, int8 inputs, a VNNI target, sums within int32) its packed weights
    (int8_vnni.pack_vnni; the float operand is then not built: None)."""
    out_c = w_ohwi.shape[0]
    rows = w_ohwi.reshape(out_c, -1)
    dtype, reach, sums = operand_dtype(rows, 128 if x_dtype == "int8" else 1 << 15)
    int_rows = np.ascontiguousarray(rows, np.int8) if groups == 1 else None
    vnni = (pack_vnni(int_rows, sums) if VNNI and groups == 1 and x_dtype == "int8" and reach < _INT32_EXACT
            else None)
    packed_w = None if vnni is not None else np.ascontiguousarray(
        rows.reshape(groups, out_c // groups, -1).transpose(0, 2, 1), dtype)
    return packed_w, sums, reach, int_rows, vnni


_DOT_ROWS = 4  # up to this many rows (a classifier on one sample) _dot_rows runs instead of BLAS / VNNI tiles


@numba.njit(cache=True, nogil=True)
def _dot_rows(cols, w, acc):
    """acc[r, o] = sum(cols[r] * w[o]) in int32, over the int8 weight rows: a few rows make a matrix-vector product,
    which reads each weight once, so it is bound by the weights' memory traffic, and int8 rows are a quarter of
    the float32 operand (the 1280 x 1000 classifier of MobileNetV2 4.8x faster than BLAS with cold caches). An
    integer sum vectorises in any order, where a float one, without fastmath, would not. XNNPACK runs its GEMM
    microkernel with one row over weights packed at load time; mcc reads the int8 rows as the model holds them."""
    rows, depth = cols.shape
    for r in range(rows):
        x = cols[r]
        for o in range(w.shape[0]):
            row = w[o]
            total = np.int32(0)
            for i in range(depth):
                total += np.int32(x[i]) * np.int32(row[i])
            acc[r, o] = total


_BLOCK_ACC = 1 << 16  # accumulators per GEMM block (256 KB of float32): the block is requantized from cache
_MIN_BLOCK = 256  # rows: fewer would pay more in calls than the cache saves


def _product_in_blocks(cols, w, reach, bias, requant, out):
    """out = the output stage of cols @ w, a block of rows at a time: each block's columns converted to w's type,
    multiplied, and its accumulators requantized while they are still in cache. One whole product wrote them all
    to memory first and read them back (a 1x1 conv of MobileNetV2's first block, 16 channels to 96 over 16
    samples: 31 ms whole, 16 ms in blocks; deep layers, whose accumulators are few, as fast either way). A block
    is too little work for a parallel region (on the shared 2-core machine each one waited milliseconds for a
    descheduled worker), so it is requantized on the calling thread."""
    step = max(_MIN_BLOCK, _BLOCK_ACC // w.shape[1])
    for first in range(0, len(cols), step):
        block = slice(first, first + step)
        requantize_block(np.matmul(cols[block].astype(w.dtype, copy=False), w), reach, bias, *requant.args, out[block])


def conv_gemm(x, x_zero_point, packed, kernel_hw, stride, dilation, padding, out_h, out_w, bias, requant,
              dtype) -> np.ndarray:
    """The requantized conv2d of NHWC int8 / int16 `x` (any groups) with `packed` from pack_gemm: the raw columns
    times the weights (one group: int8_vnni's tiles where pack_gemm packed for them, else BLAS block by block,
    _product_in_blocks), then the output stage (int8_output.RowRequant `requant`) with the bias less
    x_zero_point * sum(w). Up to _DOT_ROWS rows of one group go through _dot_rows when every sum fits int32.
    Returns NHWC `dtype`."""
    packed_w, weight_sums, reach, int_rows, vnni = packed
    n, c = x.shape[0], x.shape[3]
    out_c = len(weight_sums)
    depth = int_rows.shape[1] if packed_w is None else packed_w.shape[1]
    groups = 1 if packed_w is None else packed_w.shape[0]
    with _threads_for(n * out_h * out_w * out_c):
        kh, kw = kernel_hw
        rows = n * out_h * out_w
        dots = int_rows is not None and rows <= _DOT_ROWS and reach < _INT32_EXACT
        operand = x.dtype if dots or vnni is not None else packed_w.dtype
        if (kh, kw) == (1, 1) and tuple(stride) == (1, 1) and not any(padding):
            cols = np.ascontiguousarray(x.reshape(rows, c))  # converted block by block below
        else:
            cols = np.empty((rows, groups * depth), operand)
            _im2col(x, kh, kw, *stride, *dilation, *padding[:2], cols.dtype.type(x_zero_point), out_h, out_w, groups,
                    cols)
        out = np.empty((rows, out_c), dtype)
        bias = bias - x_zero_point * weight_sums
        if dots:
            acc = np.empty((rows, out_c), np.int32)
            _dot_rows(cols, int_rows, acc)
            requantize_rows(acc, reach, bias, *requant.args, out)
        elif vnni is not None:
            vnni_product(cols, vnni, out_c, reach, bias, requant, out)
        elif groups == 1:
            _product_in_blocks(cols, packed_w[0], reach, bias, requant, out)
        else:
            acc = np.matmul(cols.astype(packed_w.dtype, copy=False).reshape(rows, groups, depth).transpose(1, 0, 2),
                            packed_w)
            requantize_rows(acc.transpose(1, 0, 2).reshape(rows, out_c), reach, bias, *requant.args, out)
    return out.reshape(n, out_h, out_w, out_c)
