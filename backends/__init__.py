"""Backends: emit a lowered IR graph as a deployable file.

The format layers (formats/) hold the op tables, readers and writers; a backend picks the writer for a target and
hands it what only the runtime can compute (for ONNX, the int8 lookup tables and activation bounds under the
table rules). A backend never rewrites the graph: legalization is a pass.
"""

from __future__ import annotations

from ..errors import MccError
from ..formats.model_info import ModelInfo
from ..ir import Graph


def emit(graph: Graph, backend: str, info: ModelInfo | None = None) -> bytes:
    """The bytes of `graph` in the file format of `backend` ("tflite" or "onnx"), with `info` (normalization,
    labels) embedded where the format's tools read it."""
    if backend == "tflite":
        from ..formats.tflite.writer import write_tflite

        return write_tflite(graph, info)
    if backend == "onnx":
        from ..formats.onnx.writer import write_onnx
        from ..runtime.format_arithmetic import ONNX_ARITHMETIC

        return write_onnx(graph, ONNX_ARITHMETIC, info)
    raise MccError(f"backend '{backend}' is not one this mcc has (tflite, onnx)")
