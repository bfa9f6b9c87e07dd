"""Nodes of the IR: an op name from `ir.ops`, input and output tensors, and typed attributes."""

from __future__ import annotations

from .tensor import Tensor


class Node:
    __slots__ = ("name", "op", "inputs", "outputs", "attrs", "source")

    def __init__(self, op: str, name: str, inputs: list[Tensor | None], outputs: list[Tensor],
                 attrs: dict | None = None, source: str | None = None):
        self.op = op
        self.name = name
        # An optional input (a conv without bias) is None, so input positions keep their meaning.
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.attrs = dict(attrs or {})
        # Where the node came from in the user's model (file:line, or the framework's node name), for errors.
        self.source = source

    def input(self, i: int) -> Tensor | None:
        return self.inputs[i] if i < len(self.inputs) else None

    def __repr__(self):
        ins = ", ".join(t.name if t is not None else "_" for t in self.inputs)
        outs = ", ".join(t.name for t in self.outputs)
        return f"Node({self.name}: {self.op}({ins}) -> {outs})"
