"""Issue 15 item 3: `mcc analyze` finds the layers that int8 breaks, and `mcc compile --fallback float` keeps them
float, on a model with one deliberately fragile spot: conv2's bias is raised by 1000 and a subtraction takes it off
again, so the tensor between them holds 1000 +- 10 and its int8 step (~4) swamps the signal."""

import json

import numpy as np
import pytest
import torch

from mcc.cli import main
from mcc.compiler import compile_model
from mcc.errors import MccError
from mcc.runtime import run
from mcc.runtime.litert import run_litert
from mcc.validate import validate

FRAGILE = ("conv2", "sub")  # the two ends of the offset tensor: keeping either one float leaves it int8


class Fragile(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.conv3 = torch.nn.Conv2d(8, 4, 3, padding=1)
        with torch.no_grad():
            self.conv2.bias += 1000.0

    def forward(self, x):
        y = torch.relu(self.conv1(x))
        y = self.conv2(y) - 1000.0
        return self.conv3(torch.relu(y))


@pytest.fixture(scope="module")
def fragile(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fragile")
    src = tmp / "fragile.pt2"
    torch.export.save(torch.export.export(Fragile().eval(), (torch.randn(1, 3, 8, 8),)), src)
    np.savez(tmp / "calib.npz", x=np.random.default_rng(0).standard_normal((8, 3, 8, 8)).astype(np.float32))
    return src, tmp / "calib.npz", tmp


def test_analyze_names_the_fragile_layers_table_json_and_plot(fragile, capsys):
    src, calib, tmp = fragile
    png, out = tmp / "layers.png", tmp / "analysis.json"
    assert main(["analyze", str(src), "--calib", str(calib), "--plot", str(png), "--json", str(out), "-q"]) == 0
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    layers = {x["name"]: x for x in report["layers"]}
    assert [x["name"] for x in report["layers"]] == ["conv1", "conv2", "sub", "conv3"]  # graph order
    assert set(report["ranking"][:2]) == set(FRAGILE)
    assert report["all_int8_sqnr_db"] < 15
    for name, x in layers.items():
        if name in FRAGILE:
            assert x["only_int8_db"] < 0  # quantizing this layer alone destroys the output
        else:
            assert x["only_int8_db"] > 30
            assert x["only_float_db"] < 15  # keeping a harmless layer float does not help
    assert report["fallback"]["layers"] and set(report["fallback"]["layers"]) == set(FRAGILE)
    assert report["fallback"]["sqnr_db"] > 15 and report["fallback"]["reached"]
    rows = [line.split()[0] for line in printed.splitlines() if line.split() and line.split()[0] in layers]
    assert rows[:4] == ["conv1", "conv2", "sub", "conv3"]
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_fallback_float_keeps_the_fragile_layers_and_validates(fragile, capsys):
    src, calib, tmp = fragile
    plain, kept, report_path = tmp / "plain.tflite", tmp / "kept.tflite", tmp / "report.json"
    assert main(["compile", str(src), "--target", "arm-int8", "--calib", str(calib), "-o", str(plain), "-q"]) == 0
    assert main(["compile", str(src), "--target", "arm-int8", "--calib", str(calib), "-o", str(kept),
                 "--fallback", "float", "--report", str(report_path)]) == 0
    assert "fallback float: 2 layer(s) kept float" in capsys.readouterr().out
    fallback = json.loads(report_path.read_text())["fallback"]
    assert fallback["layers"] == ["conv2", "sub"]
    assert fallback["all_int8_sqnr_db"] < 15 <= fallback["sqnr_db"]
    cost = fallback["cost"]
    assert cost["all_int8_bytes"] == plain.stat().st_size and cost["bytes"] == kept.stat().st_size
    assert cost["extra_bytes"] == cost["bytes"] - cost["all_int8_bytes"] > 0  # float weights of conv2
    assert cost["latency_ms"] > 0 and cost["all_int8_latency_ms"] > 0
    # the file against LiteRT's reference kernels and XNNPACK: bit-exact (the kept conv2 sums as each does), and
    # its fidelity against the float source
    report = validate(kept, calib, src)
    assert report["ok"] and [c["kernels"] for c in report["comparisons"]] == ["ref", "default"]
    for c in report["comparisons"]:
        assert c["exact"] and c["differing"] == 0 and c["elements"] > 0
        assert {t["op"] for t in c["tensors"]} >= {"conv2d", "sub", "quantize", "dequantize"}
    assert next(iter(report["fidelity"].values()))["sqnr_db"] > 15
    plain_report = validate(plain, calib, src, kernels=("ref",))
    assert next(iter(plain_report["fidelity"].values()))["sqnr_db"] < 15


def test_fallback_float_on_x86_int8(fragile):
    """The same choice under onnxruntime's rules; the file's integer operators match onnxruntime exactly, and any
    difference starts in the float island (onnxruntime's float Conv sums in an order mcc does not reproduce)."""
    src, calib, tmp = fragile
    out = tmp / "kept.onnx"
    result = compile_model(src, "x86-int8", out, calib=calib, fallback="float")
    assert result.report["fallback"]["layers"] == ["conv2", "sub"]
    assert result.report["fallback"]["sqnr_db"] >= 15
    report = validate(out, calib, src)
    assert next(iter(report["fidelity"].values()))["sqnr_db"] > 15
    for c in report["comparisons"]:
        assert c["differing"] == 0 or c["first_differing_op"]["node"] in FRAGILE


def test_fallback_not_needed_gives_the_plain_file(fragile):
    """A target the all-int8 graph already meets keeps nothing float, and the file is the plain compile's, byte for
    byte (the ranges the analysis observed are the ones compile would)."""
    src, calib, tmp = fragile
    plain = compile_model(src, "arm-int8", calib=calib)
    kept = compile_model(src, "arm-int8", calib=calib, fallback="float", fallback_sqnr=-20.0)
    assert kept.report["fallback"]["layers"] == [] and kept.data == plain.data


@pytest.mark.parametrize("argv, words", [
    (["--target", "arm-fp32", "--fallback", "float"], "--fallback applies to int8 targets"),
    (["--target", "arm-int8", "--fallback", "float", "--require-int8"], "contradict"),
    (["--target", "arm-int8", "--fallback-sqnr", "20"], "add --fallback float"),
])
def test_compile_refuses_bad_fallback_options(fragile, capsys, argv, words):
    src, calib, tmp = fragile
    assert main(["compile", str(src), "--calib", str(calib), "-o", str(tmp / "x.tflite"), "-q", *argv]) == 2
    assert words in capsys.readouterr().err
    assert not (tmp / "x.tflite").exists()


def test_analyze_refuses_a_float_target_and_unknown_layers(fragile, capsys):
    src, calib, tmp = fragile
    assert main(["analyze", str(src), "--calib", str(calib), "--target", "arm-fp32"]) == 2
    assert "choose arm-int8 or x86-int8" in capsys.readouterr().err
    with pytest.raises(MccError, match="'conv9'"):
        compile_model(src, "arm-int8", calib=calib, options={"float_layers": ("conv9",)})


# The float conv a kept layer leaves in the file: mcc sums as each LiteRT kernel set does (runtime/rules.py,
# "float_conv"), so the QUANTIZE after it gets the same codes. (groups, in, out, kernel, padding, dilation, stride)
FLOAT_CONVS = [
    (1, 8, 16, 3, 1, 1, 1), (1, 64, 24, 1, 0, 1, 1), (4, 16, 16, 3, 1, 1, 1), (1, 16, 8, 3, 2, 2, 1),
    (1, 16, 8, 3, 1, 1, 2), (16, 16, 16, 3, 1, 1, 1), (16, 16, 16, 4, 1, 1, 1), (32, 32, 32, 5, 2, 1, 1),
    (16, 16, 16, (3, 5), (1, 2), 1, 1), (8, 8, 16, 3, 1, 1, 1), (24, 24, 24, 7, 3, 1, 1), (16, 16, 16, 5, 4, 2, 1),
]


@pytest.mark.parametrize("groups, cin, cout, k, pad, dil, stride", FLOAT_CONVS)
def test_float_conv_sums_as_litert_ref_and_xnnpack(tmp_path, groups, cin, cout, k, pad, dil, stride):
    torch.manual_seed(0)
    model = torch.nn.Conv2d(cin, cout, k, padding=pad, groups=groups, dilation=dil, stride=stride).eval()
    x = torch.randn(2, cin, 9, 9) * 3
    torch.export.save(torch.export.export(model, (x,)), tmp_path / "conv.pt2")
    result = compile_model(tmp_path / "conv.pt2", "arm-fp32")
    feeds = {result.graph.inputs[0].name: x.numpy().transpose(0, 2, 3, 1).copy()}
    for kernels, rules in (("ref", "litert-ref"), ("default", "litert-xnnpack")):
        want = next(iter(run_litert(result.data, feeds, kernels).values()))
        got = next(iter(run(result.graph, feeds, rules=rules).values()))
        assert want.size > 0 and np.array_equal(want, got), (kernels, int((want != got).sum()))
    # the two orders differ, so each rule is needed
    ref = next(iter(run(result.graph, feeds, rules="litert-ref").values()))
    assert not np.array_equal(ref, next(iter(run(result.graph, feeds, rules="litert-xnnpack").values())))


class Fragile16(torch.nn.Module):
    """conv2's output holds 1000 +- a few (its bias), which conv3 (1x1, so no padding spoils it) cancels with a bias
    of -1000 times its weight sums: int8 loses the signal on that tensor, 16-bit activations (TFLite's 16x8 conv)
    keep it."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.conv3 = torch.nn.Conv2d(8, 4, 1)
        with torch.no_grad():
            self.conv2.bias += 1000.0
            self.conv3.bias -= 1000.0 * self.conv3.weight.sum(dim=(1, 2, 3))

    def forward(self, x):
        return self.conv3(self.conv2(torch.relu(self.conv1(x))))


def test_fallback_int16_keeps_the_offset_tensor_in_16_bits_and_validates(tmp_path):
    src = tmp_path / "fragile16.pt2"
    x = torch.randn(1, 3, 8, 8)
    torch.export.save(torch.export.export(Fragile16().eval(), (x,)), src)
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.random.default_rng(0).standard_normal((8, 3, 8, 8)).astype(np.float32))
    out = tmp_path / "kept16.tflite"
    result = compile_model(src, "arm-int8", out, calib=calib, fallback="int16")
    fallback = result.report["fallback"]
    assert fallback["kind"] == "int16" and fallback["reached"], fallback
    assert fallback["all_int8_sqnr_db"] < 15 <= fallback["sqnr_db"]
    assert set(fallback["layers"]) <= {"conv1", "conv2", "conv3"} and "conv2" in fallback["layers"]
    dtypes = {t.name: t.dtype for n in result.graph.nodes for t in n.outputs}
    assert dtypes["conv2"] == "int16"
    report = validate(out, calib, src)
    assert report["ok"] and all(c["differing"] == 0 and c["elements"] > 0 for c in report["comparisons"])
    assert next(iter(report["fidelity"].values()))["sqnr_db"] >= 15


def test_fallback_int16_is_refused_for_onnx_before_any_work(fragile, capsys):
    src, calib, tmp = fragile
    assert main(["compile", str(src), "--target", "x86-int8", "--calib", str(calib), "-o", str(tmp / "x.onnx"),
                 "-q", "--fallback", "int16"]) == 2
    assert "onnxruntime has no 16-bit" in capsys.readouterr().err
    assert not (tmp / "x.onnx").exists()
