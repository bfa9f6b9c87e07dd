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
