"""The TFLite writer and reader: every mapped op run by LiteRT (default and reference kernels) against torch,
write -> read as an identity on the IR text, mcc's runtime on the file read back against LiteRT, determinism,
the file's layout, quantization parameters, and the errors for files and graphs mcc cannot handle."""

import subprocess
import sys

import flatbuffers
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.interpreter import Interpreter

from mcc import __version__
from mcc.formats.tflite.writer import write_tflite
from mcc.errors import MccError
from mcc.formats.tflite.reader import read_tflite
from mcc.ir import Graph, QuantParams
from mcc.ir.text import dumps
from mcc.runtime import run
from mcc.runtime.litert import run_litert

KERNEL_SETS = ("ref", "default")  # OpResolverType.BUILTIN_REF and the default resolver (XNNPACK)


# ---- helpers shared with test_legalize_tflite ------------------------------------------------------------
def rand(*shape, seed=0, lo=-2.0, hi=2.0):
    return np.random.default_rng(seed).uniform(lo, hi, shape).astype(np.float32)


def T(a):
    return torch.from_numpy(np.ascontiguousarray(a))


def to_nchw(a):
    return T(a.transpose(0, 3, 1, 2))


def from_nchw(t):
    return np.ascontiguousarray(t.detach().numpy().transpose(0, 2, 3, 1))


def ohwi_to_oihw(w):
    return T(w.transpose(0, 3, 1, 2))


def image_graph(shape=(1, 8, 8, 4), seed=1):
    """A graph with one NHWC input `x` and its random feed."""
    g = Graph()
    x = g.add_input("x", shape, layout="NHWC")
    return g, x, {"x": rand(*shape, seed=seed)}


def finish(g, node):
    g.outputs = list(node.outputs)
    return g


def assert_close(got, want, rel, what):
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    span = float(want.max() - want.min()) or float(np.abs(want).max()) or 1.0  # the output range
    err = float(np.abs(got.astype(np.float64) - want).max())
    assert err <= rel * span, f"{what}: max abs error {err} > {rel} * {span}"


def check_file(g, feeds, expected):
    """Write `g`, run the file in LiteRT's two kernel sets against torch's `expected` (1e-4 of its range) and
    mcc's runtime on the file read back against LiteRT's reference kernels (1e-5); returns the bytes."""
    data = write_tflite(g)
    out = g.outputs[0].name
    for kernels in KERNEL_SETS:
        assert_close(run_litert(data, feeds, kernels)[out], expected, 1e-4, f"LiteRT {kernels} vs torch")
    back = read_tflite(data)
    assert_close(run(back, feeds)[out], run_litert(data, feeds, "ref")[out], 1e-5, "mcc runtime vs LiteRT ref")
    return data


# ---- one graph per mapped op: (graph, feeds, torch's answer) --------------------------------------------
CASES = {}


def case(fn):
    CASES[fn.__name__] = fn
    return fn


