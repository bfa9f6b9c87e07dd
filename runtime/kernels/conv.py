"""conv2d (any groups) and depthwise_conv2d: one compiled accumulation loop, then the output stage.

The loop follows TFLite's float reference Conv: for each output element it sums input*filter in float32 over
filter row, filter column, then input channel (skipping positions in the padding), and adds the bias after
the sum. A depthwise conv with multiplier m is the grouped conv with one input channel per group (output
channel c*m + j reads input channel c, exactly TFLite's depthwise indexing), so both ops share the loop.

In a float island of an int8 model (a layer `--fallback float` keeps float) the QUANTIZE after the conv turns a
last-bit difference into a code, so the kernel sums as the run's peer does (runtime.rules, key "float_conv"):
TFLite's reference order above, or XNNPACK's (bias first, one fused multiply-add per tap). Rule sets without the
key (onnxruntime: MLAS im2col and blocked SGEMM, not reproduced) keep the reference order.

Speed without reordering: XNNPACK and MLAS vectorise along the reduction (input channels) and so change the sum;
mcc puts the SIMD lanes across independent output elements (output channels), so every element keeps its exact
sequence of float32 operations. Convs whose groups have several input channels (the pointwise and full convs,
nearly all of a MobileNet's MACs) run in register tiles like XNNPACK's GEMM microkernels: 8 output pixels x one
vector of output channels (16 lanes with AVX-512) accumulate in registers over the whole reduction, on weights
packed once per tile (packing.packed), the 1x1 ones with stride 1 and no padding in tiles of 8 consecutive pixels
(_pointwise: one base pointer, as XNNPACK runs them as a plain GEMM, without its indirection buffer); depthwise
convs with multiplier 1 in tiles of 4 pixels x two vectors, lane i reading input channel i, except 3x3 ones without
dilation, which run an output row at a time (_depthwise3x3); depthwise convs with a multiplier run _conv_loop.
Each kernel clamps the fused activation as it stores a result (bit for bit activations.fused_activation, as
XNNPACK's microkernels clamp in registers), so no numpy pass re-reads the output.
"""
from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

from .activations import clamp_bounds, clamp_value
from .layout import from_nhwc, to_nhwc, window_output_hw
from ..rules import rule_set
from .int8_registry import check_rounding
from .packing import packed
from .registry import kernel, require_float32
from .target import target_features


@intrinsic
def fma32(typingctx, x, y, z):
    """float32 x * y + z rounded once: LLVM's llvm.fma.f32, one vfmadd where the CPU has FMA and a correctly
    rounded libm fmaf where it has not, so the result never depends on the machine."""
    if not (x == y == z == types.float32):
        return None

    def codegen(context, builder, signature, args):
        f32 = ir.FloatType()
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(f32, [f32] * 3), "llvm.fma.f32")
        return builder.call(fma, args)

    return types.float32(types.float32, types.float32, types.float32), codegen


@numba.njit(cache=True, nogil=True)
def _step(total, w, x, fused):
    """float32 total + w * x, each rounded (no fastmath: LLVM does not contract them), or with `fused` one fused
    multiply-add. A flag rather than a function argument: numba's disk cache cannot key a signature that holds a
    function, so every process would recompile the loops."""
    return fma32(w, x, total) if fused else total + w * x


