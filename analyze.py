"""`mcc analyze` and `mcc compile --fallback`: per-layer quantization sensitivity, and mixed precision from it.

For each layer (each node that quantize_int8 makes int8) the analysis measures the SQNR of the model's outputs
against the float graph's, on the calibration data, twice: with only that layer int8 (every other layer float),
and with only that layer float (every other layer int8). Both are real quantizations of the graph that
`mcc compile` would emit: the pipeline runs up to quantize_int8 once, the calibration ranges are observed once,
and quantize_int8 then runs with its option "float_layers" listing the layers to keep float (the float-island
path of ops without an int8 kernel: DEQUANTIZE before, QUANTIZE after), bias correction included. The int8 graph
runs in mcc's runtime under the target's rule set (litert-ref for arm-int8, onnxruntime for x86-int8; for x86 after
to_nchw and legalize_onnx, whose ONNX operators those rules cover), bit-exact with the target's reference kernels,
so each figure is what that file would score; "only L float" with the
layers the fallback picks is exactly the compiled file. 2 N + 1 quantizations for N layers.

AIMET's QuantAnalyzer does the same two sweeps (enabling, then disabling, one layer's quantizers at a time) on
its QuantSim, a float model with fake-quant nodes, and scores each with a user callback; NNCF's (and OpenVINO
POT's) accuracy-aware quantization ranks layers by reverting each to float in turn, then reverts the worst
greedily, re-evaluating after each, until the accuracy drop is within bounds. mcc measures integer kernels, not
fake quant (rounding of the requantization multipliers, saturation and the kernels' own rules included), with
one fixed metric, the output SQNR, so no user callback is needed.

Fallback (`--fallback float`): layers are ranked worst first by their "only int8" SQNR (lowest first; ties by the
higher "only float" SQNR). NNCF ranks by the "only float" gain, which misses error that lives on a tensor
between two layers (a conv whose output holds 1000 +- 10, then subtract 1000): keeping either one float leaves
the tensor int8 at the other end, so neither gains alone, while each one's "only int8" SQNR shows the damage.
mcc then keeps the shortest prefix of that ranking that brings the output SQNR to the target (`--fallback-sqnr`, default
DEFAULT_FALLBACK_SQNR, the fidelity guard's threshold), found by doubling k and bisecting (one quantization per
probe, assuming more float layers never hurt), where NNCF reverts one layer per evaluation. The report gives the
cost: bytes against the all-int8 file, and latency of both files (median of LATENCY_RUNS invocations of one
batch, 1 thread: LiteRT with XNNPACK for .tflite, onnxruntime for .onnx), cheap next to the analysis itself.
Kept float layers are float islands, so the QUANTIZE after them sees the peer's float summation order: mcc's float
conv reproduces TFLite's reference and XNNPACK's (rules.py, "float_conv"), not onnxruntime's MLAS, so an x86-int8
file with a kept conv can differ from onnxruntime by one code at a rounding tie. `--fallback int16` maps to quantize_int8's
option "int16_layers" (FALLBACKS): TFLite's 16x8 kernels (int16 activations, int8 weights), for the ranked layers
whose op has one (INT16_LAYER_OPS); onnxruntime has none, so x86-int8 refuses it before any work.
"""

from __future__ import annotations

import io
import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from .errors import MccError
from .ir import Graph
from .passes.calibrate import (calibration_batches, graph_feeds, json_db, observe_ranges, output_sqnr_db,
                               reference_outputs)
from .passes.quantize_int8 import DEFAULT_OBSERVER, INT16_LAYER_OPS, QuantizeOptions
from .progress import Progress
from .targets import get_target
from .validate import GUARD_SQNR_DB

DEFAULT_FALLBACK_SQNR = GUARD_SQNR_DB  # dB, the fidelity guard's threshold
RULES = {"tflite": "litert-ref", "onnx": "onnxruntime"}  # the target runtime's reference kernels, as validate's
FALLBACKS = {"float": "float_layers", "int16": "int16_layers"}  # --fallback kind -> QuantizeOptions field
LATENCY_RUNS = 5
QUANTIZE = "quantize_int8"


@dataclass
class Layer:
    name: str
    op: str
    only_int8_db: float   # output SQNR with only this layer int8
    only_float_db: float  # output SQNR with only this layer float


