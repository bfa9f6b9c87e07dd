"""fuse_activations: which activations fold into their producer, which stay, and that nothing changes numerically."""

from __future__ import annotations

import numpy as np

from mcc.ir import QuantParams
from mcc.passes import run_pipeline
from test_passes_common import Builder, assert_equivalent, ops


def fuse(graph, **options):
    out, records = run_pipeline(graph, ["fuse_activations"], options)
    assert_equivalent(graph, out)
    return out, records[0].notes


def test_each_fusable_pair_fuses():
    b = Builder()
    x = b.input("x", (1, 3, 6, 6))
    h = b.op("relu", [b.conv(x, 4, name="c")])
    h = b.op("relu6", [b.dwconv(h, name="dw")])
    h = b.op("clip", [b.op("add", [h, b.const("k", b.rand(4, 1, 1) * 4)], "add")], min=0.0, max=6.0)
    h = b.op("clip", [b.op("mul", [h, b.const("s", b.rand(1) * 0.3)], "mul")], min=-1, max=1)
    h = b.op("relu", [b.op("max_pool2d", [h], "pool", kernel=[2, 2], stride=[2, 2])])
    h = b.op("relu6", [b.op("avg_pool2d", [h], "avg", kernel=[3, 3], stride=[1, 1], padding=[1, 1, 1, 1])])
    h = b.op("relu", [b.op("sub", [h, b.const("o", b.rand(4, 1, 1))], "sub")])
    h = b.op("relu6", [b.op("div", [h, b.const("d", b.rand(4, 1, 1, positive=True))], "div")])
    f = b.op("relu", [b.fc(b.op("reshape", [h], "flat", shape=[1, 36]), 5, name="fc")], "last")
    out, notes = fuse(b.done(f))
    assert ops(out) == ["conv2d", "depthwise_conv2d", "add", "mul", "max_pool2d", "avg_pool2d", "sub", "div",
                        "reshape", "fully_connected"]
    acts = {n.name: n.attrs["activation"] for n in out.nodes if "activation" in n.attrs}
    assert acts == {"c": "relu", "dw": "relu6", "add": "relu6", "mul": "relu_n1_to_1", "pool": "relu",
                    "avg": "relu6", "sub": "relu", "div": "relu6", "fc": "relu"}
    assert notes["fused"] == 9 and out.outputs[0].name == "last"


def test_activations_that_must_stay():
    b = Builder(1)
    x = b.input("x", (1, 2, 4, 4))
    shared = b.conv(x, 3, name="shared")  # read by the relu and by the add
    a = b.op("relu", [shared], "r_shared")
    out_read = b.conv(x, 3, name="exposed")  # a graph output itself
    b_ = b.op("relu", [out_read], "r_exposed")
    done = b.conv(x, 3, name="done", activation="relu6")  # already has an activation
    c = b.op("relu", [done], "r_done")
    d = b.op("clip", [b.conv(x, 3, name="c3")], "clip03", min=0.0, max=3.0)  # no fused form
    e = b.op("relu", [b.op("mean", [x], "m", axes=[1], keepdims=True)], "r_mean")  # mean takes no activation
    f = b.op("sigmoid", [b.conv(x, 3, name="c4")], "sig")
    g = b.done(b.op("add", [a, shared], "sum"), out_read, b_, c, d, e, f)
    out, notes = fuse(g)
    assert notes == {} and ops(out).count("relu") == 4 and "clip" in ops(out)


def test_target_option_restricts_the_fusable_ops():
    b = Builder(2)
    x = b.input("x", (1, 2, 4, 4))
    y = b.op("relu", [b.op("add", [b.conv(x, 2, name="c"), x], "add")], "r_add")
    g = b.done(b.op("relu", [b.conv(y, 2, name="c2")], "r_c2"))
    out, notes = fuse(g, fusable_ops={"conv2d"})
    assert ops(out) == ["conv2d", "add", "relu", "conv2d"] and notes == {"fused": 1, "fused_relu": 1}


def test_fused_op_takes_over_the_activation_output_quantization():
    b = Builder(3)
    c = b.conv(b.input("x", (1, 2, 4, 4)), 2, name="c")
    r = b.op("relu6", [c], "r")
    c.quant, r.quant = QuantParams(0.1, -3), QuantParams(6 / 255, -128)
    out, _ = fuse(b.done(r))
    assert out.outputs[0].name == "r" and out.outputs[0].quant == QuantParams(np.float32(6 / 255), -128)
