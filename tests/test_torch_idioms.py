"""Issue 14's torch idioms, one small module each, through torch.export and torch.onnx.export to every target
(compile_checks.compile_everywhere: float within 1e-4 of the output range in LiteRT and onnxruntime, int8 0
differing elements against LiteRT's two kernel sets and onnxruntime); normalization layers; and the summation
order of batch_matmul's float kernel, which int8 attention's float islands need to be bit-exact."""

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from compile_checks import compile_everywhere
from onnx import TensorProto, helper
from torch import nn

from mcc.compiler import compile_model
from mcc.errors import MccError
from mcc.frontend.onnx_loader import load_onnx
from mcc.frontend.torch_export import from_module
from mcc.ir import Graph
from mcc.runtime import run
from mcc.runtime.litert import run_litert
from mcc.runtime.ort import make_session, run_ort


# ---- normalization --------------------------------------------------------------------------------------------
class Affine(nn.Module):
    """A normalization layer with non-trivial affine parameters (fresh ones are ones and zeros, which mcc drops)."""

    def __init__(self, norm):
        super().__init__()
        self.norm = norm
        g = torch.Generator().manual_seed(3)
        for p in norm.parameters():
            p.data.copy_(torch.rand(p.shape, generator=g) + 0.5 if p is norm.weight else torch.randn(p.shape, generator=g))

    def forward(self, x):
        return self.norm(x)


NORMS = {
    "layer_norm_last": (lambda: Affine(nn.LayerNorm(8)), (1, 6, 8)),
    "layer_norm_two_axes": (lambda: Affine(nn.LayerNorm([5, 8])), (2, 5, 8)),
    "layer_norm_of_image": (lambda: Affine(nn.LayerNorm([4, 6, 6])), (1, 4, 6, 6)),
    "group_norm": (lambda: Affine(nn.GroupNorm(2, 8)), (1, 8, 5, 5)),
    "instance_norm_affine": (lambda: Affine(nn.InstanceNorm2d(4, affine=True)), (1, 4, 6, 6)),
    "instance_norm": (lambda: nn.InstanceNorm2d(4), (1, 4, 6, 6)),
}


@pytest.mark.parametrize("name", sorted(NORMS))
def test_normalization_layers_compile_everywhere(name, tmp_path):
    build, shape = NORMS[name]
    results = compile_everywhere(build(), shape, tmp_path, sources=("pt2",))
    ops = {n.op for n in results["pt2", "arm-fp32"].graph.nodes}
    assert {"mean", "square", "rsqrt"} <= ops, ops   # decomposed in the frontend, for TFLite and ONNX alike


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(NORMS))
def test_normalization_layers_from_onnx_export(name, tmp_path):
    build, shape = NORMS[name]
    compile_everywhere(build(), shape, tmp_path, sources=("onnx",))


def _onnx_layer_norm(tmp_path, outputs, opset=17):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8])
    ys = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs if o]
    inits = [onnx.numpy_helper.from_array(np.linspace(0.5, 1.5, 8, dtype=np.float32), "scale")]
    node = helper.make_node("LayerNormalization", ["x", "scale"], list(outputs), axis=-1, epsilon=1e-3, name="ln")
    tail = [helper.make_node("Relu", ["mean"], ["r"])] if "mean" in outputs else []
    if tail:
        ys = [ys[0], helper.make_tensor_value_info("r", TensorProto.FLOAT, None)]
    graph = helper.make_graph([node] + tail, "g", [x], ys, inits)
    path = tmp_path / "ln.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), path)
    return path


def test_onnx_layer_normalization_matches_onnxruntime(tmp_path):
    path = _onnx_layer_norm(tmp_path, ["y", "", ""])
    x = np.random.default_rng(0).standard_normal((1, 4, 8)).astype(np.float32) * 3 + 1
    want = make_session(path.read_bytes()).run(None, {"x": x})[0]
    got = run(load_onnx(path), {"x": x})["y"]
    assert np.abs(got - want).max() <= 1e-5 * np.ptp(want)


def test_onnx_layer_normalization_statistics_outputs_are_refused_where_read(tmp_path):
    with pytest.raises(MccError, match="reads 'mean', an output that mcc does not compute"):
        load_onnx(_onnx_layer_norm(tmp_path, ["y", "mean"]))


# ---- batch_matmul's float summation order ---------------------------------------------------------------------
class TwoActivations(nn.Module):
    def forward(self, x):
        return torch.bmm(torch.relu(x), torch.tanh(x).transpose(1, 2))


