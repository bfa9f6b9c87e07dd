"""The compiled fast paths of the int8 kernels against runtime.fixed_point's element-wise arithmetic, the reference the
rule table names: double rounding as one product and one shift (conv output stage, TFLite's add / sub), the 16x8
conv's reduced multiplier, onnxruntime's QLinearAdd as float64 sums rounded once to float32, onnxruntime's
QuantizeLinear, the 256-entry tables of the int8 activations indexed in a compiled loop, and the int8 mean's int64
sum. Each case also checks that the path it means to test is the one taken (the exactness guards decide), so a guard
that stopped admitting the case would fail here, not pass on the slow path. The kernels themselves are checked
against LiteRT and onnxruntime in tests/test_int8_kernels.py and tests/test_onnx_validate.py.
"""

import itertools
import types

import numpy as np

from mcc.ir import Graph, QuantParams
from mcc.runtime import fixed_point as fp, rule_set
from mcc.runtime.kernels import int8_activations, int8_elementwise, int8_output, int8_quantize, int8_reduce
from mcc.runtime.kernels.int8_registry import INT8_KERNELS, LIMITS
from mcc.runtime.rules import Rule

CODES = np.arange(-128, 128, dtype=np.int8)


def test_double_rounding_one_shift_equals_fixed_point():
    """Shifts from -31 to +12, accumulators up to the int32 limit the guard allows, ties on powers of two."""
    rng = np.random.default_rng(0)
    fast = 0
    for case in range(60):
        channels = 24
        real = np.exp(rng.uniform(-21, 8, channels)) if case % 3 else 2.0 ** -rng.integers(1, 21, channels)
        left = int(np.maximum(fp.quantize_multiplier(real)[1], 0).max())
        reach = (((2 ** 31 - 1) >> left) - 1000) // (1 + case % 2)  # at the guard's limit (|bias| <= 1000), or half
        bias = rng.integers(-1000, 1000, channels)
        acc = rng.integers(-(reach - 1000), reach - 1000, (40, channels)).astype(np.float64)
        acc[0] = reach - 1000  # the largest magnitudes
        acc[1] = -acc[0]
        if case % 3 == 0:  # real = 2**-k: acc + bias = (2j + 1) * 2**(k - 1) lies on a tie, j + 0.5, of either sign
            acc[2:] = (2 * rng.integers(-150, 150, (38, channels)) + 1) * (0.5 / real) - bias
        reach = float(reach)
        zero_point, bounds = int(rng.integers(-128, 128)), (-128, 127)
        requant = int8_output.RowRequant(real, Rule("tflite", "double_rounding"), zero_point, bounds)
        got = np.empty(acc.shape, np.int8)
        int8_output.requantize_block(acc, reach, bias, *requant.args, got)
        scaled = fp.multiply_by_quantized_multiplier(acc.astype(np.int64) + bias, *fp.quantize_multiplier(real))
        want = np.clip(scaled + zero_point, *bounds)
        np.testing.assert_array_equal(got, want)
        fast += int8_output.double_rounding_int32(reach, bias, *requant.args[1:3])
    assert fast == 60  # every case lies within the guard, so each took the one-shift form
    # past the guard (an accumulator that the left shift wraps), the general loop runs, still equal
    real = np.full(4, 3.0)
    multiplier, shift = fp.quantize_multiplier(real)
    requant = int8_output.RowRequant(real, Rule("tflite", "double_rounding"), 0, (-128, 127))
    acc = np.array([[2 ** 30, -(2 ** 30), 5, -7]] * 2, np.float64)
    assert not int8_output.double_rounding_int32(np.inf, np.zeros(4, np.int64), *requant.args[1:3])
    got = np.empty(acc.shape, np.int8)
    int8_output.requantize_block(acc, np.inf, np.zeros(4, np.int64), *requant.args, got)
    want = np.clip(fp.multiply_by_quantized_multiplier(acc.astype(np.int64), multiplier, shift), -128, 127)
    np.testing.assert_array_equal(got, want)


