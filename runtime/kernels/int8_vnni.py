"""The int8 x int8 GEMM of conv2d / fully_connected (one group) on AVX-512 VNNI's int8 dot products (VPDPBUSD).

Where numba compiles for a CPU with AVX-512 VNNI, int8_gemm.conv_gemm runs its one-group int8 products here
instead of numpy's float32 SGEMM on int8 values converted to float: a register tile of _ROWS rows x _VECTORS
vectors of 16 output channels accumulates in int32 over the whole reduction, one VPDPBUSD per row, vector and 4
input values, on weights packed once per array (pack_vnni). VPDPBUSD multiplies UNSIGNED bytes by SIGNED bytes,
so the activations enter as x ^ 0x80 (x + 128 as uint8) and each accumulator starts at -128 * sum(w) of its
channel instead of 0; int32 sums wrap modulo 2**32 (VPDPBUSD, not the saturating VPDPBUSDS), so every accumulator
ends at sum(x * w) exactly whenever that fits int32 (int8_gemm's reach < 2**31): the same integers as the BLAS
path, to the bit, and the output stage (int8_output.requantize_block) is unchanged. XNNPACK's qs8 avx512vnni GEMM
microkernels do the same (x ^ 0x80, the 128 * sum(w) folded into the packed bias, with the input zero point);
mcc keeps the zero point in the bias as the BLAS path does, so the accumulators equal that path's, and
requantizes each block of rows from cache after its product.

Hosts without VNNI (and numba targets named without features, as for a portable cache) keep the BLAS path;
the choice depends on the compile target's features only (as conv.py's vector width does).
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

from .conv import _scratch
from .int8_output import requantize_block
from .target import target_features

VNNI = "+avx512vnni" in target_features()

_LANES = 16  # int32 lanes of a 512-bit vector
_ROWS, _VECTORS = 8, 2  # a tile: 16 int32 accumulator registers of Zen 4's / Ice Lake's 32
_TILE_CHANNELS = _VECTORS * _LANES
_TILE_ACC = _ROWS * _TILE_CHANNELS  # a literal for _scratch
_BLOCK_ACC = 1 << 16  # accumulators per block of rows (256 KB of int32): requantized while in cache

_I32 = ir.IntType(32)
_VEC = ir.VectorType(_I32, _LANES)
_SIGN = ir.Constant(_I32, -0x7F7F7F80)  # 0x80808080


def _pointer(context, builder, arrty, array, index, pointee):
    """Pointer to element `index` of 1-D `array`, as a pointer to `pointee`."""
    data = context.make_array(arrty)(context, builder, array).data
    return builder.bitcast(builder.gep(data, [index]), pointee.as_pointer())


def _slot(context, builder, arrty, acc, slot):
    """Pointer to accumulator vector `slot` of the tile `acc`."""
    return _pointer(context, builder, arrty, acc, builder.mul(slot, ir.Constant(slot.type, _LANES)), _VEC)


@intrinsic
def _word(typingctx, x, at):
    """The 4 bytes x[at:at+4] of a flat int8 array as one int32 (an unaligned load)."""
    def codegen(context, builder, signature, args):
        return builder.load(_pointer(context, builder, signature.args[0], args[0], args[1], _I32), align=1)

    return types.int32(x, at), codegen


@intrinsic
def _dot_start(typingctx, acc, slot, init, at):
    """Accumulator vector `slot` = init[at:at+16] (int32: -128 * sum(w) per channel)."""
    def codegen(context, builder, signature, args):
        value = builder.load(_pointer(context, builder, signature.args[2], args[2], args[3], _VEC), align=4)
        builder.store(value, _slot(context, builder, signature.args[0], args[0], args[1]), align=4)
        return context.get_dummy_value()

    return types.none(acc, slot, init, at), codegen


@intrinsic
def _dot_step(typingctx, acc, slot, w, w_at, word):
    """Accumulator vector `slot` += per lane i the dot product of the 4 bytes of `word` ^ 0x80 (unsigned) with
    the 4 signed bytes w[w_at + 4i : w_at + 4i + 4]: one VPDPBUSD."""
    def codegen(context, builder, signature, args):
        slot_ptr = _slot(context, builder, signature.args[0], args[0], args[1])
        weights = builder.load(_pointer(context, builder, signature.args[2], args[2], args[3], _VEC), align=1)
        x = builder.xor(args[4], _SIGN)
        one = builder.insert_element(ir.Constant(_VEC, None), x, ir.Constant(_I32, 0))
        xs = builder.shuffle_vector(one, one, ir.Constant(_VEC, [0] * _LANES))
        dot = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_VEC, [_VEC] * 3),
                                             "llvm.x86.avx512.vpdpbusd.512")
        builder.store(builder.call(dot, [builder.load(slot_ptr, align=4), xs, weights]), slot_ptr, align=4)
        return context.get_dummy_value()

    if word != types.int32:
        return None
    return types.none(acc, slot, w, w_at, word), codegen


@intrinsic
def _dot_finish(typingctx, out, at, lanes, acc, slot):
    """out[at:at+lanes] = accumulator vector `slot`: a masked store, so lanes past the last channel write nothing."""
    def codegen(context, builder, signature, args):
        total = builder.load(_slot(context, builder, signature.args[3], args[3], args[4]), align=4)
        target = _pointer(context, builder, signature.args[0], args[0], args[1], _VEC)
        count = args[2]
        lanes_type = ir.VectorType(count.type, _LANES)
        one = builder.insert_element(ir.Constant(lanes_type, None), count, ir.Constant(_I32, 0))
        mask = builder.icmp_signed("<", ir.Constant(lanes_type, list(range(_LANES))),
                                   builder.shuffle_vector(one, one, ir.Constant(_VEC, [0] * _LANES)))
        store = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [_VEC, target.type, _I32, mask.type]),
            "llvm.masked.store.v16i32.p0")
        builder.call(store, [total, target, ir.Constant(_I32, 4), mask])
        return context.get_dummy_value()

    return types.none(out, at, lanes, acc, slot), codegen


def pack_vnni(rows: np.ndarray, sums: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int8 weight rows [O, K] as flat bytes [O / 32 tiles][K / 4][32 channels][4] (K and O padded with zero
    weights), and each output channel's accumulator start -128 * sum(w) as int32 [O padded to 32] (wrapped: the
    sums are modulo 2**32); `sums`: each row's sum(w), int64 (int8_gemm.operand_dtype's)."""
    out_c, depth = rows.shape
    tiles, words = -(-out_c // _TILE_CHANNELS), -(-depth // 4)
    w = np.zeros((tiles * _TILE_CHANNELS, words * 4), np.int8)
    w[:out_c, :depth] = rows
    w = w.reshape(tiles, _TILE_CHANNELS, words, 4).transpose(0, 2, 1, 3)
    init = np.zeros(tiles * _TILE_CHANNELS, np.int64)
    init[:out_c] = -128 * sums
    return np.ascontiguousarray(w).reshape(-1), init.astype(np.int32)


@numba.njit(cache=True, nogil=True)
def _gemm(cols, w, init, out_c, block_rows, reach, bias, code, multiplier, shift, fixed, real, scale32, zero_point,
          low, high, out):
    """out = the output stage of cols [R, K] (int8, C order) times pack_vnni's weights, a block of `block_rows`
    rows at a time: per tile of _ROWS rows x _TILE_CHANNELS channels, the int32 accumulators stay in registers
    over the whole reduction; the block's accumulators are then requantized from cache. A last tile's missing
    rows repeat its last row (computed, never stored). On the calling thread, as the BLAS path it replaces: the
    per-sample work runs a sample per core (runtime/threads.py), and a parallel region here doubled the cold
    compile time (numba's parfor passes on this body: 20 s against 9.5 s on the loaded 2-core machine)."""
    rows, depth = cols.shape
    flat = cols.reshape(-1)
    words, whole = (depth + 3) // 4, depth // 4
    tiles = (out_c + _TILE_CHANNELS - 1) // _TILE_CHANNELS
    for block in range((rows + block_rows - 1) // block_rows):
        first = block * block_rows
        last = min(rows, first + block_rows)
        acc = np.empty((last - first, out_c), np.int32)
        flat_acc = acc.reshape(-1)
        at = _scratch(_ROWS, np.int64)
        for tile in range(tiles):
            w0 = tile * words * _TILE_CHANNELS * 4
            for r0 in range(first, last, _ROWS):
                total = _scratch(_TILE_ACC, np.int32)
                for p in range(_ROWS):
                    at[p] = min(r0 + p, last - 1) * depth
                    for j in range(_VECTORS):
                        _dot_start(total, p * _VECTORS + j, init, tile * _TILE_CHANNELS + j * _LANES)
                for k in range(whole):
                    for p in range(_ROWS):
                        word = _word(flat, at[p] + 4 * k)
                        for j in range(_VECTORS):
                            _dot_step(total, p * _VECTORS + j, w, w0 + (k * _VECTORS + j) * _LANES * 4, word)
                if whole < words:  # the last 1-3 values of each row, the missing bytes 0 (their weights are 0)
                    for p in range(_ROWS):
                        tail = 0
                        for i in range(depth - 4 * whole):
                            tail |= (np.int64(flat[at[p] + 4 * whole + i]) & 0xFF) << (8 * i)
                        for j in range(_VECTORS):
                            _dot_step(total, p * _VECTORS + j, w, w0 + (whole * _VECTORS + j) * _LANES * 4,
                                      np.int32(tail))
                for p in range(min(_ROWS, last - r0)):
                    for j in range(_VECTORS):
                        c0 = tile * _TILE_CHANNELS + j * _LANES
                        if c0 < out_c:
                            _dot_finish(flat_acc, (r0 + p - first) * out_c + c0, min(_LANES, out_c - c0), total,
                                        p * _VECTORS + j)
        requantize_block(acc, reach, bias, code, multiplier, shift, fixed, real, scale32, zero_point, low, high,
                         out[first:last])


def vnni_product(cols, packed_w, out_c, reach, bias, requant, out):
    """out [R, out_c] = the output stage (int8_output.RowRequant `requant`, with `bias`) of int8 `cols` [R, K]
    times the weights packed by pack_vnni."""
    w, init = packed_w
    block_rows = max(_ROWS, _BLOCK_ACC // out_c // _ROWS * _ROWS)
    _gemm(np.ascontiguousarray(cols), w, init, out_c, block_rows, reach, bias, *requant.args, out)
