"""int8 add, sub and mul with numpy broadcasting, after TFLite's and XNNPACK's quantized binary kernels.

ADD/SUB cannot add two int8 values with different scales directly. TFLite (add.cc / sub.cc Prepare) shifts
both inputs left by 20 bits, rescales each to twice the larger input scale with its own quantized multiplier,
adds, and rescales the sum to the output, each step with gemmlowp double rounding. XNNPACK turns both scale
ratios into integer multipliers of at most 21 bits that share one shift, so the sum needs a single rounding
(half up). MUL multiplies (a - za) * (b - zb) and requantizes once by sa * sb / so, a factor that both
libraries compute in float32. XNNPACK takes ADD / SUB with input-to-output ratios in [2**-10, 2**8) and MUL with
sa * sb / so in [2**-16, 2**8); beyond, LiteRT's default resolver runs TFLite's optimized kernel
(benchmarks/fuzz_rules.py found both). Below the range that kernel computes what the reference does (a SUB at
ratios 2**-7 and 2**-12 differed in 78 of 1,001,472 fuzzed elements under XNNPACK's arithmetic, in none under
TFLite's), so litert-xnnpack takes TFLite's rule there; above it, where outputs saturate, the optimized kernel
parts from the reference (an ADD at ratio 551: 230 of 1,024 elements -128 where the reference gives 127), which
mcc does not reproduce, so litert-xnnpack refuses that case. MINIMUM and MAXIMUM compare the raw int8 codes
(TFLite ignores the parameters, so they must agree).

onnxruntime (MLAS, AVX2 on x86-64) computes both in float32 on the raw codes: QLinearAdd as
fma(a, sa/so, fma(b, sb/so, zo - (sa/so * za + sb/so * zb))), every step one FMA, rounded to nearest even;
QLinearMul as rint(float32(prod) * ((sa * sb) / so) + zo), the zero point added in float before the rounding.
Which input is `a` in the add depends on how onnxruntime's broadcaster splits the shapes.

TFLite's 16x8 ADD (int16 inputs and output, zero points 0) takes the int8 path with a left shift of 15 instead of
20 when its AddOptions say pot_scale_int16 = false, as mcc writes it; the power-of-two path that the flag's default
selects is not reproduced. Its optimized kernel (LiteRT's default resolver; XNNPACK takes no int16 ADD) runs
same-shape inputs in blocks of 16 elements through its NEON branch (the x86 wheel's build takes it, through
NEON_2_SSE; the AVX2 branch's floored products differ in 1,363 of 20,480): each input shifted left by 15 + its
(negative) shift at once, so its rescale rounds once, not twice; the last size % 16 elements and every broadcast
take the reference arithmetic. On the reference rule, 26 of 20,480 elements differ by 1.
"""

from __future__ import annotations

import numba
import numpy as np

from ...errors import MccError
from .. import fixed_point as fp
from ..rules import Rule
from .int8_output import (activation_bounds, clamp, double_rounding, double_rounding_int32, one_shift,
                          one_shift_rounding, output_stage, to_int64)
from .int8_registry import check_rounding, int8_kernel, per_tensor, require_same_quant, ruled_op

LEFT_SHIFT = {"int8": 20, "int16": 15}  # TFLite's headroom for the inputs before rescaling


def _tflite_add_params(sa, sb, so, node, dtype="int8"):
    """TFLite's Prepare: the inputs' and the output's quantized multipliers and shifts (all shifts <= 0)."""
    shift = LEFT_SHIFT[dtype]
    twice_max = np.float64(2 * max(sa, sb))
    in_real = np.array([np.float64(sa), np.float64(sb)]) / twice_max
    out_real = twice_max / np.float64(np.float32(1 << shift) * so)
    if out_real >= 1:
        raise MccError(f"{node.op}: output scale {so} is below 2 * max(input scales) / 2**{shift}; TFLite's "
                       f"{dtype} {node.op} cannot represent that rescaling", node=node.name)
    (m_a, m_b), (sh_a, sh_b) = fp.quantize_multiplier(in_real)
    m_out, sh_out = fp.quantize_multiplier(out_real)
    return int(m_a), int(sh_a), int(m_b), int(sh_b), int(m_out), int(sh_out)


