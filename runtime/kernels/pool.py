"""max_pool2d and avg_pool2d as compiled NHWC loops, after TFLite's float reference pooling.

Each window is clipped to the input, so padded positions never win a max; an average divides the float32
sum by the number of input positions in the window (TFLite's rule) or, with count_include_pad, by the whole
window (torch's default; IR padding never lets a window reach past the padded input, so that is kh*kw).
"""

from __future__ import annotations

import numba
import numpy as np

from .activations import fused_activation
from .layout import from_nhwc, to_nhwc, window_output_hw
from .registry import kernel, require_float32

_LOWEST = np.finfo(np.float32).min  # TFLite starts a max at numeric_limits<float>::lowest()


@numba.njit(cache=True)
def max_pool(x, kh, kw, stride_h, stride_w, pad_top, pad_left, out_h, out_w):
    n, h, wd, c = x.shape
    y = np.empty((n, out_h, out_w, c), np.float32)
    for b in range(n):
        for oy in range(out_h):
            y0 = oy * stride_h - pad_top
            for ox in range(out_w):
                x0 = ox * stride_w - pad_left
                for ch in range(c):
                    best = np.float32(_LOWEST)
                    for iy in range(max(y0, 0), min(y0 + kh, h)):
                        for ix in range(max(x0, 0), min(x0 + kw, wd)):
                            best = max(best, x[b, iy, ix, ch])
                    y[b, oy, ox, ch] = best
    return y


@numba.njit(cache=True)
def avg_pool(x, kh, kw, stride_h, stride_w, pad_top, pad_left, out_h, out_w, count_include_pad):
    n, h, wd, c = x.shape
    y = np.empty((n, out_h, out_w, c), np.float32)
    for b in range(n):
        for oy in range(out_h):
            y0 = oy * stride_h - pad_top
            for ox in range(out_w):
                x0 = ox * stride_w - pad_left
                rows = min(y0 + kh, h) - max(y0, 0)
                cols = min(x0 + kw, wd) - max(x0, 0)
                # A window lying wholly in the padding (possible only with padding >= kernel) averages to 0.
                count = kh * kw if count_include_pad else max(rows * cols, 1)
                for ch in range(c):
                    total = np.float32(0)
                    for iy in range(max(y0, 0), min(y0 + kh, h)):
                        for ix in range(max(x0, 0), min(x0 + kw, wd)):
                            total += x[b, iy, ix, ch]
                    y[b, oy, ox, ch] = total / np.float32(count)
    return y


@kernel("max_pool2d", "avg_pool2d")
def pool2d(node, inputs):
    x = inputs[0]
    require_float32(node, x)
    layout, a = node.inputs[0].layout, node.attrs
    x = to_nhwc(x, layout)
    args = (x, *a["kernel"], *a["stride"], *a["padding"][:2], *window_output_hw(x, node, *a["kernel"]))
    y = max_pool(*args) if node.op == "max_pool2d" else avg_pool(*args, bool(a["count_include_pad"]))
    return [from_nhwc(fused_activation(y, a["activation"]), layout)]
