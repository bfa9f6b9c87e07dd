"""mean over axes: a float32 sum divided by the element count, as TFLite's float Mean."""

from __future__ import annotations

import numpy as np

from .registry import kernel


@kernel("mean")
def mean(node, inputs):
    x = inputs[0]
    axes = tuple(sorted(a % x.ndim for a in node.attrs["axes"]))
    return [np.mean(x, axis=axes, keepdims=node.attrs["keepdims"], dtype=x.dtype)]
