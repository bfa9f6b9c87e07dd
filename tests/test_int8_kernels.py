"""The int8 runtime against LiteRT 2.3.0, element for element, under each kernel set's rule set.

Every case is a one-op int8 model written with write_tflite, run by LiteRT with the reference kernels
("ref") and with the default resolver ("default": the XNNPACK delegate, or TFLite's optimized kernel where
the delegate declines the op), and by mcc's runtime on the file read back, with rules "litert-ref" and
"litert-xnnpack". Scales are mostly powers of two and most inputs sit near the zero point, so that many
results land exactly on .5 while others saturate: the two rule sets then disagree, and the tests also
assert that the wrong rule set differs, which shows they could fail.
"""

import zlib

import numpy as np
import pytest

from mcc.formats.tflite.writer import write_tflite
from mcc.errors import MccError
from mcc.formats.tflite.reader import read_tflite
from mcc.ir import Graph, QuantParams
from mcc.runtime import fixed_point as fp, run, rule_set
from mcc.runtime.litert import make_interpreter, run_litert
from mcc.runtime.rules import RULES, known

MATCHING = {"ref": "litert-ref", "default": "litert-xnnpack"}


# ---- fixed-point primitives against exact integer arithmetic --------------------------------------------
def exact_round_away(num: int, den: int) -> int:
    """num / den rounded to nearest, ties away from zero, in Python integers."""
    q, r = divmod(abs(num), den)
    q += 2 * r >= den
    return q if num >= 0 else -q


