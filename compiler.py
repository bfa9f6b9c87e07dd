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
from .collector import old_objects_frozen
from .errors import FidelityError, MccError
from .fileio import check_output_path, file_sha256_soon, sha256, write_atomic
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
          options: dict | None = None, keep_float: bool = False):
    """Run the target's pipeline with pass `options`; returns (graph, pass records), and with `keep_float` (a
    target whose pipeline quantizes) (graph, records, float reference): the graph quantize_int8 received, through
    the passes after it, which is validate.float_reference's graph without running the float passes again."""
    from .passes import run_pipeline
    from .passes.manager import check_options

    target = get_target(target_name)
    if stop_after is not None and stop_after not in target.pipeline:
        raise MccError(f"pass '{stop_after}' is not in target {target.name}'s pipeline: {', '.join(target.pipeline)}")
    progress = progress or Progress(False)
    pipeline = list(target.pipeline)

    def passes(graph, names, stop=None):
        return run_pipeline(graph, names, {k: v for k, v in (options or {}).items() if k in _declared(names)},
                            stop_after=stop, progress=lambda name: progress.say(f"  pass {name}"), reporter=progress)

    check_options(pipeline, options or {})
    with progress.step(f"running {len(pipeline)} passes for {target.name}"):
        if not keep_float:
            return passes(graph, pipeline, stop_after)
        cut = pipeline.index("quantize_int8")
        front, records = passes(graph, pipeline[:cut])
        graph, more = passes(front, pipeline[cut:])
        after = pipeline[cut + 1:]
        return graph, records + more, run_pipeline(front, after, {k: v for k, v in (options or {}).items()
                                                                  if k in _declared(after)})[0]


def _declared(names: list[str]) -> set[str]:
    """The options the passes `names` declare."""
    from .passes import PASSES

    return {k for p in names for k in PASSES[p].option_names()}


def emit(graph: Graph, target_name: str, info=None) -> bytes:
    from .backends import emit as emit_file

    return emit_file(graph, get_target(target_name).backend, info)


def _io(tensors) -> list[dict]:
    return [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype, "layout": t.layout,
             **({"quantization": t.quant.to_json()} if t.quant is not None else {})} for t in tensors]


def calibration_arrays(path, graph: Graph, arrays: dict | None = None) -> dict:
    """Read --calib data (or check `arrays` read from `path`) against the source model's inputs before any pass
    runs: shapes, and finite values (a NaN would turn every observed range, and so every scale, into NaN)."""
    from .datafiles import match_inputs, read_arrays

    arrays = read_arrays(path) if arrays is None else arrays
    feeds, _ = match_inputs(arrays, graph.inputs, path=path)
    for name, a in feeds.items():
        with np.errstate(over="ignore", invalid="ignore"):
            if not a.size or np.isfinite(a.sum()):  # one pass without a copy: a NaN or infinity makes the sum one
                continue
        bad = ~np.isfinite(a.reshape(len(a), -1)).all(axis=1)
        if bad.any():  # else the sum overflowed
            raise MccError(f"calibration input '{name}' holds NaN or infinite values in {int(bad.sum())} of its "
                           f"{len(a)} samples (first: sample {int(np.argmax(bad))}); calibration needs finite data: "
                           "drop or fix those samples", path=path)
    return feeds


def nonfinite_weights(graph: Graph) -> list[str]:
    """Names of the constants that hold NaN or infinite values."""
    return [t.name for t in graph.constants()
            if np.issubdtype(t.data.dtype, np.floating) and not np.isfinite(t.data).all()]


