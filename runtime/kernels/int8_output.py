"""The output stage of the int8 kernels: scale an int32 accumulator, add the output zero point, clamp to the
fused activation's quantized bounds. TFLite's reference kernels do this per element after the loop; XNNPACK
fuses it into its GEMM microkernels; here `requantize_rows` / `requantize_block` do it in compiled loops (conv,
depthwise, fully_connected; the scalar forms serve int8_elementwise's MUL too), with the rule choosing how. They
compute runtime.fixed_point's integers: the compiled form repeats its arithmetic step for step, numpy's semantics
included (shift counts outside [0, 64), float -> int64 casts out of range giving INT64_MIN, int64 wrap-around).
"""

from __future__ import annotations

import numba
import numpy as np

from ...errors import MccError
from .. import fixed_point as fp
from ..rules import Rule
from .int8_registry import LIMITS

# The roundings the compiled output stage implements, by code (requantize_rows' `code`).
ROW_ROUNDINGS = ("double_rounding", "float64_round_half_away", "float32_ties_even", "reduced_multiplier_half_up")

# The real interval each fused activation clamps to (None: unbounded on that side).
ACTIVATION_RANGE = {None: (None, None), "relu": (0.0, None), "relu6": (0.0, 6.0), "relu_n1_to_1": (-1.0, 1.0)}


def _quantize_bound(value: float, scale: np.float32, zero_point: int, kernels: str, dtype: str, node=None) -> int:
    """One bound in `dtype`. onnxruntime's kernels have no fused activation: the ONNX writer clamps with an int8
    Clip whose bounds it computes as TFLite does (formats.onnx.opmap), so "onnxruntime" takes TFLite's."""
    if kernels == "xnnpack":  # xnn_qs8_quantize: lrintf(clamp(v / s + zp)), ties to even
        q = np.float32(value) / scale + np.float32(zero_point)
        return int(np.rint(np.clip(q, *(np.float32(v) for v in LIMITS[dtype]))))
    # TFLite's CalculateActivationRangeQuantized: zp + round(v / s) in float32, ties away from zero
    q = fp.round_half_away(np.float32(value) / scale)
    if kernels == "tflite" and node is not None and not -2.0 ** 31 <= q <= 2.0 ** 31:
        # its Prepare checks no_integer_overflow_from_quantization and fails the model (found by
        # benchmarks/fuzz_rules.py: relu6 at an output scale of 1.8e-9); XNNPACK's delegate takes it
        raise MccError(f"{node.op}: fused {node.attrs['activation']} bound {value} / output scale {float(scale)} "
                       "overflows int32; TFLite's kernels refuse such a model (no_integer_overflow_from_quantization)"
                       ": give the output a larger scale", node=node.name)
    return zero_point + int(q)


def clamp_bounds(lo: float | None, hi: float | None, scale: np.float32, zero_point: int,
                 kernels: str, dtype: str = "int8", node=None) -> tuple[int, int]:
    """The `dtype` interval for the real interval [lo, hi] (None: unbounded), quantized as `kernels` does it; with
    `node`, a bound that TFLite refuses raises."""
    low, high = LIMITS[dtype]
    qlo = low if lo is None else max(low, _quantize_bound(lo, scale, zero_point, kernels, dtype, node))
    qhi = high if hi is None else min(high, _quantize_bound(hi, scale, zero_point, kernels, dtype, node))
    return qlo, qhi


def activation_bounds(activation: str | None, scale: np.float32, zero_point: int, kernels: str,
                      dtype: str = "int8", node=None) -> tuple[int, int]:
    """The interval a fused activation of `node` clamps to, quantized the way the kernel library does it (TFLite's
    CalculateActivationRangeQuantized takes the output type's limits, int8 or int16)."""
    return clamp_bounds(*ACTIVATION_RANGE[activation], scale, zero_point, kernels, dtype, node)


