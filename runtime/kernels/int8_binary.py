"""Binary layers: int8 conv2d / fully_connected whose weights are {-k, +k} per output channel, accumulated from
weights packed at 1 bit each.

passes/binarize.py makes such weights (alpha * sign(W) per output channel) and quantize_int8 stores them as
codes +-127 (scale alpha / 127), so the file holds standard int8 layers that stock LiteRT and onnxruntime run.
mcc's runtime recognises them by their values (binary_magnitudes: the file carries no flag, and needs none) and
computes the same integer accumulator another way:

    sum_j w_j x_j = k * (2 * sum_{w_j > 0} u_j - sum_j u_j) - 128 * sum_j w_j,   u_j = x_j + 128 in [0, 255]

The last term joins the zero-point term the int8 GEMM already folds into the bias, and sum_{w_j > 0} u_j is
sum_b 2^b * popcount(U_b & W) over the 8 bit planes U_b of the window's u (one 64-bit word per 64 taps), W the
packed sign bits. The planes come from 8x8 bit-matrix transposes of the raw bytes (Hacker's Delight 7-3), one
per 8 taps, shared by every output channel. Integer sums are exact, so the accumulator, and after the same
output stage (int8_output.requantize_rows) the output, equal the int8 kernel's bit for bit, under every rule
set. larq's compute engine (LCE) runs binary layers with XNOR-popcount too, but through custom TFLite ops
(LceBconv2d) that stock runtimes reject; here the packing is the runtime's business only.
"""

from __future__ import annotations

import contextlib

import numba
import numpy as np
from numba.core import types
from numba.extending import intrinsic

from .int8_gemm import _threads_for, columns
from .int8_output import requantize_rows
from .packing import packed

_WORD = 64
_ENABLED = [True]  # the interpreter's choice; int8_only() turns it off to compare with the int8 GEMM


@contextlib.contextmanager
def int8_only():
    """Run binary layers through the ordinary int8 GEMM while inside (tests and benchmarks compare the two)."""
    _ENABLED[0] = False
    try:
        yield
    finally:
        _ENABLED[0] = True


def binary_magnitudes(w: np.ndarray, axis: int) -> np.ndarray | None:
    """|w| per index of `axis` when every weight of that channel is +m or -m (float weights after binarize,
    int8 codes after quantize_int8), else None."""
    m = np.moveaxis(np.abs(np.asarray(w)), axis, 0).reshape(w.shape[axis], -1)
    first = m[:, :1]
    return first[:, 0].copy() if np.array_equal(m, np.broadcast_to(first, m.shape)) else None


def packed_bytes(w: np.ndarray, axis: int) -> int:
    """Bytes of a binary weight at 1 bit per weight (each channel's bits rounded up to whole bytes) plus a float32
    magnitude per channel: what a binary runtime stores, against w.size int8 bytes (and float32 scales) in the
    stock file."""
    channels = w.shape[axis]
    return channels * (-(-(w.size // channels) // 8) + 4)


@intrinsic
def _popcount(typingctx, x):
    """LLVM's ctpop on a uint64 (one POPCNT instruction; vectorised as VPOPCNTQ where the CPU has it)."""
    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])
    return types.uint64(types.uint64), codegen


@numba.njit(cache=True)
def _transpose8(x):
    """The 8x8 bit matrix in x (byte i = row i) transposed: byte b of the result holds bit b of every byte of x."""
    t = (x ^ (x >> np.uint64(7))) & np.uint64(0x00AA00AA00AA00AA)
    x = x ^ t ^ (t << np.uint64(7))
    t = (x ^ (x >> np.uint64(14))) & np.uint64(0x0000CCCC0000CCCC)
    x = x ^ t ^ (t << np.uint64(14))
    t = (x ^ (x >> np.uint64(28))) & np.uint64(0x00000000F0F0F0F0)
    return x ^ t ^ (t << np.uint64(28))


@numba.njit(cache=True, parallel=True)
def _accumulate(cols, bits, magnitude, acc):
    """acc[r, o] = magnitude[o] * (2 * sum over taps with sign bit 1 of u - sum of u) for the uint8 columns u
    [rows, words * 64] (viewed as uint64 [rows, words * 8]) and sign bits [O, words]."""
    rows, octets = cols.shape
    channels, words = bits.shape
    for r in numba.prange(rows):
        planes = np.zeros((words, 8), np.uint64)
        for q in range(octets):
            t = _transpose8(cols[r, q])
            shift = np.uint64(8 * (q % 8))
            for b in range(8):
                planes[q // 8, b] |= ((t >> np.uint64(8 * b)) & np.uint64(0xFF)) << shift
        total = np.int64(0)
        for w in range(words):
            for b in range(8):
                total += np.int64(_popcount(planes[w, b])) << b
        for o in range(channels):
            s = np.int64(0)
            for w in range(words):
                m = bits[o, w]
                for b in range(8):
                    s += np.int64(_popcount(planes[w, b] & m)) << b
            acc[r, o] = magnitude[o] * (2 * s - total)


def pack_binary(w_rows: np.ndarray):
    """(sign bits [O, words] uint64, magnitudes [O] int64, sum(w) [O] int64) of int8 weight rows [O, K] that are
    {-k, +k} per row, else None."""
    magnitude = binary_magnitudes(w_rows, 0)
    if magnitude is None:
        return None
    channels, depth = w_rows.shape
    width = -(-depth // _WORD) * _WORD
    signs = np.zeros((channels, width), np.uint8)
    signs[:, :depth] = w_rows > 0
    bits = np.packbits(signs, axis=1, bitorder="little").view("<u8").astype(np.uint64)
    return bits, magnitude.astype(np.int64), w_rows.astype(np.int64).sum(axis=1)


def binary_weights(w: np.ndarray, key: str, w_rows):
    """pack_binary of the weight (cached on the array; None for a weight that is not binary), or None while the
    packed kernel is off."""
    if not _ENABLED[0]:
        return None
    return packed(w, ("binary", key), lambda w: pack_binary(w_rows(w)))


def binary_gemm(x, x_zero_point, packed_w, kernel_hw, stride, dilation, padding, out_h, out_w, bias, requant,
                dtype) -> np.ndarray:
    """int8_gemm.conv_gemm's result (one group, int8 NHWC x) from pack_binary's weights."""
    bits, magnitude, weight_sums = packed_w
    u = (x.view(np.uint8) ^ np.uint8(0x80))  # x + 128
    rows = x.shape[0] * out_h * out_w
    with _threads_for(rows * bits.shape[0]):
        cols = columns(u, x_zero_point + 128, np.uint8, kernel_hw, stride, dilation, padding, out_h, out_w,
                       width=bits.shape[1] * _WORD)
        acc = np.empty((rows, bits.shape[0]), np.int64)
        _accumulate(cols.view(np.uint64), bits, magnitude, acc)
        out = np.empty(acc.shape, dtype)
        requantize_rows(acc, bias - (x_zero_point + 128) * weight_sums, *requant.args, out)
    return out.reshape(x.shape[0], out_h, out_w, -1)
