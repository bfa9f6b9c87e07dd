"""`mcc validate` as a function: run a compiled model in its target's runtime and in mcc's, and count differing bits.

A .tflite file runs in LiteRT for each of its kernel sets ("ref" = BUILTIN_REF, "default" = XNNPACK), an .onnx
file in onnxruntime at each graph optimization level ("ort-all", "ort-none", ...; runtime.ort), and mcc's runtime
runs the same file, read back from its bytes, under the rule set that claims to match that peer (runtime/rules.py).
Every tensor that an operator produces is compared element by element: LiteRT exposes them with
experimental_preserve_all_tensors (except what XNNPACK keeps inside a fused kernel, such as a SPLIT output that
the delegate's graph drops: those are listed as not compared, never counted), onnxruntime runs a copy of the model with every node output made a graph output
(whose graph outputs are replaced by those of the unmodified model, so exposing tensors cannot hide what the
deployed model computes). TFLite's own tooling compares outputs within a tolerance; AIMET and TVM say their
integer results may differ from the target's. mcc states the count of differing elements per operator and in
total, so "0 of N" is a checked claim, and any difference names the first operator that shows it. The tensors of
integer models (int8, and the float results of their dequantize nodes) are claimed exact; float tensors (float
models, the float islands legalize_onnx leaves in int8 ONNX) within 1e-5 of each tensor's range, since float
summation order is the kernels' own business. With a float reference model (.pt2, .onnx, ...), fidelity is SQNR,
cosine similarity and top-1 agreement against it.
"""

from __future__ import annotations

import platform
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .datafiles import match_inputs, read_arrays
from .errors import MccError
from .ir import Graph
from .passes.calibrate import (calibration_batches, chunk_batches, even_chunks, graph_feeds, in_chunks,
                                in_sized_chunks, real_outputs, split_batches, sqnr_db, squared_sums)
from .runtime.ort import LEVELS as ORT_LEVELS

RULES_FOR_KERNELS = {"ref": "litert-ref", "default": "litert-xnnpack", **{k: "onnxruntime" for k in ORT_LEVELS}}
KERNELS = {"tflite": ("ref", "default"), "onnx": tuple(ORT_LEVELS)}   # what each file format can be compared with
DEFAULT_KERNELS = {"tflite": ("ref", "default"), "onnx": ("ort-all", "ort-none")}


def peer_rules(kernels: str, isa: str = platform.machine()) -> str:
    """The rule set that claims to match `kernels` on `isa`: the ISA's own set where that peer was measured to
    compute otherwise there (a rule set named "<set>-<isa>"; none so far: runtime/rules.py measured XNNPACK on
    aarch64 computing its x86 bits), else the set measured on x86-64."""
    from .runtime.rules import known

    base = RULES_FOR_KERNELS[kernels]
    return f"{base}-{isa}" if f"{base}-{isa}" in known() else base
FLOAT_TOLERANCE = 1e-5


@dataclass
class TensorDiff:
    tensor: str
    node: str
    op: str
    elements: int = 0
    differing: int = 0
    max_abs_diff: float = 0.0
    exposed: bool = True    # False: the peer keeps the tensor inside a fused kernel, so it is not compared


@dataclass
class Comparison:
    kernels: str
    rules: str
    exact: bool                          # whether 0 differing elements is claimed (integer models)
    tensors: list[TensorDiff] = field(default_factory=list)

    @property
    def elements(self) -> int:
        return sum(t.elements for t in self.tensors)

    @property
    def differing(self) -> int:
        return sum(t.differing for t in self.tensors)

    @property
    def first_differing(self) -> TensorDiff | None:
        return next((t for t in self.tensors if t.differing), None)

    def to_json(self) -> dict:
        first = self.first_differing
        return {"kernels": self.kernels, "rules": self.rules, "exact": self.exact, "elements": self.elements,
                "differing": self.differing, "max_abs_diff": max((t.max_abs_diff for t in self.tensors), default=0.0),
                "first_differing_op": asdict(first) if first else None, "tensors": [asdict(t) for t in self.tensors],
                "not_exposed": [t.tensor for t in self.tensors if not t.exposed]}


