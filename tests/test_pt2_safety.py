""".pt2 archives never run code without --trust-pickle: payloads in every member torch would unpickle or evaluate.

Each payload, when run, creates a marker file. Without trust mcc must refuse the archive (exit 2, naming the member
and --trust-pickle) and the marker must not appear; with --trust-pickle torch's own loader reads the archive, runs
the payload (which proves the payload is live) and the model compiles.
"""

import io
import json
import zipfile

import pytest
import torch
from torch import nn

from mcc.cli import main
from mcc.frontend.pickle_scan import pickle_imports, unsafe_imports


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)

    def forward(self, x):
        return torch.relu(self.conv(x))


class _Payload:
    """Pickles to a call of eval(source): the way an attacker makes a pickle run code."""

    def __init__(self, source):
        self.source = source

    def __reduce__(self):
        return eval, (self.source,)


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    path = tmp_path_factory.mktemp("pt2") / "net.pt2"
    torch.export.save(torch.export.export(Net().eval(), (torch.randn(1, 1, 6, 6),)), path)
    return path


def _rewrite(src, dst, change):
    """Copy the zip archive `src` to `dst` with `change(members: dict[name, bytes])` applied (CRCs stay valid)."""
    with zipfile.ZipFile(src) as z:
        members = {n: z.read(n) for n in z.namelist()}
    change(members)
    with zipfile.ZipFile(dst, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return dst


def _member(members, tail):
    return next(n for n in members if n.endswith(tail))


def _compile(src, out, *extra):
    return main(["compile", str(src), "--target", "arm-fp32", "-o", str(out), "-q", *extra])


def _marker_code(marker, value):
    return f"open({str(marker)!r}, 'w').close() or {value}"


def _refused_unless_trusted(bad, marker, capsys, *words):
    """Without trust: exit 2 naming `words` and --trust-pickle, no output, the payload never ran. With
    --trust-pickle torch's own loader reads the archive and runs the payload (so it was live) and the model
    compiles."""
    out = bad.with_suffix(".tflite")
    assert _compile(bad, out) == 2
    err = capsys.readouterr().err
    assert all(w in err for w in (*words, "--trust-pickle")), err
    assert not marker.exists() and not out.exists()
    assert _compile(bad, out, "--trust-pickle") == 0
    assert marker.exists() and out.exists()


def test_sample_inputs_payload_is_refused_and_never_runs(archive, tmp_path, capsys):
    marker = tmp_path / "ran"
    buf = io.BytesIO()
    torch.save(_Payload(_marker_code(marker, "((__import__('torch').zeros(1, 1, 6, 6),), {})")), buf)
    payload = buf.getvalue()
    bad = _rewrite(archive, tmp_path / "sample.pt2",
                   lambda m: m.__setitem__(_member(m, "data/sample_inputs/model.pt"), payload))
    _refused_unless_trusted(bad, marker, capsys, "sample_inputs", "eval")


def test_pickled_weight_is_refused_and_never_runs(archive, tmp_path, capsys):
    marker = tmp_path / "ran"

    def change(m):
        config_name = _member(m, "data/weights/model_weights_config.json")
        config = json.loads(m[config_name])
        entry = config["config"]["conv.weight"]
        entry["use_pickle"] = True
        weight = torch.frombuffer(bytearray(m[_member(m, f"data/weights/{entry['path_name']}")]), dtype=torch.float32)
        buf = io.BytesIO()
        rebuilt = f"torch.nn.Parameter(torch.tensor({weight[:18].tolist()}).reshape(2, 1, 3, 3))"
        torch.save(_Payload(_marker_code(marker, f"(lambda torch: {rebuilt})(__import__('torch'))")), buf)
        m[_member(m, f"data/weights/{entry['path_name']}")] = buf.getvalue()
        m[config_name] = json.dumps(config).encode()

    _refused_unless_trusted(_rewrite(archive, tmp_path / "weight.pt2", change), marker, capsys, "conv.weight",
                            "pickled")


def test_symbolic_expression_is_refused_before_sympy_sees_it(archive, tmp_path, capsys):
    marker = tmp_path / "ran"

    def change(m):
        name = _member(m, "models/model.json")
        program = json.loads(m[name])
        program["range_constraints"] = {f"__import__('os').mknod({str(marker)!r})": {"min_val": 0, "max_val": 9}}
        m[name] = json.dumps(program).encode()

    bad = _rewrite(archive, tmp_path / "sym.pt2", change)
    assert _compile(bad, tmp_path / "o.tflite") == 2
    assert "dynamic" in capsys.readouterr().err
    assert not marker.exists()


@pytest.mark.parametrize("target", ["torch.load", "torch.ops.aten.__class__.__init__"])
def test_call_target_outside_torch_operators_is_refused(archive, tmp_path, capsys, target):
    def change(m):
        name = _member(m, "models/model.json")
        text = m[name].decode()
        assert "torch.ops.aten.relu.default" in text
        m[name] = text.replace("torch.ops.aten.relu.default", target).encode()

    bad = _rewrite(archive, tmp_path / "target.pt2", change)
    assert _compile(bad, tmp_path / "o.tflite") == 2
    assert f"'{target}'" in capsys.readouterr().err


@pytest.mark.parametrize("member", ["data/weights/model.pt", "data/constants/model.pt"])
def test_legacy_pickled_payload_members_are_refused(archive, tmp_path, capsys, member):
    bad = _rewrite(archive, tmp_path / "legacy.pt2", lambda m: m.__setitem__(
        _member(m, "archive_format").replace("archive_format", member), b"\x80\x04N."))
    assert _compile(bad, tmp_path / "o.tflite") == 2
    err = capsys.readouterr().err
    assert member in err and "--trust-pickle" in err


def test_weight_bytes_shorter_than_the_tensor_are_refused(archive, tmp_path, capsys):
    def change(m):
        config = json.loads(m[_member(m, "data/weights/model_weights_config.json")])
        name = _member(m, f"data/weights/{config['config']['conv.weight']['path_name']}")
        m[name] = m[name][:16]

    bad = _rewrite(archive, tmp_path / "short.pt2", change)
    assert _compile(bad, tmp_path / "o.tflite") == 2
    err = capsys.readouterr().err
    assert "conv.weight" in err and "damaged" in err


def test_pickle_scan_follows_stack_global_through_the_memo():
    import os
    import pickle

    class Evil:
        def __reduce__(self):
            return os.system, ("true",)

    for protocol in range(0, pickle.HIGHEST_PROTOCOL + 1):
        assert pickle_imports(pickle.dumps(Evil(), protocol=protocol)) == [f"{os.system.__module__}.system"]
    buf = io.BytesIO()
    torch.save({"w": torch.ones(2)}, buf)
    assert unsafe_imports(buf.getvalue()) == []
    with pytest.raises(ValueError):
        pickle_imports(b"not a pickle at all")
