"""fold_constants: evaluate nodes whose inputs are all constants, and drop ops that do nothing.

onnx-graphsurgeon's `fold_constants` runs the whole graph through onnxruntime to find foldable values; mcc
evaluates one node at a time with its own runtime (`mcc.runtime.evaluate_node`), so folding uses exactly the
kernels that validate the compiled model and needs no second execution engine. The same pass removes the
no-ops that frontends leave behind (identity, reshape to the same shape, transpose with the identity perm), and
merges what only moves data: a reshape of a reshape reads the first one's input, a transpose of a transpose is one
transpose of the composed permutation, and a transpose that moves only size-1 axes is a reshape (so it merges with
its neighbours). Each of those would otherwise become a real operator in the emitted model; the layout pass folds
permutations of the graphs it converts, and this is what folds the TRANSPOSE / RESHAPE pairs of a converter-made
float TFLite file, which is NHWC already and which the layout pass leaves as it is.

`replace_constant` and `can_bypass` are the two rewrite rules that every constant-editing or node-removing pass
shares; they live here, beside the pass that uses both most.
"""

from __future__ import annotations

import numpy as np

from ..ir import Graph, Node, Tensor
from .manager import PassContext, register_pass


def replace_constant(graph: Graph, node: Node, index: int, data: np.ndarray) -> Tensor:
    """Give input `index` of `node` new constant data, keeping the old name when no one else reads the old tensor.

    Graph copies share constant arrays, so a pass never writes into one; it puts a new tensor in its place.
    """
    old = node.inputs[index]
    new = graph.constant(old.name, data)
    node.inputs[index] = new
    if not graph.consumers(old) and not graph.is_output(old):
        new.name = old.name
    return new


def keeps_order(perm, shape) -> bool:
    """True when permuting `shape` by `perm` moves only size-1 axes, i.e. element order is unchanged."""
    moved = [p for p in perm if shape[p] != 1]
    return moved == sorted(moved)


def _same_layout(a: Tensor, b: Tensor) -> bool:
    return (a.layout or "NCHW") == (b.layout or "NCHW")


def can_bypass(graph: Graph, node: Node) -> bool:
    """Whether `graph.bypass(node)` keeps the model's interface and every reader's view of the axes.

    A graph output keeps its name only if the input can take that name over (it cannot when it is a graph input,
    a constant or another output), and a 4-D tensor's layout tag must not change under its readers' feet.
    """
    src, dst = node.inputs[0], node.outputs[0]
    if graph.is_output(dst):
        if src.is_constant or any(src is t for t in graph.inputs) or graph.is_output(src):
            return False
    return len(dst.shape) != 4 or _same_layout(src, dst)


def _is_noop(node: Node) -> bool:
    if node.op == "identity":
        return True
    if node.op == "reshape":
        return node.outputs[0].shape == node.inputs[0].shape
    if node.op == "transpose":
        return list(node.attrs["perm"]) == list(range(len(node.attrs["perm"])))
    return False


def _fold_node(graph: Graph, node: Node) -> bool:
    from ..runtime import evaluate_node  # here, not at the top: the runtime loads numba, most pass users need not

    if any(graph.is_output(o) for o in node.outputs):
        return False  # a graph output stays computed, so the model's interface keeps a produced tensor
    values = evaluate_node(node, [i.data if i is not None else None for i in node.inputs])
    for out, value in zip(node.outputs, values):
        const = Tensor(out.name, quant=out.quant, data=np.array(value, dtype=out.dtype, order="C"))
        graph.replace_all_uses(out, const)
    graph.remove_node(node)
    return True


def _merge_moves(graph: Graph, node: Node, ctx: PassContext) -> None:
    """A transpose that keeps element order becomes a reshape; a reshape of a reshape, or a transpose of a
    transpose, reads the first one's input (the transposes' permutations composed); the first goes if unread."""
    if node.op == "transpose" and not _is_noop(node) and keeps_order(node.attrs["perm"], node.inputs[0].shape):
        node.op, node.attrs = "reshape", {"shape": list(node.outputs[0].shape)}
        ctx.count("transposes_to_reshape")
    inner = graph.producer(node.inputs[0])
    if node.op not in ("reshape", "transpose") or inner is None or inner.op != node.op:
        return
    if node.op == "transpose":
        node.attrs["perm"] = [inner.attrs["perm"][p] for p in node.attrs["perm"]]
    node.inputs[0] = inner.inputs[0]
    ctx.count(f"{node.op}s_merged")
    if not graph.consumers(inner.outputs[0]) and not graph.is_output(inner.outputs[0]):
        graph.erase(inner)


@register_pass("fold_constants")
def fold_constants(graph: Graph, ctx: PassContext) -> Graph:
    graph.toposort()
    for node in list(graph.nodes):
        ins = [i for i in node.inputs if i is not None]
        if ins and all(i.is_constant for i in ins) and _fold_node(graph, node):
            ctx.count("folded")
        else:
            _merge_moves(graph, node, ctx)
    for node in list(graph.nodes):
        if _is_noop(node) and can_bypass(graph, node):
            graph.bypass(node)
            ctx.count("noops_removed")
    return graph
