"""The float runtime against torch.nn.functional: every IR op, both layouts, on random data."""

import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mcc.errors import MccError
from mcc.ir import OPS, Graph
from mcc.runtime import evaluate_node, run
from mcc.runtime.kernels import KERNELS

LAYOUTS = ["NCHW", "NHWC"]
ACT = {None: lambda t: t, "relu": F.relu, "relu6": F.relu6, "relu_n1_to_1": lambda t: t.clamp(-1, 1)}


def rand(*shape, seed=0, lo=-2.0, hi=2.0):
    return np.random.default_rng(seed).uniform(lo, hi, shape).astype(np.float32)


def to_layout(a, layout):
    """NCHW data as the graph holds it in `layout`."""
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)) if layout == "NHWC" and a.ndim == 4 else a


def from_layout(a, layout):
    return a.transpose(0, 3, 1, 2) if layout == "NHWC" and a.ndim == 4 else a


def assert_close(ours, ref):
    ref = ref.detach().numpy() if isinstance(ref, torch.Tensor) else ref
    assert ours.dtype == np.float32
    assert ours.shape == ref.shape
    scale = max(float(np.abs(ref).max()), 1e-6)
    err = float(np.abs(ours.astype(np.float64) - ref).max())
    assert err <= 1e-5 * scale, f"max error {err} exceeds 1e-5 of the output range {scale}"


def run_op(op, x, attrs, consts=(), layout="NCHW"):
    """One `op` node over graph input x (given as NCHW, held in `layout`) and constant inputs (already in
    the layout's convention; None for an absent optional input); returns the output back in NCHW."""
    g = Graph()
    feed = to_layout(x, layout)
    t = g.add_input("x", feed.shape, layout=layout if x.ndim == 4 else None)
    ins = [t] + [None if c is None else g.constant(f"c{i}", c) for i, c in enumerate(consts)]
    node = g.add_node(op, ins, attrs)
    g.outputs = list(node.outputs)
    g.verify()
    return from_layout(run(g, {"x": feed})[node.outputs[0].name], layout)


def T(a):
    return torch.from_numpy(np.ascontiguousarray(a))


def test_every_ir_op_has_a_kernel():
    from mcc.runtime.kernels.int8_registry import INT8_KERNELS

    float_only = sorted(op for op in OPS if op not in ("quantize", "dequantize"))
    assert sorted(KERNELS) == float_only
    assert {"quantize", "dequantize"} <= set(INT8_KERNELS)


