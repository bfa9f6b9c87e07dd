"""to_nhwc: structure (no transposes the source did not ask for, remapped attributes and constants) and numerics."""

from __future__ import annotations

import numpy as np
import pytest

from mcc.errors import MccError
from mcc.ir import QuantParams
from mcc.ir.text import dumps
from mcc.passes import run_pipeline
from test_passes_common import Builder, assert_equivalent, ops


def nhwc(graph):
    out, records = run_pipeline(graph, ["to_nhwc"])
    return out, records[0].notes


def check(graph, transposes=0):
    """Convert, check numerics against the NCHW graph, check the number of transposes left; return both."""
    out, notes = nhwc(graph)
    assert_equivalent(graph, out, notes["io_layout"])
    assert ops(out).count("transpose") == transposes, dumps(out)
    return out, notes


def test_residual_block_weights_become_ohwi_and_io_nhwc():
    b = Builder()
    x = b.input("x", (2, 3, 6, 6))
    h = b.op("relu", [b.conv(x, 8, name="c1")])
    y = b.op("add", [b.conv(h, 8, name="c2"), b.conv(x, 8, k=1, name="skip")], "res")
    out, notes = check(b.done(y))
    assert out.tensor("c1.weight").shape == (8, 3, 3, 3) and out.tensor("skip.weight").shape == (8, 1, 1, 3)
    assert out.inputs[0].shape == (2, 6, 6, 3) and out.inputs[0].layout == "NHWC"
    assert out.outputs[0].layout == "NHWC" and out.outputs[0].name == "res"
    assert notes["io_layout"] == {"inputs": {"x": [0, 2, 3, 1]}, "outputs": {"res": [0, 2, 3, 1]}}


def test_grouped_conv_weight_keeps_per_group_inputs_last():
    b = Builder(1)
    x = b.input("x", (1, 4, 5, 5))
    out, _ = check(b.done(b.conv(x, 6, groups=2, name="g")))
    assert out.tensor("g.weight").shape == (6, 3, 3, 2)


def test_concat_along_channels_becomes_axis_3():
    b = Builder(2)
    x = b.input("x", (1, 3, 4, 4))
    y = b.op("concat", [b.conv(x, 2, name="a"), x, b.conv(x, 5, name="c")], "cat", axis=-3)
    out, _ = check(b.done(y))
    assert out.node("cat").attrs["axis"] == 3 and out.outputs[0].shape == (1, 4, 4, 10)


@pytest.mark.parametrize("gate_first", [False, True])
def test_squeeze_excite_with_fc_needs_no_transpose(gate_first):
    """mean keepdims -> flatten (H = W = 1, a plain reshape) -> FCs -> reshape back -> broadcast mul."""
    b = Builder(3)
    x = b.conv(b.input("x", (2, 3, 5, 5)), 6, name="c")
    s = b.op("reshape", [b.op("mean", [x], "gap", axes=[-1, -2], keepdims=True)], "sq", shape=[2, 6])
    s = b.op("sigmoid", [b.fc(b.op("relu", [b.fc(s, 3, name="f1")]), 6, name="f2")])
    s = b.op("reshape", [s], "unsq", shape=[2, 6, 1, 1])
    y = b.op("mul", [s, x] if gate_first else [x, s], "excite")
    out, _ = check(b.done(b.conv(y, 4, name="after")))
    assert out.node("gap").attrs["axes"] == [1, 2] and out.node("unsq").attrs["shape"] == [2, 1, 1, 6]
    assert out.tensor("unsq").layout == "NHWC"


def test_squeeze_excite_with_1x1_convs():
    b = Builder(4)
    x = b.conv(b.input("x", (1, 8, 6, 6)), 8, name="c")
    s = b.op("mean", [x], "gap", axes=[2, 3], keepdims=True)
    s = b.op("hardsigmoid", [b.conv(b.op("relu", [b.conv(s, 2, k=1, name="s1")]), 8, k=1, name="s2")])
    check(b.done(b.op("mul", [x, s], "excite")))


def test_flatten_4x4_into_fc_permutes_fc_columns_instead_of_transposing():
    b = Builder(5)
    x = b.op("relu", [b.conv(b.input("x", (2, 3, 4, 4)), 5, name="c")])
    f = b.op("reshape", [x], "flatten", shape=[2, -1])
    g = b.done(b.fc(f, 7, name="head"))
    out, notes = check(g)
    assert notes["fc_weights_permuted"] == 1 and "inserted_transposes" not in notes
    w0, w1 = g.tensor("head.weight").data, out.tensor("head.weight").data
    assert np.array_equal(w1, w0.reshape(7, 5, 4, 4).transpose(0, 2, 3, 1).reshape(7, 80))


