"""The kernel-rule arithmetic that file formats need but must not compute themselves (formats.FormatArithmetic).

An int8 ONNX file writes unary activations as 256-entry lookup tables and fused activations as int8 Clips; both
hold integers that only a rule set defines (formats.onnx.opmap.TABLE_RULES: TFLite's reference arithmetic, so the
ONNX file computes what the TFLite file does). The format layer sits below the runtime, so the runtime hands it
this arithmetic instead of the format importing the runtime.
"""

from __future__ import annotations

import numpy as np

from ..formats.onnx.opmap import TABLE_RULES
from ..ir import Node, QuantParams, Tensor
from .interpreter import evaluate_node
from .kernels.int8_output import activation_bounds
from .rules import rule_set


class RuleArithmetic:
    """FormatArithmetic under the rule set `rules` (a name runtime.rules knows)."""

    def __init__(self, rules: str):
        self.rules = rules

    def lookup_table(self, node: Node) -> np.ndarray:
        """Entry i is the int8 output for the code that Gather reaches with index i: i for i < 128, i - 256 above
        (a negative index counts from the end)."""
        codes = np.arange(256).astype(np.uint8).view(np.int8)
        x = Tensor("x", codes.shape, "int8", quant=node.inputs[0].quant)
        y = Tensor("y", codes.shape, "int8", quant=node.outputs[0].quant)
        return evaluate_node(Node(node.op, node.name, [x], [y], node.attrs), [codes], self.rules)[0]

    def activation_bounds(self, op: str, activation: str | None, q: QuantParams) -> tuple[int, int]:
        kernels = rule_set(self.rules).rule(op).kernels
        return activation_bounds(activation, np.float32(q.scale[0]), int(q.zero_point[0]), kernels)


ONNX_ARITHMETIC = RuleArithmetic(TABLE_RULES)