def _conv(padding, stride=(1, 1), dilation=(1, 1), groups=1, activation=None, torch_pad=1, cout=6):
    g, x, feeds = image_graph()
    w = rand(cout, 3, 3, 4 // groups, seed=2, lo=-0.5, hi=0.5)
    b = rand(cout, seed=3)
    n = g.add_node("conv2d", [x, g.constant("w", w), g.constant("b", b)],
                   {"padding": padding, "stride": list(stride), "dilation": list(dilation), "groups": groups,
                    "activation": activation})
    y = F.conv2d(to_nchw(feeds["x"]), ohwi_to_oihw(w), T(b), stride, torch_pad, dilation, groups)
    return finish(g, n), feeds, from_nchw(F.relu6(y) if activation == "relu6" else y)


@case
def conv2d_same_relu6():
    return _conv([1, 1, 1, 1], activation="relu6")


@case
def conv2d_valid_strided_dilated():
    return _conv([0, 0, 0, 0], stride=(2, 2), dilation=(2, 1), torch_pad=0)


@case
def conv2d_grouped():
    return _conv([1, 1, 1, 1], groups=2)


@case
def depthwise_multiplier_2_relu():
    g, x, feeds = image_graph()
    w, b = rand(1, 3, 3, 8, seed=2), rand(8, seed=3)
    n = g.add_node("depthwise_conv2d", [x, g.constant("w", w), g.constant("b", b)],
                   {"padding": [1, 1, 1, 1], "multiplier": 2, "activation": "relu"})
    y = F.relu(F.conv2d(to_nchw(feeds["x"]), T(w.transpose(3, 0, 1, 2)), T(b), padding=1, groups=4))
    return finish(g, n), feeds, from_nchw(y)


def _fc(shape, activation):
    g = Graph()
    x = g.add_input("x", shape)
    w, b = rand(5, shape[-1], seed=2), rand(5, seed=3)
    n = g.add_node("fully_connected", [x, g.constant("w", w), g.constant("b", b)], {"activation": activation})
    xv = rand(*shape, seed=1)
    y = F.linear(T(xv), T(w), T(b))
    return finish(g, n), {"x": xv}, (F.relu(y) if activation else y).numpy()


@case
def fully_connected_relu():
    return _fc((2, 6), "relu")


@case
def fully_connected_keeps_leading_axes():
    return _fc((2, 3, 6), None)


def _binary(op, fn, other, activation=None):
    g, x, feeds = image_graph()
    if isinstance(other, np.ndarray):
        b, bv = g.constant("b", other), other
    else:
        b = g.add_input("y", (1, 8, 8, 4), layout="NHWC")
        bv = feeds["y"] = rand(1, 8, 8, 4, seed=9, lo=0.5, hi=2.0)
    n = g.add_node(op, [x, b], {"activation": activation} if activation else {})
    y = fn(T(feeds["x"]), T(bv))
    return finish(g, n), feeds, (F.relu(y) if activation else y).numpy()


@case
def add_broadcast_relu():
    return _binary("add", torch.add, rand(4, seed=4), "relu")


@case
def sub_two_inputs():
    return _binary("sub", torch.sub, None)


@case
def mul_scalar():
    return _binary("mul", torch.mul, np.array(0.75, np.float32))


@case
def div_two_inputs():
    return _binary("div", torch.div, None)


@case
def minimum_constant():
    return _binary("minimum", torch.minimum, rand(1, 1, 1, 4, seed=4))


@case
def maximum_two_inputs():
    return _binary("maximum", torch.maximum, None)


def _unary(op, fn, attrs=None):
    g, x, feeds = image_graph()
    n = g.add_node(op, [x], attrs or {})
    return finish(g, n), feeds, fn(T(feeds["x"])).numpy()


for _op, _fn in [("relu", F.relu), ("relu6", F.relu6), ("sigmoid", torch.sigmoid), ("tanh", torch.tanh),
                 ("hardswish", F.hardswish)]:
    CASES[_op] = lambda op=_op, fn=_fn: _unary(op, fn)
CASES["leaky_relu"] = lambda: _unary("leaky_relu", lambda t: F.leaky_relu(t, 0.1), {"alpha": 0.1})
CASES["clip_n1_to_1"] = lambda: _unary("clip", lambda t: t.clamp(-1, 1), {"min": -1.0, "max": 1.0})
CASES["clip_0_to_1"] = lambda: _unary("clip", lambda t: t.clamp(0, 1), {"min": 0.0, "max": 1.0})


@case
def prelu_per_channel():
    g, x, feeds = image_graph()
    alpha = rand(4, seed=5, lo=0.0, hi=0.5)
    n = g.add_node("prelu", [x, g.constant("alpha", alpha)])
    return finish(g, n), feeds, from_nchw(F.prelu(to_nchw(feeds["x"]), T(alpha)))


@case
def softmax_beta():
    g = Graph()
    x = g.add_input("x", (3, 10))
    n = g.add_node("softmax", [x], {"beta": 0.5})
    xv = rand(3, 10, seed=1, lo=-5, hi=5)
    return finish(g, n), {"x": xv}, torch.softmax(T(xv) * 0.5, -1).numpy()


@case
def max_pool_same():
    g, x, feeds = image_graph()
    n = g.add_node("max_pool2d", [x], {"kernel": [3, 3], "stride": [1, 1], "padding": [1, 1, 1, 1]})
    return finish(g, n), feeds, from_nchw(F.max_pool2d(to_nchw(feeds["x"]), 3, 1, 1))


@case
def max_pool_valid_strided_relu():
    g, x, feeds = image_graph()
    n = g.add_node("max_pool2d", [x], {"kernel": [2, 2], "stride": [2, 2], "activation": "relu"})
    return finish(g, n), feeds, from_nchw(F.relu(F.max_pool2d(to_nchw(feeds["x"]), 2, 2)))


@case
def avg_pool_same():
    g, x, feeds = image_graph()
    n = g.add_node("avg_pool2d", [x], {"kernel": [3, 3], "stride": [1, 1], "padding": [1, 1, 1, 1]})
    y = F.avg_pool2d(to_nchw(feeds["x"]), 3, 1, 1, count_include_pad=False)
    return finish(g, n), feeds, from_nchw(y)


@case
def mean_spatial_keepdims():
    g, x, feeds = image_graph()
    n = g.add_node("mean", [x], {"axes": [1, 2], "keepdims": True})
    return finish(g, n), feeds, from_nchw(to_nchw(feeds["x"]).mean((2, 3), keepdim=True))


@case
def mean_channels_dropped():
    g, x, feeds = image_graph()
    n = g.add_node("mean", [x], {"axes": [-1], "keepdims": False})
    return finish(g, n), feeds, to_nchw(feeds["x"]).mean(1).numpy()


@case
def concat_channels():
    g, x, feeds = image_graph()
    y = g.add_input("y", (1, 8, 8, 2), layout="NHWC")
    feeds["y"] = rand(1, 8, 8, 2, seed=6)
    n = g.add_node("concat", [x, y], {"axis": 3})
    return finish(g, n), feeds, from_nchw(torch.cat([to_nchw(feeds["x"]), to_nchw(feeds["y"])], 1))


@case
def reshape_flatten():
    g, x, feeds = image_graph()
    n = g.add_node("reshape", [x], {"shape": [1, -1]})
    return finish(g, n), feeds, T(feeds["x"]).reshape(1, -1).numpy()


@case
def transpose_to_nchw():
    g, x, feeds = image_graph()
    n = g.add_node("transpose", [x], {"perm": [0, 3, 1, 2]})
    return finish(g, n), feeds, to_nchw(feeds["x"]).numpy()


@case
def pad_zero():
    g, x, feeds = image_graph()
    n = g.add_node("pad", [x], {"pads": [0, 0, 1, 2, 0, 1, 0, 0]})
    return finish(g, n), feeds, from_nchw(F.pad(to_nchw(feeds["x"]), (0, 1, 1, 2)))


@case
def pad_value():
    g, x, feeds = image_graph()
    n = g.add_node("pad", [x], {"pads": [0, 0, 2, 0, 1, 1, 0, 0], "value": -1.5})
    return finish(g, n), feeds, from_nchw(F.pad(to_nchw(feeds["x"]), (1, 1, 2, 0), value=-1.5))


@case
def slice_strided_backwards():
    g, x, feeds = image_graph()
    n = g.add_node("slice", [x], {"starts": [1, 7], "ends": [6, -1], "axes": [1, 2], "steps": [2, -3]})
    return finish(g, n), feeds, T(feeds["x"])[:, 1:6:2].flip(2)[:, :, ::3].numpy()


@case
def split_unequal_channels():
    g, x, feeds = image_graph()
    n = g.add_node("split", [x], {"axis": 3, "sizes": [1, 3]}, n_outputs=2)
    n.name = n.outputs[0].name  # as the reader names a node
    return finish(g, n), feeds, feeds["x"][..., :1]


@case
def resize_bilinear_half_pixel():
    g, x, feeds = image_graph()
    n = g.add_node("resize", [x], {"mode": "bilinear", "size": [12, 6]})
    return finish(g, n), feeds, from_nchw(F.interpolate(to_nchw(feeds["x"]), (12, 6), mode="bilinear"))


@case
def resize_nearest_asymmetric():
    g, x, feeds = image_graph()
    n = g.add_node("resize", [x], {"mode": "nearest", "size": [16, 4], "coordinate_transformation_mode": "asymmetric",
                                   "nearest_mode": "floor"})
    return finish(g, n), feeds, from_nchw(F.interpolate(to_nchw(feeds["x"]), (16, 4), mode="nearest"))


@case
def transpose_conv2d_same_relu():
    """TRANSPOSE_CONV with SAME from 8x8, 3x3 stride 2: the full 17x17 output cropped by one row and column at the
    end (TensorFlow's SAME); torch computes it uncropped, then it is cut."""
    g, x, feeds = image_graph()
    w, b = rand(5, 3, 3, 4, seed=2, lo=-0.5, hi=0.5), rand(5, seed=3)
    n = g.add_node("transpose_conv2d", [x, g.constant("w", w), g.constant("b", b)],
                   {"stride": [2, 2], "padding": [0, 0, 1, 1], "activation": "relu"})
    y = F.conv_transpose2d(to_nchw(feeds["x"]), T(w.transpose(3, 0, 1, 2)), T(b), stride=2)[:, :, :16, :16]
    return finish(g, n), feeds, from_nchw(F.relu(y))


# ---- issue 14, ops-math: math, reductions and data movement (LRN: tests/test_ops_math.py, whose BUILTIN_REF
# window differs from the default kernels') ------------------------------------------------------------------
def _positive(op, fn):
    g, x, _ = image_graph()
    feeds = {"x": rand(1, 8, 8, 4, seed=1, lo=0.1, hi=3.0)}
    return finish(g, g.add_node(op, [x])), feeds, fn(T(feeds["x"])).numpy()


for _op, _fn in [("neg", torch.neg), ("abs", torch.abs), ("square", torch.square), ("exp", torch.exp),
                 ("gelu_none", F.gelu), ("gelu_tanh", lambda t: F.gelu(t, approximate="tanh"))]:
    CASES[_op] = (lambda op=_op, fn=_fn: _unary(op.split("_")[0], fn, {"approximate": op.split("_")[1]})
                  if op.startswith("gelu") else _unary(op, fn))
for _op, _fn in [("sqrt", torch.sqrt), ("rsqrt", torch.rsqrt), ("log", torch.log)]:
    CASES[_op] = lambda op=_op, fn=_fn: _positive(op, fn)
for _op, _fn in [("sum", torch.sum), ("reduce_max", torch.amax), ("reduce_min", torch.amin)]:
    CASES[_op] = lambda op=_op, fn=_fn: _unary(op, lambda t: fn(t, dim=(1, 2), keepdim=True),
                                               {"axes": [1, 2], "keepdims": True})
CASES["tile"] = lambda: _unary("tile", lambda t: t.repeat(1, 2, 1, 3), {"multiples": [1, 2, 1, 3]})
# with 4 channels and blocks of 2, DCR and torch's CRD order agree for depth_to_space (one channel out) and
# differ for space_to_depth (DCR channel (i * 2 + j) * 4 + c is CRD channel c * 4 + i * 2 + j)
CASES["depth_to_space"] = lambda: _unary("depth_to_space", lambda t: T(from_nchw(F.pixel_shuffle(
    to_nchw(t.numpy()), 2))), {"block_size": 2})
CASES["space_to_depth"] = lambda: _unary("space_to_depth", lambda t: T(from_nchw(F.pixel_unshuffle(
    to_nchw(t.numpy()), 2))[..., [0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15]]), {"block_size": 2})
CASES["mirror_pad_reflect"] = lambda: _unary("pad", lambda t: T(from_nchw(F.pad(to_nchw(t.numpy()), (2, 1, 1, 3),
                                                                                 mode="reflect"))),
                                             {"pads": [0, 0, 1, 3, 2, 1, 0, 0], "mode": "reflect"})


@case
def pow_constant():
    g, x, _ = image_graph()
    feeds = {"x": rand(1, 8, 8, 4, seed=1, lo=0.1, hi=3.0)}
    n = g.add_node("pow", [x, g.constant("e", np.array(1.7, np.float32))])
    return finish(g, n), feeds, (T(feeds["x"]) ** 1.7).numpy()


@case
def gather_channels():
    g, x, feeds = image_graph()
    n = g.add_node("gather", [x, g.constant("i", np.array([3, 0, 0], np.int32))], {"axis": 3})
    return finish(g, n), feeds, feeds["x"][..., [3, 0, 0]]


@case
def batch_matmul_broadcast():
    g = Graph()
    x = g.add_input("x", (1, 5, 8))  # 3-D: the reader tags a 4-D graph input NHWC
    b = rand(3, 8, 4, seed=2)
    n = g.add_node("batch_matmul", [x, g.constant("b", b)])
    xv = rand(1, 5, 8, seed=1)
    return finish(g, n), {"x": xv}, np.matmul(xv, b)


@pytest.fixture(scope="module", params=sorted(CASES))
def built(request):
    return request.param, *CASES[request.param]()


def test_litert_and_runtime_match_torch(built):
    name, g, feeds, expected = built
    check_file(g, feeds, expected)


def test_write_then_read_is_identity(built):
    """Legal renaming: none for graphs built with Graph.add_node (a node is named after its first output, as
    the reader names it); parameter tensors (axes, shape, perm, paddings) come back as attributes."""
    name, g, _, _ = built
    assert dumps(read_tflite(write_tflite(g)), inline_constants=True) == dumps(g, inline_constants=True)


def test_every_mapped_op_is_covered():
    from mcc.formats.tflite.opmap import TABLE

    built_ops = set()
    for fn in CASES.values():
        built_ops |= {n.op for n in fn()[0].nodes}
    int8_only = {"quantize", "dequantize"}  # test_quantize_dequantize_edges
    lrn = {"lrn"}  # test_ops_math.py: LiteRT's two kernel sets compute different windows
    assert {m.ir_op for m in TABLE} - int8_only - lrn <= built_ops


def test_quantize_dequantize_edges():
    """Float model I/O around an int8 tensor: QUANTIZE and DEQUANTIZE as LiteRT and mcc's runtime run them."""
    g = Graph("qdq")
    x = g.add_input("x", (1, 4, 4, 2), layout="NHWC")
    q = g.add_node("quantize", [x], {"dtype": "int8"}, name="q")
    q.outputs[0].quant = QuantParams([0.05], [-3])
    d = g.add_node("dequantize", q.outputs, name="d")
    g.outputs = d.outputs
    g.verify()
    data = write_tflite(g)
    back = read_tflite(data)
    assert [n.op for n in back.nodes] == ["quantize", "dequantize"]
    assert back.node("q").outputs[0].quant == QuantParams([0.05], [-3])
    feeds = {"x": rand(1, 4, 4, 2, seed=4, lo=-8, hi=8)}
    want = (np.clip(np.round(feeds["x"] / np.float32(0.05)) - 3, -128, 127) + 3) * np.float32(0.05)
    for kernels in ("ref", "default"):
        got = run_litert(data, feeds, kernels)["d"]
        assert np.abs(got - want).max() <= 0.05 * 1.0001
        assert np.array_equal(got, run(back, feeds, rules="litert-" + ("ref" if kernels == "ref" else "xnnpack"))["d"])


# ---- the file itself -------------------------------------------------------------------------------------
def _small_model():
    g, x, feeds = image_graph()
    c = g.add_node("conv2d", [x, g.constant("w", rand(4, 3, 3, 4, seed=2)), g.constant("b", rand(4, seed=3))],
                   {"padding": [1, 1, 1, 1]})
    k = g.add_node("clip", [c.outputs[0]], {"min": 0.0, "max": 1.0})  # RELU_0_TO_1 has code 152 > 127
    m = g.add_node("mean", [k.outputs[0]], {"axes": [1, 2], "keepdims": False})
    return finish(g, m), feeds


def test_same_graph_gives_identical_bytes():
    g, _ = _small_model()
    data = write_tflite(g)
    assert write_tflite(g) == data
    assert write_tflite(g.copy()) == data
    assert write_tflite(read_tflite(data)) == data


def test_file_layout():
    g, _ = _small_model()
    data = write_tflite(g)
    assert data[4:8] == b"TFL3"
    model = schema.ModelT.InitFromPackedBuf(data, 0)
    assert model.version == 3 and model.description.decode() == f"mcc {__version__}"
    assert model.buffers[0].data is None and len(model.buffers) == 1 + 3  # w, b, mean's axes
    codes = {c.builtinCode: c.deprecatedBuiltinCode for c in model.operatorCodes}
    assert codes == {schema.BuiltinOperator.CONV_2D: schema.BuiltinOperator.CONV_2D,
                     schema.BuiltinOperator.RELU_0_TO_1: 127, schema.BuiltinOperator.MEAN: schema.BuiltinOperator.MEAN}
    sub = model.subgraphs[0]
    names = [t.name.decode() for t in sub.tensors]
    assert names == ["x", "w", "b", "conv2d", "clip", "mean/axes", "mean"]
    raw = schema.Model.GetRootAs(data, 0)
    for i in range(1, raw.BuffersLength()):
        buf = raw.Buffers(i)
        assert buf._tab.Vector(buf._tab.Offset(4)) % 16 == 0, f"buffer {i} is not 16-byte aligned"


def test_quantization_parameters_reach_litert_and_come_back():
    g = Graph()
    x = g.add_input("x", (1, 5, 5, 3), dtype="int8", layout="NHWC")
    x.quant = QuantParams([0.05], [-3])
    w = g.constant("w", np.random.default_rng(0).integers(-127, 128, (4, 3, 3, 3)).astype(np.int8))
    w.quant = QuantParams([0.01, 0.02, 0.03, 0.04], [0, 0, 0, 0], axis=0)
    b = g.constant("b", np.arange(4, dtype=np.int32))
    b.quant = QuantParams(0.05 * w.quant.scale, [0, 0, 0, 0], axis=0)
    n = g.add_node("conv2d", [x, w, b], {"padding": [1, 1, 1, 1]})
    n.outputs[0].quant = QuantParams([0.1], [5])
    data = write_tflite(finish(g, n))
    interp = Interpreter(model_content=data)
    details = {d["name"]: d["quantization_parameters"] for d in interp.get_tensor_details()}
    np.testing.assert_array_equal(details["w"]["scales"], w.quant.scale)
    assert details["w"]["quantized_dimension"] == 0 and list(details["conv2d"]["zero_points"]) == [5]
    back = read_tflite(data)
    for name in ("x", "w", "b", "conv2d"):
        assert back.tensor(name).quant == g.tensor(name).quant, name
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], np.zeros((1, 5, 5, 3), np.int8))
    interp.invoke()  # LiteRT accepts the int8 file as written


