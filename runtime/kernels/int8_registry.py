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


def int8_kernel(*ops: str):
    """Register the decorated function as the int8 kernel of every op in `ops`."""
    def register(fn):
        for name in ops:
            INT8_KERNELS[name] = fn
        return fn
    return register


def is_int8(node) -> bool:
    """Whether a node computes on int8 activations: its first input or its first output is int8."""
    return any(t is not None and t.dtype == "int8" for t in (node.input(0), node.outputs[0]))


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
    return np.clip(y, INT8_MIN, INT8_MAX).astype(np.int8)


def check_rounding(node, rule, *known: str) -> None:
    """Refuse a rule whose rounding this op's kernel does not implement (a gap in the rule table)."""
    if rule.rounding not in known:
        raise MccError(f"the int8 {node.op} kernel has no arithmetic called '{rule.rounding}' (it implements "
                       f"{', '.join(known)}); fix the rule table in mcc.runtime.rules", node=node.name)
