"""The ONNX frontend: every supported op against onnxruntime, the zoo exported by both torch exporters against
torch, constant-node weights, external data, static shapes, and every kind of bad file refused with a clear
message (and through the CLI, exit 2 and no output); a good ONNX model compiles to a TFLite file that LiteRT runs
like onnxruntime, and like the same model compiled from torch."""

import warnings
import zlib

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from mcc.cli import main
from mcc.compiler import compile_model
from mcc.errors import MccError
from mcc.examples.zoo import ZOO
from mcc.frontend import load
from mcc.frontend.torch_export import from_module
from mcc.ir import Graph
from mcc.runtime import run
from mcc.runtime.litert import run_litert

N = helper.make_node
X4 = {"x": (1, 4, 8, 8)}


def rand(shape, seed, lo=-1.0, hi=1.0):
    return np.random.default_rng(seed).uniform(lo, hi, shape).astype(np.float32)


def model(nodes, inputs, consts=None, opset=13, outputs=("y",), functions=()):
    """An ONNX model of `nodes` over float inputs {name: shape} and initializers {name: array}."""
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
        [numpy_helper.from_array(np.asarray(v), n) for n, v in (consts or {}).items()])
    domains = [helper.make_opsetid("", opset)] + [helper.make_opsetid(f.domain, 1) for f in functions]
    return helper.make_model(graph, opset_imports=domains, ir_version=10, functions=list(functions))


def save(m, path):
    onnx.save_model(m, path)
    return path


def range_of(ref):
    """The spread of an output's values; its magnitude when it is one value (a mean over everything)."""
    return max(float(ref.max() - ref.min()) or float(np.abs(ref).max()), 1e-6)


def check_against_ort(path, seed=0, input_shapes=None):
    """Load the model at `path`, run the IR in mcc's runtime and onnxruntime on the same inputs; every output
    must agree within 1e-5 of its range. Returns the graph."""
    graph = load(path, input_shapes=input_shapes)
    feeds = {t.name: rand(t.shape, seed + i, -2.0, 2.0) for i, t in enumerate(graph.inputs)}
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    want = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
    got = run(graph, feeds)
    assert [t.name for t in graph.outputs] == list(want)
    for name, w in want.items():
        assert got[name].shape == w.shape
        err = float(np.abs(got[name] - w).max())
        assert err <= 1e-5 * range_of(w), f"output {name}: max error {err}, range {range_of(w)}"
    return graph


def c(shape, name, lo=-1.0, hi=1.0):
    return rand(shape, zlib.crc32(name.encode()), lo, hi)


I64 = lambda *v: np.array(v, np.int64)  # noqa: E731
F32 = lambda *v: np.array(v, np.float32)  # noqa: E731
S = lambda v: np.array(v, np.float32)  # noqa: E731  (a 0-d tensor, as Clip's bounds and Pad's value are)

