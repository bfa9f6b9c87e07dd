"""Issue 14: mcc.onnx_backend and benchmarks/coverage.py's suites, on a fast subset of what the full run measures.

Node cases of ops mcc supports go through the backend API for both float targets and must meet onnx's own
criterion (its backend test runner's assert_similar_outputs with the case's rtol/atol); a refused model is an
MccError naming the op, not the private temporary file; a light model from onnx's model cases passes both float
targets, and two pytorchcv families pass their suite's judges in every column (int8: 0 differing elements in mcc
validate); the worker pool records a timeout as a result; the markdown writer counts and renders what it is given.
"""

import importlib
import os
import tempfile

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from onnx.backend.test.runner import Runner

from mcc.benchmarks.coverage_suites import SUITES
from mcc.benchmarks.coverage_suites.common import COLUMNS, Case, Cell
from mcc.benchmarks.coverage_suites.onnx_suites import model_data_sets, node_case
from mcc.benchmarks.coverage_suites.pool import run_cases
from mcc.benchmarks.coverage_suites.report import write_markdown
from mcc.benchmarks.coverage_suites.torch_suites import PYTORCHCV
from mcc.errors import MccError
from mcc.onnx_backend import MccBackend, supports_device

# Node cases of ops mcc lowers, 4-D ones among them (NCHW in the source, NHWC in the .tflite), and a 0-d input.
NODE_CASES = ["test_relu", "test_add_bcast", "test_sub_example", "test_div", "test_tanh", "test_sigmoid",
              "test_softmax_axis_1", "test_transpose_default", "test_concat_3d_axis_negative_2",
              "test_maxpool_2d_pads", "test_averagepool_2d_strides", "test_split_equal_parts_2d",
              "test_dropout_default_ratio",   # its ratio is a 0-d input
              # issue 14's new ops
              "test_neg", "test_sqrt", "test_exp", "test_abs", "test_gelu_default_1", "test_logsoftmax_axis_1",
              "test_lrn", "test_depthtospace_crd_mode_example", "test_matmul_3d",
              "test_relu_expanded_ver18", "test_gelu_default_1_expanded",   # CastLike of constants
              "test_size",   # a 0-d int64 output known at compile time
              "test_layer_normalization_default_axis_expanded"]   # 4-D [N, C, H, 1] outputs of reshapes
# Cases that feed what model files hold as initializers (weights, repeats, indices) at run time: the suite
# compiles them again with inputs 2.. as initializers.
WEIGHT_INPUT_CASES = ["test_tile_precomputed", "test_gather_0", "test_convtranspose", "test_lstm_defaults",
                      "test_gru_defaults", "test_reflect_pad"]   # the last: a 4-D int32 input, moved to NHWC
CASE_MODULES = {"test_reflect_pad": "pad", "test_layer_normalization_default_axis_expanded": "layernormalization"}   # the onnx.backend.test.case.node module of a case not named after it


@pytest.fixture(scope="module")
def node_testcases():
    """onnx's node TestCases of the modules NODE_CASES come from; importing a case module registers its cases
    (collect_testcases would import all of them, several seconds)."""
    for module in sorted({CASE_MODULES.get(name, name.split("_")[1]) for name in NODE_CASES + WEIGHT_INPUT_CASES}):
        importlib.import_module(f"onnx.backend.test.case.node.{module}")
    from onnx.backend.test.case.node import _NodeTestCases

    return {c.name: c for c in _NodeTestCases}


@pytest.mark.parametrize("target", ["arm-fp32", "x86-fp32"])
@pytest.mark.parametrize("name", NODE_CASES)
def test_node_case_through_the_backend(node_testcases, name, target):
    case = node_testcases[name]
    rep = MccBackend.prepare(case.model, "CPU", target=target)
    assert (rep.result.data[4:8] == b"TFL3") == (target == "arm-fp32")
    for inputs, expected in case.data_sets:
        outputs = rep.run(inputs)
        Runner.assert_similar_outputs(list(expected), list(outputs), rtol=case.rtol, atol=case.atol)
        assert [np.shape(o) for o in outputs] == [np.shape(e) for e in expected]   # allclose broadcasts a 0-d one
        assert list(outputs._fields) == [o.name for o in case.model.graph.output]


