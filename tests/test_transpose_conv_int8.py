"""Transposed convolution in exact int8 (passes/transpose_conv_to_conv.py): the rewrite computes the float kernel's
transposed convolution on odd shapes in either layout, and torch decoders compile to arm-int8 and x86-int8 with 0
differing elements against LiteRT (reference and XNNPACK) and onnxruntime, without a float island (the
ConvTranspose1d and test_nn_ops' Decoder are in tests/test_nn_ops.py)."""

import numpy as np
import pytest
import torch.nn as nn

from mcc.compiler import compile_model
from mcc.frontend.torch_export import from_module
from mcc.ir import Graph
from mcc.passes import run_pipeline
from mcc.runtime import run
from mcc.validate import validate
from compile_checks import compile_everywhere, spread
from handwritten_models import MODELS


def rand(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _transpose_conv(layout, hw, c_in, c_out, groups, k, stride, padding, output_padding, dilation, activation=None):
    g = Graph("t")
    n_hw = (2,) + hw
    shape = n_hw[:1] + (c_in,) + hw if layout == "NCHW" else n_hw + (c_in,)
    iohw = rand((c_in, c_out // groups) + k, 1)
    w = iohw if layout == "NCHW" else iohw.transpose(1, 2, 3, 0)
    node = g.add_node("transpose_conv2d", [g.add_input("x", shape, "float32", layout), g.constant("w", w),
                                           g.constant("b", rand((c_out,), 2))],
                      {"stride": list(stride), "padding": list(padding), "output_padding": list(output_padding),
                       "dilation": list(dilation), "groups": groups, "activation": activation}, name="y")
    g.outputs = [node.outputs[0]]
    return g, {"x": rand(shape, 0)}


CASES = [  # hw, c_in, c_out, groups, kernel, stride, padding [t, l, b, r], output_padding, dilation
    ((5, 7), 4, 6, 1, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), (1, 1)),
    ((4, 5), 3, 5, 1, (4, 3), (3, 3), (2, 0, 1, 2), (2, 1), (2, 1)),
    ((5, 6), 4, 6, 2, (3, 3), (2, 2), (0, 0, 0, 0), (0, 0), (1, 1)),
    ((3, 5), 4, 8, 4, (2, 3), (3, 3), (4, 1, 0, 3), (1, 2), (1, 2)),
    ((3, 4), 4, 4, 4, (5, 5), (2, 2), (5, 5, 2, 1), (1, 0), (1, 1)),  # crops beyond d*(k-1): slices
    ((1, 9), 3, 2, 1, (1, 4), (1, 2), (0, 1, 0, 1), (0, 1), (1, 1)),  # a 1-D one: H = 1 takes any stride
    ((6, 5), 2, 3, 1, (3, 3), (1, 1), (1, 0, 0, 2), (0, 0), (2, 2)),  # stride 1: a padded conv, nothing inserted
]


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_rewrite_computes_the_float_transposed_convolution(layout, case):
    g, feeds = _transpose_conv(layout, *case, activation="relu")
    want = run(g, feeds)["y"]
    out, records = run_pipeline(g, ["transpose_conv_to_conv"])
    assert records[0].notes == {"rewritten": 1}
    stride = case[5]
    upsampled = max(s for s, size in zip(stride, case[0]) if size > 1) > 1
    assert [n.op for n in out.nodes if n.op in ("pad", "depth_to_space", "conv2d", "transpose_conv2d")] == (
        ["pad", "depth_to_space"] if upsampled else []) + ["conv2d"]
    got = run(out, feeds)["y"]
    assert got.shape == want.shape and np.abs(got - want).max() <= 1e-5 * spread(want)


def test_unequal_strides_keep_the_transposed_convolution():
    g, _ = _transpose_conv("NCHW", (4, 5), 2, 3, 1, (3, 3), (1, 2), (0, 0, 0, 0), (0, 0), (1, 1))
    out, records = run_pipeline(g, ["transpose_conv_to_conv"])
    assert [n.op for n in out.nodes] == ["transpose_conv2d"]
    assert "strides [1, 2] differ" in records[0].notes["kept"]["y"]


class Decoder(nn.Module):
    """A crop with output padding, stride 3 with groups and dilation (which TFLite's TRANSPOSE_CONV cannot take at
    all: in int8 they compile) and one group per channel (a depthwise_conv2d after legalize_tflite)."""

    def __init__(self):
        super().__init__()
        self.up1 = nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1)
        self.up2 = nn.ConvTranspose2d(6, 6, 3, stride=3, padding=1, groups=3, dilation=2)
        self.up3 = nn.ConvTranspose2d(6, 6, 2, stride=2, groups=6)

    def forward(self, x):
        return self.up3(nn.functional.relu(self.up2(nn.functional.relu(self.up1(x)))))


def test_decoder_compiles_to_exact_int8(tmp_path):
    results = compile_everywhere(Decoder(), (1, 4, 3, 4), tmp_path, targets=("arm-int8", "x86-int8"))
    for (source, target), r in results.items():
        quantize = next(p for p in r.report["passes"] if p["pass"] == "quantize_int8")
        assert not quantize["notes"].get("float_ops"), (source, target, quantize["notes"])


def test_unet_decoder_is_exact_in_int8_up_to_its_bilinear_island(tmp_path):
    """arm-int8 validates with 0 differing elements. x86-int8 is exact through the rewritten ConvTranspose2d (up3,
    the first op that differed before) and up to the bilinear resize, a float island for ONNX (onnxruntime's int8
    Resize truncates): onnxruntime's float Resize lands up to 1.2e-7 away from mcc's, and the QUANTIZE after it
    flips codes; that island is the first and only source of differences."""
    module, example = MODELS["unet_fpn_decoder"]()
    results = compile_everywhere(module, tuple(example.shape), tmp_path, sources=("pt2",), targets=("arm-int8",),
                                 example=example)
    record = next(p for p in results["pt2", "arm-int8"].report["passes"] if p["pass"] == "transpose_conv_to_conv")
    assert record["notes"] == {"rewritten": 1}
    calib = tmp_path / "calib.npz"
    compile_model(from_module(module, (example,)), "x86-int8", tmp_path / "unet.onnx", calib=calib)
    for c in validate(tmp_path / "unet.onnx", calib)["comparisons"]:
        exact = {t["tensor"]: t["differing"] == 0 for t in c["tensors"]}
        assert exact["up3/upsample"] and exact["up3"] and exact["cat"], c["kernels"]
        first = c["first_differing_op"]
        assert first is None or first["node"] == "upsample_bilinear2d/quantize", (c["kernels"], first)
