"""Empirical bias correction: after quantization, shift each int8 conv / depthwise / fully-connected bias so that
the layer's mean pre-activation output per channel, over the calibration data, equals the float model's.

Rounding weights to int8 changes a layer's expected output by sum(dW * E[x]), a per-channel offset that no
later layer undoes (Nagel et al. 2019, "Data-free quantization", section 4.2; most visible in depthwise
layers, whose few weights per channel round coarsely). AIMET corrects it empirically by running float and
quantized models side by side. mcc does the same, layer by layer in graph order: the quantized graph runs node
by node over all calibration batches, each layer is corrected before anything downstream is computed from it,
so a layer's correction also absorbs the mean error its quantized inputs bring along. The float side is not run
again: its means come from the calibration run, which computes the same float values anyway
(calibrate.LinearMeans). Means are compared before the fused activation (the quantized layer's pre-activation
is its exact integer accumulator in reals: conv(x_hat, w_hat) + b_hat), because after a relu the mean no longer
moves with the bias linearly.
That mean is linear in x_hat, so mcc takes it from the mean of each kernel tap's window of the integer input
(window_means: sums of the int8 values over the rows and columns a tap visits) instead of running the layer in
float on the dequantized input as AIMET does: K*H*W*C additions instead of a convolution.
Only the values that some later node still reads are kept, so memory stays that of a few activations times
the number of samples (mobilenet_v2 at 224x224: ~12 MB per sample at the widest point); the nodes run on many
samples per kernel call (calibrate.in_sized_chunks), each worker claiming chunks and stepping them through the whole
graph in one job (runtime.threads.in_order), meeting the others before each corrected layer, where each chunk hands
over its integer tap sums for the layer's mean.
"""

from __future__ import annotations

import threading

import numba
import numpy as np

from ..ir import Graph, Node
from ..ir.traits import weight_axes, weighted
from ..runtime import evaluate_node
from ..runtime.fixed_point import bias_bound
from ..runtime.kernels.int8_reduce import int64_sum
from ..runtime.threads import Workers, in_order
from .calibrate import (channel_mean, chunk_batches, even_chunks, graph_feeds, in_sized_chunks, real_value,
                        split_batches)
from .fold_constants import replace_constant

DEFAULT_BIAS_CORRECTION = True  # measured in quantize_int8's docstring
# quantize_int8 corrects on the first this many calibration samples: layer by layer over all samples means holding
# every sample's live activations (12 MB each for a 224x224 MobileNetV2), so a 500-sample compile needed GBs;
# ranges still come from every sample, and compile time then grows with the samples only through calibration.
# Measured on mobilenet_v2_style with 512 samples (384 calibrate, 128 held out): held-out SQNR 23.53 dB, top-1
# 96.88% correcting on 128; 23.49 dB, 95.31% on all 384.
BIAS_CORRECTION_SAMPLES = 128


