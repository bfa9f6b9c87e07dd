"""The ONNX backend: to_nchw, legalize_onnx, the writer and the readback, on the zoo and on small graphs.

Float zoo models compiled for x86-fp32 run in onnxruntime within 1e-4 of torch. Int8 zoo models compiled for
x86-int8 pass onnx.checker's full check, open at every graph optimization level with only integer operators
left, and give the same outputs at every level; each operator, fed onnxruntime's own inputs, is within one step
of mcc's runtime under LiteRT's reference rules (the tables exactly), with the count of differing elements
printed. The .tflite of arm-int8 and the .onnx of x86-int8 hold identical weights, biases, scales and zero points.
"""

import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from mcc.runtime.format_arithmetic import ONNX_ARITHMETIC
from mcc.formats.onnx.reader import read_emitted_onnx
from mcc.backends import emit
from mcc.cli import main
from mcc.compiler import compile_model
from mcc.errors import MccError
from mcc.examples.zoo import ZOO, digits_split
from mcc.formats.tflite.reader import read_tflite
from mcc.frontend.torch_export import from_module
from mcc.passes import run_pipeline
from mcc.runtime import evaluate_node, run
from test_passes_common import Builder, assert_equivalent, ops

LEVELS = {"disable_all": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
          "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
          "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
          "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
# What onnxruntime may run in an int8 model: integer kernels, int8 data movement, and float only at the edges.
INTEGER_OPS = {"QLinearConv", "QGemm", "QLinearAdd", "QLinearMul", "QLinearGlobalAveragePool", "QLinearAveragePool",
               "QLinearSoftmax", "MaxPool", "NhwcMaxPool", "Reshape", "Transpose", "Concat", "Pad", "Clip", "Min",
               "Max", "Cast", "Gather", "QuantizeLinear", "DequantizeLinear"}


def session(data: bytes, level="all", tmp_path=None, keep_all=False):
    """An onnxruntime session at `level`; with keep_all every typed intermediate value is an output too."""
    model = onnx.load_from_string(data)
    if keep_all:
        model.graph.output.extend(model.graph.value_info)
    so = ort.SessionOptions()
    so.graph_optimization_level = LEVELS[level]
    so.log_severity_level = 3
    if tmp_path is not None:
        so.optimized_model_filepath = str(tmp_path / f"optimized_{level}.onnx")
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def ort_values(data: bytes, feeds: dict, level="all") -> dict:
    """The feeds and every value onnxruntime computes, by name."""
    s = session(data, level, keep_all=True)
    return {**feeds, **dict(zip([o.name for o in s.get_outputs()], s.run(None, feeds)))}


def per_operator(graph, values: dict) -> dict:
    """Each node of `graph` run by mcc's runtime (litert-ref) on onnxruntime's values of its inputs, against
    onnxruntime's value of its output: {node name: (op, elements, differing, max |difference|)}."""
    out = {}
    for node in graph.nodes:
        ins = [None if t is None else t.data if t.is_constant else values[t.name] for t in node.inputs]
        ours = evaluate_node(node, ins, "litert-ref")[0].astype(np.float64)
        theirs = values[node.outputs[0].name].astype(np.float64)
        delta = np.abs(ours - theirs)
        bad = delta > 0 if node.outputs[0].dtype == "int8" else delta > 1e-6 * max(np.abs(theirs).max(), 1e-30)
        out[node.name] = (node.op, delta.size, int(bad.sum()), float(delta.max()))
    return out


def check_full(data: bytes) -> onnx.ModelProto:
    model = onnx.load_from_string(data)
    onnx.checker.check_model(model, full_check=True)
    return model


# ---- float: x86-fp32 -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(ZOO))
def test_float_zoo_in_onnxruntime_matches_torch(name):
    model, example = ZOO[name](**({"train": False} if name == "digits_classifier" else {}))
    x = torch.randn(1, *example.shape[1:], generator=torch.Generator().manual_seed(1))
    data = compile_model(from_module(model, (example,)), "x86-fp32").data
    assert "Transpose" not in [n.op_type for n in check_full(data).graph.node]
    with torch.no_grad():
        ref = model(x).numpy()
    for level in LEVELS:
        (y,) = session(data, level).run(None, {"x": x.numpy()})
        assert np.abs(y - ref).max() <= 1e-4 * (ref.max() - ref.min()), level


def test_float_readback_is_the_compiled_graph():
    model, example = ZOO["mobilenet_v3_small_style"]()
    result = compile_model(from_module(model, (example,)), "x86-fp32")
    back = read_emitted_onnx(result.data, ONNX_ARITHMETIC)
    assert ops(back) == ops(result.graph)
    assert [n.attrs.get("activation") for n in back.nodes] == [n.attrs.get("activation") for n in result.graph.nodes]
    assert_equivalent(result.graph, back)


# ---- int8: x86-int8 next to arm-int8 -------------------------------------------------------------------------
@pytest.fixture(scope="module", params=sorted(ZOO))
def int8_pair(request):
    """(name, arm-int8 compile result, x86-int8 compile result, test inputs) for one zoo model, same calibration."""
    name = request.param
    model, example = ZOO[name](**({"train": False} if name == "digits_classifier" else {}))
    rng = np.random.default_rng(0)
    if name == "digits_classifier":
        split = digits_split()
        calib, x = split.x_train[:64].numpy(), split.x_test[:2].numpy()
    else:
        calib = rng.standard_normal((32, *example.shape[1:])).astype(np.float32)
        x = rng.standard_normal((2, *example.shape[1:])).astype(np.float32)
    graph = from_module(model, (example,))
    arm = compile_model(graph, "arm-int8", calib={"x": calib})
    x86 = compile_model(graph, "x86-int8", calib={"x": calib})
    return name, arm, x86, x


def test_int8_passes_checker_and_runs_integer_kernels_at_every_level(int8_pair, tmp_path):
    name, _, x86, x = int8_pair
    model = check_full(x86.data)
    assert "Transpose" not in [n.op_type for n in model.graph.node]
    outputs = {}
    for level in LEVELS:
        s = session(x86.data, level, tmp_path)
        ran = [n.op_type for n in onnx.load(str(tmp_path / f"optimized_{level}.onnx")).graph.node]
        assert set(ran) <= INTEGER_OPS and ran.count("QuantizeLinear") == ran.count("DequantizeLinear") == 1, ran
        outputs[level] = s.run(None, {"x": x[:1]})[0]
    assert all(np.array_equal(v, outputs["all"]) for v in outputs.values())


def test_int8_each_operator_within_one_step_of_litert_ref(int8_pair):
    name, _, x86, x = int8_pair
    graph = read_emitted_onnx(x86.data, ONNX_ARITHMETIC)
    totals = {}
    for level in ("disable_all", "all"):
        for b in range(len(x)):
            report = per_operator(graph, ort_values(x86.data, {"x": x[b:b + 1]}, level))
            for op, n, bad, worst in report.values():
                t = totals.setdefault(op, [0, 0, 0.0])
                t[0], t[1], t[2] = t[0] + n, t[1] + bad, max(t[2], worst)
    print(f"\n{name}: per operator, onnxruntime vs mcc litert-ref on onnxruntime's inputs (elements, differing, max):")
    for op, (n, bad, worst) in sorted(totals.items()):
        print(f"  {op:<18} {n:>8} {bad:>6} {worst:g}")
    last = graph.producer(graph.outputs[0]).inputs[0].name  # the int8 logits, before the dequantize
    delta = np.concatenate([np.abs(run(graph, {"x": x[b:b + 1]}, rules="litert-ref", keep_all=True)[last].astype(int)
                                   - ort_values(x86.data, {"x": x[b:b + 1]})[last]) for b in range(len(x))])
    print(f"  end to end, {last}: {int((delta > 0).sum())} of {delta.size} differ, by at most {delta.max()}")
    assert all(worst <= 1 for op, (n, bad, worst) in totals.items() if op != "dequantize")
    assert all(bad == 0 for op, (n, bad, worst) in totals.items()
               if op in ("hardswish", "max_pool2d", "reshape", "dequantize"))
    assert sum(b for _, b, _ in totals.values()) <= 0.01 * sum(n for n, _, _ in totals.values())


def test_int8_weights_scales_and_zero_points_identical_to_arm_int8(int8_pair):
    name, arm, x86, _ = int8_pair
    tfl, onx = read_tflite(arm.data), read_emitted_onnx(x86.data, ONNX_ARITHMETIC)
    theirs = {t.name: t for t in onx.tensors()}
    constants = activations = 0
    for t in tfl.tensors():
        o = theirs.get(t.name)
        if t.quant is None or o is None:
            continue
        assert np.array_equal(o.quant.scale, t.quant.scale) and o.quant.scale.dtype == np.float32, t.name
        assert np.array_equal(o.quant.zero_point, t.quant.zero_point), t.name
        assert o.quant.axis == (None if t.quant.axis is None else 0), t.name  # channels are axis 0 in NCHW
        if t.is_constant:
            assert o.dtype == t.dtype and np.array_equal(_as_onnx_holds_it(tfl, t), o.data), t.name
            constants += 1
        else:
            activations += 1
    weighted = [n for n in tfl.nodes if n.op in ("conv2d", "depthwise_conv2d", "fully_connected")]
    int8_outputs = [n for n in tfl.nodes if n.outputs[0].quant is not None and n.op != "pad"]  # pads are folded
    assert constants >= 2 * len(weighted) and activations == len(int8_outputs)


def _as_onnx_holds_it(tfl, t) -> np.ndarray:
    """A constant of the NHWC TFLite graph in NCHW: conv OHWI -> OIHW, depthwise [1,kh,kw,C] -> [C,1,kh,kw], and an
    FC weight that reads a flattened NHWC tensor gets its columns from H,W,C to C,H,W order."""
    reader = next(n for n in tfl.nodes if any(i is t for i in n.inputs))
    if reader.inputs[1] is not t:
        return t.data
    if reader.op == "conv2d":
        return t.data.transpose(0, 3, 1, 2)
    if reader.op == "depthwise_conv2d":
        return t.data.transpose(3, 0, 1, 2)
    flat = tfl.producer(reader.inputs[0]) if reader.op == "fully_connected" else None
    if flat is not None and flat.op == "reshape" and len(flat.inputs[0].shape) == 4:
        _, h, w, c = flat.inputs[0].shape
        return t.data.reshape(-1, h, w, c).transpose(0, 3, 1, 2).reshape(t.shape)
    return t.data


def test_int8_file_is_deterministic(int8_pair):
    name, _, x86, _ = int8_pair
    assert emit(x86.graph, "onnx") == x86.data


# ---- small graphs: activations, tables, islands, layout ---------------------------------------------------------
def _int8_graph(build, tmp_path=None, seed=0):
    """Compile the float graph `build(b)` builds for x86-int8 with random calibration; (result, feeds)."""
    b = Builder(seed)
    g = b.done(*build(b))
    rng = np.random.default_rng(seed)
    calib = {t.name: rng.standard_normal((16, *t.shape[1:])).astype(np.float32) for t in g.inputs}
    feeds = {t.name: rng.standard_normal(t.shape).astype(np.float32) for t in g.inputs}
    return compile_model(g, "x86-int8", calib=calib), feeds


def test_relu6_shared_with_a_concat_gets_an_int8_clip_that_reads_back_as_relu6():
    def build(b):
        x = b.input("x", (1, 3, 6, 6))
        left = b.op("relu6", [b.conv(x, 4, name="left")])
        right = b.op("mul", [b.conv(x, 4, name="right"), b.const("gain", np.float32(20.0))], "loud")
        return [b.op("concat", [left, right], "cat", axis=1)]  # one range for both, far beyond 6

    result, feeds = _int8_graph(build)
    model = check_full(result.data)
    clips = [n for n in model.graph.node if n.op_type == "Clip"]
    assert len(clips) == 1 and clips[0].name == "left/relu6"
    back = read_emitted_onnx(result.data, ONNX_ARITHMETIC)
    assert back.node("left").attrs["activation"] == "relu6"
    values = ort_values(result.data, feeds)
    assert values["left"].max() < 127  # the clamp is inside the int8 range, so it is not the saturation
    assert all(bad == 0 for op, n, bad, worst in per_operator(back, values).values() if op != "conv2d")


def test_int8_activations_are_lookup_tables_computed_by_the_runtime():
    def build(b):
        x = b.op("relu", [b.conv(b.input("x", (1, 2, 5, 5)), 4, name="c")])
        y = b.op("leaky_relu", [b.op("sub", [x, b.const("shift", np.float32(1.5))], "shifted")], "leaky", alpha=0.1)
        return [b.op("tanh", [b.op("sigmoid", [y], "sig")], "th")]

    result, feeds = _int8_graph(build, seed=3)
    model = check_full(result.data)
    functions = {f.name for f in model.functions}
    assert functions == {"leaky_relu", "sigmoid", "tanh"} and model.metadata_props[0].key == "mcc.table_rules"
    back = read_emitted_onnx(result.data, ONNX_ARITHMETIC)
    assert back.node("leaky").attrs["alpha"] == pytest.approx(0.1)
    for node in (back.node("leaky"), back.node("sig"), back.node("th")):
        table = onnx.numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == f"{node.name}/table"))
        assert np.array_equal(table, ONNX_ARITHMETIC.lookup_table(node))
    for level in ("disable_all", "all"):
        report = per_operator(back, ort_values(result.data, feeds, level))
        assert all(bad == 0 for op, n, bad, worst in report.values() if op in ("leaky_relu", "sigmoid", "tanh"))
    # sub has no integer operator in onnxruntime: a float island, named in legalize_onnx's notes
    notes = next(r["notes"] for r in result.report["passes"] if r["pass"] == "legalize_onnx")
    assert notes["float_islands"] == ["shifted"]
    assert [n.op for n in back.nodes if "shifted" in n.name] == ["dequantize", "sub", "quantize"]


