"""Float bilinear resize under each rule set, bit for bit against the peer that set claims (runtime/rules.py, op
"resize"): LiteRT's reference kernel (litert-ref), its XNNPACK delegate (litert-xnnpack) and onnxruntime's CPU
Resize (onnxruntime), on up- and downscaling, odd sizes, 1-pixel inputs and outputs, in each coordinate mode.
The IR's own arithmetic (the onnxruntime set) is the wrong rule set for LiteRT and the other way round: those
comparisons must differ somewhere, or the sizes would not tell the arithmetics apart."""

import numpy as np
import pytest

from mcc.formats.onnx.writer import write_onnx
from mcc.formats.tflite.writer import write_tflite
from mcc.ir import Graph
from mcc.runtime import run
from mcc.runtime.format_arithmetic import ONNX_ARITHMETIC
from mcc.runtime.litert import run_litert
from mcc.runtime.ort import run_ort
from test_slice_split_resize import delegated

SIZES = [  # (in H, in W) -> (out H, out W)
    ((4, 4), (8, 8)), ((16, 16), (32, 32)), ((7, 9), (13, 31)), ((13, 31), (7, 12)), ((2, 3), (82, 5)),
    ((5, 5), (5, 11)), ((9, 10), (4, 3)), ((6, 7), (1, 1)), ((1, 1), (3, 4)), ((3, 8), (1, 3)),
]
MODES = ("half_pixel", "align_corners", "asymmetric")


def _graph(layout, shape, size, mode):
    g = Graph("resize")
    x = g.add_input("x", shape, "float32", layout)
    y = g.add_node("resize", [x], {"mode": "bilinear", "size": list(size), "coordinate_transformation_mode": mode},
                   name="y").outputs[0]
    g.outputs = [y]
    return g


def _inputs(hw, seed):
    """Standard-normal values with exact ties mixed in (small integers), batch 2, 3 channels (NHWC)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, *hw, 3)).astype(np.float32)
    return np.where(rng.random(x.shape) < 0.25, np.round(x * 4), x).astype(np.float32)


@pytest.mark.parametrize("mode", MODES)
def test_litert_float_resize_bilinear_bit_exact_under_its_rule_sets(mode):
    elements, wrong = 0, {"ref": 0, "default": 0}
    for i, (hw, size) in enumerate(SIZES):
        x = _inputs(hw, i)
        g = _graph("NHWC", x.shape, size, mode)
        model = write_tflite(g)
        assert delegated(model), (hw, size)  # the default resolver's numbers are XNNPACK's, as litert-xnnpack says
        ir = run(g, {"x": x}, rules="onnxruntime")["y"]
        for kernels, rules in (("ref", "litert-ref"), ("default", "litert-xnnpack")):
            theirs = run_litert(model, {"x": x}, kernels)["y"]
            ours = run(g, {"x": x}, rules=rules)["y"]
            assert ours.shape == theirs.shape == (2, *size, 3)
            assert int((ours != theirs).sum()) == 0, (kernels, hw, size, np.abs(ours - theirs).max())
            wrong[kernels] += int((ir != theirs).sum())
        elements += x.shape[0] * size[0] * size[1] * 3
    assert elements == 2 * 3 * sum(s[0] * s[1] for _, s in SIZES)
    assert all(w > 0 for w in wrong.values()), wrong


@pytest.mark.parametrize("mode", MODES)
def test_onnxruntime_float_resize_bilinear_bit_exact_under_its_rule_set(mode):
    wrong = {"litert-ref": 0, "litert-xnnpack": 0}
    for i, (hw, size) in enumerate(SIZES):
        x = _inputs(hw, i).transpose(0, 3, 1, 2).copy()
        g = _graph("NCHW", x.shape, size, mode)
        model = write_onnx(g, ONNX_ARITHMETIC)
        ours = run(g, {"x": x}, rules="onnxruntime")["y"]
        for kernels in ("ort-all", "ort-none"):
            theirs = run_ort(model, {"x": x}, kernels)["y"]
            assert ours.shape == theirs.shape == (2, 3, *size)
            assert int((ours != theirs).sum()) == 0, (kernels, hw, size, np.abs(ours - theirs).max())
        for rules in wrong:
            wrong[rules] += int((run(g, {"x": x}, rules=rules)["y"] != theirs).sum())
    assert all(w > 0 for w in wrong.values()), wrong