class _Stepper:
    """Runs a quantized graph (on float feeds, quantized for its int8 inputs) over all chunks of samples
    (calibrate.in_sized_chunks: the graph re-batched per chunk size, so each chunk steps through its own copy's
    nodes, in the same order), pausing at the nodes to be corrected (run), dropping each value after its last
    reader. The workers of `workers` (runtime.threads) claim the chunks, as many chunks as keeps every worker busy
    (calibrate.even_chunks: 128 samples on 2 workers as 18 chunks of 6 and 4 of 5, not 21 of 6 and one of 2);
    each chunk's values are its own, the kernels give each sample the same bits in any chunk on any worker, and a
    layer's mean adds up alike from any chunks (integer sums; per-batch float means in batch order)."""

    def __init__(self, graph: Graph, batches: list[dict], rules, workers: Workers):
        graph.toposort()
        chunks = list(in_sized_chunks(graph, batches, even_chunks(len(batches), chunk_batches(graph), workers.count)))
        for g, _, _ in chunks:
            g.toposort()
        self.nodes, self.rules, self.workers = graph.nodes, rules, workers
        # a chunk's copy is stepped in the original's order; constants are read from the original's nodes (which
        # bias correction edits), the copies only lend their attributes (a reshape's batch)
        self.chunk_nodes, self.sizes = [g.nodes for g, _, _ in chunks], [k for _, _, k in chunks]
        self.feeds = [(g, f) for g, f, _ in chunks]  # quantized for the graph (graph_feeds) in the chunk's lane
        self.values: list = [None] * len(chunks)
        self.graph_inputs = graph.inputs
        last = {id(t): i for i, n in enumerate(self.nodes) for t in n.inputs if t is not None and not t.is_constant}
        for t in graph.outputs:
            last.pop(id(t), None)
        self.free = [[] for _ in self.nodes]  # per node, the values it reads for the last time
        for key, i in last.items():
            self.free[i].append(key)
        self.batch = graph.inputs[0].shape[0]

    def value(self, t, chunk: int) -> np.ndarray:
        return t.data if t.is_constant else self.values[chunk][id(t)]

    def inputs(self, node: Node, chunk: int) -> list:
        """The node's input arrays in `chunk` (None for an absent optional input)."""
        return [None if t is None else self.value(t, chunk) for t in node.inputs]

    def run(self, stops: list[int], measure, settle) -> None:
        """Step every chunk through the whole graph, pausing at each position of `stops` (ascending): there each
        chunk's measure(position, chunk) is taken, and once every chunk has reached it, settle(position, the
        measures in chunk order) runs once (it may edit the node at `position`) before any chunk evaluates it.
        Each worker of `workers` runs one job for the whole graph: per stretch between stops it claims chunks
        (the largest first, so the last claims are the shortest) and steps each to the stop, and the workers meet
        at a barrier whose last arrival settles. A stop costs one hand-over between threads, where a round of
        jobs per stop (submitted, then waited for, by the caller) cost several, each a wait for a core on a busy
        machine, and the caller's settling had every worker idle; claiming, not a fixed share, lets a worker that
        another process slowed down take fewer chunks."""
        stops, end = list(stops), len(self.nodes)
        order = sorted(range(len(self.sizes)), key=lambda c: -self.sizes[c])
        measured: list = [None] * len(self.sizes)
        state = {"stop": 0, "claimed": 0}  # the stop the workers meet at next, the chunks claimed in this stretch
        lock = threading.Lock()

        def claims():
            while True:
                with lock:
                    if state["claimed"] == len(order):
                        return
                    chunk = order[state["claimed"]]
                    state["claimed"] += 1
                yield chunk

        def meet():  # the barrier's action: every worker waits, the chunks are all at the stop
            parts = list(measured)
            measured[:] = [None] * len(measured)  # a float layer's outputs per chunk: not held past their stop
            settle(stops[state["stop"]], parts)
            state["stop"] += 1
            state["claimed"] = 0

        lanes = min(self.workers.count, len(order))
        barrier = threading.Barrier(lanes, action=meet)

        def lane(_):
            try:
                start = 0
                for stop in [*stops, end]:
                    for chunk in claims():
                        if self.values[chunk] is None:  # the chunk's first stretch: its feeds, quantized here
                            g, feeds = self.feeds[chunk]
                            feeds, self.feeds[chunk] = graph_feeds(g, feeds, self.rules), None
                            self.values[chunk] = {id(t): feeds[t.name] for t in self.graph_inputs}
                        self._evaluate(chunk, start, stop)
                        if stop < end:
                            measured[chunk] = measure(stop, chunk)
                    if stop < end:
                        barrier.wait()
                    start = stop
                return None
            except BaseException as error:  # the other workers must not wait for this one at the barrier
                barrier.abort()
                return error

        errors = [e for e in in_order(lane, range(lanes), self.workers) if e is not None]
        if errors:  # the first error not caused by another worker's breaking the barrier
            raise next((e for e in errors if not isinstance(e, threading.BrokenBarrierError)), errors[0])

    def _evaluate(self, chunk: int, start: int, stop: int) -> None:
        """Evaluate the nodes at positions [start, stop) in `chunk`, dropping each value after its last reader."""
        values, nodes = self.values[chunk], self.chunk_nodes[chunk]
        for position in range(start, stop):
            node = self.nodes[position]
            outs = evaluate_node(nodes[position], self.inputs(node, chunk), self.rules)
            for t, v in zip(node.outputs, outs):
                values[id(t)] = v
            for key in self.free[position]:
                del values[key]