def test_flatten_read_by_two_fcs_sharing_a_weight_permutes_each_once():
    b = Builder(6)
    f = b.op("reshape", [b.conv(b.input("x", (1, 2, 4, 4)), 3, name="c")], "flatten", shape=[1, 48])
    w = b.const("shared", b.rand(4, 48))
    y1 = b.op("fully_connected", [f, w], "fc1")
    y2 = b.op("fully_connected", [f, w], "fc2")
    out, notes = check(b.done(y1, y2))
    assert notes["fc_weights_permuted"] == 2


def test_flatten_with_another_reader_gets_one_noted_transpose_back_to_nchw():
    b = Builder(7)
    x = b.conv(b.input("x", (1, 3, 4, 4)), 4, name="c")
    f = b.op("reshape", [x], "flatten", shape=[1, 64])
    out, notes = check(b.done(b.fc(f, 3, name="head"), b.op("softmax", [f], "sm")), transposes=1)
    assert notes["transposes_inserted"] == 1 and "reshape 'flatten'" in notes["inserted_transposes"][0]


def test_unflatten_into_conv_inserts_the_transpose_the_data_needs():
    b = Builder(8)
    v = b.fc(b.input("z", (2, 6)), 3 * 2 * 2, name="fc")
    x = b.op("reshape", [v], "unflatten", shape=[2, 3, 2, 2])
    out, notes = check(b.done(b.conv(x, 4, name="c")), transposes=1)
    assert out.node("unflatten").attrs["shape"] == [2, 3, 2, 2]


def test_source_permute_to_channels_last_disappears():
    """conv -> permute(0,2,3,1) -> reshape [N, H*W, C] -> FC over channels: the permute is what NHWC already is."""
    b = Builder(9)
    x = b.conv(b.input("x", (2, 3, 4, 4)), 6, name="c")
    t = b.op("transpose", [x], "to_cl", perm=[0, 2, 3, 1])
    y = b.fc(b.op("reshape", [t], "tokens", shape=[2, 16, 6]), 5, name="proj")
    out, notes = check(b.done(y, t))
    assert notes["source_transposes_removed"] == 1
    assert notes["io_layout"]["outputs"] == {}  # the permuted output keeps the order the source gave it
    assert out.tensor("to_cl").shape == (2, 4, 4, 6)


def test_channels_last_model_stays_transpose_free_with_its_io_untouched():
    b = Builder(10)
    x = b.input("x", (1, 5, 5, 3), layout=None)
    c = b.conv(b.op("transpose", [x], "to_cf", perm=[0, 3, 1, 2]), 4, name="c")
    out, notes = check(b.done(b.op("transpose", [c], "to_cl", perm=[0, 2, 3, 1])))
    assert notes["io_layout"] == {"inputs": {}, "outputs": {}} and ops(out) == ["conv2d"]
    assert out.inputs[0].shape == (1, 5, 5, 3) and out.inputs[0].layout == "NHWC"


def test_source_permute_of_spatial_axes_stays_one_transpose():
    b = Builder(11)
    x = b.conv(b.input("x", (1, 2, 3, 5)), 3, name="c1")
    t = b.op("transpose", [x], "swap_hw", perm=[0, 1, 3, 2])
    out, _ = check(b.done(b.conv(t, 2, name="c2")), transposes=1)
    (tr,) = [n for n in out.nodes if n.op == "transpose"]
    assert tr.attrs["perm"] == [0, 2, 1, 3]


def test_depthwise_multiplier_2_weight_becomes_1_kh_kw_cm():
    b = Builder(12)
    y = b.dwconv(b.input("x", (2, 3, 6, 6)), multiplier=2, stride=2, name="dw")
    out, _ = check(b.done(b.dwconv(y, multiplier=1, name="dw2")))
    assert out.tensor("dw.weight").shape == (1, 3, 3, 6)


def test_batch_norm_without_conv_reads_nhwc():
    b = Builder(13)
    x = b.input("x", (2, 4, 3, 3))
    out, _ = check(b.done(b.op("relu", [b.bn(b.op("sigmoid", [x]))])))
    assert out.node("bn").inputs[0].layout == "NHWC"