def test_quantized_pad_value_is_written_in_the_input_scale():
    g = Graph()
    x = g.add_input("x", (1, 2, 2, 1), dtype="int8", layout="NHWC")
    x.quant = QuantParams([0.5], [-3])
    n = g.add_node("pad", [x], {"pads": [0, 0, 1, 0, 0, 1, 0, 0], "value": -1.5})
    n.outputs[0].quant = x.quant
    data = write_tflite(finish(g, n))
    xv = np.arange(4, dtype=np.int8).reshape(1, 2, 2, 1)
    for kernels in KERNEL_SETS:
        out = run_litert(data, {"x": xv}, kernels)["pad"][0, :, :, 0]
        np.testing.assert_array_equal(out, [[-6, -6, -6], [0, 1, -6], [2, 3, -6]])  # -1.5 / 0.5 - 3 = -6
    assert read_tflite(data).node("pad").attrs["value"] == -1.5


# ---- what the writer refuses -----------------------------------------------------------------------------
def _refused_cases():
    def conv_bad_padding():
        g, x, _ = image_graph()
        return g.add_node("conv2d", [x, g.constant("w", rand(4, 3, 3, 4)), g.constant("b", rand(4))],
                          {"padding": [1, 0, 1, 2]}, name="c1"), "SAME"

    def conv_without_bias():
        g, x, _ = image_graph()
        return g.add_node("conv2d", [x, g.constant("w", rand(4, 3, 3, 4))], {"padding": [1, 1, 1, 1]},
                          name="c1"), "bias"

    def hardsigmoid():
        g, x, _ = image_graph()
        return g.add_node("hardsigmoid", [x], name="c1"), "legalize_tflite"

    def softmax_on_height():
        g, x, _ = image_graph()
        return g.add_node("softmax", [x], {"axis": 1}, name="c1"), "last axis"

    def avg_pool_including_padding():
        g, x, _ = image_graph()
        return g.add_node("avg_pool2d", [x], {"kernel": [3, 3], "stride": [1, 1], "padding": [1, 1, 1, 1],
                                              "count_include_pad": True}, name="c1"), "count_include_pad"

    def clip_other_bounds():
        g, x, _ = image_graph()
        return g.add_node("clip", [x], {"min": 0.0, "max": 6.0}, name="c1"), "legalize_tflite"

    return [conv_bad_padding, conv_without_bias, hardsigmoid, softmax_on_height, avg_pool_including_padding,
            clip_other_bounds]