def test_every_mapped_op_runs_in_onnxruntime_float_and_int8():
    """Pools with padding, maximum with a constant, concat, a pad no conv reads, the table activations, a mean
    without keepdims, per-channel mul, softmax: float against mcc's runtime, int8 per operator."""
    def build(b):
        x = b.input("x", (1, 3, 6, 6))
        c = b.op("relu", [b.conv(x, 4, name="c")], "c_relu")
        d = b.op("relu6", [b.dwconv(c, name="dw")], "dw_relu6")
        a = b.op("avg_pool2d", [d], "avg", kernel=[3, 3], stride=[1, 1], padding=[1, 1, 1, 1])
        m = b.op("maximum", [a, b.const("low", np.float32(0.1))], "floor")
        p = b.op("pad", [b.op("concat", [m, c], "cat", axis=1)], "pad", pads=[0, 0, 0, 0, 1, 1, 0, 2])
        h = b.op("hardswish", [b.op("mul", [p, b.const("per_channel", b.rand(1, 8, 1, 1))], "gain")], "hs")
        y = b.op("max_pool2d", [b.op("tanh", [b.op("sigmoid", [h], "sig")], "th")], "mp", kernel=[2, 2],
                 stride=[2, 2])
        logits = b.fc(b.op("mean", [y], "gap", axes=[2, 3], keepdims=False), 3, name="head")
        return [b.op("softmax", [logits], "probabilities", axis=-1)]

    b = Builder(8)
    g = b.done(*build(b))
    x = np.random.default_rng(1).standard_normal((1, 3, 6, 6)).astype(np.float32)
    float_result = compile_model(g, "x86-fp32")
    check_full(float_result.data)
    (y,) = session(float_result.data).run(None, {"x": x})
    ref = run(g, {"x": x})["probabilities"]
    assert np.abs(y - ref).max() <= 1e-5 * np.abs(ref).max()
    result, feeds = _int8_graph(build, seed=8)
    model = check_full(result.data)
    assert {"QLinearAveragePool", "Max", "Concat", "Pad", "QLinearMul", "hardswish", "sigmoid", "tanh", "MaxPool",
            "QLinearSoftmax", "QLinearGlobalAveragePool", "QGemm"} <= {n.op_type for n in model.graph.node}
    back = read_emitted_onnx(result.data, ONNX_ARITHMETIC)
    assert ops(back) == ops(result.graph)
    for level in ("disable_all", "all"):
        report = per_operator(back, ort_values(result.data, feeds, level))
        assert all(worst <= 1 for op, n, bad, worst in report.values() if op != "dequantize"), report
        assert all(bad == 0 for op, n, bad, worst in report.values()
                   if op in ("hardswish", "sigmoid", "tanh", "maximum", "concat", "pad", "max_pool2d")), report


