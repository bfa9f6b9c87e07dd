"""The IR graph: nodes over tensors, the rewrite API every pass uses, and graph hygiene (toposort, cleanup, copy,
verify).

Like onnx-graphsurgeon, tensors know their readers and writers (kept current by ir.node.Edges however a pass edits
a node's inputs), and the graph knows which nodes are its members (kept by NodeList however a pass edits
`graph.nodes`); so `producer(t)` and `consumers(t)` cost O(readers), not a scan of the graph, and cannot go stale.
Names come from a table grown as names are claimed, seeded once from the graph, so `unique_name` is O(1): building
or rewriting a graph of n nodes is linear in n (benchmarks/bench_graph.py measures it).

The rewrite API: `insert_before` / `insert_after`, `replace_node` (one node by a sequence), `replace_all_uses`,
`erase` (refused while the node's outputs are still read), `bypass`, `only_reader` (the single reader of a tensor
that is not a graph output), `is_output`; `ir.channels.remove_channels` does channel surgery over a dependency
group and `ir.pattern` matches local patterns for rewrites.
"""

from __future__ import annotations

import itertools
import weakref

import numpy as np

from .node import Node, linked
from .observed_list import ObservedList
from .tensor import Tensor


class NodeList(ObservedList):
    """`graph.nodes`: a list that keeps the graph's member set (for O(1) membership) and marks positions stale. It
    holds its graph weakly, as node.Edges holds its node: no cycle, so a discarded graph is freed at once."""

    __slots__ = ("_graph",)

    def __init__(self, graph, items=()):
        super().__init__(items)
        self._graph = weakref.ref(graph)
        graph._members = {id(n) for n in self}
        graph._positions = None

    def _edit(self, method, *args):
        g = self._graph()
        if g is None:  # the graph is gone: a plain list
            return method(self, *args)
        g._positions = None
        if method is list.remove:
            method(self, *args)
            g._members.discard(id(args[0]))
            return None
        result = method(self, *args)
        if method in (list.append, list.insert):
            g._members.add(id(args[-1]))
        elif method is list.extend:
            g._members.update(id(n) for n in args[-1])
        else:
            g._members = {id(n) for n in self}
        return result


