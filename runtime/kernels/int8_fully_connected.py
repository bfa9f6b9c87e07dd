"""int8 fully_connected: sum(w * (x - x_zp)) over the last axis plus the int32 bias, then the output stage.

Integer sums are exact in any order, so the accumulation is int8_gemm's (the rows as a 1x1 conv: a float GEMM on
the integers, exact); what decides bit-exactness is the rule: LiteRT 2.3.0's reference FULLY_CONNECTED rounds
in float64 (not gemmlowp), its XNNPACK delegate in float32 with ties to even. Its 16x8 form (int16 activations, int64 bias) rounds as the int8
reference does (measured: 0 of 1,024 differ; gemmlowp's double rounding 38, the conv's 16-bit multiplier 40).
"""

from __future__ import annotations

import numpy as np

from ...errors import MccError

from .int8_binary import binary_gemm, binary_weights
from .int8_conv import layer_requant, weight_scales
from .int8_gemm import conv_gemm, pack_gemm
from .int8_registry import int8_kernel, per_tensor
from .packing import packed


def _check_bias_scale(node, product_scale, s_out) -> None:
    """TFLite's per-tensor FULLY_CONNECTED refuses a bias whose scale is off s_in * s_w by more than 2% of the
    output scale (GetQuantizedConvolutionMultipler); a bias without parameters counts as scale 0."""
    b = node.inputs[2]
    bias_scale = np.float64(b.quant.scale[0]) if b.quant is not None else 0.0
    if abs(np.float64(product_scale) - bias_scale) / np.float64(s_out) > 0.02:
        raise MccError(f"{node.op}: bias '{b.name}' has scale {bias_scale}, but TFLite requires s_in * s_w = "
                       f"{float(product_scale)} (within 2% of the output scale) for per-tensor weights",
                       node=node.name)


@int8_kernel("fully_connected")
def fully_connected(node, inputs, rules):
    x, w, bias = (inputs + [None])[:3]
    s_in, zp_in = per_tensor(node, node.inputs[0], "input")
    s_out, _ = per_tensor(node, node.outputs[0], "output")
    out_c = w.shape[0]
    s_w = weight_scales(node, node.inputs[1], out_c, 0)
    if bias is not None and node.inputs[1].quant.scale.size == 1:
        _check_bias_scale(node, s_in * s_w[0], s_out)
    bias, requant = layer_requant(node, w, bias, rules, out_c, 0)
    rows = x.reshape(1, 1, -1, x.shape[-1])  # the rows of a 1x1 conv
    window = ((1, 1), (1, 1), (1, 1), (0, 0, 0, 0), 1, rows.shape[2], bias, requant, node.outputs[0].dtype)
    binary = binary_weights(w, "fully_connected", lambda w: w[:, None, None, :]) if x.dtype == np.int8 else None
    y = None if binary is None else binary_gemm(rows, zp_in, binary, *window)
    if y is None:
        gemm = packed(w, f"fully_connected:{x.dtype}", lambda w: pack_gemm(w[:, None, None, :], 1, str(x.dtype)))
        y = conv_gemm(rows, zp_in, gemm, *window)
    return [y.reshape(x.shape[:-1] + (out_c,))]
