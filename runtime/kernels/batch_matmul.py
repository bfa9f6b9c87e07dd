"""batch_matmul: numpy's float32 matmul with batch broadcasting.

TFLite's BATCH_MATMUL and onnxruntime's MatMul both run through their own GEMMs (ruy / XNNPACK, MLAS), each
with its own summation order; mcc's reference uses numpy's, so float results agree to rounding only.
"""

from __future__ import annotations

import numpy as np

from .registry import kernel, require_float32


@kernel("batch_matmul")
def batch_matmul(node, inputs):
    a, b = inputs
    require_float32(node, a, b)
    return [np.matmul(a, b).astype(np.float32)]
