"""int8 post-training quantization: the zoo quantized and compared with LiteRT at every tensor, accuracy on the
trained digits model, SQNR on held-out data, the TFLite spec's parameter rules on a hand-built graph, float
islands, io forms, errors, determinism, cross-layer equalization and bias correction.

Each zoo model is lowered with the arm-fp32 pipeline, then run through cross_layer_equalization,
quantize_int8 and eliminate_dead (the arm-int8 tail) with calibration arrays in the source NCHW layout.
"""

import io

import numpy as np
import pytest
import torch

from mcc.formats.tflite.writer import write_tflite
from mcc.compiler import lower
from mcc.errors import MccError
from mcc.examples.zoo import ZOO, digits_split
from mcc.formats.tflite.reader import read_tflite
from mcc.frontend.torch_export import from_module
from mcc.ir import Graph, QuantParams
from mcc.passes import run_pipeline
from mcc.passes.calibrate import output_sqnr_db
from mcc.passes.equalize import find_pairs
from mcc.passes.quantize_int8 import FIXED, affine_params
from mcc.progress import Progress
from mcc.runtime import run
from mcc.runtime.litert import run_litert

pytestmark = pytest.mark.filterwarnings("ignore:Warning. Enabling `experimental_preserve_all_tensors`")

TAIL = ["cross_layer_equalization", "quantize_int8", "eliminate_dead"]
MATCHING = {"ref": "litert-ref", "default": "litert-xnnpack"}
# Output SQNR (dB) on held-out data each model must reach (measured: module docstring of quantize_int8).
SQNR_BOUND = {"resnet18_style": 24.0, "mobilenet_v2_style": 18.0, "mobilenet_v3_small_style": 18.0,
              "digits_classifier": 34.0}


