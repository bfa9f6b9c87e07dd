"""The math, reduction and data-movement ops of issue 14 (ops-math), end to end: each TFLite row written, read back
and run in LiteRT like mcc's runtime; torch modules and ONNX graphs compiled to arm-fp32 / x86-fp32 and run in
LiteRT and onnxruntime like their source; int8 kernels of the ops that move values against LiteRT (both kernel
sets) and onnxruntime with 0 differing elements, and every other new op a float island named in the notes."""

import os
import warnings

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper

from mcc.compiler import compile_model
from mcc.errors import MccError
from mcc.formats.onnx.reader import read_emitted_onnx
from mcc.formats.tflite.reader import read_tflite
from mcc.formats.tflite.writer import write_tflite
from mcc.frontend.torch_export import from_module
from mcc.ir import Graph, QuantParams
from mcc.runtime import run
from mcc.runtime.format_arithmetic import ONNX_ARITHMETIC
from mcc.runtime.litert import run_litert
from mcc.validate import validate
from test_onnx_backend import session
from tflite_ops import operator_names

KERNELS = ("ref", "default")


def rand(shape, seed, positive=False):
    a = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    return np.abs(a) + np.float32(0.1) if positive else a


def spread(a):
    return max(float(np.ptp(a)), 1e-6)


def q(scale, zero_point):
    return QuantParams(np.array([scale], np.float32), np.array([zero_point], np.int64))


def one_op(op, attrs, shape, extra=(), quant=None, n_outputs=1):
    """An NHWC graph of one node on input x (int8 with `quant`), with constant extra inputs."""
    g = Graph("one")
    x = g.add_input("x", shape, "float32" if quant is None else "int8", "NHWC" if len(shape) == 4 else None)
    x.quant = quant
    consts = [g.constant(f"c{i}", c) for i, c in enumerate(extra)]
    node = g.add_node(op, [x, *consts], attrs, name="y", n_outputs=n_outputs)
    for o in node.outputs:
        o.quant = quant
    g.outputs = list(node.outputs)
    return g


def check_tflite_row(g, builtin, feeds, tol=1e-5, kernel_sets=KERNELS):
    """Written as `builtin`, read back to the same node, and LiteRT (both kernel sets) computes what mcc does."""
    model = write_tflite(g)
    assert operator_names(model) == [builtin]
    back = read_tflite(model)
    assert [(n.op, n.attrs) for n in back.nodes] == [(n.op, n.attrs) for n in g.nodes]
    want = run(g, feeds)
    for kernels in kernel_sets:
        got = run_litert(model, feeds, kernels)
        for name, w in want.items():
            assert got[name].shape == w.shape
            if w.dtype == np.int8:
                assert np.count_nonzero(got[name] != w) == 0, (kernels, name)
            else:
                assert np.abs(got[name] - w).max() <= tol * spread(w), (kernels, name)


def export_onnx(module, x, path, opset=17):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (x,), path, dynamo=False, opset_version=opset, input_names=["x"],
                          output_names=["y"])
    return path


def check_float_targets(source, x, want, tol=1e-4, kernel_sets=KERNELS):
    """`source` ((module, args) or a model file) compiled to arm-fp32 runs in LiteRT (both kernel sets; a 4-D input
    fed NHWC) and to x86-fp32 in onnxruntime like `want`."""
    results = {}
    for target in ("arm-fp32", "x86-fp32"):
        graph = from_module(*source) if isinstance(source, tuple) else source
        results[target] = result = compile_model(graph, target)
        if target == "arm-fp32":
            feed = x.transpose(0, 2, 3, 1) if x.ndim == 4 else x
            for kernels in kernel_sets:
                got = run_litert(result.data, {result.graph.inputs[0].name: feed}, kernels)
                got = next(iter(got.values()))
                got = got.transpose(0, 3, 1, 2) if got.ndim == 4 and want.ndim == 4 else got
                assert got.shape == want.shape and np.abs(got - want).max() <= tol * spread(want), (target, kernels)
        else:
            s = session(result.data)
            got = s.run(None, {s.get_inputs()[0].name: x})[0]
            assert got.shape == want.shape and np.abs(got - want).max() <= tol * spread(want), target
            back = read_emitted_onnx(result.data, ONNX_ARITHMETIC)
            assert [(n.op, n.attrs) for n in back.nodes] == [(n.op, n.attrs) for n in result.graph.nodes]
    return results


