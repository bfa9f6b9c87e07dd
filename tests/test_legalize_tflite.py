"""legalize_tflite: each rewrite on a hand-built NHWC graph, then the legal graph written, run by LiteRT (default
and reference kernels) against torch on the original semantics, and by mcc's runtime against the unlegalized
graph and against LiteRT on the file read back."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_tflite_backend import T, assert_close, check_file, finish, from_nchw, image_graph, ohwi_to_oihw, rand, to_nchw

from mcc.formats.tflite.writer import write_tflite
from mcc.errors import MccError
from mcc.formats.tflite.reader import read_tflite
from mcc.ir import Graph, QuantParams
from mcc.ir.text import dumps
from mcc.passes.legalize_tflite import legalize_tflite
from mcc.passes.manager import PASSES, run_pipeline
from mcc.runtime import run

INF = float("inf")


def legalize(g):
    legal, records = run_pipeline(g, ["legalize_tflite"])
    return legal, records[0].notes


# Each case: (graph, feeds, torch's answer for the original graph, ops after legalization, extra check or None)
CASES = {}


def case(fn):
    CASES[fn.__name__] = fn
    return fn


def _conv(size, padding, stride, torch_pad, kernel=3, bias=True, groups=1, cout=6):
    """torch_pad: (left, right, top, bottom) as F.pad takes it."""
    g, x, feeds = image_graph((1, size, size, 4))
    w = rand(cout, kernel, kernel, 4 // groups, seed=2, lo=-0.5, hi=0.5)
    b = rand(cout, seed=3) if bias else None
    ins = [x, g.constant("w", w)] + ([g.constant("b", b)] if bias else [])
    n = g.add_node("conv2d", ins, {"padding": padding, "stride": [stride, stride], "groups": groups})
    xp = F.pad(to_nchw(feeds["x"]), torch_pad)
    want = F.conv2d(xp, ohwi_to_oihw(w), None if b is None else T(b), stride, 0, 1, groups)
    return finish(g, n), feeds, from_nchw(want)


def _padding_is(node_op, padding):
    def check(legal):
        node = next(n for n in legal.nodes if n.op == node_op)
        assert node.attrs["padding"] == padding
    return check


@case
def conv_stride1_symmetric_is_same():
    return *_conv(8, [1, 1, 1, 1], 1, (1, 1, 1, 1)), ["conv2d"], _padding_is("conv2d", [1, 1, 1, 1])


@case
def conv_stride2_even_needs_pad():
    """PyTorch pads top/left, TFLite's SAME bottom/right; the bottom/right row no window reaches is dropped."""
    def check(legal):
        assert legal.nodes[0].attrs["pads"] == [0, 0, 1, 0, 1, 0, 0, 0] and legal.nodes[0].attrs["value"] == 0
        _padding_is("conv2d", [0, 0, 0, 0])(legal)
    return *_conv(8, [1, 1, 1, 1], 2, (1, 1, 1, 1)), ["pad", "conv2d"], check


@case
def conv_stride2_odd_is_same():
    return *_conv(7, [1, 1, 1, 1], 2, (1, 1, 1, 1)), ["conv2d"], _padding_is("conv2d", [1, 1, 1, 1])


@case
def conv_bottom_right_padding_is_same():
    return *_conv(5, [0, 0, 1, 1], 1, (0, 1, 0, 1), kernel=2), ["conv2d"], _padding_is("conv2d", [0, 0, 1, 1])


@case
def conv_unreachable_padding_is_valid():
    return *_conv(8, [0, 0, 1, 1], 2, (0, 1, 0, 1), kernel=2), ["conv2d"], _padding_is("conv2d", [0, 0, 0, 0])


@case
def conv_without_bias_gets_zero_bias():
    def check(legal):
        bias = legal.nodes[0].inputs[2]
        assert bias.is_constant and bias.data.shape == (6,) and not bias.data.any()
    return *_conv(8, [1, 1, 1, 1], 1, (1, 1, 1, 1), bias=False), ["conv2d"], check


@case
def conv_one_group_per_channel_becomes_depthwise():
    def check(legal):
        assert legal.nodes[0].attrs["multiplier"] == 2 and legal.nodes[0].inputs[1].shape == (1, 3, 3, 8)
    return *_conv(8, [1, 1, 1, 1], 1, (1, 1, 1, 1), groups=4, cout=8), ["depthwise_conv2d"], check