def _dequantize(x: np.ndarray, t) -> np.ndarray:
    q = t.quant
    shape = [1] * x.ndim
    if q.axis is not None:
        shape[q.axis] = -1
    return ((x.astype(np.float64) - q.zero_point.reshape(shape)) * q.scale.reshape(shape)).astype(np.float32)


def _linear(node: Node, ins: list, rules=None) -> np.ndarray:
    """The node's output before its fused activation."""
    linear = Node(node.op, node.name, node.inputs, node.outputs, {**node.attrs, "activation": None})
    return evaluate_node(linear, ins, rules)[0]


def _tap_geometry(node: Node):
    """(rows, cols): per kernel tap row (column), the slice of input rows (columns) it reads over the output."""
    x, y = node.inputs[0], node.outputs[0]
    (sh, sw), (dh, dw), (top, left, _, _) = node.attrs["stride"], node.attrs["dilation"], node.attrs["padding"]
    nhwc = x.layout == "NHWC"
    out_h, out_w = y.shape[1:3] if nhwc else y.shape[2:4]
    kh, kw = node.inputs[1].shape[1:3] if nhwc else node.inputs[1].shape[2:4]
    h, w = x.shape[1:3] if nhwc else x.shape[2:4]
    return ([_window(i * dh - top, sh, out_h, h) for i in range(kh)],
            [_window(j * dw - left, sw, out_w, w) for j in range(kw)])


def _tap_sums(node: Node, x: np.ndarray) -> np.ndarray:
    """The integer input `x` (samples on axis 0) summed, per kernel tap and channel, over the samples and the
    rows and columns the tap reads, [kh, kw, C] in int64: exact, so chunks' sums add up alike in any grouping.
    A chunk's share of a layer's mean, computed by the worker that stepped the chunk: the settling step then adds
    [kh, kw, C] arrays, not per-chunk int64 totals of the input's size (which it then sliced per tap, one thread
    while the others waited). One pass over `x` (_row_window_sums), then over the [kh, W, C] row-window sums."""
    rows, cols = _tap_geometry(node)
    nhwc = node.inputs[0].layout == "NHWC"
    x = np.ascontiguousarray(x)
    n, h = len(x), (x.shape[1] if nhwc else x.shape[2])
    blocks = x.reshape(n, 1, h, -1) if nhwc else x                      # [n, P, H, Q]: rows on axis 2
    by_row = _row_window_sums(blocks, *_bounds(rows))                     # [kh, P, Q]
    channels = x.shape[3] if nhwc else x.shape[1]
    by_row = by_row.reshape(len(rows), -1, channels) if nhwc else by_row  # [kh, W, C] or [kh, C, W]
    return _col_window_sums(by_row, *_bounds(cols), nhwc)


def _bounds(windows: list) -> tuple[np.ndarray, np.ndarray, int]:
    """(starts, stops, step) of same-step slices (_window's), for the compiled loops; an empty one reads nothing."""
    step = max((w.step or 1 for w in windows), default=1)
    return (np.array([w.start for w in windows], np.int64), np.array([w.stop for w in windows], np.int64), step)


@numba.njit(cache=True, nogil=True)
def _reads(r, starts, stops, step, i):
    return starts[i] <= r < stops[i] and (r - starts[i]) % step == 0


def _row_window_sums(x: np.ndarray, starts: np.ndarray, stops: np.ndarray, step: int) -> np.ndarray:
    """out[i, p, q] = the sum of x[s, p, r, q] over the samples s and the rows r of window i, in int64. Samples
    of 8 or 16 bits are summed in int32 (16 lanes a vector, not int64's 8), 2^15 samples at a time."""
    acc = np.empty(x.shape[3], np.int32 if x.dtype.itemsize <= 2 else np.int64)
    return _row_sums(x, starts, stops, step, acc)


@numba.njit(cache=True, nogil=True)
def _row_sums(x, starts, stops, step, acc):
    """_row_window_sums: each row read is summed over the samples once (rows no window reads are skipped) and added
    to every window reading it."""
    n, parts, h, q = x.shape
    out = np.zeros((len(starts), parts, q), np.int64)
    for p in range(parts):
        for r in range(h):
            read = False
            for i in range(len(starts)):
                read = read or _reads(r, starts, stops, step, i)
            if not read:
                continue
            for first in range(0, n, 1 << 15):
                acc[:] = 0
                for s in range(first, min(n, first + (1 << 15))):
                    row = x[s, p, r]
                    for k in range(q):
                        acc[k] += row[k]
                for i in range(len(starts)):
                    if _reads(r, starts, stops, step, i):
                        dst = out[i, p]
                        for k in range(q):
                            dst[k] += acc[k]
    return out