def _is_integer_model(graph: Graph) -> bool:
    return any(t.dtype in ("int8", "int16") for n in graph.nodes for t in n.outputs)


def model_format(data: bytes, path) -> str:
    """"tflite" for a file with TFLite's TFL3 identifier, "onnx" for a .onnx file or one that opens with ONNX's
    first field (ir_version, protobuf tag 0x08); anything else is refused."""
    if data[4:8] == b"TFL3":
        return "tflite"
    if Path(path).suffix.lower() == ".onnx" or data[:1] == b"\x08":
        return "onnx"
    raise MccError("is not a compiled model: neither TFLite (no TFL3 identifier) nor ONNX. mcc run and mcc validate "
                   "read the .tflite and .onnx files mcc compile writes: compile the model first "
                   "(mcc compile MODEL --target ...)", path=path)


def peer_runner(data: bytes, kernels: str):
    """feeds -> every tensor by name, as the peer that runs `kernels` computes them."""
    if kernels in ORT_LEVELS:
        from .runtime.ort import make_session, run_ort

        every, deployed = make_session(data, kernels, keep_all=True), make_session(data, kernels)
        return lambda feeds: {**run_ort(data, feeds, session=every), **run_ort(data, feeds, session=deployed)}
    from .runtime.litert import make_interpreter, run_litert

    interp = make_interpreter(data, kernels, keep_all=True)
    return lambda feeds: run_litert(data, feeds, kernels, keep_all=True, interpreter=interp)


def compare(data: bytes, graph: Graph, batches: list[dict[str, np.ndarray]], kernels: str,
            rules: str | None = None, workers: int | None = None) -> Comparison:
    """Run every batch in the peer of `kernels` (LiteRT's "ref" or "default", onnxruntime's "ort-all", ...) and in
    mcc's runtime under `rules` (default: the rule set that claims to match the peer); count differences per
    tensor. Each chunk of batches (calibrate.in_chunks) is a job, `workers` (default
    runtime.threads.sample_workers()) side by side (threads.in_order), each worker with a peer of its own; a job
    hands back its counts, which add up alike in any order (sums of counts, maxima), and holds its chunk's every
    tensor only while it runs."""
    from .runtime import run
    from .runtime.threads import in_order

    rules = rules or peer_rules(kernels)
    exact = _is_integer_model(graph)
    produced = [(o.name, n.name, n.op) for n in graph.nodes for o in n.outputs]
    exact_tensors = {o.name for n in graph.nodes for o in n.outputs
                     if exact and (o.dtype != "float32" or n.op == "dequantize")}
    mine = threading.local()  # a peer per worker thread: a LiteRT interpreter runs on one thread at a time

    def count(chunk):
        chunk_graph, chunk_feeds, k = chunk
        if not hasattr(mine, "peer"):
            mine.peer = peer_runner(data, kernels)
        diffs = {name: TensorDiff(name, node, op) for name, node, op in produced}
        every = run(chunk_graph, chunk_feeds, keep_all=True, rules=rules)
        cut = {name: split_batches([every[name]], k) for name in diffs if name in every}
        for j, feeds in enumerate(split_batches(list(chunk_feeds.values()), k)):
            _count(diffs, {name: parts[j][0] for name, parts in cut.items()},
                   mine.peer(dict(zip(chunk_feeds, feeds))), graph, kernels, exact_tensors)
        return diffs

    diffs = {name: TensorDiff(name, node, op) for name, node, op in produced}
    for part in in_order(count, in_chunks(graph, batches), workers):
        for name, d in part.items():
            total = diffs[name]
            total.elements += d.elements
            total.differing += d.differing
            total.max_abs_diff = max(total.max_abs_diff, d.max_abs_diff)
            total.exposed = total.exposed and d.exposed
    order = {n.name: i for i, n in enumerate(graph.nodes)}
    return Comparison(kernels, rules, exact, sorted(diffs.values(), key=lambda t: order[t.node]))