# (in_ch, out_ch, kernel, stride, padding [t,l,b,r], dilation, groups, bias, activation)
CONV_CASES = [
    (3, 5, (3, 3), (1, 1), [1, 1, 1, 1], (1, 1), 1, True, None),
    (3, 4, (3, 3), (2, 2), [0, 0, 1, 1], (1, 1), 1, False, "relu6"),
    (4, 6, (3, 3), (1, 2), [2, 1, 2, 1], (2, 2), 2, True, "relu"),
    (6, 6, (2, 3), (2, 1), [1, 0, 0, 2], (1, 2), 3, True, "relu_n1_to_1"),
    (5, 7, (1, 1), (1, 1), [0, 0, 0, 0], (1, 1), 1, True, None),
]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("cin,cout,k,stride,pad,dil,groups,has_bias,act", CONV_CASES)
def test_conv2d(layout, cin, cout, k, stride, pad, dil, groups, has_bias, act):
    x = rand(2, cin, 9, 8, seed=1)
    w = rand(cout, cin // groups, *k, seed=2, lo=-0.5, hi=0.5)
    b = rand(cout, seed=3) if has_bias else None
    attrs = {"stride": list(stride), "padding": pad, "dilation": list(dil), "groups": groups, "activation": act}
    ours = run_op("conv2d", x, attrs, [to_layout(w, layout), b], layout)
    t, l, bo, r = pad
    ref = F.conv2d(F.pad(T(x), (l, r, t, bo)), T(w), None if b is None else T(b), stride, 0, dil, groups)
    assert_close(ours, ACT[act](ref))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("mult,stride,pad,dil,act", [
    (1, (1, 1), [1, 1, 1, 1], (1, 1), "relu6"),
    (2, (2, 2), [1, 1, 0, 0], (1, 1), None),
    (3, (1, 2), [2, 0, 1, 2], (2, 1), "relu"),
])
def test_depthwise_conv2d(layout, mult, stride, pad, dil, act):
    c = 4
    x = rand(1, c, 10, 9, seed=4)
    w = rand(c * mult, 1, 3, 3, seed=5)
    b = rand(c * mult, seed=6)
    w_l = w.transpose(1, 2, 3, 0) if layout == "NHWC" else w  # [1,kh,kw,C*m] under NHWC
    attrs = {"stride": list(stride), "padding": pad, "dilation": list(dil), "multiplier": mult, "activation": act}
    ours = run_op("depthwise_conv2d", x, attrs, [w_l, b], layout)
    t, l, bo, r = pad
    ref = F.conv2d(F.pad(T(x), (l, r, t, bo)), T(w), T(b), stride, 0, dil, c)
    assert_close(ours, ACT[act](ref))


@pytest.mark.parametrize("shape,has_bias,act", [((3, 17), True, None), ((2, 3, 17), False, "relu"),
                                                ((4, 17), True, "relu6")])
def test_fully_connected(shape, has_bias, act):
    x, w = rand(*shape, seed=7), rand(6, 17, seed=8)
    b = rand(6, seed=9) if has_bias else None
    ours = run_op("fully_connected", x, {"activation": act}, [w, b])
    assert_close(ours, ACT[act](F.linear(T(x), T(w), None if b is None else T(b))))


BINARY = {"add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("op", sorted(BINARY))
@pytest.mark.parametrize("other_shape,act", [((1, 3, 1, 1), None), ((2, 3, 4, 5), "relu"), ((1, 1, 4, 1), "relu6")])
def test_binary_broadcasting(layout, op, other_shape, act):
    x = rand(2, 3, 4, 5, seed=10)
    y = rand(*other_shape, seed=11, lo=0.5, hi=2.0) * np.where(rand(*other_shape, seed=12) > 0, 1, -1).astype(np.float32)
    ours = run_op(op, x, {"activation": act}, [to_layout(y, layout)], layout)
    assert_close(ours, ACT[act](BINARY[op](T(x), T(y))))


def test_binary_trailing_axis_broadcast_nhwc():
    x, y = rand(2, 3, 4, 5, seed=13), rand(3, seed=14)
    ours = run_op("add", x, {}, [y], "NHWC")  # NHWC [2,4,5,3] + [3] adds per channel
    assert_close(ours, T(x) + T(y).reshape(1, 3, 1, 1))


UNARY = [
    ("relu", {}, F.relu), ("relu6", {}, F.relu6), ("sigmoid", {}, torch.sigmoid), ("tanh", {}, torch.tanh),
    ("hardswish", {}, F.hardswish), ("hardsigmoid", {}, F.hardsigmoid), ("silu", {}, F.silu),
    ("identity", {}, lambda t: t), ("leaky_relu", {"alpha": 0.1}, lambda t: F.leaky_relu(t, 0.1)),
    ("clip", {"min": -0.5, "max": 1.5}, lambda t: t.clamp(-0.5, 1.5)),
]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("op,attrs,ref", UNARY, ids=[u[0] for u in UNARY])
def test_unary(layout, op, attrs, ref):
    x = rand(2, 3, 4, 5, seed=15, lo=-8, hi=8)
    assert_close(run_op(op, x, attrs, (), layout), ref(T(x)))


def test_sigmoid_saturates_without_overflow():
    x = np.array([-200.0, -90.0, 0.0, 90.0], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's overflow warning would become an error here
        assert_close(run_op("sigmoid", x, {}), torch.sigmoid(T(x)))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_prelu(layout):
    x, alpha = rand(2, 3, 4, 5, seed=16), rand(3, seed=17, lo=0, hi=0.5)
    a = alpha if layout == "NHWC" else alpha.reshape(3, 1, 1)  # broadcast against the physical shape
    assert_close(run_op("prelu", x, {}, [a], layout), F.prelu(T(x), T(alpha)))


@pytest.mark.parametrize("shape,axis,beta", [((2, 3, 4, 5), -1, 1.0), ((2, 3, 4, 5), 1, 0.5), ((4, 10), -1, 2.0)])
def test_softmax(shape, axis, beta):
    x = rand(*shape, seed=18, lo=-5, hi=5)
    assert_close(run_op("softmax", x, {"axis": axis, "beta": beta}), F.softmax(T(x) * beta, dim=axis))


@pytest.mark.parametrize("layout", LAYOUTS + [None])
def test_batch_norm(layout):
    x = rand(2, 3, 4, 5, seed=19) if layout else rand(4, 3, seed=19)
    mean, var, weight, bias = rand(3, seed=20), rand(3, seed=21, lo=0.1, hi=2), rand(3, seed=22), rand(3, seed=23)
    ours = run_op("batch_norm", x, {"eps": 1e-3}, [mean, var, weight, bias], layout or "NCHW")
    ref = F.batch_norm(T(x), T(mean), T(var), T(weight), T(bias), training=False, eps=1e-3)
    assert_close(ours, ref)


# (kernel, stride, padding [t,l,b,r], activation)
POOL_CASES = [((2, 2), (2, 2), [0, 0, 0, 0], None), ((3, 3), (2, 2), [1, 1, 1, 1], "relu"),
              ((3, 2), (1, 2), [0, 1, 2, 0], "relu6"), ((3, 3), (3, 3), [1, 0, 1, 1], None)]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("k,stride,pad,act", POOL_CASES)
def test_max_pool2d(layout, k, stride, pad, act):
    x = rand(2, 3, 9, 8, seed=24) - 3  # mostly negative: a padded zero must never win
    ours = run_op("max_pool2d", x, {"kernel": list(k), "stride": list(stride), "padding": pad, "activation": act},
                  (), layout)
    t, l, b, r = pad
    ref = F.max_pool2d(F.pad(T(x), (l, r, t, b), value=-np.inf), k, stride)
    assert_close(ours, ACT[act](ref))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("include_pad", [False, True])
@pytest.mark.parametrize("k,stride,pad,act", POOL_CASES)
def test_avg_pool2d(layout, include_pad, k, stride, pad, act):
    x = rand(2, 3, 9, 8, seed=25)
    attrs = {"kernel": list(k), "stride": list(stride), "padding": pad, "activation": act,
             "count_include_pad": include_pad}
    ours = run_op("avg_pool2d", x, attrs, (), layout)
    t, l, b, r = pad
    window_sum = F.avg_pool2d(F.pad(T(x), (l, r, t, b)), k, stride) * (k[0] * k[1])
    count = F.avg_pool2d(F.pad(torch.ones_like(T(x)), (l, r, t, b)), k, stride) * (k[0] * k[1])
    ref = window_sum / (k[0] * k[1]) if include_pad else window_sum / count
    assert_close(ours, ACT[act](ref))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("keepdims", [True, False])
def test_mean_over_spatial_axes(layout, keepdims):
    x = rand(2, 3, 4, 5, seed=26)
    axes = [1, 2] if layout == "NHWC" else [2, 3]
    g = Graph()
    t = g.add_input("x", to_layout(x, layout).shape, layout=layout)
    node = g.add_node("mean", [t], {"axes": axes, "keepdims": keepdims})
    g.outputs = list(node.outputs)
    ours = run(g, {"x": to_layout(x, layout)})["mean"]
    ref = T(to_layout(x, layout)).mean(dim=axes, keepdim=keepdims)
    assert_close(ours, ref)


def test_mean_negative_axis():
    x = rand(3, 4, 6, seed=27)
    assert_close(run_op("mean", x, {"axes": [-1, 0], "keepdims": False}), T(x).mean(dim=(0, 2)))


@pytest.mark.parametrize("axis", [1, -1, 0])
def test_concat_with_a_constant(axis):
    x, c = rand(2, 3, 4, seed=28), rand(2, 3, 4, seed=29)
    assert_close(run_op("concat", x, {"axis": axis}, [c]), torch.cat([T(x), T(c)], dim=axis))


def test_reshape_and_transpose():
    x = rand(2, 3, 4, 5, seed=30)
    assert_close(run_op("reshape", x, {"shape": [2, -1, 5]}), T(x).reshape(2, -1, 5))
    assert_close(run_op("transpose", x, {"perm": [0, 2, 3, 1]}), T(x).permute(0, 2, 3, 1))


def test_pad_with_value():
    x = rand(2, 3, 4, seed=31)
    ours = run_op("pad", x, {"pads": [0, 1, 2, 0, 1, 3], "value": -1.5})
    assert_close(ours, F.pad(T(x), (1, 3, 2, 0, 0, 1), value=-1.5))


def build_net(layout):
    """x -> conv(relu) -> batch_norm -> depthwise -> add(residual) -> max_pool -> mean -> fc -> softmax,
    with its torch twin."""
    ws = {"conv": rand(4, 3, 3, 3, seed=40, lo=-0.5, hi=0.5), "conv_b": rand(4, seed=41),
          "bn": [rand(4, seed=42), rand(4, seed=43, lo=0.5, hi=1.5), rand(4, seed=44), rand(4, seed=45)],
          "dw": rand(4, 1, 3, 3, seed=46, lo=-0.5, hi=0.5), "fc": rand(5, 4, seed=47), "fc_b": rand(5, seed=48)}
    nhwc = layout == "NHWC"
    g = Graph("net")
    x = g.add_input("x", (1, 10, 10, 3) if nhwc else (1, 3, 10, 10), layout=layout)
    conv = g.add_node("conv2d", [x, g.constant("conv.w", to_layout(ws["conv"], layout)), g.constant("conv.b", ws["conv_b"])],
                      {"padding": [1, 1, 1, 1], "activation": "relu"}, name="conv")
    bn = g.add_node("batch_norm", [conv.outputs[0]] + [g.constant(f"bn.{i}", a) for i, a in enumerate(ws["bn"])],
                    name="bn")
    dw = g.add_node("depthwise_conv2d", [bn.outputs[0], g.constant("dw.w", ws["dw"].transpose(1, 2, 3, 0) if nhwc else ws["dw"])],
                    {"padding": [1, 1, 1, 1]}, name="dw")
    add = g.add_node("add", [dw.outputs[0], bn.outputs[0]], {"activation": "relu6"}, name="add")
    pool = g.add_node("max_pool2d", [add.outputs[0]], {"kernel": [2, 2], "stride": [2, 2]}, name="pool")
    mean = g.add_node("mean", [pool.outputs[0]], {"axes": [1, 2] if nhwc else [2, 3], "keepdims": False}, name="gap")
    fc = g.add_node("fully_connected", [mean.outputs[0], g.constant("fc.w", ws["fc"]), g.constant("fc.b", ws["fc_b"])],
                    name="fc")
    sm = g.add_node("softmax", [fc.outputs[0]], {"axis": -1}, name="prob")
    g.outputs = list(sm.outputs)
    g.verify()

    def torch_net(xt):
        y = F.relu(F.conv2d(xt, T(ws["conv"]), T(ws["conv_b"]), padding=1))
        y = F.batch_norm(y, *(T(a) for a in ws["bn"][:2]), T(ws["bn"][2]), T(ws["bn"][3]), training=False)
        y = F.relu6(F.conv2d(y, T(ws["dw"]), padding=1, groups=4) + y)
        y = F.max_pool2d(y, 2, 2).mean(dim=(2, 3))
        return F.softmax(F.linear(y, T(ws["fc"]), T(ws["fc_b"])), dim=-1)

    return g, torch_net


@pytest.mark.parametrize("layout", LAYOUTS)
def test_multi_node_graph_matches_torch(layout):
    g, torch_net = build_net(layout)
    x = rand(1, 3, 10, 10, seed=49)
    out = run(g, {"x": to_layout(x, layout)})
    assert list(out) == ["prob"]
    assert_close(out["prob"], torch_net(T(x)))


def test_keep_all_returns_every_tensor_and_leaves_the_graph_alone():
    g, _ = build_net("NHWC")
    g.nodes.reverse()  # not in execution order: run must schedule, without reordering the caller's graph
    order = [n.name for n in g.nodes]
    feeds = {"x": to_layout(rand(1, 3, 10, 10, seed=50), "NHWC")}
    values = run(g, feeds, keep_all=True)
    assert [n.name for n in g.nodes] == order
    assert sorted(values) == sorted(t.name for t in g.tensors())
    for n in g.nodes:
        (expected,) = evaluate_node(n, [values[t.name] for t in n.inputs])
        np.testing.assert_array_equal(values[n.outputs[0].name], expected)
        assert values[n.outputs[0].name].shape == n.outputs[0].shape
    np.testing.assert_array_equal(values["prob"], run(g, feeds)["prob"])
    np.testing.assert_array_equal(values["conv.w"], g.tensor("conv.w").data)


def test_same_input_gives_the_same_output():
    g, _ = build_net("NCHW")
    feeds = {"x": rand(1, 3, 10, 10, seed=51)}
    a, b = run(g, feeds, keep_all=True), run(g, feeds, keep_all=True)
    assert list(a) == list(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


@pytest.mark.parametrize("feeds,needles", [
    ({}, ["'x'", "float32[1,3,10,10]", "not given"]),
    ({"x": np.zeros((1, 3, 10, 9), np.float32)}, ["'x'", "float32[1,3,10,10]", "float32[1,3,10,9]"]),
    ({"x": np.zeros((1, 3, 10, 10))}, ["'x'", "float32[1,3,10,10]", "float64[1,3,10,10]"]),
    ({"x": np.zeros((1, 3, 10, 10), np.float32), "y": np.zeros(1)}, ["'y'", "x"]),
])
def test_bad_feeds_name_the_input_and_both_types(feeds, needles):
    g, _ = build_net("NCHW")
    with pytest.raises(MccError) as e:
        run(g, feeds)
    for s in needles:
        assert s in str(e.value)


def test_stale_shapes_are_reported():
    g = Graph()
    x = g.add_input("x", (1, 2, 6, 6), layout="NCHW")
    node = g.add_node("max_pool2d", [x], {"kernel": [2, 2], "stride": [2, 2]}, name="pool")
    g.outputs = list(node.outputs)
    node.attrs["stride"] = [1, 1]  # edited without infer_shapes
    with pytest.raises(MccError, match="pool.*infer_shapes"):
        run(g, {"x": rand(1, 2, 6, 6)})


def test_unknown_op_and_non_float_inputs_are_refused():
    g = Graph()
    x = g.add_input("x", (1, 4), layout=None)
    node = g.add_node("fully_connected", [x, g.constant("w", np.ones((2, 4), np.int8))], name="fc")
    with pytest.raises(MccError, match="fc.*float32.*int8"):
        evaluate_node(node, [np.ones((1, 4), np.float32), np.ones((2, 4), np.int8)])
    node.op = "lstm"
    with pytest.raises(MccError, match="no kernel for op 'lstm'"):
        evaluate_node(node, [np.ones((1, 4), np.float32)])


def test_runtime_imports_without_torch_or_onnxruntime():
    code = "import sys, mcc.runtime; print(sorted(m for m in ('torch', 'onnxruntime') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
