"""Binary layers: int8 conv2d / fully_connected whose weights are {-k, +k} per output channel, accumulated from
weights packed at 1 bit each.

passes/binarize.py makes such weights (alpha * sign(W) per output channel) and quantize_int8 stores them as
codes +-127 (scale alpha / 127), so the file holds standard int8 layers that stock LiteRT and onnxruntime run.
mcc's runtime recognises them by their values (binary_magnitudes: the file carries no flag, and needs none) and
computes the same integer accumulator another way:

    sum_j w_j x_j = k * (2 * sum_{w_j > 0} u_j - sum_j u_j) - 128 * sum_j w_j,   u_j = x_j + 128 in [0, 255]

The last term joins the zero-point term the int8 GEMM already folds into the bias, and sum_{w_j > 0} u_j is
sum_b 2^b * popcount(U_b & W) over the 8 bit planes U_b of the window's u (one 64-bit word per 64 taps), W the
packed sign bits. The planes are cut once per input pixel, by 8x8 bit-matrix transposes of 8 channels' bytes
(Hacker's Delight 7-3), and the windows gathered from them (an im2col at 1 bit per tap and plane); the popcounts
run over the output channels as the vector loop (VPOPCNTQ on AVX-512). Integer sums are exact, so the
accumulator, and after the same output stage (int8_output.requantize_rows) the output, equal the int8 kernel's
bit for bit, under every rule set. The work per 64 weights is 8 AND + popcount + add, against 64 multiply-adds:
with int8 activations that is about what a float GEMM costs (benchmarks/bench_binary.py measures it); the bytes
of weight read are 1/32 of the float GEMM's packed operand.

Binary activations (passes/binarize.py's binary_activations; quantize_int8 writes them as two QUANTIZEs) leave
the layer's int8 input with two codes, its zero point and one other v (127 and -128). Then

    sum_j w_j (x_j - zp) = (v - zp) * k * (2 * popcount(B & W) - popcount(B)),   B_j = [x_j != zp]

one bit plane instead of 8: one AND + popcount + add per 64 multiply-adds, with the popcount of B shared by the
output channels. This is XNOR-popcount (sum of +-1 products = 2 * popcount(XNOR(a, w)) - n) in its {0, 1} form,
which needs no mask for the padded tail bits and counts a padded tap (x = zp, bit 0) as the float graph does.
binary_gemm checks the two codes on every call (the file carries no flag), so any input is computed exactly.
Each window's words are assembled from the pixels' sign bytes as it is read (no im2col). The interpreter takes
this path for binary weights with binary activations where its cost model (xnor_chosen: at least XNOR_MIN_TAPS
taps per window) says it is faster: 1.3-2.6x the int8 GEMM on resnet18_style's 3x3 layers, while 1x1 layers on
8 or 16 channels, whose window fills a fraction of a word, run the int8 GEMM (0.85-0.97x there); with int8
activations the 8-plane form measured below the int8 GEMM on nearly every layer (benchmarks/results/
bench_binary.txt), so there the int8 GEMM runs (binary_gemm returns None for them unless asked for the planes:
tests and the benchmark keep it bit-exact). larq's compute engine (LCE) runs binary layers (binary activations
too, XNOR-popcount) through custom TFLite ops (LceBconv2d) that stock runtimes reject; mcc keeps the file
standard and the packing the runtime's business.
"""

from __future__ import annotations

import contextlib

import numba
import numpy as np
from numba.core import types
from numba.extending import intrinsic

from .int8_gemm import _threads_for, _window_padding
from .int8_output import requantize_rows
from .int8_registry import int8_kernel, per_tensor
from .packing import packed

_WORD = 64
_ENABLED = [True]  # the interpreter's choice; int8_only() turns it off to compare with the int8 GEMM
_BIT_PLANES = [False]  # int8 activations through the 8-plane kernel; bit_planes() turns it on (benchmark, tests)
# The cost model for binary activations: XNOR-popcount does one popcount per output channel per 64-bit word of the
# window plus the window's assembly (a byte per 8 taps); the int8 GEMM one multiply-add per tap and channel, in
# SIMD lanes. Measured on resnet18_style's binary layers (benchmarks/results/bench_binary.txt, int8 / XNOR time):
# windows of 8 and 16 taps (1x1 convs on 8 and 16 channels) 0.85 and 0.97, 32 taps 1.09, 72 taps and more 1.3-2.6.
# Below this many taps per window the int8 GEMM runs.
XNOR_MIN_TAPS = [32]