@case
def grouped_conv_stays_conv():
    def check(legal):
        assert legal.nodes[0].attrs["groups"] == 2
    return *_conv(8, [1, 1, 1, 1], 1, (1, 1, 1, 1), groups=2), ["conv2d"], check


@case
def depthwise_dilated_is_same():
    g, x, feeds = image_graph()
    w, b = rand(1, 3, 3, 4, seed=2), rand(4, seed=3)
    n = g.add_node("depthwise_conv2d", [x, g.constant("w", w), g.constant("b", b)],
                   {"padding": [2, 2, 2, 2], "dilation": [2, 2]})
    want = F.conv2d(to_nchw(feeds["x"]), T(w.transpose(3, 0, 1, 2)), T(b), 1, 2, 2, 4)
    return finish(g, n), feeds, from_nchw(want), ["depthwise_conv2d"], _padding_is("depthwise_conv2d", [2, 2, 2, 2])


def _pool(op, kernel, stride, pad, size=8, count_include_pad=False, activation=None, shift=0.0):
    g, x, _ = image_graph((1, size, size, 4))
    feeds = {"x": rand(1, size, size, 4, seed=1) + np.float32(shift)}
    attrs = {"kernel": [kernel, kernel], "stride": [stride, stride], "padding": [pad] * 4, "activation": activation}
    if op == "avg_pool2d":
        attrs["count_include_pad"] = count_include_pad
        want = F.avg_pool2d(to_nchw(feeds["x"]), kernel, stride, pad, count_include_pad=count_include_pad)
    else:
        want = F.max_pool2d(to_nchw(feeds["x"]), kernel, stride, pad)
    n = g.add_node(op, [x], attrs)
    return finish(g, n), feeds, from_nchw(F.relu(want) if activation else want)


@case
def max_pool_stride2_even_pads_with_lowest():
    """All inputs negative: a zero padding would win the max; the lowest float never does."""
    def check(legal):
        assert np.float32(legal.nodes[0].attrs["value"]) == np.finfo(np.float32).min
    return *_pool("max_pool2d", 3, 2, 1, shift=-10.0), ["pad", "max_pool2d"], check


@case
def max_pool_unpadded_is_valid():
    return *_pool("max_pool2d", 2, 2, 0), ["max_pool2d"], None


@case
def avg_pool_excluding_padding_is_same():
    return *_pool("avg_pool2d", 3, 1, 1), ["avg_pool2d"], _padding_is("avg_pool2d", [1, 1, 1, 1])


@case
def avg_pool_including_padding_pads_with_zero():
    def check(legal):
        assert legal.nodes[1].attrs["count_include_pad"] is False
    return *_pool("avg_pool2d", 3, 1, 1, count_include_pad=True), ["pad", "avg_pool2d"], check


@case
def avg_pool_stride2_even_corrects_the_count():
    """The relu moves from the pool to the correcting mul."""
    def check(legal):
        assert legal.nodes[1].attrs["activation"] is None and legal.nodes[2].attrs["activation"] == "relu"
        count = legal.nodes[2].inputs[1].data
        assert count.shape == (1, 4, 4, 1) and count[0, 0, 0, 0] == np.float32(9 / 4) and count[0, 1, 1, 0] == 1
    return *_pool("avg_pool2d", 3, 2, 1, activation="relu"), ["pad", "avg_pool2d", "mul"], check


def _unary(op, fn, attrs=None, feed_range=(-8.0, 8.0)):
    g, x, _ = image_graph()
    feeds = {"x": rand(1, 8, 8, 4, seed=1, lo=feed_range[0], hi=feed_range[1])}
    n = g.add_node(op, [x], attrs or {})
    return finish(g, n), feeds, fn(T(feeds["x"])).numpy()


@case
def hardsigmoid_is_relu6_then_mul():
    return *_unary("hardsigmoid", F.hardsigmoid), ["add", "mul"], None


@case
def silu_is_sigmoid_times_x():
    return *_unary("silu", F.silu), ["sigmoid", "mul"], None


@case
def identity_is_removed_and_output_keeps_its_name():
    g, x, feeds = image_graph()
    r = g.add_node("relu", [x])
    n = g.add_node("identity", [r.outputs[0]], name="out")

    def check(legal):
        assert [t.name for t in legal.outputs] == ["out"]
    return finish(g, n), feeds, F.relu(T(feeds["x"])).numpy(), ["relu"], check


