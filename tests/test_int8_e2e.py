"""Issue 3 end to end through the CLI: arm-int8 compile with --calib, `mcc validate` shows 0 differing elements
on every tensor against LiteRT BUILTIN_REF and XNNPACK, on random and real inputs; accuracy; determinism."""

import json

import numpy as np
import pytest
import torch
from tflite_ops import operator_names

from mcc.cli import main
from mcc.examples.zoo import ZOO, digits_split


@pytest.fixture(scope="module", params=sorted(ZOO))
def int8_model(request, tmp_path_factory):
    name = request.param
    tmp = tmp_path_factory.mktemp(name)
    model, example = ZOO[name]()
    src = tmp / f"{name}.pt2"
    torch.export.save(torch.export.export(model, (example,)), src)
    rng = np.random.default_rng(0)
    if name == "digits_classifier":
        split = digits_split()
        calib, real = split.x_train[:64], split.x_test[:32]
    else:
        calib = rng.standard_normal((32, *example.shape[1:])).astype(np.float32)
        real = None
    np.savez(tmp / "calib.npz", x=calib)
    out = tmp / f"{name}.int8.tflite"
    assert main(["compile", str(src), "--target", "arm-int8", "--calib", str(tmp / "calib.npz"), "-o", str(out),
                 "-q", "--require-int8"]) == 0
    return name, src, out, tmp, real, example


def _validate(capsys, out, data, src=None):
    args = ["validate", str(out), "--input", str(data), "--json"] + (["--reference", str(src)] if src else [])
    code = main(args)
    report = json.loads(capsys.readouterr().out)
    return code, report


def test_validate_is_bit_exact_on_every_tensor(int8_model, capsys):
    name, src, out, tmp, real, example = int8_model
    x = np.random.default_rng(1).standard_normal((4, *example.shape[1:])).astype(np.float32)
    np.savez(tmp / "random.npz", x=x)
    # fidelity is checked on data from the calibration distribution (random normal, or real digits)
    inputs = [(tmp / "random.npz", real is None)]
    if real is not None:
        np.savez(tmp / "real.npz", x=real)
        inputs.append((tmp / "real.npz", True))
    for data, in_distribution in inputs:
        code, report = _validate(capsys, out, data, src)
        assert code == 0, [(c["kernels"], c["first_differing_op"]) for c in report["comparisons"]]
        for c in report["comparisons"]:
            assert c["exact"] and c["differing"] == 0 and c["elements"] > 0
            assert {t["op"] for t in c["tensors"]} >= {"conv2d", "fully_connected"}
        if in_distribution:
            assert next(iter(report["fidelity"].values()))["sqnr_db"] > 10


def test_full_integer_and_deterministic(int8_model):
    name, src, out, tmp, *_ = int8_model
    ops = operator_names(out.read_bytes())
    assert "TRANSPOSE" not in ops and ops.count("QUANTIZE") == 1 and ops.count("DEQUANTIZE") == 1
    again = tmp / "again.tflite"
    assert main(["compile", str(src), "--target", "arm-int8", "--calib", str(tmp / "calib.npz"), "-o", str(again),
                 "-q"]) == 0
    assert again.read_bytes() == out.read_bytes()


def test_digits_accuracy_drop_at_most_half_a_point(tmp_path):
    model, example = ZOO["digits_classifier"]()
    split = digits_split()
    src = tmp_path / "digits.pt2"
    torch.export.save(torch.export.export(model, (example,)), src)
    np.savez(tmp_path / "calib.npz", x=split.x_train[:64])
    out = tmp_path / "digits.tflite"
    assert main(["compile", str(src), "--target", "arm-int8", "--calib", str(tmp_path / "calib.npz"), "-o",
                 str(out), "-q"]) == 0
    np.savez(tmp_path / "test.npz", x=split.x_test)
    assert main(["run", str(out), "--input", str(tmp_path / "test.npz"), "-o", str(tmp_path / "y.npz")]) == 0
    y = np.load(tmp_path / "y.npz")
    labels = np.asarray(split.y_test)
    int8_acc = float(np.mean(y[y.files[0]].argmax(1) == labels))
    with torch.no_grad():
        float_acc = float(np.mean(model(torch.as_tensor(split.x_test)).numpy().argmax(1) == labels))
    assert float_acc > 0.9
    assert float_acc - int8_acc <= 0.005, (float_acc, int8_acc)


def test_int8_io_carries_quantization_in_report(tmp_path):
    model, example = ZOO["digits_classifier"](train=False)
    src = tmp_path / "d.pt2"
    torch.export.save(torch.export.export(model, (example,)), src)
    np.savez(tmp_path / "calib.npz", x=np.random.default_rng(0).random((8, 1, 8, 8), dtype=np.float32))
    out, report = tmp_path / "d.tflite", tmp_path / "r.json"
    assert main(["compile", str(src), "--target", "arm-int8", "--calib", str(tmp_path / "calib.npz"), "--io", "int8",
                 "-o", str(out), "--report", str(report), "-q"]) == 0
    r = json.loads(report.read_text())
    for t in r["output"]["inputs"] + r["output"]["outputs"]:
        assert t["dtype"] == "int8" and len(t["quantization"]["scale"]) == 1
    ops = operator_names(out.read_bytes())
    assert "QUANTIZE" not in ops and "DEQUANTIZE" not in ops


