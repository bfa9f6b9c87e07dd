"""ONNX control flow and shape logic: an If whose condition folds is inlined (the other branch never read), run-time
If, Loop and Scan are refused by node; shape arithmetic folds (onnx's own node cases, and a torch.onnx export that
computes a reshape target from x.shape); Expand of an activation becomes a reshape or a multiply by ones."""

import warnings

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from onnx.backend.test.case.node import collect_testcases

from mcc.compiler import compile_model
from mcc.errors import MccError
from mcc.frontend import load
from mcc.runtime import run
from mcc.runtime.litert import run_litert
from test_onnx_backend import session

FLOAT = TensorProto.FLOAT


def save(tmp_path, nodes, inputs, outputs, initializers=(), opset=17, name="m"):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    path = tmp_path / f"{name}.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), path)
    return path


def value(name, shape):
    return helper.make_tensor_value_info(name, FLOAT, shape)


def shape_test_if(tmp_path, dim_tested: int):
    """y = relu(x) * 2 if x.shape[1] == dim_tested else neg(x): the else branch uses an op mcc does not lower."""
    two = numpy_helper.from_array(np.array(2.0, np.float32), "two")
    then = helper.make_graph([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Mul", ["r", "two"], ["t"])],
                             "then", [], [value("t", [1, 3, 4])])
    other = helper.make_graph([helper.make_node("Sin", ["x"], ["e"])], "else", [], [value("e", [1, 3, 4])])
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "one"], ["d"], axis=0),
             helper.make_node("Cast", ["d"], ["f"], to=FLOAT),
             helper.make_node("Equal", ["f", "want"], ["c"]),
             helper.make_node("If", ["c"], ["y"], name="branch", then_branch=then, else_branch=other)]
    inits = [numpy_helper.from_array(np.array(1, np.int64), "one"),
             numpy_helper.from_array(np.array(dim_tested, np.float32), "want"), two]
    return save(tmp_path, nodes, [value("x", [1, 3, 4])], [value("y", [1, 3, 4])], inits)


def test_if_on_a_static_shape_inlines_the_taken_branch(tmp_path):
    path = shape_test_if(tmp_path, 3)
    x = np.random.default_rng(0).standard_normal((1, 3, 4)).astype(np.float32)
    want = session(path.read_bytes()).run(None, {"x": x})[0]
    graph = load(path)
    assert [n.op for n in graph.nodes] == ["relu", "mul"]
    np.testing.assert_array_equal(run(graph, {"x": x})["y"], want)
    np.testing.assert_array_equal(run_litert(compile_model(path, "arm-fp32").data, {"x": x})["y"], want)


def test_if_taking_a_branch_with_an_unsupported_op_names_the_op(tmp_path):
    with pytest.raises(MccError, match="Sin.*not supported on tensors computed at run time"):
        load(shape_test_if(tmp_path, 5))


def test_if_on_a_run_time_condition_is_refused_by_node(tmp_path):
    branch = lambda name: helper.make_graph([helper.make_node("Relu", ["x"], [name])], name, [],  # noqa: E731
                                           [value(name, [2])])
    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], keepdims=0),
             helper.make_node("Greater", ["m", "zero"], ["c"]),
             helper.make_node("If", ["c"], ["y"], name="gate", then_branch=branch("a"), else_branch=branch("b"))]
    path = save(tmp_path, nodes, [value("x", [2])], [value("y", [2])],
                [numpy_helper.from_array(np.array(0.0, np.float32), "zero")])
    with pytest.raises(MccError, match="Greater \\(node 'c'\\)"):   # the comparison on data is refused first
        load(path)


