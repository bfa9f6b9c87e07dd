"""A small pattern matcher for local rewrites: a tree of ops over producer edges, matched at every node.

TVM's dataflow patterns and onnxruntime's graph transformers describe a local rewrite as "this op fed by that op,
whose output nobody else reads"; every fusion pass needs exactly that test, and written by hand it is where
rewrites go wrong (a fused producer whose pre-activation value someone else still read). mcc's patterns are
plain data: `Pat("relu", Pat({"conv2d", "add"}, name="producer"))` matches a relu whose first input is written by
a conv2d or add that only the relu reads; a match is a dict from binding names to nodes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from .graph import Graph
from .node import Node


@dataclass(frozen=True)
class Pat:
    """`op`: an op name, a set of names, or None for any op. `inputs`: patterns for the node's first inputs (None
    matches any input). `where`: an extra test on the node. `name`: the binding the match reports it under.
    `shared`: False (default) requires the matched producer's output to be read by this consumer alone and not be
    a graph output; True allows other readers."""

    op: str | frozenset | set | tuple | None
    inputs: tuple = field(default=())
    where: Callable[[Node], bool] | None = None
    name: str | None = None
    shared: bool = False

    def __init__(self, op, *inputs, where=None, name=None, shared=False):
        object.__setattr__(self, "op", op)
        object.__setattr__(self, "inputs", tuple(inputs))
        object.__setattr__(self, "where", where)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "shared", shared)

    def accepts(self, node: Node) -> bool:
        ops = self.op
        if ops is not None and node.op != ops and (isinstance(ops, str) or node.op not in ops):
            return False
        return self.where is None or bool(self.where(node))


def match_at(graph: Graph, pattern: Pat, node: Node) -> dict[str, Node] | None:
    """The bindings of `pattern` rooted at `node`, or None."""
    if not pattern.accepts(node):
        return None
    bound = {pattern.name: node} if pattern.name else {}
    for i, sub in enumerate(pattern.inputs):
        if sub is None:
            continue
        t = node.input(i)
        producer = graph.producer(t) if t is not None else None
        if producer is None or (not sub.shared and graph.only_reader(t) is not node):
            return None
        inner = match_at(graph, sub, producer)
        if inner is None:
            return None
        bound.update(inner)
    return bound


def matches(graph: Graph, pattern: Pat) -> Iterator[dict[str, Node]]:
    """Every match in graph order; the graph may be rewritten between matches (nodes removed by an earlier
    rewrite are skipped)."""
    for node in list(graph.nodes):
        if id(node) in graph._members:
            found = match_at(graph, pattern, node)
            if found is not None:
                yield found
