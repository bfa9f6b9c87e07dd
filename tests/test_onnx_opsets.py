"""ONNX files of every opset from 7 to the newest the pinned onnx defines compile: older and newer ones are converted
in memory by onnx's version converter, the user's file is left as it was, and the report names the opset."""

import warnings

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from mcc.compiler import compile_model
from mcc.formats.tflite.reader import read_tflite
from mcc.runtime import run

NEWEST = onnx.defs.onnx_opset_version()


def _classifier(opset: int) -> onnx.ModelProto:
    """Conv -> BatchNormalization -> Relu -> MaxPool -> GlobalAveragePool -> Flatten -> Gemm -> Softmax, the ops of
    published opset-7..12 classifiers, written with each op's attributes as `opset` spells them."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=a).astype(np.float32), n) for n, a in
             [("w", (4, 3, 3, 3)), ("b", (4,)), ("scale", (4,)), ("bias", (4,)), ("fc_w", (5, 4)), ("fc_b", (5,))]]
    inits += [numpy_helper.from_array(np.abs(rng.normal(size=4)).astype(np.float32) + 0.5, "var"),
              numpy_helper.from_array(rng.normal(size=4).astype(np.float32), "mean")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "scale", "bias", "mean", "var"], ["n"]),
             helper.make_node("Relu", ["n"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("GlobalAveragePool", ["p"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], transB=1),
             helper.make_node("Softmax", ["logits"], ["y"], axis=1)]
    graph = helper.make_graph(nodes, "classifier", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    if opset < 9:  # as exporters of the time wrote them: IR version 3, every initializer also a graph input
        model.ir_version = 3
        model.graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, t.dims) for t in inits)
    else:
        model.ir_version = min(model.ir_version, 10)
    return model


@pytest.mark.parametrize("opset", [7, 9, 11, 12, 13, 21, 22, NEWEST])
def test_every_opset_compiles_and_matches_the_reference(tmp_path, opset):
    model = _classifier(opset)
    path = tmp_path / f"opset{opset}.onnx"
    path.write_bytes(model.SerializeToString())
    before = path.read_bytes()
    x = np.random.default_rng(1).normal(size=(1, 3, 8, 8)).astype(np.float32)
    # Every opset spells the same computation: onnxruntime on the opset-13 file is the reference for all.
    session = onnxruntime.InferenceSession(_classifier(13).SerializeToString(), providers=["CPUExecutionProvider"])
    expected = session.run(None, {"x": x})[0]
    result = compile_model(path, "arm-fp32", tmp_path / "out.tflite")
    got = run(read_tflite(result.data), {"x": x.transpose(0, 2, 3, 1)})
    np.testing.assert_allclose(next(iter(got.values())), expected, atol=1e-5)
    assert path.read_bytes() == before  # the user's file is untouched
    origin = result.report["source"]["origin"]
    assert origin["onnx_opset"] == opset
    if 13 <= opset <= 21:
        assert "converted_to_opset" not in origin
    else:
        assert origin["converted_to_opset"] == (13 if opset < 13 else 21)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        x = nn.functional.max_pool2d(torch.relu(self.bn(self.conv(x))), 2)
        x = nn.functional.interpolate(x, scale_factor=2.0, mode="nearest")
        x = nn.functional.adaptive_avg_pool2d(x, 4)
        return self.fc(torch.flatten(x, 1))


def test_torch_export_at_opset_11_compiles_like_opset_18(tmp_path):
    torch.manual_seed(0)
    net = Net().eval()
    x = torch.randn(1, 3, 8, 8)
    outs = {}
    for opset in (11, 18):
        path = tmp_path / f"net{opset}.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(net, (x,), path, opset_version=opset, dynamo=False, input_names=["x"])
        assert onnx.load(path).opset_import[0].version == opset
        result = compile_model(path, "arm-fp32", tmp_path / f"net{opset}.tflite")
        outs[opset] = run(read_tflite(result.data), {"x": x.numpy().transpose(0, 2, 3, 1)})
    (a,), (b,) = outs[11].values(), outs[18].values()
    expected = net(x).detach().numpy()
    np.testing.assert_allclose(a, expected, atol=1e-4 * np.abs(expected).max())
    np.testing.assert_allclose(a, b, atol=1e-5 * np.abs(expected).max())


def test_cli_says_the_opset_was_converted(tmp_path, capsys):
    from mcc.cli import main

    path = tmp_path / "old.onnx"
    path.write_bytes(_classifier(9).SerializeToString())
    assert main(["compile", str(path), "--target", "x86-fp32", "-o", str(tmp_path / "old_out.onnx")]) == 0
    assert "source: ONNX opset 9, converted in memory to opset 13" in capsys.readouterr().out
