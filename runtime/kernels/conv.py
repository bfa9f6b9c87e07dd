"""conv2d (any groups) and depthwise_conv2d: one compiled accumulation loop, then the output stage.

The loop follows TFLite's float reference Conv: for each output element it sums input*filter in float32 over
filter row, filter column, then input channel (skipping positions in the padding), and adds the bias after
the sum. A depthwise conv with multiplier m is the grouped conv with one input channel per group (output
channel c*m + j reads input channel c, exactly TFLite's depthwise indexing), so both ops share the loop and
numba compiles one signature. The accumulation stays separate from the output stage so that integer kernels
can reuse the structure with an int32 accumulator and a requantizing output stage.

In a float island of an int8 model (a layer `--fallback float` keeps float) the QUANTIZE after the conv turns a
last-bit difference into a code, so the kernel sums as the run's peer does (runtime.rules, key "float_conv"):
TFLite's reference order above, or XNNPACK's (conv_fma_bias_first). Rule sets without the key (onnxruntime: MLAS
im2col and blocked SGEMM, not reproduced) keep the reference order.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from .activations import fused_activation
from .layout import from_nhwc, to_nhwc, window_output_hw
from ..rules import rule_set
from .int8_registry import check_rounding
from .registry import kernel, require_float32


@numba.njit(cache=True)
def conv_accumulate(x, w, x_zero_point, zero, stride_h, stride_w, pad_top, pad_left, dil_h, dil_w, out_h, out_w):
    """sum(w * (x - x_zero_point)) for NHWC x [N,H,W,C] and OHWI w [O,kh,kw,C/groups]; groups = C / (C/groups).

    One loop for both number formats, in TFLite's order (filter row, column, input channel): float32 data with
    `zero` = float32 0 accumulates in float32; int8 data with an int64 zero point and `zero` accumulates in int64.
    The output stage (bias, requantization, activation) is the caller's."""
    n, h, wd, c = x.shape
    out_c, kh, kw, group_c = w.shape
    per_group = out_c // (c // group_c)
    acc = np.full((n, out_h, out_w, out_c), zero)
    for b in range(n):
        for oy in range(out_h):
            for ox in range(out_w):
                for oc in range(out_c):
                    first = (oc // per_group) * group_c
                    total = zero
                    for ky in range(kh):
                        iy = oy * stride_h - pad_top + ky * dil_h
                        if iy < 0 or iy >= h:
                            continue
                        for kx in range(kw):
                            ix = ox * stride_w - pad_left + kx * dil_w
                            if ix < 0 or ix >= wd:
                                continue
                            for ic in range(group_c):
                                total += w[oc, ky, kx, ic] * (x[b, iy, ix, first + ic] - x_zero_point)
                    acc[b, oy, ox, oc] = total
    return acc


@numba.njit(cache=True)
def _fma32(x, y, z):
    """float32(x * y + z) rounded once, for float32 values given as float64 (fixed_point.fma_float32's method:
    the product is exact in float64, the sum is made round-to-odd, which then rounds to float32 correctly)."""
    product = x * y
    total = product + z
    z_part = total - product
    error = (product - (total - z_part)) + (z - z_part)
    if error != 0.0:
        mantissa, _ = math.frexp(total)
        if np.int64(mantissa * 9007199254740992.0) % 2 == 0:  # the last bit of the float64 sum is even
            total = np.nextafter(total, np.inf if error > 0 else -np.inf)
    return np.float32(total)


@numba.njit(cache=True)
def conv_fma_bias_first(x, w, bias, stride_h, stride_w, pad_top, pad_left, dil_h, dil_w, out_h, out_w,
                        columns_first):
    """XNNPACK's f32 convolution: the accumulator starts at the bias and takes one fused multiply-add per tap in
    order, filter row, column, then input channel; with `columns_first` the taps go column by column (see
    _xnnpack_columns_first). Padding taps are skipped (XNNPACK reads zeros: acc + 0 * w = acc)."""
    n, h, wd, c = x.shape
    out_c, kh, kw, group_c = w.shape
    per_group = out_c // (c // group_c)
    acc = np.empty((n, out_h, out_w, out_c), np.float32)
    taps = kh * kw
    for b in range(n):
        for oy in range(out_h):
            for ox in range(out_w):
                for oc in range(out_c):
                    first = (oc // per_group) * group_c
                    total = np.float32(bias[oc])
                    for t in range(taps):
                        ky, kx = (t % kh, t // kh) if columns_first else (t // kw, t % kw)
                        iy = oy * stride_h - pad_top + ky * dil_h
                        ix = ox * stride_w - pad_left + kx * dil_w
                        if iy < 0 or iy >= h or ix < 0 or ix >= wd:
                            continue
                        for ic in range(group_c):
                            total = _fma32(np.float64(w[oc, ky, kx, ic]), np.float64(x[b, iy, ix, first + ic]),
                                           np.float64(total))
                    acc[b, oy, ox, oc] = total
    return acc


def _xnnpack_columns_first(node, x, w_ohwi) -> bool:
    """Whether XNNPACK walks this conv's taps column-major: a depthwise conv with multiplier 1 and at most 25 taps
    (its single-pass DWCONV, whose indirection buffer is column-major). Measured on LiteRT 2.3.0: 3x3, 4x4 and
    5x5 column-major; 6x6, 7x7 (multi-pass) and multiplier 2 row-major, as IGEMM convs are."""
    kh, kw = w_ohwi.shape[1:3]
    return node.op == "depthwise_conv2d" and w_ohwi.shape[0] == x.shape[3] and kh * kw <= 25


def _conv(node, x, w_ohwi, bias, rules):
    """Run the accumulation on NHWC data in the rule set's order, apply the fused activation, return in the node's
    layout."""
    layout = node.inputs[0].layout
    x, w_ohwi = to_nhwc(x, layout), np.ascontiguousarray(w_ohwi)
    out_h, out_w = window_output_hw(x, node, w_ohwi.shape[1], w_ohwi.shape[2])
    if bias is None:
        bias = np.zeros(w_ohwi.shape[0], np.float32)  # TFLite adds 0.0f when there is no bias
    (sh, sw), (dh, dw) = node.attrs["stride"], node.attrs["dilation"]
    top, left = node.attrs["padding"][:2]
    rule = rule_set(rules).rules.get("float_conv")
    if rule is not None:
        check_rounding(node, rule, "float32_multiply_add_bias_last", "float32_fma_bias_first")
    if rule is not None and rule.rounding == "float32_fma_bias_first":
        acc = conv_fma_bias_first(x, w_ohwi, np.asarray(bias, np.float32), sh, sw, top, left, dh, dw, out_h, out_w,
                                  _xnnpack_columns_first(node, x, w_ohwi))
    else:
        zero = np.float32(0)
        acc = conv_accumulate(x, w_ohwi, zero, zero, sh, sw, top, left, dh, dw, out_h, out_w) + bias  # sum, then bias
    return [from_nhwc(fused_activation(acc, node.attrs["activation"]), layout)]


@kernel("conv2d", ruled=True)
def conv2d(node, inputs, rules=None):
    x, w, bias = (inputs + [None])[:3]
    require_float32(node, x, w, bias)
    return _conv(node, x, to_nhwc(w, node.inputs[0].layout), bias, rules)


@kernel("depthwise_conv2d", ruled=True)
def depthwise_conv2d(node, inputs, rules=None):
    x, w, bias = (inputs + [None])[:3]
    require_float32(node, x, w, bias)
    # [1,kh,kw,C*m] (NHWC) or [C*m,1,kh,kw] (NCHW) -> the OHWI weight of a conv with C groups: [C*m,kh,kw,1]
    w_ohwi = w.transpose(3, 1, 2, 0) if node.inputs[0].layout == "NHWC" else w.transpose(0, 2, 3, 1)
    return _conv(node, x, w_ohwi, bias, rules)