@contextlib.contextmanager
def int8_only():
    """Run binary layers through the ordinary int8 GEMM while inside (tests and benchmarks compare the two)."""
    _ENABLED[0] = False
    try:
        yield
    finally:
        _ENABLED[0] = True


@contextlib.contextmanager
def xnor_always():
    """Take the XNOR-popcount path for binary activations however few taps a window has (tests, benchmark)."""
    XNOR_MIN_TAPS.insert(0, 0)
    try:
        yield
    finally:
        XNOR_MIN_TAPS.pop(0)


def xnor_chosen(taps: int) -> bool:
    """Whether the cost model takes XNOR-popcount for binary activations over windows of `taps` taps."""
    return taps >= XNOR_MIN_TAPS[0]


@contextlib.contextmanager
def bit_planes():
    """Run binary-weight layers with int8 activations through the 8-bit-plane kernel while inside."""
    _BIT_PLANES[0] = True
    try:
        yield
    finally:
        _BIT_PLANES[0] = False


def binary_magnitudes(w: np.ndarray, axis: int) -> np.ndarray | None:
    """|w| per index of `axis` when every weight of that channel is +m or -m (float weights after binarize,
    int8 codes after quantize_int8), else None."""
    m = np.moveaxis(np.asarray(w), axis, 0).reshape(w.shape[axis], -1)
    first = np.abs(m[:, :1])
    if not np.array_equal(np.abs(m[:, 1:2]), first[:, :m.shape[1] - 1]):  # what most weights fail, read first
        return None
    m = np.abs(m)
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


@numba.njit(cache=True, nogil=True)
def _transpose8(x):
    """The 8x8 bit matrix in x (byte i = row i) transposed: byte b of the result holds bit b of every byte of x."""
    t = (x ^ (x >> np.uint64(7))) & np.uint64(0x00AA00AA00AA00AA)
    x = x ^ t ^ (t << np.uint64(7))
    t = (x ^ (x >> np.uint64(14))) & np.uint64(0x0000CCCC0000CCCC)
    x = x ^ t ^ (t << np.uint64(14))
    t = (x ^ (x >> np.uint64(28))) & np.uint64(0x00000000F0F0F0F0)
    return x ^ t ^ (t << np.uint64(28))


@numba.njit(cache=True, nogil=True, parallel=True)
def _bit_planes(u, out):
    """out[n, y, x, b, g] = bit b of channels 8g .. 8g + 7 of u[n, y, x] (u as uint64, 8 channels each): one
    8x8 transpose per 8 channels of each pixel, so a pixel that 9 windows read is split into planes once."""
    n, h, w, octets = u.shape
    for job in numba.prange(n * h):
        image, y = job // h, job % h
        for x in range(w):
            for g in range(octets):
                t = _transpose8(u[image, y, x, g])
                for b in range(8):
                    out[image, y, x, b, g] = np.uint8((t >> np.uint64(8 * b)) & np.uint64(0xFF))


@numba.njit(cache=True, nogil=True, parallel=True)
def _windows(planes, kh, kw, stride_h, stride_w, dil_h, dil_w, out_h, out_w, out):
    """out[r, b, (ky * kw + kx) * octets + g] = planes[image, y, x, b, g] over output position r's window: the
    im2col of the bit planes, 8 taps per byte."""
    n, _, _, _, octets = planes.shape
    for job in numba.prange(n * out_h):
        image, oy = job // out_h, job % out_h
        for ox in range(out_w):
            r = (image * out_h + oy) * out_w + ox
            first = 0
            for ky in range(kh):
                y = oy * stride_h + ky * dil_h
                for kx in range(kw):
                    x = ox * stride_w + kx * dil_w
                    for b in range(8):
                        for g in range(octets):  # indexed in full: a view per pixel cost 1.6x the copy
                            out[r, b, first + g] = planes[image, y, x, b, g]
                    first += octets


_ROWS = 32  # output positions per parallel task


