"""`mcc compile` as a function: load -> passes of the target's pipeline -> backend -> atomic write -> report.

Compile is a pure function of the model's bytes, the options and the mcc version: the emitted file is
byte-identical run to run (the report adds timings, which are not part of the model).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import __version__
from .errors import MccError
from .fileio import check_output_path, sha256, write_atomic
from .ir import Graph
from .ir.stats import table_json, totals
from .progress import Progress
from .targets import get_target


@dataclass
class CompileResult:
    graph: Graph
    data: bytes
    report: dict = field(default_factory=dict)


def load_model(path, *, trust_pickle=False, input_shapes=None, progress: Progress | None = None) -> Graph:
    from .frontend import load

    progress = progress or Progress(False)
    with progress.step(f"loading {path}"):
        return load(path, trust_pickle=trust_pickle, input_shapes=input_shapes)


def lower(graph: Graph, target_name: str, *, stop_after: str | None = None, progress: Progress | None = None,
          options: dict | None = None):
    """Run the target's pipeline with pass `options`; returns (graph, pass records)."""
    from .passes import run_pipeline

    target = get_target(target_name)
    if stop_after is not None and stop_after not in target.pipeline:
        raise MccError(f"pass '{stop_after}' is not in target {target.name}'s pipeline: {', '.join(target.pipeline)}")
    progress = progress or Progress(False)
    with progress.step(f"running {len(target.pipeline)} passes for {target.name}"):
        return run_pipeline(graph, list(target.pipeline), options, stop_after=stop_after,
                            progress=lambda name: progress.say(f"  pass {name}"), reporter=progress)


def emit(graph: Graph, target_name: str) -> bytes:
    from .backends import emit as emit_file

    return emit_file(graph, get_target(target_name).backend)


def _io(tensors) -> list[dict]:
    return [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype, "layout": t.layout,
             **({"quantization": t.quant.to_json()} if t.quant is not None else {})} for t in tensors]


def calibration_arrays(path, graph: Graph) -> dict:
    """Read --calib data and check it against the source model's inputs before any pass runs: shapes, and finite
    values (a NaN would turn every observed range, and so every scale, into NaN)."""
    from .datafiles import match_inputs, read_arrays

    arrays = read_arrays(path)
    feeds, _ = match_inputs(arrays, graph.inputs, path=path)
    for name, a in feeds.items():
        bad = ~np.isfinite(a.reshape(len(a), -1)).all(axis=1) if a.size else np.zeros(0, bool)
        if bad.any():
            raise MccError(f"calibration input '{name}' holds NaN or infinite values in {int(bad.sum())} of its "
                           f"{len(a)} samples (first: sample {int(np.argmax(bad))}); calibration needs finite data: "
                           "drop or fix those samples", path=path)
    return feeds


def nonfinite_weights(graph: Graph) -> list[str]:
    """Names of the constants that hold NaN or infinite values."""
    return [t.name for t in graph.constants()
            if np.issubdtype(t.data.dtype, np.floating) and not np.isfinite(t.data).all()]


def compile_model(source, target_name: str, output=None, *, trust_pickle=False, input_shapes=None,
                  report_path=None, calib=None, options: dict | None = None,
                  progress: Progress | None = None, fallback: str | None = None,
                  fallback_sqnr: float | None = None) -> CompileResult:
    """Compile `source` (a model file path or an already loaded Graph) for a target and write `output` atomically.

    `calib` is a .npz/.npy path (or a dict of arrays by input name) for targets that quantize; `options` are
    pass options (observer, io, bias_correction, cle, require_int8). `fallback` ("float", see analyze.py) keeps
    the layers that per-layer analysis blames out of int8 until the output SQNR reaches `fallback_sqnr` dB."""
    progress = progress or Progress(False)
    target = get_target(target_name)
    if fallback is not None:
        from .analyze import check_fallback

        check_fallback(target.name, fallback, options or {})
    for p in (output, report_path):
        if p is not None:
            check_output_path(p)
    if isinstance(source, Graph):
        graph, source_info = source, {"path": None, "sha256": None}
    else:
        if Path(source).is_dir():
            raise MccError("is a folder, not a model file; give the model file's path", path=source)
        if not Path(source).is_file():
            raise MccError("no such model file; check the path", path=source)
        graph = load_model(source, trust_pickle=trust_pickle, input_shapes=input_shapes, progress=progress)
        source_info = {"path": str(source), "sha256": sha256(Path(source).read_bytes())}
    source_io = {"inputs": _io(graph.inputs), "outputs": _io(graph.outputs), "origin": dict(graph.origin)}
    warnings = []
    bad = nonfinite_weights(graph)
    if bad:
        listed = ", ".join(f"'{n}'" for n in bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        if target.needs_calibration:
            raise MccError(f"weight(s) {listed} hold NaN or infinite values, which have no int8 scale; fix the model "
                           "(a diverged training run, an overflow in export) before quantizing it",
                           path=source_info["path"])
        warnings.append(f"weight(s) {listed} hold NaN or infinite values; the compiled model computes with them")
    options = dict(options or {})
    if target.needs_calibration:
        if calib is None:
            raise MccError(f"target {target.name} quantizes and needs calibration data: pass --calib samples.npz "
                           "(one array per model input, batch first, in the source model's layout)")
        options["calibration"] = calib if isinstance(calib, dict) else calibration_arrays(calib, graph)
    # mixed precision (issue 15): analyse, then compile with the chosen layers kept back
    fallback_plan = None
    if fallback is not None:
        from .analyze import plan_fallback

        options, fallback_plan, quantizer = plan_fallback(graph, target.name, options, fallback, fallback_sqnr,
                                                          progress)
    before = totals(graph)
    graph, records = lower(graph, target.name, progress=progress, options=options)
    with progress.step(f"writing {target.backend}"):
        data = emit(graph, target.name)
    report = {
        "mcc_version": __version__,
        "target": {"name": target.name, "isa": target.isa, "number_format": target.number_format,
                   "backend": target.backend},
        "source": {**source_info, **source_io, "totals": before},
        "output": {"path": str(output) if output else None, "bytes": len(data), "sha256": sha256(data),
                   "inputs": _io(graph.inputs), "outputs": _io(graph.outputs), "totals": totals(graph)},
        "warnings": warnings,
        "passes": [r.to_json() for r in records],
        "layers": table_json(graph),
    }
    if fallback_plan is not None:
        from .analyze import fallback_cost

        with progress.step("measuring the fallback's cost"):
            fallback_plan["cost"] = fallback_cost(quantizer, data)
        report["fallback"] = fallback_plan
    if output is not None:
        write_atomic(output, data)
    if report_path is not None:
        write_atomic(report_path, (json.dumps(report, indent=2) + "\n").encode())
    return CompileResult(graph, data, report)