PEERS = (("arm-fp32", "ref", "litert-ref"), ("arm-fp32", "default", "litert-xnnpack"),
         ("x86-fp32", "ort-all", "onnxruntime"))


@pytest.mark.parametrize("depth,peers", [(16, PEERS), (700, PEERS[:2])])
def test_batch_matmul_float_kernel_sums_as_each_peer(depth, peers, tmp_path):
    """Each rule set's float batch_matmul is bit-exact with its peer's: LiteRT's reference kernels (multiply,
    then add), XNNPACK and onnxruntime (fused multiply-adds; onnxruntime's only up to K = 128, runtime.rules);
    the LiteRT peers differ from each other, so every comparison can fail."""
    x = torch.randn(2, 8, depth, generator=torch.Generator().manual_seed(depth))
    graph = from_module(TwoActivations(), (x,))
    got = {}
    for target, kernels, rules in peers:
        r = compile_model(graph.copy(), target, tmp_path / f"{target}.{'tflite' if 'arm' in target else 'onnx'}")
        node = next(n for n in r.graph.nodes if n.op == "batch_matmul")
        if target == "arm-fp32":
            seen = run_litert(r.data, {r.graph.inputs[0].name: x.numpy()}, kernels, keep_all=True)
        else:
            seen = run_ort(r.data, {r.graph.inputs[0].name: x.numpy()}, kernels, keep_all=True)
        ins = {t.name: seen[t.name] for t in node.inputs}
        single = Graph("bmm")
        a, b = (single.add_input(t.name, t.shape, "float32") for t in node.inputs)
        single.outputs.append(single.add_node("batch_matmul", [a, b], {}).outputs[0])
        mine = next(iter(run(single, ins, rules=rules).values()))
        peer = seen[node.outputs[0].name]
        assert np.array_equal(mine, peer), (kernels, int((mine != peer).sum()))
        got[rules] = peer
    assert not np.array_equal(got["litert-ref"], got["litert-xnnpack"])


# ---- torch idioms (issue 14's list), one small module each ----------------------------------------------------
class Fn(nn.Module):
    """A module around `fn(layers, x)`, so one-line idioms need no class of their own."""

    def __init__(self, fn, **layers):
        super().__init__()
        self.fn = fn
        self.layers = nn.ModuleDict(layers)

    def forward(self, x):
        return self.fn(self.layers, x)


class SqueezeExcite(nn.Module):
    def __init__(self, c=8, r=4):
        super().__init__()
        self.conv = nn.Conv2d(3, c, 3, padding=1)
        self.fc1, self.fc2 = nn.Conv2d(c, c // r, 1), nn.Conv2d(c // r, c, 1)

    def forward(self, x):
        x = F.relu(self.conv(x))
        s = F.adaptive_avg_pool2d(x, 1)
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(s))))


def _inplace(layers, x):
    y = layers["conv"](x)
    F.relu_(y)
    y.add_(0.5).mul_(2)
    return F.hardtanh(y, -1.0, 3.0, inplace=True)