@old_objects_frozen
def compile_model(source, target_name: str, output=None, *, trust_pickle=False, input_shapes=None,
                  report_path=None, calib=None, options: dict | None = None,
                  progress: Progress | None = None, fallback: str | None = None,
                  fallback_sqnr: float | None = None, min_sqnr: float | None = None,
                  hold_out: bool = True, metadata: dict | None = None, html_path=None,
                  finetune=None, eval_data=None) -> CompileResult:
    """Compile `source` (a model file path or an already loaded Graph) for a target and write `output` atomically.

    `calib` is a .npz/.npy path (or a dict of arrays by input name) for targets that quantize; `options` are
    pass options (observer, io, bias_correction, cle, require_int8). `fallback` ("float" or "int16", see
    analyze.py) keeps the layers that per-layer analysis blames out of int8 until the output SQNR reaches
    `fallback_sqnr` dB. Targets that quantize run the fidelity guard (fidelity_guard) and raise FidelityError,
    writing no output, when an output's SQNR is below `min_sqnr`; `hold_out=False` calibrates on every sample and
    measures the guard on them too (a benchmark that gives mcc and its peers the same calibration samples).
    `metadata` ({"normalization": {"mean": [...], "std": [...]}, "labels": path}) is embedded in the file
    (formats/model_info.py); `html_path` gets the report as a self-contained HTML page (report_html.py).
    `finetune` (a .npz path, or passes.finetune.FinetuneData) trains the compressed float graph against the source
    model as teacher (passes/finetune.py; options epochs, finetune_lr, temperature) before quantization.
    `eval_data` (a .npz path: inputs and optional integer 'labels') is the held-out set the compression report
    measures every compression pass's SQNR and accuracy on (else the fine-tuning or calibration samples)."""
    progress = progress or Progress(False)
    target = get_target(target_name)
    if fallback is not None:
        from .analyze import check_fallback

        check_fallback(target.name, fallback, options or {})
    for p in (output, report_path, html_path):
        if p is not None:
            check_output_path(p)
    if isinstance(source, Graph):
        graph, source_info = source, {"path": None, "sha256": None}
    else:
        if Path(source).is_dir():
            raise MccError("is a folder, not a model file; give the model file's path", path=source)
        if not Path(source).is_file():
            raise MccError("no such model file; check the path", path=source)
        digest = file_sha256_soon(source)
        graph = load_model(source, trust_pickle=trust_pickle, input_shapes=input_shapes, progress=progress)
        source_info = {"path": str(source), "sha256": digest()}
    from .formats.model_info import model_info

    info = model_info(metadata, graph)  # checked against the model before any work
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
        arrays = calib if isinstance(calib, dict) else calibration_arrays(calib, graph)
        options["calibration"], held_out = split_held_out(arrays, graph, owned=not isinstance(calib, dict)) \
            if hold_out else (arrays, None)
    elif calib is not None:  # a float target: for the compression passes that measure on data
        options["calibration"] = calib if isinstance(calib, dict) else calibration_arrays(calib, graph)
    source_graph = graph
    evaluation = read_eval_data(eval_data, graph) if eval_data is not None else None  # refused before any pass
    options.update(finetune_options(finetune, graph, options))
    # mixed precision (issue 15): analyse, then compile with the chosen layers kept back
    fallback_plan = None
    if fallback is not None:
        from .analyze import plan_fallback

        options, fallback_plan, quantizer = plan_fallback(graph, target.name, options, fallback, fallback_sqnr,
                                                          progress)
    before = totals(graph)
    lowered = lower(graph, target.name, progress=progress, options=options, keep_float=target.needs_calibration)
    graph, records = lowered[:2]
    with progress.step(f"writing {target.backend}"):
        data = emit(graph, target.name, info)
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
        **({"metadata": info.to_json()} if info is not None else {}),
    }
    trained = next((r.notes["finetune"] for r in records if "finetune" in r.notes), None)
    if trained is not None:
        report["finetune"] = trained
    compression = compression_report(source_graph, target.name, options, records, data, graph, progress, evaluation)
    if compression is None and evaluation is not None:
        warnings.append(f"--eval-data {eval_data} was not used: no compression pass changed the model (it measures "
                        "--prune, --low-rank, --depthwise, binarize and --finetune)")
    if compression is not None:
        report["compression"] = compression
        if any(p["pass"] == "prune" for p in compression["passes"]):
            report["pruning"] = pruning_report(compression, records, options)
    if fallback_plan is not None:
        from .analyze import fallback_cost

        with progress.step("measuring the fallback's cost"):
            fallback_plan["cost"] = fallback_cost(quantizer, data)
        report["fallback"] = fallback_plan
    failure = None
    if target.needs_calibration:
        report["fidelity"], failure = fidelity_guard(lowered[2], data, target.name, options, held_out, min_sqnr,
                                                     progress, graph)
        warnings.extend(report["fidelity"]["warnings"])
    if report_path is not None:  # also on a guard failure: its per-layer table is what to look at
        write_atomic(report_path, (json.dumps(report, indent=2) + "\n").encode())
    if html_path is not None:
        from .report_html import render_html

        write_atomic(html_path, render_html(report).encode())
    if failure is not None:
        raise FidelityError(failure + (f"; report written to {report_path}" if report_path is not None else ""))
    if output is not None:
        write_atomic(output, data)
    return CompileResult(graph, data, report)


# ---- fine-tuning (issue 17) --------------------------------------------------------------------------------------
TRAINING_OPTIONS = ("epochs", "finetune_lr", "temperature")


