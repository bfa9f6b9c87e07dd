"""batch_matmul: float32 matmul with batch broadcasting, summed over k as the rule set's peer sums.

TFLite's BATCH_MATMUL and onnxruntime's MatMul run through their own GEMMs, each with its own summation order;
in a float model that is rounding noise, but in a float island of an int8 model the QUANTIZE after it turns a
last-bit difference at a tie into a different code. So the kernel takes the run's rule set (registry.RULED) and
sums as that peer does (runtime.rules: float32_multiply_add_in_order, float32_fma_in_order). onnx2tf and the TFLite converter leave this to the runtime; mcc claims exactness.
"""

from __future__ import annotations

import numpy as np

from ..fixed_point import fma_float32
from ..rules import rule_set
from .int8_registry import check_rounding
from .registry import kernel, require_float32


def _sum_in_order(a, b, fused: bool) -> np.ndarray:
    """sum over k of a[..., :, k] * b[..., k, :] from zero, in order, one float32 rounding per step (fused) or
    two (the product, then the sum)."""
    acc = np.zeros(np.broadcast_shapes(a.shape[:-2], b.shape[:-2]) + (a.shape[-2], b.shape[-1]), np.float32)
    for k in range(a.shape[-1]):
        x, y = a[..., :, k, None], b[..., None, k, :]
        acc = fma_float32(x, y, acc) if fused else acc + x * y
    return acc


@kernel("batch_matmul", ruled=True)
def batch_matmul(node, inputs, rules=None):
    a, b = inputs
    require_float32(node, a, b)
    rule = rule_set(rules).rule("batch_matmul", node.name)
    check_rounding(node, rule, "float32_multiply_add_in_order", "float32_fma_in_order")
    return [_sum_in_order(a, b, fused=rule.rounding == "float32_fma_in_order")]
