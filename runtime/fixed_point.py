"""The integer arithmetic that quantized kernels requantize with, vectorised over numpy int64 arrays.

TFLite's reference kernels scale an int32 accumulator by a real factor M = s_in * s_w / s_out held as an int32
"quantized multiplier" and a power-of-two shift (QuantizeMultiplier), then apply it with gemmlowp's two
roundings (SaturatingRoundingDoublingHighMul, ties upward, then RoundingDivideByPOT, ties away from zero). XNNPACK instead multiplies float32(acc) by a float32 scale and rounds ties
to even. Each function here is one of those rules, element for element, on int64 arrays (so no intermediate
product overflows) with int32 results; which rule an operator uses under which kernel set is decided in
`runtime.rules`, never here.
"""

from __future__ import annotations

import numba
import numpy as np

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


def bias_bound(products: int, activation: str = "int8") -> int:
    """The largest |int32 bias| that a sum of `products` int8 products (|x - zp| <= 255, |w| <= 127) cannot push
    past int32: the kernels accumulate in int32 and wrap (LiteRT's reference) or saturate elsewhere, so a bias near
    the limit makes the peers disagree. For int16 activations (16x8: |x| <= 32768, int64 bias and accumulator) the
    limit is 2**47, the accumulator range TFLite's int64 MultiplyByQuantizedMultiplier assumes."""
    if activation == "int16":
        return (1 << 47) - 1 - products * 32768 * 127
    return INT32_MAX - products * 255 * 127


def _i64(x) -> np.ndarray:
    return np.asarray(x, dtype=np.int64)


def round_half_away(x) -> np.ndarray:
    """C's round(): nearest integer, ties away from zero (TfLiteRound), as int64, for finite x below 2**63.

    Computed in float64 from the truncation and the exact fractional part, because floor(|x| + 0.5) rounds
    the addition itself once |x| is large (from 2**23 in float32), which C's round() never does.
    """
    x = np.asarray(x, np.float64)
    whole = np.trunc(x)
    return (whole + np.where(np.abs(x - whole) >= 0.5, np.sign(x), 0.0)).astype(np.int64)


@numba.njit(cache=True, nogil=True)
def round_half_away_scalar(x):
    """round_half_away's arithmetic on one float64, kept as a float64 (NaN stays NaN), for compiled loops."""
    whole = np.trunc(x)
    if abs(x - whole) >= 0.5:
        whole += np.sign(x)
    return whole


def quantize_multiplier(real) -> tuple[np.ndarray, np.ndarray]:
    """TFLite's QuantizeMultiplier: real = multiplier * 2**(shift - 31) with multiplier in [2**30, 2**31).

    frexp gives real = q * 2**shift with q in [0.5, 1); q * 2**31 is rounded half away from zero, a result of
    2**31 is halved (shift + 1), and shifts below -31 flush to multiplier 0, shift 0. Zero maps to (0, 0).
    Returns int32 multipliers and int32 shifts of the same shape as `real` (computed in float64).
    """
    real = np.asarray(real, dtype=np.float64)
    q, shift = np.frexp(real)
    q_fixed = round_half_away(q * float(1 << 31))
    carry = q_fixed == (1 << 31)
    q_fixed = np.where(carry, q_fixed // 2, q_fixed)
    shift = np.where(carry, shift + 1, shift)
    flush = (shift < -31) | (real == 0)
    return np.where(flush, 0, q_fixed).astype(np.int32), np.where(flush, 0, shift).astype(np.int32)


def wrap_int32(x: np.ndarray) -> np.ndarray:
    """Two's-complement wrap of int64 values to the int32 range (what C's int32 arithmetic does)."""
    return (x + (1 << 31)) % (1 << 32) - (1 << 31)


def saturating_rounding_doubling_high_mul(a, b, bits: int = 32) -> np.ndarray:
    """gemmlowp's SaturatingRoundingDoublingHighMul on `bits`-bit integers (32, or 16 for int16 kernels):
    a * b / 2**(bits - 1) rounded to nearest, ties toward +infinity.

    gemmlowp adds a nudge of 2**(bits - 2) (1 - 2**(bits - 2) for a negative product) and divides truncating
    toward zero; both branches equal floor((a * b + 2**(bits - 2)) / 2**(bits - 1)), so -1.5 becomes -1
    (ARM's VQRDMULH rounds the same way). The single overflowing pair (min, min) saturates to max.
    """
    a, b = _i64(a), _i64(b)
    low = -(1 << (bits - 1))
    high = (a * b + (1 << (bits - 2))) >> (bits - 1)
    return np.where((a == low) & (b == low), -low - 1, high)


def rounding_divide_by_pot(x, exponent) -> np.ndarray:
    """gemmlowp's RoundingDivideByPOT: x / 2**exponent rounded to nearest, ties away from zero."""
    x, exponent = _i64(x), _i64(exponent)
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def multiply_by_quantized_multiplier(x, multiplier, shift) -> np.ndarray:
    """TFLite's MultiplyByQuantizedMultiplier in its default (double-rounding) build: a left shift for
    shift > 0, the doubling high multiply, then a rounding right shift for shift < 0."""
    x, shift = _i64(x), _i64(shift)
    left, right = np.maximum(shift, 0), np.maximum(-shift, 0)
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(wrap_int32(x << left), multiplier), right)


