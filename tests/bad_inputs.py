"""Builders for tests/test_bad_input_catalogue.py: damaged archives, malformed ONNX and TFLite files, hostile
pickles, and running the CLI as a user whom file permissions apply to.

Every bad input is made here from a small good one, so each case states its one defect.
"""

from __future__ import annotations

import ctypes
import functools
import io
import os
import pickle
import pwd
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

# ---------------------------------------------------------------------------------------------------- PyTorch


class Tiny(nn.Module):
    """One conv: input 'image' [1, 1, 6, 6] -> [1, 2, 4, 4]."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)

    def forward(self, image):
        return self.conv(image)


class Cumsum(nn.Module):
    def forward(self, image):
        return torch.cumsum(image, dim=1)


IMAGE_SHAPE = (1, 1, 6, 6)


def tiny_module(poison: float | None = None) -> Tiny:
    torch.manual_seed(0)
    m = Tiny().eval()
    if poison is not None:
        with torch.no_grad():
            m.conv.weight[1, 0, 1, 1] = poison
    return m


def export_pt2(module: nn.Module, path: Path, shape=IMAGE_SHAPE) -> Path:
    torch.export.save(torch.export.export(module, (torch.randn(*shape),)), path)
    return path


def rewrite_zip(src: Path, dst: Path, replace: dict[str, bytes]) -> Path:
    """Copy the zip `src` to `dst` with the members whose names end in a key of `replace` given new bytes (same
    order, same names, stored uncompressed as torch writes them)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = next((v for k, v in replace.items() if info.filename.endswith(k)), None)
            zout.writestr(info, zin.read(info) if data is None else data)
    return dst


def member_data_offset(path: Path, suffix: str) -> tuple[int, int]:
    """(offset, size) of the stored bytes of the zip member whose name ends in `suffix`."""
    with zipfile.ZipFile(path) as z:
        info = next(i for i in z.infolist() if i.filename.endswith(suffix))
    raw = path.read_bytes()
    h = info.header_offset
    name_len, extra_len = int.from_bytes(raw[h + 26:h + 28], "little"), int.from_bytes(raw[h + 28:h + 30], "little")
    return h + 30 + name_len + extra_len, info.compress_size


