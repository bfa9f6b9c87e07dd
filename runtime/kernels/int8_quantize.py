"""quantize (float32 -> int8, or int8 -> int8 with new parameters) and dequantize (int8 -> float32).

TFLite's QUANTIZE divides by the scale in float32 and rounds half away from zero (AffineQuantize); a NaN or
a quotient beyond int32 becomes INT32_MIN on x86, as C's out-of-range float-to-int conversion does there,
so it saturates to -128. XNNPACK multiplies by 1 / scale and rounds ties to even after clamping to int16,
so NaN saturates to +127. Requantizing int8 -> int8, TFLite applies MultiplyByQuantizedMultiplier by
s_in / s_out; XNNPACK an 8.8 fixed-point multiplier rint(256 * s_in / s_out) with one rounding shift
(for ratios in [1/256, 128]; beyond, the delegate declines and TFLite's kernel runs).
DEQUANTIZE is (q - zp) * s, one float32 rounding in both. onnxruntime's QuantizeLinear (MLAS) divides by the
scale in float32, clamps to [-128 - zp, 127 - zp] (NaN to the lower bound), rounds ties to even and adds zp.

int16 (TFLite's 16x8 models) joins every direction: float32 -> int16 as TFLite's int8 QUANTIZE divides and rounds
(reference); int8 -> int16, int16 -> int8 and int16 -> int16 by the double rounding of s_in / s_out (Requantize,
reference and optimized alike; XNNPACK takes none of them). TFLite's optimized float32 -> int16 QUANTIZE, which
LiteRT's default resolver runs, multiplies by 1 / s, rounds ties to even, and turns NaN and values beyond int32
into INT32_MIN (x86's cvtps2dq), so they saturate to -32768 (measured on 3 scales: 0 of 13,215 differ; the
reference's division differs in 120 of 4,405) — in blocks of 8 of the flat tensor; the last size % 8 elements take
its scalar tail, the reference's TfLiteRound(x / s) with the scale as a double (QuantizationParams.scale), ties away
from zero: benchmarks/fuzz_rules.py's int16 rows found them (167 of 1,000,000 elements differed by 1 with the tail
taken as the vector branch, 85 with it multiplying in float32; 0 with the double division).
"""

from __future__ import annotations

import numba
import numpy as np

from ...errors import MccError
from .. import fixed_point as fp
from .int8_registry import LIMITS, check_rounding, int8_kernel, per_tensor, ruled_op, saturate