@pytest.mark.parametrize("name", WEIGHT_INPUT_CASES)
def test_node_case_with_weights_fed_at_run_time_passes_with_them_as_initializers(node_testcases, name):
    with pytest.raises(MccError, match="run time|run-time"):
        MccBackend.prepare(node_testcases[name].model, "CPU", target="arm-fp32")
    cells = dict(SUITES["onnx-node"].run(node_case(node_testcases[name])))
    for target in ("arm-fp32", "x86-fp32"):
        assert cells[target].status == "pass" and cells[target].text.endswith("(inputs 2.. as initializers)"), cells


def test_backend_device_and_dict_inputs(node_testcases):
    assert supports_device("CPU") and not supports_device("CUDA")
    case = node_testcases["test_add_bcast"]
    rep = MccBackend.prepare(case.model, "CPU")
    inputs, expected = case.data_sets[0]
    by_name = dict(zip([i.name for i in case.model.graph.input], inputs))
    np.testing.assert_allclose(rep.run(by_name)[0], expected[0], rtol=case.rtol, atol=case.atol)
    with pytest.raises(MccError, match="CPU"):
        MccBackend.prepare(case.model, "CUDA")


def test_refusal_names_the_op_and_leaves_nothing_behind():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    model = helper.make_model(helper.make_graph([helper.make_node("Frobnicate", ["x"], ["y"], domain="com.example")],
                                                "frob", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.example", 1)])
    before = set(os.listdir(tempfile.gettempdir()))
    with pytest.raises(MccError) as e:
        MccBackend.prepare(model, "CPU", target="arm-fp32")
    message = str(e.value)
    assert "Frobnicate" in message and message.startswith("ONNX model 'frob': ")
    assert "mcc-backend-" not in message and "model.onnx" not in message
    assert set(os.listdir(tempfile.gettempdir())) - before == set()


@pytest.mark.slow
@pytest.mark.parametrize("target", ["arm-fp32", "x86-fp32"])
@pytest.mark.parametrize("name", ["test_inception_v2", "test_squeezenet"])   # the last: 1,000 equal logits
def test_light_model_through_the_backend(name, target):
    """A light model (opset 9, random weights) fed as onnx's backend test runner feeds it, against its stored
    output, with its rtol/atol."""
    case = next(c for c in SUITES["onnx-models"].cases(False) if c.name == f"light/{name}")
    model = onnx.load(case.payload["path"])
    rep = MccBackend.prepare(model, "CPU", target=target)
    for inputs, expected in model_data_sets(case.payload, model):
        Runner.assert_similar_outputs(expected, list(rep.run(inputs)), rtol=case.payload["rtol"],
                                      atol=case.payload["atol"])


def _pytorchcv_case(family):
    try:
        import pytorchcv  # noqa: F401
    except ImportError:
        pytest.fail(f"pytorchcv is missing; it is not in pyproject.toml: {PYTORCHCV} (as .ci/run does)")
    return next(c for c in SUITES["pytorchcv"].cases(False) if c.name.startswith(f"{family} ("))


@pytest.mark.slow
@pytest.mark.parametrize("family", ["resnet-cifar", "mobilenetv2"])
def test_pytorchcv_family_passes_all_four_targets(family):
    cells = dict(SUITES["pytorchcv"].run(_pytorchcv_case(family)))
    assert set(cells) == set(COLUMNS)
    assert all(cell.status == "pass" for cell in cells.values()), cells
    for column in ("arm-fp32", "x86-fp32"):
        assert float(cells[column].text) <= 1e-4
    for column in ("arm-int8", "x86-int8"):
        assert cells[column].text.startswith("0 of "), cells[column]
        assert float(cells[column].text.split("SQNR ")[1].split(" dB")[0]) > 10


@pytest.mark.slow
def test_pool_records_results_and_timeouts(node_testcases):
    cases = [node_case(node_testcases[n]) for n in ("test_relu", "test_maxpool_2d_pads")]
    results = run_cases(cases, jobs=2, timeout=300)
    for c in cases:
        cells = results[(c.suite, c.name)]
        assert [cells[col].status for col in COLUMNS] == ["pass", "n/a", "pass", "n/a"], cells
    timed_out = run_cases(cases[:1], jobs=1, timeout=0.5)[(cases[0].suite, cases[0].name)]
    assert all(cell.status == "crash" and cell.text.startswith("timeout") for cell in timed_out.values())


def test_markdown_counts_and_renders_cells():
    cases = [Case("onnx-node", "test_b", "onnx (opset 13)", {"ops": ["Abs"]}),
             Case("onnx-node", "test_a", "onnx (opset 13)", {"ops": ["Relu"]}),
             Case("onnx-node", "test_c", "onnx (opset 13)", {"ops": ["Abs", "Neg"]})]
    na = Cell("n/a", "no calibration data")
    refused = Cell("refused", "uses 1 op(s) mcc does not support: Abs (node 'y') | pipe")
    results = {("onnx-node", "test_a"): {"arm-fp32": Cell("pass", "1.0e-07"), "arm-int8": na,
                                         "x86-fp32": Cell("wrong", "2.0e-01 (rtol 0.001, atol 1e-07)"), "x86-int8": na},
               ("onnx-node", "test_b"): {"arm-fp32": refused, "arm-int8": na, "x86-fp32": refused, "x86-int8": na},
               ("onnx-node", "test_c"): {"arm-fp32": refused, "arm-int8": na,
                                         "x86-fp32": Cell("crash", "ValueError: x"), "x86-int8": na}}
    command = "`python benchmarks/coverage.py --quick` (onnx-node)"
    text = write_markdown(command, ["onnx-node"], cases, results)
    assert text == write_markdown(command, ["onnx-node"], cases, results)
    lines = text.splitlines()
    assert "Generated by `python benchmarks/coverage.py --quick`" in text
    assert "| onnx-node | fp32 TFLite (arm-fp32) | 3 | 1 | 2 | 0 | 0 |" in lines
    assert "| onnx-node | fp32 ONNX (x86-fp32) | 3 | 0 | 1 | 1 | 1 |" in lines
    assert not any(line.startswith("| onnx-node | int8") for line in lines)   # all n/a: no summary row
    top = "| Abs | 2 | uses 1 op(s) mcc does not support: Abs (node '…') \\| pipe"
    assert any(line.startswith(top) for line in lines)
    rows = [line for line in lines if line.startswith("| test_")]
    assert [r.split(" | ")[0] for r in rows] == ["| test_a", "| test_b", "| test_c"]
    assert rows[0].endswith("| 1.0e-07 | n/a | **wrong**: 2.0e-01 (rtol 0.001, atol 1e-07) | n/a |")
    assert rows[1].endswith("\\| pipe | n/a | 〃 | n/a |")
    assert rows[2].endswith("| n/a | **crash**: ValueError: x | n/a |")


def test_record_keeps_other_suites_and_renders_one_table(tmp_path):
    from mcc.benchmarks.coverage_suites import record

    def run(suite, name, status):
        case = Case(suite, name, "src", {"ops": ["Relu"]})
        return [case], {(suite, name): {c: Cell(status, "x") for c in COLUMNS}}

    path = tmp_path / "coverage.json"
    cases, results = run("onnx-node", "test_a", "pass")
    record.save(path, record.update(record.load(path), "cmd one", ["onnx-node"], cases, results))
    cases, results = run("pytorchcv", "resnet", "refused")
    merged = record.update(record.load(path), "cmd two", ["pytorchcv"], cases, results)
    cases, results = run("onnx-node", "test_b", "wrong")      # a rerun of one suite replaces only its rows
    merged = record.update(merged, "cmd three", ["onnx-node"], cases, results)
    suites, cases, results = record.expand(merged, ["onnx-node", "onnx-models", "pytorchcv"])
    assert suites == ["onnx-node", "pytorchcv"] and [c.name for c in cases] == ["test_b", "resnet"]
    assert results[("onnx-node", "test_b")]["arm-fp32"] == Cell("wrong", "x")
    text = write_markdown(record.commands(merged, suites), suites, cases, results)
    assert "Generated by `cmd three` (onnx-node); `cmd two` (pytorchcv)" in text
    cases, results = run("pytorchcv", "resnet", "pass")       # a rerun of named cases replaces only their cells
    rerun = record.update_cases(merged, "cmd four", cases, results)
    assert rerun["pytorchcv"]["cases"][0]["cells"]["arm-fp32"] == ["pass", "x"]
    assert rerun["onnx-node"] == merged["onnx-node"] and merged["pytorchcv"]["cases"][0]["cells"]["arm-fp32"][0] == "refused"
    assert "`cmd two`, then `cmd four` (pytorchcv)" in record.commands(rerun, suites)
    with pytest.raises(ValueError, match="no recorded case 'vgg'"):
        record.update_cases(merged, "cmd five", *run("pytorchcv", "vgg", "pass"))


def test_pow_of_a_dtype_tflite_has_no_kernel_for_is_refused_for_tflite_and_compiled_for_onnx():
    """LiteRT's POW fails to prepare on int64; mcc refuses before writing and says what the builtin takes."""
    x = helper.make_tensor_value_info("x", TensorProto.INT64, [3])
    y = helper.make_tensor_value_info("y", TensorProto.INT64, [3])
    model = helper.make_model(helper.make_graph([helper.make_node("Pow", ["x", "x"], ["y"], name="p")], "pw", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 18)])
    with pytest.raises(MccError, match="node 'p': pow of int64 and int64: TFLite's POW has kernels for float32"):
        MccBackend.prepare(model, "CPU", target="arm-fp32")
    rep = MccBackend.prepare(model, "CPU", target="x86-fp32")
    assert rep.run([np.array([1, 2, 3], np.int64)])[0].tolist() == [1, 4, 27]


class _Cancelling(torch.nn.Module):
    """x W1^T - x W2^T with W2 = W1 + a small D: two sums of 1e5 that cancel to about 1, so float32 rounding of
    the large sums (which torch and LiteRT add in different orders) leaves errors of 1e-2 that float64 avoids."""

    def __init__(self, shift: float = 0.0):
        super().__init__()
        rng = np.random.default_rng(0)
        w1 = rng.standard_normal((8, 256)) * 1e4
        self.a = torch.nn.Linear(256, 8, bias=False)
        self.b = torch.nn.Linear(256, 8, bias=shift != 0)
        with torch.no_grad():
            self.a.weight.copy_(torch.from_numpy(w1))
            self.b.weight.copy_(torch.from_numpy(w1 + rng.standard_normal((8, 256)) * 1e-2))
            if shift:
                self.b.bias.fill_(shift)

    def forward(self, x):
        return self.a(x) - self.b(x)


@pytest.mark.parametrize("shift, status", [(0.0, "pass"), (0.5, "wrong")])
def test_ill_conditioned_float_cell_is_judged_against_float64(tmp_path, shift, status):
    """A model whose float32 result torch itself gets far from float64 passes when mcc is no further from float64
    than twice torch's error; a file that computes something else (a bias of 0.5 added) stays wrong."""
    from mcc.benchmarks.coverage_suites.common import float_cell, range_judge
    from mcc.benchmarks.coverage_suites.torch_suites import conditioned
    from mcc.compiler import compile_model
    from mcc.onnx_backend import MccRep

    samples = [np.random.default_rng(i).standard_normal((1, 256)).astype(np.float32) for i in range(2)]
    model = _Cancelling().eval()
    with torch.no_grad():
        expected = [[model(torch.from_numpy(s)).numpy()] for s in samples]
        torch.export.save(torch.export.export(_Cancelling(shift), (torch.from_numpy(samples[0]),)), tmp_path / "m.pt2")
    rep = MccRep(compile_model(tmp_path / "m.pt2", "arm-fp32"), "arm-fp32")
    first = float_cell(rep, [([s], e) for s, e in zip(samples, expected)], range_judge(1e-4))
    cell = conditioned(first, rep, model, samples, expected, {})
    assert first.status == "wrong" and cell.status == status, (first, cell)
    assert "against float64: mcc" in cell.text