def test_calibration_errors_before_work(tmp_path, capsys):
    model, example = ZOO["digits_classifier"](train=False)
    src = tmp_path / "d.pt2"
    torch.export.save(torch.export.export(model, (example,)), src)
    out = tmp_path / "o.tflite"
    assert main(["compile", str(src), "--target", "arm-int8", "-o", str(out), "-q"]) == 2
    assert "--calib" in capsys.readouterr().err
    np.savez(tmp_path / "bad.npz", x=np.zeros((4, 3, 8, 8), np.float32))
    assert main(["compile", str(src), "--target", "arm-int8", "--calib", str(tmp_path / "bad.npz"), "-o", str(out),
                 "-q"]) == 2
    err = capsys.readouterr().err
    assert "bad.npz" in err and "expects" in err and not out.exists()


def test_validate_fails_and_names_first_operator_when_rules_do_not_match(tmp_path, capsys, monkeypatch):
    """Pair LiteRT's reference kernels with XNNPACK's rounding: real differences, exit 1, first op named."""
    import mcc.validate

    model, example = ZOO["resnet18_style"]()
    src = tmp_path / "r.pt2"
    torch.export.save(torch.export.export(model, (example,)), src)
    rng = np.random.default_rng(3)
    np.savez(tmp_path / "calib.npz", x=rng.standard_normal((8, *example.shape[1:])).astype(np.float32))
    np.savez(tmp_path / "x.npz", x=rng.standard_normal((2, *example.shape[1:])).astype(np.float32))
    out = tmp_path / "r.tflite"
    assert main(["compile", str(src), "--target", "arm-int8", "--calib", str(tmp_path / "calib.npz"), "-o", str(out),
                 "-q"]) == 0
    monkeypatch.setitem(mcc.validate.RULES_FOR_KERNELS, "ref", "litert-xnnpack")
    assert main(["validate", str(out), "--input", str(tmp_path / "x.npz"), "--kernels", "ref"]) == 1
    text = capsys.readouterr().out
    assert "FAILED" in text and "first differing operator:" in text


def test_bad_observer_is_a_clear_error(tmp_path, capsys):
    model, example = ZOO["digits_classifier"](train=False)
    src = tmp_path / "d.pt2"
    torch.export.save(torch.export.export(model, (example,)), src)
    np.savez(tmp_path / "calib.npz", x=np.zeros((2, 1, 8, 8), np.float32))
    out = tmp_path / "o.tflite"
    assert main(["compile", str(src), "--target", "arm-int8", "--calib", str(tmp_path / "calib.npz"),
                 "--observer", "median", "-o", str(out), "-q"]) == 2
    assert "median" in capsys.readouterr().err and not out.exists()


class _SplitBranches(torch.nn.Module):
    """A conv's channels split four ways, two parts through their own depthwise conv, then joined (pytorchcv
    fpenet's int8 graph has such unread SPLIT outputs): XNNPACK does not compute or expose the unread parts."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.branches = torch.nn.ModuleList(torch.nn.Conv2d(4, 4, 3, padding=1, groups=4) for _ in range(2))

    def forward(self, x):
        parts = torch.chunk(self.conv(x), 4, dim=1)
        return torch.cat([b(p) for b, p in zip(self.branches, parts[::2])], dim=1)


def test_validate_compares_what_xnnpack_exposes_and_lists_the_rest(tmp_path, capsys):
    x = torch.zeros(1, 3, 8, 8)
    torch.export.save(torch.export.export(_SplitBranches().eval(), (x,)), tmp_path / "m.pt2")
    np.savez(tmp_path / "calib.npz", x=np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32))
    out = tmp_path / "m.tflite"
    assert main(["compile", str(tmp_path / "m.pt2"), "--target", "arm-int8", "--calib", str(tmp_path / "calib.npz"),
                 "-o", str(out), "-q"]) == 0
    code, report = _validate(capsys, out, tmp_path / "calib.npz")
    assert code == 0
    ref, xnnpack = report["comparisons"]
    assert ref["not_exposed"] == [] and xnnpack["not_exposed"], xnnpack["not_exposed"]
    assert all(":" in name for name in xnnpack["not_exposed"])   # the SPLIT's outputs
    assert xnnpack["differing"] == 0 and xnnpack["elements"] > 0
    compared = {t["tensor"] for t in xnnpack["tensors"] if t["exposed"]}
    assert compared >= {t["tensor"] for t in ref["tensors"]} - set(xnnpack["not_exposed"])