def multiply_by_reduced_multiplier(x, multiplier, shift) -> np.ndarray:
    """TFLite's MultiplyByQuantizedMultiplier for an int64 accumulator (the 16x8 CONV_2D and DEPTHWISE_CONV_2D):
    the multiplier rounded to 16 bits ((m + 2**15) >> 16, at most 0x7FFF), then one product and one rounding
    shift by 15 - shift, ties toward +infinity. Measured: 0 of 1,024 differ from LiteRT 2.3.0, the float64
    rounding of the newer reference kernel differs in 57."""
    x, shift = _i64(x), _i64(shift)
    multiplier = _i64(multiplier)
    reduced = np.where(multiplier < 0x7FFF0000, (multiplier + (1 << 15)) >> 16, 0x7FFF)
    total = 15 - shift
    return wrap_int32((x * reduced + (np.int64(1) << (total - 1))) >> total)  # int32_t result = x >> total


def multiply_by_quantized_multiplier_smaller_than_one(x, multiplier, shift) -> np.ndarray:
    """MultiplyByQuantizedMultiplierSmallerThanOneExp (shift <= 0): the double rounding without a left shift,
    which ADD and SUB apply to their already left-shifted inputs."""
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(x, multiplier), -_i64(shift))


def scale_round_half_away(acc, real) -> np.ndarray:
    """round(double(acc) * real), ties away from zero: TFLite's float-requantizing reference kernels."""
    return round_half_away(np.asarray(acc, np.float64) * np.asarray(real, np.float64))


def scale_float32_ties_even(acc, scale32) -> np.ndarray:
    """rint(float32(acc) * scale32) with ties to even, as int64: XNNPACK's "fp32" requantization (and
    onnxruntime's QLinear kernels). float32(acc) is itself rounded to nearest even above 2**24."""
    product = np.asarray(acc).astype(np.float32) * np.asarray(scale32, np.float32)
    return np.rint(product).astype(np.int64)


def fma_float32(x, y, z) -> np.ndarray:
    """x * y + z rounded once to float32 (a fused multiply-add, as FMA3's vfmadd does), for float32 operands.

    The product of two float32 values is exact in float64; the float64 sum is made round-to-odd (nudged one
    float64 step towards the exact sum when it was rounded to an even neighbour), and a round-to-odd value with
    53 >= 24 + 2 bits rounds to float32 as the exact sum would, so no double rounding slips in.
    """
    x, y, z = (np.asarray(v, np.float32).astype(np.float64) for v in (x, y, z))
    product = x * y
    total = product + z
    z_part = total - product
    error = (product - (total - z_part)) + (z - z_part)  # TwoSum: the part of the exact sum `total` lost
    even = (total.view(np.int64) & 1) == 0
    towards = np.where(error > 0, np.inf, -np.inf)
    return np.where((error != 0) & even, np.nextafter(total, towards), total).astype(np.float32)


