"""16x8 layers (issue 15, item 3): int16 activations with int8 weights, TFLite's 16x8 kernels.

Single-op int16 models written by write_tflite run in LiteRT 2.3.0 with BUILTIN_REF ("ref") and the default
resolver ("default"), and in mcc's runtime on the file read back under litert-ref and litert-xnnpack: 0 differing
elements. Scales are powers of two or k/7 and most inputs sit near zero, so many results land on .5; each case also
names a plausible wrong rule that must differ, which shows the comparison can fail. A small torch model (conv ->
conv -> add -> fully_connected) compiled to arm-int8 with int16_layers validates bit-exact, and its 16-bit
activations gain a measured margin of SQNR over the int8 file.
"""

import flatbuffers
import numpy as np
import pytest
import torch
from ai_edge_litert import schema_py_generated as schema

from mcc.compiler import compile_model
from mcc.errors import MccError
from mcc.formats.tflite.reader import read_tflite
from mcc.formats.tflite.writer import write_tflite
from mcc.ir import Graph, QuantParams
from mcc.runtime import run, rule_set
from mcc.runtime.litert import make_interpreter, run_litert
from mcc.runtime.rules import Rule
from mcc.validate import validate

MATCHING = {"ref": "litert-ref", "default": "litert-xnnpack"}
I16 = (-32768, 32767)


def q(scale, axis=None):
    return QuantParams(np.asarray(scale, np.float32).reshape(-1), np.zeros(np.size(scale), np.int64), axis)


def wide_input(g, name, shape, scale, dtype="int16"):
    t = g.add_input(name, shape, dtype, "NHWC" if len(shape) == 4 else None)
    if dtype != "float32":
        t.quant = q(scale)
    return t


def const(g, name, data, quant):
    t = g.constant(name, data)
    t.quant = quant
    return t


def finish(g, node, scale, dtype="int16"):
    node.outputs[0].dtype = dtype
    if dtype != "float32":
        node.outputs[0].quant = q(scale)
    g.outputs = [node.outputs[0]]
    return g


def feed(rng, t):
    """Three quarters of int values within 40 of zero (sums that often end on .5), the rest within 1024, and one
    in 64 anywhere in range (saturation)."""
    if t.dtype == "float32":
        return rng.standard_normal(t.shape).astype(np.float32) * 4
    lo, hi = np.iinfo(t.dtype).min, np.iinfo(t.dtype).max
    draw = rng.random(t.shape)
    x = np.where(draw < 0.75, rng.integers(-40, 41, t.shape), rng.integers(-1024, 1025, t.shape))
    return np.clip(np.where(draw > 63 / 64, rng.integers(lo, hi + 1, t.shape), x), lo, hi).astype(t.dtype)


def weights(rng, g, shape, scales, axis):
    return const(g, "w", rng.integers(-127, 128, shape).astype(np.int8), q(scales, axis))


def bias64(rng, g, n, s_in, scales):
    return const(g, "b", rng.integers(-5000, 5001, n).astype(np.int64), q(np.float32(s_in) * np.asarray(scales), 0))


CASES = {}  # name -> (build(rng), {rule-table key: a wrong rounding that must differ somewhere})


def case(wrong=None):
    def register(fn):
        CASES[fn.__name__] = (fn, wrong or {})
        return fn
    return register


@case({"conv2d/int16": "float64_round_half_away"})
def conv2d_per_channel(rng):
    g = Graph()
    x = wide_input(g, "x", (1, 8, 8, 8), 0.5)
    s_w = 2.0 ** -rng.integers(1, 5, 16)
    n = g.add_node("conv2d", [x, weights(rng, g, (16, 3, 3, 8), s_w, 0), bias64(rng, g, 16, 0.5, s_w)],
                   {"padding": [1, 1, 1, 1], "activation": "relu"})
    return finish(g, n, 3.0)


@case({"depthwise_conv2d/int16": "double_rounding"})
def depthwise_conv2d_multiplier_2(rng):
    g = Graph()
    x = wide_input(g, "x", (1, 8, 8, 8), 0.5)
    s_w = 2.0 ** -rng.integers(1, 4, 16)
    n = g.add_node("depthwise_conv2d", [x, weights(rng, g, (1, 3, 3, 16), s_w, 3), bias64(rng, g, 16, 0.5, s_w)],
                   {"padding": [1, 1, 1, 1], "multiplier": 2})
    return finish(g, n, 4.0)


