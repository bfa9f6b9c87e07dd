"""Small real projects for the `mcc build` tests: ONNX models made with onnx.helper (no torch import, so the
tests stay fast), their calibration data, and an mcc.toml."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def conv_model(path: Path, size: int = 8, seed: int = 0) -> None:
    """x [1, 3, size, size] -> conv 3x3 (4 channels) -> relu -> flatten -> fully connected (5)."""
    rng = np.random.default_rng(seed)
    weights = [numpy_helper.from_array(rng.normal(size=s).astype(np.float32), n) for n, s in
               (("w", (4, 3, 3, 3)), ("b", (4,)), ("fw", (5, 4 * size * size)), ("fb", (5,)))]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Flatten", ["r"], ["f"]),
             helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, size, size])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])], weights)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def samples(path: Path, size: int = 8, n: int = 16, seed: int = 1) -> None:
    np.savez(path, x=np.random.default_rng(seed).normal(size=(n, 3, size, size)).astype(np.float32))


PROJECT = """\
[[model]]
name = "a"
source = "tiny.onnx"
target = "arm-int8"
calib = "tiny_samples.npz"
emit = ["c-array"]
device = "cortex-m7"

[model.options]
observer = "mse"
io = "int8"

[model.preprocess]
mean = [0.5, 0.5, 0.5]
std = [0.25, 0.25, 0.25]

[[model]]
name = "b"
source = "tiny.onnx"
targets = ["arm-fp32", "x86-fp32"]
output_dir = "out_b"
"""


def tiny_project(folder: Path, text: str = PROJECT) -> Path:
    """The tiny model, its samples and an mcc.toml in `folder`; the mcc.toml's path."""
    folder.mkdir(parents=True, exist_ok=True)
    conv_model(folder / "tiny.onnx")
    samples(folder / "tiny_samples.npz")
    (folder / "mcc.toml").write_text(text)
    return folder / "mcc.toml"


def fnv1a(data: bytes) -> int:
    """The checksum examples/project/check_model.c prints."""
    h = 2166136261
    for b in data:
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return h
