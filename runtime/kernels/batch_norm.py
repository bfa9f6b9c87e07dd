"""Inference batch norm over the channel axis (last under NHWC, axis 1 otherwise), in torch's order:
(x - mean) / sqrt(var + eps) * weight + bias. Graphs bound for a backend have it folded away; the runtime
keeps it so that a graph can be run, and compared, before and after fold_batchnorm."""

from __future__ import annotations

import numpy as np

from .registry import kernel


@kernel("batch_norm")
def batch_norm(node, inputs):
    x, mean, var, weight, bias = inputs
    axis = x.ndim - 1 if node.inputs[0].layout == "NHWC" else 1
    shape = [1] * x.ndim
    shape[axis] = x.shape[axis]
    mean, var, weight, bias = (t.reshape(shape) for t in (mean, var, weight, bias))
    return [(x - mean) / np.sqrt(var + np.float32(node.attrs["eps"])) * weight + bias]
