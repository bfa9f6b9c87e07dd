"""Issue 15: benchmarks/fuzz_rules.py's quick slice in CI: every int8 kernel rule against its real runtime.

Each rule set runs every row of the fuzzer (QUICK_ELEMENTS output elements each, fixed seeds) in LiteRT or
onnxruntime and in mcc's runtime: 0 elements differ, every row that the rule set has a kernel for compared some,
and the rows without one are exactly those its rule table lacks. The full run (10**6 elements per row and rule
set) is the committed benchmarks/results/fuzz_rules.txt.
"""

import numpy as np
import pytest

from mcc.backends import emit
from mcc.benchmarks.fuzz_rules import QUICK_ELEMENTS, ROWS, RULE_SETS, build, fuzz, run_case, table
from mcc.formats.onnx.reader import read_emitted_onnx
from mcc.errors import MccError
from mcc.formats.tflite.reader import read_tflite
from mcc.ir import Graph, QuantParams
from mcc.runtime import rule_set, run
from mcc.runtime.litert import make_interpreter, run_litert
from mcc.runtime.format_arithmetic import ONNX_ARITHMETIC
from mcc.validate import compare


@pytest.mark.parametrize("rules", sorted(RULE_SETS))
def test_quick_fuzz_finds_no_difference(rules):
    cells = [fuzz(name, rules, QUICK_ELEMENTS) for name in ROWS]
    print("\n" + table(cells))
    for cell in cells:
        if cell.no_kernel:
            assert cell.row not in rule_set(rules).rules, cell
            continue
        assert cell.differing == 0 and cell.mismatched == 0, cell
        assert cell.elements >= QUICK_ELEMENTS and cell.cases >= 2, cell
    assert {c.row for c in cells if c.no_kernel} == {r for r in ROWS if r not in rule_set(rules).rules}


def test_every_int8_kernel_and_16x8_rule_has_a_row():
    from mcc.runtime.kernels.int8_registry import INT8_KERNELS

    # binary_activation's int8 kernel stands in, inside quantize_int8, for the two requantizes the file holds
    # (tests/test_binarize.py checks it against them on every code): the requantize row covers what LiteRT runs
    by_op = {"quantize": {"quantize", "requantize"}, "resize": {"resize_nearest", "resize_bilinear"},
             "binary_activation": {"requantize"}}
    int16 = {key for key in rule_set("litert-ref").rules if key.endswith("/int16")}
    assert int16 >= {"conv2d/int16", "add/int16"}
    assert set(ROWS) == set().union(*(by_op.get(op, {op}) for op in INT8_KERNELS)) | int16


WRONG = {"litert-ref": "litert-xnnpack", "litert-xnnpack": "litert-ref", "onnxruntime": "litert-ref"}


@pytest.mark.parametrize("rules", sorted(RULE_SETS))
def test_fuzzed_cases_part_from_the_runtime_under_another_rule_set(rules):
    """The comparison can fail: the same cases, compared with mcc under another rule set's arithmetic, differ."""
    fmt, kernel_sets = RULE_SETS[rules]
    differing = 0
    for name in ("conv2d", "fully_connected", "leaky_relu", "mean", "quantize"):
        for index in range(3):
            graph, feeds, _ = build(name, rules, index, 2000)
            data = emit(graph, fmt)
            back = read_tflite(data) if fmt == "tflite" else read_emitted_onnx(data, ONNX_ARITHMETIC)
            assert compare(data, back, [feeds], kernel_sets[0]).differing == 0
            differing += compare(data, back, [feeds], kernel_sets[0], rules=WRONG[rules]).differing
    assert differing > 0


def test_fused_bound_that_overflows_int32_is_refused_like_litert_ref():
    """Found by the fuzzer: relu6 / s_out beyond int32 fails TFLite's Prepare (no_integer_overflow_from_quantization),
    which LiteRT's XNNPACK delegate does not run."""
    g = Graph("bound")
    a, b = g.add_input("a", (1, 4, 4, 8), "int8", "NHWC"), g.add_input("b", (1, 4, 4, 8), "int8", "NHWC")
    a.quant, b.quant = QuantParams(np.float32(3.8e-5), -128), QuantParams(np.float32(3.0e-6), -128)
    node = g.add_node("mul", [a, b], {"activation": "relu6"}, name="m")
    node.outputs[0].quant = QuantParams(np.float32(1.76e-9), -128)
    g.outputs = node.outputs
    data = emit(g, "tflite")
    rng = np.random.default_rng(0)
    feeds = {n: rng.integers(-128, 128, (1, 4, 4, 8)).astype(np.int8) for n in ("a", "b")}
    with pytest.raises(RuntimeError, match="no_integer_overflow_from_quantization"):
        make_interpreter(data, "ref")
    with pytest.raises(MccError, match="node 'm'.*relu6 bound.*overflows int32"):
        run(read_tflite(data), feeds, rules="litert-ref")
    want = run_litert(data, feeds, "default")["m"]
    assert np.array_equal(run(read_tflite(data), feeds, rules="litert-xnnpack")["m"], want) and len(np.unique(want)) > 10


def test_qlinear_softmax_cases_where_logf_and_the_double_quotient_decide_codes():
    """Fuzzed cases whose codes part between a table shifted by log and by logf (94 and 120 elements), and rows of 4
    at 1 / s_out = 1024, whose float32 product e * 1024 passes FLT_MAX: onnxruntime gives the true codes."""
    for index in (1268, 1437):
        elements, differing, _ = run_case("softmax", "onnxruntime", index, 10000)
        assert elements > 0 and differing == 0, index
    g = Graph("rows_of_4")
    x = g.add_input("x", (4096, 4), "int8", None)
    x.quant = QuantParams(np.float32(0.0625), -116)
    node = g.add_node("softmax", [x], {"axis": -1, "beta": 1.0}, name="p")
    node.outputs[0].quant = QuantParams(np.float32(1 / 1024), -128)
    g.outputs = node.outputs
    data = emit(g, "onnx")
    feeds = {"x": np.random.default_rng(1).integers(-128, 128, (4096, 4)).astype(np.int8)}
    back = read_emitted_onnx(data, ONNX_ARITHMETIC)
    for kernels in RULE_SETS["onnxruntime"][1]:
        assert compare(data, back, [feeds], kernels).differing == 0
    codes = run(back, feeds, rules="onnxruntime")["p"]
    assert np.count_nonzero((codes > -128) & (codes < 127)) > 1000
