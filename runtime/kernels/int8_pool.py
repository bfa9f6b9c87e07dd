"""int8 max_pool2d and avg_pool2d: TFLite's integer pooling, where input and output share scale and zero point.

Max pooling needs no arithmetic; average pooling sums the window's int8 values (padding excluded) and divides
by the count with C's truncating division after adding half the count, so ties round away from zero. Both
clamp to the fused activation's bounds, which is where the kernel sets differ (XNNPACK runs MAX_POOL_2D).

onnxruntime's QLinearAveragePool (contrib qlinear_pool.cc) instead dequantizes every input to float32
(s_in * (q - zp_in)), sums each window in float32 row by row, divides by the count (the kernel's size with
count_include_pad) and quantizes with rint(avg / s_out + zp_out), so input and output may differ in scale; a
window that covers the whole unpadded image takes its global average pool (int8_reduce) instead.
"""

from __future__ import annotations

import numba
import numpy as np

from ...errors import MccError
from .int8_output import activation_bounds
from .int8_reduce import ort_global_average
from .int8_registry import check_rounding, int8_kernel, per_tensor, require_same_quant
from .layout import from_nhwc, to_nhwc, window_output_hw
from .pool import pool_nhwc


@numba.njit(cache=True, nogil=True)
def pool_int8(x, is_max, kh, kw, stride_h, stride_w, pad_top, pad_left, out_h, out_w, lo, hi):
    """Max or rounded average of each window of NHWC int8 x, clamped to [lo, hi]."""
    n, h, wd, c = x.shape
    y = np.empty((n, out_h, out_w, c), np.int8)
    for b in range(n):
        for oy in range(out_h):
            y0 = oy * stride_h - pad_top
            for ox in range(out_w):
                x0 = ox * stride_w - pad_left
                rows = range(max(y0, 0), min(y0 + kh, h))
                cols = range(max(x0, 0), min(x0 + kw, wd))
                count = len(rows) * len(cols)
                for ch in range(c):
                    acc = -128 if is_max else 0
                    for iy in rows:
                        for ix in cols:
                            v = np.int64(x[b, iy, ix, ch])
                            acc = max(acc, v) if is_max else acc + v
                    if not is_max:
                        half = count // 2
                        acc = (acc + half) // count if acc > 0 else -((half - acc) // count)
                    y[b, oy, ox, ch] = min(max(acc, lo), hi)
    return y


def _ort_average(node, x, bounds):
    """QLinearAveragePool on NHWC int8 x, clamped to the fused activation's bounds."""
    a = node.attrs
    s_in, zp_in = per_tensor(node, node.inputs[0], "input")
    s_out, zp_out = per_tensor(node, node.outputs[0], "output")
    if tuple(a["kernel"]) == x.shape[1:3] and not any(a["padding"]):
        total = x.astype(np.int64).sum(axis=(1, 2), keepdims=True)
        y = ort_global_average(total, x.shape[1] * x.shape[2], s_in, zp_in, s_out, zp_out, node)
    else:
        real = s_in * (x.astype(np.int32) - zp_in).astype(np.float32)
        # the float kernel's average: float32 sum in row order, divided by the window's count
        mean = pool_nhwc(real, False, bool(a["count_include_pad"]), *a["kernel"], *a["stride"], *a["padding"][:2],
                         *window_output_hw(x, node, *a["kernel"]))
        y = np.rint(mean / s_out + np.float32(zp_out))
    return np.clip(y, *bounds).astype(np.int8)


@int8_kernel("max_pool2d", "avg_pool2d")
def pool2d(node, inputs, rules):
    x_t, y_t, a = node.inputs[0], node.outputs[0], node.attrs
    rule = rules.rule(node.op, node.name)
    if rule.rounding == "average_float32_ties_even":
        scale, zero_point = per_tensor(node, y_t, "output")
        bounds = activation_bounds(a["activation"], scale, zero_point, rule.kernels, node=node)
        return [from_nhwc(_ort_average(node, to_nhwc(inputs[0], x_t.layout), bounds), x_t.layout)]
    require_same_quant(node, x_t, y_t)
    if node.op == "avg_pool2d" and a["count_include_pad"] and any(a["padding"]):
        raise MccError("avg_pool2d with count_include_pad and padding has no int8 TFLite kernel; run the "
                       "legalize_tflite pass first", node=node.name)
    scale, zero_point = per_tensor(node, y_t, "output")
    check_rounding(node, rule, "exact" if node.op == "max_pool2d" else "divide_round_half_away")
    lo, hi = activation_bounds(a["activation"], scale, zero_point, rule.kernels, node=node)
    x = to_nhwc(inputs[0], x_t.layout)
    y = pool_int8(x, node.op == "max_pool2d", *a["kernel"], *a["stride"], *a["padding"][:2],
                  *window_output_hw(x, node, *a["kernel"]), lo, hi)
    return [from_nhwc(y, x_t.layout)]