@numba.njit(cache=True, nogil=True)
def _col_window_sums(by_row, starts, stops, step, nhwc):
    """taps[i, j, c] = the sum of by_row's row window i over the columns of window j: by_row is [kh, W, C] (nhwc)
    or [kh, C, W]; int64."""
    kh = by_row.shape[0]
    channels = by_row.shape[2] if nhwc else by_row.shape[1]
    width = by_row.shape[1] if nhwc else by_row.shape[2]
    taps = np.zeros((kh, len(starts), channels), np.int64)
    for i in range(kh):
        for j in range(len(starts)):
            for w in range(width):
                if not _reads(w, starts, stops, step, j):
                    continue
                for c in range(channels):
                    taps[i, j, c] += by_row[i, w, c] if nhwc else by_row[i, c, w]
    return taps


def _tap_means(node: Node, taps: np.ndarray, count: int) -> np.ndarray:
    """Mean real input seen by each kernel tap, [kh, kw, C] (a conv's zero padding adds zeros), from `taps`, the
    tap sums (_tap_sums) of the integer input over its `count` samples."""
    q = node.inputs[0].quant
    rows, cols = _tap_geometry(node)
    y = node.outputs[0]
    out_h, out_w = y.shape[1:3] if node.inputs[0].layout == "NHWC" else y.shape[2:4]
    h, w = (node.inputs[0].shape[1:3] if node.inputs[0].layout == "NHWC" else node.inputs[0].shape[2:4])
    counts = np.array([count * len(range(h)[r]) * len(range(w)[c]) for r in rows for c in cols], np.float64)
    sums = taps.astype(np.float64) - float(q.zero_point[0]) * counts.reshape(len(rows), len(cols), 1)
    return sums * float(q.scale[0]) / (count * out_h * out_w)


