"""mean over axes: a float32 sum divided by the element count, as TFLite's float Mean; sum, reduce_max and
reduce_min."""

from __future__ import annotations

import numpy as np

from .registry import kernel


@kernel("mean")
def mean(node, inputs):
    x = inputs[0]
    axes = tuple(sorted(a % x.ndim for a in node.attrs["axes"]))
    return [np.mean(x, axis=axes, keepdims=node.attrs["keepdims"], dtype=x.dtype)]


_REDUCERS = {"sum": np.sum, "reduce_max": np.max, "reduce_min": np.min}


@kernel(*_REDUCERS)
def reduce(node, inputs):
    """sum, reduce_max and reduce_min over axes; exact for any dtype (max and min pick values), so constant folding
    and the int8 kernels use it too."""
    x = inputs[0]
    axes = tuple(sorted(a % x.ndim for a in node.attrs["axes"]))
    return [_REDUCERS[node.op](x, axis=axes, keepdims=node.attrs["keepdims"]).astype(x.dtype, copy=False)]


@kernel("lrn")
def lrn(node, inputs):
    """x * (bias + alpha / size * window sum of x^2) ** -beta over the channel axis of the input's layout, in
    float32 as TFLite's LOCAL_RESPONSE_NORMALIZATION (which multiplies by the power of -beta)."""
    x, a = inputs[0], node.attrs
    axis = 3 if node.inputs[0].layout == "NHWC" else 1
    c, size = x.shape[axis], a["size"]
    squares = np.moveaxis(np.square(x), axis, -1)
    padded = np.pad(squares, [(0, 0)] * 3 + [(size // 2, size // 2)])
    window = sum(padded[..., k:k + c] for k in range(size))
    scale = np.float32(a["bias"]) + np.float32(a["alpha"] / size) * window
    return [x * np.moveaxis(np.power(scale, np.float32(-a["beta"])), -1, axis)]
