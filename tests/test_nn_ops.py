"""Transposed convolution, batched matrix products, 1-D convolution and pooling, and layer norm through every
layer: the IR op and its shape inference, the float kernel against torch, the TFLite and ONNX rows written and read
back, the frontends, the layout pass, and torch models compiled to float and int8 TFLite and ONNX."""

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mcc.compiler import compile_model
from mcc.errors import MccError
from mcc.formats.onnx.reader import read_emitted_onnx
from mcc.formats.tflite.reader import read_tflite
from mcc.formats.tflite.writer import write_tflite
from mcc.frontend.torch_export import from_module
from mcc.ir import Graph
from mcc.runtime import run
from mcc.runtime.format_arithmetic import ONNX_ARITHMETIC
from mcc.runtime.litert import run_litert
from compile_checks import compile_everywhere, spread
from tflite_ops import operator_names


def rand(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# ---- transpose_conv2d -------------------------------------------------------------------------------------------
TRANSPOSED = [  # c_in, c_out, groups, kernel, stride, padding, output_padding, dilation
    (4, 6, 1, 3, 2, 1, 1, 1), (4, 6, 2, 3, 2, 0, 0, 1), (3, 5, 1, 4, 3, 2, 2, 2), (4, 4, 4, 2, 2, 0, 0, 1)]


@pytest.mark.parametrize("c_in,c_out,groups,k,s,p,op,d", TRANSPOSED)
def test_transpose_conv_kernel_computes_torch_conv_transpose(c_in, c_out, groups, k, s, p, op, d):
    x, w, b = rand((2, c_in, 5, 6), 0), rand((c_in, c_out // groups, k, k), 1), rand((c_out,), 2)
    want = F.conv_transpose2d(*map(torch.from_numpy, (x, w, b)), stride=s, padding=p, output_padding=op,
                              groups=groups, dilation=d).numpy()
    g = Graph("t")
    node = g.add_node("transpose_conv2d", [g.add_input("x", x.shape, "float32", "NCHW"), g.constant("w", w),
                                           g.constant("b", b)],
                      {"stride": [s, s], "padding": [p] * 4, "output_padding": [op, op], "dilation": [d, d],
                       "groups": groups}, name="y")
    g.outputs = [node.outputs[0]]
    got = run(g, {"x": x})["y"]
    assert got.shape == want.shape and np.abs(got - want).max() <= 1e-5 * spread(want)


@pytest.mark.parametrize("padding,output_padding", [([0, 0, 0, 0], [0, 0]), ([0, 0, 0, 0], [1, 1]),
                                                    ([0, 0, 1, 1], [0, 0]), ([1, 1, 1, 1], [0, 0])])
def test_transpose_conv_tflite_row_writes_reads_and_runs_like_the_runtime(padding, output_padding):
    """VALID, extended at the end by less than the stride, and SAME with the crops it implies for 3x3, stride 2 from
    5x6 (outputs 10x12 and 9x11)."""
    g = Graph("t")
    x = g.add_input("x", (1, 5, 6, 4), "float32", "NHWC")
    node = g.add_node("transpose_conv2d", [x, g.constant("w", rand((3, 3, 3, 4), 3)), g.constant("b", rand((3,), 4))],
                      {"stride": [2, 2], "padding": padding, "output_padding": output_padding,
                       "activation": "relu"}, name="y")
    g.outputs = [node.outputs[0]]
    model = write_tflite(g)
    assert operator_names(model) == ["TRANSPOSE_CONV"]
    back = read_tflite(model)
    assert back.nodes[0].attrs == node.attrs and back.nodes[0].outputs[0].shape == node.outputs[0].shape
    feeds = {"x": rand((1, 5, 6, 4), 5)}
    want = run(g, feeds)["y"]
    for kernels in ("ref", "default"):
        got = run_litert(model, feeds, kernels)["y"]
        assert np.abs(got - want).max() <= 1e-5 * spread(want), kernels


class Decoder(nn.Module):
    """A segmentation-style decoder: crops TFLite expresses (none, SAME) and one it does not (padding 1 with output
    padding 1: top/left crop 1 becomes a SLICE)."""

    def __init__(self):
        super().__init__()
        self.up1 = nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1)
        self.up2 = nn.ConvTranspose2d(6, 5, 4, stride=2, padding=1)
        self.up3 = nn.ConvTranspose2d(5, 3, 2, stride=2)

    def forward(self, x):
        return self.up3(torch.relu(self.up2(torch.relu(self.up1(x)))))


def test_decoder_compiles_everywhere(tmp_path):
    torch.manual_seed(0)
    results = compile_everywhere(Decoder(), (1, 4, 5, 6), tmp_path)
    for source in ("pt2", "onnx"):  # up1's relu stays apart: the crop's SLICE comes between
        assert operator_names(results[source, "arm-fp32"].data) == [
            "TRANSPOSE_CONV", "SLICE", "RELU", "TRANSPOSE_CONV", "TRANSPOSE_CONV"]
        for target in ("arm-int8", "x86-int8"):  # transpose_conv_to_conv: conv2d in int8, no float island
            quantize = next(p for p in results[source, target].report["passes"] if p["pass"] == "quantize_int8")
            assert not quantize["notes"].get("float_ops"), (source, target, quantize["notes"])
    back = read_emitted_onnx(results["onnx", "x86-fp32"].data, ONNX_ARITHMETIC)
    assert [n.op for n in back.nodes] == ["transpose_conv2d", "slice", "relu", "transpose_conv2d", "transpose_conv2d"]


def test_grouped_dilated_transpose_conv_compiles_for_onnx_and_is_refused_for_tflite(tmp_path):
    module = nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, groups=2, dilation=2)
    compile_everywhere(module, (1, 4, 5, 6), tmp_path, targets=("x86-fp32", "x86-int8"))
    with pytest.raises(MccError, match="TRANSPOSE_CONV has neither groups nor dilation"):
        compile_model(from_module(module, (torch.zeros(1, 4, 5, 6),)), "arm-fp32")


# ---- batch_matmul -----------------------------------------------------------------------------------------------
def test_batch_matmul_tflite_row_broadcasts_batches_like_numpy():
    g = Graph("bmm")
    a = g.add_input("a", (2, 1, 5, 8), "float32")
    node = g.add_node("batch_matmul", [a, g.constant("b", rand((3, 8, 4), 1))], name="y")
    g.outputs = [node.outputs[0]]
    assert node.outputs[0].shape == (2, 3, 5, 4)
    model = write_tflite(g)
    assert operator_names(model) == ["BATCH_MATMUL"]
    assert read_tflite(model).nodes[0].op == "batch_matmul"
    feeds = {"a": rand((2, 1, 5, 8), 2)}
    want = np.matmul(feeds["a"], g.nodes[0].inputs[1].data)
    np.testing.assert_allclose(run(g, feeds)["y"], want, rtol=0, atol=1e-5 * spread(want))
    for kernels in ("ref", "default"):
        assert np.abs(run_litert(model, feeds, kernels)["y"] - want).max() <= 1e-5 * spread(want), kernels


class Attention(nn.Module):
    """Single-head self-attention: activations by activations (q @ k^T, a @ v) and a constant weight of rank 3."""

    def __init__(self):
        super().__init__()
        self.qkv, self.proj = nn.Linear(8, 24), nn.Linear(8, 8)
        self.heads = nn.Parameter(torch.randn(2, 8, 3))

    def forward(self, x):
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        a = torch.softmax(q @ k.transpose(-2, -1) * 0.35, dim=-1)
        return torch.matmul(self.proj(torch.bmm(a, v)), self.heads)


def test_attention_compiles_everywhere(tmp_path):
    torch.manual_seed(0)
    results = compile_everywhere(Attention(), (2, 5, 8), tmp_path)
    for source in ("pt2", "onnx"):
        assert operator_names(results[source, "arm-fp32"].data).count("BATCH_MATMUL") == 3
        quantize = next(p for p in results[source, "arm-int8"].report["passes"] if p["pass"] == "quantize_int8")
        assert len(quantize["notes"]["float_ops"]) == 3  # no int8 kernel yet: float islands


def test_broadcasting_expand_is_a_multiply_by_ones():
    """torch.export's matmul of batch sizes 1 and 3 expands the first operand: ir.ops.broadcast_ones."""
    class Broadcast(nn.Module):
        def forward(self, a, b):
            return a @ b

    a, b = torch.randn(1, 5, 8), torch.randn(3, 8, 4)
    graph = from_module(Broadcast(), (a, b))
    assert [n.op for n in graph.nodes].count("mul") == 1
    got = run(graph, {graph.inputs[0].name: a.numpy(), graph.inputs[1].name: b.numpy()})
    np.testing.assert_allclose(next(iter(got.values())), (a @ b).numpy(), rtol=1e-5, atol=1e-5)


# ---- 1-D convolution and pooling --------------------------------------------------------------------------------
class Conv1dNet(nn.Module):
    """A text-detection / audio style 1-D stack: strided, dilated and grouped 1-D convolutions and both 1-D pools."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv1d(3, 8, 5, stride=2, padding=2)
        self.b = nn.Conv1d(8, 8, 3, padding=2, dilation=2, groups=2)

    def forward(self, x):
        y = F.max_pool1d(torch.relu(self.a(x)), 2)
        return F.avg_pool1d(torch.relu(self.b(y)), 3, stride=1, padding=1)


def test_1d_convolution_and_pooling_compile_everywhere_without_transposes(tmp_path):
    """The reshapes to [N, C, 1, L] and back only add and drop a size-1 axis, so to_nhwc carries [N, L, C] through
    the whole stack: two TRANSPOSEs remain, the [N, C, L] graph input's and output's (the source asked for none;
    mcc keeps 3-D interfaces in the source's order)."""
    torch.manual_seed(0)
    results = compile_everywhere(Conv1dNet(), (1, 3, 32), tmp_path)
    for source in ("pt2", "onnx"):
        ops = operator_names(results[source, "arm-fp32"].data)
        assert ops.count("TRANSPOSE") == 2 and ops[1] == ops[-1] == "TRANSPOSE", ops
        assert ops.count("CONV_2D") == 2 and {"MAX_POOL_2D", "AVERAGE_POOL_2D"} <= set(ops)


def test_1d_transposed_convolution(tmp_path):
    """ConvTranspose1d through the same reshapes. In int8 it is a conv2d over the zero-upsampled input
    (transpose_conv_to_conv: H = 1 takes W's stride), exact in onnxruntime too, where a float island's
    ConvTranspose was computed up to 6e-4 away from mcc's float kernel at ORT_ENABLE_ALL."""
    torch.manual_seed(0)
    results = compile_everywhere(nn.ConvTranspose1d(8, 4, 4, stride=2, padding=1), (1, 8, 16), tmp_path)
    for source in ("pt2", "onnx"):
        ops = operator_names(results[source, "arm-fp32"].data)
        assert ops.count("TRANSPOSE") == 2 and "TRANSPOSE_CONV" in ops, ops
        int8_ops = operator_names(results[source, "arm-int8"].data)
        assert "TRANSPOSE_CONV" not in int8_ops and "DEPTH_TO_SPACE" in int8_ops, int8_ops