def test_loop_and_scan_are_refused_by_node_even_on_constants(tmp_path):
    body = helper.make_graph([helper.make_node("Identity", ["cond_in"], ["cond_out"]),
                              helper.make_node("Add", ["v_in", "v_in"], ["v_out"])], "body",
                             [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                              helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []), value("v_in", [2])],
                             [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), value("v_out", [2])])
    nodes = [helper.make_node("Loop", ["n", "", "v0"], ["v"], name="repeat", body=body),
             helper.make_node("Add", ["x", "v"], ["y"])]
    inits = [numpy_helper.from_array(np.array(3, np.int64), "n"), numpy_helper.from_array(np.ones(2, np.float32), "v0")]
    path = save(tmp_path, nodes, [value("x", [2])], [value("y", [2])], inits)
    with pytest.raises(MccError, match="Loop \\(node 'repeat'\\)"):
        load(path)


# ---- shape logic folds ----------------------------------------------------------------------------------------
FOLDED = ["test_shape", "test_gather_0", "test_equal", "test_where_example", "test_constantofshape_int_zeros",
          "test_expand_dim_changed", "test_range_float_type_positive_delta", "test_unsqueeze_axis_0",
          "test_concat_1d_axis_0"]
CASES = {c.name: c for c in collect_testcases(None) if c.name in FOLDED}


@pytest.mark.parametrize("name", FOLDED)
def test_shape_logic_on_constants_folds_to_onnx_values(name, tmp_path):
    """The case's inputs as initializers: the whole node folds, the graph is one identity on a constant holding
    what onnx's expected output holds (as float32, the IR's only dtype)."""
    case = CASES[name]
    model = onnx.ModelProto()
    model.CopyFrom(case.model)
    inputs, outputs = case.data_sets[0]
    model.graph.initializer.extend(numpy_helper.from_array(a, v.name) for v, a in zip(model.graph.input, inputs))
    del model.graph.input[:]
    model.graph.input.append(value("unused", [1]))   # a compiled model has an input
    onnx.save(model, tmp_path / "m.onnx")
    graph = load(tmp_path / "m.onnx")
    assert {n.op for n in graph.nodes} == {"identity"} and all(n.inputs[0].is_constant for n in graph.nodes)
    got = run(graph, {"unused": np.zeros(1, np.float32)})
    for v, want in zip(model.graph.output, outputs):
        np.testing.assert_array_equal(got[v.name], np.asarray(want).astype(np.float32))


class ReshapeFromShape(torch.nn.Module):
    def forward(self, x):
        n, c, h, w = x.shape
        return torch.relu(x.reshape(n, c * h, w // 2, 2)).flatten(1).unsqueeze(0).expand(3, -1, -1)


def test_torch_onnx_shape_arithmetic_folds_and_expand_broadcasts(tmp_path):
    x = torch.randn(1, 2, 3, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(ReshapeFromShape(), (x,), tmp_path / "r.onnx", dynamo=False, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "n"}})
    ops = {n.op_type for n in onnx.load(tmp_path / "r.onnx").graph.node}
    assert {"Shape", "Gather", "Concat", "Reshape", "Expand"} <= ops
    graph = load(tmp_path / "r.onnx")
    assert [n.op for n in graph.nodes] == ["reshape", "relu", "reshape", "reshape", "mul"]
    want = ReshapeFromShape()(x).numpy()
    np.testing.assert_array_equal(run(graph, {"x": x.numpy()})["y"], want)
    data = compile_model(tmp_path / "r.onnx", "arm-fp32").data
    np.testing.assert_array_equal(run_litert(data, {"x": x.numpy().transpose(0, 2, 3, 1)})["y"], want)


def test_expand_adding_leading_axes_is_a_reshape(tmp_path):
    nodes = [helper.make_node("Expand", ["x", "shape"], ["y"])]
    path = save(tmp_path, nodes, [value("x", [3, 4])], [value("y", [1, 1, 3, 4])],
                [numpy_helper.from_array(np.array([1, 1, 1, 4], np.int64), "shape")])
    graph = load(path)
    assert [(n.op, n.attrs) for n in graph.nodes] == [("reshape", {"shape": [1, 1, 3, 4]})]