def _tflite_add(a, b, sa, sb, so, node, dtype):
    """The 16x8 reference ADD."""
    shift = LEFT_SHIFT[dtype]
    m_a, sh_a, m_b, sh_b, m_out, sh_out = _tflite_add_params(sa, sb, so, node, dtype)
    scaled_a = fp.multiply_by_quantized_multiplier_smaller_than_one(a << shift, m_a, sh_a)
    scaled_b = fp.multiply_by_quantized_multiplier_smaller_than_one(b << shift, m_b, sh_b)
    return fp.multiply_by_quantized_multiplier_smaller_than_one(scaled_a + scaled_b, m_out, sh_out)


def _tflite_add16_neon(a, b, sa, sb, so, node):
    """The optimized 16x8 ADD on same-shape inputs: NEON blocks of 16 (vshlq, vqrdmulhq, RoundingDivideByPOT),
    the reference rule on the tail."""
    shift = LEFT_SHIFT["int16"]
    y = _tflite_add(a, b, sa, sb, so, node, "int16").ravel()
    m_a, sh_a, m_b, sh_b, m_out, sh_out = _tflite_add_params(sa, sb, so, node, "int16")
    blocks = a.size // 16 * 16

    def rescale(x, multiplier, input_shift):
        left = shift + int(input_shift)  # vshlq_s32: a negative count shifts right, truncating
        x = fp.wrap_int32(x << left) if left >= 0 else x >> -left
        return fp.saturating_rounding_doubling_high_mul(x, multiplier)

    raw = fp.wrap_int32(rescale(a.ravel()[:blocks], m_a, sh_a) + rescale(b.ravel()[:blocks], m_b, sh_b))
    y[:blocks] = fp.rounding_divide_by_pot(fp.saturating_rounding_doubling_high_mul(raw, m_out), -int(sh_out))
    return y


def _xnnpack_takes(node, *ratios, low: float) -> bool:
    """Whether XNNPACK's operator takes these float32 scale ratios (xnn_create_add_nd_qs8: each in [2**-10, 2**8),
    xnn_create_multiply_nd_qs8: [2**-16, 2**8)); a ratio at or above 2**8 leaves the op to TFLite's optimized
    kernel, whose saturating arithmetic mcc does not reproduce: refused."""
    if any(r >= 2.0 ** 8 for r in ratios):
        raise MccError(f"{node.op}: scale ratio {max(float(r) for r in ratios):.6g} (input to output) is at or above "
                       "256: LiteRT's XNNPACK delegate declines the op and TFLite's optimized kernel, which mcc does "
                       "not reproduce, runs instead; give the output a larger scale, or run with rules litert-ref",
                       node=node.name)
    return all(low <= r for r in ratios)


def _xnnpack_add_params(sa, sb, so, sign):
    """XNNPACK's multipliers of (a - za) and (b - zb) and their shared shift."""
    a_ratio, b_ratio = sa / so, sb / so  # float32, as xnn_init_qs8_add_minmax_scalar_params
    _, exponent = np.frexp(max(a_ratio, b_ratio))
    shift = 20 - (int(exponent) - 1)  # 20 multiplier bits above the larger ratio's leading bit
    return int(np.rint(np.ldexp(a_ratio, shift))), sign * int(np.rint(np.ldexp(b_ratio, shift))), shift


