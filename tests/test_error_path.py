"""One error path: a bug in mcc is exit 3 with a two-line message and the traceback saved to a file; an OSError on
a user's file is exit 2 naming it; library log records never reach stderr."""

import logging
import re
from pathlib import Path

import pytest

import mcc.cli
from mcc.cli import main


def test_internal_error_is_exit_3_with_the_traceback_saved(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)

    def broken(args):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(mcc.cli, "_cmd_targets", broken)
    assert main(["targets"]) == 3
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 2
    assert "internal error, please report" in err and "ZeroDivisionError: a bug" in err
    saved = Path(re.search(r"with the file (\S+)", err).group(1))
    assert saved.parent == tmp_path
    text = saved.read_text()
    assert "Traceback" in text and "broken" in text and "command:" in text


def test_os_error_on_a_user_file_is_exit_2_naming_it(monkeypatch, capsys, tmp_path):
    def denied(args):
        raise PermissionError(13, "Permission denied", str(tmp_path / "model.pt2"))

    monkeypatch.setattr(mcc.cli, "_cmd_targets", denied)
    assert main(["targets"]) == 2
    err = capsys.readouterr().err
    assert err == f"mcc: error: {tmp_path / 'model.pt2'}: permission denied: check the file's and its folder's permissions\n"


def test_library_log_records_stay_off_stderr(monkeypatch, capsys):
    def noisy(args):
        logging.getLogger("torch.export").error("a 15-line traceback from torch")
        raise mcc.cli.MccError("the one line that says what to do")

    monkeypatch.setattr(mcc.cli, "_cmd_targets", noisy)
    assert main(["targets"]) == 2
    assert capsys.readouterr().err == "mcc: error: the one line that says what to do\n"


def test_keyboard_interrupt_is_not_an_internal_error(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(mcc.cli, "_cmd_targets", interrupted)
    assert main(["targets"]) == 130
    assert capsys.readouterr().err == "mcc: interrupted\n"


@pytest.mark.parametrize("size,ok", [(255, True), (256, False)])
def test_output_names_up_to_the_file_system_limit(tmp_path, capsys, size, ok):
    import torch
    from torch import nn

    src = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(nn.ReLU(), (torch.randn(1, 4),)), src)
    out = tmp_path / ("a" * (size - len(".tflite")) + ".tflite")
    assert main(["compile", str(src), "--target", "arm-fp32", "-o", str(out), "-q"]) == (0 if ok else 2)
    assert (out.name in [p.name for p in tmp_path.iterdir()]) == ok  # exists() itself fails on a name too long
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".mcc-")] == []
    if not ok:
        assert "too long" in capsys.readouterr().err


def test_validate_keeps_native_library_lines_off_stderr(capfd):
    examples = Path(__file__).resolve().parents[1] / "examples"
    code = main(["validate", str(examples / "mobilenet_v2_style_int8.tflite"), "--input",
                 str(examples / "mobilenet_v2_style_samples.npz"), "--kernels", "default"])
    err = capfd.readouterr().err
    assert code == 0
    assert err.splitlines() == ["comparing with LiteRT default kernels on 64 samples"]  # no XNNPACK INFO line
