"""The IR core: text round trip, verify() catching what a broken pass leaves, hygiene, accounting."""

import gc
import weakref

import numpy as np
import pytest

from mcc.ir import Graph, QuantParams
from mcc.ir.stats import format_table, totals
from mcc.ir.text import dumps, loads


def _graph():
    rng = np.random.default_rng(0)
    g = Graph("net")
    x = g.add_input("x", (1, 3, 8, 8), layout="NCHW")
    w = g.constant("conv.weight", rng.standard_normal((4, 3, 3, 3)).astype(np.float32))
    b = g.constant("conv.bias", rng.standard_normal(4).astype(np.float32))
    c = g.add_node("conv2d", [x, w, b], {"padding": [1, 1, 1, 1]}, name="conv")
    r = g.add_node("relu", c.outputs, name="relu")
    m = g.add_node("mean", r.outputs, {"axes": [2, 3], "keepdims": False}, name="pool")
    fw = g.constant("fc.weight", rng.standard_normal((5, 4)).astype(np.float32))
    f = g.add_node("fully_connected", [m.outputs[0], fw, None], name="fc")
    g.outputs = f.outputs
    return g


def test_text_round_trip_is_exact():
    g = _graph()
    g.outputs[0].quant = QuantParams([0.5], [3])
    g.nodes[0].source = "model.py:12"
    text = dumps(g, inline_constants=True)
    back = loads(text)
    back.verify()
    assert dumps(back, inline_constants=True) == text
    assert np.array_equal(back.tensor("conv.weight").data, g.tensor("conv.weight").data)
    assert back.outputs[0].quant == QuantParams([0.5], [3])
    assert back.node("conv").source == "model.py:12"


def test_quoted_names_round_trip():
    g = Graph("odd names")
    x = g.add_input("input 0;a", (1, 4))
    n = g.add_node("relu", [x], name="my relu")
    g.outputs = n.outputs
    back = loads(dumps(g, inline_constants=True))
    assert back.inputs[0].name == "input 0;a" and back.nodes[0].name == "my relu"


def test_summary_dump_shows_shapes_and_digests():
    text = dumps(_graph())
    assert "input  x: float32[1,3,8,8] @NCHW" in text
    assert "sha256:" in text and "b64:" not in text
    assert "-> conv: float32[1,4,8,8] @NCHW" in text


def test_loads_reports_line_of_error():
    with pytest.raises(ValueError, match="line 2"):
        loads("mcc-ir 1 g\nnode a = relu(missing) {} -> a: float32[1]\n")


def test_verify_catches_channel_mismatch_left_by_a_pass():
    g = _graph()
    conv = g.node("conv")
    conv.inputs[1] = g.constant("narrow", np.zeros((4, 2, 3, 3), np.float32))
    with pytest.raises(ValueError, match="conv"):
        g.verify()


def test_verify_catches_stale_shape_and_bad_bias():
    g = _graph()
    g.node("relu").outputs[0].shape = (1, 4, 7, 7)
    with pytest.raises(ValueError, match="inference says"):
        g.verify()
    g = _graph()
    g.node("conv").inputs[2] = g.constant("b3", np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="bias"):
        g.verify()


def test_verify_catches_dangling_and_double_producers():
    g = _graph()
    g.node("relu").inputs[0] = g.add_input("y", (1, 4, 8, 8), layout="NCHW")
    g.inputs.pop()
    with pytest.raises(ValueError, match="neither produced"):
        g.verify()
    g = _graph()
    g.node("relu").outputs[0] = g.node("conv").outputs[0]
    with pytest.raises(ValueError, match="produced by both"):
        g.verify()


def test_toposort_detects_cycle_and_orders():
    g = _graph()
    g.nodes.reverse()
    g.toposort()
    assert [n.name for n in g.nodes] == ["conv", "relu", "pool", "fc"]
    g.node("conv").inputs[0] = g.node("relu").outputs[0]
    with pytest.raises(ValueError, match="cycle"):
        g.toposort()


def test_cleanup_and_copy_are_independent():
    g = _graph()
    extra = g.add_node("sigmoid", g.node("conv").outputs, name="unused")
    h = g.copy()
    assert h.cleanup() == 1 and extra in g.nodes
    assert h.node("conv").outputs[0] is not g.node("conv").outputs[0]
    assert h.tensor("conv.weight").data is g.tensor("conv.weight").data


def test_bypass_keeps_output_name():
    g = _graph()
    ident = g.add_node("identity", g.outputs, name="id")
    g.outputs = ident.outputs
    g.bypass(ident)
    g.verify()
    assert g.outputs[0].name == "id" and g.outputs[0] is g.node("fc").outputs[0]


def test_accounting():
    g = _graph()
    t = totals(g)
    assert t["params"] == 4 * 3 * 9 + 4 + 20
    assert t["macs"] == 8 * 8 * 4 * 27 + 20
    assert t["bytes"] == 4 * t["params"]
    assert "fully_connected" in format_table(g)


def test_unknown_attribute_and_op_rejected():
    g = _graph()
    g.node("relu").attrs["alpha"] = 1
    with pytest.raises(ValueError, match="unknown attributes"):
        g.verify()
    with pytest.raises(ValueError, match="unknown op"):
        g.add_node("lstm", g.outputs)


def test_a_discarded_graph_is_freed_without_the_cycle_collector():
    """Nodes and their edge lists, graphs and their node lists refer to each other weakly one way: a graph (and its
    copy) is freed when the last reference goes, with the cyclic collector off."""
    gc.collect()
    gc.disable()
    try:
        g = _graph()
        copy = g.copy()
        refs = [weakref.ref(x) for x in (g, copy, *g.nodes, *copy.nodes)]
        del g, copy
        assert [r() for r in refs] == [None] * len(refs)
    finally:
        gc.enable()
