"""Format layers: what mcc knows of each file format, in one place per format (DESIGN.md section 5).

formats/tflite and formats/onnx each hold the op table between mcc's IR and the format (opmap), the reader (file ->
IR, what `mcc run` and `mcc validate` execute) and the writer (IR -> file). They import only the IR and the format's
own library (the TFLite schema, onnx), never the runtime, a pass, a frontend or torch: arithmetic that depends on a
kernel library's rules (an ONNX lookup table's entries, a fused activation's int8 bounds) is handed to them by the
layer that owns it (`FormatArithmetic`, implemented in runtime/format_arithmetic.py).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from ..errors import MccError


class FormatArithmetic(Protocol):
    """Integer arithmetic a format writer or reader needs from the kernel rules, supplied by the runtime."""

    def lookup_table(self, node) -> np.ndarray:
        """The int8 output of int8 unary `node` for each of the 256 input codes (entry i for code i, i - 256 >= 128)."""

    def activation_bounds(self, op: str, activation: str | None, quant) -> tuple[int, int]:
        """The int8 interval `op`'s fused `activation` clamps to, for output parameters `quant`."""


def verified_copy(graph, file_format: str):
    """A copy of `graph` that verify() accepts, or an MccError: a writer never emits a malformed graph."""
    g = graph.copy()
    try:
        g.verify()
    except ValueError as e:
        raise MccError(f"graph '{graph.name}' is not well formed, so it cannot be written as {file_format}: "
                       f"{e}") from None
    return g
