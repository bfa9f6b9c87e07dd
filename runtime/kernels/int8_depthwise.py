"""The integer accumulation of the int8 and 16x8 depthwise_conv2d: each output's sum(w * (x - x_zp)) over its
window, padding counting as the real value 0, then the output stage (int8_output.requantize_block, unchanged).

As int8_gemm does for conv2d, mcc sums the integers in float (float32 where every partial sum stays below 2**24,
else float64: int8_gemm.operand_dtype), exact in any order, on the raw input, with x_zp * sum(w) taken from the
bias. A band of output rows keeps a ring of the input rows its windows read, copied once each with the padding
written as x_zp (XNNPACK's DWCONV reads padding from a zero buffer the same way), so border pixels take the same
path as inner ones. A 3x3 window runs on explicit vectors of L channels: per block of L channels the nine weight
vectors stay in registers across the row's pixels, and each tap is one load of L raw codes, converted exactly,
and one fused multiply-add (exact: every product and partial sum is an integer the type holds). The loop it
replaced (one expression per pixel and channel, 3x3 inside the input, a per-tap loop on the border) reloaded the
nine weight vectors for every pixel; on MobileNetV2's 17 depthwise layers (the bench model, 5 samples, one thread,
4 alternating runs, medians) the depthwise nodes took 3.25 -> 2.62 ms a sample under litert-ref and 1.98 -> 1.82
under litert-xnnpack (stride-1 layers 15-30% faster, the four stride-2 ones about 10% slower). Other kernel sizes
sum the taps from the ring in a loop.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

from .conv import L, _first_lanes, _scratch, _vector_at
from .int8_gemm import _threads_for, operand_dtype
from .int8_output import requantize_block

_NO_ROW = -(1 << 62)  # no input row's index
_TAPS, _ROW_SUMS = 9, 3  # a 3x3 window's weight vectors, and one accumulator per window row (three chains)
_VECTORS = (_TAPS + _ROW_SUMS) * L  # a literal for _scratch


def _vector_type(context, arrty):
    """L elements of the array type's dtype."""
    return ir.VectorType(context.get_data_type(arrty.dtype), L)


def _slot(context, builder, arrty, regs, slot):
    return _vector_at(context, builder, arrty, regs, builder.mul(slot, ir.Constant(slot.type, L)))


@intrinsic
def _vector_load(typingctx, regs, slot, source, at):
    """Vector `slot` of `regs` = source[at:at+L] (same type)."""
    def codegen(context, builder, signature, args):
        value = builder.load(_vector_at(context, builder, signature.args[2], args[2], args[3]), align=1)
        builder.store(value, _slot(context, builder, signature.args[0], args[0], args[1]), align=1)
        return context.get_dummy_value()

    return types.none(regs, slot, source, at), codegen


@intrinsic
def _vector_zero(typingctx, regs, slot):
    def codegen(context, builder, signature, args):
        vector = _vector_type(context, signature.args[0])
        builder.store(ir.Constant(vector, [0.0] * L), _slot(context, builder, signature.args[0], args[0], args[1]),
                      align=1)
        return context.get_dummy_value()

    return types.none(regs, slot), codegen


@intrinsic
def _vector_fma(typingctx, regs, total, weight, source, at):
    """Vector `total` of `regs` += vector `weight` * source[at:at+L] (integers, converted exactly to the operand
    type), one fused multiply-add per lane."""
    def codegen(context, builder, signature, args):
        regs_type, vector = signature.args[0], _vector_type(context, signature.args[0])
        total_ptr = _slot(context, builder, regs_type, args[0], args[1])
        weights = builder.load(_slot(context, builder, regs_type, args[0], args[2]), align=1)
        raw = builder.load(_vector_at(context, builder, signature.args[3], args[3], args[4]), align=1)
        value = builder.sitofp(builder.sext(raw, ir.VectorType(ir.IntType(32), L)), vector)
        name = f"llvm.fma.v{L}{'f32' if vector.element == ir.FloatType() else 'f64'}"
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vector, [vector] * 3), name)
        builder.store(builder.call(fma, [weights, value, builder.load(total_ptr, align=1)]), total_ptr, align=1)
        return context.get_dummy_value()

    if not isinstance(source.dtype, types.Integer):
        return None
    return types.none(regs, total, weight, source, at), codegen


