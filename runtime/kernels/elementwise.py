"""add, sub, mul, div with numpy broadcasting (one float32 operation per element, as TFLite), then the
fused activation."""

from __future__ import annotations

import numpy as np

from .activations import fused_activation
from .registry import kernel

_BINARY = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide}


@kernel(*_BINARY)
def binary(node, inputs):
    with np.errstate(divide="ignore", invalid="ignore"):  # x / 0 is inf or nan, as in the float kernels
        y = _BINARY[node.op](inputs[0], inputs[1])
    return [fused_activation(y, node.attrs["activation"])]
