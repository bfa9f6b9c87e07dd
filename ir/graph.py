"""The IR graph: nodes over tensors, plus the hygiene every pass needs (toposort, cleanup, copy, verify).

mcc keeps producers and consumers implicit in the node lists and answers `producer()` / `consumers()` by
scanning: graphs of edge models have hundreds of nodes, and a scan cannot go stale after a rewrite, which an
incrementally maintained use-list (torch.fx) can when a pass edits `node.inputs` directly.
"""

from __future__ import annotations

import itertools

import numpy as np

from .node import Node
from .tensor import Tensor


class Graph:
    def __init__(self, name: str = "main"):
        self.name = name
        self.inputs: list[Tensor] = []
        self.outputs: list[Tensor] = []
        self.nodes: list[Node] = []
        self._ids = itertools.count()

    # ---- building ------------------------------------------------------------------------------------
    def unique_name(self, base: str) -> str:
        taken = {t.name for t in self.tensors()} | {n.name for n in self.nodes}
        if base not in taken:
            return base
        while True:
            candidate = f"{base}_{next(self._ids)}"
            if candidate not in taken:
                return candidate

    def add_input(self, name: str, shape, dtype="float32", layout=None) -> Tensor:
        t = Tensor(name, shape, dtype, layout)
        self.inputs.append(t)
        return t

    def constant(self, name: str, data: np.ndarray) -> Tensor:
        return Tensor(self.unique_name(name), data=np.ascontiguousarray(data))

    def add_node(self, op: str, inputs, attrs=None, name: str | None = None, n_outputs: int = 1,
                 source: str | None = None, index: int | None = None) -> Node:
        """Append (or insert at `index`) a node with fresh output tensors; shapes are filled by infer_shapes."""
        from .ops import infer_node

        name = self.unique_name(name or op)
        outs = [Tensor(self.unique_name(f"{name}:{i}" if n_outputs > 1 else name)) for i in range(n_outputs)]
        node = Node(op, name, inputs, outs, attrs, source)
        infer_node(node)
        if index is None:
            self.nodes.append(node)
        else:
            self.nodes.insert(index, node)
        return node

    # ---- queries -------------------------------------------------------------------------------------
    def tensors(self) -> list[Tensor]:
        seen, out = set(), []
        for t in itertools.chain(self.inputs, (t for n in self.nodes for t in n.inputs + n.outputs), self.outputs):
            if t is not None and id(t) not in seen:
                seen.add(id(t))
                out.append(t)
        return out

    def constants(self) -> list[Tensor]:
        return [t for t in self.tensors() if t.is_constant]

    def producer(self, t: Tensor) -> Node | None:
        return next((n for n in self.nodes if any(o is t for o in n.outputs)), None)

    def consumers(self, t: Tensor) -> list[Node]:
        return [n for n in self.nodes if any(i is t for i in n.inputs)]

    def tensor(self, name: str) -> Tensor:
        for t in self.tensors():
            if t.name == name:
                return t
        raise KeyError(name)

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    # ---- rewriting -----------------------------------------------------------------------------------
    def replace_uses(self, old: Tensor, new: Tensor) -> None:
        """Point every consumer (and graph output) of `old` at `new`."""
        for n in self.nodes:
            n.inputs = [new if i is old else i for i in n.inputs]
        self.outputs = [new if o is old else o for o in self.outputs]

    def remove_node(self, node: Node) -> None:
        self.nodes = [n for n in self.nodes if n is not node]

    def bypass(self, node: Node, keep_input: int = 0) -> None:
        """Remove a single-output node, rewiring its consumers to its input `keep_input`.

        When the output is a graph output, the input takes over the output's name so the model's interface
        keeps its names.
        """
        src, dst = node.inputs[keep_input], node.outputs[0]
        if any(o is dst for o in self.outputs) and not any(i is src for i in self.inputs) and not src.is_constant:
            src.name = dst.name
        self.replace_uses(dst, src)
        self.remove_node(node)

    def toposort(self) -> None:
        available = {id(t) for t in self.inputs}
        pending, ordered = list(self.nodes), []
        while pending:
            progressed = False
            for n in list(pending):
                if all(i is None or i.is_constant or id(i) in available for i in n.inputs):
                    ordered.append(n)
                    available.update(id(o) for o in n.outputs)
                    pending.remove(n)
                    progressed = True
            if not progressed:
                names = ", ".join(n.name for n in pending[:5])
                raise ValueError(f"graph '{self.name}' has a cycle or a dangling input among nodes: {names}")
        self.nodes = ordered

    def cleanup(self) -> int:
        """Remove nodes whose outputs nobody reads (dead-node elimination); returns how many were removed."""
        live = {id(t) for t in self.outputs}
        kept = []
        for n in reversed(self.nodes):
            if any(id(o) in live for o in n.outputs):
                kept.append(n)
                live.update(id(i) for i in n.inputs if i is not None)
        removed = len(self.nodes) - len(kept)
        self.nodes = kept[::-1]
        return removed

    def copy(self) -> "Graph":
        """A structural copy: new Tensor and Node objects, constant arrays shared (passes replace, never mutate)."""
        mapping: dict[int, Tensor] = {}

        def m(t):
            if t is None:
                return None
            if id(t) not in mapping:
                mapping[id(t)] = Tensor(t.name, t.shape, t.dtype, t.layout, t.quant, t.data)
            return mapping[id(t)]

        g = Graph(self.name)
        g.inputs = [m(t) for t in self.inputs]
        g.nodes = [Node(n.op, n.name, [m(i) for i in n.inputs], [m(o) for o in n.outputs],
                        _copy_attrs(n.attrs), n.source) for n in self.nodes]
        g.outputs = [m(t) for t in self.outputs]
        return g

    # ---- checking ------------------------------------------------------------------------------------
    def infer_shapes(self) -> None:
        from .ops import infer_node

        self.toposort()
        for n in self.nodes:
            infer_node(n)

    def verify(self) -> None:
        """Raise ValueError on anything a pass could leave broken: names, wiring, cycles, shapes, attributes."""
        from .ops import check_node

        if not self.outputs:
            raise ValueError(f"graph '{self.name}' has no outputs: it computes nothing")
        names = {}
        for t in self.tensors():
            if t.name in names and names[t.name] is not t:
                raise ValueError(f"graph '{self.name}': two tensors are named '{t.name}'")
            names[t.name] = t
            if any(d < 1 for d in t.shape):
                raise ValueError(f"tensor '{t.name}' has shape {list(t.shape)}: the targets hold no empty tensors")
        node_names = [n.name for n in self.nodes]
        if len(set(node_names)) != len(node_names):
            raise ValueError(f"graph '{self.name}': node names are not unique")
        produced: dict[int, Node] = {}
        for n in self.nodes:
            for o in n.outputs:
                if id(o) in produced:
                    raise ValueError(f"tensor '{o.name}' is produced by both '{produced[id(o)].name}' and '{n.name}'")
                if o.is_constant:
                    raise ValueError(f"node '{n.name}' writes constant tensor '{o.name}'")
                produced[id(o)] = n
        graph_inputs = {id(t) for t in self.inputs}
        for t in self.tensors():
            if not t.is_constant and id(t) not in produced and id(t) not in graph_inputs:
                raise ValueError(f"tensor '{t.name}' is read but neither produced, a graph input nor a constant")
        self.toposort()
        for n in self.nodes:
            check_node(n)


def _copy_attrs(attrs: dict) -> dict:
    return {k: (list(v) if isinstance(v, list) else v) for k, v in attrs.items()}
