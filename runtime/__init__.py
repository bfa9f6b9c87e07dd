"""The reference runtime: runs an IR graph with mcc's own kernels (numpy + numba only, so it travels to ARM boards).

`run(graph, feeds, keep_all=False, rules=None)` executes a graph; `evaluate_node(node, input_values, rules)`
one node; `kernels.KERNELS` maps each op name to its float kernel, `kernels.int8_registry.INT8_KERNELS` to its
int8 kernel; `rules.rule_set(name)` picks the integer arithmetic (per target kernel set and version) that the
int8 kernels reproduce.
"""

from .interpreter import evaluate_node, run
from .kernels import KERNELS
from .rules import rule_set

__all__ = ["run", "evaluate_node", "KERNELS", "rule_set"]
