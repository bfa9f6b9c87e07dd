"""gather, tile, depth_to_space and space_to_depth: data movement, exact for any dtype (like shape_ops), so constant
folding and the int8 kernels use them too."""

from __future__ import annotations

import numpy as np

from .registry import kernel


@kernel("gather")
def gather(node, inputs):
    return [np.take(inputs[0], inputs[1].astype(np.int64), axis=node.attrs["axis"])]


@kernel("tile")
def tile(node, inputs):
    return [np.tile(inputs[0], node.attrs["multiples"])]


def _nchw_depth_to_space(x, b, mode):
    n, c, h, w = x.shape
    split = (n, b, b, c // (b * b), h, w) if mode == "DCR" else (n, c // (b * b), b, b, h, w)
    perm = (0, 3, 4, 1, 5, 2) if mode == "DCR" else (0, 1, 4, 2, 5, 3)
    return x.reshape(split).transpose(perm).reshape(n, c // (b * b), h * b, w * b)


def _nchw_space_to_depth(x, b):
    n, c, h, w = x.shape
    y = x.reshape(n, c, h // b, b, w // b, b).transpose(0, 3, 5, 1, 2, 4)
    return y.reshape(n, c * b * b, h // b, w // b)


def _in_nchw(node, x, fn):
    """Apply an NCHW formula to x in the node's layout."""
    if node.inputs[0].layout != "NHWC":
        return np.ascontiguousarray(fn(x))
    return np.ascontiguousarray(fn(x.transpose(0, 3, 1, 2)).transpose(0, 2, 3, 1))


@kernel("depth_to_space")
def depth_to_space(node, inputs):
    b, mode = node.attrs["block_size"], node.attrs["mode"]
    return [_in_nchw(node, inputs[0], lambda x: _nchw_depth_to_space(x, b, mode))]


@kernel("space_to_depth")
def space_to_depth(node, inputs):
    return [_in_nchw(node, inputs[0], lambda x: _nchw_space_to_depth(x, node.attrs["block_size"]))]
