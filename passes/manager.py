"""Named graph -> graph passes, their contracts, and the pipeline that runs them and records what each changed.

As in TVM Relax, a pass is a plain function registered under a name with typed parameters, and a pipeline is a
list of names that a target chooses. Each pass declares its contract when it registers:
- `options`: a dataclass of the options it reads (typed, with defaults). A pipeline hands each pass the options
  it declares; an option no pass of the pipeline declares, or a value of the wrong type, is an MccError naming
  the passes and their options, instead of a silently ignored key.
- `requires`: preconditions on the graph (CONDITIONS below: a float graph, a layout, batch norms folded), checked
  by the manager before the pass runs, so a pass placed wrongly in a pipeline fails with the rule it needs
  instead of miscompiling.
mcc adds accounting: the manager measures params, MACs, bytes and node count before and after every pass and
keeps the pass's own notes, so the compile report shows each pass's effect without the pass measuring anything.
Each pass works on a copy, so a failing pass never leaves a half-rewritten graph behind and every stage can be
inspected (`mcc inspect --after PASS`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
import typing
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..errors import MccError
from ..ir import Graph
from ..ir.stats import totals


def content_digest(graph: Graph, *parts) -> str:
    """One hash of a graph's structure and constant data and of `parts` (options: arrays hashed by their bytes,
    dicts by sorted key): the key under which a costly pass (finetune's training, low_rank's search) caches
    its result, so the passes the report and the fidelity guard re-run cost nothing twice."""
    h = hashlib.sha256()

    def feed(x):
        if isinstance(x, np.ndarray):
            h.update(repr((x.dtype.str, x.shape)).encode())
            h.update(np.ascontiguousarray(x).tobytes())
        elif isinstance(x, dict):
            for k in sorted(x):
                h.update(repr(k).encode())
                feed(x[k])
        else:
            h.update(repr(x).encode())
    for p in parts:
        feed(p)
    for n in graph.topological_order():
        h.update(repr((n.op, n.name, [None if t is None else (t.name, t.shape, t.layout) for t in n.inputs],
                       sorted(n.attrs.items(), key=lambda kv: kv[0]))).encode())
        for t in n.inputs:
            if t is not None and t.is_constant:
                h.update(np.ascontiguousarray(t.data).tobytes())
    return h.hexdigest()


@dataclass
class PassContext:
    """What a pass may read besides the graph (its typed options, a progress reporter) and where it writes notes."""

    options: Any = None
    notes: dict = field(default_factory=dict)
    progress: Any = None
    untouched: bool = False

    def unchanged(self, graph: Graph) -> Graph:
        """What a pass returns when it left `graph` exactly as it received it (its option off, nothing to
        rewrite): the manager then keeps the previous pass's shape inference, verification and totals instead of
        redoing them on the same graph (0.6 ms a pass for the bench MobileNetV2; five passes of an arm-int8 compile
        without compression options are such no-ops)."""
        self.untouched = True
        return graph

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


def _first(graph: Graph, test) -> str | None:
    return next((t.name for t in graph.tensors() if test(t)), None)


# Preconditions: name -> (the first tensor or node that breaks it, or None; what to do about it).
CONDITIONS: dict[str, tuple[Callable[[Graph], str | None], str]] = {
    "float": (lambda g: _first(g, lambda t: t.quant is not None or t.dtype in ("int8", "uint8", "int16")),
              "is quantized already; run this pass before quantize_int8, on a float graph"),
    "nhwc": (lambda g: _first(g, lambda t: t.layout == "NCHW"),
             "is NCHW; run to_nhwc first (and legalize_tflite where the pass expects a TFLite-legal graph)"),
    "nchw": (lambda g: _first(g, lambda t: t.layout == "NHWC"), "is NHWC; run to_nchw first"),
    "no_batch_norm": (lambda g: next((n.name for n in g.nodes if n.op == "batch_norm"), None),
                      "is a batch_norm; run fold_batchnorm first"),
}


@dataclass(frozen=True)
class PassSpec:
    name: str
    run: Callable[[Graph, PassContext], Graph]
    options: type | None
    requires: tuple[str, ...]

    def option_names(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self.options)] if self.options else []

    def make_options(self, given: dict):
        """The pass's options dataclass from the keys of `given` it declares, each type-checked."""
        if self.options is None:
            return None
        hints = typing.get_type_hints(self.options)
        values = {k: v for k, v in given.items() if k in hints}
        for k, v in values.items():
            if not _matches(v, hints[k]):
                raise MccError(f"pass {self.name}: option '{k}' must be {_describe(hints[k])}, got {v!r}")
        return self.options(**values)