def saturating_rounding_multiply_by_pot(x, exponent: int) -> np.ndarray:
    """gemmlowp's SaturatingRoundingMultiplyByPOT on int32 values: a saturating left shift for exponent > 0,
    RoundingDivideByPOT for exponent < 0."""
    x = _i64(x)
    if exponent < 0:
        return rounding_divide_by_pot(x, -exponent)
    threshold = (1 << (31 - exponent)) - 1
    return np.where(x > threshold, INT32_MAX, np.where(x < -threshold, INT32_MIN, x << exponent))


# gemmlowp's Q0.31 constants: exp(-1/8), 1/3, and exp(-2**k) for the barrel shifter, k = -2 .. 4
_EXP_MINUS_ONE_EIGHTH, _ONE_THIRD = 1895147668, 715827883
_EXP_BARREL = ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308), (2, 39332535), (3, 720401),
               (4, 242))


def _exp_on_interval_minus_quarter_to_zero(a: np.ndarray) -> np.ndarray:
    """exp(a) for Q0.31 a in [-1/4, 0): gemmlowp's fourth-order Taylor expansion around -1/8."""
    x = a + (1 << 28)
    x2 = saturating_rounding_doubling_high_mul(x, x)
    x3 = saturating_rounding_doubling_high_mul(x2, x)
    x4_over_4 = rounding_divide_by_pot(saturating_rounding_doubling_high_mul(x2, x2), 2)
    tail = rounding_divide_by_pot(saturating_rounding_doubling_high_mul(x4_over_4 + x3, _ONE_THIRD) + x2, 1)
    return _EXP_MINUS_ONE_EIGHTH + saturating_rounding_doubling_high_mul(_EXP_MINUS_ONE_EIGHTH, x + tail)


def exp_on_negative_values(a, integer_bits: int) -> np.ndarray:
    """gemmlowp's exp_on_negative_values: exp(a) in Q0.31 for a <= 0 given as raw Q(integer_bits).(31 -
    integer_bits), by exp of a's remainder modulo 1/4 times exp(-2**k) for each set bit of the rest."""
    a = _i64(a)
    fractional_bits = 31 - integer_bits
    quarter = 1 << (fractional_bits - 2)
    a_mod_quarter_minus_quarter = (a & (quarter - 1)) - quarter
    result = _exp_on_interval_minus_quarter_to_zero(
        saturating_rounding_multiply_by_pot(a_mod_quarter_minus_quarter, integer_bits))
    remainder = a_mod_quarter_minus_quarter - a
    for exponent, multiplier in _EXP_BARREL:
        if integer_bits > exponent:
            bit = (remainder >> (fractional_bits + exponent)) & 1
            result = np.where(bit == 1, saturating_rounding_doubling_high_mul(result, multiplier), result)
    if integer_bits > 5:
        result = np.where(a < -(1 << (36 - integer_bits)), 0, result)
    return np.where(a == 0, INT32_MAX, result)


def one_over_one_plus_x_for_x_in_0_1(a) -> np.ndarray:
    """gemmlowp's 1 / (1 + a) for Q0.31 a in [0, 1): three Newton-Raphson steps in Q2.29 from 48/17 - 32/17 d."""
    a = _i64(a)
    total = a + INT32_MAX  # RoundingHalfSum(a, One): (sum + sign) / 2, truncating
    half_denominator = np.where(total >= 0, (total + 1) // 2, -((-(total - 1)) // 2))
    x = 1515870810 + saturating_rounding_doubling_high_mul(half_denominator, -1010580540)
    for _ in range(3):
        one_minus = (1 << 29) - saturating_rounding_doubling_high_mul(half_denominator, x)
        x = x + saturating_rounding_multiply_by_pot(saturating_rounding_doubling_high_mul(x, one_minus), 2)
    return saturating_rounding_multiply_by_pot(x, 1)
