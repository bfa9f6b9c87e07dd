"""The `mcc` command line end to end on a small real model: compile with a report, run, inspect, targets."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from mcc.cli import main
from mcc.fileio import _umask
from mcc.runtime.litert import run_litert


class SmallNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 4 * 4, 5)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        x = nn.functional.max_pool2d(x, 2)
        return self.fc(torch.flatten(x, 1))


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    torch.manual_seed(0)
    model = SmallNet()
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(8, 3, 8, 8))
    model.eval()
    path = tmp_path_factory.mktemp("cli") / "small.pt2"
    torch.export.save(torch.export.export(model, (torch.randn(1, 3, 8, 8),)), path)
    return model, path


def test_compile_prints_table_and_writes_report(model_file, tmp_path, capsys):
    _, src = model_file
    out, report = tmp_path / "small.tflite", tmp_path / "report.json"
    assert main(["compile", str(src), "--target", "arm-fp32", "-o", str(out), "--report", str(report)]) == 0
    printed = capsys.readouterr()
    assert "total" in printed.out and "conv2d" in printed.out
    assert "loading" in printed.err and "done in" in printed.err
    r = json.loads(report.read_text())
    assert r["output"]["bytes"] == out.stat().st_size
    assert out.stat().st_mode & 0o777 == 0o666 & ~_umask()  # like a file open() creates, not mkstemp's 0600
    assert [p["pass"] for p in r["passes"]][:3] == ["fold_constants", "eliminate_dead", "fold_batchnorm"]
    bn = next(p for p in r["passes"] if p["pass"] == "fold_batchnorm")
    assert bn["after"]["nodes"] < bn["before"]["nodes"]
    assert sum(layer["params"] for layer in r["layers"]) == r["output"]["totals"]["params"]
    conv = next(layer for layer in r["layers"] if layer["op"] == "conv2d")
    assert conv["macs"] == 8 * 8 * 8 * 3 * 3 * 3
    assert r["output"]["inputs"][0]["layout"] == "NHWC" and r["source"]["inputs"][0]["layout"] == "NCHW"


def test_run_matches_litert_and_torch(model_file, tmp_path, capsys):
    model, src = model_file
    out = tmp_path / "small.tflite"
    assert main(["compile", str(src), "--target", "arm-fp32", "-o", str(out), "-q"]) == 0
    x = np.random.default_rng(1).standard_normal((4, 3, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "x.npz", x=x)
    assert main(["run", str(out), "--input", str(tmp_path / "x.npz"), "-o", str(tmp_path / "y.npz")]) == 0
    assert "transposed to the model's NHWC" in capsys.readouterr().err
    y = np.load(tmp_path / "y.npz")
    (name,) = y.files
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    assert np.abs(y[name] - expected).max() <= 1e-4 * (expected.max() - expected.min())
    data = out.read_bytes()
    for i in range(4):
        lite = run_litert(data, {"x": x[i:i + 1].transpose(0, 2, 3, 1).copy()})[name]
        assert np.abs(y[name][i:i + 1] - lite).max() <= 1e-5 * (np.abs(lite).max())


def test_inspect_shows_ir_and_stages(model_file, capsys):
    _, src = model_file
    assert main(["inspect", str(src)]) == 0
    text = capsys.readouterr().out
    assert text.startswith("mcc-ir 1") and "batch_norm" in text and "@NCHW" in text
    assert main(["inspect", str(src), "--after", "to_nhwc"]) == 0
    text = capsys.readouterr().out
    assert "batch_norm" not in text and "@NHWC" in text and "@NCHW" not in text


def test_targets_lists_arm_fp32(capsys):
    assert main(["targets"]) == 0
    assert "arm-fp32" in capsys.readouterr().out


def test_validate_float_model(model_file, tmp_path, capsys):
    _, src = model_file
    out = tmp_path / "small.tflite"
    assert main(["compile", str(src), "--target", "arm-fp32", "-o", str(out), "-q"]) == 0
    np.savez(tmp_path / "x.npz", x=np.random.default_rng(2).standard_normal((2, 3, 8, 8)).astype(np.float32))
    assert main(["validate", str(out), "--input", str(tmp_path / "x.npz"), "--reference", str(src), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and [c["kernels"] for c in report["comparisons"]] == ["ref", "default"]
    ref = report["comparisons"][0]
    assert not ref["exact"] and ref["differing"] == 0
    assert {t["op"] for t in ref["tensors"]} >= {"conv2d", "max_pool2d", "fully_connected"}
    assert ref["elements"] == 2 * sum(t["elements"] // 2 for t in ref["tensors"])
    fid = next(iter(report["fidelity"].values()))
    assert fid["sqnr_db"] > 80 and fid["top1_agreement"] == 1.0


def test_inspect_tflite_as_file_and_after_a_pass(model_file, tmp_path, capsys):
    _, src = model_file
    out = tmp_path / "small.tflite"
    assert main(["compile", str(src), "--target", "arm-fp32", "-o", str(out), "-q"]) == 0
    assert main(["inspect", str(out)]) == 0
    assert "fully_connected" in capsys.readouterr().out
    assert main(["inspect", str(out), "--after", "to_nhwc"]) == 0
    text = capsys.readouterr().out
    assert "@NHWC" in text and "@NCHW" not in text