def flip_member_byte(src: Path, dst: Path, suffix: str) -> Path:
    """`src` with one byte of one member's data changed, so only that member's CRC check fails."""
    data = bytearray(src.read_bytes())
    offset, size = member_data_offset(src, suffix)
    data[offset + size // 2] ^= 0xFF
    dst.write_bytes(bytes(data))
    return dst


class Payload:
    """Unpickling this creates the file `marker` (via open(marker, 'w')): proof that a pickle was executed.

    Only ever pickled here; nothing in the tests unpickles it."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def hostile_pickle(marker: Path) -> bytes:
    return pickle.dumps(Payload(marker), protocol=2)


def hostile_torch_save(marker: Path) -> bytes:
    """A torch.save-format zip (as torch writes sample inputs and pickled weights) whose data.pkl runs code."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(torch_save_bytes(torch.zeros(1)))) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            zout.writestr(info, hostile_pickle(marker) if info.filename.endswith("/data.pkl") else zin.read(info))
    return out.getvalue()


def torch_save_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def pickled_weight_archive(src: Path, dst: Path, payload: bytes) -> Path:
    """The torch.export archive `src` with its first weight marked use_pickle and replaced by `payload`."""
    import json

    with zipfile.ZipFile(src) as z:
        cfg_name = next(n for n in z.namelist() if n.endswith("data/weights/model_weights_config.json"))
        cfg = json.loads(z.read(cfg_name))
    first = next(iter(cfg["config"].values()))
    first["use_pickle"] = True
    return rewrite_zip(src, dst, {"model_weights_config.json": json.dumps(cfg).encode(),
                                  f"data/weights/{first['path_name']}": payload})


# ---------------------------------------------------------------------------------------------------- ONNX


def onnx_conv(weight: np.ndarray | None = None, opset: int = 17) -> onnx.ModelProto:
    """image [1,1,6,6] -> Conv (conv_w, conv_b; node 'conv0') -> conv_out -> Relu (node 'relu0') -> logits."""
    w = np.random.default_rng(0).random((2, 1, 3, 3), dtype=np.float32) if weight is None else weight
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 1, 6, 6])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, w.shape[0], 4, 4])
    graph = helper.make_graph(
        [helper.make_node("Conv", ["image", "conv_w", "conv_b"], ["conv_out"], name="conv0"),
         helper.make_node("Relu", ["conv_out"], ["logits"], name="relu0")],
        "tiny", [x], [y],
        [numpy_helper.from_array(w, "conv_w"), numpy_helper.from_array(np.zeros(w.shape[0], np.float32), "conv_b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def initializer(model: onnx.ModelProto, name: str) -> TensorProto:
    return next(t for t in model.graph.initializer if t.name == name)


def to_external(model: onnx.ModelProto, name: str, location: str) -> bytes:
    """Move initializer `name` to external data at `location`; returns the bytes it held."""
    t = initializer(model, name)
    raw = numpy_helper.to_array(t).tobytes()
    t.ClearField("raw_data")
    t.ClearField("float_data")
    t.data_location = TensorProto.EXTERNAL
    del t.external_data[:]
    t.external_data.add(key="location", value=location)
    return raw


def save_onnx(model: onnx.ModelProto, path: Path) -> Path:
    path.write_bytes(model.SerializeToString())  # no checker: the defects are the point
    return path


# ---------------------------------------------------------------------------------------------------- TFLite


def edit_tflite(src: Path, dst: Path, edit) -> Path:
    """`src` unpacked, changed in place by `edit(model)`, packed again to `dst`."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(src.read_bytes(), 0)
    edit(model)
    b = flatbuffers.Builder(1024)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    dst.write_bytes(bytes(b.Output()))
    return dst


def tflite_int32(model) -> None:
    from ai_edge_litert import schema_py_generated as schema

    sub = model.subgraphs[0]
    sub.tensors[sub.inputs[0]].type = schema.TensorType.INT32


def tflite_no_outputs(model) -> None:
    model.subgraphs[0].outputs = []


def tflite_bad_opcode(model) -> None:
    model.subgraphs[0].operators[0].opcodeIndex = 77


# ---------------------------------------------------------------------------------------------------- .npz


def npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------------- permissions

_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH, _PR_CAPBSET_DROP = 1, 2, 24


def _as_nobody():
    pw = pwd.getpwnam("nobody")
    os.setgroups([])
    os.setgid(pw.pw_gid)
    os.setuid(pw.pw_uid)


def _without_dac_override():
    """Root without the capabilities that let it ignore file permissions (dropped from the bounding set, so the
    exec'ed interpreter never has them): chmod applies to it as to its owner."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


@functools.cache
def unprivileged_preexec():
    """How to make a child process that file permissions apply to, when the tests run as root: become `nobody`
    where nobody can run this interpreter, else (the interpreter under root's 0700 home) stay root without
    CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH."""
    try:
        ok = subprocess.run([sys.executable, "-c", "import mcc.cli"], preexec_fn=_as_nobody, cwd="/",
                            capture_output=True, timeout=60).returncode == 0
    except OSError:
        ok = False
    return _as_nobody if ok else _without_dac_override


def run_unprivileged(argv: list[str], cwd: Path) -> tuple[int, str, str]:
    """`mcc *argv` in a child process that file permissions apply to (the tests run as root); (code, out, err)."""
    env = {**os.environ, "HOME": str(cwd)}
    r = subprocess.run([sys.executable, "-m", "mcc", *argv], preexec_fn=unprivileged_preexec(), cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=120)
    return r.returncode, r.stdout, r.stderr