def finetune_options(finetune, source: Graph, options: dict) -> dict:
    """The finetune pass's data option from --finetune (read and checked against the source model, which is the
    teacher), before any pass runs; training options without data are refused rather than ignored."""
    if finetune is None:
        given = [k for k in TRAINING_OPTIONS if options.get(k) is not None]
        if given:
            raise MccError(f"{', '.join(given)} configure fine-tuning: add --finetune train.npz, or drop them")
        return {}
    from .passes.finetune import FinetuneData, read_finetune_data

    return {"finetune": finetune if isinstance(finetune, FinetuneData) else read_finetune_data(finetune, source)}


# ---- fidelity guard (issue 15) ----------------------------------------------------------------------------------
HOLD_OUT_MIN_SAMPLES = 128  # from here on, every 4th batch of the calibration data is held out for the guard


def split_held_out(arrays: dict, graph: Graph, owned: bool = False) -> tuple[dict, dict | None]:
    """(calibration arrays, held-out arrays or None). With at least HOLD_OUT_MIN_SAMPLES samples, every 4th batch
    of the model's batch size is held out, so the guard measures on data the ranges were not fitted to while the
    ranges still see three quarters of it (interleaved, not the last quarter: data sorted by class would leave
    the last classes out of calibration); with fewer, the guard measures on the calibration data itself and says
    so. The TFLite converter and onnxruntime's quantize_static measure nothing after quantizing. `owned`: the
    arrays are mcc's own (read from the --calib file), so the calibration samples are moved to the front of them,
    in order, rather than copied out (500 224x224 samples: a new 225 MB array, whose first touch cost more than
    the copy)."""
    counts = {len(v) for v in arrays.values()}
    n, batch = max(counts), graph.inputs[0].shape[0]
    if n < HOLD_OUT_MIN_SAMPLES or len(counts) > 1:  # differing counts: calibration_batches says what to do
        return arrays, None
    held = (np.arange(n) // batch) % 4 == 3
    held[n - n % batch:] = False  # samples that do not fill a batch stay with calibration
    if not held.any():  # fewer than four batches
        return arrays, None
    kept, held = np.flatnonzero(~held), np.flatnonzero(held)  # by index: faster than a boolean mask
    held_out = {k: v.take(held, axis=0) for k, v in arrays.items()}
    if not owned:
        return {k: v.take(kept, axis=0) for k, v in arrays.items()}, held_out
    for v in arrays.values():
        for j, i in enumerate(kept):  # i >= j: sample i is read before anything is written over it
            if i != j:
                v[j] = v[i]
    return {k: v[:len(kept)] for k, v in arrays.items()}, held_out


def fidelity_guard(reference: Graph, data: bytes, target_name: str, options: dict, held_out: dict | None,
                   min_sqnr: float | None, progress: Progress,
                   compiled: Graph | None = None, workers: int | None = None) -> tuple[dict, str | None]:
    """Run the emitted int8 file (read back from its bytes, as mcc run and validate do; mcc's runtime under the
    rules of the target's reference kernels) and `reference`, the float graph it was quantized from
    (validate.float_reference's, kept by lower), on the held-out samples (or the calibration samples), and judge
    each output's SQNR: below GUARD_SQNR_DB a warning naming the output and the first layers where the error
    jumps; below `min_sqnr` the failure message. `compiled`, the graph the file was written from, lends its
    constant arrays (share_constants). `workers`: samples side by side (layer_fidelity; the figures do not depend
    on it). Returns (the report's "fidelity" entry, the failure message or None)."""
    from .passes.calibrate import json_db
    from .validate import DEFAULT_RULES, GUARD_SQNR_DB, explain, layer_fidelity, low_outputs, read_model_bytes

    backend = get_target(target_name).backend
    arrays = held_out if held_out is not None else options["calibration"]
    data_kind = "held-out samples" if held_out is not None else "calibration samples"
    with progress.step(f"fidelity guard: float and int8 graphs on {len(next(iter(arrays.values())))} {data_kind}"):
        emitted = read_model_bytes(data, backend, None)
        if compiled is not None:
            share_constants(emitted, compiled)
        view = layer_fidelity(reference, emitted, arrays, DEFAULT_RULES[backend], progress, workers)
    samples = f" on {view['samples']} {data_kind}"
    warnings = [f"int8 {explain(view, name, f' (below {GUARD_SQNR_DB:g} dB){samples}')}"
                for name in low_outputs(view, GUARD_SQNR_DB)]
    failing = low_outputs(view, min_sqnr) if min_sqnr is not None else []
    failure = None
    if failing:
        failure = (f"int8 {explain(view, failing[0], f', below --min-sqnr {min_sqnr:g} dB,{samples}')}. No model "
                   "written: look at the layers named (an offset that a later op cancels, a concat or add of very "
                   "different ranges), or compile to a float target")
    entry = {"data": data_kind, "samples": view["samples"], "rules": view["rules"], "threshold_db": GUARD_SQNR_DB,
             "min_sqnr_db": min_sqnr, "warnings": warnings, "jumps": view["jumps"],
             "outputs": {k: {m: json_db(v, 4) for m, v in f.items()} for k, f in view["outputs"].items()},
             "layers": [{k: json_db(v, 4) if k.endswith("_db") else v for k, v in la.items()}
                        for la in view["layers"]]}
    return entry, failure


def share_constants(read: Graph, compiled: Graph) -> int:
    """Give each constant of `read` (an emitted file read back) the array of `compiled`'s constant of the same name
    where the two are identical (dtype, shape, quantization and every byte), so the values run are still the
    file's; returns how many. The kernels' packed weights and output stages are cached per array
    (runtime.kernels.packing), and bias correction's runs of the compiled graph made them already: the guard's
    first int8 run of the read-back 224x224 MobileNetV2 otherwise makes its 108 packs again (20 ms of CPU)."""
    mine = {t.name: t for t in compiled.constants()}
    shared = 0
    for t in read.constants():
        c = mine.get(t.name)
        if (c is not None and c.dtype == t.dtype and c.shape == t.shape and c.quant == t.quant
                and c.data.tobytes() == t.data.tobytes()):
            t.data = c.data
            shared += 1
    return shared


# ---- compression (issues 17, 18) --------------------------------------------------------------------------------
COMPRESSION_PASSES = ("prune", "depthwise_separable", "low_rank", "binarize", "finetune")


def _changed(record) -> bool:
    """Whether a compression pass is measured: it left notes (a pass without its option returns the graph untouched
    and notes nothing) and changed the totals, or it changes weights only (binarize, finetune), or it is prune,
    whose section says what it did also when no group could be cut."""
    return bool(record.notes) and (record.before != record.after or record.name in ("prune", "binarize", "finetune"))


def read_eval_data(path, graph: Graph) -> tuple[dict, np.ndarray | None, str]:
    """--eval-data: (inputs by name, integer labels or None, the file's name), checked against the source model
    as --calib and --finetune files are (the same 'labels' array as --finetune's, scoring the one logits output)."""
    from .datafiles import read_arrays
    from .passes.finetune import LABELS, _check_labels

    arrays = read_arrays(path)
    labels = arrays.pop(LABELS, None)
    feeds = calibration_arrays(path, graph, arrays)
    if len({len(a) for a in feeds.values()}) > 1:
        raise MccError(f"input arrays differ in sample count {({k: len(v) for k, v in feeds.items()})}; give every "
                       "input the same samples", path=path)
    if labels is not None:
        _check_labels(labels, len(next(iter(feeds.values()))), graph, path)
        labels = labels.astype(np.int64)
    return feeds, labels, Path(path).name


def compression_report(source: Graph, target_name: str, options: dict, records, data: bytes, graph: Graph,
                       progress: Progress, evaluation: tuple | None = None) -> dict | None:
    """What each compression pass that changed the graph bought, in pipeline order (targets.COMPRESS): params and
    MACs before and after (its pass record), and, for the model as compiled with the passes up to it against the
    model compiled without it (the same pipeline with it and the later compression passes left out: compiled, not
    estimated, so int8 scales, legalization and the format's overhead all count), the file's bytes, its latency
    (analyze.latency_ms: LiteRT with XNNPACK or onnxruntime, one thread, median), and the float graph's output
    SQNR against the source model and accuracy, on `evaluation` (read_eval_data: a held-out set, with accuracy
    when it has labels), else on the fine-tuning samples and their labels when the --finetune data has them, else
    on the calibration data (SQNR only; figures on the data a pass fitted to flatter it). Per layer where the pass
    notes have per-layer figures; "total" is the first pass's before against the last one's after. None when no
    compression pass changed anything."""
    from .analyze import latency_ms
    from .passes import run_pipeline
    from .passes.calibrate import json_db, outputs_on
    from .passes.finetune import logit_outputs

    stages = [r for r in records if r.name in COMPRESSION_PASSES and _changed(r)]
    if not stages:
        return None
    target = get_target(target_name)
    pipeline = list(target.pipeline)
    cut = max(pipeline.index(r.name) for r in stages) + 1  # the float front ends with the last compression pass
    names = [r.name for r in stages]
    finetune = options.get("finetune")
    arrays = options.get("calibration") or (finetune.inputs if finetune is not None else None)
    labels = finetune.labels if finetune is not None and finetune.labels is not None else None
    if labels is not None:
        arrays = finetune.inputs
    if evaluation is not None:
        arrays, labels, eval_name = evaluation
    scored = logit_outputs(source)[0] if labels is not None else None
    reference = outputs_on(source, arrays) if arrays else None

    def run_passes(graph, passes):
        return run_pipeline(graph, passes, {k: v for k, v in options.items() if k in _declared(passes)})[0]

    feeds = _random_feeds(graph)  # the compiled graph's inputs: what every file compiled here takes
    timed = target.backend == "tflite" or _has_onnxruntime()
    measured = []  # per stage: the compile without names[i:], then the compile itself
    for i in range(len(names) + 1):
        dropped = names[i:]
        with progress.step(f"measuring the model without {', '.join(dropped)}" if dropped else
                           "measuring the compressed model"):
            front = run_passes(source, [p for p in pipeline[:cut] if p not in dropped])
            file = data if not dropped else emit(run_passes(front, pipeline[cut:]), target_name)
            m = {"bytes": len(file)}
            if timed:
                m["latency_ms"] = latency_ms(file, target.backend, feeds)
            if reference is not None:
                got = outputs_on(front, arrays)
                signal = sum(float(np.sum(np.square(r, dtype=np.float64))) for r in reference)
                noise = sum(float(np.sum(np.square(g - r, dtype=np.float64))) for g, r in zip(got, reference))
                m["sqnr_db"] = json_db(10 * np.log10(signal / noise) if noise else float("inf"), 4)
                if labels is not None:
                    m["accuracy"] = round(float((got[scored].argmax(-1) == labels).mean()), 6)
            measured.append(m)
    passes = []
    for i, r in enumerate(stages):
        entry = {"pass": r.name, **{k: {"before": r.before[k], "after": r.after[k]} for k in ("params", "macs")},
                 **{k: {"before": measured[i][k], "after": measured[i + 1][k]} for k in measured[i]}}
        layers = r.notes.get("layers")
        if layers:
            entry["layers"] = [{"name": k, **v} for k, v in layers.items()] if isinstance(layers, dict) else layers
        passes.append(entry)
    total = {**{k: {"before": stages[0].before[k], "after": stages[-1].after[k]} for k in ("params", "macs")},
             **{k: {"before": measured[0][k], "after": measured[-1][k]} for k in measured[0]}}
    data_kind = None if reference is None else f"{len(reference[0])} " + (
        f"held-out samples of {eval_name}{' with labels' if labels is not None else ''}" if evaluation is not None
        else "fine-tuning samples with labels" if labels is not None else "calibration samples")
    return {"order": names, "data": data_kind, "runtime": None if not timed else (
                "LiteRT (XNNPACK)" if target.backend == "tflite" else "onnxruntime"),
            "passes": passes, "total": total}


def pruning_report(compression: dict, records, options: dict) -> dict:
    """The prune pass's own section (groups, criterion, what was left alone) with its entry of the compression
    report's figures (bytes, latency, SQNR before and after its pass)."""
    notes = next(r for r in records if r.name == "prune").notes
    entry = next(p for p in compression["passes"] if p["pass"] == "prune")
    latency = None
    if "latency_ms" in entry:
        latency = {"before_ms": entry["latency_ms"]["before"], "after_ms": entry["latency_ms"]["after"],
                   "runtime": compression["runtime"], "threads": 1}
    return {"ratio": options["prune"], "criterion": notes["criterion"], "schedule": notes["schedule"],
            "mac_ratio_removed": notes["mac_ratio_removed"], "params": entry["params"], "macs": entry["macs"],
            "bytes": entry["bytes"], "latency": latency, "groups": notes["groups"], "left_alone": notes["left_alone"],
            "layers": notes["layers"]}


def _has_onnxruntime() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


def _random_feeds(graph: Graph) -> dict:
    """One batch of inputs for timing (the values do not change the work a convolution does)."""
    rng = np.random.default_rng(0)
    return {t.name: (rng.standard_normal(t.shape).astype(t.dtype) if t.dtype.startswith("float")
                     else rng.integers(-100, 100, t.shape).astype(t.dtype)) for t in graph.inputs}