@case({"fully_connected/int16": "reduced_multiplier_half_up"})
def fully_connected_per_channel(rng):
    g = Graph()
    x = wide_input(g, "x", (16, 64), 1.0)
    s_w = rng.integers(1, 7, 32) / 7
    n = g.add_node("fully_connected", [x, weights(rng, g, (32, 64), s_w, 0), bias64(rng, g, 32, 1.0, s_w)], {})
    return finish(g, n, 11.0)


@case({"fully_connected/int16": "double_rounding"})
def fully_connected_per_tensor(rng):
    g = Graph()
    x = wide_input(g, "x", (4, 4, 64), 1.0)
    n = g.add_node("fully_connected", [x, weights(rng, g, (32, 64), [3 / 7], None), bias64(rng, g, 32, 1.0, [3 / 7])],
                   {"activation": "relu"})
    return finish(g, n, 11.0)


def _add(name, a_shape, b_shape, activation=None):
    def add(rng):
        g = Graph()
        a, b = wide_input(g, "a", a_shape, 0.05), wide_input(g, "b", b_shape, 0.08)
        return finish(g, g.add_node("add", [a, b], {"activation": activation}), 0.1)
    add.__name__ = name
    return case({"add/int16": "add_shift20_double_rounding"})(add)


# the default resolver's same-shape kernel works in blocks of 16 elements and leaves the tail to the reference's
_add("add_same_shape", (1, 8, 8, 16), (1, 8, 8, 16))
_add("add_same_shape_tail", (1, 5, 5, 7), (1, 5, 5, 7), "relu")
_add("add_broadcast", (1, 8, 8, 16), (1, 1, 1, 16))


def _convert(in_dtype, out_dtype, s_in, s_out, name, wrong=None):
    def build(rng):
        g = Graph()
        x = wide_input(g, "x", (4, 1000), s_in, in_dtype)
        if out_dtype == "float32":
            return finish(g, g.add_node("dequantize", [x]), None, "float32")
        return finish(g, g.add_node("quantize", [x], {"dtype": out_dtype}), s_out, out_dtype)
    build.__name__ = name
    return case(wrong)(build)


# float -> int16: the reference divides and rounds half away, the default resolver's optimized kernel does not
_convert("float32", "int16", None, 2.0 ** -10, "quantize_float_to_int16")
_convert("int8", "int16", 0.05, 0.0007, "requantize_int8_to_int16", {"requantize/int16": "multiplier_8bit_half_up"})
_convert("int16", "int8", 0.0007, 0.05, "requantize_int16_to_int8", {"requantize/int16": "multiplier_8bit_half_up"})
_convert("int16", "int16", 0.0007, 0.0011, "requantize_int16_to_int16")
_convert("int16", "float32", 0.0007, None, "dequantize_int16")


@case()
def reshape_int16(rng):
    g = Graph()
    x = wide_input(g, "x", (2, 4, 4, 8), 0.01)
    return finish(g, g.add_node("reshape", [x], {"shape": [2, -1]}), 0.01)


def _with_rule(name: str, key: str, rounding: str):
    rules = rule_set(name)
    rules.rules = {**rules.rules, key: Rule(rules.rules[key].kernels, rounding)}
    return rules


@pytest.mark.parametrize("name", sorted(CASES))
def test_16x8_op_is_bit_exact_with_litert(name):
    build, wrong = CASES[name]
    rng = np.random.default_rng(7)
    g = build(rng)
    data = write_tflite(g)
    graph = read_tflite(data)
    out = g.outputs[0].name
    assert graph.outputs[0].dtype == g.outputs[0].dtype
    feeds = {t.name: feed(rng, t) for t in g.inputs}
    if name == "quantize_float_to_int16":  # ties, NaN, infinities and a value beyond int32
        x = feeds["x"].ravel()
        x[:400] = (np.arange(-200, 200) + 0.5) * 2.0 ** -10
        x[400:405] = [np.nan, np.inf, -np.inf, 1e10, -1e10]
    results = {}
    for kernels, rules in MATCHING.items():
        interp = make_interpreter(data, kernels)
        # XNNPACK takes no 16x8 operator: the default resolver runs TFLite's own kernels
        assert "DELEGATE" not in {d["op_name"] for d in interp._get_ops_details()}
        theirs = run_litert(data, feeds, kernels, interpreter=interp)[out]
        ours = run(graph, feeds, rules=rules)[out]
        assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
        assert np.array_equal(ours, theirs, equal_nan=True), f"{kernels}: {np.count_nonzero(ours != theirs)} differ"
        results[kernels] = theirs
        for key, rounding in wrong.items():
            other = run(graph, feeds, rules=_with_rule(rules, key, rounding))[out]
            assert np.count_nonzero(other != theirs) > 0, f"the wrong rule {rounding} agrees too"
    if name in ("quantize_float_to_int16", "add_same_shape"):
        assert np.count_nonzero(results["ref"] != results["default"]) > 0  # the two kernels really differ
    if g.outputs[0].dtype == "int16":
        assert np.count_nonzero(np.abs(results["ref"].astype(np.int64)) < 32767) > results["ref"].size // 4


