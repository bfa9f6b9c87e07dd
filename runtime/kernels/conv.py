"""conv2d (any groups) and depthwise_conv2d: one compiled accumulation loop, then the output stage.

The loop follows TFLite's float reference Conv: for each output element it sums input*filter in float32 over
filter row, filter column, then input channel (skipping positions in the padding), and adds the bias after
the sum. A depthwise conv with multiplier m is the grouped conv with one input channel per group (output
channel c*m + j reads input channel c, exactly TFLite's depthwise indexing), so both ops share the loop and
numba compiles one signature. The accumulation stays separate from the output stage so that integer kernels
can reuse the structure with an int32 accumulator and a requantizing output stage.
"""

from __future__ import annotations

import numba
import numpy as np

from .activations import fused_activation
from .layout import from_nhwc, to_nhwc, window_output_hw
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


def _conv(node, x, w_ohwi, bias):
    """Run the accumulation on NHWC data, apply the fused activation, return in the node's layout."""
    layout = node.inputs[0].layout
    x, w_ohwi = to_nhwc(x, layout), np.ascontiguousarray(w_ohwi)
    out_h, out_w = window_output_hw(x, node, w_ohwi.shape[1], w_ohwi.shape[2])
    if bias is None:
        bias = np.zeros(w_ohwi.shape[0], np.float32)  # TFLite adds 0.0f when there is no bias
    (sh, sw), (dh, dw) = node.attrs["stride"], node.attrs["dilation"]
    top, left = node.attrs["padding"][:2]
    zero = np.float32(0)
    acc = conv_accumulate(x, w_ohwi, zero, zero, sh, sw, top, left, dh, dw, out_h, out_w) + bias  # TFLite: sum, then bias
    return [from_nhwc(fused_activation(acc, node.attrs["activation"]), layout)]


@kernel("conv2d")
def conv2d(node, inputs):
    x, w, bias = (inputs + [None])[:3]
    require_float32(node, x, w, bias)
    return _conv(node, x, to_nhwc(w, node.inputs[0].layout), bias)


@kernel("depthwise_conv2d")
def depthwise_conv2d(node, inputs):
    x, w, bias = (inputs + [None])[:3]
    require_float32(node, x, w, bias)
    # [1,kh,kw,C*m] (NHWC) or [C*m,1,kh,kw] (NCHW) -> the OHWI weight of a conv with C groups: [C*m,kh,kw,1]
    w_ohwi = w.transpose(3, 1, 2, 0) if node.inputs[0].layout == "NHWC" else w.transpose(0, 2, 3, 1)
    return _conv(node, x, w_ohwi, bias)
