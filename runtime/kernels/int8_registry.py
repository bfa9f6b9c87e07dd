"""The int8 kernel table, beside the float one: the interpreter uses it for a node whose activations are int8.

An int8 kernel is `fn(node, inputs, rules) -> outputs`: besides the node and its arrays it gets the
runtime.rules.RuleSet of the run and asks it for the (kernels, rounding) rule of its op, so one kernel serves
every target whose arithmetic it implements. Kept apart from KERNELS (one kernel per IR op, float
semantics) because int8 adds ops that the float IR does not have (quantize, dequantize) and because the
same op name means a different computation once its tensors carry quantization.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ...errors import MccError
from ...ir import QuantParams, Tensor

INT8_KERNELS: dict[str, Callable[..., list]] = {}

INT8_MIN, INT8_MAX = -128, 127
# TFLite's 16x8 kernels: int16 activations (symmetric, zero point 0) with int8 weights. Only these ops take them in
# mcc's runtime; their rules are the op's name + "/int16" in runtime.rules, since the arithmetic differs from int8.
INT16_OPS = ("conv2d", "depthwise_conv2d", "fully_connected", "add", "quantize", "dequantize", "reshape")
LIMITS = {"int8": (INT8_MIN, INT8_MAX), "int16": (-(1 << 15), (1 << 15) - 1)}


def int8_kernel(*ops: str):
    """Register the decorated function as the int8 kernel of every op in `ops`."""
    def register(fn):
        for name in ops:
            INT8_KERNELS[name] = fn
        return fn
    return register


def is_int8(node) -> bool:
    """Whether a node computes on quantized activations: its first input or its first output is int8 or int16."""
    return any(t is not None and t.dtype in LIMITS for t in (node.input(0), node.outputs[0]))


def is_int16(node) -> bool:
    """Whether a node is a 16x8 one (an int16 activation in or out); refused for ops outside INT16_OPS."""
    if not any(t is not None and t.dtype == "int16" for t in (*node.inputs, *node.outputs)):
        return False
    if node.op not in INT16_OPS:
        raise MccError(f"{node.op} on int16 activations has no kernel in mcc's runtime (16x8 ops: "
                       f"{', '.join(INT16_OPS)}); keep the op in int8 or float", node=node.name)
    return True


def ruled_op(node, op: str | None = None) -> str:
    """The rule-table key of a node: its op (or `op`), with "/int16" for a 16x8 node."""
    return (op or node.op) + ("/int16" if is_int16(node) else "")


def quant(node, t: Tensor, role: str) -> QuantParams:
    """The quantization of `t`, or an MccError naming the node and the tensor's role."""
    if t.quant is None:
        raise MccError(f"{node.op}: {role} '{t.name}' ({t.dtype}) has no quantization parameters; the int8 "
                       "kernels need a scale and zero point on every int8 tensor", node=node.name)
    return t.quant


def per_tensor(node, t: Tensor, role: str) -> tuple[np.float32, int]:
    """(scale, zero point) of a per-tensor quantized activation."""
    q = quant(node, t, role)
    if q.scale.size != 1:
        raise MccError(f"{node.op}: {role} '{t.name}' is quantized per channel ({q.scale.size} scales); int8 "
                       "activations carry one scale and zero point", node=node.name)
    return np.float32(q.scale[0]), int(q.zero_point[0])


def require_same_quant(node, a: Tensor, b: Tensor) -> None:
    """TFLite's int8 data-movement kernels copy bytes: their input and output must mean the same reals."""
    qa, qb = a.quant, b.quant
    if (qa is None) != (qb is None) or (qa is not None and qa != qb):
        raise MccError(f"{node.op}: '{a.name}' and '{b.name}' are quantized differently ({_describe(qa)} vs "
                       f"{_describe(qb)}); TFLite's int8 {node.op} moves bytes without requantizing, so the "
                       "quantizer must give them the same scale and zero point (or insert a quantize node)",
                       node=node.name)


def _describe(q: QuantParams | None) -> str:
    if q is None:
        return "none"
    return f"scale {[float(s) for s in q.scale]}, zero point {[int(z) for z in q.zero_point]}"


def saturate_int8(y) -> np.ndarray:
    return saturate(y, "int8")


def saturate(y, dtype: str) -> np.ndarray:
    """y clamped to the range of `dtype` ("int8" or "int16") and cast to it."""
    return np.clip(y, *LIMITS[dtype]).astype(dtype)


def check_rounding(node, rule, *known: str) -> None:
    """Refuse a rule whose rounding this op's kernel does not implement (a gap in the rule table)."""
    if rule.rounding not in known:
        raise MccError(f"the int8 {node.op} kernel has no arithmetic called '{rule.rounding}' (it implements "
                       f"{', '.join(known)}); fix the rule table in mcc.runtime.rules", node=node.name)