def output_stage(scaled, zero_point: int, bounds: tuple[int, int], dtype: str = "int8") -> np.ndarray:
    """zp + scaled, clamped to the activation bounds, as `dtype`."""
    return np.clip(np.asarray(scaled, np.int64) + zero_point, *bounds).astype(dtype)


def product_scale(s_in: np.float32, s_w: np.ndarray, s_out: np.float32, rule: Rule) -> np.ndarray:
    """s_in * s_w / s_out per output channel, computed as the library's Prepare does: TFLite in float64
    (PopulateConvolutionQuantizationParams), XNNPACK and onnxruntime (QLinearConv, QGemm) in float32, as
    (s_in * s_w) / s_out."""
    if rule.kernels in ("xnnpack", "onnxruntime"):
        return ((np.float32(s_in) * np.asarray(s_w, np.float32)) / np.float32(s_out)).astype(np.float64)
    return np.float64(s_in) * np.asarray(s_w, np.float64) / np.float64(s_out)


class RowRequant:
    """One layer's output stage, prepared once per call for the compiled loops: the rule's code, per-channel int64
    multiplier and shift (double rounding: QuantizeMultiplier's; reduced: the 16-bit multiplier and the total
    shift 15 - shift), double rounding's one-shift form (one_shift), float64 and float32 factors, the output zero
    point and the clamp bounds. `rule.rounding` must be one of ROW_ROUNDINGS (check_rounding first)."""

    def __init__(self, real, rule: Rule, zero_point: int, bounds: tuple[int, int]):
        real = np.asarray(real, np.float64)
        self.code = ROW_ROUNDINGS.index(rule.rounding)
        multiplier, shift = fp.quantize_multiplier(real)
        multiplier, shift = multiplier.astype(np.int64), shift.astype(np.int64)
        if rule.rounding == "reduced_multiplier_half_up":
            multiplier = np.where(multiplier < 0x7FFF0000, (multiplier + (1 << 15)) >> 16, 0x7FFF)
            shift = 15 - shift
        self.args = (np.int64(self.code), multiplier, shift, one_shift(multiplier, shift), real,
                     real.astype(np.float32), np.int64(zero_point), np.int64(bounds[0]), np.int64(bounds[1]))


