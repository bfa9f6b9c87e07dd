"""Run an IR graph on numpy arrays, node by node, through the kernel table.

Like torch.fx's Interpreter, the runtime walks the nodes in order and dispatches each to one function per op.
Unlike fx (and unlike running the exported model in LiteRT), the kernels are mcc's own reference loops,
written after TFLite's reference kernels' arithmetic, so that every intermediate tensor can be compared with
what a target computes, operator by operator; `keep_all` hands back every one of them by name.
"""

from __future__ import annotations

import numpy as np

from ..errors import MccError
from ..ir import Graph, Node
from .kernels import KERNELS
from .kernels.registry import RULED
from .kernels.int8_registry import INT8_KERNELS, is_int16, is_int8
from .rules import RuleSet, rule_set


def evaluate_node(node: Node, input_values: list, rules: str | RuleSet | None = None) -> list[np.ndarray]:
    """The outputs of one node for the given input arrays (None for an absent optional input). A node on int8
    activations runs its int8 kernel with the integer arithmetic of the rule set `rules` (runtime.rules), and a
    float node of a RULED op its float kernel with that rule set's summation order."""
    if is_int8(node):
        is_int16(node)  # refuses an op without a 16x8 kernel
        fn = INT8_KERNELS.get(node.op)
        if fn is None:
            raise MccError(f"the runtime has no int8 kernel for op '{node.op}'; int8 ops: "
                           f"{', '.join(sorted(INT8_KERNELS))}", node=node.name)
        return fn(node, list(input_values), rule_set(rules))
    fn = KERNELS.get(node.op)
    if fn is None:
        raise MccError(f"the runtime has no kernel for op '{node.op}'; known ops: {', '.join(sorted(KERNELS))}",
                       node=node.name)
    if node.op in RULED:
        return fn(node, list(input_values), rule_set(rules))
    return fn(node, list(input_values))


def run(graph: Graph, feeds: dict[str, np.ndarray], keep_all: bool = False,
        rules: str | RuleSet | None = None) -> dict[str, np.ndarray]:
    """Execute `graph` on `feeds` (input name -> array); return the graph outputs by name, or with
    `keep_all` every tensor's value (inputs, the constants nodes read, every node output). `rules` names the
    kernel set whose integer arithmetic int8 nodes reproduce ("litert-ref", "litert-xnnpack@2.3.0", ...;
    default: LiteRT's reference kernels)."""
    rules = rule_set(rules)
    _check_feeds(graph, feeds)
    order = graph.copy()  # toposort reorders nodes; the caller's graph stays as it was
    try:
        order.toposort()
    except ValueError as e:
        raise MccError(f"{e}; every tensor a node reads must be a graph input, a constant or a node output") from None
    values: dict[str, np.ndarray] = {t.name: np.asarray(feeds[t.name]) for t in graph.inputs}
    for node in order.nodes:
        ins = []
        for t in node.inputs:
            if t is not None and t.is_constant:
                values.setdefault(t.name, t.data)
            ins.append(None if t is None else values[t.name])
        outs = evaluate_node(node, ins, rules)
        for t, v in zip(node.outputs, outs):
            if tuple(v.shape) != t.shape:
                raise MccError(f"{node.op} computed '{t.name}' with shape {tuple(v.shape)} but the graph says "
                               f"{t.shape}; run graph.infer_shapes() after editing the graph", node=node.name)
            values[t.name] = v
    for t in graph.outputs:
        if t.is_constant:
            values.setdefault(t.name, t.data)
    return values if keep_all else {t.name: values[t.name] for t in graph.outputs}


def _describe(shape, dtype) -> str:
    return f"{dtype}[{','.join(str(d) for d in shape)}]"


def _check_feeds(graph: Graph, feeds: dict) -> None:
    unknown = sorted(set(feeds) - {t.name for t in graph.inputs})
    if unknown:
        raise MccError(f"graph '{graph.name}' has no input named {', '.join(repr(n) for n in unknown)}; "
                       f"its inputs are {', '.join(t.name + ': ' + _describe(t.shape, t.dtype) for t in graph.inputs)}")
    for t in graph.inputs:
        want = _describe(t.shape, t.dtype)
        if t.name not in feeds:
            raise MccError(f"input '{t.name}' ({want}) was not given; pass it in feeds")
        v = np.asarray(feeds[t.name])
        if tuple(v.shape) != t.shape or str(v.dtype) != t.dtype:
            raise MccError(f"input '{t.name}' expects {want} but was given {_describe(v.shape, v.dtype)}; "
                           f"convert it with np.asarray(x, dtype='{t.dtype}').reshape({t.shape})")
