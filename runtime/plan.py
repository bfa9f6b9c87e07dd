"""Execution plans: a graph's nodes in run order, each with its kernel and the values it is the last to read,
made once per graph and reused by every run; and graphs re-batched so that one run covers many samples.

torch.fx's Interpreter and onnxruntime's session both do the planning once: fx walks a fixed node list, ORT
builds an execution plan with each value's last consumer and frees buffers there. mcc's plan is cached on the
graph and checked against a cheap structural signature on every run (passes edit graphs in place between
runs), so the caller never has to hold on to a plan object.
"""

from __future__ import annotations

import functools
import weakref

import numpy as np

from ..errors import MccError
from ..ir import Graph, Node
from .kernels import KERNELS
from .kernels.int8_registry import INT8_KERNELS, is_int16, is_int8
from .kernels.registry import RULED
from .rules import RuleSet, rule_set


def kernel_for(node: Node):
    """The function `f(input_values, rules) -> outputs` that runs `node`: its int8 kernel (integer arithmetic of
    the rule set) when it computes on quantized activations, else its float kernel (RULED ops get the rule set's
    summation order)."""
    if is_int8(node):
        is_int16(node)  # refuses an op without a 16x8 kernel
        fn = INT8_KERNELS.get(node.op)
        if fn is None:
            raise MccError(f"the runtime has no int8 kernel for op '{node.op}'; int8 ops: "
                           f"{', '.join(sorted(INT8_KERNELS))}", node=node.name)
        return lambda ins, rules: fn(node, ins, rules)
    fn = KERNELS.get(node.op)
    if fn is None:
        raise MccError(f"the runtime has no kernel for op '{node.op}'; known ops: {', '.join(sorted(KERNELS))}",
                       node=node.name)
    if node.op in RULED:
        return lambda ins, rules: fn(node, ins, rules)
    return lambda ins, rules: fn(node, ins)


def resolve_rules(rules: str | RuleSet | None) -> RuleSet:
    """rules.rule_set(rules), a named set looked up once per process: resolving a name lists every rule-set
    version (tens of microseconds, paid on every run and node evaluation otherwise); the rule table is fixed."""
    return rules if isinstance(rules, RuleSet) else _named_rules(rules)


@functools.cache
def _named_rules(name: str | None) -> RuleSet:
    return rule_set(name)


def _signature(graph: Graph) -> list:
    """What a plan depends on: which nodes, wired to which tensors, of which dtypes (the kernel choice), in which
    order. A plan holds its nodes and tensors, so their ids cannot be reused while it lives. One flat list (three
    entries per tensor slot after each node's input and output counts), compared on every run: 1.6x cheaper to
    make than nested tuples."""
    sig = [*map(id, graph.inputs), None, *map(id, graph.outputs)]
    for n in graph.nodes:
        sig += (id(n), n.op, len(n.inputs), len(n.outputs))
        for x in (*n.inputs, *n.outputs):
            sig += (None, None, None) if x is None else (id(x), x.dtype, x.data is None)
    return sig


class Plan:
    """A graph's run order, each node's kernel, and after which step each value is read for the last time."""

    def __init__(self, graph: Graph):
        # the graph's tensors, not the graph: the cache holds plans weakly keyed by their graph, which a plan
        # referring to it would keep alive for good
        self.inputs, self.outputs = list(graph.inputs), list(graph.outputs)
        self.signature = _signature(graph)
        try:
            nodes = graph.topological_order()
        except ValueError as e:
            raise MccError(f"{e}; every tensor a node reads must be a graph input, a constant or a node output") from None
        self.steps = [(node, kernel_for(node)) for node in nodes]
        last: dict[str, int] = {}
        for i, node in enumerate(nodes):
            for t in node.inputs:
                if t is not None and not t.is_constant:
                    last[t.name] = i
            for t in node.outputs:
                last.setdefault(t.name, i)  # never read: dropped right after it is made (and observed)
        for t in graph.outputs:
            last[t.name] = len(nodes)
        self.free = [[] for _ in nodes]
        for name, i in last.items():
            if i < len(nodes):
                self.free[i].append(name)

    def run(self, feeds: dict[str, np.ndarray], keep_all: bool = False, rules=None, observe=None) -> dict:
        """See interpreter.run."""
        rules = resolve_rules(rules)
        values = {t.name: np.asarray(feeds[t.name]) for t in self.inputs}
        if observe is not None:
            for t in self.inputs:
                observe(t, values[t.name])
        for (node, fn), free in zip(self.steps, self.free):
            if keep_all:
                ins = [None if t is None else values.setdefault(t.name, t.data) if t.data is not None
                       else values[t.name] for t in node.inputs]
            else:  # the per-node overhead of small models: no property calls, one comprehension
                ins = [None if t is None else t.data if t.data is not None else values[t.name] for t in node.inputs]
            outs = fn(ins, rules)
            for t, v in zip(node.outputs, outs):
                if v.shape != t.shape:
                    raise MccError(f"{node.op} computed '{t.name}' with shape {tuple(v.shape)} but the graph says "
                                   f"{t.shape}; run graph.infer_shapes() after editing the graph", node=node.name)
                values[t.name] = v
                if observe is not None:
                    observe(t, v)
            if not keep_all:
                for name in free:
                    values.pop(name, None)
        for t in self.outputs:
            if t.is_constant:
                values.setdefault(t.name, t.data)
        return values if keep_all else {t.name: values[t.name] for t in self.outputs}