class Graph:
    def __init__(self, name: str = "main"):
        self.name = name
        self.inputs: list[Tensor] = []
        self.outputs: list[Tensor] = []
        self.nodes = []
        self.origin: dict = {}  # what the frontend records of the source (format, ONNX opset and conversion)
        # |gamma| of each batch norm that fold_batchnorm folded away, by the name of the node that now writes its
        # channels (the conv it folded into, or its mul): the BN-scale pruning criterion reads what folding erased.
        self.bn_gamma: dict[str, np.ndarray] = {}
        # gamma / sqrt(var + eps) per output channel, by the name of the conv / FC a batch norm was folded into: the
        # factor its weights were multiplied by, which the L1/L2 pruning criteria divide back out.
        self.bn_fold: dict[str, np.ndarray] = {}
        self._names: set[str] | None = None
        self._ids = itertools.count()

    @property
    def nodes(self) -> NodeList:
        return self._nodes

    @nodes.setter
    def nodes(self, nodes) -> None:
        self._nodes = NodeList(self, nodes)

    # ---- building ------------------------------------------------------------------------------------
    def unique_name(self, base: str) -> str:
        """`base`, or `base_K` with the first K that no tensor or node of the graph has ever been named; claimed."""
        if self._names is None:
            self._names = {t.name for t in self.tensors()} | {n.name for n in self.nodes}
        name = base
        while name in self._names:
            name = f"{base}_{next(self._ids)}"
        self._names.add(name)
        return name

    def add_input(self, name: str, shape, dtype="float32", layout=None) -> Tensor:
        t = Tensor(name, shape, dtype, layout)
        self.inputs.append(t)
        return t

    def constant(self, name: str, data: np.ndarray) -> Tensor:
        return Tensor(self.unique_name(name), data=np.array(data, order="C"))

    def add_node(self, op: str, inputs, attrs=None, name: str | None = None, n_outputs: int = 1,
                 source: str | None = None, index: int | None = None) -> Node:
        """Append (or insert at `index`) a node with fresh output tensors; shapes are filled by infer_shapes."""
        from .ops import infer_node

        name = self.unique_name(name or op)  # a single output shares its node's name
        outs = [Tensor(self.unique_name(f"{name}:{i}") if n_outputs > 1 else name) for i in range(n_outputs)]
        node = Node(op, name, inputs, outs, attrs, source)
        infer_node(node)
        if index is None:
            self.nodes.append(node)
        else:
            self.nodes.insert(index, node)
        return node

    # ---- queries -------------------------------------------------------------------------------------
    def tensors(self) -> list[Tensor]:
        """Every tensor the graph holds, once each, in first-mention order (inputs, nodes, outputs)."""
        found = dict.fromkeys(self.inputs)  # tensors hash and compare by identity
        for n in self.nodes:
            for t in n.inputs:
                found[t] = None
            for t in n.outputs:
                found[t] = None
        found.update(dict.fromkeys(self.outputs))
        found.pop(None, None)
        return list(found)

    def constants(self) -> list[Tensor]:
        return [t for t in self.tensors() if t.is_constant]

    def producer(self, t: Tensor) -> Node | None:
        return next((n for n in linked(t.writers) if id(n) in self._members), None)

    def consumers(self, t: Tensor) -> list[Node]:
        """The graph's nodes that read `t`, in graph order."""
        readers = [n for n in linked(t.readers) if id(n) in self._members]
        if len(readers) > 1:
            readers.sort(key=self.position)
        return readers

    def position(self, node: Node) -> int:
        if self._positions is None:
            self._positions = {id(n): k for k, n in enumerate(self.nodes)}
        return self._positions[id(node)]

    def is_output(self, t: Tensor) -> bool:
        return any(t is o for o in self.outputs)

    def only_reader(self, t: Tensor) -> Node | None:
        """The one node that reads `t` when nothing else does and `t` is not a graph output; else None (a rewrite
        of that reader may then change `t`'s producer freely)."""
        readers = self.consumers(t)
        return readers[0] if len(readers) == 1 and not self.is_output(t) else None

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
    def replace_all_uses(self, old: Tensor, new: Tensor) -> None:
        """Point every consumer (and graph output) of `old` at `new`."""
        for n in self.consumers(old):
            n.inputs = [new if i is old else i for i in n.inputs]
        self.outputs = [new if o is old else o for o in self.outputs]

    def remove_node(self, node: Node) -> None:
        """Take `node` out of the graph whatever reads its outputs (see erase for the checked form)."""
        self.nodes.remove(node)

    def erase(self, node: Node) -> None:
        """Remove `node`; ValueError while a graph node or output still reads one of its outputs."""
        used = [o.name for o in node.outputs if self.consumers(o) or self.is_output(o)]
        if used:
            raise ValueError(f"cannot erase node '{node.name}': its output(s) {used} are still read")
        self.nodes.remove(node)

    def insert_before(self, anchor: Node, *nodes: Node) -> None:
        k = self.position(anchor)
        self.nodes[k:k] = nodes

    def insert_after(self, anchor: Node, *nodes: Node) -> None:
        k = self.position(anchor) + 1
        self.nodes[k:k] = nodes

    def replace_node(self, old: Node, new_nodes: list[Node], outputs: list[Tensor] | None = None) -> None:
        """Put `new_nodes` where `old` stands and remove it. The new nodes either write `old`'s output tensors
        themselves, or `outputs` names the tensors that take their place (every use is rewired to them)."""
        k = self.position(old)
        self.nodes[k:k + 1] = new_nodes
        for before, after in zip(old.outputs, outputs or []):
            if after is not before:
                self.replace_all_uses(before, after)

    def bypass(self, node: Node, keep_input: int = 0) -> None:
        """Remove a single-output node, rewiring its consumers to its input `keep_input`.

        When the output is a graph output, the input takes over the output's name so the model's interface
        keeps its names.
        """
        src, dst = node.inputs[keep_input], node.outputs[0]
        if self.is_output(dst) and not any(i is src for i in self.inputs) and not src.is_constant:
            src.name = dst.name
        self.replace_all_uses(dst, src)
        self.remove_node(node)

    def topological_order(self) -> list[Node]:
        """The nodes in dependency order, without reordering the graph: sweeps in list order, each taking every
        node whose inputs are ready (one sweep for a graph already in order). ValueError on a cycle or a dangling
        input."""
        available = {id(t) for t in self.inputs}
        pending, ordered = list(self.nodes), []
        while pending:
            rest = []
            for n in pending:   # (a loop, not all() over a generator: this runs twice per pass)
                for i in n.inputs:
                    if i is not None and i.data is None and id(i) not in available:
                        rest.append(n)
                        break
                else:
                    ordered.append(n)
                    available.update(map(id, n.outputs))
            if len(rest) == len(pending):
                names = ", ".join(n.name for n in rest[:5])
                raise ValueError(f"graph '{self.name}' has a cycle or a dangling input among nodes: {names}")
            pending = rest
        return ordered

    def toposort(self) -> None:
        self.nodes = self.topological_order()

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
            c = mapping.get(id(t))
            if c is None:
                c = mapping[id(t)] = t.clone()
            return c

        g = Graph(self.name)
        g.origin = dict(self.origin)
        g.bn_gamma = dict(self.bn_gamma)
        g.bn_fold = dict(self.bn_fold)
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

    def verify(self, inferred: bool = False) -> None:
        """Raise ValueError on anything a pass could leave broken: names, wiring, cycles, shapes, attributes.
        `inferred`: infer_shapes() has just run, which ordered the nodes (refusing a cycle) and derived every output
        shape; neither is done again (a shape compared with its own re-derivation cannot differ; skipping both takes
        a quarter off the check the pass manager runs after every pass)."""
        from .ops import check_node

        if not self.outputs:
            raise ValueError(f"graph '{self.name}' has no outputs: it computes nothing")
        names, tensors = {}, self.tensors()
        for t in tensors:
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
        for t in tensors:
            if not t.is_constant and id(t) not in produced and id(t) not in graph_inputs:
                raise ValueError(f"tensor '{t.name}' is read but neither produced, a graph input nor a constant")
        if not inferred:
            self.toposort()
        for n in self.nodes:
            check_node(n, rederive=not inferred)


def _copy_attrs(attrs: dict) -> dict:
    return {k: (list(v) if isinstance(v, list) else v) for k, v in attrs.items()}
