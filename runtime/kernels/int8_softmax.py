"""int8 softmax over the last axis, output fixed at scale 1/256 and zero point -128, two ways.

TFLite's reference kernel stays in gemmlowp fixed point: x - max(x) is rescaled by beta * s_in into Q5.26,
exponentiated by exp_on_negative_values, summed in Q12.19, inverted by Newton-Raphson
(one_over_one_plus_x_for_x_in_0_1) and multiplied back, with differences below diff_min giving -128. Its
optimized kernel, which LiteRT's default resolver runs (XNNPACK takes SOFTMAX in float only), reads
expf(-s_in * beta * (max - x)) from a 256-entry float table, sums the row in float32 in order, and rounds
p / s_out half away from zero.

onnxruntime's QLinearSoftmax (contrib qlinear_softmax.cc) reads float32 exponentials from its own 256-entry
table, exp((d + shift) * s_in) computed in double for d = x - max(x) and a shift that keeps the row sum finite,
sums the row in float32 in order and rounds e * floor(1 / s_out) / sum ties to even, for any output scale and
any axis (it transposes the axis last). Two details of that arithmetic decide codes; benchmarks/fuzz_rules.py
found them after a detector's x86-int8 file showed 4 of 59,451,200 elements 1 apart at a QLinearSoftmax
(figures: its cases build("softmax", "onnxruntime", i, 10000), i < 3000, 25,911,908 elements):
- the shift is log(FLT_MAX / n) in float: the quotient is a float, so C++ calls the float overload of log, libm's
  logf. With the double log 10,510 elements differ (every table entry moves by up to 4e-6 relative, which flips
  near-ties), with logf none. numpy's float32 log is not logf (it differs for 8,266 of the first 300,000 row
  lengths), so the kernel calls libm's;
- e * floor(1 / s_out) / sum reaches nearbyint unrounded to float32. Rounded to float32 (product, then quotient),
  23,196 of the first 3,520,221 elements differ: reals within 3e-6 of a half (133.4999976 gives 133 in
  onnxruntime where the float32 quotient 133.5 gives 134), and rows of 4 or fewer at 1 / s_out >= 1024, whose
  float32 product passes FLT_MAX, becomes inf and code 127 while onnxruntime gives the true code. In double, none.
The source as read (main) spells that line in float32 and would wrap codes above 127 to negative ones; the
onnxruntime 1.32 x86-64 binary does neither, so the rule follows the binary as measured.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import math

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


@functools.cache
def _libm_logf():
    """libm's logf, which onnxruntime's table shift calls (not correctly rounded: not math.log rounded to float)."""
    logf = ctypes.CDLL(ctypes.util.find_library("m")).logf
    logf.restype, logf.argtypes = ctypes.c_float, [ctypes.c_float]
    return logf


def _ort_softmax(x, s_in, s_out, zp_out, n):
    """QLinearSoftmax over the last axis of int64 codes x (rows of n): the table in double with libm's exp (which
    math.exp calls), one float32 entry per difference from the row's maximum; the quotient in double."""
    shift = max(0.0, _libm_logf()(float(np.finfo(np.float32).max / np.float32(n))) - 5) / float(s_in)
    table = np.array([math.exp((d + shift) * float(s_in)) for d in range(-255, 1)]).astype(np.float32)
    e = table[x - x.max(axis=-1, keepdims=True) + 255]
    total = np.cumsum(e, axis=-1, dtype=np.float32)[..., -1:]  # left to right, as the C loop adds
    y_scale = float(math.floor(np.float32(1) / s_out))
    return np.rint(e.astype(np.float64) * y_scale / total.astype(np.float64)).astype(np.int64) + zp_out


@int8_kernel("softmax")
def softmax(node, inputs, rules):
    x_t = node.inputs[0]
    s_in, _ = per_tensor(node, x_t, "input")
    s_out, zp_out = per_tensor(node, node.outputs[0], "output")
    axis = node.attrs["axis"] % len(x_t.shape)
    rule = rules.rule(node.op, node.name)
    check_rounding(node, rule, "softmax_gemmlowp_fixed_point", "softmax_float32_exp_table", "softmax_ort_exp_table")
    if rule.rounding == "softmax_ort_exp_table":
        if node.attrs["beta"] != 1:
            raise MccError("onnxruntime's QLinearSoftmax has no beta; the legalize_onnx pass makes a softmax with "
                           "beta != 1 a float island", node=node.name)
        x = np.moveaxis(inputs[0].astype(np.int64), axis, -1)
        return [np.moveaxis(saturate_int8(_ort_softmax(x, s_in, s_out, zp_out, x_t.shape[axis])), -1, axis)]
    if axis != len(x_t.shape) - 1:
        raise MccError("int8 softmax runs over the last axis only (TFLite's SOFTMAX)", node=node.name)
    if zp_out != -128 or abs(s_out - 1 / 256) > 0.001 / 256:
        raise MccError(f"TFLite's int8 SOFTMAX needs output scale 1/256 and zero point -128, got {s_out} and "
                       f"{zp_out}", node=node.name)
    x = inputs[0].astype(np.int64)
    if rule.rounding == "softmax_gemmlowp_fixed_point":
        return [saturate_int8(_tflite_reference(node, x, s_in, node.attrs["beta"]))]
    return [saturate_int8(_tflite_optimized(x, s_in, node.attrs["beta"], s_out, zp_out))]