def check_int8_targets(source, calib, tmp_path, islands=()):
    """arm-int8 and x86-int8 files that validate with 0 differing elements in every kernel set; the ops in
    `islands` are named in the quantizer's float_ops note."""
    np.savez(tmp_path / "calib.npz", x=calib)
    results = {}
    for target, suffix in (("arm-int8", "tflite"), ("x86-int8", "onnx")):
        graph = from_module(*source) if isinstance(source, tuple) else source
        out = tmp_path / f"m8.{suffix}"
        results[target] = result = compile_model(graph, target, out, calib=tmp_path / "calib.npz")
        notes = next(r for r in result.report["passes"] if r["pass"] == "quantize_int8")["notes"]
        ops = {n.name: n.op for n in graph.nodes}
        assert sorted({ops[name] for name in notes["float_ops"]}) == sorted(set(islands))
        report = validate(out, tmp_path / "calib.npz")
        assert len(report["comparisons"]) == 2
        for c in report["comparisons"]:
            assert c["elements"] > 0 and c["differing"] == 0, (target, c["kernels"])
    return results


# ---- 1. elementwise unary ops and pow ------------------------------------------------------------------------
UNARY_ROWS = [("neg", "NEG", {}), ("abs", "ABS", {}), ("sqrt", "SQRT", {}), ("rsqrt", "RSQRT", {}),
              ("square", "SQUARE", {}), ("exp", "EXP", {}), ("log", "LOG", {}),
              ("gelu", "GELU", {"approximate": "none"}), ("gelu", "GELU", {"approximate": "tanh"})]


@pytest.mark.parametrize("op,builtin,attrs", UNARY_ROWS, ids=[f"{r[0]}-{i}" for i, r in enumerate(UNARY_ROWS)])
def test_unary_tflite_rows_write_read_and_run_like_the_runtime(op, builtin, attrs):
    positive = op in ("sqrt", "rsqrt", "log")
    check_tflite_row(one_op(op, attrs, (2, 3, 4, 5)), builtin, {"x": rand((2, 3, 4, 5), 1, positive)})


def test_pow_tflite_row():
    g = one_op("pow", {}, (2, 3, 4, 5), extra=[np.array(1.7, np.float32)])
    check_tflite_row(g, "POW", {"x": rand((2, 3, 4, 5), 2, positive=True)})


