"""The kernel table: one function per IR op name, looked up by the interpreter and by constant folding.

A kernel is `fn(node, inputs) -> outputs`: it reads attributes and layouts from the node and computes on the
numpy arrays it is given (None for an absent optional input), so the same table serves whole-graph runs and
single-node evaluation. A float kernel whose result depends on the peer's order of operations (RULED:
batch_matmul, resize) also takes the run's runtime.rules.RuleSet, so a float island of an int8 model computes
as the peer does.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ...errors import MccError

Kernel = Callable[..., list]

KERNELS: dict[str, Kernel] = {}
RULED: set[str] = set()  # ops whose float kernel is fn(node, inputs, rules)


def kernel(*ops: str, ruled: bool = False):
    """Register the decorated function as the kernel of every op in `ops`; `ruled`: it takes the rule set too."""
    def register(fn: Kernel) -> Kernel:
        for name in ops:
            KERNELS[name] = fn
            if ruled:
                RULED.add(name)
        return fn
    return register


def require_float32(node, *arrays) -> None:
    """The compiled loops exist for float32 only; refuse other dtypes instead of compiling a silent variant."""
    for a in arrays:
        if a is not None and a.dtype != np.float32:
            raise MccError(f"{node.op} runs on float32 tensors in this runtime, got {a.dtype}; "
                           "quantized graphs need the integer kernels", node=node.name)
