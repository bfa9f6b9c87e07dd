"""int8 max_pool2d and avg_pool2d: TFLite's integer pooling, where input and output share scale and zero point.

Max pooling needs no arithmetic; average pooling sums the window's int8 values (padding excluded) and divides
by the count with C's truncating division after adding half the count, so ties round away from zero. Both
clamp to the fused activation's bounds, which is where the kernel sets differ (XNNPACK runs MAX_POOL_2D).
"""

from __future__ import annotations

import numba
import numpy as np

from ...errors import MccError
from .int8_output import activation_bounds
from .int8_registry import check_rounding, int8_kernel, per_tensor, require_same_quant
from .layout import from_nhwc, to_nhwc, window_output_hw


@numba.njit(cache=True)
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


@int8_kernel("max_pool2d", "avg_pool2d")
def pool2d(node, inputs, rules):
    x_t, y_t, a = node.inputs[0], node.outputs[0], node.attrs
    require_same_quant(node, x_t, y_t)
    if node.op == "avg_pool2d" and a["count_include_pad"] and any(a["padding"]):
        raise MccError("avg_pool2d with count_include_pad and padding has no int8 TFLite kernel; run the "
                       "legalize_tflite pass first", node=node.name)
    scale, zero_point = per_tensor(node, y_t, "output")
    rule = rules.rule(node.op, node.name)
    check_rounding(node, rule, "exact" if node.op == "max_pool2d" else "divide_round_half_away")
    lo, hi = activation_bounds(a["activation"], scale, zero_point, rule.kernels)
    x = to_nhwc(inputs[0], x_t.layout)
    y = pool_int8(x, node.op == "max_pool2d", *a["kernel"], *a["stride"], *a["padding"][:2],
                  *window_output_hw(x, node, *a["kernel"]), lo, hi)
    return [from_nhwc(y, x_t.layout)]
