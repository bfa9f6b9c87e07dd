"""fully_connected: a compiled accumulation loop over the last axis, then the output stage.

As in TFLite's float reference FullyConnected, each output is a float32 sum of input*weight over the K
features in order, with the bias added after the sum; leading axes are flattened into rows.
"""

from __future__ import annotations

import numba
import numpy as np

from .activations import fused_activation
from .registry import kernel, require_float32


@numba.njit(cache=True)
def fc_accumulate(x, w, bias):
    """sum(x * w) + bias for x [rows, K] and w [O, K]."""
    rows, depth = x.shape
    out_c = w.shape[0]
    acc = np.empty((rows, out_c), np.float32)
    for r in range(rows):
        for o in range(out_c):
            total = np.float32(0)
            for d in range(depth):
                total += x[r, d] * w[o, d]
            acc[r, o] = total + bias[o]
    return acc


@kernel("fully_connected")
def fully_connected(node, inputs):
    x, w, bias = (inputs + [None])[:3]
    require_float32(node, x, w, bias)
    if bias is None:
        bias = np.zeros(w.shape[0], np.float32)
    acc = fc_accumulate(np.ascontiguousarray(x.reshape(-1, x.shape[-1])), np.ascontiguousarray(w),
                        np.ascontiguousarray(bias))
    return [fused_activation(acc, node.attrs["activation"]).reshape(x.shape[:-1] + (w.shape[0],))]