def test_fully_connected_on_3d_input_is_flattened_for_gemm_and_qgemm():
    def build(b):
        return [b.fc(b.input("x", (2, 3, 5)), 4, name="proj")]

    b = Builder(4)
    g = b.done(*build(b))
    out, records = run_pipeline(g, ["to_nchw", "legalize_onnx"])
    assert records[1].notes["fully_connected_flattened"] == 1 and ops(out) == ["reshape", "fully_connected", "reshape"]
    assert_equivalent(g, out)
    x = np.random.default_rng(0).standard_normal((2, 3, 5)).astype(np.float32)
    (y,) = session(emit(out, "onnx")).run(None, {"x": x})
    assert np.abs(y - run(g, {"x": x})["proj"]).max() < 1e-5
    result, feeds = _int8_graph(build, seed=4)
    assert [n.op_type for n in check_full(result.data).graph.node if n.op_type != "QuantizeLinear"][:3] == \
        ["Reshape", "QGemm", "Reshape"]
    back = read_emitted_onnx(result.data, ONNX_ARITHMETIC)
    assert per_operator(back, ort_values(result.data, feeds))["proj"][3] <= 1


def test_to_nchw_undoes_to_nhwc_with_weights_and_axes_back_in_place():
    b = Builder(5)
    x = b.input("x", (1, 3, 6, 6))
    y = b.dwconv(b.op("relu", [b.conv(x, 6, name="c")]), multiplier=1, stride=2, name="dw")
    s = b.op("softmax", [b.op("pad", [y], "pad", pads=[0, 0, 0, 0, 1, 0, 1, 0])], "sm", axis=1)
    f = b.op("reshape", [b.op("mean", [s], "gap", axes=[3], keepdims=True)], "flat", shape=[1, -1])
    g = b.done(b.fc(f, 5, name="head"))
    nhwc, _ = run_pipeline(g, ["to_nhwc"])
    back, records = run_pipeline(nhwc, ["to_nchw"])
    assert "transpose" not in ops(back) and "inserted_transposes" not in records[0].notes
    for name in ("c.weight", "dw.weight", "head.weight"):
        assert np.array_equal(back.tensor(name).data, g.tensor(name).data), name
    assert back.node("sm").attrs["axis"] == 1 and back.node("gap").attrs["axes"] == [3]
    assert back.node("pad").attrs["pads"] == [0, 0, 0, 0, 1, 0, 1, 0]
    assert_equivalent(g, back)
    again, records = run_pipeline(back, ["to_nchw"])
    assert records[0].notes["already_nchw"] > 0 and ops(again) == ops(back)