def test_tflite_add_equals_fixed_point_on_every_code_pair():
    a, b = np.repeat(CODES, 256), np.tile(CODES, 256)
    node = types.SimpleNamespace(op="add", name="add", attrs={"activation": None})
    for sa, sb, so in ((0.05, 0.08, 0.1), (0.5, 0.25, 0.5), (0.0173, 0.0291, 0.04), (2.0 ** -7, 2.0 ** -3, 2.0 ** -4)):
        sa, sb, so = np.float32(sa), np.float32(sb), np.float32(so)
        for op, sign in (("add", 1), ("sub", -1)):
            node.op = op
            rule, bounds, params = int8_elementwise._prepare_add(
                node, Rule("tflite", "add_shift20_double_rounding"), sa, sb, so, 3, "int8")
            xnnpack, m_a, sh_a, m_b, sh_b, fixed = params
            got = np.empty(a.size, np.int8)
            int8_elementwise._add_int8(a, b, -5, 7, xnnpack, m_a, sh_a, m_b, sh_b, sign, fixed, 3, *bounds, got)
            m_a, sh_a, m_b, sh_b, m_out, sh_out = int8_elementwise._tflite_add_params(sa, sb, so, node)
            rescale = fp.multiply_by_quantized_multiplier_smaller_than_one
            total = (rescale((a.astype(np.int64) + 5) << 20, m_a, sh_a)
                     + sign * rescale((b.astype(np.int64) - 7) << 20, m_b, sh_b))
            np.testing.assert_array_equal(got, np.clip(rescale(total, m_out, sh_out) + 3, *bounds))


def test_onnxruntime_add_equals_fma_emulation_on_every_code_pair():
    taken = []
    for sa, sb, so, zero_points in ((0.0173, 0.0291, 0.04, (3, -9, 11)), (0.5, 0.25, 0.125, (0, 0, -128)),
                                    (2.0 ** -7, 2.0 ** -3, 2.0 ** -4, (127, -128, 5)),
                                    (1e-30, 0.02, 0.03, (1, 2, 3))):  # 2**53 units apart: numpy's emulation runs
        sa, sb, so = np.float32(sa), np.float32(sb), np.float32(so)
        za, zb, zo = zero_points
        for a, b in ((CODES[:, None], CODES[None, :]), (CODES[None, :5], CODES[:, None])):
            got = int8_elementwise._ort_add(a, b, sa, za, sb, zb, so, zo, (-128, 127))
            (A, ra, zpa), (B, rb, zpb) = ((b, sb / so, zb), (a, sa / so, za)) \
                if int8_elementwise._first_input_constant(a.shape, b.shape) else ((a, sa / so, za), (b, sb / so, zb))
            fixed = np.float32(zo) - fp.fma_float32(ra, np.float32(zpa), rb * np.float32(zpb))
            A, B = np.broadcast_arrays(A.astype(np.float32), B.astype(np.float32))
            want = np.rint(fp.fma_float32(A, ra, fp.fma_float32(B, rb, fixed))).astype(np.int64)
            np.testing.assert_array_equal(got, np.clip(want, -128, 127))
            taken.append(int8_elementwise._fma_exact_in_float64(ra, rb, fixed))
    assert taken == [True] * 6 + [False] * 2


def test_onnxruntime_quantize_equals_its_definition():
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.standard_normal(4000) * 3, np.arange(-300, 300) / 16,
                        [np.nan, np.inf, -np.inf, 1e10, -1e10, -0.0]]).astype(np.float32)
    for scale, zero_point in ((np.float32(2 ** -3), 0), (np.float32(0.1), -17), (np.float32(0.0173), 100)):
        got = np.empty(x.size, np.int8)
        int8_quantize._quantize_float(x, scale, np.int64(zero_point), int8_quantize._COMPILED.index("divide_ties_even"),
                                      *(np.int64(v) for v in LIMITS["int8"]), got)
        with np.errstate(invalid="ignore", over="ignore"):
            q = x / scale
        low, high = np.float32(-128 - zero_point), np.float32(127 - zero_point)
        want = np.rint(np.where(np.isnan(q), low, np.clip(q, low, high))).astype(np.int64) + zero_point
        np.testing.assert_array_equal(got, want)


