"""eliminate_dead: remove nodes whose outputs no graph output depends on.

The removal itself is `Graph.cleanup` (graph hygiene belongs to the graph, as in onnx-graphsurgeon); the pass
exists so that a pipeline can place it after rewrites that strand nodes and so the report says how many went.
"""

from __future__ import annotations

from ..ir import Graph
from .manager import PassContext, register_pass


@register_pass("eliminate_dead")
def eliminate_dead(graph: Graph, ctx: PassContext) -> Graph:
    ctx.count("removed", graph.cleanup())
    return graph
