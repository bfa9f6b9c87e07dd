"""transpose_conv2d: one compiled gather loop over NHWC data, then the bias and the fused activation.

TFLite's reference TransposeConv scatters: for each input pixel, filter tap and channel it adds into the output.
mcc gathers: each output pixel sums the taps whose input pixel lands on it, so one loop covers every crop, output
padding, dilation and group count without a scratch buffer; float sums then differ from TFLite's by rounding
order only.
"""

from __future__ import annotations

import numba
import numpy as np

from .activations import fused_activation
from .layout import from_nhwc, to_nhwc
from .registry import kernel, require_float32


@numba.njit(cache=True, nogil=True)
def transpose_conv_accumulate(x, w, zero, stride_h, stride_w, top, left, dil_h, dil_w, out_h, out_w, groups):
    """sum(w * x) for NHWC x [N,H,W,C] and w [C_out/groups, kh, kw, C]: output (oy, ox) of the cropped output
    reads input (iy, ix) through tap (ky, kx) when iy * stride + ky * dilation = oy + top (likewise for x)."""
    n, h, wd, c = x.shape
    per_group, kh, kw, _ = w.shape
    in_per_group = c // groups
    acc = np.full((n, out_h, out_w, per_group * groups), zero)
    for b in range(n):
        for oy in range(out_h):
            for ox in range(out_w):
                for oc in range(per_group * groups):
                    first = (oc // per_group) * in_per_group
                    o = oc % per_group
                    total = zero
                    for ky in range(kh):
                        fy = oy + top - ky * dil_h
                        if fy < 0 or fy % stride_h or fy // stride_h >= h:
                            continue
                        iy = fy // stride_h
                        for kx in range(kw):
                            fx = ox + left - kx * dil_w
                            if fx < 0 or fx % stride_w or fx // stride_w >= wd:
                                continue
                            ix = fx // stride_w
                            for ic in range(in_per_group):
                                total += w[o, ky, kx, first + ic] * x[b, iy, ix, first + ic]
                    acc[b, oy, ox, oc] = total
    return acc


@kernel("transpose_conv2d")
def transpose_conv2d(node, inputs):
    x, w, bias = (inputs + [None])[:3]
    require_float32(node, x, w, bias)
    layout = node.inputs[0].layout
    x = to_nhwc(x, layout)
    w = np.ascontiguousarray(w if layout == "NHWC" else w.transpose(1, 2, 3, 0))  # IOHW -> [O/g, kh, kw, I]
    out = node.outputs[0].shape
    out_h, out_w = (out[1], out[2]) if layout == "NHWC" else (out[2], out[3])
    (sh, sw), (dh, dw) = node.attrs["stride"], node.attrs["dilation"]
    top, left = node.attrs["padding"][:2]
    acc = transpose_conv_accumulate(x, w, np.float32(0), sh, sw, top, left, dh, dw, out_h, out_w,
                                    node.attrs["groups"])
    if bias is not None:
        acc += bias
    return [from_nhwc(fused_activation(acc, node.attrs["activation"]), layout)]
