"""Layer, group and instance normalization as the IR ops they are made of, for both frontends.

    d = x - mean(x, axes);  var = mean(square(d), axes);  y = d * rsqrt(var + eps) * weight + bias

The TFLite converter decomposes LayerNorm the same way; mcc does it in the frontends rather than in
legalize_tflite because the x86 targets run the arm pipeline (targets.py): a `layer_norm` IR op split by a TFLite
legalization would be split for ONNX too, so one decomposition, shared by torch's native_layer_norm /
native_group_norm / instance norm and ONNX's LayerNormalization / GroupNormalization / InstanceNormalization, is
the simpler contract. In int8 the sub / mul / add have integer kernels; mean, square and rsqrt run where the
quantizer puts them (float islands between DEQUANTIZE / QUANTIZE when they have no int8 kernel). Computing var
from d (two passes) rather than E[x^2] - E[x]^2 is torch's and onnxruntime's order and keeps float results within
rounding of theirs.
"""

from __future__ import annotations

import numpy as np


def normalize(cx, x, axes: list[int], eps: float, weight=None, bias=None):
    """x normalized over `axes` (kept as size-1 axes for the broadcasts), then scaled and shifted by the
    frontend's constants `weight` and `bias` (Consts broadcasting against x, or None)."""
    mean = cx.emit("mean", [x], axes=sorted(axes), keepdims=True)
    d = cx.emit("sub", [x, mean])
    var = cx.emit("mean", [cx.emit("square", [d])], axes=sorted(axes), keepdims=True)
    inv = cx.emit("rsqrt", [cx.emit("add", [var, cx.const(np.float32(eps))])])
    return _affine(cx, cx.emit("mul", [d, inv]), weight, bias)


def group_normalize(cx, x, groups: int, eps: float, weight=None, bias=None):
    """GroupNorm of an [N, C, ...] tensor: statistics over each group of C / groups channels and all positions,
    computed on an [N, groups, C / groups * positions] reshape; weight and bias (Consts of C values) are per
    channel. InstanceNorm is the case groups == C."""
    shape = list(cx.shape(x))
    n, c = shape[:2]
    if c % groups:
        cx.fail(f"{c} channels do not split into {groups} groups")
    flat = cx.emit("reshape", [x], shape=[n, groups, int(np.prod(shape[1:])) // groups])
    y = cx.emit("reshape", [normalize(cx, flat, [2], eps)], shape=shape)
    weight, bias = (None if v is None else cx.const(np.asarray(v.value).reshape([c] + [1] * (len(shape) - 2)), like=v)
                    for v in (weight, bias))
    return _affine(cx, y, weight, bias)


def _affine(cx, y, weight, bias):
    """y * weight + bias, each skipped when it is the identity (absent, all ones, all zeros)."""
    if weight is not None and not np.all(np.asarray(weight.value) == 1):
        y = cx.emit("mul", [y, weight])
    if bias is not None and np.any(np.asarray(bias.value)):
        y = cx.emit("add", [y, bias])
    return y