for _lo, _hi, _ops in [(0.0, 6.0, ["relu6"]), (0.0, INF, ["relu"]), (-1.0, 1.0, ["clip"]), (0.0, 1.0, ["clip"]),
                       (-0.5, 2.0, ["maximum", "minimum"]), (-INF, 2.0, ["minimum"]), (-0.5, INF, ["maximum"])]:
    CASES[f"clip_{_lo}_{_hi}"] = lambda lo=_lo, hi=_hi, ops=_ops: (
        *_unary("clip", lambda t: t.clamp(lo, hi), {"min": lo, "max": hi}), ops, None)


@case
def batch_norm_is_mul_add():
    g, x, feeds = image_graph()
    stats = [rand(4, seed=s) for s in (4, 5, 6, 7)]
    stats[1] = np.abs(stats[1]) + np.float32(0.1)
    n = g.add_node("batch_norm", [x] + [g.constant(k, v) for k, v in zip(("mean", "var", "gamma", "beta"), stats)])
    want = F.batch_norm(to_nchw(feeds["x"]), *(T(s) for s in stats[:2]), T(stats[2]), T(stats[3]), eps=1e-5)
    return finish(g, n), feeds, from_nchw(want), ["mul", "add"], None


@case
def softmax_over_height_is_transposed():
    g, x, feeds = image_graph()
    n = g.add_node("softmax", [x], {"axis": 1, "beta": 2.0})

    def check(legal):
        assert legal.nodes[0].attrs["perm"] == [0, 3, 2, 1] and legal.nodes[1].attrs == {"axis": -1, "beta": 2.0}
    want = torch.softmax(T(feeds["x"]) * 2.0, 1).numpy()
    return finish(g, n), feeds, want, ["transpose", "softmax", "transpose"], check


@pytest.fixture(scope="module", params=sorted(CASES))
def legalized(request):
    g, feeds, want, ops, check = CASES[request.param]()
    legal, notes = legalize(g)
    return g, feeds, want, ops, check, legal, notes


def test_rewrites_into_the_expected_ops(legalized):
    g, _, _, ops, check, legal, notes = legalized
    assert [n.op for n in legal.nodes] == ops
    if check is not None:
        check(legal)
    assert notes or [n.op for n in g.nodes] == ops  # every rewrite is counted in the pass notes


def test_legal_graph_computes_what_the_original_did(legalized):
    g, feeds, want, _, _, legal, _ = legalized
    out = g.outputs[0].name
    assert_close(run(legal, feeds)[legal.outputs[0].name], run(g, feeds)[out], 1e-5, "runtime: legal vs original")
    check_file(legal, feeds, want)


def as_read_back(g):
    """`g` with the reader's documented renaming: a node is named after its first output, and a 4-D TRANSPOSE or
    RESHAPE output that no spatial op reads has no layout (a .tflite file does not say how its axes are named)."""
    g = g.copy()
    spatial_inputs = {id(n.inputs[0]) for n in g.nodes if n.op in ("conv2d", "depthwise_conv2d", "max_pool2d",
                                                                   "avg_pool2d")}
    for n in g.nodes:
        n.name = n.outputs[0].name
        if n.op in ("transpose", "reshape") and id(n.outputs[0]) not in spatial_inputs:
            n.outputs[0].layout = None
    return dumps(g, inline_constants=True)


def test_legal_graph_round_trips_and_is_a_fixed_point(legalized):
    *_, legal, _ = legalized
    assert dumps(read_tflite(write_tflite(legal)), inline_constants=True) == as_read_back(legal)
    assert dumps(legalize(legal)[0], inline_constants=True) == dumps(legal, inline_constants=True)


def test_pass_is_registered_with_its_preconditions():
    assert PASSES["legalize_tflite"].run is legalize_tflite
    assert PASSES["legalize_tflite"].requires == ("float", "nhwc")


def test_refuses_nchw_graphs():
    g = Graph()
    x = g.add_input("x", (1, 4, 8, 8), layout="NCHW")
    finish(g, g.add_node("relu", [x]))
    with pytest.raises(MccError, match="legalize_tflite needs a graph that is nhwc, but 'x' is NCHW; run to_nhwc"):
        run_pipeline(g, ["legalize_tflite"])


def test_refuses_quantized_graphs():
    g, x, _ = image_graph()
    x.quant = QuantParams([0.1], [0])
    finish(g, g.add_node("hardsigmoid", [x]))
    with pytest.raises(MccError, match="legalize_tflite needs a graph that is float, but 'x' is quantized already"):
        run_pipeline(g, ["legalize_tflite"])