_PLANS: "weakref.WeakKeyDictionary[Graph, Plan]" = weakref.WeakKeyDictionary()


def plan_for(graph: Graph) -> Plan:
    """The cached plan of `graph`, made again when the graph's nodes, wiring or dtypes changed since."""
    plan = _PLANS.get(graph)
    if plan is None or plan.signature != _signature(graph):
        plan = _PLANS[graph] = Plan(graph)
    return plan


# ---- re-batching ------------------------------------------------------------------------------------------------
def rebatch(graph: Graph, batch: int) -> tuple[Graph | None, str | None]:
    """(a copy of `graph` whose inputs take `batch` samples, None) or (None, why it cannot be re-batched).

    The kernels loop over the batch axis and compute each sample alone, so a run of the re-batched copy gives each
    sample the bits a run of the original gives it. That holds only where no op looks across samples: an op whose
    axis / axes / perm / multiples / slice involves axis 0 is refused, a reshape keeps axis 0 only when its target
    starts with the old batch size (or -1), and every activation must come out as the old one with axis 0 scaled,
    which catches the rest (a flatten of the batch into features, a reduction over it)."""
    old = graph.inputs[0].shape[0] if graph.inputs and graph.inputs[0].shape else None
    if old is None or any(not t.shape or t.shape[0] != old for t in graph.inputs):
        return None, "its inputs do not share a leading batch axis"
    if batch % old:
        return None, f"{batch} samples are not a whole number of batches of {old}"
    scale = batch // old
    if scale == 1:
        return graph, None
    copy = graph.copy()
    for node in copy.nodes:
        reason = _batch_mixing(node, old)
        if reason:
            return None, f"{node.op} '{node.name}' {reason}"
        if node.op == "reshape" and node.attrs["shape"][0] != -1:
            node.attrs["shape"] = [batch, *node.attrs["shape"][1:]]
    before = {id(t): (t.shape, t.dtype, t.layout) for t in copy.tensors() if not t.is_constant}
    for t in copy.inputs:
        t.shape = (batch, *t.shape[1:])
    try:
        copy.infer_shapes()
    except (ValueError, MccError) as e:
        return None, f"its shapes do not follow a new batch size ({e})"
    for node in copy.nodes:
        for t in node.outputs:
            was, t.dtype, t.layout = before[id(t)]  # only shapes change (inference would not know a 16x8 output)
            if not was or was[0] != old or t.shape != (batch, *was[1:]):
                return None, (f"{node.op} '{node.name}' makes '{t.name}' {list(t.shape)} from a batch of {batch} "
                              f"(was {list(was)} from {old}): it does not keep samples apart")
    return copy, None


def _batch_mixing(node: Node, old: int) -> str | None:
    """Why `node` would mix samples when run on a larger batch, from its attributes; None when they keep axis 0."""
    rank = len(node.inputs[0].shape) if node.inputs and node.inputs[0] is not None else 0
    a = node.attrs
    axes = []
    if isinstance(a.get("axis"), int):
        axes.append(a["axis"])
    if a.get("axes") is not None and node.op != "reshape":
        axes += list(a["axes"])
    if any(x % max(rank, 1) == 0 for x in axes):
        return "works along the batch axis"
    if "perm" in a and list(a["perm"])[:1] != [0]:
        return "moves the batch axis"
    if "multiples" in a and list(a["multiples"])[:1] != [1]:
        return "repeats along the batch axis"
    if node.op == "reshape" and a["shape"][0] not in (old, -1):
        return f"reshapes to {list(a['shape'])}, whose first dimension is not the batch of {old}"
    return None
