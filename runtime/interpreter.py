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
from .plan import kernel_for, plan_for, resolve_rules
from .rules import RuleSet
from .threads import blas_on_one_thread


def evaluate_node(node: Node, input_values: list, rules: str | RuleSet | None = None) -> list[np.ndarray]:
    """The outputs of one node for the given input arrays (None for an absent optional input). A node on int8
    activations runs its int8 kernel with the integer arithmetic of the rule set `rules` (runtime.rules), and a
    float node of a RULED op its float kernel with that rule set's summation order."""
    with blas_on_one_thread():
        return kernel_for(node)(list(input_values), resolve_rules(rules))


def run(graph: Graph, feeds: dict[str, np.ndarray], keep_all: bool = False,
        rules: str | RuleSet | None = None, observe=None) -> dict[str, np.ndarray]:
    """Execute `graph` on `feeds` (input name -> array); return the graph outputs by name, or with
    `keep_all` every tensor's value (inputs, the constants nodes read, every node output). `rules` names the
    kernel set whose integer arithmetic int8 nodes reproduce ("litert-ref", "litert-xnnpack@2.3.0", ...;
    default: LiteRT's reference kernels). `observe(tensor, value)`, if given, sees the graph inputs and every
    node output as it is made, before any reader (an edit in place reaches the readers: calibrate.LinearMeans
    applies a fused activation that way); without keep_all a value is dropped after its last reader, so a caller
    that only needs statistics of the activations (calibration) holds a few of them at a time, not all.
    The graph is planned once (runtime.plan) and the plan reused while the graph is unchanged."""
    _check_feeds(graph, feeds)
    with blas_on_one_thread():
        return plan_for(graph).run(feeds, keep_all, rules, observe)


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