@numba.njit(cache=True, nogil=True)
def _add_int8(a, b, za, zb, xnnpack, m_a, sh_a, m_b, sh_b, sign, fixed, zo, low, high, out):
    """The int8 add / sub of flat same-size a and b in one pass: TFLite's three double roundings (shift 20; the
    shifted inputs, |x| < 2**28, and their sum stay within int32 and every shift lies in [-31, 0], so each is
    int8_output.one_shift_rounding by its column of `fixed`, the one_shift of the input and output multipliers)
    or XNNPACK's one multiplier-shift (sh_a its shift)."""
    if xnnpack:
        rounding = np.int64(1) << (sh_a - 1)
        for i in range(a.size):
            q = ((np.int64(a[i]) - za) * m_a + (np.int64(b[i]) - zb) * m_b + rounding) >> sh_a
            out[i] = clamp(q, zo, low, high)
    else:
        (ma, mb, mo), (na, nb, no), (ba, bb, bo), (ta, tb, to) = fixed[0], fixed[1], fixed[2], fixed[3]
        for i in range(a.size):
            scaled_a = one_shift_rounding((np.int64(a[i]) - za) << 20, ma, na, ba, ta)
            scaled_b = one_shift_rounding((np.int64(b[i]) - zb) << 20, mb, nb, bb, tb)
            out[i] = clamp(one_shift_rounding(scaled_a + sign * scaled_b, mo, no, bo, to), zo, low, high)


def _first_input_constant(shape_a, shape_b) -> bool:
    """Whether onnxruntime's broadcaster hands QLinearAdd input 0 as the scalar of each run: when input 0 is 1
    (or absent) along the innermost dimension that is not 1 in both inputs (else the outermost shared one)."""
    a, b = list(reversed(shape_a)), list(reversed(shape_b))
    shared = min(len(a), len(b))
    if shared == 0:
        return not a
    i = next((i for i in range(shared) if max(a[i], b[i]) > 1), shared - 1)
    return a[i] == 1


def _ort_add(a, b, sa, za, sb, zb, so, zo, bounds) -> np.ndarray:
    """MlasQLinearAdd (qladd_avx2.cpp) on raw codes, clamped to `bounds`, as int8: the input that varies along the
    run is the kernel's A (input 1 when input 0 is the constant one); a constant B joins the constant term, by the
    same FMA."""
    (A, ra, zpa), (B, rb, zpb) = ((b, sb / so, zb), (a, sa / so, za)) if _first_input_constant(a.shape, b.shape) \
        else ((a, sa / so, za), (b, sb / so, zb))
    fixed = np.float32(zo) - fp.fma_float32(ra, np.float32(zpa), rb * np.float32(zpb))
    if _fma_exact_in_float64(ra, rb, fixed):
        A, B = (np.ascontiguousarray(v) for v in np.broadcast_arrays(A, B))
        out = np.empty(A.shape, np.int8)
        _ort_add_int8(A.reshape(-1), B.reshape(-1), np.float64(ra), np.float64(rb), np.float64(fixed), *bounds,
                      out.reshape(-1))
        return out
    A, B = np.broadcast_arrays(A.astype(np.float32), B.astype(np.float32))
    y = np.rint(fp.fma_float32(A, ra, fp.fma_float32(B, rb, fixed))).astype(np.int64)
    return np.clip(y, *bounds).astype(np.int8)


def _fma_exact_in_float64(ra, rb, fixed) -> bool:
    """Whether every sum of _ort_add is exact in float64, so that rounding it to float32 is the fused multiply-add:
    each value is an integer code times ra or rb plus fixed or the inner float32 result, all multiples of the
    smallest unit in the last place among ra, rb and fixed, so they are exact when twice the largest magnitude
    (|code| <= 128) stays below 2**53 of those units; and below 2**31, so the rounded results need no int64 cast
    (numpy's, which gives INT64_MIN beyond int64) to clamp alike."""
    values = np.array([ra, rb, fixed], np.float32)
    if not np.isfinite(values).all():
        return False
    unit = min(np.spacing(abs(v)) for v in values if v != 0) if values.any() else 1.0
    largest = 2.0 * (128.0 * abs(float(ra)) + 128.0 * abs(float(rb)) + abs(float(fixed)))
    return largest < 2.0 ** 31 and largest < float(unit) * 2.0 ** 53