def _tflite_optimized_quantize(x, scale, zero_point, block=8):
    """The flat tensor in blocks of `block` through the vector branch (x * float32(1 / s), ties to even), the rest
    through the scalar tail (the reference's TfLiteRound(x / s) with the scale as a double, ties away from zero)."""
    x = np.asarray(x, np.float32)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        v = x * (np.float32(1) / scale)
        tail = x.ravel()[x.size // block * block:].astype(np.float64) / np.float64(scale)
        v = np.concatenate([v.ravel()[:x.size // block * block], tail]).reshape(x.shape)
        inside = (v >= -2.0 ** 31) & (v < 2.0 ** 31)  # False for NaN
    finite = np.where(inside, v, 0).ravel()
    body = finite.size // block * block
    rounded = np.concatenate([np.rint(finite[:body]), fp.round_half_away(finite[body:])]).reshape(x.shape)
    return np.where(inside, rounded, fp.INT32_MIN).astype(np.int64) + zero_point


# the roundings _quantize_float computes, by its `mode`: TFLite's reference, XNNPACK's, onnxruntime's
_COMPILED = ("divide_round_half_away", "multiply_inverse_ties_even", "divide_ties_even")


@numba.njit(cache=True, nogil=True)
def _quantize_float(x, scale, zero_point, mode, low, high, out):
    """float32 -> int8 / int16 of a flat float32 x in one pass (the module docstring's arithmetic; `mode`: the
    index of the rounding in _COMPILED), clamped to [low, high]: TFLite's float32 quotient rounded half away from
    zero, NaN and quotients beyond int32 as INT32_MIN, the int32 addition of the zero point wrapping; XNNPACK's
    float32 product by 1 / scale clamped to int16 (NaN to 32767), ties to even; onnxruntime's float32 quotient
    clamped to [-128 - zp, 127 - zp] (NaN to the lower bound), ties to even."""
    if mode == 1:
        inverse = np.float32(1) / scale
        for i in range(x.size):
            v = x[i] * inverse
            v = np.float32(32767) if np.isnan(v) else min(max(v, np.float32(-32768)), np.float32(32767))
            out[i] = min(max(np.int64(np.rint(v)) + zero_point, low), high)
    elif mode == 2:
        lowest, highest = np.float32(-128 - zero_point), np.float32(127 - zero_point)
        for i in range(x.size):
            v = x[i] / scale
            v = lowest if np.isnan(v) else min(max(v, lowest), highest)
            out[i] = min(max(np.int64(np.rint(v)) + zero_point, low), high)
    else:
        for i in range(x.size):
            v = np.float64(x[i] / scale)
            if v >= -2.0 ** 31 and v < 2.0 ** 31:  # False for NaN
                q = np.int64(fp.round_half_away_scalar(v))
            else:
                q = np.int64(fp.INT32_MIN)
            q = ((q + zero_point + np.int64(2147483648)) & np.int64(0xFFFFFFFF)) - np.int64(2147483648)
            out[i] = min(max(q, low), high)


def _tflite_requantize(x, s_in, s_out):
    multiplier, shift = fp.quantize_multiplier(np.float64(s_in) / np.float64(s_out))
    return fp.multiply_by_quantized_multiplier(x, multiplier, shift)


def _xnnpack_takes_requantize(s_in, s_out) -> bool:
    """The XNNPACK delegate's bound on an int8 -> int8 QUANTIZE; outside it LiteRT runs TFLite's kernel."""
    return 1 / 256 <= s_in / s_out <= 128


def _xnnpack_requantize(x, s_in, s_out):
    multiplier = int(np.rint(np.float32(256) * (s_in / s_out)))
    return (x * multiplier + 128) >> 8


@int8_kernel("quantize")
def quantize(node, inputs, rules):
    x = inputs[0]
    s_out, zp_out = per_tensor(node, node.outputs[0], "output")
    dtype = node.outputs[0].dtype
    if dtype not in ("int8", "int16"):
        raise MccError(f"quantize produces int8 or int16 here, not {dtype}", node=node.name)
    if x.dtype in (np.int8, np.int16):
        s_in, zp_in = per_tensor(node, node.inputs[0], "input")
        rule = rules.rule(ruled_op(node, "requantize"), node.name)
        check_rounding(node, rule, "double_rounding", "multiplier_8bit_half_up")
        dx = x.astype(np.int64) - zp_in
        if rule.rounding == "multiplier_8bit_half_up" and _xnnpack_takes_requantize(s_in, s_out):
            y = _xnnpack_requantize(dx, s_in, s_out)
        else:
            y = _tflite_requantize(dx, s_in, s_out)
        return [saturate(y + zp_out, dtype)]
    if x.dtype != np.float32:
        raise MccError(f"quantize takes float32, int8 or int16 input, got {x.dtype}", node=node.name)
    rule = rules.rule(ruled_op(node), node.name)
    check_rounding(node, rule, *_COMPILED, "multiply_inverse_ties_even_int32_min")
    if rule.rounding in _COMPILED:
        out = np.empty(x.shape, dtype)
        _quantize_float(np.ascontiguousarray(x).reshape(-1), np.float32(s_out), np.int64(zp_out),
                        _COMPILED.index(rule.rounding), *(np.int64(v) for v in LIMITS[dtype]), out.reshape(-1))
        return [out]
    return [saturate(_tflite_optimized_quantize(x, s_out, zp_out), dtype)]


@int8_kernel("dequantize")
def dequantize(node, inputs, rules):
    scale, zero_point = per_tensor(node, node.inputs[0], "input")
    rule = rules.rule(ruled_op(node), node.name)
    check_rounding(node, rule, "exact")
    return [(inputs[0].astype(np.float32) - np.float32(zero_point)) * scale]
