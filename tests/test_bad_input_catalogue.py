"""The bad-input catalogue: every way a user's model, data, arguments or file system can be wrong, through the CLI.

Each case builds its bad input, runs `mcc ...` and checks what the user sees: exit code 2; stderr of one line,
`mcc: error: ...`, naming the problem and the file (node, tensor) concerned, with no traceback and no library
noise; no output file and no temporary file (`.mcc-*.tmp`) left behind. argparse's own usage errors exit 2 with
its usage text. Cases that depend on file permissions run the CLI in a child process that permissions apply to
when the tests run as root (bad_inputs.run_unprivileged); all others run in-process.

A case is a function that builds the input in `env.root` and returns the command line, registered with what
the message must contain: strings (case-insensitive), tuples of alternatives, or regular expressions.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

import bad_inputs as bi
from mcc.cli import main


class Shared:
    """Models every case may start from, built once per test process, on first use."""

    def __init__(self, root: Path):
        self.root = root

    @functools.cached_property
    def pt2(self) -> Path:
        return bi.export_pt2(bi.tiny_module(), self.root / "tiny.pt2")

    @functools.cached_property
    def tflite(self) -> Path:
        out = self.root / "tiny.tflite"
        assert main(["compile", str(self.pt2), "--target", "arm-fp32", "-o", str(out), "-q"]) == 0
        return out

    @functools.cached_property
    def nan_pt2(self) -> Path:
        return bi.export_pt2(bi.tiny_module(float("nan")), self.root / "nan_weight.pt2")

    @functools.cached_property
    def inf_pt2(self) -> Path:
        return bi.export_pt2(bi.tiny_module(float("inf")), self.root / "inf_weight.pt2")


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    return Shared(tmp_path_factory.mktemp("shared"))


@dataclass
class Env:
    root: Path
    shared: Shared

    @property
    def out(self) -> Path:
        return self.root / "out.tflite"

    @property
    def marker(self) -> Path:
        return self.root / "pickle-was-executed"

    def write(self, name: str, data: bytes) -> Path:
        p = self.root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        return p

    def copy(self, src: Path, name: str | None = None) -> Path:
        return Path(shutil.copy(src, self.root / (name or src.name)))

    def npz(self, name: str, **arrays) -> Path:
        return self.write(name, bi.npz_bytes(**arrays))

    def images(self, n: int = 2) -> np.ndarray:
        return np.random.default_rng(1).random((n, *bi.IMAGE_SHAPE[1:]), dtype=np.float32)

    def compile(self, model, *extra) -> list:
        return ["compile", model, "--target", "arm-fp32", "-o", self.out, "-q", *extra]

    def compile_int8(self, model, calib, *extra) -> list:
        return ["compile", model, "--target", "arm-int8", "--calib", calib, "-o", self.out, "-q", *extra]

    def run(self, data) -> list:
        return ["run", self.copy(self.shared.tflite), "--input", data, "-o", self.root / "y.npz"]


@dataclass
class Case:
    id: str
    build: Callable[[Env], list]
    expect: tuple = ()
    code: int = 2
    usage: bool = False          # an argparse usage error: usage text on stderr, not mcc's one line
    unprivileged: bool = False   # needs file permissions to apply (a child process when running as root)
    check: Callable[[Env], None] | None = None
    creates: Callable[[Env], Path] | None = None  # for code 0: the output that must exist


CASES: list[Case] = []


def case(id, *expect, **kw):
    def register(build):
        CASES.append(Case(id, build, expect, **kw))
        return build
    return register


def no_pickle_executed(env: Env) -> None:
    assert not env.marker.exists(), "a pickle from the model file was executed"


# ====================================================================================== .pt2 / torch archives


@case("pt2-truncated", "cut.pt2", ("truncated", "corrupt"))
def _(env):
    data = env.shared.pt2.read_bytes()
    return env.compile(env.write("cut.pt2", data[: len(data) // 2]))


@case("pt2-crc-corrupt", "crc.pt2", "crc")
def _(env):
    return env.compile(bi.flip_member_byte(env.shared.pt2, env.root / "crc.pt2", "data/weights/weight_0"))


@case("pt2-png-renamed", "picture.pt2", ("not a model format", "png"))
def _(env):
    return env.compile(env.write("picture.pt2", b"\x89PNG\r\n\x1a\n" + bytes(100)))


@case("pt2-empty-file", "empty.pt2", "empty")
def _(env):
    return env.compile(env.write("empty.pt2", b""))


@case("pt2-zip-not-torch", "notes.pt2", "zip", ("not a pytorch", "not a torch"))
def _(env):
    return env.compile(env.write("notes.pt2", bi.zip_bytes({"readme.txt": b"hello"})))


@case("pt2-hostile-sample-inputs", "hostile.pt2", "--trust-pickle", check=no_pickle_executed)
def _(env):
    bad = bi.rewrite_zip(env.shared.pt2, env.root / "hostile.pt2",
                         {"data/sample_inputs/model.pt": bi.hostile_pickle(env.marker)})
    return env.compile(bad)


@case("pt2-hostile-sample-inputs-torch-save", "hostile.pt2", "--trust-pickle", check=no_pickle_executed)
def _(env):
    bad = bi.rewrite_zip(env.shared.pt2, env.root / "hostile.pt2",
                         {"data/sample_inputs/model.pt": bi.hostile_torch_save(env.marker)})
    return env.compile(bad)


@case("pt2-hostile-pickled-weight", "weights.pt2", "--trust-pickle", check=no_pickle_executed)
def _(env):
    return env.compile(bi.pickled_weight_archive(env.shared.pt2, env.root / "weights.pt2",
                                                 bi.hostile_pickle(env.marker)))


@case("pt2-hostile-pickled-weight-torch-save", "weights.pt2", "--trust-pickle", check=no_pickle_executed)
def _(env):
    return env.compile(bi.pickled_weight_archive(env.shared.pt2, env.root / "weights.pt2",
                                                 bi.hostile_torch_save(env.marker)))


@case("pt2-trusted-archive-loads", code=0, creates=lambda env: env.out)
def _(env):
    return env.compile(env.copy(env.shared.pt2), "--trust-pickle")


@case("pt2-trusted-pickled-weight-loads", code=0, creates=lambda env: env.out)
def _(env):
    weight = bi.torch_save_bytes(bi.tiny_module().conv.weight)  # a legitimate pickled nn.Parameter
    return env.compile(bi.pickled_weight_archive(env.shared.pt2, env.root / "weights.pt2", weight), "--trust-pickle")


@case("pt2-unsupported-op", "cumsum.pt2", "cumsum")
def _(env):
    return env.compile(bi.export_pt2(bi.Cumsum(), env.root / "cumsum.pt2", shape=(1, 4)))


@case("torchscript-without-input-shape", "scripted.pt", "--input-shape")
def _(env):
    path = env.root / "scripted.pt"
    torch.jit.save(torch.jit.trace(bi.tiny_module(), torch.zeros(bi.IMAGE_SHAPE)), str(path))
    return env.compile(path)


@case("pickled-module-without-trust", "whole.pt", "--trust-pickle", check=no_pickle_executed)
def _(env):
    path = env.root / "whole.pt"
    torch.save(bi.tiny_module(), path)
    return env.compile(path)


@case("pickled-module-trusted-without-input-shape", "whole.pt", "--input-shape")
def _(env):
    path = env.root / "whole.pt"
    torch.save(bi.tiny_module(), path)
    return env.compile(path, "--trust-pickle")


@case("state-dict", "weights_only.pt", "state_dict")
def _(env):
    path = env.root / "weights_only.pt"
    torch.save(bi.tiny_module().state_dict(), path)
    return env.compile(path)


@case("torch-save-of-a-tensor", "tensor.pt", "tensor", "not a model")
def _(env):
    path = env.root / "tensor.pt"
    torch.save(torch.zeros(3), path)
    return env.compile(path)


# ====================================================================================== ONNX


def onnx_case(id, *expect, **kw):
    """A case whose build(env) returns a bad ONNX model (or its path) to compile; the file is 'model.onnx'."""
    def register(make):
        def build(env):
            model = make(env)
            path = model if isinstance(model, Path) else bi.save_onnx(model, env.root / "model.onnx")
            return env.compile(path)
        CASES.append(Case(id, build, ("model.onnx", *expect), **kw))
        return make
    return register


@onnx_case("onnx-negative-initializer-dims", "conv_w", ("negative", "-2"))
def _(env):
    m = bi.onnx_conv()
    bi.initializer(m, "conv_w").dims[0] = -2
    return m


@onnx_case("onnx-no-outputs", ("no output", "no graph output", "without output", "0 outputs", "no outputs"))
def _(env):
    m = bi.onnx_conv()
    del m.graph.output[:]
    return m


@onnx_case("onnx-duplicate-output-name", "logits",
           ("more than one", "twice", "duplicate", "two nodes", "already", "both", "several", "2 nodes"))
def _(env):
    m = bi.onnx_conv()
    m.graph.node.append(helper.make_node("Sigmoid", ["conv_out"], ["logits"], name="sigmoid0"))
    return m


@onnx_case("onnx-conv-weight-zero-dim", "conv_w", ("zero", "empty", "0,", "no element"))
def _(env):
    return bi.onnx_conv(np.zeros((0, 1, 3, 3), np.float32))


@onnx_case("onnx-output-not-produced", "ghost_out")
def _(env):
    m = bi.onnx_conv()
    m.graph.output.append(helper.make_tensor_value_info("ghost_out", TensorProto.FLOAT, [1, 2, 4, 4]))
    return m


@onnx_case("onnx-initializer-shorter-than-dims", "conv_w", ("bytes", "short", "size", "holds"))
def _(env):
    m = bi.onnx_conv()
    t = bi.initializer(m, "conv_w")
    t.raw_data = t.raw_data[:10]
    return m


@onnx_case("onnx-undefined-element-type", "conv_w", ("undefined", "element type", "data type", "dtype"))
def _(env):
    m = bi.onnx_conv()
    bi.initializer(m, "conv_w").data_type = TensorProto.UNDEFINED
    return m


@onnx_case("onnx-unknown-element-type", "conv_w", ("99", "unknown", "element type", "data type"))
def _(env):
    m = bi.onnx_conv()
    bi.initializer(m, "conv_w").data_type = 99
    return m


@onnx_case("onnx-input-undefined-element-type", "image", ("undefined", "element type", "data type", "float32"))
def _(env):
    m = bi.onnx_conv()
    m.graph.input[0].type.tensor_type.elem_type = TensorProto.UNDEFINED
    return m


@onnx_case("onnx-uint16-input", "image", "uint16")
def _(env):
    m = bi.onnx_conv()
    m.graph.input[0].type.tensor_type.elem_type = TensorProto.UINT16
    return m


@onnx_case("onnx-non-utf8-op-type", ("utf-8", "utf8", "op_type", "op type", "decode", "parse"))
def _(env):
    m = bi.onnx_conv()
    m.graph.node[1].op_type = "QQQQ"
    data = m.SerializeToString()
    assert data.count(b"QQQQ") == 1
    return env.write("model.onnx", data.replace(b"QQQQ", b"\xffQ\xfeQ"))


@onnx_case("onnx-truncated", ("truncated", "corrupt"))
def _(env):
    data = bi.onnx_conv().SerializeToString()
    return env.write("model.onnx", data[: len(data) * 2 // 3])


@onnx_case("onnx-opset-6", "opset 6", "7")
def _(env):
    return bi.onnx_conv(opset=6)


@onnx_case("onnx-already-quantized", "quantized", "QuantizeLinear")
def _(env):
    m = bi.onnx_conv()
    m.graph.initializer.extend([onnx.numpy_helper.from_array(np.float32(0.1), "q_scale")])
    m.graph.node.insert(0, helper.make_node("QuantizeLinear", ["image", "q_scale"], ["q_image"], name="q0"))
    return m


@onnx_case("onnx-unsupported-ops-listed", "Frob", "frob0", "Det", "det0")
def _(env):
    m = bi.onnx_conv()
    m.graph.node[1].CopyFrom(helper.make_node("Frob", ["conv_out"], ["mid"], name="frob0", domain="com.acme"))
    m.graph.node.append(helper.make_node("Det", ["mid"], ["logits"], name="det0"))
    m.opset_import.append(helper.make_opsetid("com.acme", 1))
    return m


@onnx_case("onnx-cycle", "cycle")
def _(env):
    m = bi.onnx_conv()
    m.graph.node[0].input[0] = "logits"
    return m


@onnx_case("onnx-reads-undefined-tensor", "nowhere")
def _(env):
    m = bi.onnx_conv()
    m.graph.node[1].input[0] = "nowhere"
    return m


@onnx_case("onnx-symbolic-channels", "image", "--input-shape")
def _(env):
    m = bi.onnx_conv()
    m.graph.input[0].type.tensor_type.shape.dim[1].dim_param = "C"
    return m


def _onnx_with_args(id, args, *expect):
    @case(id, "model.onnx", *expect)
    def _(env):
        return env.compile(bi.save_onnx(bi.onnx_conv(), env.root / "model.onnx"), "--input-shape", args)


_onnx_with_args("onnx-input-shape-contradicts-model", "1,3,6,6", "image", "1, 3, 6, 6")
_onnx_with_args("onnx-input-shape-count", "1,1,6,6;1,1,6,6", "1 input", "2")


# ---------------------------------------------------------------------------- ONNX external data


def external_case(id, location, *expect, setup=None):
    """model/model.onnx with conv_w in external data at `location`; setup(env, weight bytes) writes the data."""
    @case(id, "model.onnx", *expect)
    def _(env):
        m = bi.onnx_conv()
        raw = bi.to_external(m, "conv_w", location)
        folder = env.root / "model"
        folder.mkdir()
        if setup is not None:
            setup(env, raw)
        return env.compile(bi.save_onnx(m, folder / "model.onnx"))


external_case("onnx-external-data-truncated", "weights.bin", ("weights.bin", "conv_w"),
              ("truncated", "short", "bytes", "size", "holds", "length"),
              setup=lambda env, raw: env.write("model/weights.bin", raw[:20]))
external_case("onnx-external-data-missing", "weights.bin", "weights.bin", ("missing", "no such", "not found"))
external_case("onnx-external-data-parent-escape", "../../etc/passwd", "../../etc/passwd",
              ("outside", "escape", "leave", "leaves", "not in", "within"))
external_case("onnx-external-data-absolute-path", "/etc/passwd", "/etc/passwd",
              ("outside", "absolute", "escape", "leave", "leaves", "not in", "within"))


def _symlink_out(env, raw):
    secret = env.write("elsewhere/secret.bin", raw)
    (env.root / "model" / "weights.bin").symlink_to(secret)


external_case("onnx-external-data-symlink-outside", "weights.bin", "weights.bin",
              ("outside", "link", "escape", "leave", "leaves", "not in", "within"), setup=_symlink_out)


# ====================================================================================== float .tflite sources


def tflite_case(id, edit, *expect):
    @case(id, "bad.tflite", *expect)
    def _(env):
        return env.compile(bi.edit_tflite(env.shared.tflite, env.root / "bad.tflite", edit))


tflite_case("tflite-no-outputs", bi.tflite_no_outputs,
            ("no output", "without output", "0 outputs", "no outputs", "has no"))
tflite_case("tflite-int32-input", bi.tflite_int32, "int32", ("input", "float32"))
tflite_case("tflite-operator-code-out-of-range", bi.tflite_bad_opcode, "corrupt")


@case("tflite-truncated", "cut.tflite", ("truncated", "corrupt"))
def _(env):
    data = env.shared.tflite.read_bytes()
    return env.compile(env.write("cut.tflite", data[: len(data) * 3 // 5]))


# ====================================================================================== NaN / Inf


@case("int8-nan-weight", ("conv.weight", "conv_weight"), "nan")
def _(env):
    return env.compile_int8(env.shared.nan_pt2, env.npz("calib.npz", image=env.images(4)))


@case("int8-inf-weight", ("conv.weight", "conv_weight"), "inf")
def _(env):
    return env.compile_int8(env.shared.inf_pt2, env.npz("calib.npz", image=env.images(4)))


def _poisoned_calib(env, value):
    x = env.images(5)
    x[3, 0, 2, 2] = value
    return env.compile_int8(env.shared.pt2, env.npz("calib.npz", image=x))


SAMPLE_3 = re.compile(r"(sample|index|row)\D{0,12}\b3\b", re.I)
case("calib-nan", "calib.npz", "image", "nan", SAMPLE_3)(lambda env: _poisoned_calib(env, np.nan))
case("calib-inf", "calib.npz", "image", "inf", SAMPLE_3)(lambda env: _poisoned_calib(env, -np.inf))


# ====================================================================================== file system


def _unreadable(path: Path) -> Path:
    path.chmod(0)
    return path


@case("fs-model-unreadable", "permission denied", "model.pt2", unprivileged=True)
def _(env):
    return env.compile(_unreadable(env.copy(env.shared.pt2, "model.pt2")))


@case("fs-output-folder-not-writable", "permission denied", "locked", unprivileged=True)
def _(env):
    locked = env.root / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    return ["compile", env.copy(env.shared.pt2), "--target", "arm-fp32", "-o", locked / "out.tflite", "-q"]


@case("fs-report-folder-not-writable", "permission denied", "locked", unprivileged=True)
def _(env):
    locked = env.root / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    return env.compile(env.copy(env.shared.pt2), "--report", locked / "report.json")


@case("fs-calib-unreadable", "permission denied", "calib.npz", unprivileged=True)
def _(env):
    return env.compile_int8(env.copy(env.shared.pt2), _unreadable(env.npz("calib.npz", image=env.images())))


@case("fs-run-input-unreadable", "permission denied", "x.npz", unprivileged=True)
def _(env):
    return env.run(_unreadable(env.npz("x.npz", image=env.images())))


@case("fs-onnx-external-data-unreadable", "permission denied", "weights.bin", unprivileged=True)
def _(env):
    m = bi.onnx_conv()
    raw = bi.to_external(m, "conv_w", "weights.bin")
    _unreadable(env.write("weights.bin", raw))
    return env.compile(bi.save_onnx(m, env.root / "model.onnx"))


NAME_255 = "n" * (255 - len(".tflite")) + ".tflite"


@case("fs-output-name-255-bytes-works", code=0, creates=lambda env: env.root / NAME_255)
def _(env):
    return ["compile", env.shared.pt2, "--target", "arm-fp32", "-o", env.root / NAME_255, "-q"]


@case("fs-output-name-256-bytes", "too long", "n" * 40)
def _(env):
    return ["compile", env.shared.pt2, "--target", "arm-fp32", "-o", env.root / ("n" + NAME_255), "-q"]


@case("fs-model-is-folder", "a_folder", "folder")
def _(env):
    (env.root / "a_folder").mkdir()
    return env.compile(env.root / "a_folder")


@case("fs-output-is-folder", "out_folder", "folder")
def _(env):
    (env.root / "out_folder").mkdir()
    return ["compile", env.shared.pt2, "--target", "arm-fp32", "-o", env.root / "out_folder", "-q"]


@case("fs-output-in-missing-folder", "no_such_dir", "does not exist")
def _(env):
    return ["compile", env.shared.pt2, "--target", "arm-fp32", "-o", env.root / "no_such_dir" / "o.tflite", "-q"]


@case("fs-report-in-missing-folder", "no_such_dir", "does not exist")
def _(env):
    return env.compile(env.shared.pt2, "--report", env.root / "no_such_dir" / "r.json")


@case("fs-model-missing", "nope.pt2", ("no such", "does not exist"))
def _(env):
    return env.compile(env.root / "nope.pt2")


@case("fs-model-dangling-symlink", "link.pt2", ("dangling", "link"), "gone.pt2")
def _(env):
    (env.root / "link.pt2").symlink_to(env.root / "gone.pt2")
    return env.compile(env.root / "link.pt2")


@case("fs-calib-missing", "nocalib.npz", ("no such", "does not exist"))
def _(env):
    return env.compile_int8(env.shared.pt2, env.root / "nocalib.npz")


@case("fs-calib-is-folder", "calib_dir", ("folder", "directory"))
def _(env):
    (env.root / "calib_dir").mkdir()
    return env.compile_int8(env.shared.pt2, env.root / "calib_dir")


# ====================================================================================== .npz / .npy data


@case("npz-object-array", "x.npz", ("pickle", "object"))
def _(env):
    return env.run(env.npz("x.npz", image=np.array([{"a": 1}, None], dtype=object)))


@case("npz-member-bad-crc", "x.npz", ("crc", "corrupt"))
def _(env):
    good = env.npz("good.npz", image=env.images())
    return env.run(bi.flip_member_byte(good, env.root / "x.npz", "image.npy"))


@case("npz-truncated", "x.npz", ("truncated", "corrupt", "not a readable"))
def _(env):
    data = bi.npz_bytes(image=env.images())
    return env.run(env.write("x.npz", data[: len(data) // 2]))


@case("npz-member-not-npy", "x.npz", "image", ("npy", "not an array", "not a numpy"))
def _(env):
    return env.run(env.write("x.npz", bi.zip_bytes({"image.npy": b"just some text, not an array"})))


@case("npz-no-arrays", "x.npz", ("no array", "empty", "[]"))
def _(env):
    return env.run(env.write("x.npz", bi.zip_bytes({})))


@case("npz-zero-samples-run", "x.npz", ("0 samples", "no samples", "zero samples", "empty"))
def _(env):
    return env.run(env.npz("x.npz", image=np.zeros((0, *bi.IMAGE_SHAPE[1:]), np.float32)))


@case("npz-zero-samples-calib", "calib.npz", ("0 samples", "no samples", "zero samples", "empty"))
def _(env):
    return env.compile_int8(env.shared.pt2, env.npz("calib.npz", image=np.zeros((0, *bi.IMAGE_SHAPE[1:]), np.float32)))


@case("npz-wrong-shape", "x.npz", "image", "expects")
def _(env):
    return env.run(env.npz("x.npz", image=np.zeros((2, 1, 5, 5), np.float32)))


@case("npz-missing-input-name", "x.npz", "image", "foo")
def _(env):
    return env.run(env.npz("x.npz", foo=env.images(), bar=env.images()))


@case("npz-integer-data-for-float-input", "x.npz", "image", "int32", "float32")
def _(env):
    return env.run(env.npz("x.npz", image=np.ones((2, *bi.IMAGE_SHAPE[1:]), np.int32)))


@case("npy-calib-wrong-rank", "calib.npy", "expects")
def _(env):
    path = env.root / "calib.npy"
    np.save(path, np.zeros((4, 36), np.float32))
    return env.compile_int8(env.shared.pt2, path)


@case("calib-text-file", "calib.csv", ("npz", "npy"))
def _(env):
    return env.compile_int8(env.shared.pt2, env.write("calib.csv", b"1,2,3\n4,5,6\n"))


@case("validate-input-integer-data", "x.npz", "int64")
def _(env):
    return ["validate", env.copy(env.shared.tflite), "--input",
            env.npz("x.npz", image=np.ones((2, *bi.IMAGE_SHAPE[1:]), np.int64))]


# ====================================================================================== command line


@case("cli-unknown-target", "mips-fp64", "arm-fp32")
def _(env):
    return ["compile", env.shared.pt2, "--target", "mips-fp64", "-o", env.out, "-q"]


@case("cli-input-shape-malformed", "--input-shape", "1,3,x")
def _(env):
    return env.compile(bi.save_onnx(bi.onnx_conv(), env.root / "model.onnx"), "--input-shape", "1,3,x")


@case("cli-input-shape-zero-dim", "--input-shape", "1,0,6,6")
def _(env):
    return env.compile(bi.save_onnx(bi.onnx_conv(), env.root / "model.onnx"), "--input-shape", "1,0,6,6")


@case("cli-observer-unknown", "observer", "bogus")
def _(env):
    return env.compile_int8(env.shared.pt2, env.npz("calib.npz", image=env.images()), "--observer", "bogus")


@case("cli-observer-percentile-not-a-number", "observer", "abc")
def _(env):
    return env.compile_int8(env.shared.pt2, env.npz("calib.npz", image=env.images()), "--observer", "percentile:abc")


@case("cli-int8-without-calib", "--calib", "arm-int8")
def _(env):
    return ["compile", env.shared.pt2, "--target", "arm-int8", "-o", env.out, "-q"]


@case("cli-io-int8-with-float-target", "--io", "arm-fp32")
def _(env):
    return env.compile(env.shared.pt2, "--io", "int8")


@case("cli-require-int8-with-float-target", "--require-int8", "arm-fp32")
def _(env):
    return env.compile(env.shared.pt2, "--require-int8")


@case("cli-inspect-after-unknown-pass", "nosuchpass")
def _(env):
    return ["inspect", env.shared.pt2, "--after", "nosuchpass"]


@case("cli-validate-non-model-file", "notes.txt", ("tflite", "onnx"))
def _(env):
    return ["validate", env.write("notes.txt", b"hello, world\n" * 10), "--input", env.npz("x.npz", image=env.images())]


@case("cli-validate-unknown-kernels", "bogus")
def _(env):
    return ["validate", env.copy(env.shared.tflite), "--input", env.npz("x.npz", image=env.images()),
            "--kernels", "bogus"]


@case("cli-run-on-pt2", "tiny.pt2", "mcc compile")
def _(env):
    return ["run", env.copy(env.shared.pt2), "--input", env.npz("x.npz", image=env.images()), "-o", env.root / "y.npz"]


@case("cli-run-unknown-rules", "bogus")
def _(env):
    return env.run(env.npz("x.npz", image=env.images())) + ["--rules", "bogus"]


def usage_case(id, args, *expect):
    case(id, *expect, usage=True)(lambda env: args(env))


usage_case("usage-no-command", lambda env: [], "required")
usage_case("usage-run-without-input", lambda env: ["run", env.root / "m.tflite"], "--input")
usage_case("usage-compile-without-target", lambda env: ["compile", env.root / "m.pt2"], "--target")
usage_case("usage-unknown-option", lambda env: ["compile", env.root / "m.pt2", "--target", "arm-fp32", "--fast"],
           "--fast")
usage_case("usage-io-bad-choice", lambda env: ["compile", env.root / "m.pt2", "--target", "arm-int8", "--io", "int4"],
           "int4")
usage_case("usage-unknown-command", lambda env: ["optimize", env.root / "m.pt2"], "optimize")


# ====================================================================================== the test


@pytest.fixture
def env(request, shared, tmp_path):
    c = request.node.callspec.params["c"]
    if not (c.unprivileged and os.geteuid() == 0):
        yield Env(tmp_path, shared)
        return
    root = Path(tempfile.mkdtemp(prefix="mcc-catalogue-"))  # under /tmp, so a child of another user can reach it
    root.chmod(0o777)
    try:
        yield Env(root, shared)
    finally:
        shutil.rmtree(root)


def _has(err: str, want) -> bool:
    if isinstance(want, tuple):
        return any(_has(err, w) for w in want)
    if isinstance(want, re.Pattern):
        return want.search(err) is not None
    return want.lower() in err.lower()


def _invoke(argv: list[str], env: Env, c: Case, capfd) -> tuple[int, str]:
    if c.unprivileged and os.geteuid() == 0:
        code, _, err = bi.run_unprivileged(argv, env.root)
        return code, err
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    return code, capfd.readouterr().err


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_bad_input(c: Case, env: Env, capfd):
    argv = [str(a) for a in c.build(env)]
    outputs = [Path(argv[i + 1]) for i, a in enumerate(argv[:-1]) if a in ("-o", "--output", "--report")]
    there_before = {p for p in outputs if os.path.lexists(p)}
    capfd.readouterr()  # what building the shared models printed
    code, err = _invoke(argv, env, c, capfd)
    shown = f"mcc {' '.join(argv)}\nexit {code}, stderr:\n{err}"

    if c.check is not None:
        c.check(env)
    assert code == c.code, shown
    assert "Traceback" not in err and "internal error" not in err, shown
    if c.code == 0:
        assert c.creates(env).is_file(), shown
    else:
        if c.usage:
            assert err.startswith("usage: mcc") and "error:" in err, shown
        else:
            lines = err.strip("\n").split("\n")
            assert len(lines) == 1 and lines[0].startswith("mcc: error: "), f"not one line of mcc's own:\n{shown}"
        missing = [w for w in c.expect if not _has(err, w)]
        assert not missing, f"the message does not say {missing}:\n{shown}"
        for p in outputs:
            assert p in there_before or not os.path.lexists(p), f"{p} left behind:\n{shown}"
    leftovers = [p for p in env.root.rglob(".mcc-*")]
    assert not leftovers, f"temporary files left behind: {leftovers}\n{shown}"


def test_catalogue_size():
    assert len(CASES) >= 60
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("what", ["onnx", "onnx-external-data", "run", "calib"])
def test_controls(what, shared, tmp_path, capfd):
    """The good inputs the cases damage work, so each case fails for its one defect."""
    env = Env(tmp_path, shared)
    if what == "onnx":
        argv = env.compile(bi.save_onnx(bi.onnx_conv(), tmp_path / "model.onnx"))
    elif what == "onnx-external-data":
        m = bi.onnx_conv()
        env.write("weights.bin", bi.to_external(m, "conv_w", "weights.bin"))
        argv = env.compile(bi.save_onnx(m, tmp_path / "model.onnx"))
    elif what == "run":
        argv = env.run(env.npz("x.npz", image=env.images()))
    else:
        argv = env.compile_int8(shared.pt2, env.npz("calib.npz", image=env.images(4)))
    assert main([str(a) for a in argv]) == 0, capfd.readouterr().err
