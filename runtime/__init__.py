"""The reference runtime: runs an IR graph with mcc's own kernels (numpy + numba only, so it travels to ARM boards).

`run(graph, feeds, keep_all=False)` executes a graph; `evaluate_node(node, input_values)` one node;
`kernels.KERNELS` maps each op name to its kernel.
"""

from .interpreter import evaluate_node, run
from .kernels import KERNELS

__all__ = ["run", "evaluate_node", "KERNELS"]