@numba.njit(cache=True, nogil=True, parallel=True)
def _conv_loop(x, w, bias, bias_first, fused, columns_first, stride_h, stride_w, pad_top, pad_left,
               dil_h, dil_w, out_h, out_w, lo, hi, at_lo):
    """For NHWC x [N,H,W,C] and HWIO w [kh,kw,C/groups,O]: every output element starts at bias[oc] (`bias_first`)
    or 0, takes total = _step(total, w, x, fused) once per tap, filter row, column (column, row with
    `columns_first`), then input channel, skipping taps in the padding, then (not `bias_first`) adds bias[oc] and
    is clamped by the fused activation (activations.clamp_value).
    The innermost loop runs across output channels, each lane its own element's sequence, so SIMD changes no
    rounding; output rows are spread over the threads."""
    n, h, wd, c = x.shape
    kh, kw, group_c, out_c = w.shape
    groups = c // group_c
    per_group = out_c // groups
    acc = np.empty((n, out_h, out_w, out_c), bias.dtype)
    zero = bias.dtype.type(0)
    for row in numba.prange(n * out_h):
        b, oy = row // out_h, row % out_h
        for ox in range(out_w):
            total = acc[b, oy, ox]
            for oc in range(out_c):  # explicit loops: a slice assignment here becomes a nested parfor
                total[oc] = bias[oc] if bias_first else zero
            for t in range(kh * kw):
                ky, kx = (t % kh, t // kh) if columns_first else (t // kw, t % kw)
                iy = oy * stride_h - pad_top + ky * dil_h
                ix = ox * stride_w - pad_left + kx * dil_w
                if iy < 0 or iy >= h or ix < 0 or ix >= wd:
                    continue
                pixel, tap = x[b, iy, ix], w[ky, kx]
                if group_c == 1 and per_group == 1:  # depthwise, multiplier 1
                    for oc in range(out_c):
                        total[oc] = _step(total[oc], tap[0, oc], pixel[oc], fused)
                elif group_c == 1:  # depthwise: output channel oc reads input channel oc // multiplier
                    for oc in range(out_c):
                        total[oc] = _step(total[oc], tap[0, oc], pixel[oc // per_group], fused)
                else:
                    for g in range(groups):
                        for ic in range(group_c):
                            value = pixel[g * group_c + ic]
                            first = g * per_group
                            for j in range(per_group):  # range(first, ...) would not vectorise
                                total[first + j] = _step(total[first + j], tap[ic, first + j], value, fused)
            for oc in range(out_c):
                total[oc] = clamp_value(total[oc] if bias_first else total[oc] + bias[oc], lo, hi, at_lo)
    return acc


# ---- register tiles: convs and depthwise convs (multiplier 1) -------------------------------------------------
# A tile is a few output pixels x a few vectors of L output channels of one group; its accumulators live in vector
# registers for the whole reduction (numba's np.empty is a heap block LLVM cannot promote, so the tile is a stack
# array touched only at constant offsets once the small loops unroll). Per input channel one weight vector is
# reused by every pixel and one input value is broadcast to all lanes: lanes stay independent output elements.


def _vector_lanes() -> int:
    """float32 lanes of one vector register of the CPU numba compiles for (target.target_features): AVX-512 16, AVX
    8, else (NEON, SSE, a portable baseline) 4, so a tile's accumulators fit the register file."""
    flags = target_features()
    return 16 if "+avx512f" in flags else 8 if "+avx" in flags else 4


L = _vector_lanes()
# Pixels and vectors of a tile: a conv's, a depthwise conv's (whose pixels load L lanes each too); chosen on
# MobileNetV2's layers against 8x2, 6x3, 4x4, 4x2, 12x2, 12x1, 16x1 (conv) and 8x1, 16x1 (depthwise). The prange
# body picks them with a literal `spread`, so LLVM sees constants (a value computed outside the body would reach it
# as an argument: no unrolling, no registers).
_DENSE_PIXELS, _DENSE_VECTORS = 8, 1
_SPREAD_PIXELS, _SPREAD_VECTORS = 4, 2
_MOST_PIXELS = max(_DENSE_PIXELS, _SPREAD_PIXELS)
_ACCUMULATORS = max(_DENSE_PIXELS * _DENSE_VECTORS, _SPREAD_PIXELS * _SPREAD_VECTORS) * L
_VEC = ir.VectorType(ir.FloatType(), L)


@intrinsic
def _scratch(typingctx, size, dtype):
    """A 1-D array of `size` (a literal) elements on the stack, never escaping: LLVM keeps it in registers."""
    if not isinstance(size, types.IntegerLiteral):
        return None
    n, arrty = size.literal_value, types.Array(dtype.dtype, 1, "C")

    def codegen(context, builder, signature, args):
        item_type = context.get_data_type(arrty.dtype)
        array = context.make_array(arrty)(context, builder)
        item = context.get_constant(types.intp, context.get_abi_sizeof(item_type))
        context.populate_array(array, data=cgutils.alloca_once(builder, item_type, size=n),
                               shape=[context.get_constant(types.intp, n)], strides=[item], itemsize=item,
                               meminfo=None)
        return array._getvalue()

    return arrty(size, dtype), codegen


def _vector_at(context, builder, arrty, array, index):
    """Pointer to the L elements (of the array's dtype: float32 here, int8_depthwise's operands too) of 1-D `array`
    from `index` on."""
    data = context.make_array(arrty)(context, builder, array).data
    vector = ir.VectorType(context.get_data_type(arrty.dtype), L)
    return builder.bitcast(builder.gep(data, [index]), vector.as_pointer())


def _slot(context, builder, signature, args):
    """Pointer to accumulator vector args[1] of the tile args[0]."""
    return _vector_at(context, builder, signature.args[0], args[0], builder.mul(args[1], ir.Constant(args[1].type, L)))


@intrinsic
def _lanes_start(typingctx, acc, slot, bias, at, bias_first):
    """Accumulator vector `slot` = bias[at:at+L] (XNNPACK's order) or zeros (TFLite's)."""
    def codegen(context, builder, signature, args):
        value = builder.load(_vector_at(context, builder, signature.args[2], args[2], args[3]), align=4)
        value = builder.select(args[4], value, ir.Constant(_VEC, [0.0] * L))
        builder.store(value, _slot(context, builder, signature, args), align=4)
        return context.get_dummy_value()

    return types.none(acc, slot, bias, at, bias_first), codegen


def _splat(builder, value, vector_type):
    one = builder.insert_element(ir.Constant(vector_type, None), value, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(one, one, ir.Constant(ir.VectorType(ir.IntType(32), L), [0] * L))


def _first_lanes(builder, count):
    """The mask of lanes 0 .. count-1 (none for count <= 0, all for count >= L)."""
    lanes = ir.VectorType(count.type, L)
    return builder.icmp_signed("<", ir.Constant(lanes, list(range(L))), _splat(builder, count, lanes))


@intrinsic
def _lanes_step(typingctx, acc, slot, w, w_at, x, x_at, x_lanes, fused, spread):
    """Accumulator vector `slot` = _step(it, w[w_at:w_at+L], x) per lane: x[x_at] on every lane, or (`spread`, a
    depthwise conv) lane i reads x[x_at+i], masked past x_lanes (those lanes are never stored). One product and one
    sum, each rounded, or (`fused`) one fused multiply-add. `fused` and `spread` are literals: one form is emitted."""
    if not (isinstance(fused, types.BooleanLiteral) and isinstance(spread, types.BooleanLiteral)):
        return None

    def codegen(context, builder, signature, args):
        slot_ptr = _slot(context, builder, signature, args)
        total = builder.load(slot_ptr, align=4)
        weights = builder.load(_vector_at(context, builder, signature.args[2], args[2], args[3]), align=4)
        x_ptr = _vector_at(context, builder, signature.args[4], args[4], args[5])
        if spread.literal_value:
            load = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(_VEC, [x_ptr.type, ir.IntType(32), ir.VectorType(ir.IntType(1), L),
                                                       _VEC]), f"llvm.masked.load.v{L}f32.p0")
            value = builder.call(load, [x_ptr, ir.Constant(ir.IntType(32), 4), _first_lanes(builder, args[6]),
                                        ir.Constant(_VEC, None)])
        else:
            value = _splat(builder, builder.load(builder.bitcast(x_ptr, ir.FloatType().as_pointer())), _VEC)
        if fused.literal_value:
            fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_VEC, [_VEC] * 3), f"llvm.fma.v{L}f32")
            total = builder.call(fma, [weights, value, total])
        else:
            total = builder.fadd(total, builder.fmul(weights, value))
        builder.store(total, slot_ptr, align=4)
        return context.get_dummy_value()

    return types.none(acc, slot, w, w_at, x, x_at, x_lanes, fused, spread), codegen


@intrinsic
def _lanes_finish(typingctx, out, at, lanes, acc, slot, bias, b_at, bias_last, lo, hi, at_lo):
    """out[at:at+lanes] = accumulator vector `slot` (+ bias[b_at:b_at+L] when `bias_last`) clamped by the fused
    activation as activations.clamp_value does, per lane in registers (ordered compares: NaN lanes keep their bits):
    a masked store, so a tile's lanes past the group's last channel write nothing."""
    def codegen(context, builder, signature, args):
        total = builder.load(_vector_at(context, builder, signature.args[3], args[3],
                                        builder.mul(args[4], ir.Constant(args[4].type, L))), align=4)
        bias_value = builder.load(_vector_at(context, builder, signature.args[5], args[5], args[6]), align=4)
        total = builder.select(args[7], builder.fadd(total, bias_value), total)
        lo, hi = _splat(builder, args[8], _VEC), _splat(builder, args[9], _VEC)
        below = builder.select(args[10], builder.fcmp_ordered("<=", total, lo), builder.fcmp_ordered("<", total, lo))
        total = builder.select(below, lo, total)
        total = builder.select(builder.fcmp_ordered(">", total, hi), hi, total)
        target = _vector_at(context, builder, signature.args[0], args[0], args[1])
        mask = _first_lanes(builder, args[2])
        store = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [_VEC, target.type, ir.IntType(32), mask.type]),
            f"llvm.masked.store.v{L}f32.p0")
        builder.call(store, [total, target, ir.Constant(ir.IntType(32), 4), mask])
        return context.get_dummy_value()

    return types.none(out, at, lanes, acc, slot, bias, b_at, bias_last, lo, hi, at_lo), codegen


