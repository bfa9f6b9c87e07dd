"""Data-movement ops (concat, reshape, transpose, pad): exact for any dtype, so constant folding can use
them on integer tensors too."""

from __future__ import annotations

import numpy as np

from .layout import pad_constant
from .registry import kernel


@kernel("concat")
def concat(node, inputs):
    return [np.concatenate(inputs, axis=node.attrs["axis"])]


@kernel("reshape")
def reshape(node, inputs):
    return [inputs[0].reshape(node.attrs["shape"])]


@kernel("transpose")
def transpose(node, inputs):
    return [np.ascontiguousarray(inputs[0].transpose(node.attrs["perm"]))]


@kernel("pad")
def pad(node, inputs):
    x, p = inputs[0], node.attrs["pads"]
    widths = [(p[2 * i], p[2 * i + 1]) for i in range(x.ndim)]
    if node.attrs["mode"] != "constant":
        return [np.pad(x, widths, mode=node.attrs["mode"])]
    value = np.asarray(node.attrs["value"]).astype(x.dtype)
    if min(p, default=0) < 0:
        return [np.pad(x, widths, constant_values=value)]  # refuses negative widths as it always did
    return [pad_constant(x, widths, value)]
