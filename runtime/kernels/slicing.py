"""slice and split: data movement, exact for any dtype (like shape_ops), so constant folding can use them too."""

from __future__ import annotations

import numpy as np

from .registry import kernel


@kernel("slice")
def slice_(node, inputs):
    """One gather per sliced axis: the IR's normalised bounds are Python range()s, which a numpy basic slice
    would misread where a negative step runs through element 0 (end -1)."""
    x, a = inputs[0], node.attrs
    for axis, start, end, step in zip(a["axes"], a["starts"], a["ends"], a["steps"]):
        x = np.take(x, np.arange(start, end, step), axis=axis)
    return [np.ascontiguousarray(x)]


@kernel("split")
def split(node, inputs):
    bounds = np.cumsum(node.attrs["sizes"])[:-1]
    return [np.ascontiguousarray(p) for p in np.split(inputs[0], bounds, axis=node.attrs["axis"])]
