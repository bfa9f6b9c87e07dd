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
mcc puts the SIMD lanes across independent output elements (output channels, or pixels for a narrow pointwise
conv), so every element keeps its exact sequence of float32 operations, and packs weights once (packing.packed).
"""
from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

from .activations import fused_activation
from .layout import from_nhwc, to_nhwc, window_output_hw
from ..rules import rule_set
from .int8_registry import check_rounding
from .packing import packed
from .registry import kernel, require_float32


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


@numba.njit(cache=True)
def _step(total, w, x, fused):
    """float32 total + w * x, each rounded (no fastmath: LLVM does not contract them), or with `fused` one fused
    multiply-add. A flag rather than a function argument: numba's disk cache cannot key a signature that holds a
    function, so every process would recompile the loops."""
    return fma32(w, x, total) if fused else total + w * x


@numba.njit(cache=True, parallel=True)
def _conv_loop(x, w, bias, bias_first, fused, columns_first, stride_h, stride_w, pad_top, pad_left,
               dil_h, dil_w, out_h, out_w):
    """For NHWC x [N,H,W,C] and HWIO w [kh,kw,C/groups,O]: every output element starts at bias[oc] (`bias_first`)
    or 0, takes total = _step(total, w, x, fused) once per tap, filter row, column (column, row with
    `columns_first`), then input channel, skipping taps in the padding, and then (not `bias_first`) adds bias[oc].
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
            if not bias_first:
                for oc in range(out_c):
                    total[oc] = total[oc] + bias[oc]
    return acc


_LANES = 128  # output pixels per block of _pointwise_pixel_lanes
_NARROW = 64  # below this many output channels a pointwise conv runs with its lanes across pixels


@numba.njit(cache=True, parallel=True)
def _pointwise_pixel_lanes(x, w, bias, fused):
    """_conv_loop's arithmetic for a 1x1 conv with stride 1, no padding and one group, the SIMD lanes across a
    block of output pixels instead of output channels: a projection to 16..32 channels gives the channel loop too
    few iterations for a vector (measured 2-3x slower per MAC than wide layers). Each lane is still one output
    element taking its input channels in order; the block's input is transposed once to [C, pixels]."""
    n, h, wd, c = x.shape
    out_c = w.shape[3]
    pixels = n * h * wd
    flat = x.reshape(pixels, c)
    acc = np.empty((pixels, out_c), np.float32)
    zero = np.float32(0)
    for block in numba.prange((pixels + _LANES - 1) // _LANES):
        first = block * _LANES
        m = min(_LANES, pixels - first)
        columns = np.empty((c, _LANES), np.float32)
        for q in range(m):
            for ic in range(c):
                columns[ic, q] = flat[first + q, ic]
        lanes = np.empty(_LANES, np.float32)
        for oc in range(out_c):
            start = bias[oc] if fused else zero
            for q in range(m):
                lanes[q] = start
            for ic in range(c):
                weight, column = w[0, 0, ic, oc], columns[ic]
                for q in range(m):
                    lanes[q] = _step(lanes[q], weight, column[q], fused)
            if not fused:  # XNNPACK's order starts at the bias, TFLite's adds it last
                for q in range(m):
                    lanes[q] = lanes[q] + bias[oc]
            for q in range(m):
                acc[first + q, oc] = lanes[q]
    return acc.reshape(n, h, wd, out_c)


def _xnnpack_columns_first(node, x, w_hwio) -> bool:
    """Whether XNNPACK walks this conv's taps column-major: a depthwise conv with multiplier 1 and at most 25 taps
    (its single-pass DWCONV, whose indirection buffer is column-major). Measured on LiteRT 2.3.0: 3x3, 4x4 and
    5x5 column-major; 6x6, 7x7 (multi-pass) and multiplier 2 row-major, as IGEMM convs are."""
    kh, kw, _, out_c = w_hwio.shape
    return node.op == "depthwise_conv2d" and out_c == x.shape[3] and kh * kw <= 25


def _conv(node, x, w_hwio, bias, rules):
    """Run the accumulation on NHWC data in the rule set's order, apply the fused activation, return in the node's
    layout."""
    layout = node.inputs[0].layout
    x = to_nhwc(x, layout)
    out_h, out_w = window_output_hw(x, node, w_hwio.shape[0], w_hwio.shape[1])
    if bias is None:
        bias = np.zeros(w_hwio.shape[3], np.float32)  # TFLite adds 0.0f when there is no bias
    (sh, sw), (dh, dw) = node.attrs["stride"], node.attrs["dilation"]
    top, left = node.attrs["padding"][:2]
    rule = rule_set(rules).rules.get("float_conv")
    if rule is not None:
        check_rounding(node, rule, "float32_multiply_add_bias_last", "float32_fma_bias_first")
    fma = rule is not None and rule.rounding == "float32_fma_bias_first"
    bias = np.ascontiguousarray(bias)
    kh, kw, group_c, out_c = w_hwio.shape
    if (kh, kw, sh, sw, group_c) == (1, 1, 1, 1, x.shape[3]) and not any(node.attrs["padding"]) and out_c < _NARROW:
        acc = _pointwise_pixel_lanes(x, w_hwio, bias, fma)
    else:
        acc = _conv_loop(x, w_hwio, bias, fma, fma, fma and _xnnpack_columns_first(node, x, w_hwio),
                         sh, sw, top, left, dh, dw, out_h, out_w)
    return [from_nhwc(fused_activation(acc, node.attrs["activation"]), layout)]


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
