"""fold_batchnorm, fold_constants and eliminate_dead: structural effect and numerical equivalence."""

from __future__ import annotations

import numpy as np
import pytest

from mcc.errors import MccError
from mcc.ir.text import dumps
from mcc.passes import run_pipeline
from test_passes_common import Builder, assert_equivalent, ops


def apply(graph, *names):
    out, records = run_pipeline(graph, list(names))
    assert_equivalent(graph, out, next((r.notes["io_layout"] for r in records if r.name == "to_nhwc"), None))
    return out, records[-1].notes


# ---- fold_batchnorm -----------------------------------------------------------------------------------------

def test_bn_after_conv_without_bias_folds_and_creates_the_bias():
    b = Builder()
    g = b.done(b.op("relu", [b.bn(b.conv(b.input("x", (2, 3, 5, 5)), 4, bias=False, name="c"))]))
    out, notes = apply(g, "fold_batchnorm")
    assert ops(out) == ["conv2d", "relu"] and notes == {"folded": 1}
    conv = out.node("c")
    assert conv.inputs[2].shape == (4,) and conv.inputs[1].dtype == "float32" and conv.inputs[2].dtype == "float32"
    assert g.tensor("c.weight").data is not conv.inputs[1].data  # replaced, never written into


def test_fold_is_done_in_float64():
    b = Builder(1)
    x = b.input("x", (1, 2, 3, 3))
    c = b.conv(x, 2, name="c")
    g = b.done(b.bn(c))
    w, bias = g.tensor("c.weight").data.astype(np.float64), g.tensor("c.bias").data.astype(np.float64)
    mean, var, gamma, beta = (g.tensor(f"bn.{k}").data.astype(np.float64) for k in ("mean", "var", "weight", "bias"))
    scale = gamma / np.sqrt(var + 1e-3)
    out, _ = apply(g, "fold_batchnorm")
    assert np.array_equal(out.node("c").inputs[1].data, (w * scale[:, None, None, None]).astype(np.float32))
    assert np.array_equal(out.node("c").inputs[2].data, ((bias - mean) * scale + beta).astype(np.float32))


def test_bn_after_depthwise_multiplier_2_and_after_fc_fold():
    b = Builder(2)
    d = b.bn(b.dwconv(b.input("x", (2, 3, 6, 6)), multiplier=2, name="dw"), name="bn_dw")
    f = b.bn(b.fc(b.input("z", (4, 5)), 6, name="fc"), name="bn_fc")
    out, notes = apply(b.done(d, f), "fold_batchnorm")
    assert "batch_norm" not in ops(out) and notes["folded"] == 2
    assert [t.name for t in out.outputs] == ["bn_dw", "bn_fc"]  # the folded op's output takes the name


def test_bn_after_nhwc_depthwise_folds_along_the_last_weight_axis():
    b = Builder(3)
    g = b.done(b.bn(b.dwconv(b.input("x", (1, 2, 5, 5)), multiplier=2, name="dw")))
    out, notes = apply(g, "to_nhwc", "fold_batchnorm")
    assert ops(out) == ["depthwise_conv2d"] and notes["folded"] == 1


def test_bn_without_conv_becomes_mul_add_shaped_for_its_layout():
    b = Builder(4)
    x = b.input("x", (2, 3, 4, 4))
    g = b.done(b.bn(b.op("sigmoid", [x])))
    out, notes = apply(g, "fold_batchnorm")
    assert ops(out) == ["sigmoid", "mul", "add"] and notes == {"lowered_to_mul_add": 1}
    assert out.node("bn.mul").inputs[1].shape == (1, 3, 1, 1) and out.outputs[0].name == "bn"
    out, _ = apply(g, "to_nhwc", "fold_batchnorm")
    assert out.node("bn.add").inputs[1].shape == (1, 1, 1, 3)


def test_bn_on_a_sequence_uses_axis_1():
    b = Builder(5)
    g = b.done(b.bn(b.input("x", (2, 3, 7))))
    out, _ = apply(g, "fold_batchnorm")
    assert out.node("bn.mul").inputs[1].shape == (1, 3, 1)


@pytest.mark.parametrize("case", ["two_readers", "graph_output", "fused_activation", "fc_3d"])
def test_bn_that_cannot_fold_is_lowered(case):
    b = Builder(6)
    if case == "fc_3d":  # FC features are the last axis, the batch norm's channels axis 1
        c = b.fc(b.input("z", (2, 4, 3)), 5, name="c")
    else:
        c = b.conv(b.input("x", (1, 2, 4, 4)), 3, name="c",
                   activation="relu" if case == "fused_activation" else None)
    outputs = [b.bn(c)]
    if case == "two_readers":
        outputs.append(b.op("tanh", [c]))
    elif case == "graph_output":
        outputs.append(c)
    out, notes = apply(b.done(*outputs), "fold_batchnorm")
    assert notes == {"lowered_to_mul_add": 1} and "batch_norm" not in ops(out)


def test_conv_weight_shared_by_two_folded_convs_stays_intact_for_each():
    b = Builder(7)
    x = b.input("x", (1, 2, 4, 4))
    w = b.const("shared", b.rand(3, 2, 3, 3))
    c1 = b.op("conv2d", [x, w], "c1", padding=[1, 1, 1, 1])
    c2 = b.op("conv2d", [x, w], "c2", padding=[1, 1, 1, 1])
    out, notes = apply(b.done(b.bn(c1, name="bn1"), b.bn(c2, name="bn2")), "fold_batchnorm")
    assert notes["folded"] == 2 and out.node("c1").inputs[1] is not out.node("c2").inputs[1]