def test_broadcast_constants_and_prelu_alpha_are_rank_aligned_and_permuted():
    b = Builder(14)
    x = b.input("x", (1, 4, 3, 3))
    y = b.op("add", [x, b.const("bias3", b.rand(4, 1, 1))], "add3")
    y = b.op("mul", [b.const("scale4", b.rand(1, 4, 1, 1)), y], "mul4")
    y = b.op("sub", [y, b.const("half", np.float32(0.5))], "scalar")
    y = b.op("div", [y, b.const("row", b.rand(3, positive=True))], "per_column")
    y = b.op("prelu", [y, b.const("alpha", b.rand(4, 1, 1))], "prelu")
    g = b.done(y)
    out, notes = check(g)
    assert out.tensor("bias3").shape == (1, 1, 1, 4) and out.tensor("scale4").shape == (1, 1, 1, 4)
    assert out.tensor("alpha").shape == (1, 1, 1, 4) and out.tensor("row").shape == (1, 1, 3, 1)
    assert out.tensor("half").data is g.tensor("half").data and notes["constants_permuted"] == 4


def test_per_channel_quantization_axis_follows_the_constant():
    b = Builder(15)
    x = b.input("x", (1, 3, 2, 2))
    c = b.const("scale", b.rand(1, 3, 1, 1))
    c.quant = QuantParams(np.ones(3), np.zeros(3), axis=1)
    out, _ = nhwc(b.done(b.op("mul", [x, c])))
    assert out.tensor("scale").quant.axis == 3


def test_lower_rank_variable_operand_is_aligned_by_reshapes_only():
    b = Builder(16)
    x = b.input("x", (2, 3, 4, 5))
    v = b.fc(b.input("z", (1, 2)), 5, name="row")  # [1, 5] broadcasts along W
    out, notes = check(b.done(b.op("relu", [b.op("add", [x, v], "add")])))
    assert ops(out).count("reshape") == 1 and notes["reshapes_inserted"] == 1
    assert out.node("add").inputs[1].shape == (1, 1, 5, 1)


def test_axis_attributes_of_pad_softmax_and_mean_are_remapped():
    b = Builder(17)
    x = b.input("x", (1, 3, 4, 5))
    p = b.op("pad", [x], "pad", pads=[0, 0, 1, 2, 0, 1, 3, 0])
    s = b.op("softmax", [p], "sm", axis=1)
    m = b.op("mean", [s], "gap", axes=[2, 3], keepdims=False)
    out, _ = check(b.done(b.fc(m, 2, name="head"), s))
    assert out.node("pad").attrs["pads"] == [0, 0, 0, 1, 3, 0, 1, 2]
    assert out.node("sm").attrs["axis"] == 3 and out.node("gap").attrs["axes"] == [1, 2]


def test_op_needing_source_order_gets_a_transpose():
    """mean over W only leaves [N, C, H] physically [N, H, C]; a rank-3 batch norm (channel axis 1) needs [N, C, H]."""
    b = Builder(18)
    m = b.op("mean", [b.conv(b.input("x", (2, 3, 4, 4)), 4, name="c")], "mw", axes=[3], keepdims=False)
    out, notes = check(b.done(b.bn(m)), transposes=1)
    assert "batch_norm 'bn'" in notes["inserted_transposes"][0]


def test_4d_graph_output_made_by_a_reshape_becomes_nhwc_without_a_transpose():
    b = Builder(19)
    v = b.fc(b.input("z", (1, 4)), 8, name="fc")
    r = b.op("reshape", [v], "img", shape=[1, 8, 1, 1])
    out, notes = check(b.done(r, b.conv(r, 2, k=1, name="c")))
    assert notes["io_layout"]["outputs"] == {"img": [0, 2, 3, 1], "c": [0, 2, 3, 1]}
    assert out.outputs[0].name == "img" and out.outputs[0].shape == (1, 1, 1, 8)


def test_nhwc_graph_is_left_as_it_is_and_a_mixed_one_refused():
    """A graph that is NHWC already (a second run, a TFLite source) passes unchanged; one that tags some tensors
    NHWC and others NCHW is half converted and refused by name."""
    b = Builder(20)
    g, _ = nhwc(b.done(b.conv(b.input("x", (1, 2, 3, 3)), 2)))
    again, notes = nhwc(g)
    assert dumps(again, inline_constants=True) == dumps(g, inline_constants=True)
    assert notes["already_nhwc"] == 2 and "io_layout" not in notes
    b = Builder(20)
    x, y = b.input("x", (1, 3, 3, 2), layout="NHWC"), b.input("y", (1, 2, 3, 3))
    mixed = b.done(b.op("relu", [x]), b.op("relu", [y]))
    with pytest.raises(MccError, match="'x' is NHWC while 'y' is NCHW"):
        nhwc(mixed)