@pytest.mark.parametrize("make", _refused_cases(), ids=lambda f: f.__name__)
def test_writer_refuses_what_tflite_cannot_express(make):
    node, phrase = make()
    g = Graph()
    g.inputs = [node.inputs[0]]
    g.nodes = [node]
    g.outputs = list(node.outputs)
    with pytest.raises(MccError) as e:
        write_tflite(g)
    assert "'c1'" in str(e.value) and node.op in str(e.value) and phrase in str(e.value)


# ---- what the reader refuses or adapts -------------------------------------------------------------------
def test_reader_rejects_corrupt_files(tmp_path):
    g, _ = _small_model()
    data = write_tflite(g)
    path = tmp_path / "m.tflite"
    wrong_id = data[:4] + b"XXXX" + data[8:]
    truncated = data[:200]
    garbage = bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8))
    for bad in (wrong_id, truncated, garbage[:4] + b"TFL3" + garbage[8:], b""):
        with pytest.raises(MccError) as e:
            read_tflite(bad, path=path)
        assert str(path) in str(e.value)
    assert "TFL3" in str(pytest.raises(MccError, read_tflite, wrong_id, path=path).value)


def _hand_built(ops):
    """A model of unary float operators [(builtin code, custom name or None)] built with the schema alone."""
    model = schema.ModelT()
    model.version = 3
    model.buffers = [schema.BufferT()]
    model.operatorCodes, sub = [], schema.SubGraphT()
    sub.tensors, sub.operators = [], []
    for i in range(len(ops) + 1):
        t = schema.TensorT()
        t.name, t.shape, t.type = f"t{i}", [1, 4], schema.TensorType.FLOAT32
        sub.tensors.append(t)
    for i, (code, custom) in enumerate(ops):
        oc = schema.OperatorCodeT()
        oc.builtinCode, oc.deprecatedBuiltinCode, oc.customCode = code, min(code, 127), custom
        model.operatorCodes.append(oc)
        op = schema.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = i, [i], [i + 1]
        sub.operators.append(op)
    sub.inputs, sub.outputs = [0], [len(ops)]
    model.subgraphs = [sub]
    b = flatbuffers.Builder(0)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def test_reader_names_every_unknown_op_at_once():
    custom = schema.BuiltinOperator.CUSTOM
    data = _hand_built([(custom, b"MyOp"), (schema.BuiltinOperator.RELU, None), (custom, b"MyOp"),
                        (schema.BuiltinOperator.SIN, None), (custom, b"Other")])
    Interpreter(model_content=_hand_built([(schema.BuiltinOperator.RELU, None)]))  # the builder makes real files
    with pytest.raises(MccError) as e:
        read_tflite(data, path="hand.tflite")
    msg = str(e.value)
    assert msg.startswith("hand.tflite: ")
    assert "CUSTOM 'MyOp' (x2)" in msg and "CUSTOM 'Other' (x1)" in msg and "SIN (x1)" in msg
    assert "RELU (x" not in msg


def test_reader_flattens_fully_connected_without_keep_num_dims():
    """Converter files often drop keepNumDims: FULLY_CONNECTED then flattens [2, 3, 6] to [6, 6]."""
    g, feeds, _ = _fc((2, 3, 6), "relu")
    model = schema.ModelT.InitFromPackedBuf(write_tflite(g), 0)
    model.subgraphs[0].operators[0].builtinOptions.keepNumDims = False
    out = model.subgraphs[0].tensors[model.subgraphs[0].outputs[0]]
    out.shape = np.array([6, 5], np.int32)
    b = flatbuffers.Builder(0)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    data = bytes(b.Output())
    back = read_tflite(data)
    assert [n.op for n in back.nodes] == ["reshape", "fully_connected"]
    want = run_litert(data, feeds, "ref")["fully_connected"]
    assert want.shape == (6, 5)
    assert_close(run(back, feeds)["fully_connected"], want, 1e-5, "mcc runtime vs LiteRT ref")


def test_reader_imports_without_torch():
    code = "import sys, mcc.formats.tflite.reader; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