@numba.njit(cache=True, nogil=True)
def _ort_add_int8(a, b, ra, rb, fixed, low, high, out):
    """fma(a, ra, fma(b, rb, fixed)) per element of flat same-size int8 codes, each fused multiply-add as a float64
    product and sum rounded once to float32 (exact where _fma_exact_in_float64 holds), rint ties to even, clamped:
    vector lanes where fp.fma_float32 takes numpy passes of float64 error terms (MLAS runs FMA3 instructions)."""
    low32, high32 = np.float32(low), np.float32(high)
    for i in range(a.size):
        inner = np.float32(np.float64(b[i]) * rb + fixed)
        q = np.rint(np.float32(np.float64(a[i]) * ra + np.float64(inner)))
        out[i] = np.int8(min(max(q, low32), high32))


# add_sub's key -> (rule, bounds, the int8 pass's multipliers and shifts): what TFLite's and XNNPACK's Prepare
# compute once per model, kept here per quantization, since mcc's kernels are functions of the node, not objects
_ADD_PREPARED: dict[tuple, tuple] = {}


def _prepare_add(node, rule, sa, sb, so, zo, dtype) -> tuple:
    """The rule that runs (TFLite's where XNNPACK declines), the activation bounds, and for the int8 pass its
    (xnnpack, m_a, sh_a, m_b, sh_b, fixed): XNNPACK's multipliers and shift, or TFLite's in one_shift form."""
    check_rounding(node, rule, "add_shift20_double_rounding", "add_multiplier_shift_half_up",
                   "add_float32_fma_ties_even", "add_shift15_double_rounding", "add_shift15_neon_blocks")
    if rule.rounding == "add_multiplier_shift_half_up" and not _xnnpack_takes(node, sa / so, sb / so, low=2.0 ** -10):
        rule = Rule("tflite", "add_shift20_double_rounding")  # the delegate declines: TFLite's kernel runs
    bounds = activation_bounds(node.attrs["activation"], so, zo, rule.kernels, dtype, node)
    params = None
    if rule.rounding == "add_multiplier_shift_half_up":
        m_a, m_b, sh_a = _xnnpack_add_params(sa, sb, so, 1 if node.op == "add" else -1)
        params = (True, m_a, sh_a, m_b, 0, np.zeros((4, 3), np.int64))
    elif rule.rounding == "add_shift20_double_rounding":
        m_a, sh_a, m_b, sh_b, m_out, sh_out = _tflite_add_params(sa, sb, so, node)
        params = (False, 0, 0, 0, 0, one_shift(np.array([m_a, m_b, m_out], np.int64),
                                              np.array([sh_a, sh_b, sh_out], np.int64)))
    return rule, bounds, params