@dataclass
class Analysis:
    target: str
    rules: str
    samples: int
    all_int8_db: float
    layers: list[Layer] = field(default_factory=list)

    def ranking(self) -> list[str]:
        """Layer names worst first (see the module docstring)."""
        return [x.name for x in sorted(self.layers, key=lambda x: (x.only_int8_db, -x.only_float_db))]

    def to_json(self) -> dict:
        return {"target": self.target, "rules": self.rules, "samples": self.samples,
                "all_int8_sqnr_db": json_db(self.all_int8_db), "ranking": self.ranking(),
                "layers": [{**asdict(x), "only_int8_db": json_db(x.only_int8_db),
                            "only_float_db": json_db(x.only_float_db)}
                           for x in self.layers]}


class Quantizer:
    """One float graph, ready for quantize_int8 (the target's pipeline run up to it), with its calibration
    batches and observed ranges, quantized with any set of layers kept back."""

    def __init__(self, graph: Graph, target_name: str, options: dict, progress: Progress | None = None):
        from .compiler import lower

        self.target = get_target(target_name)
        if QUANTIZE not in self.target.pipeline:
            raise MccError(f"target {self.target.name} does not quantize; analysis and --fallback apply to int8 "
                           "targets (arm-int8, x86-int8)")
        self.progress = progress or Progress(False)
        before = self.target.pipeline[self.target.pipeline.index(QUANTIZE) - 1]
        self.graph, _ = lower(graph, self.target.name, stop_after=before, progress=self.progress, options=options)
        self.rules = RULES[self.target.backend]
        fields = set(QuantizeOptions.__dataclass_fields__)
        self.options = {k: v for k, v in options.items() if k in fields}
        observer = self.options.get("observer") or DEFAULT_OBSERVER
        self.options["ranges"] = observe_ranges(self.graph, calibration_batches(self.graph, options.get("calibration")),
                                                observer, self.progress)
        # outputs are compared in the form the file holds (x86: NCHW, legalized for ONNX, whose rules cover its
        # operators only), against the float graph taken through the same passes
        self.tail = list(self.target.pipeline[self.target.pipeline.index(QUANTIZE) + 1:])
        self.reference = self._finish(self.graph)
        self.batches = calibration_batches(self.reference, options.get("calibration"))
        self.want = reference_outputs(self.reference, self.batches)
        self.all_int8, records = self.quantize()
        float_ops = set(records[0].notes["float_ops"])
        self.layers = [n for n in self.graph.nodes if n.name not in float_ops]

    def _finish(self, graph: Graph) -> Graph:
        from .passes import run_pipeline

        return run_pipeline(graph, self.tail)[0]

    def quantize(self, kept: tuple = (), kind: str = "float") -> tuple[Graph, list]:
        """(the int8 graph the file would hold, quantize_int8's records) with the layers `kept` in precision
        `kind` (a FALLBACKS key)."""
        from .passes import run_pipeline

        _check_kind(kind)
        graph, records = run_pipeline(self.graph, [QUANTIZE], {**self.options, FALLBACKS[kind]: tuple(kept)})
        return self._finish(graph), records

    def sqnr(self, kept: tuple = (), kind: str = "float") -> float:
        graph = self.all_int8 if not kept else self.quantize(kept, kind)[0]
        return output_sqnr_db(self.want, graph, self.batches, self.rules)

    def emit(self, graph: Graph) -> bytes:
        from .compiler import emit

        return emit(graph, self.target.name)


def analyze(quantizer: Quantizer) -> Analysis:
    """The per-layer table: 2 N quantizations and runs for N layers."""
    q = quantizer
    names = [n.name for n in q.layers]
    result = Analysis(q.target.name, q.rules, sum(len(next(iter(b.values()))) for b in q.batches), q.sqnr())
    for i, node in enumerate(q.layers, 1):
        q.progress.say(f"analysing layer {i}/{len(names)}: {node.name} ({node.op})")
        others = tuple(n for n in names if n != node.name)
        result.layers.append(Layer(node.name, node.op, q.sqnr(others), q.sqnr((node.name,))))
    return result