def test_16x8_rules_and_refusals():
    assert rule_set("litert-ref").rule("conv2d/int16").rounding == "reduced_multiplier_half_up"
    assert rule_set("litert-xnnpack").rule("quantize/int16").rounding == "multiply_inverse_ties_even_int32_min"
    g = CASES["conv2d_per_channel"][0](np.random.default_rng(0))
    feeds = {"x": np.zeros((1, 8, 8, 8), np.int16)}
    with pytest.raises(MccError, match="no integer rule for 'conv2d/int16'"):
        run(g, feeds, rules="onnxruntime")
    g = Graph()
    x = wide_input(g, "x", (1, 4, 4, 8), 0.01)
    finish(g, g.add_node("relu", [x]), 0.01)
    with pytest.raises(MccError, match="relu on int16 activations has no kernel.*16x8 ops: conv2d"):
        run(g, {"x": np.zeros((1, 4, 4, 8), np.int16)})
    g = CASES["fully_connected_per_channel"][0](np.random.default_rng(0))
    fc = g.nodes[0]
    fc.inputs[2] = const(g, "b32", fc.inputs[2].data.astype(np.int32), fc.inputs[2].quant)
    with pytest.raises(MccError, match="a 16x8 layer an int64 one"):
        run(g, {"x": np.zeros((16, 64), np.int16)})


def test_int16_add_with_power_of_two_flag_is_refused_on_reading():
    """mcc writes pot_scale_int16 = false; a file that keeps the flag's default (true) would run TFLite's other
    16-bit ADD kernel whenever the scales are powers of two, which mcc does not reproduce."""
    g = CASES["add_same_shape"][0](np.random.default_rng(0))
    model = schema.ModelT.InitFromPackedBuf(write_tflite(g), 0)
    options = model.subgraphs[0].operators[0].builtinOptions
    assert options.potScaleInt16 is False
    read_tflite(write_tflite(g))
    options.potScaleInt16 = True
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    with pytest.raises(MccError, match="pot_scale_int16 = true"):
        read_tflite(bytes(builder.Output()))


# ---- a compiled model ------------------------------------------------------------------------------------------
class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8 * 8 * 8, 10)

    def forward(self, x):
        a = torch.relu(self.c1(x))
        return self.fc((a + self.c2(a)).flatten(1))


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    """The model with weights on the int8 grid of their per-channel scales, so that the error left is the
    activations' and the int16 gain shows undiluted."""
    tmp = tmp_path_factory.mktemp("int16")
    torch.manual_seed(0)
    model = _Net().eval()
    with torch.no_grad():
        for layer in (model.c1, model.c2, model.fc):
            w = layer.weight
            peak = w.abs().flatten(1).max(1).values.view(-1, *[1] * (w.dim() - 1))
            w.copy_(torch.round(w / peak * 127) * peak / 127)
    src = tmp / "net.pt2"
    torch.export.save(torch.export.export(model, (torch.randn(1, 3, 8, 8),)), src)
    rng = np.random.default_rng(0)
    calib = {"x": rng.standard_normal((32, 3, 8, 8)).astype(np.float32)}
    np.savez(tmp / "held_out.npz", x=rng.standard_normal((8, 3, 8, 8)).astype(np.float32))
    return src, calib, tmp


def _compile_and_validate(net, name, layers):
    src, calib, tmp = net
    out = tmp / f"{name}.tflite"
    result = compile_model(src, "arm-int8", out, calib=calib, options={"int16_layers": layers})
    report = validate(out, tmp / "held_out.npz", src)
    for c in report["comparisons"]:
        assert c["exact"] and c["elements"] > 0 and c["differing"] == 0, (c["kernels"], c["first_differing_op"])
    return result, next(iter(report["fidelity"].values()))["sqnr_db"]


