"""Non-finite numbers in weights and calibration data: refused for int8 (no scale represents them), a warning for
float targets, and the error names the tensor, the input and the sample."""

import numpy as np
import pytest
import torch
from torch import nn

from mcc.cli import main


def _model(tmp_path, value):
    conv = nn.Conv2d(1, 2, 3)
    with torch.no_grad():
        conv.weight[1, 0, 1, 1] = value
    path = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(nn.Sequential(conv, nn.ReLU()).eval(), (torch.randn(1, 1, 6, 6),)), path)
    return path


def _calib(tmp_path, bad_sample=None):
    x = np.random.default_rng(0).normal(size=(8, 1, 6, 6)).astype(np.float32)
    if bad_sample is not None:
        x[bad_sample, 0, 2, 2] = np.nan
    path = tmp_path / "calib.npz"
    np.savez(path, x=x)
    return path


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_nonfinite_weight_is_refused_for_int8(tmp_path, capsys, value):
    out = tmp_path / "o.tflite"
    code = main(["compile", str(_model(tmp_path, value)), "--target", "arm-int8", "--calib", str(_calib(tmp_path)),
                 "-o", str(out), "-q"])
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert "weight" in err and "NaN or infinite" in err and "m.pt2" in err


def test_nonfinite_weight_is_a_warning_for_float(tmp_path, capsys):
    out = tmp_path / "o.tflite"
    assert main(["compile", str(_model(tmp_path, float("nan"))), "--target", "arm-fp32", "-o", str(out), "-q"]) == 0
    err = capsys.readouterr().err
    assert out.exists() and err.startswith("mcc: warning:") and "NaN or infinite" in err


def test_nonfinite_calibration_sample_is_named(tmp_path, capsys):
    out = tmp_path / "o.tflite"
    code = main(["compile", str(_model(tmp_path, 0.5)), "--target", "arm-int8", "--calib",
                 str(_calib(tmp_path, bad_sample=5)), "-o", str(out), "-q"])
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert "calibration input" in err and "sample 5" in err and "calib.npz" in err
