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