@numba.njit(cache=True, nogil=True, parallel=True)
def _accumulate(planes, bits, magnitude, acc):
    """acc[r, o] = magnitude[o] * (2 * sum_b 2^b popcount(planes[r, b] & bits[:, o]) - sum of u) for the window
    bit planes [rows, 8, words] and sign bits [words, O]; the loop over output channels is the inner one, so it
    runs as vector AND / VPOPCNTQ / shift / add over 8 channels at a time."""
    rows, _, words = planes.shape
    channels = bits.shape[1]
    for task in numba.prange((rows + _ROWS - 1) // _ROWS):
        for r in range(task * _ROWS, min(rows, (task + 1) * _ROWS)):
            s = acc[r]
            s[:] = 0
            total = np.int64(0)
            for b in range(8):
                for w in range(words):
                    plane = planes[r, b, w]
                    total += np.int64(_popcount(plane)) << b
                    signs = bits[w]
                    for o in range(channels):
                        s[o] += np.int64(_popcount(plane & signs[o])) << b
            for o in range(channels):
                s[o] = magnitude[o] * (2 * s[o] - total)


def pack_binary(w_ohwi: np.ndarray):
    """(sign bits [words, O] uint64, magnitudes [O] int64, sum(w) [O] int64) of OHWI int8 weights that are
    {-k, +k} per output channel, else None. The bits run over (ky, kx, channel) with the channels padded to a
    multiple of 8, as _windows lays out the input's bit planes."""
    channels = w_ohwi.shape[0]
    magnitude = binary_magnitudes(w_ohwi, 0)
    if magnitude is None:
        return None
    padded = np.zeros(w_ohwi.shape[:3] + (-(-w_ohwi.shape[3] // 8) * 8,), np.uint8)
    padded[..., :w_ohwi.shape[3]] = w_ohwi > 0
    rows = padded.reshape(channels, -1)
    signs = np.zeros((channels, -(-rows.shape[1] // _WORD) * _WORD), np.uint8)
    signs[:, :rows.shape[1]] = rows
    bits = np.packbits(signs, axis=1, bitorder="little").view(np.uint64)
    return (np.ascontiguousarray(bits.T), magnitude.astype(np.int64),
            w_ohwi.reshape(channels, -1).astype(np.int64).sum(axis=1))


def binary_weights(w: np.ndarray, key: str, w_ohwi):
    """pack_binary of the weight (cached on the array; None for a weight that is not binary), or None while the
    packed kernel is off."""
    if not _ENABLED[0]:
        return None
    return packed(w, ("binary", key), lambda w: pack_binary(w_ohwi(w)))


CALLS = {"binary_activations": 0, "bit_planes": 0}  # kernel calls per path, which tests read


@numba.njit(cache=True, nogil=True)
def _sign_bits(x, zero_point, out):
    """out[n, y, x, g] = bits [x != zero_point] of channels 8g .. 8g + 7 (out zeroed by the caller); returns the
    one code other than the zero point (256: none), or 257 when x holds more than two codes."""
    n, h, w, c = x.shape
    other = 256
    for i in range(n):
        for y in range(h):
            for j in range(w):
                for k in range(c):
                    v = np.int64(x[i, y, j, k])
                    if v != zero_point:
                        if other == 256:
                            other = v
                        elif v != other:
                            return 257
                        out[i, y, j, k >> 3] |= np.uint8(1 << (k & 7))
    return other


@numba.njit(cache=True, nogil=True, parallel=True)
def _xnor_accumulate(signs, kh, kw, stride_h, stride_w, dil_h, dil_w, top, left, out_h, out_w, bits, magnitude,
                     acc):
    """acc[r, o] = magnitude[o] * (2 * popcount(B & W_o) - popcount(B)) over output position r's window B of the
    sign bits [n, h, w, octets] (taps in the padding: bit 0), W_o = bits[:, o]: the window's words are assembled
    in registers, nothing is materialised per window."""
    n, h, w, octets = signs.shape
    words, channels = bits.shape
    rows = n * out_h * out_w
    for task in numba.prange((rows + _ROWS - 1) // _ROWS):
        window = np.empty(words, np.uint64)
        for r in range(task * _ROWS, min(rows, (task + 1) * _ROWS)):
            image, oy, ox = r // (out_h * out_w), r // out_w % out_h, r % out_w
            window[:] = 0
            first = 0
            for ky in range(kh):
                y = oy * stride_h + ky * dil_h - top
                for kx in range(kw):
                    x = ox * stride_w + kx * dil_w - left
                    if 0 <= y < h and 0 <= x < w:
                        for g in range(octets):
                            at = first + g
                            window[at >> 3] |= np.uint64(signs[image, y, x, g]) << np.uint64((at & 7) * 8)
                    first += octets
            s = acc[r]
            s[:] = 0
            total = np.int64(0)
            for k in range(words):
                word = window[k]
                total += np.int64(_popcount(word))
                row = bits[k]
                for o in range(channels):
                    s[o] += np.int64(_popcount(word & row[o]))
            for o in range(channels):
                s[o] = magnitude[o] * (2 * s[o] - total)


def binary_gemm(x, x_zero_point, packed_w, kernel_hw, stride, dilation, padding, out_h, out_w, bias, requant,
                dtype, eight_planes: bool | None = None) -> np.ndarray | None:
    """int8_gemm.conv_gemm's result (one group, int8 NHWC x) from pack_binary's weights: XNOR-popcount when x is
    binary (two codes, one the zero point) and the window has XNOR_MIN_TAPS taps (xnor_chosen), else from 8 bit
    planes if `eight_planes` (default: inside bit_planes()), else None (the int8 GEMM is faster)."""
    bits, magnitude, weight_sums = packed_w
    n, h, w, c = x.shape
    kh, kw = kernel_hw
    planes_asked = _BIT_PLANES[0] if eight_planes is None else eight_planes
    if not planes_asked and not xnor_chosen(kh * kw * c):
        return None
    top, left, bottom, right = _window_padding(x, kh, kw, stride, dilation, padding, out_h, out_w)
    octets = -(-c // 8)
    signs = np.zeros((n, h, w, octets), np.uint8)
    other = _sign_bits(x, x_zero_point, signs)
    if other <= 256:  # binary activations
        CALLS["binary_activations"] += 1
        acc = np.empty((n * out_h * out_w, bits.shape[1]), np.int64)
        out = np.empty(acc.shape, dtype)
        with _threads_for(acc.size):
            _xnor_accumulate(signs, kh, kw, *stride, *dilation, top, left, out_h, out_w, bits,
                             magnitude * (0 if other == 256 else other - x_zero_point), acc)
            requantize_rows(acc, np.inf, bias, *requant.args, out)
        return out.reshape(n, out_h, out_w, -1)
    if not planes_asked:
        return None
    CALLS["bit_planes"] += 1
    u = np.zeros((n, h + top + bottom, w + left + right, octets * 8), np.uint8)  # padded channels: u = 0
    u[..., :c] = x_zero_point + 128  # the padding: the real 0
    u[:, top:top + h, left:left + w, :c] = x.view(np.uint8) ^ np.uint8(0x80)  # x + 128
    rows, words = n * out_h * out_w, bits.shape[0]
    with _threads_for(rows * bits.shape[1]):
        planes = np.empty(u.shape[:3] + (8, octets), np.uint8)
        _bit_planes(u.view(np.uint64), planes)
        windows = np.zeros((rows, 8, words * 8), np.uint8)
        _windows(planes, kh, kw, *stride, *dilation, out_h, out_w, windows)
        acc = np.empty((rows, bits.shape[1]), np.int64)
        _accumulate(windows.view(np.uint64), bits, magnitude, acc)
        out = np.empty(acc.shape, dtype)
        requantize_rows(acc, np.inf, bias - (x_zero_point + 128) * weight_sums, *requant.args, out)
    return out.reshape(n, out_h, out_w, -1)


@int8_kernel("binary_activation")
def binary_activation(node, inputs, rules):
    """127 where x >= its zero point, else -128: the two QUANTIZEs quantize_int8 writes it as (the int8 graph
    holds the node only inside that pass)."""
    _, zp_in = per_tensor(node, node.inputs[0], "input")
    return [np.where(inputs[0] >= zp_in, np.int8(127), np.int8(-128))]