def _count(diffs: dict, ours: dict, theirs: dict, graph: Graph, kernels: str, exact_tensors: set) -> None:
    """Add one batch's differences per tensor to `diffs`."""
    for name, d in diffs.items():
        if name not in theirs:
            if graph.is_output(graph.tensor(name)):
                raise MccError(f"{describe(kernels)} does not return output '{name}' of node '{d.node}'; "
                               "cannot compare it")
            d.exposed = False
            continue
        a, b = ours[name], theirs[name].reshape(ours[name].shape)
        delta = np.abs(a.astype(np.float64) - b.astype(np.float64))
        if name in exact_tensors:
            bad = a != b
        else:
            span = float(np.abs(b).max()) if b.size else 0.0
            bad = delta > FLOAT_TOLERANCE * max(span, 1e-30)
        d.elements += a.size
        d.differing += int(np.count_nonzero(bad))
        d.max_abs_diff = max(d.max_abs_diff, float(delta.max()) if delta.size else 0.0)


def fidelity(reference: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> dict:
    """SQNR (dB), cosine similarity and top-1 agreement of each output against the float reference's."""
    result = {}
    for (name, q), ref in zip(outputs.items(), reference.values()):
        q, ref = q.astype(np.float64), ref.astype(np.float64)
        ref = _align(ref, None, q.shape, None)
        if ref is None:
            raise MccError(f"output '{name}' has shape {list(q.shape)}, and the reference's has not; is the reference "
                           "the model this file was compiled from?")
        sqnr = sqnr_db(float(np.sum(ref ** 2)), float(np.sum((ref - q) ** 2)))
        cosine = float(np.sum(ref * q) / (np.linalg.norm(ref) * np.linalg.norm(q) or 1.0))
        entry = {"sqnr_db": sqnr, "cosine": cosine}
        if ref.ndim == 2 and ref.shape[1] > 1:
            entry["top1_agreement"] = float(np.mean(ref.argmax(1) == q.argmax(1)))
        result[name] = entry
    return result


def describe(kernels: str) -> str:
    """The peer a kernel-set name stands for, in words."""
    if kernels in ORT_LEVELS:
        return f"onnxruntime at {ORT_LEVELS[kernels]}"
    return f"LiteRT {kernels} kernels"


def _kernel_sets(kernels, fmt: str, path) -> tuple[str, ...]:
    if kernels is None:
        return DEFAULT_KERNELS[fmt]
    kernels = tuple(kernels)
    wrong = [k for k in kernels if k not in KERNELS[fmt]]
    if wrong or not kernels:
        raise MccError(f"a {fmt} file is compared with kernel sets {', '.join(KERNELS[fmt])}, not "
                       f"{', '.join(wrong) or 'none'}; pass --kernels {','.join(DEFAULT_KERNELS[fmt])}", path=path)
    return kernels


def read_model_bytes(data: bytes, fmt: str, path) -> Graph:
    """The IR graph of a compiled file's bytes (`path` only names it in errors)."""
    if fmt == "tflite":
        from .formats.tflite.reader import read_tflite

        return read_tflite(data, path=path)
    from .formats.onnx.reader import read_emitted_onnx
    from .runtime.format_arithmetic import ONNX_ARITHMETIC

    return read_emitted_onnx(data, ONNX_ARITHMETIC, path)


# The rule set `mcc run` uses for a compiled file when none is asked for: the reference kernels of its runtime.
DEFAULT_RULES = {"tflite": "litert-ref", "onnx": "onnxruntime"}


def read_compiled(path) -> tuple[bytes, str, Graph]:
    """(bytes, format, IR graph) of a .tflite or .onnx file that mcc compile wrote, read back from its bytes."""
    path = Path(path)
    if not path.is_file():
        raise MccError("no such model file; check the path", path=path)
    data = path.read_bytes()
    fmt = model_format(data, path)
    return data, fmt, read_model_bytes(data, fmt, path)


def model_batches(graph: Graph, feeds: dict[str, np.ndarray], path=None) -> list[dict[str, np.ndarray]]:
    """`feeds` (all samples, batch first) cut into batches of the model's batch size."""
    batch, n = graph.inputs[0].shape[0], len(next(iter(feeds.values())))
    if n % batch:
        raise MccError(f"{n} samples do not split into batches of {batch}, the batch size of model '{graph.name}'",
                       path=path)
    return [{k: v[i:i + batch] for k, v in feeds.items()} for i in range(0, n, batch)]


def validate(model_path, input_path, reference_path=None, kernels=None, progress=None, cle=None,
             rules: dict | None = None, workers: int | None = None) -> dict:
    """Compare `model_path` (.tflite or .onnx) with mcc's runtime on the inputs in `input_path`, for each kernel
    set in `kernels` (None: the format's defaults, DEFAULT_KERNELS); with `reference_path`, also its fidelity, and
    for an int8 file the fidelity guard's per-layer view against the float graph mcc quantized (`cle`: False
    for a file compiled with --no-cle or --no-bias-correction). `workers`: chunks of samples side by side
    (default runtime.threads.sample_workers(); the report does not depend on it)."""
    model_path = Path(model_path)
    data, fmt, graph = read_compiled(model_path)
    kernels = _kernel_sets(kernels, fmt, model_path)
    arrays = read_arrays(input_path)
    feeds, notes = match_inputs(arrays, graph.inputs, path=input_path)
    batches = model_batches(graph, feeds, input_path)
    n = len(next(iter(feeds.values())))
    if fmt == "onnx":
        from .runtime.ort import version
        from .runtime.rules import rule_set

        measured = rule_set("onnxruntime").version
        if version() != measured:
            notes = [*notes, f"onnxruntime {version()} is installed; the onnxruntime rules were measured on "
                             f"{measured}, so a difference may be a change in onnxruntime"]
    report = {"model": str(model_path), "inputs": str(input_path), "samples": n, "notes": notes, "comparisons": []}
    for k in kernels:
        if progress:
            progress.say(f"comparing with {describe(k)} on {n} samples")
        chosen = (rules or {}).get("onnxruntime" if k in ORT_LEVELS else k)
        report["comparisons"].append(compare(data, graph, batches, k, chosen, workers).to_json())
    if reference_path is not None:
        from .compiler import load_model

        ref_graph = load_model(reference_path)
        ref_feeds, _ = match_inputs(arrays, ref_graph.inputs, path=input_path)
        ref_out = _run_all(ref_graph, ref_feeds, workers=workers)
        outs = _run_all(graph, feeds, peer_rules(kernels[0]), workers)
        report["reference"] = str(reference_path)
        report["fidelity"] = fidelity(ref_out, outs)
        if _is_integer_model(graph):
            if progress:
                progress.say(f"per-layer SQNR against the float graph of {reference_path} on {n} samples")
            view = layer_fidelity(float_reference(ref_graph, TARGET_FOR_FORMAT[fmt], {"cle": cle}), graph, arrays,
                                  peer_rules(kernels[0]), workers=workers)
            report["layers"], report["jumps"] = view["layers"], view["jumps"]
            report["fidelity_warnings"] = [explain(view, name, f" (below {GUARD_SQNR_DB:g} dB)")
                                           for name in low_outputs(view, GUARD_SQNR_DB)]
    report["ok"] = all(c["differing"] == 0 for c in report["comparisons"])
    return report


def _run_all(graph: Graph, feeds: dict[str, np.ndarray], rules: str | None = None,
             workers: int | None = None) -> dict[str, np.ndarray]:
    """`graph`'s outputs on all samples of `feeds` (batch first), many samples per run (calibrate.in_chunks), the
    runs `workers` side by side (runtime.threads.in_order)."""
    from .runtime import run
    from .runtime.threads import in_order

    parts = list(in_order(lambda chunk: run(chunk[0], chunk[1], rules=rules),
                          in_chunks(graph, model_batches(graph, feeds)), workers))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def format_report(report: dict) -> str:
    lines = [f"{report['model']} on {report['samples']} samples of {report['inputs']}", *report["notes"]]
    for c in report["comparisons"]:
        claim = "bit-exact" if c["exact"] else f"within {FLOAT_TOLERANCE:g} of range"
        lines.append(f"\n{describe(c['kernels'])} vs mcc runtime (rules {c['rules']}, claim: {claim})")
        lines.append(f"  {'node':<36} {'op':<18} {'differing':>10} {'of':>10} {'max diff':>10}")
        for t in c["tensors"]:
            lines.append(f"  {t['node'][:36]:<36} {t['op']:<18} {t['differing']:>10,} {t['elements']:>10,} "
                         f"{t['max_abs_diff']:>10.3g}")
        lines.append(f"  total: {c['differing']:,} of {c['elements']:,} elements differ; max diff {c['max_abs_diff']:.3g}")
        if c["not_exposed"]:
            lines.append(f"  not compared: {len(c['not_exposed'])} tensor(s) the peer keeps inside fused kernels "
                         f"(first: {c['not_exposed'][0]}); every model output is compared")
        if c["first_differing_op"]:
            f = c["first_differing_op"]
            lines.append(f"  first differing operator: {f['node']} ({f['op']})")
    for name, f in report.get("fidelity", {}).items():
        top1 = f"; top-1 agreement {f['top1_agreement'] * 100:.2f}%" if "top1_agreement" in f else ""
        lines.append(f"\nfidelity of '{name}' vs {report['reference']}: SQNR {f['sqnr_db']:.2f} dB; "
                     f"cosine {f['cosine']:.6f}{top1}")
    if "layers" in report:
        lines.append(f"\nper-layer SQNR against the float graph mcc quantized (a jump: more than {JUMP_DB:g} dB below "
                     "the layer's worst input)")
        lines.append(format_layers(report))
        lines.extend(f"warning: {w}" for w in report["fidelity_warnings"])
    lines.append("\nOK: every comparison holds its claim" if report["ok"] else "\nFAILED: a claimed comparison differs")
    return "\n".join(lines)


# ---- fidelity guard (issue 15): an int8 graph against the float graph mcc quantized, per output and per layer ----
GUARD_SQNR_DB = 15.0   # below this output SQNR, compile and validate --reference warn
JUMP_DB = 10.0         # a layer whose SQNR falls more than this below its worst input's is where the error jumps
INT8_CEILING_DB = 40.0  # what an int8 tensor over exact inputs holds at best on ordinary data; see layer_fidelity
TARGET_FOR_FORMAT = {"tflite": "arm-int8", "onnx": "x86-int8"}
_TWIN_SUFFIXES = ("int8", "float", "quantize", "requantize", "dequantize")  # quantize_int8's names for twins


def float_reference(source: Graph, target_name: str, options: dict | None = None) -> Graph:
    """`source` through the target's pipeline without quantize_int8, with the options of the float passes
    (equalisation's "cle" and "bias_correction", and the compression passes': pruning, splits, binarization,
    fine-tuning's data; a compressed file is measured against the compressed float graph, i.e. what quantization
    lost): the graph quantize_int8 received, and for x86-int8 moved to NCHW as the int8 one was (a flatten then
    orders its elements as the int8 file's does). A fraction of a second without compression (fine-tuning reuses
    the weights the compile trained); its tensors carry the int8 file's
    names, and cross-layer equalisation has rescaled the same channels, which the source model's tensors (before
    batch-norm folding, activation fusion and equalisation) do not."""
    from .compiler import _declared
    from .passes import run_pipeline
    from .targets import get_target

    passes = [p for p in get_target(target_name).pipeline if p != "quantize_int8"]
    options = {k: v for k, v in (options or {}).items() if k in _declared(passes) and v is not None}
    return run_pipeline(source, passes, options)[0]


def _reference_name(name: str) -> str:
    base, _, suffix = name.rpartition("/")
    return base if base and suffix in _TWIN_SUFFIXES else name


def _align(ref: np.ndarray, ref_layout, shape, layout) -> np.ndarray | None:
    """`ref` in the layout of a tensor of `shape`: as is, or transposed between NCHW and NHWC (by the tensors'
    layouts where both are known, else by shape); None when neither fits."""
    shape = tuple(shape)
    if ref.ndim == 4 and {ref_layout, layout} == {"NCHW", "NHWC"}:
        ref = ref.transpose((0, 2, 3, 1) if ref_layout == "NCHW" else (0, 3, 1, 2))
    elif ref.ndim == 4 and ref.shape != shape:
        ref = next((ref.transpose(p) for p in ((0, 2, 3, 1), (0, 3, 1, 2)) if ref.transpose(p).shape == shape), ref)
    return ref if ref.shape == shape else None


def layer_fidelity(reference: Graph, graph: Graph, arrays: dict[str, np.ndarray], rules: str,
                   progress=None, workers: int | None = None) -> dict:
    """Run the float `reference` and the int8 `graph` (mcc's runtime under `rules`) on `arrays` (by input name,
    batch first, source layout) and measure, per output, fidelity() and, per layer (each tensor of `graph` that
    a node produces and `reference` has by name; quantize_int8's twins NAME/int8 ... stand for NAME), the SQNR of
    its reals against the float tensor. A layer's drop is its SQNR below its worst measured input's, inputs the
    int8 graph takes exactly (float model inputs) counting as INT8_CEILING_DB, the SQNR an int8 tensor holds over
    exact inputs on ordinary data (the zoo's input QUANTIZE and first conv: 36.6 to 41.8 dB); a drop above JUMP_DB
    is a jump (the zoo's layers drop at most 4.9 dB, the offset in tests/test_fidelity_guard.py 64 dB).

    Each chunk of samples runs the int8 graph first, keeping its measured values (a quarter of the float ones' bytes,
    at most calibrate.CHUNK_BYTES for all of them), then the float graph in its own, smaller chunks, measuring each
    float value as it is made: the int8 graph runs six 224x224 MobileNetV2 samples at a time instead of the float
    graph's one (12% less int8 time), and no float value is held past its last reader. The sums accumulate per
    float run in sample order, as when both graphs ran in step at the float chunk size; where that size does not
    divide the int8 one, runs at an int8 chunk's edge are shorter, which regroups the float64 sums (their last bits,
    far below the report's 4 decimals of a dB). An int8 chunk and its float runs are one job, `workers` (default
    runtime.threads.sample_workers()) side by side (threads.in_order); a job hands back each float run's (signal,
    noise) pairs unsummed, which the caller adds in job order, so every figure has the bits of a run on one
    worker. Where the int8 chunk size is a whole number of float chunks, the int8 chunks are cut to keep the
    workers evenly busy (calibrate.even_chunks: 10 MobileNetV2 samples as 5 and 5, not 6 and 4; 125 as 15 of 6
    and 7 of 5, not 20 of 6 and one of 5 for one worker alone at the end) in whole float chunks, so the float
    runs, and the bits, stay those of chunk_batches' sizes. A job keeps its chunk's int8 values only while it
    runs: `workers` chunks at once, whatever the look-ahead, as each job's result is its outputs and two floats
    per measured tensor and float run.

    Peers report the same view differently: AIMET's and NNCF's analysers re-quantize one layer at a time; this is
    one run of each graph, so it costs two inferences per sample, and it shows where the error first appears
    (a subtraction that cancels a large offset, a concat that clamps an input), not which layer to blame."""
    from .runtime import run
    from .runtime.threads import in_order, sample_workers

    ref_tensors = {t.name: t for t in reference.inputs + [o for n in reference.nodes for o in n.outputs]}
    pairs = [(node, o, ref_tensors[_reference_name(o.name)]) for node in graph.nodes for o in node.outputs
             if o.dtype in ("int8", "float32") and _reference_name(o.name) in ref_tensors]
    sums = {o.name: [0.0, 0.0] for _, o, _ in pairs}
    against: dict[str, list] = {}  # float tensor name -> the int8 tensors measured against it
    for _, o, r in pairs:
        against.setdefault(r.name, []).append((o, r))
    want_out, got_out = [], []
    batches = calibration_batches(reference, arrays)
    ref_inputs = {t.name: t for t in reference.inputs}
    int8_batches = []
    for b in batches:
        feeds = {t.name: _align(b[t.name], ref_inputs[t.name].layout, t.shape, t.layout)
                 if t.name in ref_inputs else None for t in graph.inputs}
        if any(v is None for v in feeds.values()):
            raise MccError(f"the float model's inputs {[(t.name, list(t.shape)) for t in reference.inputs]} are not "
                           f"the int8 model's {[(t.name, list(t.shape)) for t in graph.inputs]}; is the reference the "
                           "model the file was compiled from?")
        int8_batches.append(feeds)
    workers = sample_workers() if workers is None else workers
    floats, int8s = chunk_batches(reference), chunk_batches(graph)
    # chunks that keep the workers evenly busy where that leaves the float runs as they were (whole float chunks)
    sized = in_sized_chunks(graph, int8_batches, even_chunks(len(batches), int8s, workers, floats), progress) \
        if int8s % floats == 0 else in_chunks(graph, int8_batches, progress)

    def chunks():
        first = 0
        for int8_graph, int8_feeds, k in sized:
            yield int8_graph, int8_feeds, k, first
            first += k

    def measure_chunk(chunk):
        """One int8 chunk and the float runs over its samples: (the int8 real outputs, per float run its batch
        count, real outputs and measurements in the order made: (int8 tensor, signal, noise), or (int8 tensor,
        None) where the float value does not fit it), the progress lines of in_chunks)."""
        int8_graph, int8_feeds, k, first = chunk
        got = {}  # this chunk's int8 values that are measured
        said = _Said() if not first and progress is not None else None

        def keep(o, value):
            if o.name in sums:
                got[o.name] = value

        int8_out = real_outputs(int8_graph, run(int8_graph, graph_feeds(int8_graph, int8_feeds, rules), rules=rules,
                                                observe=keep))
        runs, unfit = [], set()
        at = 0  # the chunk's batches the float runs have covered
        for ref_graph, ref_feeds, j in in_chunks(reference, batches[first:first + k], said):
            made = []

            def measure(t, value, at=at, j=j, made=made):
                for o, r in against.get(t.name, ()):
                    if o.name not in got or o.name in unfit:
                        continue
                    mine = got[o.name]
                    if j < k:  # this float run's batches of the int8 chunk (re-batched values keep samples on axis 0)
                        mine = mine[at * (len(mine) // k):(at + j) * (len(mine) // k)]
                    ref = _align(value, r.layout, mine.shape, o.layout)
                    if ref is None:
                        unfit.add(o.name)
                        made.append((o.name, None))
                    else:
                        made.append((o.name, *squared_sums(o, ref, mine)))

            runs.append((j, real_outputs(ref_graph, run(ref_graph, ref_feeds, observe=measure)), made))
            at += j
        return int8_out, runs, said.lines if said else []

    done = 0
    for int8_out, runs, lines in in_order(measure_chunk, chunks(), workers):
        got_out.append(int8_out)
        for line in lines:
            progress.say(line)
        for j, ref_out, made in runs:  # added in the order a run after run in sample order adds them
            want_out.append(ref_out)
            for name, *pair in made:
                if name not in sums:
                    continue
                if pair[0] is None:
                    sums.pop(name)
                else:
                    sums[name][0] += pair[0]
                    sums[name][1] += pair[1]
            done += j
            if progress is not None:
                progress.say(f"  {done}/{len(batches)} batches")
    measured = {name: sqnr_db(*s) for name, s in sums.items()}
    producers = {id(o): n for n in graph.nodes for o in n.outputs}

    def worst_input(node, seen) -> float:
        """The lowest SQNR measured on the inputs of `node`, looking through unmeasured tensors (an ONNX float
        island's DequantizeLinear) to the measured ones behind them."""
        found = []
        for t in node.inputs:
            if t is None or t.is_constant or id(t) in seen:
                continue
            seen.add(id(t))
            if t.name in measured:
                found.append(measured[t.name])
            elif id(t) in producers:
                found.append(worst_input(producers[id(t)], seen))
        return min(found, default=INT8_CEILING_DB)

    layers = []
    for node, o, _ in pairs:
        if o.name not in measured:
            continue
        worst, sqnr = worst_input(node, set()), measured[o.name]
        layers.append({"tensor": o.name, "node": node.name, "op": node.op, "sqnr_db": sqnr, "input_sqnr_db": worst,
                       "drop_db": 0.0 if worst == sqnr else worst - sqnr})  # exact in, exact out: no drop, not NaN
    names = [t.name for t in graph.outputs]
    outputs = fidelity({n: np.concatenate([w[k] for w in want_out]) for k, n in enumerate(names)},
                       {n: np.concatenate([g[k] for g in got_out]) for k, n in enumerate(names)})
    return {"samples": sum(len(next(iter(b.values()))) for b in batches), "rules": rules, "outputs": outputs,
            "layers": layers, "jumps": [la["tensor"] for la in layers if la["drop_db"] > JUMP_DB]}


class _Said:
    """A progress that keeps its lines, for a worker thread to hand back to the caller's (in_chunks says why a
    graph runs batch by batch)."""

    def __init__(self):
        self.lines = []

    def say(self, text):
        self.lines.append(text)


def low_outputs(view: dict, threshold: float) -> list[str]:
    """The outputs whose SQNR is below `threshold` dB."""
    return [name for name, f in view["outputs"].items() if f["sqnr_db"] < threshold]


def explain(view: dict, output: str, verdict: str = "") -> str:
    """One sentence on an output's SQNR (`verdict` follows the figure) and the first layers where the error jumps
    (the largest drops when none jumps)."""
    f = view["outputs"][output]
    top1 = f", top-1 agreement {f['top1_agreement'] * 100:.1f}%" if "top1_agreement" in f else ""
    by_name = {la["tensor"]: la for la in view["layers"]}
    jumps = [by_name[t] for t in view["jumps"]][:3]
    if jumps:
        where = "the error jumps first at " + ", ".join(
            f"'{la['tensor']}' ({la['op']}: {_fmt_db(la['input_sqnr_db'])} -> {_fmt_db(la['sqnr_db'])} dB)"
            for la in jumps)
    elif view["layers"]:
        worst = sorted(view["layers"], key=lambda la: -la["drop_db"])[:3]
        where = (f"no layer drops more than {JUMP_DB:g} dB below its inputs; the largest drops are at "
                 + ", ".join(f"'{la['tensor']}' ({la['op']}, {la['drop_db']:.1f} dB)" for la in worst))
    else:
        where = "no layer of the int8 graph matches a float tensor by name"
    return f"output '{output}' has SQNR {_fmt_db(f['sqnr_db'])} dB against the float model{verdict}{top1}; {where}"


def _fmt_db(value: float) -> str:
    return f"{value:.1f}" if np.isfinite(value) else "inf"


def format_layers(view: dict) -> str:
    lines = [f"  {'tensor':<36} {'op':<18} {'SQNR dB':>8} {'inputs dB':>9} {'drop dB':>8}"]
    for la in view["layers"]:
        mark = "  <- jump" if la["tensor"] in view["jumps"] else ""
        lines.append(f"  {la['tensor'][:36]:<36} {la['op']:<18} {_fmt_db(la['sqnr_db']):>8} "
                     f"{_fmt_db(la['input_sqnr_db']):>9} {la['drop_db']:>8.1f}{mark}")
    return "\n".join(lines)
