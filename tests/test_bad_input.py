"""Bad input through the CLI: one-paragraph error naming the file and the problem, exit 2, no output left behind."""

import json
import zipfile

import numpy as np
import pytest
import torch
from bad_inputs import Cumsum as Unsupported
from bad_inputs import Tiny, rewrite_zip

from mcc.cli import main


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    path = tmp_path_factory.mktemp("good") / "tiny.pt2"
    torch.export.save(torch.export.export(Tiny().eval(), (torch.randn(1, 1, 6, 6),)), path)
    return path


def _compile(capsys, src, out):
    code = main(["compile", str(src), "--target", "arm-fp32", "-o", str(out), "-q"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".mcc-")]
    assert err.startswith("mcc: error:") and err.count("\n") == 1
    return err


def test_missing_file(tmp_path, capsys):
    err = _compile(capsys, tmp_path / "nope.pt2", tmp_path / "o.tflite")
    assert "nope.pt2" in err


def test_truncated_pt2(good, tmp_path, capsys):
    bad = tmp_path / "cut.pt2"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    err = _compile(capsys, bad, tmp_path / "o.tflite")
    assert "cut.pt2" in err


def test_corrupt_bytes_in_pt2(good, tmp_path, capsys):
    data = bytearray(good.read_bytes())
    data[len(data) // 3: len(data) // 3 + 200] = b"\x00" * 200
    bad = tmp_path / "corrupt.pt2"
    bad.write_bytes(bytes(data))
    err = _compile(capsys, bad, tmp_path / "o.tflite")
    assert "corrupt.pt2" in err


def _program_edited(good, tmp_path, edit):
    """`good` with its serialized program (models/model.json) changed by edit(program), CRCs valid."""
    with zipfile.ZipFile(good) as z:
        program = json.loads(z.read(next(n for n in z.namelist() if n.endswith("models/model.json"))))
    edit(program)
    return rewrite_zip(good, tmp_path / "edited.pt2", {"models/model.json": json.dumps(program).encode()})


def test_pt2_signature_without_a_graph_input(good, tmp_path, capsys):
    """A graph input the program's signature does not describe (found by tests/fuzz/pt2_fuzz.py)."""
    def rename(program):
        program["graph_module"]["signature"]["input_specs"][0]["parameter"]["arg"]["name"] = "renamed"
    err = _compile(capsys, _program_edited(good, tmp_path, rename), tmp_path / "o.tflite")
    assert "edited.pt2" in err and "no entry in the program's graph signature" in err


def test_pt2_argument_given_twice(good, tmp_path, capsys):
    """The conv's bias with an argument kind that is neither positional nor keyword (a damage found by
    tests/fuzz/pt2_fuzz.py): torch's reader passes it by keyword and the arguments after it by position, so bias
    arrives twice; the archive's fault, not an error inside mcc."""
    def twice(program):
        conv = next(n for n in program["graph_module"]["graph"]["nodes"] if "conv2d" in n["target"])
        next(a for a in conv["inputs"] if a["name"] == "bias")["kind"] = -(1 << 32)
    padded = tmp_path / "padded.pt2"  # padding is recorded after bias (defaults are left out)
    torch.export.save(torch.export.export(torch.nn.Conv2d(1, 2, 3, padding=1).eval(), (torch.randn(1, 1, 6, 6),)),
                      padded)
    err = _compile(capsys, _program_edited(padded, tmp_path, twice), tmp_path / "o.tflite")
    assert "edited.pt2" in err and "conv2d" in err and "arguments do not fit" in err


def test_other_format_with_torch_extension(tmp_path, capsys):
    png = tmp_path / "picture.pt"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    err = _compile(capsys, png, tmp_path / "o.tflite")
    assert "picture.pt" in err


def test_unsupported_op_names_op_and_node(tmp_path, capsys):
    src = tmp_path / "cumsum.pt2"
    torch.export.save(torch.export.export(Unsupported(), (torch.randn(1, 4),)), src)
    err = _compile(capsys, src, tmp_path / "o.tflite")
    assert "cumsum" in err and "cumsum.pt2" in err


def test_output_in_missing_folder(good, tmp_path, capsys):
    out = tmp_path / "no" / "such" / "dir" / "o.tflite"
    code = main(["compile", str(good), "--target", "arm-fp32", "-o", str(out), "-q"])
    err = capsys.readouterr().err
    assert code == 2 and "does not exist" in err and not out.parent.exists()


def test_pickled_module_refused_without_trust(tmp_path, capsys):
    src = tmp_path / "whole.pt"
    torch.save(Tiny().eval(), src)
    err = _compile(capsys, src, tmp_path / "o.tflite")
    assert "--trust-pickle" in err


def test_unknown_target(good, tmp_path, capsys):
    code = main(["compile", str(good), "--target", "mips-fp64", "-o", str(tmp_path / "o.tflite"), "-q"])
    err = capsys.readouterr().err
    assert code == 2 and "mips-fp64" in err and "arm-fp32" in err and not (tmp_path / "o.tflite").exists()


def test_run_with_wrong_input_shape(good, tmp_path, capsys):
    out = tmp_path / "tiny.tflite"
    assert main(["compile", str(good), "--target", "arm-fp32", "-o", str(out), "-q"]) == 0
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 5, 5), np.float32))
    code = main(["run", str(out), "--input", str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npz")])
    err = capsys.readouterr().err
    assert code == 2 and "expects" in err and not (tmp_path / "y.npz").exists()