@intrinsic
def _opaque(typingctx, value):
    """`value`, through an empty inline asm: LLVM cannot see how it changes from one loop iteration to the next, so
    it does not strength-reduce the nine tap addresses computed from it into nine induction variables (with the
    pixel loop unrolled, 36 of them, spilled to the stack and updated there at every load)."""
    def codegen(context, builder, signature, args):
        return builder.asm(ir.FunctionType(args[0].type, [args[0].type]), "", "=r,0", [args[0]], False)

    return value(value), codegen


@intrinsic
def _vector_store_sum(typingctx, out, at, lanes, regs, first):
    """out[at:at+lanes] = the sum of vectors first, first + 1, first + 2 of `regs`: a masked store, so lanes past the
    last channel write nothing."""
    def codegen(context, builder, signature, args):
        regs_type, first = signature.args[3], args[4]
        total = builder.load(_slot(context, builder, regs_type, args[3], first), align=1)
        for k in (1, 2):
            index = builder.add(first, ir.Constant(first.type, k))
            total = builder.fadd(total, builder.load(_slot(context, builder, regs_type, args[3], index), align=1))
        target = _vector_at(context, builder, signature.args[0], args[0], args[1])
        mask = _first_lanes(builder, args[2])
        store = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [total.type, target.type, ir.IntType(32), mask.type]),
            f"llvm.masked.store.v{L}{'f32' if total.type.element == ir.FloatType() else 'f64'}.p0")
        builder.call(store, [total, target, ir.Constant(ir.IntType(32), 1), mask])
        return context.get_dummy_value()

    if regs.dtype != out.dtype:
        return None
    return types.none(out, at, lanes, regs, first), codegen