def one_shift(multiplier: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """[4, channels] int64: double_rounding as one product and one shift (one_shift_rounding, where
    double_rounding_int32 holds). x * m = v * (m << left); high = (x * m + 2**30) >> 31; RoundingDivideByPOT(high,
    right) = (high + nudge) >> right with nudge 2**(right - 1), less one where high < 0 (0 for right = 0); nested
    floor divisions compose, so the result is (t + nudge * 2**31) >> (31 + right) with t = x * m + 2**30, less
    2**31 where t < 0 (exactly where high < 0). Rows: m << left, nudge * 2**31, the 2**31 taken where t < 0, the
    total shift. TFLite and gemmlowp take the steps one by one, in int32 lanes; mcc's int64 lanes (numba has no
    int32 arithmetic) take them 2x faster this way."""
    right = np.maximum(-shift, 0)
    nudge = np.where(right > 0, np.int64(1) << np.maximum(right - 1, 0), 0)
    return np.stack([multiplier << np.maximum(shift, 0), nudge << 31, np.where(right > 0, np.int64(1) << 31, 0),
                     right + 31]).astype(np.int64)


@numba.njit(cache=True, nogil=True)
def _shl(a, b):
    """numpy's int64 `a << b`: counts outside [0, 64) give 0."""
    return a << b if 0 <= b < 64 else np.int64(0)


@numba.njit(cache=True, nogil=True)
def _shr(a, b):
    """numpy's int64 `a >> b`: counts outside [0, 64) give -1 for negative a, else 0."""
    if 0 <= b < 64:
        return a >> b
    return np.int64(-1) if a < 0 else np.int64(0)


@numba.njit(cache=True, nogil=True)
def to_int64(f):
    """float -> int64 as numpy's astype does on x86 (cvttsd2si): NaN and values beyond int64 become INT64_MIN."""
    if f >= -9.223372036854775808e18 and f < 9.223372036854775808e18:
        return np.int64(f)
    return np.int64(-9223372036854775808)


@numba.njit(cache=True, nogil=True)
def _wrap_int32(x):
    return ((x + np.int64(2147483648)) & np.int64(0xFFFFFFFF)) - np.int64(2147483648)


@numba.njit(cache=True, nogil=True)
def double_rounding(v, multiplier, shift):
    """multiply_by_quantized_multiplier on one int64 (for shift <= 0 and v within int32, also
    multiply_by_quantized_multiplier_smaller_than_one)."""
    x = _wrap_int32(_shl(v, shift if shift > 0 else np.int64(0)))
    if x == -2147483648 and multiplier == -2147483648:
        high = np.int64(2147483647)
    else:
        high = (x * multiplier + np.int64(1 << 30)) >> 31
    right = -shift if shift < 0 else np.int64(0)
    mask = _shl(np.int64(1), right) - 1
    threshold = (mask >> 1) + (1 if high < 0 else 0)
    return _shr(high, right) + (1 if (high & mask) > threshold else 0)


@numba.njit(cache=True, nogil=True)
def one_shift_rounding(v, scaled, nudge, below, total):
    """double_rounding of one int64 by one channel's column of one_shift, where double_rounding_int32 holds."""
    t = v * scaled + np.int64(1 << 30)
    return (t + nudge - ((t >> 63) & below)) >> total


@numba.njit(cache=True, nogil=True)
def _round_half_away(v, real):
    """scale_round_half_away on one int64."""
    return to_int64(fp.round_half_away_scalar(np.float64(v) * real))


@numba.njit(cache=True, nogil=True)
def _reduced_multiplier(v, multiplier, total):
    """multiply_by_reduced_multiplier on one int64, given the reduced multiplier and the total shift."""
    return _wrap_int32(_shr(v * multiplier + _shl(np.int64(1), total - 1), total))


@numba.njit(cache=True, nogil=True)
def clamp(q, zero_point, low, high):
    q += zero_point
    return min(max(q, low), high)


_EXACT32 = float(1 << 24)  # integers below this are exact in float32


@numba.njit(cache=True, nogil=True)
def _float32_exact(reach, bias, scale32, zero_point):
    """Whether float32_ties_even may run on float32 alone: every acc + bias (|acc| <= reach) and zero point is an
    integer below 2**24, hence exact in float32 as it is after the int64 sum, and every |scale| < 64, so the scaled
    value stays below 2**30: it never reaches the int64 cast's out-of-range case, and adding the zero point and
    clamping in float32 gives the int64 path's integer."""
    if not (abs(zero_point) < _EXACT32 and reach < _EXACT32):
        return False
    for c in range(bias.shape[0]):
        if not (reach + abs(bias[c]) < _EXACT32 and abs(scale32[c]) < 64.0):
            return False
    return True


@numba.njit(cache=True, nogil=True)
def double_rounding_int32(reach, bias, multiplier, shift):
    """Whether double_rounding may run as one product and one shift (requantize_block): every |acc + bias|
    (|acc| <= reach) shifted left stays below 2**31, so the int32 wrap changes nothing, the shifts lie in [-31, 31]
    and no multiplier is INT32_MIN, so the saturating case never arises (QuantizeMultiplier's are non-negative)."""
    for c in range(bias.shape[0]):
        left = max(shift[c], 0)
        if not (-31 <= shift[c] <= 31 and multiplier[c] != -2147483648
                and (reach + abs(np.float64(bias[c]))) * np.float64(np.int64(1) << left) < 2147483648.0):
            return False
    return True


@numba.njit(cache=True, nogil=True)
def requantize_block(acc, reach, bias, code, multiplier, shift, fixed, real, scale32, zero_point, low, high, out):
    """out[r, c] = clamp(scaled(acc[r, c] + bias[c]) + zero_point, low, high) for a [rows, channels] block, scaled
    by rule `code` (ROW_ROUNDINGS) as runtime.fixed_point computes it; `acc` holds integers (int32, or float32 /
    float64 with integer values), each converted exactly to int64 first, of magnitude at most `reach` (inf:
    unknown). One loop nest per rule, so each vectorises over channels. float32_ties_even (XNNPACK's fp32
    requantization) runs in float32 throughout when _float32_exact shows that every step is exact, as XNNPACK's
    own microkernels do: 16 lanes where int64 gives 8 (3x faster on MobileNetV2's layers); else through int64."""
    rows, channels = acc.shape
    if code == 0 and double_rounding_int32(reach, bias, multiplier, shift):
        scaled, nudge, below, total = fixed[0], fixed[1], fixed[2], fixed[3]
        for r in range(rows):
            row, dst = acc[r], out[r]
            for c in range(channels):
                q = one_shift_rounding(np.int64(row[c]) + bias[c], scaled[c], nudge[c], below[c], total[c])
                dst[c] = min(max(q + zero_point, low), high)
    elif code == 0:
        for r in range(rows):
            for c in range(channels):
                q = double_rounding(np.int64(acc[r, c]) + bias[c], multiplier[c], shift[c])
                out[r, c] = clamp(q, zero_point, low, high)
    elif code == 1:
        for r in range(rows):
            for c in range(channels):
                q = _round_half_away(np.int64(acc[r, c]) + bias[c], real[c])
                out[r, c] = clamp(q, zero_point, low, high)
    elif code == 2 and _float32_exact(reach, bias, scale32, zero_point):
        bias32 = bias.astype(np.float32)
        zp32, low32, high32 = np.float32(zero_point), np.float32(low), np.float32(high)
        for r in range(rows):
            for c in range(channels):
                q = np.rint((np.float32(acc[r, c]) + bias32[c]) * scale32[c]) + zp32
                out[r, c] = np.int32(min(max(q, low32), high32))
    elif code == 2:
        for r in range(rows):
            for c in range(channels):
                q = to_int64(np.rint(np.float32(np.int64(acc[r, c]) + bias[c]) * scale32[c]))
                out[r, c] = clamp(q, zero_point, low, high)
    else:
        for r in range(rows):
            for c in range(channels):
                q = _reduced_multiplier(np.int64(acc[r, c]) + bias[c], multiplier[c], shift[c])
                out[r, c] = clamp(q, zero_point, low, high)


_TASK_ELEMENTS = 8192  # accumulators per parallel task: enough work to amortise the task (a 64-row task of 16
# channels cost 1.4x the loop alone), few enough that a layer's rows make a task for every thread


@numba.njit(cache=True, nogil=True, parallel=True)
def _requantize_blocks(acc, task_rows, reach, bias, code, multiplier, shift, fixed, real, scale32, zero_point, low,
                       high, out):
    rows = acc.shape[0]
    for block in numba.prange((rows + task_rows - 1) // task_rows):
        first, last = block * task_rows, min(rows, (block + 1) * task_rows)
        requantize_block(acc[first:last], reach, bias, code, multiplier, shift, fixed, real, scale32, zero_point,
                         low, high, out[first:last])


def requantize_rows(acc, *args):
    """requantize_block over a [rows, channels] accumulator (same arguments), blocks of rows split across threads;
    a single block, or any on one thread, runs on its own, without the parallel region's launch (microseconds, more
    than a small layer's output stage)."""
    task_rows = max(1, _TASK_ELEMENTS // max(1, acc.shape[1]))
    if acc.shape[0] <= task_rows or numba.get_num_threads() == 1:
        requantize_block(acc, *args)
    else:
        _requantize_blocks(acc, task_rows, *args)