def test_table_activations_index_as_numpy_does():
    """int8_activations' compiled table lookup (_index) against numpy's fancy index of the table it cached, on a
    strided view and on a 0-d value, for the 256-entry activations of every rule set."""
    rng = np.random.default_rng(2)
    x = rng.integers(-128, 128, (2, 9, 7, 24)).astype(np.int8)
    for rules in ("litert-ref", "litert-xnnpack", "onnxruntime"):
        for op, (s_in, zp_in, s_out, zp_out) in (("sigmoid", (0.0625, 3, 1 / 256, -128)),
                                                 ("tanh", (0.05, -4, 1 / 128, 0)), ("relu6", (0.05, -9, 0.03, -128)),
                                                 ("hardswish", (0.05, 7, 0.04, -20))):
            g = Graph()
            t = g.add_input("x", x.shape, "int8", "NHWC")
            t.quant = QuantParams(np.array([s_in], np.float32), np.array([zp_in]), None)
            node = g.add_node(op, [t], {})
            node.outputs[0].quant = QuantParams(np.array([s_out], np.float32), np.array([zp_out]), None)
            kernel = INT8_KERNELS[op]
            int8_activations._PER_CODE.clear()
            kernel(node, [CODES], rule_set(rules))
            (table,) = int8_activations._PER_CODE.values()  # the table as computed, not as indexed
            for value in (x, x.transpose(0, 3, 1, 2)[:, ::2], x[0, 0, 0, 0].copy()):
                (got,) = kernel(node, [value], rule_set(rules))
                np.testing.assert_array_equal(got, table[value.astype(np.int64) + 128])
                assert got.dtype == np.int8 and got.shape == np.shape(value)


def test_int8_mean_sums_exactly_as_numpy_widens():
    """int8_reduce.int64_sum, compiled over a run of consecutive axes, numpy's sum elsewhere, against the int64 copy
    summed: every axis set of a 4-D tensor at full-scale codes, with and without keepdims, and an empty tensor."""
    rng = np.random.default_rng(3)
    x = rng.choice(np.array([-128, 127, -1, 0, 5], np.int8), (3, 17, 9, 40))
    for count in range(1, 5):
        for axes in itertools.combinations(range(4), count):
            for keepdims in (False, True):
                got = int8_reduce.int64_sum(x, axes, keepdims)
                want = x.astype(np.int64).sum(axis=axes, keepdims=keepdims)
                assert got.dtype == np.int64 and got.shape == want.shape
                np.testing.assert_array_equal(got, want)
    assert int8_reduce.int64_sum(x[:, :0], (1, 2), True).shape == (3, 1, 1, 40)


def test_reduced_multiplier_equals_fixed_point():
    """The 16x8 conv output stage (requantize_block's reduced_multiplier_half_up) against
    fixed_point.multiply_by_reduced_multiplier, on int64 accumulators of either sign up to 2**40, ties included."""
    rng = np.random.default_rng(4)
    real = np.exp(rng.uniform(-25, 0, 16))
    acc = rng.integers(-(2 ** 40), 2 ** 40, (64, 16)).astype(np.float64)
    acc[:8] = (2 * rng.integers(-1000, 1000, (8, 16)) + 1) * 2.0 ** 14  # odd multiples of 2**14
    bias = rng.integers(-1000, 1000, 16)
    requant = int8_output.RowRequant(real, Rule("tflite", "reduced_multiplier_half_up"), 0, LIMITS["int16"])
    got = np.empty(acc.shape, np.int32)
    int8_output.requantize_block(acc, np.inf, bias, *requant.args, got)
    scaled = fp.multiply_by_reduced_multiplier(acc.astype(np.int64) + bias, *fp.quantize_multiplier(real))
    np.testing.assert_array_equal(got, np.clip(scaled, *LIMITS["int16"]))