def test_quantize_multiplier_represents_the_real_factor():
    rng = np.random.default_rng(0)
    reals = np.concatenate([rng.uniform(1e-6, 4, 500), 2.0 ** -np.arange(1, 30), [1 - 2.0 ** -40, 0.5]])
    m, s = fp.quantize_multiplier(reals)
    assert np.all((m >= 1 << 30) & (m.astype(np.int64) < 1 << 31))
    for real, mi, si in zip(reals, m, s):
        frac, exp = np.frexp(real)
        assert mi * 2.0 ** (int(si) - 31) == pytest.approx(real, rel=2.0 ** -31)
        # q * 2**31 rounded half away; a carry to 2**31 moves into the shift
        want = exact_round_away(int(frac * 2.0 ** 53), 2 ** 22)
        assert (mi, si) == ((want, exp) if want < 2 ** 31 else (want // 2, exp + 1))
    assert fp.quantize_multiplier(1 - 2.0 ** -40) == (1 << 30, 1)
    m, s = fp.quantize_multiplier([0.0, 2.0 ** -40])
    assert m.tolist() == s.tolist() == [0, 0]  # zero, and the flush below 2**-31


def gemmlowp_high_mul(a: int, b: int) -> int:
    """gemmlowp's SaturatingRoundingDoublingHighMul as its C source spells it, in Python integers."""
    if a == b == -2 ** 31:
        return 2 ** 31 - 1
    nudged = a * b + (2 ** 30 if a * b >= 0 else 1 - 2 ** 30)
    return abs(nudged) // 2 ** 31 * (1 if nudged >= 0 else -1)  # C division truncates toward zero


def test_saturating_rounding_doubling_high_mul_is_gemmlowps():
    rng = np.random.default_rng(1)
    a = np.concatenate([rng.integers(-2 ** 31, 2 ** 31, 2000), [-2 ** 31, 3, -3, -5, 1 << 30]])
    b = np.concatenate([rng.integers(-2 ** 31, 2 ** 31, 2000), [-2 ** 31, 1 << 30, 1 << 30, 1 << 30, 1]])
    got = fp.saturating_rounding_doubling_high_mul(a, b)
    assert got.tolist() == [gemmlowp_high_mul(int(x), int(y)) for x, y in zip(a, b)]
    assert got[-5:].tolist() == [2 ** 31 - 1, 2, -1, -2, 1]  # 1.5 -> 2, -1.5 -> -1, -2.5 -> -2: ties upward


def test_rounding_divide_by_pot_rounds_ties_away():
    x = np.arange(-300, 301)
    for exponent in range(0, 6):
        assert fp.rounding_divide_by_pot(x, exponent).tolist() == [exact_round_away(int(v), 2 ** exponent) for v in x]


def test_multiply_by_quantized_multiplier_is_the_double_rounding():
    rng = np.random.default_rng(2)
    x = rng.integers(-2 ** 20, 2 ** 20, 3000)
    m, s = fp.quantize_multiplier(rng.uniform(2.0 ** -12, 8, 3000))
    got = fp.multiply_by_quantized_multiplier(x, m, s)
    for xi, mi, si, g in zip(x.tolist(), m.tolist(), s.tolist(), got.tolist()):
        assert g == exact_round_away(gemmlowp_high_mul(xi << max(si, 0), mi), 2 ** max(-si, 0))
    # the double rounding differs from one exact rounding of x * M * 2**(s - 31) somewhere
    single = [exact_round_away(xi * mi, 2 ** (31 - si)) for xi, mi, si in zip(x.tolist(), m.tolist(), s.tolist())]
    assert got.tolist() != single


def test_rounding_helpers_match_c():
    big = np.array([2 ** 23 + 1, -(2 ** 23 + 1), 2.5, -2.5, 0.49999997, 1e15 + 0.5], np.float64)
    assert fp.round_half_away(big).tolist() == [2 ** 23 + 1, -(2 ** 23 + 1), 3, -3, 0, 10 ** 15 + 1]
    assert fp.round_half_away(np.float32(2 ** 23 + 1)) == 2 ** 23 + 1  # floor(x + 0.5) in float32 gives + 2
    assert fp.scale_float32_ties_even(np.array([1, 3, 5, -1, -3]), 0.5).tolist() == [0, 2, 2, 0, -2]
    assert fp.scale_round_half_away(np.array([1, 3, -1]), 0.5).tolist() == [1, 2, -1]
    assert fp.wrap_int32(np.array([2 ** 31, -2 ** 31 - 1])).tolist() == [-2 ** 31, 2 ** 31 - 1]


# ---- rule sets ---------------------------------------------------------------------------------------------
def test_rule_sets_by_name_and_version():
    assert known() == {"litert-ref": ["2.3.0"], "litert-xnnpack": ["2.3.0"], "onnxruntime": ["1.32.0"]}
    assert rule_set().name == rule_set("litert-ref").name == "litert-ref@2.3.0"
    assert rule_set("litert-xnnpack@2.3.0").rule("conv2d").rounding == "float32_ties_even"
    assert rule_set("litert-ref").rule("fully_connected").rounding == "float64_round_half_away"
    assert all(rt in known() for rt, _, _ in RULES)
    with pytest.raises(MccError, match="unknown rule set 'tflm'.*litert-ref"):
        rule_set("tflm")
    with pytest.raises(MccError, match="no rules for version 2.2.0; known versions: 2.3.0"):
        rule_set("litert-ref@2.2.0")
    with pytest.raises(MccError, match="no integer rule for 'div'"):
        rule_set("litert-ref").rule("div")


# ---- one-op models in LiteRT and in mcc -------------------------------------------------------------------
def q(scale, zero_point=0, axis=None):
    return QuantParams(np.asarray(scale, np.float32).reshape(-1), np.zeros(np.size(scale), np.int64) + zero_point,
                       axis)


def int8_input(g, name, shape, scale, zero_point):
    t = g.add_input(name, shape, "int8", "NHWC" if len(shape) == 4 else None)
    t.quant = q(scale, zero_point)
    return t


def const(g, name, data, quant):
    t = g.constant(name, data)
    t.quant = quant
    return t


def finish(g, node, out_scale, out_zero_point):
    node.outputs[0].quant = q(out_scale, out_zero_point)
    g.outputs = [node.outputs[0]]
    return g


def feed(rng, g):
    """Three quarters of the values within 12 of the zero point (small sums: scaled by a power of two, many
    end on exactly .5), a quarter anywhere in int8 (large sums: saturation)."""
    out = {}
    for t in g.inputs:
        near = (int(t.quant.zero_point[0]) if t.quant else 0) + rng.integers(-12, 13, t.shape)
        out[t.name] = np.clip(np.where(rng.random(t.shape) < 0.75, near, rng.integers(-128, 128, t.shape)),
                              -128, 127).astype(np.int8)
    return out


def weights(rng, g, shape, scales, axis, wmax=3):
    """Small symmetric int8 weights (so sums stay near the tie-rich range) with power-of-two scales."""
    return const(g, "w", rng.integers(-wmax, wmax + 1, shape).astype(np.int8), q(scales, 0, axis))


def bias(rng, g, n, s_in, scales):
    return const(g, "b", rng.integers(-64, 65, n).astype(np.int32), q(np.float32(s_in) * np.asarray(scales), 0, 0))


def pow2(rng, n, lo, hi):
    return 2.0 ** -rng.integers(lo, hi + 1, n)


CASES = {}


def case(fn):
    CASES[fn.__name__] = fn
    return fn


@case
def conv2d_per_channel(rng):
    g = Graph()
    x = int8_input(g, "x", (1, 8, 8, 8), 0.5, 3)
    s_w = pow2(rng, 32, 1, 4)
    n = g.add_node("conv2d", [x, weights(rng, g, (32, 3, 3, 8), s_w, 0), bias(rng, g, 32, 0.5, s_w)],
                   {"padding": [1, 1, 1, 1], "activation": "relu"})
    return finish(g, n, 1.0, -5)


@case
def conv2d_per_tensor_strided(rng):
    g = Graph()
    x = int8_input(g, "x", (1, 9, 9, 4), 0.25, -7)
    n = g.add_node("conv2d", [x, weights(rng, g, (16, 3, 3, 4), [0.5], None), bias(rng, g, 16, 0.25, [0.5])],
                   {"stride": [2, 2], "activation": "relu6"})
    return finish(g, n, 0.5, 2)


@case
def conv2d_deep_float64_gemm(rng):
    """Weights too large for an exact float32 GEMM (runtime/kernels/int8_gemm.py: sum|w| * 128 >= 2**24 per
    channel), so the kernel accumulates in float64."""
    g = Graph()
    x = int8_input(g, "x", (1, 5, 5, 256), 0.5, 3)
    s_w = pow2(rng, 8, 2, 4)
    w = weights(rng, g, (8, 3, 3, 256), s_w, 0, wmax=127)
    assert np.abs(w.data.astype(np.int64)).reshape(8, -1).sum(axis=1).max() * 128 >= 2 ** 24
    n = g.add_node("conv2d", [x, w, bias(rng, g, 8, 0.5, s_w)], {"padding": [1, 1, 1, 1]})
    return finish(g, n, 64.0, 1)


@case
def depthwise_conv2d_multiplier_2(rng):
    g = Graph()
    x = int8_input(g, "x", (1, 8, 8, 8), 0.5, -2)
    s_w = pow2(rng, 16, 1, 3)
    n = g.add_node("depthwise_conv2d", [x, weights(rng, g, (1, 3, 3, 16), s_w, 3, wmax=6), bias(rng, g, 16, 0.5, s_w)],
                   {"padding": [1, 1, 1, 1], "multiplier": 2})
    return finish(g, n, 1.0, 4)


@case
def fully_connected_per_channel(rng):
    g = Graph()
    x = int8_input(g, "x", (16, 64), 1.0, 1)
    s_w = pow2(rng, 64, 0, 3)
    n = g.add_node("fully_connected", [x, weights(rng, g, (64, 64), s_w, 0), bias(rng, g, 64, 1.0, s_w)], {})
    return finish(g, n, 6.0, -3)


@case
def fully_connected_per_tensor(rng):
    g = Graph()
    x = int8_input(g, "x", (4, 4, 64), 0.5, -4)
    n = g.add_node("fully_connected", [x, weights(rng, g, (32, 64), [0.5], None), bias(rng, g, 32, 0.5, [0.5])],
                   {"activation": "relu"})
    return finish(g, n, 1.0, 0)


def _binary(op, b_shape, sa, sb, so, activation=None):
    def build(rng):
        g = Graph()
        a = int8_input(g, "a", (1, 8, 8, 16), sa, int(rng.integers(-9, 9)))
        b = int8_input(g, "b", b_shape, sb, int(rng.integers(-9, 9)))
        n = g.add_node(op, [a, b], {"activation": activation})
        return finish(g, n, so, int(rng.integers(-9, 9)))
    build.__name__ = f"{op}_{'broadcast' if b_shape != (1, 8, 8, 16) else 'same_shape'}"
    return case(build)


_binary("add", (1, 8, 8, 16), 0.05, 0.08, 0.1, "relu")
_binary("add", (1, 1, 1, 16), 0.5, 0.25, 0.5)
_binary("sub", (1, 8, 8, 16), 0.05, 0.08, 0.1)
_binary("mul", (1, 1, 8, 16), 0.5, 0.25, 2.0, "relu")


@case
def max_pool2d_relu6(rng):
    g = Graph()
    x = int8_input(g, "x", (2, 6, 6, 8), 12.0, 0)  # 6 / 12 = 0.5: TFLite rounds the bound to 1, XNNPACK to 0
    n = g.add_node("max_pool2d", [x], {"kernel": [3, 3], "stride": [2, 2], "padding": [0, 0, 1, 1],
                                       "activation": "relu6"})
    return finish(g, n, 12.0, 0)


@case
def avg_pool2d_same(rng):
    g = Graph()
    x = int8_input(g, "x", (2, 8, 8, 8), 0.1, -6)
    n = g.add_node("avg_pool2d", [x], {"kernel": [2, 2], "stride": [1, 1], "padding": [0, 0, 1, 1]})
    return finish(g, n, 0.1, -6)


@case
def mean_over_height_width(rng):
    g = Graph()
    x = int8_input(g, "x", (4, 5, 5, 64), 0.5, -9)
    n = g.add_node("mean", [x], {"axes": [1, 2], "keepdims": True})
    return finish(g, n, 0.25, 7)


@case
def mean_over_channels_2d(rng):
    g = Graph()
    x = int8_input(g, "x", (256, 8), 0.5, -9)
    n = g.add_node("mean", [x], {"axes": [1], "keepdims": False})
    return finish(g, n, 0.5, 3)  # sum / 8: every eighth mean ends on .5


def _clamp_half(op):
    def build(rng):
        g = Graph()
        x = int8_input(g, "x", (1, 8, 8, 16), 0.1, 3)
        c = const(g, "c", rng.integers(-128, 128, (16,)).astype(np.int8), q(0.1, 3))
        return finish(g, g.add_node(op, [x, c]), 0.1, 3)
    build.__name__ = f"{op}_with_constant"
    return case(build)


_clamp_half("minimum")
_clamp_half("maximum")


@case
def concat_channels(rng):
    g = Graph()
    a, b = int8_input(g, "a", (1, 4, 4, 8), 0.1, 2), int8_input(g, "b", (1, 4, 4, 5), 0.1, 2)
    n = g.add_node("concat", [a, b], {"axis": 3})
    return finish(g, n, 0.1, 2)


@case
def reshape_then_flat(rng):
    g = Graph()
    x = int8_input(g, "x", (2, 4, 4, 8), 0.1, 2)
    n = g.add_node("reshape", [x], {"shape": [2, -1]})
    return finish(g, n, 0.1, 2)


@case
def transpose_axes(rng):
    g = Graph()
    x = int8_input(g, "x", (2, 4, 3, 8), 0.1, 2)
    n = g.add_node("transpose", [x], {"perm": [0, 3, 1, 2]})
    n.outputs[0].layout = None
    return finish(g, n, 0.1, 2)


@case
def pad_with_value(rng):
    g = Graph()
    x = int8_input(g, "x", (1, 4, 4, 8), 0.5, -3)
    n = g.add_node("pad", [x], {"pads": [0, 0, 1, 2, 2, 1, 0, 0], "value": -1.5})
    return finish(g, n, 0.5, -3)


@case
def pad_with_zero(rng):
    g = Graph()
    x = int8_input(g, "x", (1, 4, 4, 8), 0.5, -3)
    n = g.add_node("pad", [x], {"pads": [0, 0, 1, 0, 0, 1, 0, 0], "value": 0.0})
    return finish(g, n, 0.5, -3)


# ops whose two rule sets really differ on these inputs (the others move bytes or share TFLite's kernel)
DISCRIMINATING = {"conv2d_per_channel", "conv2d_per_tensor_strided", "depthwise_conv2d_multiplier_2",
                  "fully_connected_per_channel", "fully_connected_per_tensor", "add_same_shape", "add_broadcast",
                  "sub_same_shape", "mul_broadcast", "max_pool2d_relu6", "mean_over_height_width",
                  "mean_over_channels_2d"}
# ... and those whose inputs drive some outputs into saturation at -128 or 127
SATURATING = {"conv2d_per_channel", "depthwise_conv2d_multiplier_2", "fully_connected_per_channel",
              "fully_connected_per_tensor", "add_same_shape", "add_broadcast", "sub_same_shape", "mul_broadcast"}


def delegated(model: bytes) -> bool:
    return any(d["op_name"] == "DELEGATE" for d in make_interpreter(model, "default")._get_ops_details())


def differing(got: dict, want: dict) -> int:
    assert got.keys() == want.keys()
    for k in want:
        assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape, k
    return sum(int(np.count_nonzero(got[k] != want[k])) for k in want)


@pytest.mark.parametrize("name", sorted(CASES))
def test_int8_op_matches_litert_bit_for_bit(name):
    rng = np.random.default_rng(zlib.crc32(name.encode()))  # a seed per case, whatever other cases exist
    g = CASES[name](rng)
    model = write_tflite(g)
    back = read_tflite(model)
    feeds = feed(rng, g)
    (node,) = back.nodes
    rule = rule_set("litert-xnnpack").rule(node.op)
    if rule.rounding != "exact" or node.attrs.get("activation"):
        # where the library matters, the default resolver runs the op in XNNPACK exactly when the table says so
        assert delegated(model) == (rule.kernels == "xnnpack")
    for kernels, rules in MATCHING.items():
        want = run_litert(model, feeds, kernels)
        assert differing(run(back, feeds, rules=rules), want) == 0, (kernels, rules)
        if name in SATURATING:
            assert any(np.isin(v, [-128, 127]).any() for v in want.values())
        if name in DISCRIMINATING:
            other = MATCHING["ref" if kernels == "default" else "default"]
            assert differing(run(back, feeds, rules=other), want) > 0, (kernels, other)


def test_reference_fully_connected_no_longer_rounds_like_conv():
    """LiteRT 2.3.0's reference FULLY_CONNECTED requantizes in float64; gemmlowp's double rounding (which
    its CONV_2D still uses) differs on the same accumulators, so the table needs a row per op."""
    rng = np.random.default_rng(5)
    g = Graph()
    x = int8_input(g, "x", (16, 64), 1.0, 1)
    s_w = (1 + np.arange(64) % 9) / 7  # no powers of two: the two roundings of the 31-bit multiplier show
    n = g.add_node("fully_connected", [x, weights(rng, g, (64, 64), s_w, 0), bias(rng, g, 64, 1.0, s_w)], {})
    finish(g, n, 11.0, -3)
    feeds = feed(rng, g)
    want = run_litert(write_tflite(g), feeds, "ref")
    as_conv = rule_set("litert-ref")
    as_conv.rules = {**as_conv.rules, "fully_connected": as_conv.rules["conv2d"]}
    assert differing(run(g, feeds), want) == 0
    assert differing(run(g, feeds, rules=as_conv), want) > 0


# ---- activations: every one of the 256 int8 inputs ------------------------------------------------------
ACTIVATION_CASES = [  # op, attrs, (input scale, zp), (output scale, zp), run by XNNPACK, rule sets differ
    ("relu", {}, (0.1, 3), (0.05, -100), False, False),
    ("relu6", {}, (0.5, 0), (12.0, 0), False, False),
    ("clip", {"min": -1.0, "max": 1.0}, (0.02, 3), (0.01, 0), False, False),
    ("sigmoid", {}, (0.0625, -10), (1 / 256, -128), True, False),
    ("tanh", {}, (0.05, 3), (1 / 128, 0), True, False),
    ("tanh", {}, (0.125, 0), (2.0, 0), True, True),  # tanh saturates to +-1.0f: +-0.5 is a tie
    ("hardswish", {}, (0.05, 3), (0.05, -20), False, False),
    ("hardswish", {}, (0.02, 0), (0.005, 0), False, False),
    ("leaky_relu", {"alpha": 0.2}, (0.05, 3), (0.04, -7), True, True),
    ("leaky_relu", {"alpha": 0.1}, (1.0, 0), (0.001, 0), False, False),  # ratio 1000 > 128: XNNPACK declines
]


@pytest.mark.parametrize("op,attrs,in_q,out_q,in_xnnpack,discriminating", ACTIVATION_CASES)
def test_int8_activation_matches_litert_on_every_input(op, attrs, in_q, out_q, in_xnnpack, discriminating):
    g = Graph()
    x = int8_input(g, "x", (1, 16, 16, 1), *in_q)
    node = g.add_node(op, [x], attrs)
    model = write_tflite(finish(g, node, *out_q))
    back = read_tflite(model)
    assert delegated(model) == in_xnnpack
    feeds = {"x": np.arange(-128, 128, dtype=np.int8).reshape(1, 16, 16, 1)}
    for kernels, rules in MATCHING.items():
        want = run_litert(model, feeds, kernels)
        assert differing(run(back, feeds, rules=rules), want) == 0, (kernels, rules)
        other = MATCHING["ref" if kernels == "default" else "default"]
        assert (differing(run(back, feeds, rules=other), want) > 0) == discriminating


def test_int8_softmax_matches_litert():
    """The fixed-point reference and the float-table optimized kernel part only where p * 256 lies within
    about 1e-6 of a half, a few elements in 10**5: many short rows make that happen."""
    rng = np.random.default_rng(0)
    differ = 0
    for shape, in_q, beta in [((50000, 4), (0.0625, 0), 1.0), ((1000, 4, 10), (0.1, 3), 1.0),
                              ((200, 100), (0.05, -5), 0.7)]:
        g = Graph()
        x = int8_input(g, "x", shape, *in_q)
        model = write_tflite(finish(g, g.add_node("softmax", [x], {"beta": beta}), 1 / 256, -128))
        back = read_tflite(model)
        assert not delegated(model)
        feeds = {"x": rng.integers(-128, 128, shape).astype(np.int8)}
        for kernels, rules in MATCHING.items():
            want = run_litert(model, feeds, kernels)
            assert differing(run(back, feeds, rules=rules), want) == 0, (shape, kernels)
            differ += differing(run(back, feeds, rules=MATCHING["ref" if kernels == "default" else "default"]), want)
    assert differ > 0


def test_softmax_rows_that_abort_tflite_are_refused():
    g = Graph()
    x = int8_input(g, "x", (1, 512), 0.1, 0)
    n = g.add_node("softmax", [x], {"beta": 1.0}, name="sm")
    finish(g, n, 1 / 256, -128)
    feeds = {"x": np.full((1, 512), 5, np.int8)}
    with pytest.raises(MccError, match="node 'sm'.*512.*aborts"):
        run(g, feeds)
    assert run(g, feeds, rules="litert-xnnpack")["sm"].tolist() == [[-127] * 512]  # 1/512 * 256 = 0.5 -> 1


# ---- QUANTIZE / DEQUANTIZE -----------------------------------------------------------------------------------
def _tie_heavy_floats(rng, scale, shape):
    """Floats on the quantization grid and half-way between grid points, plus the extremes."""
    x = (rng.integers(-600, 600, shape) * np.float32(scale) / np.float32(2)).astype(np.float32)
    x.reshape(-1)[:7] = [np.nan, np.inf, -np.inf, 1e10, -1e10, -0.0, 1e-40]
    return x


@pytest.mark.parametrize("kind,in_q,out_q,in_xnnpack,discriminating", [
    ("quantize", None, (0.1, 3), True, True),
    ("quantize", None, (0.25, -128), True, True),
    ("requantize", (0.1, 3), (0.3, -2), True, True),
    ("requantize", (0.25, -3), (1.0, 5), True, True),
    ("requantize", (1.0, 0), (0.005, 3), False, False),  # ratio 200 > 128: XNNPACK declines, TFLite runs it
    ("dequantize", (1 / 3, -5), None, True, False),
])
def test_quantize_and_dequantize_match_litert(kind, in_q, out_q, in_xnnpack, discriminating):
    rng = np.random.default_rng(42)
    shape = (1, 4, 4, 64)
    g = Graph()
    x = g.add_input("x", shape, "float32" if in_q is None else "int8", "NHWC")
    x.quant = None if in_q is None else q(*in_q)
    node = g.add_node("dequantize" if kind == "dequantize" else "quantize", [x], name="y")
    node.outputs[0].quant = None if out_q is None else q(*out_q)
    g.outputs = node.outputs
    model = write_tflite(g)
    back = read_tflite(model)
    xv = _tie_heavy_floats(rng, out_q[0], shape) if in_q is None else rng.integers(-128, 128, shape).astype(np.int8)
    assert delegated(model) == in_xnnpack
    for kernels, rules in MATCHING.items():
        want = run_litert(model, {"x": xv}, kernels)["y"]
        got = run(back, {"x": xv}, rules=rules)["y"]
        assert got.dtype == want.dtype and np.array_equal(got.view(np.uint8), want.view(np.uint8)), (kernels, rules)
        other = MATCHING["ref" if kernels == "default" else "default"]
        assert (np.count_nonzero(run(back, {"x": xv}, rules=other)["y"] != want) > 0) == discriminating


@pytest.mark.parametrize("op", ["conv2d", "depthwise_conv2d", "avg_pool2d"])
def test_nchw_int8_graphs_compute_what_their_nhwc_form_does(op):
    """The int8 spatial kernels run NHWC loops; an NCHW graph (weights OIHW / [C*m,1,kh,kw]) gives the same
    integers, transposed."""
    outs = {}
    for layout in ("NHWC", "NCHW"):
        g = Graph()
        shape = (1, 7, 6, 4) if layout == "NHWC" else (1, 4, 7, 6)
        x = g.add_input("x", shape, "int8", layout)
        x.quant = q(0.5, 3)
        attrs = {"stride": [1, 2], "padding": [1, 0, 1, 1], "activation": "relu"}
        if op == "avg_pool2d":
            node = g.add_node(op, [x], {**attrs, "kernel": [3, 2]})
            finish(g, node, 0.5, 3)
        else:
            w = np.random.default_rng(1).integers(-5, 6, (8, 3, 3, 4 if op == "conv2d" else 1)).astype(np.int8)
            s_w = 2.0 ** -np.arange(1, 9)
            if op == "depthwise_conv2d":  # [1,kh,kw,8] under NHWC, [8,1,kh,kw] under NCHW
                w, axis, attrs["multiplier"] = w.transpose(3, 1, 2, 0), 3, 2
                w, axis = (w, 3) if layout == "NHWC" else (w.transpose(3, 0, 1, 2), 0)
            else:
                w, axis = (w, 0) if layout == "NHWC" else (w.transpose(0, 3, 1, 2), 0)
            b = bias(np.random.default_rng(3), g, 8, 0.5, s_w)
            node = g.add_node(op, [x, const(g, "w", w, q(s_w, 0, axis)), b], attrs)
            finish(g, node, 1.0, -2)
        xv = np.random.default_rng(2).integers(-128, 128, (1, 7, 6, 4)).astype(np.int8)
        feeds = {"x": xv if layout == "NHWC" else xv.transpose(0, 3, 1, 2).copy()}
        y = run(g, feeds)[node.outputs[0].name]
        outs[layout] = y if layout == "NHWC" else y.transpose(0, 2, 3, 1)
    assert np.array_equal(outs["NHWC"], outs["NCHW"]) and np.unique(outs["NHWC"]).size > 10


# ---- a chain of int8 ops, compared operator by operator ---------------------------------------------------
@pytest.mark.filterwarnings("ignore:Warning. Enabling `experimental_preserve_all_tensors`")
def test_int8_network_matches_litert_at_every_tensor():
    rng = np.random.default_rng(7)
    g = Graph()
    x = int8_input(g, "x", (1, 10, 10, 4), 0.5, -1)
    s1 = pow2(rng, 8, 3, 6)
    c1 = g.add_node("conv2d", [x, weights(rng, g, (8, 3, 3, 4), s1, 0), bias(rng, g, 8, 0.5, s1)],
                    {"stride": [2, 2], "padding": [0, 0, 1, 1], "activation": "relu6"}, name="c1")
    c1.outputs[0].quant = q(0.25, -128)
    s2 = pow2(rng, 8, 1, 3)
    w2 = const(g, "w2", rng.integers(-9, 10, (1, 3, 3, 8)).astype(np.int8), q(s2, 0, 3))
    b2 = const(g, "b2", rng.integers(-64, 65, 8).astype(np.int32), q(0.25 * s2, 0, 0))
    c2 = g.add_node("depthwise_conv2d", [c1.outputs[0], w2, b2], {"padding": [1, 1, 1, 1]}, name="c2")
    c2.outputs[0].quant = q(0.5, 3)
    add = g.add_node("add", [c2.outputs[0], c1.outputs[0]], {"activation": "relu"}, name="add")
    add.outputs[0].quant = q(0.5, -20)
    pool = g.add_node("mean", [add.outputs[0]], {"axes": [1, 2], "keepdims": True}, name="pool")
    pool.outputs[0].quant = q(0.25, -10)
    flat = g.add_node("reshape", [pool.outputs[0]], {"shape": [1, 8]}, name="flat")
    flat.outputs[0].quant = pool.outputs[0].quant
    s3 = pow2(rng, 10, 3, 5)
    w3 = const(g, "w3", rng.integers(-30, 31, (10, 8)).astype(np.int8), q(s3, 0, 0))
    fc = g.add_node("fully_connected", [flat.outputs[0], w3, bias(rng, g, 10, 0.25, s3)], {}, name="fc")
    fc.outputs[0].quant = q(0.125, 0)
    g.outputs = [fc.outputs[0]]
    model = write_tflite(g)
    back = read_tflite(model)
    feeds = feed(rng, g)
    for kernels, rules in MATCHING.items():
        want = run_litert(model, feeds, kernels, keep_all=True)
        got = run(back, feeds, keep_all=True, rules=rules)
        for n in back.nodes:
            name = n.outputs[0].name
            assert np.count_nonzero(got[name] != want[name]) == 0, (kernels, name)


# ---- what the int8 kernels refuse ------------------------------------------------------------------------
def test_concat_of_differently_quantized_inputs_is_refused_like_litert():
    g = Graph()
    a, b = int8_input(g, "a", (1, 2, 2, 3), 0.1, 0), int8_input(g, "b", (1, 2, 2, 3), 0.2, 0)
    n = g.add_node("concat", [a, b], {"axis": 3})
    finish(g, n, 0.1, 0)
    with pytest.raises(RuntimeError):
        make_interpreter(write_tflite(g), "ref")
    with pytest.raises(MccError, match="quantized differently.*insert a quantize node"):
        run(g, feed(np.random.default_rng(0), g))
    # MAXIMUM compares raw codes whatever the parameters say: LiteRT runs it, mcc refuses the meaningless case
    n.op, n.attrs = "maximum", {}
    with pytest.raises(MccError, match="maximum: 'b' and 'concat' are quantized differently"):
        run(g, feed(np.random.default_rng(0), g))


def test_missing_quantization_and_float_bias_are_named():
    g = Graph()
    x = g.add_input("x", (1, 4, 4, 2), "int8", "NHWC")
    w = const(g, "w", np.ones((3, 1, 1, 2), np.int8), q(0.5, 0))
    n = g.add_node("conv2d", [x, w], {}, name="c")
    finish(g, n, 1.0, 0)
    feeds = feed(np.random.default_rng(0), g)
    with pytest.raises(MccError, match="node 'c'.*input 'x' \\(int8\\) has no quantization"):
        run(g, feeds)
    x.quant = q(0.5, 0)
    n.inputs.append(g.constant("b", np.zeros(3, np.float32)))
    with pytest.raises(MccError, match="int32 bias"):
        run(g, feeds)


def test_unquantized_bias_is_refused_where_xnnpack_would_not_run_the_op():
    rng = np.random.default_rng(3)
    g = Graph()
    x = int8_input(g, "x", (1, 8), 0.25, -10)
    b = const(g, "b", rng.integers(-64, 65, 10).astype(np.int32), None)
    n = g.add_node("fully_connected", [x, weights(rng, g, (10, 8), pow2(rng, 10, 3, 5), 0), b], {}, name="fc")
    finish(g, n, 0.125, 0)
    model = write_tflite(g)
    assert not delegated(model)  # LiteRT falls back to its optimized (ruy) kernel
    feeds = feed(rng, g)
    assert differing(run(read_tflite(model), feeds), run_litert(model, feeds, "ref")) == 0
    with pytest.raises(MccError, match="node 'fc'.*bias 'b' has no quantization.*XNNPACK"):
        run(g, feeds, rules="litert-xnnpack")
    # with one weight scale TFLite checks the bias scale, and refuses this bias outright
    n.inputs[1].quant = q(0.0625, 0)
    with pytest.raises(RuntimeError, match="scale_diff"):
        make_interpreter(write_tflite(g), "ref")
    with pytest.raises(MccError, match="bias 'b' has scale 0.0, but TFLite requires"):
        run(g, feeds)


def test_int8_op_without_kernel_is_named():
    g = Graph()
    x = int8_input(g, "x", (1, 4), 0.5, 0)
    n = g.add_node("div", [x, int8_input(g, "y", (1, 4), 0.5, 0)], {}, name="d")
    finish(g, n, 1.0, 0)
    with pytest.raises(MccError, match="node 'd'.*no int8 kernel for op 'div'"):
        run(g, feed(np.random.default_rng(0), g))
