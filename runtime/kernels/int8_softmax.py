"""int8 softmax over the last axis, output fixed at scale 1/256 and zero point -128, two ways.

TFLite's reference kernel stays in gemmlowp fixed point: x - max(x) is rescaled by beta * s_in into Q5.26,
exponentiated by exp_on_negative_values, summed in Q12.19, inverted by Newton-Raphson
(one_over_one_plus_x_for_x_in_0_1) and multiplied back, with differences below diff_min giving -128. Its
optimized kernel, which LiteRT's default resolver runs (XNNPACK takes SOFTMAX in float only), reads
expf(-s_in * beta * (max - x)) from a 256-entry float table, sums the row in float32 in order, and rounds
p / s_out half away from zero.
"""

from __future__ import annotations

import numpy as np

from ...errors import MccError
from .. import fixed_point as fp
from .int8_registry import check_rounding, int8_kernel, per_tensor, saturate_int8

_DIFF_INTEGER_BITS, _SUM_INTEGER_BITS = 5, 12


def _tflite_reference(node, x, s_in, beta):
    # PreprocessSoftmaxScaling and CalculateInputRadius
    real = min(np.float64(np.float32(beta)) * np.float64(s_in) * float(1 << (31 - _DIFF_INTEGER_BITS)),
               float((1 << 31) - 1))  # beta is a float32 option in the file
    multiplier, left_shift = (int(v) for v in fp.quantize_multiplier(real))
    diff_min = -int(np.floor(((1 << _DIFF_INTEGER_BITS) - 1) * float(1 << (31 - _DIFF_INTEGER_BITS))
                             / float(1 << left_shift)))
    diff = x - x.max(axis=-1, keepdims=True)
    valid = diff >= diff_min
    scaled = fp.saturating_rounding_doubling_high_mul(np.where(valid, diff, 0) << left_shift, multiplier)
    exp = fp.exp_on_negative_values(scaled, _DIFF_INTEGER_BITS)
    total = np.where(valid, fp.rounding_divide_by_pot(exp, _SUM_INTEGER_BITS), 0).sum(axis=-1, keepdims=True)
    # GetReciprocal: normalise the Q12.19 sum to [1, 2), invert, remember the shift
    headroom = 32 - np.frexp(total.astype(np.float64))[1]
    reciprocal = fp.one_over_one_plus_x_for_x_in_0_1(((total << headroom) & 0xFFFFFFFF) - (1 << 31))
    exponent = (_SUM_INTEGER_BITS - headroom) + 31 - 8
    if np.any(exponent > 31):
        raise MccError("int8 softmax input has a row whose exponentials sum to 512 or more (512 entries at or "
                       "near its maximum): TFLite's reference SOFTMAX aborts on it (TFLITE_CHECK on the output "
                       "exponent)", node=node.name)
    y = fp.rounding_divide_by_pot(fp.saturating_rounding_doubling_high_mul(reciprocal, exp), exponent) - 128
    return np.where(valid, y, -128)


def _tflite_optimized(x, s_in, beta, s_out, zp_out):
    scale = -s_in * np.float32(beta)  # PopulateSoftmaxLookupTable, in float32
    table = np.exp((scale * np.arange(256, dtype=np.float32)).astype(np.float64)).astype(np.float32)  # expf
    e = table[x.max(axis=-1, keepdims=True) - x]
    total = np.cumsum(e, axis=-1, dtype=np.float32)[..., -1:]  # left to right, as the C loop adds
    probability = e * (np.float32(1) / (total * s_out))
    return fp.round_half_away(probability) + zp_out


@int8_kernel("softmax")
def softmax(node, inputs, rules):
    x_t = node.inputs[0]
    if node.attrs["axis"] % len(x_t.shape) != len(x_t.shape) - 1:
        raise MccError("int8 softmax runs over the last axis only (TFLite's SOFTMAX)", node=node.name)
    s_in, _ = per_tensor(node, x_t, "input")
    s_out, zp_out = per_tensor(node, node.outputs[0], "output")
    if zp_out != -128 or abs(s_out - 1 / 256) > 0.001 / 256:
        raise MccError(f"TFLite's int8 SOFTMAX needs output scale 1/256 and zero point -128, got {s_out} and "
                       f"{zp_out}", node=node.name)
    rule = rules.rule(node.op, node.name)
    check_rounding(node, rule, "softmax_gemmlowp_fixed_point", "softmax_float32_exp_table")
    x = inputs[0].astype(np.int64)
    if rule.rounding == "softmax_gemmlowp_fixed_point":
        return [saturate_int8(_tflite_reference(node, x, s_in, node.attrs["beta"]))]
    return [saturate_int8(_tflite_optimized(x, s_in, node.attrs["beta"], s_out, zp_out))]
