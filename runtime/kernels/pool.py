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

_LOWEST = np.float32(np.finfo(np.float32).min)  # TFLite starts a max at numeric_limits<float>::lowest()


@numba.njit(cache=True, nogil=True)
def pool_nhwc(x, is_max, count_include_pad, kh, kw, stride_h, stride_w, pad_top, pad_left, out_h, out_w):
    """Max (is_max) or average of each window of NHWC x, one signature for both so numba compiles once."""
    n, h, wd, c = x.shape
    y = np.empty((n, out_h, out_w, c), np.float32)
    for b in range(n):
        for oy in range(out_h):
            y0 = oy * stride_h - pad_top
            for ox in range(out_w):
                x0 = ox * stride_w - pad_left
                rows = range(max(y0, 0), min(y0 + kh, h))
                cols = range(max(x0, 0), min(x0 + kw, wd))
                # A window lying wholly in the padding (possible only with padding >= kernel) averages to 0.
                count = np.float32(kh * kw if count_include_pad else max(len(rows) * len(cols), 1))
                for ch in range(c):
                    acc = _LOWEST if is_max else np.float32(0)
                    for iy in rows:
                        for ix in cols:
                            acc = max(acc, x[b, iy, ix, ch]) if is_max else acc + x[b, iy, ix, ch]
                    y[b, oy, ox, ch] = acc if is_max else acc / count
    return y


@kernel("max_pool2d", "avg_pool2d")
def pool2d(node, inputs):
    x = inputs[0]
    require_float32(node, x)
    layout, a = node.inputs[0].layout, node.attrs
    x = to_nhwc(x, layout)
    y = pool_nhwc(x, node.op == "max_pool2d", bool(a.get("count_include_pad", False)), *a["kernel"], *a["stride"],
                  *a["padding"][:2], *window_output_hw(x, node, *a["kernel"]))
    return [from_nhwc(fused_activation(y, a["activation"]), layout)]