@int8_kernel("add", "sub")
def add_sub(node, inputs, rules):
    sa, za = per_tensor(node, node.inputs[0], "first input")
    sb, zb = per_tensor(node, node.inputs[1], "second input")
    so, zo = per_tensor(node, node.outputs[0], "output")
    rule = rules.rule(ruled_op(node), node.name)
    dtype = node.outputs[0].dtype
    # the preparation (multipliers, XNNPACK's checks, bounds) depends on these alone: made once, not every run
    key = (node.op, rule, sa, sb, so, zo, node.attrs["activation"], dtype)
    prepared = _ADD_PREPARED.get(key)
    if prepared is None:
        if len(_ADD_PREPARED) >= 4096:
            _ADD_PREPARED.clear()
        prepared = _ADD_PREPARED[key] = _prepare_add(node, rule, sa, sb, so, zo, dtype)
    rule, bounds, params = prepared
    if rule.rounding in ("add_shift15_double_rounding", "add_shift15_neon_blocks"):
        if za or zb or zo or {t.dtype for t in (*node.inputs, *node.outputs)} != {"int16"}:
            raise MccError(f"TFLite's 16x8 {node.op} takes int16 inputs and output with zero point 0 (got zero "
                           f"points {za}, {zb}, {zo}); requantize the inputs to int16 first", node=node.name)
        same_shape = inputs[0].shape == inputs[1].shape
        a, b = np.broadcast_arrays(*(np.asarray(v, np.int64) for v in inputs))
        if rule.rounding == "add_shift15_neon_blocks" and same_shape:
            y = _tflite_add16_neon(a, b, sa, sb, so, node).reshape(a.shape)
        else:
            y = _tflite_add(a, b, sa, sb, so, node, dtype)
        return [output_stage(y, zo, bounds, dtype)]
    if rule.rounding == "add_float32_fma_ties_even":
        if node.op != "add":
            raise MccError("onnxruntime has no integer sub; the legalize_onnx pass makes it a float island",
                           node=node.name)
        return [_ort_add(inputs[0], inputs[1], sa, za, sb, zb, so, zo, bounds)]
    a, b = inputs if inputs[0].shape == inputs[1].shape else np.broadcast_arrays(*inputs)  # a residual: as they are
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    xnnpack, m_a, sh_a, m_b, sh_b, fixed = params
    out = np.empty(a.shape, np.int8)
    _add_int8(a.reshape(-1), b.reshape(-1), za, zb, xnnpack, m_a, sh_a, m_b, sh_b, 1 if node.op == "add" else -1,
              fixed, zo, *bounds, out.reshape(-1))
    return [out]


# mul's key -> (code, multiplier, shift, one_shift columns, float32 factor, bounds): the rule's arithmetic prepared
# once per quantization, as _ADD_PREPARED
_MUL_PREPARED: dict[tuple, tuple] = {}


def _reach(dtype, zero_point: int) -> int:
    """The largest |code - zero_point| of an integer dtype (255 for int8 codes and zero points)."""
    limits = np.iinfo(dtype)
    return max(int(limits.max) - zero_point, zero_point - int(limits.min))


def _prepare_mul(node, rule, sa, sb, so, zo, reach: int) -> tuple:
    """_mul_int8's code (0: double rounding, its one-shift form where double_rounding_int32 holds for products up
    to `reach`; 1: the general double rounding; 2: XNNPACK's float32 ties-even; 3: onnxruntime's zero point before
    the rounding), TFLite's multiplier and shift with their one_shift column, the float32 factor (sa * sb) / so, and
    the bounds."""
    check_rounding(node, rule, "double_rounding", "float32_ties_even", "float32_zero_point_ties_even")
    real = (sa * sb) / so  # float32 arithmetic in mul.cc, XNNPACK and MLAS
    if rule.kernels == "xnnpack" and not _xnnpack_takes(node, real, low=2.0 ** -16):
        rule = Rule("tflite", "double_rounding")  # the delegate declines: TFLite's kernel runs
    bounds = activation_bounds(node.attrs["activation"], so, zo, rule.kernels, node=node)
    code = {"float32_ties_even": 2, "float32_zero_point_ties_even": 3}.get(rule.rounding, 0)
    multiplier, shift = np.zeros(1, np.int64), np.zeros(1, np.int64)  # the float rules' (unused)
    if code == 0:
        multiplier, shift = (v.astype(np.int64).reshape(1) for v in fp.quantize_multiplier(np.float64(real)))
        if not double_rounding_int32(float(reach), np.zeros(1, np.int64), multiplier, shift):
            code = 1
    return code, multiplier[0], shift[0], one_shift(multiplier, shift)[:, 0].copy(), np.float32(real), bounds


