"""Calibration: the user's sample arrays cut into model batches, the float graph run over them with every
tensor's value fed to its range observer, and the measure of how far a quantized graph strays from the float
one on the same data (output SQNR).

The TFLite converter calibrates by running a representative dataset through a float interpreter that it
instruments with min/max logging ops. mcc runs its own float runtime with keep_all, which returns every
intermediate tensor by name, so nothing is added to the graph to observe it and the values observed are
those of the exact graph that is about to be quantized.
"""

from __future__ import annotations

import numpy as np

from ..datafiles import match_inputs
from ..errors import MccError
from ..ir import Graph, Node, Tensor
from ..runtime import evaluate_node, run
from .observers import make_observer


def calibration_batches(graph: Graph, arrays: dict[str, np.ndarray] | None) -> list[dict[str, np.ndarray]]:
    """The user's arrays (by input name, batch first, in the source model's layout) as feeds of the graph's
    batch size; samples that do not fill a last batch are left out."""
    if not arrays:
        raise MccError("int8 quantization needs calibration data to choose activation ranges: pass --calib "
                       "samples.npz (one array per model input, named after it, batch first; a few hundred "
                       "representative samples are plenty)")
    feeds, _ = match_inputs(arrays, graph.inputs)
    counts = {len(v) for v in feeds.values()}
    if len(counts) != 1:
        raise MccError(f"calibration arrays differ in sample count: { {k: len(v) for k, v in feeds.items()} }; "
                       "give every input the same number of samples")
    n, batch = counts.pop(), graph.inputs[0].shape[0]
    if n < batch:
        raise MccError(f"{n} calibration samples do not fill one batch of {batch}, the model's batch size; "
                       "pass more samples with --calib")
    return [{k: v[i:i + batch] for k, v in feeds.items()} for i in range(0, n - n % batch, batch)]


def activations(graph: Graph) -> list[Tensor]:
    """The float32 tensors that carry data at run time (graph inputs and node outputs), in graph order."""
    out, seen = [], set()
    for t in graph.inputs + [o for n in graph.nodes for o in n.outputs]:
        if t.dtype == "float32" and id(t) not in seen:
            seen.add(id(t))
            out.append(t)
    return out


def observe_ranges(graph: Graph, batches: list[dict], observer: str, progress=None) -> dict[str, tuple[float, float]]:
    """Run the float graph over every batch and return each activation's observed range by tensor name."""
    names = [t.name for t in activations(graph)]
    observers = {name: make_observer(observer) for name in names}
    every = max(1, len(batches) // 10)
    for i, feeds in enumerate(batches, 1):
        values = run(graph, feeds, keep_all=True)
        for name in names:
            observers[name].update(values[name])
        if progress is not None and (i % every == 0 or i == len(batches)):
            progress.say(f"calibrating {i}/{len(batches)}")
    return {name: observers[name].range() for name in names}


def graph_feeds(graph: Graph, feeds: dict[str, np.ndarray], rules="litert-ref") -> dict[str, np.ndarray]:
    """Float feeds made fit for `graph`: inputs that are int8 are quantized with their parameters, rounding as
    the kernel set `rules` quantizes, so an int8-interface graph can be run on the same data as a float one."""
    out = {}
    for t in graph.inputs:
        x = feeds[t.name]
        if t.dtype == "int8":
            source = Tensor(f"{t.name}/float", x.shape, "float32", t.layout)
            x = evaluate_node(Node("quantize", f"{t.name}/quantize", [source], [t], {"dtype": "int8"}), [x], rules)[0]
        out[t.name] = x
    return out


def real_outputs(graph: Graph, values: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The graph outputs in order, int8 ones dequantized to the reals they stand for."""
    return [real_value(t, values[t.name]) for t in graph.outputs]


def real_value(t: Tensor, v: np.ndarray) -> np.ndarray:
    """The reals an int8 (per-tensor) tensor's value stands for; other values as float64."""
    if t.dtype == "int8":
        return (v.astype(np.float64) - float(t.quant.zero_point[0])) * float(t.quant.scale[0])
    return np.asarray(v, np.float64)


def reference_outputs(reference: Graph, batches: list[dict]) -> list[list[np.ndarray]]:
    """`reference`'s outputs per batch, for comparing many graphs with one (mcc analyze)."""
    return [real_outputs(reference, run(reference, feeds)) for feeds in batches]


def json_db(value, digits: int = 2) -> float | None:
    """An SQNR figure for a JSON report: rounded, and None for an error-free (infinite) one, which JSON lacks."""
    return round(float(value), digits) if np.isfinite(value) else None


def output_sqnr_db(reference: Graph | list, graph: Graph, batches: list[dict], rules="litert-ref") -> float:
    """10 log10(signal / noise) of `graph`'s outputs against `reference`'s over `batches` (all outputs
    pooled); the graphs take the same float feeds and have their outputs in the same order. `reference` may be
    given as its reference_outputs on `batches`."""
    signal = noise = 0.0
    wants = reference_outputs(reference, batches) if isinstance(reference, Graph) else reference
    for feeds, want in zip(batches, wants):
        got = real_outputs(graph, run(graph, graph_feeds(graph, feeds, rules), rules=rules))
        signal += sum(float(np.sum(w ** 2)) for w in want)
        noise += sum(float(np.sum((w - g) ** 2)) for w, g in zip(want, got))
    return sqnr_db(signal, noise)


def sqnr_db(signal: float, noise: float) -> float:
    if noise == 0.0:
        return float("inf")
    return float(10.0 * np.log10(max(signal, 1e-300) / noise))
