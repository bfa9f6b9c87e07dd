"""Named graph -> graph passes and the pipeline that runs them and records what each one changed.

As in TVM Relax, a pass is a plain function registered under a name and a pipeline is a list of names that a
target chooses. mcc adds accounting: the manager measures params, MACs, bytes and node count before and after
every pass and keeps the pass's own notes, so the compile report shows each pass's effect without the pass
having to measure anything itself. Each pass works on a copy, so a failing pass never leaves a half-rewritten
graph behind and every stage can be inspected (`mcc inspect --after PASS`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from ..ir import Graph
from ..ir.stats import totals


@dataclass
class PassContext:
    """What a pass may read besides the graph (target options, calibration data) and where it writes notes."""

    options: dict = field(default_factory=dict)
    notes: dict = field(default_factory=dict)

    def note(self, key: str, value) -> None:
        self.notes[key] = value

    def count(self, key: str, n: int = 1) -> None:
        self.notes[key] = self.notes.get(key, 0) + n


@dataclass
class PassRecord:
    name: str
    seconds: float
    before: dict
    after: dict
    notes: dict

    def to_json(self) -> dict:
        return {"pass": self.name, "seconds": round(self.seconds, 4), "before": self.before,
                "after": self.after, "notes": self.notes}


PASSES: dict[str, Callable[[Graph, PassContext], Graph]] = {}


def register_pass(name: str):
    def deco(fn):
        PASSES[name] = fn
        return fn
    return deco


def run_pipeline(graph: Graph, names: list[str], options: dict | None = None,
                 stop_after: str | None = None, progress=None) -> tuple[Graph, list[PassRecord]]:
    """Run passes in order on copies of `graph`; verify after each; return the result and one record per pass."""
    records = []
    for name in names:
        if name not in PASSES:
            raise KeyError(f"unknown pass '{name}'; known passes: {', '.join(sorted(PASSES))}")
        ctx = PassContext(options=dict(options or {}))
        before = totals(graph)
        start = time.perf_counter()
        if progress:
            progress(name)
        graph = PASSES[name](graph.copy(), ctx)
        graph.infer_shapes()
        graph.verify()
        records.append(PassRecord(name, time.perf_counter() - start, before, totals(graph), ctx.notes))
        if name == stop_after:
            break
    return graph, records