def test_pads_fold_into_the_convolution_and_the_max_pool():
    b = Builder(6)
    x = b.input("x", (1, 2, 8, 8))
    y = b.conv(x, 3, stride=2, name="c")
    g = b.done(b.op("max_pool2d", [y], "pool", kernel=[3, 3], stride=[2, 2], padding=[1, 1, 1, 1]))
    out, records = run_pipeline(g, ["to_nhwc", "legalize_tflite", "to_nchw", "legalize_onnx"])
    assert records[1].notes["padding_to_pad_op"] == 2 and records[3].notes["pads_folded"] == 2
    # legalize_tflite dropped the bottom / right rows that no window reaches; the rest is the conv's again
    assert "pad" not in ops(out) and out.node("c").attrs["padding"] == [1, 1, 0, 0]
    assert_equivalent(g, out)


def test_writer_refuses_an_nhwc_graph_and_readback_a_foreign_model(tmp_path):
    b = Builder(7)
    g = b.done(b.conv(b.input("x", (1, 2, 4, 4)), 2))
    nhwc, _ = run_pipeline(g, ["to_nhwc"])
    with pytest.raises(MccError, match="to_nchw"):
        emit(nhwc, "onnx")
    foreign = onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node("Foo", ["x"], ["y"], domain="acme")], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])]),
        opset_imports=[onnx.helper.make_opsetid("acme", 1)])
    with pytest.raises(MccError, match="not written by mcc"):
        read_emitted_onnx(foreign.SerializeToString(), ONNX_ARITHMETIC, path="foreign.onnx")


def test_readback_imports_with_numpy_and_onnx_alone():
    code = ("import sys, mcc.formats.onnx.reader; "
            "print(sorted(m for m in ('onnxruntime', 'torch', 'numba', 'ai_edge_litert') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_cli_writes_onnx_next_to_the_model(tmp_path):
    model, example = ZOO["digits_classifier"](train=False)
    src = tmp_path / "digits.pt2"
    torch.export.save(torch.export.export(model, (example,)), src)
    assert main(["compile", str(src), "--target", "x86-fp32", "-q"]) == 0
    data = (tmp_path / "digits.onnx").read_bytes()
    assert [n.op_type for n in check_full(data).graph.node] == ["Conv", "Relu", "MaxPool", "Conv", "Relu",
                                                                 "Reshape", "Gemm"]