def pack_depthwise(w_ohwi: np.ndarray, x_dtype: str) -> tuple[np.ndarray, np.ndarray, float]:
    """Depthwise OHWI weights [C * m, kh, kw, 1] as taps [kh, kw, C * m] in the operand dtype for raw `x_dtype`
    inputs, each output channel's sum(w) (int64), which the zero point multiplies, and the reach of the
    accumulators (operand_dtype)."""
    rows = w_ohwi.reshape(w_ohwi.shape[0], -1)
    dtype, reach, sums = operand_dtype(rows, 128 if x_dtype == "int8" else 1 << 15)
    out_c, kh, kw, _ = w_ohwi.shape
    taps = np.zeros((kh, kw, -(-out_c // L) * L), dtype)
    taps[..., :out_c] = w_ohwi[..., 0].transpose(1, 2, 0)
    return taps, sums, reach


@numba.njit(cache=True, nogil=True)
def _fill_row(x, b, iy, pad_left, zero_point, ring, at, width):
    """ring[at + (j, c)] for j < width = x[b, iy, j - pad_left, c], or x_zp where that lies outside the input. Flat
    unsigned offsets: a copy between numba slices of the rows ran 2.35 us a 113 x 96 row, this one 1.62 (both
    called from Python; 0.69 us from compiled code)."""
    h, wd, c = x.shape[1], x.shape[2], x.shape[3]
    first, last = min(pad_left, width), min(width, max(pad_left, pad_left + wd))  # the columns inside the input
    if iy < 0 or iy >= h:
        first = last = width
    start, flat = np.uint64(at), x.reshape(-1)
    for i in range(np.uint64(first * c)):
        ring[start + i] = zero_point
    if last > first:
        source, target = np.uint64(((b * h + iy) * wd + first - pad_left) * c), start + np.uint64(first * c)
        for i in range(np.uint64((last - first) * c)):
            ring[target + i] = flat[source + i]
    for i in range(np.uint64(last * c), np.uint64(width * c)):
        ring[start + i] = zero_point


@numba.njit(cache=True, nogil=True, parallel=True)
def _depthwise(x, w, stride_h, stride_w, dil_h, dil_w, pad_top, pad_left, zero_point, out_h, out_w, band, reach,
               bias, code, multiplier, shift, fixed, real, scale32, out_zero_point, low, high, out):
    """A multiplier-1 depthwise conv of the raw NHWC input `x` with taps `w` [kh, kw, C padded to L], a band of
    `band` output rows per task: each output row's window rows come from a ring of (kh - 1) * dil_h + 1 padded
    rows (_fill_row; consecutive output rows share rows, so each is copied once a band), its pixels' sums go to a
    row of accumulators in w's type, and the output stage runs on that row. A 3x3 window sums three row chains of
    three fused multiply-adds per vector of L channels (the tap addresses from one _opaque offset a pixel); other
    kernel sizes loop over the taps, indexing the ring with unsigned offsets (numba emits no negative-index
    handling for those)."""
    n, h, wd, c = x.shape
    kh, kw, padded = w.shape
    taps = w.reshape(-1)
    span = (kh - 1) * dil_h + 1
    width = (out_w - 1) * stride_w + (kw - 1) * dil_w + 1
    channels, row_size = np.uint64(c), np.uint64(width * c)
    bands = (out_h + band - 1) // band
    for job in numba.prange(n * bands):
        b, first = job // bands, job % bands * band
        ring = np.empty(span * width * c + L, x.dtype)  # a last vector may read past the last row's end
        held = np.full(span, _NO_ROW, np.int64)  # the input row each slot of the ring holds
        acc = np.empty((out_w, c), w.dtype)
        flat = acc.reshape(-1)
        for oy in range(first, min(out_h, first + band)):
            y = oy * stride_h - pad_top
            for ky in range(kh):
                iy = y + ky * dil_h
                slot = iy % span
                if held[slot] != iy:
                    _fill_row(x, b, iy, pad_left, zero_point, ring, slot * width * c, width)
                    held[slot] = iy
            if kh == 3 and kw == 3:
                offsets = _scratch(_TAPS, np.int64)  # where each tap's input starts, for pixel 0
                for ky in range(3):
                    for kx in range(3):
                        offsets[3 * ky + kx] = (y + ky * dil_h) % span * width * c + kx * dil_w * c
                for c0 in range(0, c, L):
                    regs = _scratch(_VECTORS, w.dtype)
                    for t in range(_TAPS):
                        _vector_load(regs, t, taps, t * padded + c0)
                    for ox in range(out_w):
                        at = _opaque(ox * stride_w * c + c0)
                        for ky in range(3):
                            _vector_zero(regs, _TAPS + ky)
                            for kx in range(3):
                                _vector_fma(regs, _TAPS + ky, 3 * ky + kx, ring, at + offsets[3 * ky + kx])
                        _vector_store_sum(flat, ox * c + c0, min(L, c - c0), regs, _TAPS)
            else:
                for i in range(out_w * c):
                    flat[i] = 0
                for ky in range(kh):
                    r = np.uint64((y + ky * dil_h) % span) * row_size
                    for kx in range(kw):
                        t = w[ky, kx]
                        for ox in range(out_w):
                            a, q = r + np.uint64((ox * stride_w + kx * dil_w) * c), np.uint64(ox * c)
                            for i in range(channels):
                                flat[q + i] += t[i] * ring[a + i]
            requantize_block(acc, reach, bias, code, multiplier, shift, fixed, real, scale32, out_zero_point, low,
                             high, out[b, oy])


def depthwise(x, x_zero_point, packed, stride, dilation, padding, out_h, out_w, bias, requant,
              dtype) -> np.ndarray:
    """The requantized depthwise_conv2d of NHWC `x` with `packed` from pack_depthwise: the raw input, its padding
    read as x_zp, times the taps, with x_zp * sum(w) taken from the bias (as int8_gemm.conv_gemm). A channel
    multiplier m repeats each input channel m times (output channel c * m + j reads input channel c, TFLite's
    indexing), so one multiplier-1 loop serves every m. A sample's rows split into a band per thread (one band on
    one thread, so each input row is converted once)."""
    taps, weight_sums, reach = packed
    out_c = len(weight_sums)
    if out_c != x.shape[3]:
        x = np.repeat(x, out_c // x.shape[3], axis=3)
    out = np.empty((x.shape[0], out_h, out_w, out_c), dtype)
    with _threads_for(out.size):
        band = -(-out_h // min(out_h, numba.get_num_threads()))
        _depthwise(x, taps, *stride, *dilation, *padding[:2], x.dtype.type(x_zero_point), out_h, out_w, band,
                   reach, bias - x_zero_point * weight_sums, *requant.args, out)
    return out