def test_bn_with_variable_statistics_is_refused():
    b = Builder(8)
    x = b.input("x", (2, 3))
    m = b.input("m", (3,))
    c = b.const("one", np.ones(3))
    b.g.add_node("batch_norm", [x, m, c, c, c], name="bn_train")
    g = b.done(b.g.nodes[-1].outputs[0])
    with pytest.raises(MccError, match="bn_train.*eval mode"):
        run_pipeline(g, ["fold_batchnorm"])


# ---- fold_constants -----------------------------------------------------------------------------------------

def test_constant_subgraph_is_evaluated_into_one_constant():
    b = Builder(9)
    x = b.input("x", (2, 4))
    k = b.op("mul", [b.const("a", b.rand(4)), b.const("s", b.rand(4))], "k")
    k = b.op("relu", [b.op("add", [k, b.const("one", np.ones(4))], "k2")], "k3")
    k = b.op("reshape", [b.op("transpose", [b.const("m", b.rand(4, 1)), ], "mt", perm=[1, 0])], "mr", shape=[4])
    y = b.op("add", [b.op("mul", [x, b.op("relu", [b.op("add", [k, k], "kk")], "kr")], "xm"),
                     b.op("relu", [b.op("mul", [b.const("a2", b.rand(4)), b.const("s2", b.rand(4))], "q")], "qr")],
             "y")
    g = b.done(y)
    out, notes = apply(g, "fold_constants")
    assert ops(out) == ["mul", "add"] and notes["folded"] == 9
    assert out.node("xm").inputs[1].name == "kr" and out.node("xm").inputs[1].is_constant


def test_identity_ops_and_same_shape_reshapes_go_and_reshape_chains_merge():
    b = Builder(10)
    x = b.input("x", (2, 3, 4, 4))
    h = b.op("identity", [b.op("relu", [x])], "id")
    h = b.op("transpose", [h], "noperm", perm=[0, 1, 2, 3])
    h = b.op("reshape", [b.op("reshape", [b.op("reshape", [h], "r1", shape=[2, 48])], "r2", shape=[6, 16])],
             "r3", shape=[2, 3, 16])
    h = b.op("reshape", [b.op("sigmoid", [h])], "same", shape=[2, 3, 16])
    g = b.done(b.op("tanh", [h], "out"))
    out, notes = apply(g, "fold_constants")
    assert ops(out) == ["relu", "reshape", "sigmoid", "tanh"], dumps(out)
    assert notes == {"reshapes_merged": 2, "noops_removed": 3}
    assert out.node("r3").inputs[0] is out.node("relu").outputs[0]


def test_noops_at_the_interface_keep_the_output_names():
    b = Builder(11)
    x = b.input("x", (2, 3))
    c = b.op("reshape", [b.const("c", b.rand(6))], "c_out", shape=[2, 3])  # a constant graph output stays computed
    g = b.done(b.op("identity", [x], "passthrough"), b.op("identity", [b.op("relu", [x])], "r_out"), c)
    out, notes = apply(g, "fold_constants")
    assert [t.name for t in out.outputs] == ["passthrough", "r_out", "c_out"]
    assert sorted(ops(out)) == ["identity", "relu", "reshape"] and notes == {"noops_removed": 1}


def test_same_shape_reshape_that_renames_the_layout_is_kept():
    """An NHWC tensor reinterpreted as NCHW (same shape) is a real change for the conv that reads it."""
    b = Builder(12)
    x = b.input("x", (1, 3, 3, 3), layout="NHWC")
    r = b.op("reshape", [x], "as_nchw", shape=[1, 3, 3, 3])
    g = b.done(b.conv(r, 2, name="c"))
    out, notes = apply(g, "fold_constants")
    assert ops(out) == ["reshape", "conv2d"] and notes == {}


def test_transposes_compose_and_order_keeping_ones_become_reshapes():
    """A converter's TRANSPOSE pair that cancels goes; one that does not is one transpose of the composed perm; a
    transpose that moves only size-1 axes is a reshape, merged with the reshape after it."""
    b = Builder(14)
    x = b.input("x", (2, 3, 4), layout=None)
    back = b.op("transpose", [b.op("transpose", [b.op("relu", [x])], "t1", perm=[0, 2, 1])], "t2", perm=[0, 2, 1])
    turned = b.op("transpose", [b.op("transpose", [b.op("tanh", [x])], "t3", perm=[1, 0, 2])], "t4", perm=[0, 2, 1])
    unit = b.op("reshape", [b.op("transpose", [b.op("reshape", [x], "r0", shape=[2, 1, 12])], "t5", perm=[1, 0, 2])],
                "r1", shape=[24])
    g = b.done(b.op("sigmoid", [back]), turned, unit)
    out, notes = apply(g, "fold_constants")
    assert sorted(ops(out)) == ["relu", "reshape", "sigmoid", "tanh", "transpose"], dumps(out)
    assert out.node("t4").attrs["perm"] == [1, 2, 0] and out.node("r1").inputs[0] is out.inputs[0]
    assert notes == {"transposes_merged": 2, "transposes_to_reshape": 1, "reshapes_merged": 2, "noops_removed": 1}


# ---- eliminate_dead -----------------------------------------------------------------------------------------

def test_dead_nodes_are_removed_and_counted():
    b = Builder(13)
    x = b.input("x", (2, 4))
    b.op("sigmoid", [b.fc(x, 3, name="unused_fc")], "unused")
    g = b.done(b.op("relu", [x]))
    out, notes = apply(g, "eliminate_dead")
    assert ops(out) == ["relu"] and notes == {"removed": 2}