class Unary(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        x = self.conv(x)
        y = torch.abs(x) + 0.1
        return torch.cat([-x, torch.sqrt(y), torch.rsqrt(y), x ** 2, torch.exp(x), torch.log(y), y ** 0.5,
                          y ** -0.5, y ** 1, F.gelu(x), F.gelu(x, approximate="tanh"), y ** 1.7], 1)


UNARY_OPS = ["abs", "add", "neg", "sqrt", "rsqrt", "square", "exp", "log", "gelu", "pow"]


def test_torch_unary_ops_lower_fold_pow_and_compile_to_float():
    torch.manual_seed(0)
    module, x = Unary().eval(), torch.randn(2, 3, 5, 6)
    g = from_module(module, (x,))
    ops = [n.op for n in g.nodes]
    # y ** 0.5, y ** -0.5 and y ** 1 fold; only the 1.7 stays a pow; gelu stays whole (not decomposed)
    assert ops.count("sqrt") == 2 and ops.count("rsqrt") == 2 and ops.count("pow") == 1 and ops.count("gelu") == 2
    assert "erf" not in ops and "tanh" not in ops
    with torch.no_grad():
        want = module(x).numpy()
    results = check_float_targets((module, (x,)), x.numpy(), want)
    assert {"NEG", "ABS", "SQRT", "RSQRT", "SQUARE", "EXP", "LOG", "GELU", "POW"} <= set(
        operator_names(results["arm-fp32"].data))


def test_torch_unary_ops_are_float_islands_in_int8(tmp_path):
    torch.manual_seed(0)
    module, x = Unary().eval(), torch.randn(1, 3, 5, 6)
    check_int8_targets((module, (x,)), rand((16, 3, 5, 6), 3), tmp_path,
                       islands=["neg", "sqrt", "rsqrt", "square", "exp", "log", "gelu", "pow", "abs"])


class ErfGelu(nn.Module):
    """Linear layers then gelu; torch.onnx.export at opset 17 writes gelu as Div, Erf, Add, Mul, Mul."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(8, 16), nn.Linear(16, 4)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x))) + torch.erf(x[:, :4])


def test_onnx_erf_formula_becomes_gelu_and_a_lone_erf_is_refused_for_tflite(tmp_path):
    torch.manual_seed(0)
    module, x = ErfGelu().eval(), torch.randn(3, 8)
    path = export_onnx(module, x, tmp_path / "gelu.onnx")
    assert {"Erf", "Div"} <= {n.op_type for n in onnx.load(path).graph.node}
    with pytest.raises(MccError, match="TFLite has no ERF builtin.*lone erf") as e:
        compile_model(path, "arm-fp32")
    assert e.value.node is not None
    with torch.no_grad():
        want = module(x).numpy()
    result = compile_model(path, "x86-fp32")
    ops = [n.op for n in result.graph.nodes]
    assert ops.count("gelu") == 1 and ops.count("erf") == 1  # the formula fused; the lone erf kept
    notes = next(r for r in result.report["passes"] if r["pass"] == "legalize_tflite")["notes"]
    assert notes["gelu_from_erf"] == 1
    s = session(result.data)
    assert np.abs(s.run(None, {"x": x.numpy()})[0] - want).max() <= 1e-5 * spread(want)
    assert {"Gelu", "Erf"} <= {n.op_type for n in onnx.load_from_string(result.data).graph.node}


@pytest.mark.parametrize("order", ["x*A*0.5", "x*0.5*A", "x*(A*0.5)", "A*x*0.5 mul by 1/sqrt2"])
def test_every_association_of_the_erf_formula_becomes_gelu(order, tmp_path):
    """The spellings hand-written and exported models use, each compiled to a single TFLite GELU."""
    def c(name, v):
        return helper.make_tensor(name, TensorProto.FLOAT, [], [v])

    scale = ("Mul", "inv_sqrt2") if "1/sqrt2" in order else ("Div", "sqrt2")
    nodes = [helper.make_node(scale[0], ["x", scale[1]], ["s"]), helper.make_node("Erf", ["s"], ["e"]),
             helper.make_node("Add", ["one", "e"] if "A*x" in order else ["e", "one"], ["a"])]
    if order == "x*0.5*A":
        nodes += [helper.make_node("Mul", ["x", "half"], ["h"]), helper.make_node("Mul", ["h", "a"], ["y"])]
    elif order == "x*(A*0.5)":
        nodes += [helper.make_node("Mul", ["a", "half"], ["h"]), helper.make_node("Mul", ["x", "h"], ["y"])]
    else:
        first = ["a", "x"] if "A*x" in order else ["x", "a"]
        nodes += [helper.make_node("Mul", first, ["m"]), helper.make_node("Mul", ["m", "half"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 7])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 7])],
                              [c("sqrt2", 2 ** 0.5), c("inv_sqrt2", 2 ** -0.5), c("one", 1.0), c("half", 0.5)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, tmp_path / "g.onnx")
    x = rand((2, 7), 4)
    import onnxruntime as ort
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    result = compile_model(tmp_path / "g.onnx", "arm-fp32")
    assert operator_names(result.data) == ["GELU"]
    for kernels in KERNELS:
        assert np.abs(run_litert(result.data, {"x": x}, kernels)["y"] - want).max() <= 1e-5 * spread(want)


def _onnx_model(nodes, inputs, outputs, inits=(), opset=21):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs],
                              list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def check_onnx_source(model, feeds, tmp_path, tol=1e-4, targets=("arm-fp32", "x86-fp32"), kernel_sets=KERNELS):
    """Compile an ONNX model to each float target and compare with onnxruntime running the source model."""
    import onnxruntime as ort

    onnx.checker.check_model(model, full_check=True)
    path = tmp_path / "src.onnx"
    onnx.save(model, path)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    results = {}
    for target in targets:
        results[target] = result = compile_model(path, target)
        if target == "arm-fp32":
            nhwc = {k: v.transpose(0, 2, 3, 1) if v.ndim == 4 else v for k, v in feeds.items()}
            for kernels in kernel_sets:
                got = run_litert(result.data, nhwc, kernels)
                for name, w in zip([o.name for o in model.graph.output], want):
                    g = got[name].transpose(0, 3, 1, 2) if got[name].ndim == 4 else got[name]
                    assert g.shape == w.shape and np.abs(g - w).max() <= tol * spread(w), (target, kernels, name)
        else:
            s = session(result.data)
            got = dict(zip([o.name for o in s.get_outputs()], s.run(None, feeds)))
            for name, w in zip([o.name for o in model.graph.output], want):
                assert got[name].shape == w.shape and np.abs(got[name] - w).max() <= tol * spread(w), (target, name)
    return results


def test_onnx_unary_ops_pow_folds_reciprocal_and_gelu(tmp_path):
    exps = [helper.make_tensor(f"p{i}", TensorProto.FLOAT, [], [v]) for i, v in enumerate((2.0, 0.5, -0.5, 1.0, 1.7))]
    nodes = [helper.make_node("Abs", ["x"], ["a0"]), helper.make_node("Add", ["a0", "eps"], ["a"]),
             *(helper.make_node(op, ["x"], [f"u{op}"]) for op in ("Neg", "Exp", "Erf")),
             *(helper.make_node(op, ["a"], [f"u{op}"]) for op in ("Sqrt", "Log", "Reciprocal")),
             *(helper.make_node("Pow", ["a", f"p{i}"], [f"pw{i}"]) for i in range(5)),
             helper.make_node("Gelu", ["x"], ["g0"]), helper.make_node("Gelu", ["x"], ["g1"], approximate="tanh"),
             helper.make_node("Concat", ["uNeg", "uExp", "uErf", "uSqrt", "uLog", "uReciprocal", "pw0", "pw1", "pw2",
                                         "pw3", "pw4", "g0", "g1"], ["y"], axis=1)]
    eps = helper.make_tensor("eps", TensorProto.FLOAT, [], [0.1])
    model = _onnx_model(nodes, [("x", [2, 3, 4, 5])], [("y", [2, 39, 4, 5])], [eps, *exps])
    results = check_onnx_source(model, {"x": rand((2, 3, 4, 5), 5)}, tmp_path, targets=("x86-fp32",))
    ops = [n.op for n in results["x86-fp32"].graph.nodes]
    assert sorted(ops) == sorted(["abs", "add", "neg", "exp", "erf", "sqrt", "log", "div", "square", "sqrt", "rsqrt",
                                  "pow", "gelu", "gelu", "concat"])


# ---- 2. reductions ------------------------------------------------------------------------------------------
REDUCE_ROWS = [("sum", "SUM", {"axes": [1, 2], "keepdims": True}), ("sum", "SUM", {"axes": [3], "keepdims": False}),
               ("reduce_max", "REDUCE_MAX", {"axes": [1], "keepdims": False}),
               ("reduce_max", "REDUCE_MAX", {"axes": [1, 2], "keepdims": True}),
               ("reduce_min", "REDUCE_MIN", {"axes": [3], "keepdims": True}),
               ("reduce_min", "REDUCE_MIN", {"axes": [0, 2], "keepdims": False})]


@pytest.mark.parametrize("op,builtin,attrs", REDUCE_ROWS, ids=[f"{r[0]}-{i}" for i, r in enumerate(REDUCE_ROWS)])
def test_reduce_tflite_rows_write_read_and_run_like_the_runtime(op, builtin, attrs):
    check_tflite_row(one_op(op, attrs, (2, 3, 4, 5)), builtin, {"x": rand((2, 3, 4, 5), 6)})


@pytest.mark.parametrize("op,builtin,attrs", [r for r in REDUCE_ROWS if r[0] != "sum"],
                         ids=[f"{r[0]}-{i}" for i, r in enumerate(r for r in REDUCE_ROWS if r[0] != "sum")])
def test_int8_reduce_max_min_pick_codes_like_litert(op, builtin, attrs):
    g = one_op(op, attrs, (2, 3, 4, 5), quant=q(0.05, -7))
    check_tflite_row(g, builtin, {"x": np.random.default_rng(7).integers(-128, 128, (2, 3, 4, 5)).astype(np.int8)})


class Reductions(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        a = torch.amax(y, dim=(2, 3), keepdim=True)
        b = torch.amin(y, dim=1, keepdim=True).amax(dim=(2, 3), keepdim=True)
        c = y.max(dim=3, keepdim=True).values.min(dim=2, keepdim=True).values
        return torch.cat([a, b, c], 1)


def test_torch_reductions_compile_to_float_and_share_parameters_in_int8(tmp_path):
    torch.manual_seed(0)
    module, x = Reductions().eval(), torch.randn(1, 3, 6, 7)
    g = from_module(module, (x,))
    assert {"reduce_max", "reduce_min"} <= {n.op for n in g.nodes}
    with torch.no_grad():
        want = module(x).numpy()
    results = check_float_targets((module, (x,)), x.numpy(), want)
    assert {"REDUCE_MAX", "REDUCE_MIN"} <= set(operator_names(results["arm-fp32"].data))
    results = check_int8_targets((module, (x,)), rand((16, 3, 6, 7), 8), tmp_path)
    for node in results["arm-int8"].graph.nodes:
        if node.op in ("reduce_max", "reduce_min"):
            assert node.inputs[0].dtype == "int8" and node.inputs[0].quant == node.outputs[0].quant
    assert {"ReduceMax", "ReduceMin"} <= {n.op_type for n in onnx.load_from_string(results["x86-int8"].data).graph.node}


def test_torch_sum_is_a_float_island_in_int8(tmp_path):
    class Sum(nn.Module):
        def forward(self, x):
            return torch.relu(x).sum(dim=(2, 3), keepdim=True) + x.sum()

    module, x = Sum(), torch.randn(1, 3, 4, 5)
    assert [n.op for n in from_module(module, (x,)).nodes] == ["relu", "sum", "sum", "add"]
    check_float_targets((module, (x,)), x.numpy(), module(x).numpy())
    check_int8_targets((module, (x,)), rand((16, 3, 4, 5), 9), tmp_path, islands=["sum"])


def test_onnx_reductions_and_variadic_ops(tmp_path):
    axes = helper.make_tensor("axes", TensorProto.INT64, [2], [2, 3])
    nodes = [helper.make_node("ReduceSum", ["x", "axes"], ["s"], keepdims=1),
             helper.make_node("ReduceMax", ["x", "axes"], ["mx"], keepdims=1),
             helper.make_node("ReduceMin", ["x", "axes"], ["mn"], keepdims=1),
             helper.make_node("ReduceSumSquare", ["x", "axes"], ["ss"], keepdims=1),
             helper.make_node("ReduceL2", ["x", "axes"], ["l2"], keepdims=1),
             helper.make_node("Sum", ["s", "mx", "mn"], ["v0"]),
             helper.make_node("Mean", ["ss", "l2", "s", "mx"], ["v1"]),
             helper.make_node("Max", ["s", "mx", "mn"], ["v2"]),
             helper.make_node("Min", ["s", "mx", "mn"], ["v3"]),
             helper.make_node("Concat", ["s", "mx", "mn", "ss", "l2", "v0", "v1", "v2", "v3"], ["y"], axis=1)]
    model = _onnx_model(nodes, [("x", [2, 3, 4, 5])], [("y", [2, 27, 1, 1])], [axes], opset=18)
    results = check_onnx_source(model, {"x": rand((2, 3, 4, 5), 10)}, tmp_path)
    assert {"SUM", "REDUCE_MAX", "REDUCE_MIN", "SQUARE", "SQRT"} <= set(operator_names(results["arm-fp32"].data))


LIGHT = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")


@pytest.mark.parametrize("name", ["shufflenet", pytest.param("resnet50", marks=pytest.mark.slow)])
def test_shipped_light_models_with_variadic_sum_match_their_outputs(name):
    check_light_model(name, "Sum")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["bvlc_alexnet", "zfnet512", "inception_v1"])
def test_shipped_light_models_with_lrn_match_their_outputs(name):
    check_light_model(name, "LRN", kernel_sets=("default",))  # see the LRN tests on BUILTIN_REF


def check_light_model(name, op_type, kernel_sets=KERNELS):
    """A light model of onnx's backend tests (opset 9) compiled to arm-fp32 and x86-fp32 and fed what onnx's backend
    test runner feeds it (arange(n) / n in the input's shape) gives the shipped output."""
    path = os.path.join(LIGHT, f"light_{name}.onnx")
    model = onnx.load(path)
    assert op_type in {n.op_type for n in model.graph.node}
    inits = {i.name for i in model.graph.initializer}  # opset 9 models list their initializers as inputs too
    data = next(i for i in model.graph.input if i.name not in inits)
    shape = tuple(d.dim_value or 1 for d in data.type.tensor_type.shape.dim)
    x = (np.arange(np.prod(shape)).reshape(shape) / np.prod(shape)).astype(np.float32)
    want = numpy_helper.to_array(onnx.load_tensor(os.path.join(LIGHT, f"light_{name}_output_0.pb")))
    arm = compile_model(path, "arm-fp32")
    for kernels in kernel_sets:
        got = next(iter(run_litert(arm.data, {arm.graph.inputs[0].name: x.transpose(0, 2, 3, 1)}, kernels).values()))
        assert got.shape == want.shape and np.abs(got - want).max() <= 1e-5 * max(np.abs(want).max(), 1e-6), kernels
    s = session(compile_model(path, "x86-fp32").data)
    got = s.run(None, {s.get_inputs()[0].name: x})[0]
    assert got.shape == want.shape and np.abs(got - want).max() <= 1e-5 * max(np.abs(want).max(), 1e-6)


# ---- 3. local response normalization -----------------------------------------------------------------------------
@pytest.mark.parametrize("size", [1, 3, 5])
def test_lrn_tflite_row_writes_reads_and_runs_like_litert_default_kernels(size):
    """LiteRT's default LOCAL_RESPONSE_NORMALIZATION sums channels c - r .. c + r, as ONNX and torch do for an odd
    size; its BUILTIN_REF kernel (2.3.0) stops one channel early (its loop's end is exclusive), so the two kernel
    sets differ, and mcc follows the default one, which is what a deployed model runs."""
    g = one_op("lrn", {"size": size, "alpha": 0.02, "beta": 0.75, "bias": 2.0}, (2, 3, 4, 7))
    feeds = {"x": rand((2, 3, 4, 7), 11) * 3}
    check_tflite_row(g, "LOCAL_RESPONSE_NORMALIZATION", feeds, kernel_sets=("default",))
    model, want = write_tflite(g), run(g, feeds)["y"]
    ref = run_litert(model, feeds, "ref")["y"]
    x = feeds["x"]  # what BUILTIN_REF computes: the window c - r .. c + r - 1 (none at all for size 1)
    r, sq = (size - 1) // 2, np.square(x)
    window = sum(np.pad(sq, [(0, 0)] * 3 + [(r, r)])[..., k:k + 7] for k in range(2 * r))
    np.testing.assert_allclose(ref, x * (2.0 + 0.02 / size * window) ** -0.75, rtol=1e-5, atol=1e-6)
    assert np.abs(ref - want).max() > 1e-3


def _lrn_model(size):
    node = helper.make_node("LRN", ["x"], ["y"], size=size, alpha=0.03, beta=0.6, bias=1.5)
    return _onnx_model([node], [("x", [7, 7, 4, 5])], [("y", [7, 7, 4, 5])])


@pytest.mark.parametrize("size", [3, 5])
def test_onnx_lrn_matches_onnxruntime_and_onnx_reference(size, tmp_path):
    """onnx 1.23.2's reference LRN loops over range(N) where it means the channels, so it is right only when the
    batch is at least the channel count: the model has N = C = 7."""
    from onnx.reference import ReferenceEvaluator

    model, x = _lrn_model(size), rand((7, 7, 4, 5), 12) * 3
    want = ReferenceEvaluator(model).run(None, {"x": x})[0]
    results = check_onnx_source(model, {"x": x}, tmp_path, kernel_sets=("default",))
    np.testing.assert_allclose(run(results["x86-fp32"].graph, {"x": x})["y"], want, rtol=1e-5, atol=1e-6)


def test_onnx_lrn_of_even_size_is_refused(tmp_path):
    onnx.save(_lrn_model(4), tmp_path / "lrn.onnx")
    with pytest.raises(MccError, match="ONNX LRN: .*odd positive size.*size 4.*off-centre") as e:
        compile_model(tmp_path / "lrn.onnx", "x86-fp32")
    assert e.value.node == "y"


def test_onnx_lrn_computes_torch_local_response_norm_and_is_a_float_island_in_int8(tmp_path):
    """torch.onnx.export writes LocalResponseNorm as pooling arithmetic, not LRN; the ONNX LRN of the same size,
    alpha, beta and k compiled by mcc matches torch's module, and stays float in int8."""
    x = rand((7, 7, 4, 5), 13) * 3
    with torch.no_grad():
        want = nn.LocalResponseNorm(5, alpha=0.03, beta=0.6, k=1.5)(torch.from_numpy(x)).numpy()
    onnx.save(_lrn_model(5), tmp_path / "lrn.onnx")
    results = check_float_targets(tmp_path / "lrn.onnx", x, want, tol=1e-5, kernel_sets=("default",))
    assert operator_names(results["arm-fp32"].data) == ["LOCAL_RESPONSE_NORMALIZATION"]
    np.savez(tmp_path / "calib.npz", x=rand((14, 7, 4, 5), 14))
    result = compile_model(tmp_path / "lrn.onnx", "arm-int8", tmp_path / "lrn8.tflite", calib=tmp_path / "calib.npz")
    notes = next(r for r in result.report["passes"] if r["pass"] == "quantize_int8")["notes"]
    assert [result.graph.node(name).op for name in notes["float_ops"]] == ["lrn"]
    assert operator_names(result.data) == ["LOCAL_RESPONSE_NORMALIZATION"]  # nothing around it is int8


# ---- 4. gather, 5. tile, depth_to_space, space_to_depth ------------------------------------------------------
MOVE_ROWS = [("gather", "GATHER", {"axis": 3}, [np.array([4, 0, 0, 2], np.int32)]),
             ("gather", "GATHER", {"axis": 1}, [np.array([2, 1], np.int32)]),
             ("tile", "TILE", {"multiples": [1, 2, 1, 3]}, []),
             ("depth_to_space", "DEPTH_TO_SPACE", {"block_size": 2, "mode": "DCR"}, []),
             ("space_to_depth", "SPACE_TO_DEPTH", {"block_size": 2}, [])]


@pytest.mark.parametrize("op,builtin,attrs,extra", MOVE_ROWS, ids=[f"{r[0]}-{i}" for i, r in enumerate(MOVE_ROWS)])
@pytest.mark.parametrize("int8", [False, True])
def test_data_movement_tflite_rows_write_read_and_move_like_litert(op, builtin, attrs, extra, int8):
    shape = (2, 4, 6, 8)
    if int8:
        g = one_op(op, attrs, shape, extra, quant=q(0.1, 3))
        feeds = {"x": np.random.default_rng(14).integers(-128, 128, shape).astype(np.int8)}
    else:
        g, feeds = one_op(op, attrs, shape, extra), {"x": rand(shape, 14)}
    check_tflite_row(g, builtin, feeds)


class Movement(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.register_buffer("index", torch.tensor([5, 0, 2, 2]))

    def forward(self, x):
        y = torch.relu(self.conv(x))
        a = torch.index_select(y, 1, self.index)                 # gather of channels
        b = F.pixel_shuffle(y, 2)                                 # CRD depth_to_space
        c = y.repeat(1, 1, 2, 1)[:, :4, ::2]                      # tile
        return torch.cat([a, c], 1), b


def test_torch_gather_tile_and_pixel_shuffle_compile_to_float_and_int8(tmp_path):
    torch.manual_seed(0)
    module, x = Movement().eval(), torch.randn(1, 3, 6, 6)
    g = from_module(module, (x,))
    assert {"gather", "tile", "depth_to_space"} <= {n.op for n in g.nodes}
    with torch.no_grad():
        want = [t.numpy() for t in module(x)]
    for target in ("arm-fp32", "x86-fp32"):
        result = compile_model(from_module(module, (x,)), target)
        if target == "arm-fp32":
            ops = operator_names(result.data)
            assert ops.count("GATHER") == 2 and {"TILE", "DEPTH_TO_SPACE"} <= set(ops)  # CRD: gather to DCR order
            for kernels in KERNELS:
                got = run_litert(result.data, {result.graph.inputs[0].name: x.numpy().transpose(0, 2, 3, 1)}, kernels)
                for o, w in zip(result.graph.outputs, want):
                    assert np.abs(got[o.name].transpose(0, 3, 1, 2) - w).max() <= 1e-5 * spread(w), kernels
        else:
            s = session(result.data)
            for got, w in zip(s.run(None, {s.get_inputs()[0].name: x.numpy()}), want):
                assert np.abs(got - w).max() <= 1e-5 * spread(w)
            written = {n.op_type for n in onnx.load_from_string(result.data).graph.node}
            assert {"Gather", "Tile", "DepthToSpace"} <= written
    results = check_int8_targets((module, (x,)), rand((16, 3, 6, 6), 15), tmp_path)
    for node in results["arm-int8"].graph.nodes:
        if node.op in ("gather", "tile", "depth_to_space", "reshape", "transpose"):
            assert node.inputs[0].dtype == "int8" and node.inputs[0].quant == node.outputs[0].quant


def test_onnx_gather_tile_depth_to_space_and_space_to_depth(tmp_path):
    ints = [helper.make_tensor("i1", TensorProto.INT64, [3], [-1, 0, 2]),
            helper.make_tensor("i2", TensorProto.INT64, [2, 2], [0, 3, 1, 1]),
            helper.make_tensor("i0", TensorProto.INT64, [], [1]),
            helper.make_tensor("reps", TensorProto.INT64, [4], [1, 1, 2, 1])]
    nodes = [helper.make_node("Gather", ["x", "i1"], ["g1"], axis=1),      # channels, a negative index
             helper.make_node("Gather", ["x", "i2"], ["g2"], axis=3),      # 2-D indices: rank 5
             helper.make_node("Gather", ["x", "i0"], ["g0"], axis=2),      # a scalar index: rank 3
             helper.make_node("Tile", ["x", "reps"], ["t"]),
             helper.make_node("DepthToSpace", ["x"], ["d0"], blocksize=2, mode="DCR"),
             helper.make_node("DepthToSpace", ["x"], ["d1"], blocksize=2, mode="CRD"),
             helper.make_node("SpaceToDepth", ["t"], ["s"], blocksize=2)]
    outs = [("g1", [2, 3, 4, 6]), ("g2", [2, 8, 4, 2, 2]), ("g0", [2, 8, 6]), ("t", [2, 8, 8, 6]),
            ("d0", [2, 2, 8, 12]), ("d1", [2, 2, 8, 12]), ("s", [2, 32, 4, 3])]
    model = _onnx_model(nodes, [("x", [2, 8, 4, 6])], outs, ints)
    results = check_onnx_source(model, {"x": rand((2, 8, 4, 6), 16)}, tmp_path, tol=1e-6)
    assert {"GATHER", "TILE", "DEPTH_TO_SPACE", "SPACE_TO_DEPTH"} <= set(operator_names(results["arm-fp32"].data))


# ---- 6. pad modes ---------------------------------------------------------------------------------------------
PAD_ROWS = [("reflect", [0, 0, 2, 1, 0, 3, 0, 0]), ("reflect", [0, 0, 1, 1, 1, 1, 0, 0]),
            ("edge", [0, 0, 1, 1, 0, 1, 0, 0]), ("edge", [0, 0, 1, 0, 1, 1, 0, 1])]


@pytest.mark.parametrize("mode,pads", PAD_ROWS)
@pytest.mark.parametrize("int8", [False, True])
def test_mirror_pad_tflite_rows_write_read_and_run_like_litert(mode, pads, int8):
    shape, attrs = (2, 4, 5, 3), {"pads": pads, "value": 0.0, "mode": mode}
    if int8:
        g = one_op("pad", attrs, shape, quant=q(0.1, 3))
        feeds = {"x": np.random.default_rng(17).integers(-128, 128, shape).astype(np.int8)}
    else:
        g, feeds = one_op("pad", attrs, shape), {"x": rand(shape, 17)}
    check_tflite_row(g, "MIRROR_PAD", feeds)


def test_edge_padding_wider_than_one_is_refused_for_tflite():
    g = one_op("pad", {"pads": [0, 0, 2, 0, 0, 0, 0, 0], "mode": "edge"}, (1, 4, 4, 3))
    with pytest.raises(MccError, match="edge padding by 2 has no TFLite form.*SYMMETRIC") as e:
        write_tflite(g)
    assert e.value.node == "y"


class Padding(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        y = self.conv(F.pad(x, (2, 1, 1, 2), mode="reflect"))
        z = F.pad(y, (1, 1, 0, 1), mode="replicate")
        return torch.cat([z, F.pad(y, (1, 1, 0, 1), mode="reflect")], 1)


def test_torch_reflection_and_replication_pads_compile_to_float_and_int8(tmp_path):
    torch.manual_seed(0)
    module, x = Padding().eval(), torch.randn(1, 3, 7, 8)
    g = from_module(module, (x,))
    assert sorted(n.attrs["mode"] for n in g.nodes if n.op == "pad") == ["edge", "reflect", "reflect"]
    with torch.no_grad():
        want = module(x).numpy()
    results = check_float_targets((module, (x,)), x.numpy(), want, tol=1e-5)
    assert operator_names(results["arm-fp32"].data).count("MIRROR_PAD") == 3
    results = check_int8_targets((module, (x,)), rand((16, 3, 7, 8), 18), tmp_path)
    pads = [n for n in results["arm-int8"].graph.nodes if n.op == "pad"]
    assert len(pads) == 3 and all(n.inputs[0].dtype == "int8" and n.inputs[0].quant == n.outputs[0].quant
                                  for n in pads)


def test_onnx_pad_modes(tmp_path):
    pads = helper.make_tensor("pads", TensorProto.INT64, [8], [0, 0, 2, 1, 0, 0, 1, 3])
    nodes = [helper.make_node("Pad", ["x", "pads"], ["r"], mode="reflect"),
             helper.make_node("Pad", ["x", "pads"], ["e"], mode="edge")]
    model = _onnx_model(nodes, [("x", [2, 3, 5, 6])], [("r", [2, 3, 8, 10]), ("e", [2, 3, 8, 10])], [pads])
    check_onnx_source(model, {"x": rand((2, 3, 5, 6), 19)}, tmp_path, targets=("x86-fp32",), tol=0)
    with pytest.raises(MccError, match="edge padding by 3 has no TFLite form"):
        compile_model(tmp_path / "src.onnx", "arm-fp32")
