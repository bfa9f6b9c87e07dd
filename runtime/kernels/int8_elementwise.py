"""int8 add, sub and mul with numpy broadcasting, after TFLite's and XNNPACK's quantized binary kernels.

ADD/SUB cannot add two int8 values with different scales directly. TFLite (add.cc / sub.cc Prepare) shifts
both inputs left by 20 bits, rescales each to twice the larger input scale with its own quantized multiplier,
adds, and rescales the sum to the output, each step with gemmlowp double rounding. XNNPACK turns both scale
ratios into integer multipliers of at most 21 bits that share one shift, so the sum needs a single rounding
(half up). MUL multiplies (a - za) * (b - zb) and requantizes once by sa * sb / so, a factor that both
libraries compute in float32. MINIMUM and MAXIMUM compare the raw int8 codes (TFLite ignores the parameters,
so they must agree).
"""

from __future__ import annotations

import numpy as np

from ...errors import MccError
from .. import fixed_point as fp
from .int8_output import activation_bounds, output_stage, requantize
from .int8_registry import check_rounding, int8_kernel, per_tensor, require_same_quant

_LEFT_SHIFT = 20  # TFLite's headroom for int8 inputs (15 for int16)


def _tflite_add(a, b, sa, sb, so, sign, node):
    twice_max = np.float64(2 * max(sa, sb))
    in_real = np.array([np.float64(sa), np.float64(sb)]) / twice_max
    out_real = twice_max / np.float64(np.float32(1 << _LEFT_SHIFT) * so)
    if out_real >= 1:
        raise MccError(f"{node.op}: output scale {so} is below 2 * max(input scales) / 2**20; TFLite's int8 "
                       f"{node.op} cannot represent that rescaling", node=node.name)
    (m_a, m_b), (sh_a, sh_b) = fp.quantize_multiplier(in_real)
    m_out, sh_out = fp.quantize_multiplier(out_real)
    scaled_a = fp.multiply_by_quantized_multiplier_smaller_than_one(a << _LEFT_SHIFT, m_a, sh_a)
    scaled_b = fp.multiply_by_quantized_multiplier_smaller_than_one(b << _LEFT_SHIFT, m_b, sh_b)
    return fp.multiply_by_quantized_multiplier_smaller_than_one(scaled_a + sign * scaled_b, m_out, sh_out)


def _xnnpack_add(a, b, sa, sb, so, sign):
    a_ratio, b_ratio = sa / so, sb / so  # float32, as xnn_init_qs8_add_minmax_scalar_params
    _, exponent = np.frexp(max(a_ratio, b_ratio))
    shift = 20 - (int(exponent) - 1)  # 20 multiplier bits above the larger ratio's leading bit
    m_a = int(np.rint(np.ldexp(a_ratio, shift)))
    m_b = sign * int(np.rint(np.ldexp(b_ratio, shift)))
    return (a * m_a + b * m_b + (1 << (shift - 1))) >> shift


@int8_kernel("add", "sub")
def add_sub(node, inputs, rules):
    sa, za = per_tensor(node, node.inputs[0], "first input")
    sb, zb = per_tensor(node, node.inputs[1], "second input")
    so, zo = per_tensor(node, node.outputs[0], "output")
    a, b = (np.asarray(v, np.int64) for v in inputs)
    a, b = np.broadcast_arrays(a - za, b - zb)
    sign = 1 if node.op == "add" else -1
    rule = rules.rule(node.op, node.name)
    check_rounding(node, rule, "add_shift20_double_rounding", "add_multiplier_shift_half_up")
    if rule.rounding == "add_shift20_double_rounding":
        y = _tflite_add(a, b, sa, sb, so, sign, node)
    else:
        y = _xnnpack_add(a, b, sa, sb, so, sign)
    return [output_stage(y, zo, activation_bounds(node.attrs["activation"], so, zo, rule.kernels))]


@int8_kernel("mul")
def mul(node, inputs, rules):
    sa, za = per_tensor(node, node.inputs[0], "first input")
    sb, zb = per_tensor(node, node.inputs[1], "second input")
    so, zo = per_tensor(node, node.outputs[0], "output")
    a, b = (np.asarray(v, np.int64) for v in inputs)
    rule = rules.rule(node.op, node.name)
    real = np.float64((sa * sb) / so)  # float32 arithmetic in both mul.cc and XNNPACK
    y = requantize((a - za) * (b - zb), real, rule, node)
    return [output_stage(y, zo, activation_bounds(node.attrs["activation"], so, zo, rule.kernels))]


@int8_kernel("minimum", "maximum")
def minimum_maximum(node, inputs, rules):
    check_rounding(node, rules.rule(node.op, node.name), "exact")
    for t in node.inputs:
        require_same_quant(node, t, node.outputs[0])
    return [(np.minimum if node.op == "minimum" else np.maximum)(inputs[0], inputs[1])]
