"""int8 activations: relu, relu6 and clip, leaky_relu, sigmoid and tanh, hardswish.

An int8 activation has only 256 possible inputs, so both libraries reduce the transcendental ones to a
lookup table built in float: TFLite (LUTPopulate) dequantizes in float32, applies expf / tanhf and rounds
half away from zero; XNNPACK dequantizes the other way round ((q - zp) * s), computes the sigmoid in
float64 and rounds ties to even. The table is built here the same way, then indexed. The piecewise-linear
ones are integer arithmetic: TFLite requantizes relu and leaky_relu with MultiplyByQuantizedMultiplier and
computes hardswish in 16-bit gemmlowp fixed point; XNNPACK's leaky_relu uses 8.8 fixed-point multipliers.
The delegate takes int8 LOGISTIC, TANH and LEAKY_RELU only; int8 RELU, RELU6, RELU_N1_TO_1 and HARD_SWISH
run TFLite's kernels in both kernel sets.
"""

from __future__ import annotations

import numba
import numpy as np

from ...errors import MccError
from .. import fixed_point as fp
from .int8_output import ACTIVATION_RANGE, clamp_bounds, output_stage
from .int8_registry import INT8_MAX, INT8_MIN, check_rounding, int8_kernel, per_tensor, saturate_int8

_CODES = np.arange(INT8_MIN, INT8_MAX + 1)  # every int8 input, in table order


def _params(node):
    return (*per_tensor(node, node.inputs[0], "input"), *per_tensor(node, node.outputs[0], "output"))


_PER_CODE: dict[tuple, np.ndarray] = {}  # key -> the 256 outputs, in table order


def _per_code(x: np.ndarray, key: tuple, compute) -> np.ndarray:
    """compute (int8 outputs of int64 codes) applied to int8 `x` through a table of its 256 results: an int8
    activation's output depends on the input code alone, so its arithmetic runs once per quantization, over the
    256 codes, instead of on every element of every run (numpy's int64 passes cost a MobileNetV3 hardswish
    ~140 us a call). TFLite's reference kernels compute them element by element on every run; the table holds
    the same integers. `key` holds everything `compute` depends on."""
    table = _PER_CODE.get(key)
    if table is None:
        if len(_PER_CODE) >= 4096:  # calibration and fidelity sweeps try many scales
            _PER_CODE.clear()
        table = _PER_CODE[key] = compute(_CODES)
    out = np.empty(np.shape(x), table.dtype)
    _index(np.ascontiguousarray(x).reshape(-1), table, out.reshape(-1))
    return out


@numba.njit(cache=True, nogil=True)
def _index(x, table, out):
    """out[i] = table[x[i] - INT8_MIN] in one compiled pass: numpy's fancy index (an int64 copy of the codes, a
    subtraction, a gather) cost EfficientNet-B0's sigmoids 0.64 s of a 10-sample compile."""
    for i in range(x.size):
        out[i] = table[np.int64(x[i]) - INT8_MIN]


# ---- relu, relu6, clip: requantize, then clamp --------------------------------------------------------------
@int8_kernel("relu", "relu6", "clip")
def relu_x(node, inputs, rules):
    """TFLite's QuantizedReluX: zp_out + MultiplyByQuantizedMultiplier(x - zp_in, s_in / s_out), clamped to
    zp_out + round(bound / s_out) (ties away), the multiplier's ratio computed in float32."""
    s_in, zp_in, s_out, zp_out = _params(node)
    check_rounding(node, rules.rule(node.op, node.name), "double_rounding")
    lo, hi = (node.attrs["min"], node.attrs["max"]) if node.op == "clip" else ACTIVATION_RANGE[node.op]

    def compute(codes):
        multiplier, shift = fp.quantize_multiplier(np.float64(s_in / s_out))
        y = fp.multiply_by_quantized_multiplier(codes - zp_in, multiplier, shift)
        return output_stage(y, zp_out, clamp_bounds(lo, hi, s_out, zp_out, "tflite"))

    return [_per_code(inputs[0], ("relu_x", s_in, zp_in, s_out, zp_out, lo, hi), compute)]


# ---- leaky_relu ------------------------------------------------------------------------------------------
@int8_kernel("leaky_relu")
def leaky_relu(node, inputs, rules):
    s_in, zp_in, s_out, zp_out = _params(node)
    alpha = np.float32(node.attrs["alpha"])
    rule = rules.rule(node.op, node.name)
    check_rounding(node, rule, "double_rounding", "multiplier_8bit_half_up")

    def compute(codes):
        dx = codes - zp_in
        positive, negative = s_in / s_out, (s_in * alpha) / s_out  # float32, as LeakyReluPrepare
        if rule.rounding == "multiplier_8bit_half_up" and _xnnpack_takes_leaky_relu(positive, positive * alpha):
            # xnn_init_qs8_lrelu_scalar_params: multipliers rint(256 * ratio), one rounding shift by 8
            m_pos, m_neg = (int(np.rint(np.float32(256) * r)) for r in (positive, positive * alpha))
            y = (dx * np.where(dx >= 0, m_pos, m_neg) + 128) >> 8
        else:
            # TFLite's QuantizeLeakyRelu (also what LiteRT runs when XNNPACK refuses the scales)
            m_id, sh_id = fp.quantize_multiplier(np.float64(positive))
            m_alpha, sh_alpha = fp.quantize_multiplier(np.float64(negative))
            y = np.where(dx >= 0, fp.multiply_by_quantized_multiplier(dx, m_id, sh_id),
                         np.sign(m_alpha) * fp.multiply_by_quantized_multiplier(dx, np.abs(m_alpha), sh_alpha))
        return saturate_int8(y + zp_out)

    return [_per_code(inputs[0], ("leaky_relu", s_in, zp_in, s_out, zp_out, alpha, rule.rounding), compute)]