def _nhwc(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


@pytest.fixture(scope="module")
def zoo_float():
    """name -> (torch model, float NHWC graph, calibration NCHW, held-out NCHW), built once per model."""
    cache = {}

    def get(name):
        if name not in cache:
            model, example = ZOO[name]()
            graph, _ = lower(from_module(model, (example,)), "arm-fp32")
            if name == "digits_classifier":
                split = digits_split()
                calib, held = split.x_train[:64].numpy(), split.x_test.numpy()
            else:
                rng = np.random.default_rng(0)
                calib = rng.standard_normal((64,) + tuple(example.shape[1:])).astype(np.float32)
                held = rng.standard_normal((32,) + tuple(example.shape[1:])).astype(np.float32)
            cache[name] = model, graph, calib, held
        return cache[name]
    return get


@pytest.fixture(scope="module", params=sorted(ZOO))
def zoo(request, zoo_float):
    name = request.param
    model, graph, calib, held = zoo_float(name)
    quantized, records = run_pipeline(graph, TAIL, {"calibration": {"x": calib}})
    assert records[0].notes["cle"]["pairs"] == len(find_pairs(graph))  # on by default, with bias correction
    return name, model, graph, quantized, records[1].notes, calib, held


def _tensor_differences(data: bytes, feeds: dict) -> dict:
    """kernel set -> {tensor name: elements where mcc's runtime and LiteRT differ}, over every node output."""
    back = read_tflite(data)
    names = [o.name for n in back.nodes for o in n.outputs]
    out = {}
    for kernels, rules in MATCHING.items():
        want = run_litert(data, feeds, kernels, keep_all=True)
        got = run(back, feeds, keep_all=True, rules=rules)
        assert set(names) <= set(want), f"LiteRT lacks tensors {sorted(set(names) - set(want))}"
        out[kernels] = {n: int(np.count_nonzero(got[n] != want[n])) for n in names}
    return out


# ---- the zoo ------------------------------------------------------------------------------------------------
def test_zoo_model_is_all_int8_to_the_spec(zoo):
    name, _, graph, q, notes, _, _ = zoo
    assert notes["float_ops"] == [] and notes["observer"] == "mse" and notes["io"] == "float"
    assert notes["bias_correction"]["layers"] == notes["ranges"]["weights_per_channel"]
    assert [n.op for n in q.nodes if n.outputs[0].dtype != "int8"] == ["dequantize"]
    assert [n.op for n in q.nodes if n.op == "quantize"] == ["quantize"]
    assert q.inputs[0].name == graph.inputs[0].name and q.outputs[0].name == graph.outputs[0].name
    weighted = [n for n in q.nodes if n.op in ("conv2d", "depthwise_conv2d", "fully_connected")]
    assert len(weighted) == notes["ranges"]["weights_per_channel"] > 0
    for n in weighted:
        x, w, b = n.inputs
        axis = 3 if n.op == "depthwise_conv2d" else 0
        assert w.dtype == "int8" and w.quant.axis == axis and not w.quant.zero_point.any()
        assert w.quant.scale.size == w.shape[axis] and np.abs(w.data.astype(int)).max() <= 127
        assert b.dtype == "int32" and not b.quant.zero_point.any()
        assert np.array_equal(b.quant.scale, (x.quant.scale[0] * w.quant.scale).astype(np.float32))
    for t in q.tensors():
        if t.dtype == "int8" and not t.is_constant:
            assert t.quant.scale.size == 1 and -128 <= t.quant.zero_point[0] <= 127


def test_zoo_model_matches_litert_bit_for_bit_at_every_tensor(zoo):
    name, _, _, q, _, calib, held = zoo
    data = write_tflite(q)
    for sample in (calib[:1], held[:1]):
        for kernels, diffs in _tensor_differences(data, {"x": _nhwc(sample)}).items():
            assert len(diffs) == len(q.nodes)
            assert sum(diffs.values()) == 0, f"{name} under {kernels}: {({k: v for k, v in diffs.items() if v})}"


def test_zoo_model_keeps_its_float_outputs_on_held_out_data(zoo):
    name, _, graph, q, _, _, held = zoo
    sqnr = output_sqnr_db(graph, q, [{"x": _nhwc(h[None])} for h in held[:32]])
    assert sqnr > SQNR_BOUND[name], f"{name}: output SQNR {sqnr:.2f} dB"


def test_digits_accuracy_drops_at_most_half_a_point(zoo_float):
    model, graph, calib, _ = zoo_float("digits_classifier")
    split = digits_split()
    with torch.no_grad():
        float_accuracy = (model(split.x_test).argmax(1) == split.y_test).float().mean().item() * 100
    q, _ = run_pipeline(graph, TAIL, {"calibration": {"x": calib}})
    data = write_tflite(q)
    predictions = [int(np.argmax(next(iter(run_litert(data, {"x": _nhwc(x[None])}, "default").values()))))
                   for x in split.x_test.numpy()]
    int8_accuracy = float(np.mean(np.array(predictions) == split.y_test.numpy())) * 100
    assert float_accuracy > 95 and float_accuracy - int8_accuracy <= 0.5, (float_accuracy, int8_accuracy)


# ---- the spec's parameter rules on one graph with every kind of op ----------------------------------------
def _spec_graph(rng, with_prelu=False) -> Graph:
    """x -> pad -> conv -> maximum 0.25 -> sigmoid; x -> conv -> {tanh, (add 3, relu6) * per-channel const}; the
    three -> concat -> max_pool -> avg_pool -> reshape -> fully_connected -> softmax, and max_pool -> transpose
    as a second output. `with_prelu` puts a prelu (no int8 kernel) after the second conv."""
    g = Graph("spec")
    x = g.add_input("x", (1, 6, 6, 4), layout="NHWC")

    def node(op, inputs, attrs=None, name=None):
        return g.add_node(op, inputs, attrs, name=name).outputs[0]

    def const(name, shape, scale=0.5):
        return g.constant(name, (rng.standard_normal(shape) * scale).astype(np.float32))

    padded = node("pad", [x], {"pads": [0, 0, 1, 1, 1, 1, 0, 0]}, "pad")
    c1 = node("conv2d", [padded, const("w1", (8, 3, 3, 4)), const("b1", (8,))], {"activation": "relu"}, "c1")
    c1 = node("maximum", [c1, g.constant("floor", np.array([0.25], np.float32))], name="max")
    c2 = node("conv2d", [x, const("w2", (8, 1, 1, 4)), const("b2", (8,))], name="c2")
    if with_prelu:
        c2 = node("prelu", [c2, g.constant("alpha", np.full(8, 0.1, np.float32))], name="prelu")
    sig, tanh = node("sigmoid", [c1], name="sig"), node("tanh", [c2], name="tanh")
    shifted = node("add", [c2, g.constant("three", np.array([3.0], np.float32))], {"activation": "relu6"}, "add")
    gated = node("mul", [shifted, g.constant("gain", np.linspace(0.1, 2.0, 8, dtype=np.float32))], name="mul")
    cat = node("concat", [sig, tanh, gated], {"axis": 3}, "cat")
    pooled = node("max_pool2d", [cat], {"kernel": [2, 2], "stride": [2, 2]}, "maxpool")
    averaged = node("avg_pool2d", [pooled], {"kernel": [3, 3], "stride": [1, 1]}, "avgpool")
    flat = node("reshape", [averaged], {"shape": [1, 24]}, "flat")
    logits = node("fully_connected", [flat, const("w3", (10, 24)), const("b3", (10,))], name="fc")
    g.outputs = [node("softmax", [logits], name="softmax"), node("transpose", [pooled], {"perm": [0, 2, 1, 3]}, "tr")]
    return g


def _spec_calibration(n=32):
    return {"x": np.random.default_rng(5).standard_normal((n, 6, 6, 4)).astype(np.float32)}


def test_spec_rules_fixed_shared_and_constant_parameters():
    g = _spec_graph(np.random.default_rng(4))
    q, records = run_pipeline(g, ["quantize_int8"], {"calibration": _spec_calibration()})
    quant = {t.name: t.quant for t in q.tensors()}
    for node_name, op in [("sig", "sigmoid"), ("tanh", "tanh"), ("softmax/int8", "softmax")]:
        scale, zero_point = FIXED[op]
        assert quant[node_name] == QuantParams(np.float32(scale), zero_point)
    # byte-moving ops share parameters; the concat's range (0..12 from the gated branch, read by nothing else, which
    # joins it) is beyond what sigmoid's and tanh's fixed parameters cover, so both are requantized into it
    cat = q.node("cat")
    assert all(t.quant == quant["cat"] for t in cat.inputs)
    assert quant["cat"] == quant["mul"] and quant["cat"].scale[0] > 8 / 255
    assert [n.op for n in q.nodes if n.op == "quantize" and n.inputs[0].dtype == "int8"] == ["quantize"] * 2
    assert [t.name for t in cat.inputs[:2]] == ["sig/requantize", "tanh/requantize"]
    for a, b in [("cat", "maxpool"), ("maxpool", "avgpool"), ("avgpool", "flat"), ("maxpool", "tr/int8"),
                 ("x/int8", "pad"), ("c1", "max")]:
        assert quant[a] == quant[b], (a, b)
    floor = q.node("max").inputs[1]  # a constant operand of a shared-parameter op takes the group's parameters
    assert floor.dtype == "int8" and floor.quant == quant["max"]
    # constants of elementwise ops: int8, per tensor, their own parameters; 3.0 is exactly representable
    three, gain = q.node("add").inputs[1], q.node("mul").inputs[1]
    for t in (three, gain):
        assert t.dtype == "int8" and t.quant.axis is None and t.quant.scale.size == 1
    assert (three.data[0] - three.quant.zero_point[0]) * three.quant.scale[0] == pytest.approx(3.0, abs=1e-6)
    assert records[0].notes["ranges"]["fixed"] == 3 and records[0].notes["float_ops"] == []
    data = write_tflite(q)  # LiteRT refuses a CONCATENATION whose inputs differ in parameters
    feeds = {"x": _spec_calibration(1)["x"]}
    for kernels, diffs in _tensor_differences(data, feeds).items():
        assert sum(diffs.values()) == 0, (kernels, {k: v for k, v in diffs.items() if v})


def test_affine_params_cover_the_range_and_represent_zero():
    for lo, hi in [(-1.0, 3.0), (0.0, 6.0), (-0.001, 0.0), (2.0, 5.0), (0.0, 0.0)]:
        p = affine_params(lo, hi)
        s, zp = float(p.scale[0]), int(p.zero_point[0])
        assert -128 <= zp <= 127
        assert (-128 - zp) * s <= min(lo, 0) + s / 2 and (127 - zp) * s >= max(hi, 0) - s / 2


# ---- ops that stay float ----------------------------------------------------------------------------------
def test_op_without_int8_kernel_stays_float_or_is_refused():
    g = _spec_graph(np.random.default_rng(4), with_prelu=True)
    q, records = run_pipeline(g, ["quantize_int8"], {"calibration": _spec_calibration()})
    assert records[0].notes["float_ops"] == ["prelu"]
    island = q.node("prelu")
    assert island.outputs[0].dtype == "float32" and island.inputs[0].name == "c2/dequantize"
    assert island.inputs[1].dtype == "float32"
    # QUANTIZE after the float input, after the float island, and sigmoid's and tanh's requantization into the concat
    assert {n.inputs[0].name for n in q.nodes if n.op == "quantize"} == {"x", "prelu", "sig", "tanh"}
    data = write_tflite(q)
    for kernels, diffs in _tensor_differences(data, {"x": _spec_calibration(1)["x"]}).items():
        assert sum(diffs.values()) == 0, (kernels, {k: v for k, v in diffs.items() if v})
    with pytest.raises(MccError, match=r"node 'prelu'.*'prelu' \(prelu: mcc's runtime has no int8 kernel"):
        run_pipeline(g, ["quantize_int8"], {"calibration": _spec_calibration(), "require_int8": True})


# ---- options and errors -----------------------------------------------------------------------------------
def test_io_int8_makes_the_interface_int8_with_the_same_integers(zoo_float):
    _, graph, calib, held = zoo_float("digits_classifier")
    as_float, _ = run_pipeline(graph, TAIL, {"calibration": {"x": calib}})
    as_int8, records = run_pipeline(graph, TAIL, {"calibration": {"x": calib}, "io": "int8"})
    assert records[1].notes["io"] == "int8"
    assert not any(n.op in ("quantize", "dequantize") for n in as_int8.nodes)
    x, y = as_int8.inputs[0], as_int8.outputs[0]
    assert (x.dtype, y.dtype) == ("int8", "int8") and x.quant == as_float.tensor("x/int8").quant
    assert (x.name, y.name) == (graph.inputs[0].name, graph.outputs[0].name)
    data_float, data_int8 = write_tflite(as_float), write_tflite(as_int8)
    for sample in held[:4]:
        inside = run_litert(data_float, {"x": _nhwc(sample[None])}, "ref", keep_all=True)
        out = run_litert(data_int8, {"x": inside["x/int8"]}, "ref")
        assert np.array_equal(out[y.name], inside[f"{y.name}/int8"])
    with pytest.raises(MccError, match="quantize_int8: option 'io' must be one of 'float', 'int8', got 'uint8'"):
        run_pipeline(graph, ["quantize_int8"], {"calibration": {"x": calib}, "io": "uint8"})


def test_missing_calibration_says_to_pass_calib(zoo_float):
    _, graph, _, _ = zoo_float("digits_classifier")
    with pytest.raises(MccError, match="pass --calib"):
        run_pipeline(graph, ["quantize_int8"], {})


def test_calibration_progress_and_determinism(zoo_float):
    _, graph, calib, _ = zoo_float("digits_classifier")
    stream = io.StringIO()
    first, records = run_pipeline(graph, TAIL, {"calibration": {"x": calib[:20]}}, reporter=Progress(True, stream))
    second, _ = run_pipeline(graph, TAIL, {"calibration": {"x": calib[:20].copy()}})
    assert write_tflite(first) == write_tflite(second)
    lines = [line for line in stream.getvalue().splitlines() if line.startswith("calibrating ")]
    done = [int(line.split()[1].split("/")[0]) for line in lines]  # one line per run of many samples
    assert lines[-1] == "calibrating 20/20" and done == sorted(set(done)) and done[0] > 0
    assert records[1].notes["calibration"] == {"samples": 20, "batches": 20}


# ---- bias correction --------------------------------------------------------------------------------------
def test_bias_correction_matches_the_float_mean_of_a_layer(zoo_float):
    _, graph, calib, _ = zoo_float("digits_classifier")
    fc = graph.outputs[0].name  # the last fully_connected: no activation, so its output mean is linear in its bias
    errors, sqnr = {}, {}
    for corrected in (False, True):
        q, records = run_pipeline(graph, ["quantize_int8"], {"calibration": {"x": calib}, "bias_correction": corrected})
        int8_out = q.tensor(f"{fc}/int8")
        s, zp = float(int8_out.quant.scale[0]), int(int8_out.quant.zero_point[0])
        diff = [(run(q, {"x": _nhwc(c[None])}, keep_all=True)[int8_out.name].astype(np.float64) - zp) * s
                - run(graph, {"x": _nhwc(c[None])})[fc] for c in calib]
        errors[corrected] = np.abs(np.mean(diff, axis=0)).max() / s  # in output steps
        sqnr[corrected] = output_sqnr_db(graph, q, [{"x": _nhwc(c[None])} for c in calib])
        notes = records[0].notes["bias_correction"]
    assert notes["layers"] == 3 and notes["samples"] == len(calib) and notes["sqnr_db_after"] == round(sqnr[True], 2)
    assert sqnr[True] > sqnr[False], sqnr
    assert errors[True] < errors[False] / 2, errors


# ---- cross-layer equalization -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["resnet18_style", "mobilenet_v3_small_style"])
def test_cle_keeps_the_float_function_and_narrows_channel_ranges(zoo_float, name):
    _, graph, _, held = zoo_float(name)
    pairs = find_pairs(graph)
    assert pairs and all(a.attrs["activation"] in (None, "relu") for a, _ in pairs)
    equalized, records = run_pipeline(graph, ["cross_layer_equalization"], {"cle": True})
    notes = records[0].notes["cle"]
    assert notes["pairs"] == len(pairs)
    assert notes["mean_channel_range_spread_after"] < notes["mean_channel_range_spread_before"]
    for a, _ in pairs:
        before = np.abs(a.inputs[1].data).reshape(-1, a.inputs[1].shape[-1]).max(0) if a.op == "depthwise_conv2d" \
            else np.abs(a.inputs[1].data).reshape(a.inputs[1].shape[0], -1).max(1)
        after_w = equalized.node(a.name).inputs[1].data
        after = np.abs(after_w).reshape(-1, after_w.shape[-1]).max(0) if a.op == "depthwise_conv2d" \
            else np.abs(after_w).reshape(after_w.shape[0], -1).max(1)
        assert after.max() / after.min() <= before.max() / before.min() + 1e-6, a.name
    for h in held[:4]:
        feeds = {"x": _nhwc(h[None])}
        want, got = run(graph, feeds), run(equalized, feeds)
        for k, v in want.items():
            assert np.abs(got[k] - v).max() <= 1e-5 * np.abs(v).max()
    untouched, records = run_pipeline(graph, ["cross_layer_equalization"], {"cle": False})
    assert records[0].notes["cle"] == "off"
    assert all(a.data is b.data for a, b in zip(graph.constants(), untouched.constants()))


def test_cle_leaves_relu6_and_residual_pairs_alone(zoo_float):
    _, graph, _, _ = zoo_float("mobilenet_v2_style")
    pairs = find_pairs(graph)
    for a, b in pairs:
        assert a.attrs["activation"] is None and len(graph.consumers(a.outputs[0])) == 1
    relu6_layers = [n for n in graph.nodes if n.attrs.get("activation") == "relu6"]
    assert relu6_layers and not {a.name for a, _ in pairs} & {n.name for n in relu6_layers}


def test_max_pool_padding_is_not_part_of_the_calibrated_range(tmp_path):
    """torch's MaxPool2d(3, 2, 1) after a stride-2 conv (the ResNet stem) is not TFLite's SAME: legalize_tflite pads
    with the lowest float, which must not enter the observed range (it made the scale ~1e36 and XNNPACK refused the
    file); it quantizes to -128, which never wins either."""
    from compile_checks import compile_everywhere

    torch.manual_seed(0)
    stem = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, 2, 1), torch.nn.ReLU(), torch.nn.MaxPool2d(3, 2, 1))
    results = compile_everywhere(stem, (1, 3, 32, 32), tmp_path, sources=("pt2",), targets=("arm-int8", "x86-int8"))
    graph = results["pt2", "arm-int8"].graph
    pad = next(n for n in graph.nodes if n.op == "pad")
    assert pad.outputs[0].quant.scale[0] < 1 and pad.inputs[0].quant == pad.outputs[0].quant


def test_bias_leaves_the_int32_accumulator_room_for_the_products(tmp_path):
    """A layer whose input range is tiny (a random-weight hardnet's features: s_in ~ 5e-9) puts its float bias far
    beyond int32 at s_in * s_w; the weight scales are raised until the bias stays within bias_bound, where no
    sum of products can overflow the accumulator (at the int32 limit LiteRT and mcc disagreed on 1,834 outputs)."""
    from compile_checks import compile_everywhere

    from mcc.runtime.fixed_point import bias_bound

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(64, 8)
            torch.nn.init.constant_(self.fc.bias, 0.5)

        def forward(self, x):
            return self.fc(torch.relu(x) * 1e-7)

    torch.manual_seed(0)
    results = compile_everywhere(Tiny(), (1, 64), tmp_path, sources=("pt2",), targets=("arm-int8", "x86-int8"))
    fc = next(n for n in results["pt2", "arm-int8"].graph.nodes if n.op == "fully_connected")
    assert np.abs(fc.inputs[2].data.astype(np.int64)).max() <= bias_bound(64)