def _window(start: int, stride: int, n: int, size: int) -> slice:
    """The slice of the indices start + stride * k (k < n) that lie in [0, size): a kernel tap's rows or columns
    (a strided view, where fancy indexing would copy)."""
    first = max(0, -(start // stride) if start < 0 else 0)  # the first k with start + stride * k >= 0
    last = min(n - 1, (size - 1 - start) // stride)          # the last k with start + stride * k < size
    if last < first:
        return slice(0, 0)
    return slice(start + stride * first, start + stride * last + 1, stride)


def _integer_path(node: Node) -> bool:
    """Whether the layer's mean comes from sums of its integer input (_linear_mean), not from running it in float
    on the dequantized input."""
    x = node.inputs[0].quant
    if x is None or x.axis is not None:
        return False
    return node.op == "fully_connected" or (node.op in ("conv2d", "depthwise_conv2d") and
                                            len(node.inputs[0].shape) == 4)


def _chunk_sums(node: Node, x: np.ndarray) -> tuple[np.ndarray, int]:
    """One chunk's share of _linear_mean: the integer input summed over its samples (fully_connected: over its
    rows) in int64, and how many were summed. Integer sums, so the chunks add up exactly in any grouping."""
    if node.op == "fully_connected":
        rows = x.reshape(-1, node.inputs[0].shape[-1])
        return int64_sum(rows, (0,), keepdims=False), len(rows)
    return _tap_sums(node, x), len(x)


def _linear_mean(node: Node, total: np.ndarray, count: int) -> np.ndarray:
    """The mean per output channel of the quantized layer's pre-activation in reals, from the integer input's
    sum `total` over `count` samples (rows): the mean input per kernel tap (conv2d, depthwise_conv2d) or per
    feature (fully_connected)."""
    x, w, b = node.inputs[0], node.inputs[1], node.input(2)
    wq = w.quant
    scale = wq.scale.astype(np.float64)
    bias = 0.0 if b is None else b.data.astype(np.float64) * b.quant.scale.astype(np.float64)
    if node.op == "fully_connected":
        mean_x = (total / count - float(x.quant.zero_point[0])) * float(x.quant.scale[0])
        return (w.data.astype(np.float64) @ mean_x) * scale + bias
    taps = _tap_means(node, total, count)
    nhwc = x.layout == "NHWC"
    if node.op == "depthwise_conv2d":  # weight [1, kh, kw, C*m] (NHWC) or [C*m, 1, kh, kw]
        wd = w.data[0] if nhwc else np.moveaxis(w.data[:, 0], 0, 2)          # [kh, kw, C*m]
        m = node.attrs["multiplier"]
        return (wd.astype(np.float64) * np.repeat(taps, m, axis=2)).sum(axis=(0, 1)) * scale + bias
    wd = w.data if nhwc else np.moveaxis(w.data, 1, 3)                        # [O, kh, kw, C/groups]
    groups, per = node.attrs["groups"], wd.shape[3]
    out = np.empty(wd.shape[0])
    per_out = wd.shape[0] // groups
    for g in range(groups):
        block = slice(g * per_out, (g + 1) * per_out)
        out[block] = np.tensordot(wd[block].astype(np.float64), taps[:, :, g * per:(g + 1) * per], axes=3)
    return out * scale + bias


def correct_biases(float_graph: Graph, graph: Graph, batches: list[dict], want: dict[str, np.ndarray],
                   rules="litert-ref", outputs: list | None = None, workers: int | None = None) -> int:
    """Correct the bias of every int8 (and 16x8) conv / depthwise / fully-connected node of `graph` (the quantized
    form of `float_graph`, same node names) on the float `batches`, to the float layers' means per output channel
    over them, `want` (by node name: calibrate.LinearMeans, taken during the calibration run, so only the quantized
    graph runs here); returns how many layers were corrected. With `outputs` (a list), the corrected graph's real
    outputs per batch are appended to it: the quantized graph has just been run to its end with every correction
    in place, so output_sqnr_db need not run it again. `workers` (default runtime.threads.sample_workers()):
    chunks of samples side by side, on threads kept for all layers (_Stepper; the corrections do not depend on
    it)."""
    with Workers(workers) as threads:
        return _correct(float_graph, graph, _Stepper(graph, batches, rules, threads), want, rules, outputs)


def _correct(float_graph: Graph, graph: Graph, quantized: _Stepper, want: dict, rules, outputs) -> int:
    """correct_biases on `quantized`, the stepper of `graph`'s chunks: a stop before each corrected layer, where
    each chunk measures the layer's input (integer tap sums, or the float layer's outputs on it dequantized) and
    the settling step adds the chunks' measures in chunk order and moves the bias."""
    float_nodes = {n.name: n for n in float_graph.nodes}
    nodes = quantized.nodes
    stops = [i for i, n in enumerate(nodes) if weighted(n.op) and n.outputs[0].dtype in ("int8", "int16")]

    def measure(position, chunk):
        node = nodes[position]
        if _integer_path(node):
            return _chunk_sums(node, quantized.value(node.inputs[0], chunk))
        ins = [None if t is None else _dequantize(v, t) for v, t in zip(quantized.inputs(node, chunk), node.inputs)]
        return _linear(float_nodes[node.name], ins, rules)

    def settle(position, parts):
        node = nodes[position]
        if _integer_path(node):
            got = _linear_mean(node, sum(t for t, _ in parts), sum(n for _, n in parts))
        else:
            got = channel_mean(parts, quantized.batch)
        bias = node.inputs[2]
        step = np.round((want[node.name] - got) / bias.quant.scale.astype(np.float64)).astype(np.int64)
        w = node.inputs[1]
        bound = bias_bound(w.size // w.shape[weight_axes(node)[0]], node.outputs[0].dtype)
        fixed = np.clip(bias.data.astype(np.int64) + step, -bound, bound).astype(bias.data.dtype)
        replace_constant(graph, node, 2, fixed).quant = bias.quant

    quantized.run(stops, measure, settle)
    if outputs is not None:
        for chunk, k in enumerate(quantized.sizes):
            outputs.extend(split_batches([real_value(t, quantized.value(t, chunk)) for t in graph.outputs], k))
    return len(stops)
