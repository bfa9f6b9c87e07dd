"""Op facts are defined once, in ir/traits.py: every op has traits, and no pass, reader or backend keeps its own
list of op categories (channel axes, layout behaviour, parameter sharing, homogeneity) beside them."""

import ast
from pathlib import Path

import numpy as np
import pytest

from mcc.ir import Graph
from mcc.ir.ops import OPS
from mcc.ir.traits import TRAITS, channel_axis, ops_where, weight_axes

ROOT = Path(__file__).resolve().parents[1]
# Where categories of ops used to be spelled out again: the passes, the format readers and writers, backends.
CONSUMERS = ["passes", "formats", "backends"]
CATEGORY_SIZE = 3  # a literal naming this many IR ops is a category that traits should answer


def test_every_op_has_traits():
    assert set(TRAITS) == set(OPS)


def _op_lists(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)) and len(node.elts) >= CATEGORY_SIZE:
            names = [e.value for e in node.elts if isinstance(e, ast.Constant) and e.value in OPS]
            if len(names) == len(node.elts):
                yield node.lineno, names


def test_no_module_keeps_its_own_op_category():
    found = [f"{p.relative_to(ROOT)}:{line} {names}" for d in CONSUMERS for p in sorted((ROOT / d).rglob("*.py"))
             for line, names in _op_lists(p)]
    allowed = {"formats/onnx/opmap.py"}  # PADS_ATTRIBUTE: which ONNX operators take `pads`, a fact of the format
    assert [f for f in found if f.split(":")[0] not in allowed] == []


def test_shared_quant_and_spatial_sets_are_what_the_passes_rely_on():
    assert ops_where(shares_quant=True) == {"max_pool2d", "avg_pool2d", "reshape", "transpose", "pad", "concat",
                                            "minimum", "maximum", "slice", "split", "resize",
                                            "reduce_max", "reduce_min", "gather", "tile", "depth_to_space",
                                            "space_to_depth"}
    assert ops_where(layout="spatial") == {"conv2d", "depthwise_conv2d", "max_pool2d", "avg_pool2d", "resize",
                                           "batch_norm", "transpose_conv2d", "lrn", "depth_to_space", "space_to_depth"}


@pytest.mark.parametrize("layout,shapes,expected", [
    ("NCHW", {"conv2d": (8, 3, 3, 3), "depthwise_conv2d": (6, 1, 3, 3)}, {"conv2d": (0, 1), "depthwise_conv2d": (0, 0)}),
    ("NHWC", {"conv2d": (8, 3, 3, 3), "depthwise_conv2d": (1, 3, 3, 6)}, {"conv2d": (0, 3), "depthwise_conv2d": (3, 3)}),
])
def test_weight_and_channel_axes_follow_the_layout(layout, shapes, expected):
    g = Graph()
    x = g.add_input("x", (1, 3, 8, 8) if layout == "NCHW" else (1, 8, 8, 3), layout=layout)
    conv = g.add_node("conv2d", [x, g.constant("w", np.zeros(shapes["conv2d"], np.float32))])
    dw = g.add_node("depthwise_conv2d", [x, g.constant("d", np.zeros(shapes["depthwise_conv2d"], np.float32))],
                    {"multiplier": 2})
    assert weight_axes(conv) == expected["conv2d"] and weight_axes(dw) == expected["depthwise_conv2d"]
    assert channel_axis(conv.outputs[0]) == (1 if layout == "NCHW" else 3)