def _xnnpack_takes_leaky_relu(positive, negative) -> bool:
    """The XNNPACK delegate's bounds on the two scale ratios of an int8 LEAKY_RELU."""
    return (1 / 256 <= positive <= 128) and (-127.99609375 <= negative <= 128) and abs(negative) >= 1 / 256


# ---- sigmoid and tanh: 256-entry tables ----------------------------------------------------------------------
def _f32(x) -> np.ndarray:
    """float32 of a float64 result: the correctly rounded value that glibc's expf / tanhf return."""
    return np.asarray(x, np.float64).astype(np.float32)


def _tflite_sigmoid(v):
    with np.errstate(over="ignore"):  # expf(-v) is inf below v = -88.7 too, and 1 / (1 + inf) the 0 it gives
        return np.float32(1) / (np.float32(1) + _f32(np.exp(-np.float64(v))))


def _xnnpack_sigmoid(v):
    e = np.exp(np.clip(v.astype(np.float64), -100, 100))
    return np.where(v > 100, np.float32(1), np.where(v < -100, np.float32(0), _f32(e / (1 + e))))


def _tanh(v):
    return _f32(np.tanh(v.astype(np.float64)))


_FUNCTIONS = {("sigmoid", "tflite"): _tflite_sigmoid, ("sigmoid", "xnnpack"): _xnnpack_sigmoid,
              ("tanh", "tflite"): _tanh, ("tanh", "xnnpack"): _tanh}


def _table(codes, fn, s_in, zp_in, s_out, zp_out, rule) -> np.ndarray:
    inv = np.float32(1) / s_out
    if rule.rounding == "lut_float32_round_half_away":  # TFLite's LUTPopulateInt8
        y = fp.round_half_away(fn(s_in * (codes - zp_in).astype(np.float32)) * inv) + zp_out
    else:  # XNNPACK's reference unary kernel, run once over all 256 codes
        y = np.rint(fn((codes.astype(np.float32) - np.float32(zp_in)) * s_in) * inv + np.float32(zp_out))
    return saturate_int8(y)


@int8_kernel("sigmoid", "tanh")
def lookup(node, inputs, rules):
    s_in, zp_in, s_out, zp_out = _params(node)
    rule = rules.rule(node.op, node.name)
    check_rounding(node, rule, "lut_float32_round_half_away", "lut_float_ties_even")
    if node.op == "sigmoid" and rule.kernels == "tflite" and (s_out, zp_out) != (np.float32(1 / 256), -128):
        raise MccError(f"TFLite's int8 LOGISTIC needs output scale 1/256 and zero point -128, got {s_out} and "
                       f"{zp_out}", node=node.name)
    return [_per_code(inputs[0], (node.op, rule, s_in, zp_in, s_out, zp_out),
                      lambda codes: _table(codes, _FUNCTIONS[node.op, rule.kernels], s_in, zp_in, s_out, zp_out, rule))]


# ---- hardswish: TFLite's 16-bit fixed point ---------------------------------------------------------------
def _int16_multiplier(real) -> tuple[int, int]:
    """QuantizeMultiplier, then DownScaleInt32ToInt16Multiplier: the top 16 bits, rounded."""
    m32, shift = fp.quantize_multiplier(np.float64(real))
    m16 = 32767 if m32 >= (1 << 31) - 1 - (1 << 15) else (int(m32) + (1 << 15)) >> 16
    return m16, int(shift)


def _saturating_left_shift16(x, amount):
    return np.clip(x << amount, -32768, 32767)


@int8_kernel("hardswish")
def hardswish(node, inputs, rules):
    """reference_ops::HardSwish: x * relu6(x + 3) / 6 with the input on a 2**7 finer scale, the "reluish"
    factor relu6(x + 3) / 6 as a 16-bit fixed-point value in [0, 1], a truncating (not rounding) final
    product, and one rounding shift to the output scale."""
    s_in, zp_in, s_out, zp_out = _params(node)
    check_rounding(node, rules.rule(node.op, node.name), "hardswish_fixed_point16")

    def compute(codes):
        hires_scale = np.float32(1 / 128) * s_in
        m_out, exp_out = _int16_multiplier(hires_scale / s_out)
        m_relu, exp_relu = _int16_multiplier(hires_scale / np.float32(3 / 32768))
        if exp_out > 0:
            raise MccError(f"TFLite's int8 HARD_SWISH needs s_in / 128 <= s_out, got input scale {s_in} and "
                           f"output scale {s_out}", node=node.name)
        hires = (codes - zp_in) * 128
        on_output_scale = fp.saturating_rounding_doubling_high_mul(hires, m_out, bits=16)
        reluish = hires
        if exp_relu > 0:
            reluish = _saturating_left_shift16(reluish, exp_relu - 1)
        reluish = fp.saturating_rounding_doubling_high_mul(reluish, m_relu, bits=16)
        if exp_relu > 0:
            reluish = _saturating_left_shift16(reluish, 1)
        elif exp_relu < 0:
            reluish = fp.rounding_divide_by_pot(reluish, -exp_relu)
        reluish = (reluish + (1 << 15)) >> 1  # [-1, 1] -> [0, 1] in Q0.15
        product = reluish * on_output_scale
        product = np.where(product >= 0, product >> 15, -((-product) >> 15))  # C division: truncation
        return saturate_int8(fp.rounding_divide_by_pot(product, -exp_out) + zp_out)

    return [_per_code(inputs[0], ("hardswish", s_in, zp_in, s_out, zp_out), compute)]