def choose_fallback(quantizer: Quantizer, analysis: Analysis, target_db: float, kind: str = "float") -> dict:
    """The fewest worst-ranked layers that, kept in `kind`, bring the output SQNR to `target_db`: k doubles until
    the target is met, then bisects. Returns the layers and the SQNR figures."""
    ranking = analysis.ranking()
    if kind == "int16":
        ops = {x.name: x.op for x in analysis.layers}
        ranking = [name for name in ranking if ops[name] in INT16_LAYER_OPS]
    scores = {0: analysis.all_int8_db}

    def score(k: int) -> float:
        if k not in scores:
            quantizer.progress.say(f"fallback: trying {k} layer(s) in {kind}")
            scores[k] = quantizer.sqnr(tuple(ranking[:k]), kind)
        return scores[k]

    k, n = 0, len(ranking)
    if score(0) < target_db and n:
        lo, hi = 0, 1  # score(lo) is below the target
        while hi < n and score(hi) < target_db:
            lo, hi = hi, min(2 * hi, n)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if score(mid) < target_db else (lo, mid)
        k = hi
    return {"kind": kind, "target_sqnr_db": target_db, "layers": ranking[:k],
            "all_int8_sqnr_db": json_db(scores[0]), "sqnr_db": json_db(score(k)), "reached": score(k) >= target_db}


def latency_ms(data: bytes, backend: str, feeds: dict[str, np.ndarray]) -> float:
    """Median wall time of LATENCY_RUNS invocations on one batch, one thread, after a warm-up run."""
    if backend == "tflite":
        from .runtime.litert import make_interpreter

        interp = make_interpreter(data, "default")
        for d in interp.get_input_details():
            interp.set_tensor(d["index"], np.asarray(feeds[d["name"]], order="C"))
        invoke = interp.invoke
    else:
        from .runtime.ort import require

        ort = require("onnxruntime", "ort", "measuring latency")
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        names = {i.name for i in session.get_inputs()}
        feed = {k: np.asarray(v, order="C") for k, v in feeds.items() if k in names}
        invoke = lambda: session.run(None, feed)  # noqa: E731
    invoke()
    times = []
    for _ in range(LATENCY_RUNS):
        start = time.perf_counter()
        invoke()
        times.append(time.perf_counter() - start)
    return round(float(np.median(times)) * 1e3, 3)


def check_fallback(target_name: str, kind: str, options: dict) -> None:
    """Refuse, before any work, a fallback that cannot apply."""
    target = get_target(target_name)
    if not target.needs_calibration:
        raise MccError(f"--fallback applies to int8 targets, and target {target.name} emits "
                       f"{target.number_format}: choose arm-int8 or x86-int8, or drop --fallback")
    _check_kind(kind)
    if kind == "int16" and target.backend != "tflite":
        raise MccError(f"--fallback int16 keeps layers in TFLite's 16x8 kernels, and onnxruntime has no 16-bit "
                       f"QLinearConv, QGemm or QLinearAdd: for {target.name} use --fallback float")
    if options.get("require_int8"):
        raise MccError(f"--require-int8 and --fallback {kind} contradict each other: the fallback keeps layers out "
                       "of int8; drop one of them")


def _check_kind(kind: str) -> None:
    if kind not in FALLBACKS:
        raise MccError(f"--fallback '{kind}' is not a fallback; one of {', '.join(FALLBACKS)}")


def plan_fallback(graph: Graph, target_name: str, options: dict, kind: str, target_db: float | None,
                  progress: Progress | None = None) -> tuple[dict, dict, Quantizer]:
    """For `mcc compile --fallback KIND`: analyse, choose the layers, and return the pass options that compile
    them so (with the observed ranges, so compile does not calibrate again), the fallback report, and the
    quantizer (whose all-int8 graph gives the cost baseline)."""
    check_fallback(target_name, kind, options)
    quantizer = Quantizer(graph, target_name, options, progress)
    analysis = analyze(quantizer)
    chosen = choose_fallback(quantizer, analysis, DEFAULT_FALLBACK_SQNR if target_db is None else target_db, kind)
    new_options = {**options, FALLBACKS[kind]: tuple(chosen["layers"]), "ranges": quantizer.options["ranges"]}
    return new_options, {**chosen, "analysis": analysis.to_json()}, quantizer


