"""fully_connected: a compiled accumulation loop over the last axis, then the output stage.

As in TFLite's float reference FullyConnected, each output is a float32 sum of input*weight over the K
features in order, with the bias added after the sum; leading axes are flattened into rows. TFLite's optimized
and XNNPACK kernels block K for their SIMD dot products, which reorders the sum; mcc keeps the reference order
and gets its SIMD across outputs instead (see fc_accumulate).
"""

from __future__ import annotations

import numba
import numpy as np

from .activations import fused_activation
from .packing import packed
from .registry import kernel, require_float32


@numba.njit(cache=True, nogil=True, parallel=True)
def fc_accumulate(x, w_ko, bias):
    """sum(x * w) + bias for x [rows, K] and the weight transposed to [K, O]: the inner loop runs across
    outputs, each lane one output's sum over K in order, so SIMD changes no rounding; rows go to the threads."""
    rows, depth = x.shape
    out_c = w_ko.shape[1]
    acc = np.empty((rows, out_c), np.float32)
    for r in numba.prange(rows):
        total = acc[r]
        for o in range(out_c):  # explicit loops: a slice assignment here becomes a nested parfor
            total[o] = np.float32(0)
        for d in range(depth):
            value, weights = x[r, d], w_ko[d]
            for o in range(out_c):
                total[o] = total[o] + value * weights[o]
        for o in range(out_c):
            total[o] = total[o] + bias[o]
    return acc


@kernel("fully_connected")
def fully_connected(node, inputs):
    x, w, bias = (inputs + [None])[:3]
    require_float32(node, x, w, bias)
    if bias is None:
        bias = np.zeros(w.shape[0], np.float32)
    w_ko = packed(w, "fully_connected [K,O]", lambda w: np.ascontiguousarray(w.T))
    acc = fc_accumulate(np.ascontiguousarray(x.reshape(-1, x.shape[-1])), w_ko, np.ascontiguousarray(bias))
    return [fused_activation(acc, node.attrs["activation"]).reshape(x.shape[:-1] + (w.shape[0],))]