@numba.njit(cache=True, nogil=True)
def _mul_int8(a, b, za, zb, code, multiplier, shift, fixed, real, zo, low, high, out):
    """The int8 mul of [rows, columns] a and b (either may be a broadcast view, strides 0) into out, prepared by
    _prepare_mul: runtime.fixed_point's requantize of (a - za) * (b - zb) and int8_output.output_stage, element by
    element with the rule's scalar form (int8_output's), or onnxruntime's rint(float32(prod) * real + float32(zo))
    clamped in float32 (NaN, from an infinite factor times 0, casts to 0 as numpy's cast does on x86 and ARM)."""
    rows, columns = out.shape
    scaled, nudge, below, total = fixed[0], fixed[1], fixed[2], fixed[3]
    zo32, low32, high32 = np.float32(zo), np.float32(low), np.float32(high)
    for r in range(rows):
        ra, rb, dst = a[r], b[r], out[r]
        if code == 0:
            for c in range(columns):
                q = one_shift_rounding((np.int64(ra[c]) - za) * (np.int64(rb[c]) - zb), scaled, nudge, below, total)
                dst[c] = min(max(q + zo, low), high)
        elif code == 1:
            for c in range(columns):
                dst[c] = clamp(double_rounding((np.int64(ra[c]) - za) * (np.int64(rb[c]) - zb), multiplier, shift),
                               zo, low, high)
        elif code == 2:
            for c in range(columns):
                product = np.float32((np.int64(ra[c]) - za) * (np.int64(rb[c]) - zb))
                dst[c] = clamp(to_int64(np.rint(product * real)), zo, low, high)
        else:
            for c in range(columns):
                product = np.float32((np.int64(ra[c]) - za) * (np.int64(rb[c]) - zb))
                q = np.rint(product * real + zo32)
                dst[c] = 0 if np.isnan(q) else np.int8(min(max(q, low32), high32))


def _rows(x, shape) -> np.ndarray:
    """x broadcast to `shape` as [rows, last dimension]: a view where numpy can merge the dimensions (same shape,
    a channel or scalar broadcast over one image), else a copy of the codes, never an int64 temporary."""
    return np.broadcast_to(x, shape).reshape(-1, shape[-1] if shape else 1)


@int8_kernel("mul")
def mul(node, inputs, rules):
    """TFLite's, XNNPACK's and onnxruntime's int8 MUL as one compiled pass (_mul_int8) over the int8 codes: the numpy
    form (int64 temporaries of the product, the fixed-point steps, the clamp) cost EfficientNet-B0's 650 MULs of a
    10-sample compile 7.2 s of one thread (its swish and squeeze-excitation products)."""
    sa, za = per_tensor(node, node.inputs[0], "first input")
    sb, zb = per_tensor(node, node.inputs[1], "second input")
    so, zo = per_tensor(node, node.outputs[0], "output")
    rule = rules.rule(node.op, node.name)
    a, b = (np.asarray(v) for v in inputs)
    key = (rule, sa, za, sb, zb, so, zo, node.attrs["activation"], a.dtype, b.dtype)
    prepared = _MUL_PREPARED.get(key)
    if prepared is None:
        if len(_MUL_PREPARED) >= 4096:
            _MUL_PREPARED.clear()
        prepared = _MUL_PREPARED[key] = _prepare_mul(node, rule, sa, sb, so, zo,
                                                     _reach(a.dtype, za) * _reach(b.dtype, zb))
    code, multiplier, shift, fixed, real, bounds = prepared
    shape = np.broadcast_shapes(a.shape, b.shape)
    out = np.empty(shape, np.int8)
    _mul_int8(_rows(a, shape), _rows(b, shape), za, zb, code, multiplier, shift, fixed, real, zo,
              *bounds, out.reshape(-1, shape[-1] if shape else 1))
    return [out]


@int8_kernel("minimum", "maximum")
def minimum_maximum(node, inputs, rules):
    check_rounding(node, rules.rule(node.op, node.name), "exact")
    for t in node.inputs:
        require_same_quant(node, t, node.outputs[0])
    return [(np.minimum if node.op == "minimum" else np.maximum)(inputs[0], inputs[1])]
