"""The compiled int8 MUL (int8_elementwise._mul_int8) against runtime.fixed_point's element-wise arithmetic, the
numpy form the kernel replaced: every rule set, every pair of codes, broadcasts that stay views (channel, scalar)
and ones that copy (a row, a batch), factors at the edges of each rule (XNNPACK's decline below 2**-16 and refusal
at 2**8, shifts past the one-shift form, a flushed multiplier, an infinite float32 factor) and saturating
activations. The kernel itself is checked against LiteRT and onnxruntime in tests/test_int8_kernels.py and
tests/test_onnx_validate.py."""

import numpy as np
import pytest

from mcc.errors import MccError
from mcc.ir import Graph, QuantParams
from mcc.runtime import fixed_point as fp, rule_set
from mcc.runtime.kernels import int8_elementwise
from mcc.runtime.kernels.int8_output import activation_bounds
from mcc.runtime.rules import Rule

SETS = ("litert-ref", "litert-xnnpack", "onnxruntime")
CODES = np.arange(-128, 128, dtype=np.int8)


def _node(shape_a, shape_b, sa, sb, so, zero_points, activation=None):
    g = Graph()
    inputs = []
    for name, shape, scale, zero_point in (("a", shape_a, sa, zero_points[0]), ("b", shape_b, sb, zero_points[1])):
        t = g.add_input(name, shape, "int8", "NHWC" if len(shape) == 4 else None)
        t.quant = QuantParams(np.array([scale], np.float32), np.array([zero_point]), None)
        inputs.append(t)
    node = g.add_node("mul", inputs, {"activation": activation})
    node.outputs[0].quant = QuantParams(np.array([so], np.float32), np.array([zero_points[2]]), None)
    return node


def _numpy_mul(a, b, sa, sb, so, zero_points, activation, rules):
    """What mcc's int8 MUL computed before it was compiled: the int64 product, requantized by the rule."""
    (za, zb, zo), (sa, sb, so) = zero_points, (np.float32(v) for v in (sa, sb, so))
    rule = rule_set(rules).rule("mul")
    real = (sa * sb) / so
    if rule.kernels == "xnnpack" and real < 2.0 ** -16:
        rule = Rule("tflite", "double_rounding")
    bounds = activation_bounds(activation, so, zo, rule.kernels)
    acc = (a.astype(np.int64) - za) * (b.astype(np.int64) - zb)
    if rule.rounding == "float32_zero_point_ties_even":
        with np.errstate(invalid="ignore"):
            return np.clip(np.rint(acc.astype(np.float32) * real + np.float32(zo)), *bounds).astype(np.int8)
    if rule.rounding == "double_rounding":
        y = fp.multiply_by_quantized_multiplier(acc, *fp.quantize_multiplier(np.float64(real)))
    else:
        y = fp.scale_float32_ties_even(acc, real)
    return np.clip(y + zo, *bounds).astype(np.int8)


def _check(a, b, sa, sb, so, zero_points, activation, rules):
    node = _node(a.shape, b.shape, sa, sb, so, zero_points, activation)
    (got,) = int8_elementwise.mul(node, [a, b], rule_set(rules))
    want = _numpy_mul(a, b, sa, sb, so, zero_points, activation, rules)
    assert got.dtype == np.int8 and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


# (sa, sb, so): ordinary, power-of-two ties, a factor near 2**8 (shift 7: still the one-shift form), one of
# 2**-17 (XNNPACK declines: TFLite's rule), one whose multiplier flushes to 0 (shift below -31)
SCALES = ((0.05, 0.08, 0.1), (0.5, 0.25, 2.0), (2.0, 4.0, 0.0323), (2.0 ** -9, 2.0 ** -9, 2.0), (1e-10, 1e-10, 1.0))


@pytest.mark.parametrize("rules", SETS)
@pytest.mark.parametrize("scales", SCALES)
def test_every_code_pair_equals_the_fixed_point_arithmetic(rules, scales):
    for zero_points, activation in (((0, 0, 0), None), ((-128, 127, 5), "relu"), ((3, -9, -128), "relu6")):
        _check(CODES[:, None], CODES[None, :], *scales, zero_points, activation, rules)


@pytest.mark.parametrize("rules", SETS)
def test_broadcasts_equal_the_fixed_point_arithmetic(rules):
    rng = np.random.default_rng(0)
    shapes = (((1, 6, 7, 16), (1, 6, 7, 16)), ((1, 6, 7, 16), (1, 1, 1, 16)), ((1, 1, 1, 16), (1, 6, 7, 16)),
              ((1, 6, 7, 16), ()), ((), (5, 3)), ((), ()), ((1, 6, 7, 16), (1, 1, 7, 16)), ((3, 6, 7, 16), (3, 1, 1, 16)),
              ((2, 1, 5), (1, 4, 1)), ((1, 6, 7, 1), (1, 6, 7, 16)))
    for shape_a, shape_b in shapes:
        a, b = (rng.integers(-128, 128, s).astype(np.int8) for s in (shape_a, shape_b))
        _check(a, b, 0.0173, 0.0291, 0.004, (3, -7, 11), "relu", rules)
    x = rng.integers(-128, 128, (1, 16, 7, 12)).astype(np.int8)
    _check(x.transpose(0, 2, 3, 1)[:, :, ::2], x[:1, :, :1, :6].transpose(0, 2, 3, 1), 0.0173, 0.0291, 0.004,
           (3, -7, 11), None, rules)  # strided views, one broadcast


def test_a_factor_past_the_one_shift_form_takes_the_general_double_rounding():
    """sa * sb / so = 50000 (shift 16): 65025 << 16 passes 2**31, so the product wraps in int32 as TFLite's does."""
    node = _node((256, 1), (1, 256), 10.0, 10.0, 0.002, (0, 0, 0))
    code = int8_elementwise._prepare_mul(node, rule_set("litert-ref").rule("mul"), np.float32(10.0), np.float32(10.0),
                                         np.float32(0.002), 0, 255 * 255)[0]
    assert code == 1
    _check(CODES[:, None], CODES[None, :], 10.0, 10.0, 0.002, (1, -2, 3), None, "litert-ref")
    _check(CODES[:, None], CODES[None, :], 10.0, 10.0, 0.002, (1, -2, 3), None, "onnxruntime")
    with pytest.raises(MccError, match="at or above 256"):
        _check(CODES[:, None], CODES[None, :], 10.0, 10.0, 0.002, (1, -2, 3), None, "litert-xnnpack")


def test_an_infinite_float32_factor_gives_numpys_codes():
    """(sa * sb) / so overflows float32: onnxruntime's rule multiplies by inf (a zero product: NaN, cast to 0)."""
    _check(CODES[:, None], CODES[None, :], 1e30, 1e30, 1.0, (0, 5, 2), None, "onnxruntime")


def test_wider_codes_take_the_general_double_rounding():
    """int16 codes (|a - za| up to 32768): at a factor of 4 (shift 3) their products, shifted, pass int32 and wrap,
    which int8 products never do, so the one-shift form's reach comes from the codes' type."""
    rng = np.random.default_rng(1)
    a, b = (rng.integers(-32768, 32768, shape).astype(np.int16) for shape in ((4, 64), (1, 64)))
    a[0, :2], b[0, :2] = (-32768, 32767), (-32768, -32768)
    for rules in ("litert-ref", "onnxruntime"):
        _check(a, b, 2.0, 2.0, 1.0, (0, 3, 1), None, rules)