def test_operands_meet_in_nhwc_when_one_already_has_it():
    """An unflattened FC output (source order) concatenated with a conv output: only the former is transposed."""
    b = Builder(21)
    u = b.op("reshape", [b.fc(b.input("z", (1, 5)), 12, name="fc")], "unflatten", shape=[1, 3, 2, 2])
    c = b.conv(b.input("x", (1, 2, 2, 2)), 4, name="c")
    y = b.op("concat", [u, c], "cat", axis=1)
    y = b.op("add", [b.op("reshape", [b.fc(b.input("w", (1, 3)), 28, name="fc2")], "u2", shape=[1, 7, 2, 2]), y])
    out, notes = check(b.done(b.conv(y, 2, name="after")), transposes=2)
    assert [m.split(":")[1].strip() for m in notes["inserted_transposes"]] == [
        "concat 'cat' operand", "add 'add' operand"]


def test_input_passed_through_to_an_output_keeps_its_name_and_form():
    b = Builder(22)
    x = b.input("x", (1, 4, 4, 2), layout=None)
    c = b.conv(b.op("transpose", [x], "to_cf", perm=[0, 3, 1, 2]), 3, name="c")
    out, notes = check(b.done(x, c))
    assert out.outputs[0] is out.inputs[0] and [t.name for t in out.outputs] == ["x", "c"]
    assert notes["io_layout"] == {"inputs": {}, "outputs": {"c": [0, 2, 3, 1]}}


def test_output_that_the_model_also_permutes_still_becomes_nhwc():
    b = Builder(23)
    c = b.conv(b.input("x", (1, 2, 3, 3)), 3, name="c")
    t = b.op("reshape", [b.op("transpose", [c], "to_cl", perm=[0, 2, 3, 1])], "tokens", shape=[1, 9, 3])
    out, notes = check(b.done(c, b.fc(t, 2, name="fc")))
    assert notes["io_layout"]["outputs"] == {"c": [0, 2, 3, 1]}


# ---- a 4-D input reshaped to another 4-D shape (issue 14, tflite-in part 2) ---------------------------------
def test_input_reshaped_to_another_4d_shape_goes_back_to_nchw(tmp_path):
    """Reshape [1,2,4,6] -> [1,4,3,4] / Relu / Flatten: to_nhwc moves x to NHWC and puts a transpose back in front of
    the reshape, so x is read only by a transpose; to_nchw used to keep such an input as a model's own permute
    (left NHWC, which legalize_onnx's "nchw" contract refused). It moves it back, where the transpose cancels:
    x86-fp32 has the source's interface and no Transpose, and both targets compute what onnxruntime does."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from mcc.compiler import compile_model
    from mcc.runtime.litert import run_litert

    nodes = [helper.make_node("Reshape", ["x", "s"], ["r"]), helper.make_node("Relu", ["r"], ["a"]),
             helper.make_node("Flatten", ["a"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 48])],
                              [numpy_helper.from_array(np.array([1, 4, 3, 4], np.int64), "s")])
    source = tmp_path / "reshape4d.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), source)
    x = np.random.default_rng(0).standard_normal((1, 2, 4, 6)).astype(np.float32)
    want = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]

    r = compile_model(source, "x86-fp32", tmp_path / "x86.onnx")
    model = onnx.load(tmp_path / "x86.onnx")
    assert "Transpose" not in [n.op_type for n in model.graph.node]
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == [1, 2, 4, 6]
    assert all(t.layout != "NHWC" for t in r.graph.tensors())
    got = ort.InferenceSession(r.data, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert np.array_equal(got, want)

    r = compile_model(source, "arm-fp32", tmp_path / "arm.tflite")
    assert r.graph.inputs[0].shape == (1, 4, 6, 2)  # NHWC, one transpose back for the reshape
    for kernels in ("ref", "default"):
        assert np.array_equal(run_litert(r.data, {"x": x.transpose(0, 2, 3, 1)}, kernels)["y"], want)