def _channel_shuffle(layers, x, groups=2):
    n, c, h, w = x.shape
    y = x.view(n, groups, c // groups, h, w).transpose(1, 2).contiguous().view(n, c, h, w)
    return layers["conv"](y)


IDIOMS = {
    "adaptive_avg_pool_1x1_flatten_linear": (lambda: Fn(
        lambda m, x: m["fc"](torch.flatten(F.adaptive_avg_pool2d(m["conv"](x), 1), 1)),
        conv=nn.Conv2d(3, 8, 3), fc=nn.Linear(8, 5)), (1, 3, 9, 9)),
    "adaptive_avg_pool_uneven": (lambda: nn.AdaptiveAvgPool2d((3, 5)), (1, 4, 8, 7)),
    "adaptive_avg_pool_one_axis_even": (lambda: nn.AdaptiveAvgPool2d((2, 3)), (1, 4, 8, 7)),
    "adaptive_max_pool_uneven": (lambda: nn.AdaptiveMaxPool2d(3), (1, 4, 7, 7)),
    "adaptive_max_pool_upsampling": (lambda: nn.AdaptiveMaxPool2d((5, 2)), (1, 4, 3, 4)),
    "flatten_view_reshape_contiguous": (lambda: Fn(
        lambda m, x: m["fc"](x.permute(0, 2, 3, 1).contiguous().view(1, -1).reshape(1, 4, -1).flatten(1)),
        fc=nn.Linear(48, 6)), (1, 3, 4, 4)),
    "inplace_activations": (lambda: Fn(_inplace, conv=nn.Conv2d(3, 6, 3)), (1, 3, 8, 8)),
    "channel_shuffle": (lambda: Fn(_channel_shuffle, conv=nn.Conv2d(8, 4, 1)), (1, 8, 5, 5)),
    "squeeze_excite": (SqueezeExcite, (1, 3, 8, 8)),
    "hardswish_hardsigmoid_silu_gelu": (lambda: Fn(
        lambda m, x: F.gelu(F.silu(F.hardsigmoid(F.hardswish(m["conv"](x))) * 3 - 1)),
        conv=nn.Conv2d(3, 4, 3)), (1, 3, 8, 8)),
    "conv_transpose2d": (lambda: nn.ConvTranspose2d(4, 3, 3, stride=2, padding=1, output_padding=1), (1, 4, 5, 5)),
    "conv1d": (lambda: nn.Sequential(nn.Conv1d(4, 6, 3, padding=1), nn.ReLU(), nn.Conv1d(6, 3, 3, stride=2)),
               (1, 4, 16)),
    "dilated_and_grouped_convs": (lambda: nn.Sequential(nn.Conv2d(4, 8, 3, dilation=2, padding=2), nn.ReLU(),
                                                        nn.Conv2d(8, 8, 3, groups=4), nn.Conv2d(8, 8, 3, groups=8)),
                                  (1, 4, 10, 10)),
    "pixel_shuffle": (lambda: nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.PixelShuffle(2)), (1, 3, 5, 5)),
    "chunk_cat": (lambda: Fn(lambda m, x: torch.cat([b * (i + 1) for i, b in enumerate(m["conv"](x).chunk(3, 1))][::-1],
                                                    1), conv=nn.Conv2d(3, 6, 1)), (1, 3, 6, 6)),
    "bmm_of_two_activations": (lambda: Fn(lambda m, x: torch.bmm(torch.relu(x), x.transpose(1, 2))), (2, 6, 5)),
    "matmul_of_two_activations": (lambda: Fn(lambda m, x: torch.matmul(m["q"](x), m["k"](x).transpose(-1, -2)),
                                             q=nn.Linear(8, 8), k=nn.Linear(8, 8)), (2, 5, 8)),
    "layer_norm": (lambda: Affine(nn.LayerNorm(8)), (1, 6, 8)),
    # views torch.export keeps as strided ops (issue 14): as_strided, unfold, diagonal
    "as_strided_windows": (lambda: Fn(lambda m, x: m["fc"](x.as_strided((1, 3, 5, 4), (24, 8, 1, 1))),
                                      fc=nn.Linear(4, 2)), (1, 3, 8)),
    "as_strided_slice": (lambda: Fn(lambda m, x: torch.relu(x).as_strided((1, 2, 2, 2), (64, 16, 8, 2), 1)),
                         (1, 4, 4, 4)),
    "unfold_overlapping": (lambda: Fn(lambda m, x: m["fc"](x.unfold(2, 4, 2)), fc=nn.Linear(4, 3)), (1, 3, 10)),
    "diagonal": (lambda: Fn(lambda m, x: torch.diagonal(torch.tanh(x), 1, -2, -1)), (2, 5, 5)),
}


# Idioms whose int8 files keep float islands: mcc has no int8 batch_matmul (of two activations), gelu, square or
# rsqrt. Every other idiom must quantize completely.
FLOAT_ISLANDS = {"bmm_of_two_activations", "matmul_of_two_activations", "hardswish_hardsigmoid_silu_gelu",
                 "layer_norm"}


@pytest.mark.parametrize("name", sorted(IDIOMS))
def test_idiom_compiles_everywhere(name, tmp_path):
    build, shape = IDIOMS[name]
    compile_everywhere(build(), shape, tmp_path, sources=("pt2",), require_int8=name not in FLOAT_ISLANDS)


# torch.onnx.export (TorchScript exporter) refuses adaptive pooling whose sizes do not divide, and exports
# diagonal as EyeLike, CumSum and an If around GatherND, which mcc's ONNX frontend does not lower.
PT2_ONLY = {"adaptive_avg_pool_uneven", "adaptive_avg_pool_one_axis_even", "adaptive_max_pool_uneven",
            "adaptive_max_pool_upsampling", "diagonal"}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(IDIOMS) - PT2_ONLY))
def test_idiom_from_onnx_export(name, tmp_path):
    build, shape = IDIOMS[name]
    compile_everywhere(build(), shape, tmp_path, sources=("onnx",))