def fallback_cost(quantizer: Quantizer, data: bytes) -> dict:
    """Bytes and latency of the compiled file `data` against the all-int8 file."""
    base = quantizer.emit(quantizer.all_int8)
    backend = quantizer.target.backend
    feeds = graph_feeds(quantizer.all_int8, quantizer.batches[0])  # int8 inputs (--io int8) quantized
    return {"bytes": len(data), "all_int8_bytes": len(base), "extra_bytes": len(data) - len(base),
            "latency_ms": latency_ms(data, backend, feeds), "all_int8_latency_ms": latency_ms(base, backend, feeds)}


def format_analysis(analysis: Analysis, chosen: dict | None = None) -> str:
    """The table in graph order, the worst layers named below it."""
    lines = [f"per-layer analysis on {analysis.samples} calibration samples, {analysis.target} (rules "
             f"{analysis.rules}); output SQNR with every layer int8: {_fmt(analysis.all_int8_db)}",
             f"{'layer':<36} {'op':<18} {'only int8 (dB)':>15} {'only float (dB)':>16}"]
    for x in analysis.layers:
        lines.append(f"{x.name[:36]:<36} {x.op[:18]:<18} {_fmt(x.only_int8_db):>15} {_fmt(x.only_float_db):>16}")
    worst = analysis.ranking()[:3]
    if worst:
        lines.append(f"most sensitive (lowest SQNR when only it is int8): {', '.join(worst)}")
    if chosen is not None:
        lines.append(format_fallback(chosen))
    return "\n".join(lines)


def format_fallback(chosen: dict) -> str:
    if not chosen["layers"]:
        return (f"fallback {chosen['kind']}: none needed, every layer int8 gives {_fmt(chosen['all_int8_sqnr_db'])} "
                f">= {chosen['target_sqnr_db']:g} dB")
    text = (f"fallback {chosen['kind']}: {len(chosen['layers'])} layer(s) kept {chosen['kind']} "
            f"({', '.join(chosen['layers'])}): output SQNR {_fmt(chosen['all_int8_sqnr_db'])} -> "
            f"{_fmt(chosen['sqnr_db'])} (target {chosen['target_sqnr_db']:g} dB)")
    if not chosen["reached"]:
        text += "; the target is not reached"
    if "cost" in chosen:
        c = chosen["cost"]
        text += (f"; cost {c['extra_bytes']:+,} bytes ({c['all_int8_bytes']:,} -> {c['bytes']:,}), latency "
                 f"{c['all_int8_latency_ms']:.3f} -> {c['latency_ms']:.3f} ms (1 thread, median of {LATENCY_RUNS})")
    return text


def _fmt(db: float | None) -> str:
    return "exact" if db is None or not math.isfinite(db) else f"{db:.2f}"


def pyplot():
    """matplotlib's pyplot drawing off-screen, or an MccError naming the install command (an optional extra)."""
    try:
        import matplotlib
    except ImportError:
        raise MccError("--plot needs matplotlib, which is not installed: pip install 'mcc[plot]' (or pip install "
                       "matplotlib==3.11.2)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot(analysis: Analysis, path) -> None:
    """A PNG of both sweeps per layer in graph order, with the all-int8 level; error-free points sit on the top
    edge, marked."""
    from .fileio import write_atomic

    plt = pyplot()

    values = [v for x in analysis.layers for v in (x.only_int8_db, x.only_float_db, analysis.all_int8_db)]
    finite = [v for v in values if math.isfinite(v)] or [0.0]
    top = max(finite) + 5.0
    index = np.arange(len(analysis.layers))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.35 * len(index) + 2), 4.5))
    for attr, label, marker in (("only_int8_db", "only this layer int8", "o"),
                                ("only_float_db", "only this layer float", "s")):
        y = [getattr(x, attr) for x in analysis.layers]
        ax.plot(index, [v if math.isfinite(v) else top for v in y], marker=marker, label=label)
    if math.isfinite(analysis.all_int8_db):
        ax.axhline(analysis.all_int8_db, color="grey", linestyle="--", label="every layer int8")
    ax.set_xticks(index, [x.name for x in analysis.layers], rotation=90, fontsize=7)
    ax.set_ylabel("output SQNR (dB)")
    ax.set_title(f"per-layer quantization sensitivity, {analysis.target} (top edge: exact)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    write_atomic(path, buf.getvalue())