PASSES: dict[str, PassSpec] = {}


def register_pass(name: str, *, options: type | None = None, requires: tuple[str, ...] = ()):
    unknown = [r for r in requires if r not in CONDITIONS]
    if unknown:
        raise ValueError(f"pass {name} requires unknown conditions {unknown}; known: {sorted(CONDITIONS)}")

    def deco(fn):
        PASSES[name] = PassSpec(name, fn, options, tuple(requires))
        return fn
    return deco


def _matches(value, hint) -> bool:
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return any(_matches(value, h) for h in typing.get_args(hint))
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin is not None:
        return isinstance(value, origin)
    return isinstance(value, hint)


def _describe(hint) -> str:
    if typing.get_origin(hint) is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def check_options(names: list[str], options: dict) -> None:
    """Every option must be declared by some pass of the pipeline: a misspelt or misplaced one is an error."""
    specs = [_spec(n) for n in names]
    declared = {k for s in specs for k in s.option_names()}
    unknown = sorted(set(options) - declared)
    if unknown:
        listing = "; ".join(f"{s.name}: {', '.join(s.option_names())}" for s in dict.fromkeys(specs)
                            if s.option_names()) or "none of them takes options"
        raise MccError(f"option(s) {', '.join(repr(k) for k in unknown)} are not options of any pass in the "
                       f"pipeline {', '.join(names)} ({listing})")


def check_requires(spec: PassSpec, graph: Graph) -> None:
    for condition in spec.requires:
        test, advice = CONDITIONS[condition]
        culprit = test(graph)
        if culprit is not None:
            raise MccError(f"pass {spec.name} needs a graph that is {condition.replace('_', ' ')}, but '{culprit}' "
                           f"{advice}")


def _spec(name: str) -> PassSpec:
    if name not in PASSES:
        raise MccError(f"unknown pass '{name}'; known passes: {', '.join(sorted(PASSES))}")
    return PASSES[name]


def run_pipeline(graph: Graph, names: list[str], options: dict | None = None, stop_after: str | None = None,
                 progress=None, reporter=None) -> tuple[Graph, list[PassRecord]]:
    """Run passes in order on a copy of `graph` (`graph` itself is left as it was), each with the options it
    declares; check each one's preconditions before and verify the graph after it; return the result and one
    record per pass. `progress` is called with each pass's name; `reporter` (a Progress) is what long passes report
    through. A pass may edit the graph it is given: only the previous pass's result, which nothing else holds (a
    copy per pass cost 18 copies of a MobileNetV2, 2 ms each, in a compile). A pass that returns
    ctx.unchanged(graph) after an earlier pass was checked is not checked again: the graph is the one checked."""
    options = dict(options or {})
    check_options(names, options)
    records = []
    after = None
    graph = graph.copy()
    for name in names:
        spec = _spec(name)
        check_requires(spec, graph)
        ctx = PassContext(options=spec.make_options(options), progress=reporter)
        before = after if after is not None else totals(graph)  # the graph the last pass returned, unchanged
        start = time.perf_counter()
        if progress:
            progress(name)
        given = graph
        graph = spec.run(graph, ctx)
        if not (ctx.untouched and graph is given and after is not None):
            graph.infer_shapes()
            graph.verify(inferred=True)
            after = totals(graph)
        records.append(PassRecord(name, time.perf_counter() - start, before, after, ctx.notes))
        if name == stop_after:
            break
    return graph, records