def _tile_channels(spread: bool) -> int:
    return (_SPREAD_VECTORS if spread else _DENSE_VECTORS) * L


@numba.njit(cache=True, nogil=True)
def _tap(acc, w, w_at, x, at, inside, group_c, x_lanes, fused, spread, checked):
    """One filter tap of a tile: its input channels in order, each into every pixel's lanes; with `checked`, the
    pixels whose tap lies in the padding are skipped (TFLite skips them: adding w * 0 could turn -0 into +0)."""
    run, vectors = (_SPREAD_PIXELS, _SPREAD_VECTORS) if spread else (_DENSE_PIXELS, _DENSE_VECTORS)
    for ic in range(1 if spread else group_c):  # a constant count: no loop for a depthwise conv
        for p in range(run):
            if not checked or inside[p]:
                for j in range(vectors):
                    _lanes_step(acc, p * vectors + j, w, w_at + (ic * vectors + j) * L, x,
                                at[p] + (j * L if spread else ic), x_lanes - j * L, fused, spread)


@numba.njit(cache=True, nogil=True, parallel=True)
def _tiles(x, w, bias, groups, group_c, per_group, kh, kw, fused, spread, columns_first, stride_h, stride_w,
           pad_top, pad_left, dil_h, dil_w, out_h, out_w, lo, hi, at_lo):
    """_conv_loop's per-element arithmetic (taps row by row, or column by column, input channels in order) on
    weights packed by _tile_pack. A tile is a run of output pixels (flat over the rows, so a 7x7 layer wastes no
    lanes) x a block of output channels of a group; the (run, block) pairs are spread over the threads, so 7x7
    layers still give every thread work. A depthwise conv (multiplier 1) runs `spread`: one group whose lane i reads
    input channel i. The fused activation is applied in the store, from the registers (XNNPACK's microkernels clamp
    there too): no second pass over the output."""
    n, h, wd, c = x.shape
    out_c = groups * per_group
    tile_pixels = _SPREAD_PIXELS if spread else _DENSE_PIXELS
    tile_channels = (_SPREAD_VECTORS if spread else _DENSE_VECTORS) * L
    blocks = (per_group + tile_channels - 1) // tile_channels
    pixels = out_h * out_w
    runs = (pixels + tile_pixels - 1) // tile_pixels
    out = np.empty((n, out_h, out_w, out_c), np.float32)
    flat_x, flat_out = x.reshape(-1), out.reshape(-1)
    for item in numba.prange(n * runs * blocks):
        run, vectors = (_SPREAD_PIXELS, _SPREAD_VECTORS) if spread else (_DENSE_PIXELS, _DENSE_VECTORS)
        block, q0, b = item % blocks, item // blocks % runs * run, item // (blocks * runs)
        c0 = block * vectors * L  # first output channel of the tile in its group
        acc = _scratch(_ACCUMULATORS, np.float32)
        top, left = _scratch(_MOST_PIXELS, np.int64), _scratch(_MOST_PIXELS, np.int64)
        base, at = _scratch(_MOST_PIXELS, np.int64), _scratch(_MOST_PIXELS, np.int64)
        inside = _scratch(_MOST_PIXELS, np.bool_)
        interior = True  # every tap of every pixel inside the input: no per-pixel test
        oy, ox = q0 // out_w, q0 % out_w
        for p in range(run):
            top[p], left[p] = oy * stride_h - pad_top, ox * stride_w - pad_left
            interior = (interior and q0 + p < pixels and top[p] >= 0 and top[p] + (kh - 1) * dil_h < h
                        and left[p] >= 0 and left[p] + (kw - 1) * dil_w < wd)
            ox += 1
            if ox == out_w:
                oy, ox = oy + 1, 0
        for g in range(groups):
            x0 = c0 if spread else g * group_c  # first input channel the tile reads
            first = g * blocks * vectors * L + c0  # in the packed bias
            for p in range(run):
                base[p] = ((b * h + top[p]) * wd + left[p]) * c + x0  # of the tap (0, 0)
                for j in range(vectors):
                    _lanes_start(acc, p * vectors + j, bias, first + j * L, fused)
            for t in range(kh * kw):
                ky, kx = (t % kh, t // kh) if columns_first else (t // kw, t % kw)
                w_at = (((g * blocks + block) * kh + ky) * kw + kx) * group_c * vectors * L
                shift = (ky * dil_h * wd + kx * dil_w) * c
                for p in range(run):
                    at[p] = base[p] + shift
                if interior:  # two literal variants of the tap
                    _tap(acc, w, w_at, flat_x, at, inside, group_c, c - x0, fused, spread, False)
                else:
                    for p in range(run):
                        iy, ix = top[p] + ky * dil_h, left[p] + kx * dil_w
                        inside[p] = 0 <= iy < h and 0 <= ix < wd and q0 + p < pixels
                    _tap(acc, w, w_at, flat_x, at, inside, group_c, c - x0, fused, spread, True)
            lanes = per_group - c0
            for p in range(min(run, pixels - q0)):
                o_at = (b * pixels + q0 + p) * out_c + g * per_group + c0
                for j in range(vectors):
                    if lanes > j * L:
                        _lanes_finish(flat_out, o_at + j * L, min(L, lanes - j * L), acc, p * vectors + j, bias,
                                      first + j * L, not fused, lo, hi, at_lo)
    return out


_NO_CLAMP = clamp_bounds(None)


def _tiles_for(fused: bool, spread: bool):
    """_tiles compiled for one pair of flags as literals (the intrinsics emit one form). A closure per pair, so a
    process compiles only the pairs it runs (numba's cache keys a closure by its cell values), each with its own
    name: numba names a compiled function's symbols after its qualified name and a per-process counter, so two
    closures of one name, cached by two processes, can get the same symbol and clash when a third loads both
    (numba issue #10486; seen here as "NRT_adapt_ndarray_to_python: descr is NULL"). The activation's clamp
    (lo, hi, at_lo) defaults to none."""
    def entry(x, w, bias, groups, group_c, per_group, kh, kw, columns_first, stride_h, stride_w, pad_top, pad_left,
              dil_h, dil_w, out_h, out_w, lo=_NO_CLAMP[0], hi=_NO_CLAMP[1], at_lo=False):
        return _tiles(x, w, bias, groups, group_c, per_group, kh, kw, fused, spread, columns_first, stride_h,
                      stride_w, pad_top, pad_left, dil_h, dil_w, out_h, out_w, lo, hi, at_lo)

    entry.__name__ = entry.__qualname__ = f"_tiles_{'fma' if fused else 'ref'}_{'depthwise' if spread else 'conv'}"
    return numba.njit(cache=True, nogil=True)(entry)


_TILES = {(fused, spread): _tiles_for(fused, spread) for fused in (False, True) for spread in (False, True)}


@numba.njit(cache=True, nogil=True, parallel=True)
def _pointwise(x, w, bias, groups, group_c, per_group, fused, lo, hi, at_lo):
    """_tiles for a 1x1 conv with stride 1 and no padding (MobileNets' expansions and projections): output pixel q
    reads input pixel q, so a tile's 8 pixels are consecutive and pixel p's input channel ic sits at a constant
    offset p*C + ic from one base (_tiles keeps 8 independent pixel offsets, which LLVM spills and reloads at every
    input channel). Pixels run flat over the batch; the last run is moved back to end at the last pixel (the input
    has at least one tile's pixels) and stores only the pixels no other run stores. Same per-element sequence.
    1.5-2x faster than _tiles on MobileNetV2's short-reduction expansions (C = 16, 24, 32), 1.0-1.2x on the rest."""
    n, h, wd, c = x.shape
    out_c = groups * per_group
    blocks = (per_group + _DENSE_VECTORS * L - 1) // (_DENSE_VECTORS * L)
    pixels = n * h * wd
    runs = (pixels + _DENSE_PIXELS - 1) // _DENSE_PIXELS
    out = np.empty((n, h, wd, out_c), np.float32)
    flat_x, flat_out = x.reshape(-1), out.reshape(-1)
    for item in numba.prange(runs * blocks):
        run, vectors = _DENSE_PIXELS, _DENSE_VECTORS
        block, q = item % blocks, item // blocks * run
        q0 = min(q, pixels - run)  # first pixel of the tile; it stores from q on
        c0 = block * vectors * L
        acc = _scratch(_ACCUMULATORS, np.float32)
        for g in range(groups):
            first = g * blocks * vectors * L + c0
            for p in range(run):
                for j in range(vectors):
                    _lanes_start(acc, p * vectors + j, bias, first + j * L, fused)
            at = q0 * c + g * group_c
            w_at = (g * blocks + block) * group_c * vectors * L
            for ic in range(group_c):
                for p in range(run):
                    for j in range(vectors):
                        _lanes_step(acc, p * vectors + j, w, w_at + (ic * vectors + j) * L, flat_x, at + p * c + ic,
                                    0, fused, False)
            lanes = per_group - c0
            for p in range(q - q0, run):
                o_at = (q0 + p) * out_c + g * per_group + c0
                for j in range(vectors):
                    if lanes > j * L:
                        _lanes_finish(flat_out, o_at + j * L, min(L, lanes - j * L), acc, p * vectors + j, bias,
                                      first + j * L, not fused, lo, hi, at_lo)
    return out


def _pointwise_for(fused: bool):
    """_pointwise compiled with `fused` a literal, named apart as _tiles_for's closures are."""
    def entry(x, w, bias, groups, group_c, per_group, lo, hi, at_lo):
        return _pointwise(x, w, bias, groups, group_c, per_group, fused, lo, hi, at_lo)

    entry.__name__ = entry.__qualname__ = f"_pointwise_{'fma' if fused else 'ref'}"
    return numba.njit(cache=True, nogil=True)(entry)


_POINTWISE = {fused: _pointwise_for(fused) for fused in (False, True)}


def takes_pointwise(spread: bool, kh: int, kw: int, sh: int, sw: int, padding, x_shape) -> bool:
    """Whether _pointwise runs the conv: a dense or grouped 1x1 one with stride 1, no padding and at least a tile's
    pixels."""
    n, h, w = x_shape[:3]
    return (not spread and (kh, kw, sh, sw) == (1, 1, 1, 1) and not any(padding)
            and n * h * w >= _DENSE_PIXELS)


def _tile_pack(w_hwio, groups, channels):
    """HWIO [kh,kw,C/groups,O] -> flat [group, channel block, kh, kw, C/groups, block channels], each group's
    output channels zero-padded to whole blocks, so a tile reads its weights contiguously and never past the end."""
    kh, kw, group_c, out_c = w_hwio.shape
    per_group = out_c // groups
    blocks = -(-per_group // channels)
    w = np.zeros((groups, kh, kw, group_c, blocks * channels), np.float32)
    w[..., :per_group] = w_hwio.reshape(kh, kw, group_c, groups, per_group).transpose(3, 0, 1, 2, 4)
    return np.ascontiguousarray(w.reshape(groups, kh, kw, group_c, blocks, channels)
                                .transpose(0, 4, 1, 2, 3, 5)).reshape(-1)


def _tile_bias(bias, groups, channels):
    per_group = bias.size // groups
    padded = np.zeros((groups, -(-per_group // channels) * channels), np.float32)
    padded[:, :per_group] = bias.reshape(groups, per_group)
    return padded.reshape(-1)


# ---- 3x3 depthwise convs (multiplier 1, no dilation): rows --------------------------------------------------------
@numba.njit(cache=True, nogil=True, parallel=True)
def _depthwise3x3(x, w, bias, fused, stride_h, stride_w, pad_top, pad_left, out_h, out_w, lo, hi, at_lo):
    """_conv_loop's arithmetic for a 3x3 depthwise conv with multiplier 1 (MobileNets' ~17 a model), an output row
    at a time: a pixel whose window lies inside the input sums its nine taps in one expression along the contiguous
    channels (TFLite's order, 0 + w * x tap by tap row by row, then the bias; or `fused`, XNNPACK's, the bias then
    one fused multiply-add a tap, column by column), held in registers, indexing the flat input rows with unsigned
    offsets (no negative-index handling); a pixel on the border skips its taps in the padding as _conv_loop does.
    Each result is clamped by the fused activation (activations.clamp_value) as it is stored.
    1.3x faster than the spread tiles on MobileNetV2's 17 layers (one thread), which load and store their
    accumulators and mask their lanes at every tap. XNNPACK's DWCONV microkernels likewise keep a pixel's taps in
    registers; mcc keeps each lane's exact sequence of roundings."""
    n, h, wd, c = x.shape
    out = np.empty((n, out_h, out_w, c), np.float32)
    zero, channels = np.float32(0), np.uint64(c)
    d1, d2 = np.uint64(c), np.uint64(2 * c)
    for job in numba.prange(n * out_h):
        b, oy = job // out_h, job % out_h
        w00, w01, w02, w10, w11, w12 = w[0, 0], w[0, 1], w[0, 2], w[1, 0], w[1, 1], w[1, 2]
        w20, w21, w22 = w[2, 0], w[2, 1], w[2, 2]
        y = oy * stride_h - pad_top
        rows_inside = y >= 0 and y + 2 < h
        r0 = x[b, min(max(y, 0), h - 1)].reshape(-1)  # any row when the window leaves the input: unused then
        r1 = x[b, min(max(y + 1, 0), h - 1)].reshape(-1)
        r2 = x[b, min(max(y + 2, 0), h - 1)].reshape(-1)
        flat = out[b, oy].reshape(-1)
        for ox in range(out_w):
            x0 = ox * stride_w - pad_left
            q = np.uint64(ox * c)
            if rows_inside and x0 >= 0 and x0 + 2 < wd:
                p = np.uint64(x0 * c)
                if fused:
                    for i in range(channels):
                        t = fma32(w00[i], r0[p + i], bias[i])
                        t = fma32(w10[i], r1[p + i], t)
                        t = fma32(w20[i], r2[p + i], t)
                        t = fma32(w01[i], r0[p + d1 + i], t)
                        t = fma32(w11[i], r1[p + d1 + i], t)
                        t = fma32(w21[i], r2[p + d1 + i], t)
                        t = fma32(w02[i], r0[p + d2 + i], t)
                        t = fma32(w12[i], r1[p + d2 + i], t)
                        flat[q + i] = clamp_value(fma32(w22[i], r2[p + d2 + i], t), lo, hi, at_lo)
                else:
                    for i in range(channels):
                        flat[q + i] = clamp_value(zero + w00[i] * r0[p + i] + w01[i] * r0[p + d1 + i]
                                             + w02[i] * r0[p + d2 + i] + w10[i] * r1[p + i] + w11[i] * r1[p + d1 + i]
                                             + w12[i] * r1[p + d2 + i] + w20[i] * r2[p + i] + w21[i] * r2[p + d1 + i]
                                             + w22[i] * r2[p + d2 + i] + bias[i], lo, hi, at_lo)
                continue
            total = out[b, oy, ox]
            for i in range(c):  # explicit loops: a slice assignment here becomes a nested parfor
                total[i] = bias[i] if fused else zero
            for t in range(9):
                ky, kx = (t % 3, t // 3) if fused else (t // 3, t % 3)
                iy, ix = y + ky, x0 + kx
                if iy < 0 or iy >= h or ix < 0 or ix >= wd:
                    continue
                pixel, tap = x[b, iy, ix], w[ky, kx]
                for i in range(c):
                    total[i] = _step(total[i], tap[i], pixel[i], fused)
            for i in range(c):
                total[i] = clamp_value(total[i] if fused else total[i] + bias[i], lo, hi, at_lo)
    return out


def takes_rows(spread: bool, kh: int, kw: int, dh: int, dw: int, fused: bool, columns_first: bool) -> bool:
    """Whether _depthwise3x3 runs the conv: a depthwise one with multiplier 1 (`spread`), 3x3, no dilation, in
    TFLite's order or XNNPACK's (fused, columns first)."""
    return spread and (kh, kw, dh, dw) == (3, 3, 1, 1) and columns_first == fused


def _xnnpack_columns_first(node, x, w_hwio) -> bool:
    """Whether XNNPACK walks this conv's taps column-major: a depthwise conv with multiplier 1 and at most 25 taps
    (its single-pass DWCONV, whose indirection buffer is column-major). Measured on LiteRT 2.3.0: 3x3, 4x4 and
    5x5 column-major; 6x6, 7x7 (multi-pass) and multiplier 2 row-major, as IGEMM convs are."""
    kh, kw, _, out_c = w_hwio.shape
    return node.op == "depthwise_conv2d" and out_c == x.shape[3] and kh * kw <= 25


def _conv(node, x, w_hwio, bias, rules):
    """Run the accumulation on NHWC data in the rule set's order, the fused activation in its store; return in the
    node's layout."""
    layout = node.inputs[0].layout
    x = to_nhwc(x, layout)
    out_h, out_w = window_output_hw(x, node, w_hwio.shape[0], w_hwio.shape[1])
    has_bias = bias is not None
    if bias is None:
        bias = np.zeros(w_hwio.shape[3], np.float32)  # TFLite adds 0.0f when there is no bias
    (sh, sw), (dh, dw) = node.attrs["stride"], node.attrs["dilation"]
    top, left = node.attrs["padding"][:2]
    rule = rule_set(rules).rules.get("float_conv")
    if rule is not None:
        check_rounding(node, rule, "float32_multiply_add_bias_last", "float32_fma_bias_first")
    fma = rule is not None and rule.rounding == "float32_fma_bias_first"
    kh, kw, group_c, out_c = w_hwio.shape
    groups = x.shape[3] // group_c
    columns_first = fma and _xnnpack_columns_first(node, x, w_hwio)
    clamp = clamp_bounds(node.attrs["activation"])
    spread = group_c == 1 and out_c == groups  # depthwise, multiplier 1: one group, lanes across channels
    if takes_rows(spread, kh, kw, dh, dw, fma, columns_first):
        acc = _depthwise3x3(x, w_hwio.reshape(3, 3, out_c), np.ascontiguousarray(bias), fma, sh, sw, top, left,
                            out_h, out_w, *clamp)
    elif group_c == 1 and groups > 1 and not spread:  # depthwise with a multiplier: few lanes per group
        acc = _conv_loop(x, w_hwio, np.ascontiguousarray(bias), fma, fma, columns_first, sh, sw, top, left, dh, dw,
                         out_h, out_w, *clamp)
    else:
        groups, group_c, per_group = (1, 1, out_c) if spread else (groups, group_c, out_c // groups)
        channels = _tile_channels(spread)
        w = packed(w_hwio, ("tiles", groups, channels), lambda w: _tile_pack(w, groups, channels))
        pack_bias = lambda b: _tile_bias(b, groups, channels)  # noqa: E731
        bias = packed(bias, ("tiles", groups, channels), pack_bias) if has_bias else pack_bias(bias)
        if takes_pointwise(spread, kh, kw, sh, sw, node.attrs["padding"], x.shape):
            acc = _POINTWISE[fma](x, w, bias, groups, group_c, per_group, *clamp)
        else:
            acc = _TILES[fma, spread](x, w, bias, groups, group_c, per_group, kh, kw, columns_first, sh, sw, top,
                                      left, dh, dw, out_h, out_w, *clamp)
    return [from_nhwc(acc, layout)]


def _hwio(w, axes):
    return np.ascontiguousarray(w.transpose(axes))


@kernel("conv2d", ruled=True)
def conv2d(node, inputs, rules=None):
    x, w, bias = (inputs + [None])[:3]
    require_float32(node, x, w, bias)
    axes = (1, 2, 3, 0) if node.inputs[0].layout == "NHWC" else (2, 3, 1, 0)  # OHWI or OIHW -> HWIO
    return _conv(node, x, packed(w, f"conv2d hwio {axes}", lambda w: _hwio(w, axes)), bias, rules)


@kernel("depthwise_conv2d", ruled=True)
def depthwise_conv2d(node, inputs, rules=None):
    x, w, bias = (inputs + [None])[:3]
    require_float32(node, x, w, bias)
    # [1,kh,kw,C*m] (NHWC) or [C*m,1,kh,kw] (NCHW) -> the HWIO weight of a conv with C groups: [kh,kw,1,C*m]
    axes = (1, 2, 0, 3) if node.inputs[0].layout == "NHWC" else (2, 3, 1, 0)
    return _conv(node, x, packed(w, f"depthwise hwio {axes}", lambda w: _hwio(w, axes)), bias, rules)
