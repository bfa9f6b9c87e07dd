"""fuse_activations: fold relu / relu6 / clip(0, 6) / clip(-1, 1) into the `activation` of the op before it.

The TFLite converter fuses with MLIR rewrite patterns written per (op, activation) pair; mcc does it as one IR pass
with one table over its canonical op set, so every frontend benefits and a target that fuses fewer ops
(option `fusable_ops`) narrows it by name.
The producer must feed only the activation and not be a graph output: otherwise someone still reads the
pre-activation value.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..ir import Graph, Node
from ..ir.ops import ops_with_attr
from ..ir.pattern import Pat, matches
from .manager import PassContext, register_pass

FUSABLE_OPS = ops_with_attr("activation")

_CLIPS = {(0.0, 6.0): "relu6", (-1.0, 1.0): "relu_n1_to_1"}


def fused_name(node: Node) -> str | None:
    """The `activation` value equivalent to an activation node, or None when it has none."""
    if node.op in ("relu", "relu6"):
        return node.op
    if node.op == "clip":
        return _CLIPS.get((float(node.attrs["min"]), float(node.attrs["max"])))
    return None


@dataclass
class FuseOptions:
    fusable_ops: frozenset | set | None = None  # a target that fuses fewer ops narrows FUSABLE_OPS by name


@register_pass("fuse_activations", options=FuseOptions)
def fuse_activations(graph: Graph, ctx: PassContext) -> Graph:
    allowed = FUSABLE_OPS & frozenset(ctx.options.fusable_ops or FUSABLE_OPS)
    unfused = Pat(allowed, name="producer", where=lambda n: n.attrs.get("activation") is None)
    for m in matches(graph, Pat(None, unfused, where=lambda n: fused_name(n) is not None, name="activation")):
        prod, node = m["producer"], m["activation"]
        act = prod.attrs["activation"] = fused_name(node)
        if node.outputs[0].quant is not None:
            node.inputs[0].quant = node.outputs[0].quant  # the fused op now writes the activation's output range
        graph.bypass(node)
        ctx.count("fused")
        ctx.count(f"fused_{act}")
    return graph