# (id, nodes, inputs, initializers, opset, IR ops the lowering must produce)
CASES = [
    ("conv", [N("Conv", ["x", "w", "b"], ["y"], strides=[2, 2], pads=[1, 1, 1, 1])], X4,
     {"w": c((6, 4, 3, 3), "w"), "b": c((6,), "b")}, 13, {"conv2d"}),
    ("conv_same_upper", [N("Conv", ["x", "w"], ["y"], auto_pad="SAME_UPPER", strides=[2, 1])], X4,
     {"w": c((3, 4, 4, 3), "w")}, 13, {"conv2d"}),
    ("conv_dilated", [N("Conv", ["x", "w"], ["y"], dilations=[2, 1], pads=[2, 1, 2, 0])], X4,
     {"w": c((3, 4, 3, 3), "w")}, 13, {"conv2d"}),
    ("conv_same_lower", [N("Conv", ["x", "w"], ["y"], auto_pad="SAME_LOWER")], X4, {"w": c((3, 4, 2, 2), "w")},
     13, {"conv2d"}),
    ("conv_valid_rect", [N("Conv", ["x", "w"], ["y"], auto_pad="VALID", strides=[1, 2])], X4,
     {"w": c((3, 4, 1, 3), "w")}, 13, {"conv2d"}),
    ("conv_grouped", [N("Conv", ["x", "w"], ["y"], group=2, pads=[0, 1, 2, 1])], X4, {"w": c((6, 2, 3, 3), "w")},
     13, {"conv2d"}),
    ("conv_depthwise_multiplier", [N("Conv", ["x", "w", "b"], ["y"], group=4, pads=[1, 1, 1, 1])], X4,
     {"w": c((8, 1, 3, 3), "w"), "b": c((8,), "b")}, 13, {"depthwise_conv2d"}),
    ("batch_norm", [N("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], epsilon=1e-3)], X4,
     {"s": c((4,), "s"), "b": c((4,), "b"), "m": c((4,), "m"), "v": c((4,), "v", 0.5, 2.0)}, 15, {"batch_norm"}),
    ("relu", [N("Relu", ["x"], ["y"])], X4, {}, 13, {"relu"}),
    ("sigmoid", [N("Sigmoid", ["x"], ["y"])], X4, {}, 13, {"sigmoid"}),
    ("tanh", [N("Tanh", ["x"], ["y"])], X4, {}, 13, {"tanh"}),
    ("hardswish", [N("HardSwish", ["x"], ["y"])], X4, {}, 14, {"hardswish"}),
    ("hardsigmoid_torch", [N("HardSigmoid", ["x"], ["y"], alpha=1 / 6)], X4, {}, 13, {"hardsigmoid"}),
    ("hardsigmoid_default", [N("HardSigmoid", ["x"], ["y"])], X4, {}, 13, {"mul", "add", "clip"}),
    ("leaky_relu", [N("LeakyRelu", ["x"], ["y"], alpha=0.2)], X4, {}, 13, {"leaky_relu"}),
    ("leaky_relu_default", [N("LeakyRelu", ["x"], ["y"])], X4, {}, 13, {"leaky_relu"}),
    ("prelu_per_channel", [N("PRelu", ["x", "s"], ["y"])], X4, {"s": c((4, 1, 1), "s", 0, 0.5)}, 13, {"prelu"}),
    ("prelu_shared", [N("PRelu", ["x", "s"], ["y"])], X4, {"s": F32(0.25)}, 13, {"prelu"}),
    ("clip_relu6", [N("Clip", ["x", "lo", "hi"], ["y"])], X4, {"lo": S(0), "hi": S(6)}, 13, {"relu6"}),
    ("clip_relu", [N("Clip", ["x", "lo"], ["y"])], X4, {"lo": S(0)}, 13, {"relu"}),
    ("clip_max_only", [N("Clip", ["x", "", "hi"], ["y"])], X4, {"hi": S(0.3)}, 13, {"minimum"}),
    ("clip_min_only", [N("Clip", ["x", "lo"], ["y"])], X4, {"lo": S(-0.3)}, 13, {"maximum"}),
    ("clip_from_constant_nodes", [N("Constant", [], ["lo"], value_float=-0.5),
                                  N("Constant", [], ["hi"], value_float=0.7), N("Clip", ["x", "lo", "hi"], ["y"])],
     X4, {}, 13, {"clip"}),
    ("softmax_channels", [N("Softmax", ["x"], ["y"], axis=1)], X4, {}, 13, {"softmax"}),
    ("softmax_last", [N("Softmax", ["x"], ["y"])], {"x": (2, 5)}, {}, 13, {"softmax"}),
    ("add", [N("Add", ["x", "z"], ["y"])], {**X4, "z": (1, 4, 8, 8)}, {}, 13, {"add"}),
    ("add_broadcast_constant", [N("Add", ["x", "k"], ["y"])], X4, {"k": c((4, 1, 1), "k")}, 13, {"add"}),
    ("sub_constant_first", [N("Sub", ["k", "x"], ["y"])], X4, {"k": c((8,), "k")}, 13, {"sub"}),
    ("mul_squeeze_excite", [N("Mul", ["x", "s"], ["y"])], {**X4, "s": (1, 4, 1, 1)}, {}, 13, {"mul"}),
    ("div", [N("Div", ["x", "k"], ["y"])], X4, {"k": c((1, 4, 1, 1), "k", 0.5, 2.0)}, 13, {"div"}),
    ("max_variadic", [N("Max", ["x", "z", "k"], ["y"])], {**X4, "z": (1, 4, 8, 8)}, {"k": S(0.1)}, 13,
     {"maximum"}),
    ("min", [N("Min", ["x", "z"], ["y"])], {**X4, "z": (1, 1, 8, 8)}, {}, 13, {"minimum"}),
    ("max_pool", [N("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])], X4, {},
     13, {"max_pool2d"}),
    ("max_pool_ceil", [N("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)],
     {"x": (1, 4, 10, 9)}, {}, 13, {"max_pool2d"}),
    ("max_pool_ceil_drops_window_in_padding", [N("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2],
                                                 pads=[1, 1, 1, 1], ceil_mode=1)], {"x": (1, 2, 5, 5)}, {}, 13,
     {"max_pool2d"}),
    ("max_pool_same_upper", [N("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], auto_pad="SAME_UPPER")], X4, {}, 13,
     {"max_pool2d"}),
    ("avg_pool", [N("AveragePool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2])], X4, {}, 13, {"avg_pool2d"}),
    ("avg_pool_padded_excluded", [N("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2],
                                    pads=[1, 1, 1, 1])], X4, {}, 13, {"avg_pool2d"}),
    ("avg_pool_padded_included", [N("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2],
                                    pads=[1, 1, 1, 1], count_include_pad=1)], X4, {}, 13, {"avg_pool2d"}),
    ("avg_pool_ceil", [N("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)],
     {"x": (1, 4, 10, 9)}, {}, 19, {"avg_pool2d"}),
    ("avg_pool_ceil_padded_excluded", [N("AveragePool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2],
                                         pads=[1, 1, 1, 1], ceil_mode=1)], {"x": (1, 2, 5, 6)}, {}, 13, {"avg_pool2d"}),
    ("global_average_pool", [N("GlobalAveragePool", ["x"], ["y"])], X4, {}, 13, {"mean"}),
    ("reduce_mean_axes_attribute", [N("ReduceMean", ["x"], ["y"], axes=[2, 3])], X4, {}, 13, {"mean"}),
    ("reduce_mean_axes_input", [N("ReduceMean", ["x", "a"], ["y"], keepdims=0)], X4, {"a": I64(-1, 1)}, 18,
     {"mean"}),
    ("reduce_mean_all", [N("ReduceMean", ["x"], ["y"])], X4, {}, 18, {"mean"}),
    ("concat_with_constant", [N("Concat", ["x", "k"], ["y"], axis=1)], X4, {"k": c((1, 2, 8, 8), "k")}, 13,
     {"concat"}),
    ("gemm_linear", [N("Gemm", ["x", "w", "b"], ["y"], transB=1)], {"x": (2, 6)},
     {"w": c((5, 6), "w"), "b": c((5,), "b")}, 13, {"fully_connected"}),
    ("gemm_alpha_beta_row_bias", [N("Gemm", ["x", "w", "b"], ["y"], alpha=0.5, beta=2.0)], {"x": (2, 6)},
     {"w": c((6, 5), "w"), "b": c((1, 5), "b")}, 13, {"fully_connected"}),
    ("gemm_trans_a_no_bias", [N("Gemm", ["x", "w"], ["y"], transA=1)], {"x": (6, 3)}, {"w": c((6, 4), "w")}, 13,
     {"transpose", "fully_connected"}),
    ("gemm_full_c", [N("Gemm", ["x", "w", "b"], ["y"])], {"x": (2, 6)}, {"w": c((6, 4), "w"), "b": c((2, 4), "b")},
     13, {"fully_connected", "add"}),
    ("gemm_column_c", [N("Gemm", ["x", "w", "b"], ["y"])], {"x": (3, 6)}, {"w": c((6, 3), "w"), "b": c((3, 1), "b")},
     13, {"fully_connected", "add"}),
    ("matmul", [N("MatMul", ["x", "w"], ["y"])], {"x": (3, 6)}, {"w": c((6, 4), "w")}, 13, {"fully_connected"}),
    ("matmul_3d", [N("MatMul", ["x", "w"], ["y"])], {"x": (2, 3, 6)}, {"w": c((6, 4), "w")}, 13,
     {"fully_connected"}),
    ("transpose", [N("Transpose", ["x"], ["y"], perm=[0, 2, 3, 1])], X4, {}, 13, {"transpose"}),
    ("transpose_default_reverses", [N("Transpose", ["x"], ["y"])], {"x": (2, 3, 4)}, {}, 13, {"transpose"}),
    ("reshape_zero_and_minus_one", [N("Reshape", ["x", "s"], ["y"])], X4, {"s": I64(0, -1, 16)}, 14,
     {"reshape"}),
    ("flatten_axis_2", [N("Flatten", ["x"], ["y"], axis=2)], X4, {}, 13, {"reshape"}),
    ("squeeze", [N("Squeeze", ["x", "a"], ["y"])], {"x": (1, 4, 1, 8)}, {"a": I64(2)}, 13, {"reshape"}),
    ("unsqueeze", [N("Unsqueeze", ["x", "a"], ["y"])], {"x": (2, 5)}, {"a": I64(1, -1)}, 13, {"reshape"}),
    ("reshape_from_shape_arithmetic", [N("Shape", ["x"], ["s"]), N("Gather", ["s", "i"], ["n"], axis=0),
                                       N("Unsqueeze", ["n", "a"], ["n1"]),
                                       N("Concat", ["n1", "m1"], ["t"], axis=0), N("Reshape", ["x", "t"], ["y"])],
     X4, {"i": np.array(0, np.int64), "a": I64(0), "m1": I64(-1)}, 13, {"reshape"}),
    ("split_sizes", [N("Split", ["x", "s"], ["y", "z"], axis=1)], X4, {"s": I64(1, 3)}, 13, {"split"}),
    ("split_equal", [N("Split", ["x"], ["y", "z"], axis=-1)], X4, {}, 13, {"split"}),
    ("split_num_outputs", [N("Split", ["x"], ["y", "z", "w"], axis=2, num_outputs=3)], X4, {}, 18, {"split"}),
    ("slice", [N("Slice", ["x", "s", "e", "a", "t"], ["y"])], X4,
     {"s": I64(1, 0), "e": I64(7, 3), "a": I64(2, 1), "t": I64(2, 1)}, 13, {"slice"}),
    ("slice_negative_indices_default_axes", [N("Slice", ["x", "s", "e"], ["y"])], X4,
     {"s": I64(0, -3, 2), "e": I64(1, -1, 2**62)}, 13, {"slice"}),
    ("slice_negative_step", [N("Slice", ["x", "s", "e", "a", "t"], ["y"])], X4,
     {"s": I64(-1, 6), "e": I64(-2**62, 0), "a": I64(3, 2), "t": I64(-1, -3)}, 13, {"slice"}),
    ("pad", [N("Pad", ["x", "p", "v"], ["y"])], X4, {"p": I64(0, 0, 1, 2, 0, 1, 0, 3), "v": S(0.5)}, 13,
     {"pad"}),
    ("pad_axes", [N("Pad", ["x", "p", "", "a"], ["y"])], X4, {"p": I64(1, 2, 3, 0), "a": I64(-1, 2)}, 18, {"pad"}),
    ("resize_nearest_asymmetric_floor", [N("Resize", ["x", "", "s"], ["y"], mode="nearest",
                                           coordinate_transformation_mode="asymmetric", nearest_mode="floor")],
     X4, {"s": F32(1, 1, 2, 2)}, 13, {"resize"}),
    ("resize_nearest_half_pixel_down", [N("Resize", ["x", "", "", "z"], ["y"])], X4, {"z": I64(1, 4, 4, 3)}, 13,
     {"resize"}),
    ("resize_nearest_prefer_ceil", [N("Resize", ["x", "", "", "z"], ["y"], nearest_mode="round_prefer_ceil")],
     X4, {"z": I64(1, 4, 4, 5)}, 13, {"resize"}),
    ("resize_nearest_align_corners", [N("Resize", ["x", "", "", "z"], ["y"],
                                        coordinate_transformation_mode="align_corners")],
     X4, {"z": I64(1, 4, 15, 5)}, 13, {"resize"}),
    ("resize_bilinear_half_pixel", [N("Resize", ["x", "", "s"], ["y"], mode="linear")], X4,
     {"s": F32(1, 1, 2, 0.5)}, 13, {"resize"}),
    ("resize_bilinear_align_corners", [N("Resize", ["x", "", "", "z"], ["y"], mode="linear",
                                         coordinate_transformation_mode="align_corners")],
     X4, {"z": I64(1, 4, 13, 6)}, 13, {"resize"}),
    ("resize_bilinear_pytorch_half_pixel", [N("Resize", ["x", "", "", "z"], ["y"], mode="linear",
                                              coordinate_transformation_mode="pytorch_half_pixel")],
     X4, {"z": I64(1, 4, 12, 5)}, 13, {"resize"}),
    ("resize_bilinear_asymmetric_axes", [N("Resize", ["x", "", "", "z"], ["y"], mode="linear", axes=[2, 3],
                                           coordinate_transformation_mode="asymmetric")],
     X4, {"z": I64(11, 16)}, 18, {"resize"}),
    ("size_folded", [N("Size", ["x"], ["n"]), N("Cast", ["n"], ["f"], to=TensorProto.FLOAT),
                     N("Div", ["x", "f"], ["y"])], X4, {}, 13, {"div"}),
    ("shape_slice_folded", [N("Shape", ["x"], ["s"], start=1, end=2), N("Cast", ["s"], ["f"], to=TensorProto.FLOAT),
                            N("Mul", ["x", "f"], ["y"])], X4, {}, 15, {"mul"}),
    ("identity_dropout_cast", [N("Relu", ["x"], ["r"]), N("Dropout", ["r"], ["d"]), N("Identity", ["d"], ["i"]),
                               N("Cast", ["i"], ["y"], to=TensorProto.FLOAT)], X4, {}, 13, {"relu"}),
    ("output_is_input", [N("Identity", ["x"], ["y"])], X4, {}, 13, {"identity"}),
]


@pytest.mark.parametrize("name,nodes,inputs,consts,opset,ops", CASES, ids=[c[0] for c in CASES])
def test_op_against_onnxruntime(tmp_path, name, nodes, inputs, consts, opset, ops):
    outputs = [o for n in nodes[-1:] for o in n.output]
    path = save(model(nodes, inputs, consts, opset, outputs), tmp_path / f"{name}.onnx")
    graph = check_against_ort(path, seed=zlib.crc32(name.encode()))
    assert {n.op for n in graph.nodes} == ops
    names = {n.name or n.output[0] for n in nodes}
    assert all(n.source in names for n in graph.nodes) and graph.name == name
    assert all(t.layout == "NCHW" for t in graph.tensors() if len(t.shape) == 4 and not t.is_constant)


@pytest.mark.parametrize("mode,coordinates", [("nearest", "half_pixel"), ("bilinear", "align_corners")])
def test_resize_kernel_reads_either_layout(mode, coordinates):
    """The IR's resize on an NHWC tensor (as after the layout pass) computes what it computes on NCHW."""
    x, outs = rand((1, 3, 5, 4), 0), {}
    for layout in ("NCHW", "NHWC"):
        g = Graph()
        feed = x if layout == "NCHW" else np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        node = g.add_node("resize", [g.add_input("x", feed.shape, layout=layout)],
                          {"mode": mode, "size": [7, 9], "coordinate_transformation_mode": coordinates})
        g.outputs = list(node.outputs)
        y = run(g, {"x": feed})[node.outputs[0].name]
        outs[layout] = y if layout == "NCHW" else y.transpose(0, 3, 1, 2)
    assert outs["NCHW"].shape == (1, 3, 7, 9)
    np.testing.assert_array_equal(outs["NCHW"], outs["NHWC"])


def test_folding_keeps_the_weight_name(tmp_path):
    """A weight transposed by a Transpose node is folded and keeps its initializer's name."""
    nodes = [N("Transpose", ["w"], ["wt"], perm=[1, 0]), N("MatMul", ["x", "wt"], ["y"], name="fc")]
    path = save(model(nodes, {"x": (2, 6)}, {"w": c((4, 6), "w")}), tmp_path / "folded.onnx")
    graph = check_against_ort(path)
    assert [(n.op, n.name, n.inputs[1].name) for n in graph.nodes] == [("fully_connected", "fc", "w")]


def test_local_functions_are_inlined(tmp_path):
    body = [N("Relu", ["a"], ["r"]), N("Mul", ["r", "a"], ["o"])]
    fn = helper.make_function("local", "ReluTimes", ["a"], ["o"], body, [helper.make_opsetid("", 13)])
    path = save(model([N("ReluTimes", ["x"], ["y"], domain="local")], X4, functions=[fn]), tmp_path / "fn.onnx")
    assert {n.op for n in check_against_ort(path).nodes} == {"relu", "mul"}


# ---- the zoo, exported by both of torch's exporters --------------------------------------------------------------
def export(module, x, path, dynamo, **options):
    """torch.onnx.export, without the exporters' notes about their own deprecations."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        torch.onnx.export(module, (x,), path, dynamo=dynamo, input_names=["x"], verbose=False, **options)


@pytest.fixture(scope="module")
def zoo_onnx(tmp_path_factory):
    """{(model name, dynamo): (path, module, example input)} for every zoo model and both exporters."""
    folder = tmp_path_factory.mktemp("zoo")
    out = {}
    for name, build in ZOO.items():
        module, x = build(train=False) if name == "digits_classifier" else build()  # accuracy is not tested here
        for dynamo in (False, True):
            path = folder / f"{name}_{'dynamo' if dynamo else 'legacy'}.onnx"
            export(module, x, path, dynamo, output_names=["logits"])
            out[name, dynamo] = (path, module, x)
    return out


@pytest.mark.parametrize("dynamo", [False, True], ids=["legacy", "dynamo"])
@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_against_torch(zoo_onnx, name, dynamo):
    path, module, x = zoo_onnx[name, dynamo]
    graph = load(path)
    assert [t.name for t in graph.inputs] == ["x"] and [t.name for t in graph.outputs] == ["logits"]
    got = run(graph, {"x": x.numpy()})["logits"]
    with torch.no_grad():
        want = module(x).numpy()
    assert np.abs(got - want).max() <= 1e-4 * range_of(want)


@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_round_trip_through_tflite(zoo_onnx, name):
    """torch -> ONNX (both exporters) -> mcc -> TFLite agrees with torch -> mcc -> TFLite, run in LiteRT."""
    _, module, x = zoo_onnx[name, False]
    nhwc = {"x": np.ascontiguousarray(x.numpy().transpose(0, 2, 3, 1))}
    direct = compile_model(from_module(module, (x,)), "arm-fp32")
    want = next(iter(run_litert(direct.data, {direct.graph.inputs[0].name: nhwc["x"]}).values()))
    for dynamo in (False, True):
        compiled = compile_model(zoo_onnx[name, dynamo][0], "arm-fp32")
        got = run_litert(compiled.data, nhwc)["logits"]
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= 1e-5 * range_of(want)


def test_cli_compiles_onnx_to_tflite_that_matches_onnxruntime(zoo_onnx, tmp_path, capsys):
    path, _, x = zoo_onnx["mobilenet_v3_small_style", True]
    out = tmp_path / "m.tflite"
    assert main(["compile", str(path), "--target", "arm-fp32", "-o", str(out), "-q"]) == 0, capsys.readouterr().err
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})[0]
    got = run_litert(out.read_bytes(), {"x": np.ascontiguousarray(x.numpy().transpose(0, 2, 3, 1))})["logits"]
    assert np.abs(got - want).max() <= 1e-5 * range_of(want)


# ---- weights and shapes -------------------------------------------------------------------------------------------
def test_weights_as_constant_nodes(zoo_onnx, tmp_path):
    m = onnx.load(zoo_onnx["digits_classifier", False][0])
    weights = [N("Constant", [], [t.name], value=t) for t in m.graph.initializer]
    expected = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    del m.graph.initializer[:]
    nodes = weights + list(m.graph.node)
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    graph = check_against_ort(save(m, tmp_path / "constants.onnx"))
    consts = {t.name: t.data for t in graph.constants()}
    assert consts.keys() == expected.keys()
    assert all(np.array_equal(consts[k], v) for k, v in expected.items())


def test_initializers_listed_as_inputs_are_weights(zoo_onnx, tmp_path):
    _, module, x = zoo_onnx["digits_classifier", False]
    path = tmp_path / "old_style.onnx"
    export(module, x, path, False, keep_initializers_as_inputs=True)
    assert len(onnx.load(path).graph.input) > 1
    assert [t.name for t in check_against_ort(path).inputs] == ["x"]


def test_external_data(zoo_onnx, tmp_path):
    m = onnx.load(zoo_onnx["resnet18_style", False][0])
    path = tmp_path / "ext.onnx"
    onnx.save_model(m, path, save_as_external_data=True, location="ext.weights", size_threshold=0)
    assert path.stat().st_size < 20_000 < (tmp_path / "ext.weights").stat().st_size
    check_against_ort(path)
    (tmp_path / "ext.weights").unlink()
    with pytest.raises(MccError, match="external file 'ext.weights', missing from.*copy it next to the model"):
        load(path)


def test_symbolic_batch_becomes_one_or_the_given_shape(zoo_onnx, tmp_path):
    _, module, x = zoo_onnx["mobilenet_v2_style", False]
    path = tmp_path / "dyn.onnx"
    export(module, x, path, False, dynamic_axes={"x": {0: "batch"}})
    assert onnx.load(path).graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert load(path).inputs[0].shape == (1, 3, 32, 32)
    graph = check_against_ort(path, input_shapes=[(3, 3, 32, 32)])
    assert graph.outputs[0].shape == (3, 10)
    with pytest.raises(MccError, match=r"input 'x' has shape \['batch', 3, 32, 32\].*contradicts"):
        load(path, input_shapes=[(1, 3, 16, 16)])
    with pytest.raises(MccError, match=r"has 1 input\(s\) \(x\) but input_shapes gives 2"):
        load(path, input_shapes=[(1, 3, 32, 32)] * 2)


def test_symbolic_spatial_dims_need_input_shapes(tmp_path):
    path = save(model([N("Relu", ["x"], ["y"])], {"x": ("n", 4, "h", "w")}), tmp_path / "hw.onnx")
    with pytest.raises(MccError, match="symbolic dimension.*'h' \\(axis 2\\).*input_shapes"):
        load(path)
    assert check_against_ort(path, input_shapes=[(2, 4, 5, 6)]).inputs[0].shape == (2, 4, 5, 6)


# ---- refusals ---------------------------------------------------------------------------------------------------
@pytest.fixture
def good_bytes():
    m = model([N("Conv", ["x", "w"], ["c"], name="conv"), N("Relu", ["c"], ["y"], name="relu")], X4,
              {"w": c((3, 4, 3, 3), "w")})
    return m.SerializeToString()


def _cycle():
    return model([N("Add", ["x", "b"], ["a"], name="add"), N("Relu", ["a"], ["b"], name="relu")], X4, outputs=["a"])


def _quantized_conv():
    nodes = [N("QuantizeLinear", ["x", "s", "z"], ["q"], name="quant"),
             N("QLinearConv", ["q", "s", "z", "w", "s", "z", "s", "z"], ["qc"], name="qconv"),
             N("DequantizeLinear", ["qc", "s", "z"], ["y"], name="dequant")]
    return model(nodes, X4, {"s": F32(0.1), "z": np.array(0, np.uint8), "w": np.ones((3, 4, 3, 3), np.uint8)})


def _qdq_weights():
    nodes = [N("DequantizeLinear", ["wq", "s"], ["w"], name="weight_dq"), N("Conv", ["x", "w"], ["y"], name="conv")]
    return model(nodes, X4, {"wq": np.ones((3, 4, 3, 3), np.int8), "s": F32(0.05)})


def _unsupported():
    nodes = [N("Sin", ["x"], ["e"], name="sine"), N("Relu", ["e"], ["r"], name="ok_relu"),
             N("TopK", ["r", "k"], ["t", "i"], name="top", axis=-1), N("Gelu", ["t"], ["y"], name="ms_gelu",
                                                                       domain="com.microsoft")]
    return model(nodes, X4, {"k": I64(2)})


def _integer_input():
    m = model([N("Identity", ["x"], ["y"])], {"x": (2,)})
    m.graph.input[0].type.tensor_type.elem_type = m.graph.output[0].type.tensor_type.elem_type = TensorProto.UINT16
    return m


BAD = {
    "broken_protobuf": (lambda good: good[:3] + b"\xff" * 12 + good[3:], "does not parse.*truncated or corrupt"),
    "truncated": (lambda good: good[: len(good) // 2], "does not parse.*truncated or corrupt"),
    "cycle": (lambda good: _cycle().SerializeToString(), "has a cycle: nodes 'add', 'relu'"),
    "opset_6": (lambda good: model([N("Relu", ["x"], ["y"])], X4, opset=6).SerializeToString(),
                "declares opset 6; mcc reads opsets 7 to"),
    "opset_beyond_onnx": (lambda good: model([N("Relu", ["x"], ["y"])], X4, opset=99).SerializeToString(),
                          "declares opset 99; mcc reads opsets 7 to"),
    "qlinear_conv": (lambda good: _quantized_conv().SerializeToString(),
                     "already quantized \\(QuantizeLinear \\(node 'quant'\\), QLinearConv \\(node 'qconv'\\), "
                     "DequantizeLinear \\(node 'dequant'\\)\\).*float model"),
    "dequantize_linear": (lambda good: _qdq_weights().SerializeToString(),
                          "already quantized \\(DequantizeLinear \\(node 'weight_dq'\\)\\)"),
    "unsupported_ops": (lambda good: _unsupported().SerializeToString(),
                        "3 op\\(s\\).*: Sin \\(node 'sine'\\), TopK \\(node 'top'\\), "
                        "com.microsoft.Gelu \\(node 'ms_gelu'\\);"),
    "no_graph": (lambda good: onnx.ModelProto(ir_version=9, producer_name="x").SerializeToString(), "without a graph"),
    "dangling_input": (lambda good: model([N("Add", ["x", "ghost"], ["y"], name="add")], X4).SerializeToString(),
                       "node 'add': reads 'ghost', which no node produces"),
    "invalid_node": (lambda good: model([N("MaxPool", ["x"], ["y"], name="pool")], X4).SerializeToString(),
                     "node 'pool': is not a valid ONNX MaxPool node: Required attribute 'kernel_shape' is missing"),
    "integer_input": (lambda good: _integer_input().SerializeToString(),
                      "input 'x' is uint16; mcc compiles models with float32 inputs, and int32 or int64 ones"),
}


@pytest.mark.parametrize("kind", list(BAD))
def test_bad_onnx_refused(tmp_path, good_bytes, capsys, kind):
    make, message = BAD[kind]
    path = tmp_path / f"{kind}.onnx"
    path.write_bytes(make(good_bytes))
    with pytest.raises(MccError, match=message) as e:
        load(path)
    assert str(e.value).startswith(str(path))
    out = tmp_path / "out.tflite"
    assert main(["compile", str(path), "--target", "arm-fp32", "-o", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mcc: error:") and f"{kind}.onnx" in err and err.count("\n") == 1
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == [path.name]


def test_missing_external_data_through_the_cli(tmp_path, capsys):
    m = model([N("MatMul", ["x", "w"], ["y"])], {"x": (1, 8)}, {"w": c((8, 8), "w")})
    path = tmp_path / "m.onnx"
    onnx.save_model(m, path, save_as_external_data=True, location="weights.bin", size_threshold=0)
    (tmp_path / "weights.bin").unlink()
    out = tmp_path / "m.tflite"
    assert main(["compile", str(path), "--target", "arm-fp32", "-o", str(out), "-q"]) == 2
    assert "'weights.bin'" in capsys.readouterr().err and not out.exists()


def test_good_onnx_is_recognised_without_its_extension(tmp_path, good_bytes):
    path = tmp_path / "model.bin"
    path.write_bytes(good_bytes)
    assert [n.op for n in load(path).nodes] == ["conv2d", "relu"]


def test_other_files_starting_like_onnx_are_not_taken_for_onnx(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"\x08\x05\x00\x00\x00\x00\x00\x00" + b"{}" * 650)  # a safetensors header 0x508 long
    with pytest.raises(MccError, match="is not a model format mcc reads.*an ONNX model"):
        load(path)


def test_unsupported_forms_of_supported_ops_name_the_node(tmp_path):
    cases = [
        (N("Pad", ["x", "p"], ["y"], name="crop", mode="reflect"), {"p": I64(0, 0, -1, 1, 0, 0, 1, 1)},
         "crop.*negative padding"),
        (N("Resize", ["x", "", "", "z"], ["y"], name="cubic", mode="cubic"), {"z": I64(1, 4, 16, 16)},
         "cubic.*mode 'cubic'"),
        (N("Resize", ["x", "", "s"], ["y"], name="odd", mode="nearest"), {"s": F32(1, 1, 0.7, 0.7)},
         "odd.*scale 0.7 maps axis 2.s 8 to 5.*sizes instead of scales"),
        (N("MatMul", ["x", "v"], ["y"], name="mm"), {"v": F32(*range(8))}, "mm.*rank 2 or more"),
        (N("AveragePool", ["x"], ["y"], name="avg", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
           ceil_mode=1, count_include_pad=1), {}, "avg.*count_include_pad=0 or ceil_mode=0"),
        (N("Clip", ["x", "lo"], ["y"], name="clip"), {"lo": F32(0, 1)}, "clip.*min must be a single value"),
    ]
    for node, consts, message in cases:
        path = save(model([node], X4, consts), tmp_path / f"{node.name}.onnx")
        with pytest.raises(MccError, match=message) as e:
            load(path)
        assert e.value.node == node.name
