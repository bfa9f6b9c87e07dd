"""Nodes of the IR: an op name from `ir.ops`, input and output tensors, and typed attributes.

A node's `inputs` and `outputs` are edge lists that keep each tensor's reader and writer tables current however a
pass edits them (assignment, item assignment, slices, append, ...), so the graph answers producer and consumer
queries in O(1) without the stale use-lists that torch.fx risks when a pass edits `node.args` behind its back.
Tables hold nodes weakly: a node built only to evaluate one op (calibration does that) leaves no trace. A table
is a plain dict id(node) -> weakref: a WeakKeyDictionary per tensor costs ten times as much to make, and every
object a table adds is one more for the cyclic garbage collector to scan in a large graph. An entry whose node
died, or whose id a new node reuses, is replaced or skipped.
"""

from __future__ import annotations

from operator import attrgetter
from weakref import ref

from .observed_list import ObservedList
from .tensor import Tensor


def _link(tensor: Tensor, role: str, node) -> None:
    table = getattr(tensor, role)
    if table is None:
        setattr(tensor, role, {id(node): ref(node)})
    else:
        table[id(node)] = ref(node)


def _unlink(tensor: Tensor, role: str, node) -> None:
    table = getattr(tensor, role)
    entry = table.get(id(node)) if table else None
    if entry is not None and entry() is node:
        del table[id(node)]


def linked(table) -> list:
    """The live nodes of a reader or writer table, in the order they were linked."""
    if not table:
        return []
    return [n for n in (r() for r in table.values()) if n is not None]


class Edges(ObservedList):
    """A node's input (or output) list that registers the node with every tensor in it (once, however often
    the list holds the tensor). It holds its node weakly: node and list pointing at each other would leave every
    discarded graph to the cyclic garbage collector (31,777 objects per MobileNetV2 compile, and a full collection
    over a process with torch loaded took 0.17-0.25 s, once every three compiles); this way a graph is freed as
    soon as nothing refers to it. A list whose node died is a plain list."""

    __slots__ = ("_node", "_role")

    def __init__(self, node, role: str, items=()):
        super().__init__(items)
        self._node, self._role = ref(node), role
        for t in self:
            if t is not None:
                _link(t, role, node)

    def detach(self) -> None:
        node = self._node()
        for t in self:
            if t is not None and node is not None:
                _unlink(t, self._role, node)

    def _edit(self, method, *args):
        before = {id(t): t for t in self if t is not None}
        try:
            return method(self, *args)
        finally:
            node = self._node()
            if node is not None:
                after = {id(t): t for t in self if t is not None}
                for k, t in before.items():
                    if k not in after:
                        _unlink(t, self._role, node)
                for k, t in after.items():
                    if k not in before:
                        _link(t, self._role, node)


def _edges(slot: str, role: str) -> property:
    """A node's `inputs` (role "readers") or `outputs` ("writers"): assigning a list links the node to its
    tensors and unlinks it from the previous ones."""

    def set_(node, tensors) -> None:
        old = getattr(node, slot, None)
        if old is not None:
            old.detach()
        setattr(node, slot, Edges(node, role, tensors))

    return property(attrgetter(slot), set_)  # read everywhere: a C getter, not a Python frame per access


class Node:
    __slots__ = ("name", "op", "_inputs", "_outputs", "attrs", "source", "__weakref__")

    def __init__(self, op: str, name: str, inputs: list[Tensor | None], outputs: list[Tensor],
                 attrs: dict | None = None, source: str | None = None):
        self.op = op
        self.name = name
        # An optional input (a conv without bias) is None, so input positions keep their meaning.
        self.inputs = inputs
        self.outputs = outputs
        self.attrs = dict(attrs or {})
        # Where the node came from in the user's model (file:line, or the framework's node name), for errors.
        self.source = source

    inputs = _edges("_inputs", "readers")
    outputs = _edges("_outputs", "writers")

    def input(self, i: int) -> Tensor | None:
        return self.inputs[i] if i < len(self.inputs) else None

    def __repr__(self):
        ins = ", ".join(t.name if t is not None else "_" for t in self.inputs)
        outs = ", ".join(t.name for t in self.outputs)
        return f"Node({self.name}: {self.op}({ins}) -> {outs})"