def test_compiled_16x8_layers_validate_and_gain(net):
    _, sqnr8 = _compile_and_validate(net, "int8", ())
    result, sqnr16 = _compile_and_validate(net, "int16", ("c1", "c2", "add", "fc"))
    dtypes = {n.name: n.outputs[0].dtype for n in result.graph.nodes}
    assert [dtypes[n] for n in ("c1", "c2", "add", "view", "fc")] == ["int16"] * 5
    assert [t.dtype for n in result.graph.nodes if n.op == "conv2d" for t in n.inputs[1:]] == ["int8", "int64"] * 2
    notes = next(p for p in result.report["passes"] if p["pass"] == "quantize_int8")["notes"]
    assert notes["ranges"]["int16_layers"] == ["c1", "c2", "add", "fc", "view"]
    # measured: 36.8 dB in int8, 66.5 dB with the four layers in 16x8
    assert sqnr16 > sqnr8 + 20, (sqnr8, sqnr16)


def test_mixed_int8_and_16x8_layers_requantize_at_the_boundaries(net):
    result, sqnr = _compile_and_validate(net, "mixed", ("c2", "fc"))
    g = result.graph
    dtypes = {n.name: n.outputs[0].dtype for n in g.nodes}
    assert (dtypes["c1"], dtypes["c2"], dtypes["add"], dtypes["fc"]) == ("int8", "int16", "int8", "int16")
    conversions = {(n.inputs[0].dtype, n.outputs[0].dtype) for n in g.nodes if n.op == "quantize"}
    assert {("int8", "int16"), ("int16", "int8")} <= conversions
    assert sqnr > 25


def test_int16_layers_refused_where_they_cannot_be(net):
    src, calib, tmp = net
    with pytest.raises(MccError, match="'view' is a reshape, which has no 16-bit.*conv2d, depthwise_conv2d"):
        compile_model(src, "arm-int8", calib=calib, options={"int16_layers": ("view",)})
    with pytest.raises(MccError, match="names 'nope'.*c1, c2, add, fc"):
        compile_model(src, "arm-int8", calib=calib, options={"int16_layers": ("nope",)})
    with pytest.raises(MccError, match="int16 activations.*onnxruntime's integer operators"):
        compile_model(src, "x86-int8", calib=calib, options={"int16_layers": ("c2",)})


@pytest.mark.parametrize("n", [12, 2508])
def test_optimized_float_to_int16_quantize_rounds_its_tail_half_away(n):
    """TFLite's optimized float32 -> int16 QUANTIZE takes blocks of 8 through its vector branch (ties to even) and
    the last n % 8 values through its scalar tail (ties away from zero): all-tie inputs show both."""
    g = Graph("q")
    x = g.add_input("x", (1, n), "float32", None)
    node = g.add_node("quantize", [x], {"dtype": "int16"}, name="y")
    finish(g, node, 0.25)
    feeds = {"x": ((np.arange(n) % 50) * 0.25 + 0.125).astype(np.float32).reshape(1, n)}
    data = write_tflite(g)
    theirs = run_litert(data, feeds, "default")["y"].ravel()
    away = np.nonzero(theirs != np.rint(feeds["x"].ravel() / 0.25))[0]
    assert away.size and away.min() >= n // 8 * 8  # the vector branch rounds ties to even, the tail away
    ours = run(read_tflite(data), feeds, rules="litert-xnnpack")["y"].ravel()
    assert np.array_equal(ours, theirs)


def test_optimized_float_to_int16_quantize_tail_divides_in_double():
    """A value whose float32 product x * (1 / s) is 198.5 while x / s is 198.49999...: the tail gives 198 (the
    reference's division by the double scale), the vector branch would round the product to 198 as a tie to even
    and a float32 tail would give 199."""
    g = Graph("q")
    x = g.add_input("x", (1, 9), "float32", None)
    finish(g, g.add_node("quantize", [x], {"dtype": "int16"}, name="y"), 0.041339092)
    feeds = {"x": np.full((1, 9), 8.20581, np.float32)}
    data = write_tflite(g)
    theirs = run_litert(data, feeds, "default")["y"].ravel()
    assert theirs[8] == 198 and np.float32(feeds["x"][0, 8]) * (np.float32(1) / np.float32(0.041339092)) == 198.5
    assert np.array_equal(run(read_tflite(data), feeds, rules="litert-xnnpack")["y"].ravel(), theirs)
