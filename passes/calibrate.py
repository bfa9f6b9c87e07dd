"""Calibration: the user's sample arrays cut into model batches, the float graph run over them with every
tensor's value fed to its range observer, and the measure of how far a quantized graph strays from the float
one on the same data (output SQNR).

The TFLite converter calibrates by running a representative dataset through a float interpreter that it
instruments with min/max logging ops. mcc runs its own float runtime with an observer callback, which sees every
intermediate tensor as it is made (and the runtime drops it after its last reader), so nothing is added to the
graph to observe it and the values observed are those of the exact graph that is about to be quantized. Runs
take many samples at once (in_chunks: the graph re-batched, runtime.plan.rebatch), which gives each sample the
same bits as a run of its own, so ranges, bias correction and SQNR figures do not depend on the chunk size;
the calibration run's chunks go side by side on the cores (float_run), with observers that merge exactly.
One float run serves the ranges, bias correction's float means (LinearMeans) and the float outputs that its
output SQNR is measured against.
"""

from __future__ import annotations

import copy
import itertools
import threading

import numba
import numpy as np

from ..datafiles import match_inputs
from ..errors import MccError
from ..ir import Graph, Node, Tensor
from ..ir.traits import weighted
from ..runtime import evaluate_node, run
from ..runtime.kernels.activations import clamp_bounds, clamp_value, fused_activation
from ..runtime.plan import rebatch
from ..runtime.threads import in_order, sample_workers
from .observers import make_observer


def calibration_batches(graph: Graph, arrays: dict[str, np.ndarray] | None) -> list[dict[str, np.ndarray]]:
    """The user's arrays (by input name, batch first, in the source model's layout) as feeds of the graph's
    batch size; samples that do not fill a last batch are left out. Feeds are views of the arrays (transposed
    from NCHW to an NHWC graph's layout without a copy), made contiguous batch by batch by in_chunks."""
    if not arrays:
        raise MccError("int8 quantization needs calibration data to choose activation ranges: pass --calib "
                       "samples.npz (one array per model input, named after it, batch first; a few hundred "
                       "representative samples are plenty)")
    feeds, _ = match_inputs(arrays, graph.inputs, contiguous=False)
    counts = {len(v) for v in feeds.values()}
    if len(counts) != 1:
        raise MccError(f"calibration arrays differ in sample count: { {k: len(v) for k, v in feeds.items()} }; "
                       "give every input the same number of samples")
    n, batch = counts.pop(), graph.inputs[0].shape[0]
    if n < batch:
        raise MccError(f"{n} calibration samples do not fill one batch of {batch}, the model's batch size; "
                       "pass more samples with --calib")
    return [{k: v[i:i + batch] for k, v in feeds.items()} for i in range(0, n - n % batch, batch)]


def activations(graph: Graph, all_dtypes: bool = False) -> list[Tensor]:
    """The float32 (with `all_dtypes`, all) tensors that carry data at run time (graph inputs and node outputs), in
    graph order."""
    out, seen = [], set()
    for t in graph.inputs + [o for n in graph.nodes for o in n.outputs]:
        if (all_dtypes or t.dtype == "float32") and id(t) not in seen:
            seen.add(id(t))
            out.append(t)
    return out


# Samples per run: enough that the per-run cost (planning, the kernels' setup per call) is spread thin on small
# inputs, where it counts; few enough that a run's activations, and the kernels' temporaries for them (int64
# requantization steps), stay bounded: mobilenet_v2 at 224x224 (37 MB of float activations per sample, 10 MB int8)
# runs its float graph one sample at a time and its int8 graph six at a time, and `mcc validate` of 100 images
# peaked at 2.3 GB with 256 MB here.
CHUNK_BYTES = 64 << 20
CHUNK_SAMPLES = 64


def chunk_batches(graph: Graph) -> int:
    """How many model batches one run of the re-batched graph takes: CHUNK_SAMPLES samples at most, and no more
    than CHUNK_BYTES of activations (all of them, an upper bound on what is live at once, or kept with keep_all)."""
    batch = graph.inputs[0].shape[0]
    per_batch = sum(t.nbytes for t in activations(graph, all_dtypes=True)) or 1
    return max(1, min(CHUNK_SAMPLES // batch, CHUNK_BYTES // per_batch))


def even_chunks(batches: int, most: int, workers: int, unit: int = 1) -> list[int]:
    """Chunk sizes covering `batches` in order: at most `most` batches each (a multiple of `unit`, as `most` is),
    as many chunks as `workers` share evenly where there are enough, each a multiple of `unit` (but a last, partial
    one) and differing by one unit at most, the larger first. 10 samples at most 6 a chunk on 2 workers are 5 and 5,
    where chunk_batches' 6 and 4 keep one worker waiting; 125 are 15 chunks of 6 and 7 of 5, where 20 of 6 and one
    of 5 left one worker that last chunk alone. in_sized_chunks runs them."""
    units = -(-batches // unit)
    count = -(-units // max(1, most // unit))
    count = min(units, -(-count // workers) * workers)
    base, extra = divmod(units, count)
    sizes = [(base + 1) * unit] * extra + [base * unit] * (count - extra)
    sizes[-1] -= units * unit - batches
    return sizes


def in_sized_chunks(graph: Graph, batches: list[dict], sizes: list[int], progress=None):
    """in_chunks over `batches` in chunks of `sizes` (even_chunks'), one in_chunks per run of equal sizes."""
    start = 0
    for size, run_of in itertools.groupby(sizes):
        end = start + size * len(list(run_of))
        yield from in_chunks(graph, batches[start:end], progress, size=size)
        start = end


def in_chunks(graph: Graph, batches: list[dict], progress=None, companions: tuple = (), size: int | None = None):
    """Yield (graph, feeds, k): `graph` re-batched to k model batches (runtime.plan.rebatch) and the k batches'
    feeds joined, covering `batches` in order, `size` (default chunk_batches) at a time; with `companions` (graphs
    that run on the same samples, the same batch size), (graph, feeds, k, companions re-batched alike). Where a
    graph cannot be re-batched all run batch by batch (k = 1), and `progress` says why. Feeds are C-contiguous,
    whatever views `batches` holds: a batch is copied here, as it is about to run (calibration_batches)."""
    graphs = (graph, *companions)
    size = min(size or min(chunk_batches(g) for g in graphs), len(batches))
    made = {1: graphs}
    for start in range(0, len(batches), max(size, 1)):
        part = batches[start:start + size]
        k = len(part)
        if k not in made:
            tried = [rebatch(g, k * g.inputs[0].shape[0]) for g in graphs]
            reason = next((why for g, why in tried if g is None), None)
            made[k] = None if reason else tuple(g for g, _ in tried)
            if reason and progress is not None:
                progress.say(f"running batch by batch: the graph cannot be re-batched ({reason})")
        runs = [(made[1], _joined([b]), 1) for b in part] if made[k] is None else [(made[k], _joined(part), k)]
        for gs, feeds, n in runs:
            yield (gs[0], feeds, n, gs[1:]) if companions else (gs[0], feeds, n)


def _joined(batches: list[dict]) -> dict[str, np.ndarray]:
    """The batches' arrays joined along axis 0, C-contiguous (np.concatenate alone keeps its inputs' memory order,
    so transposed views would give a transposed result)."""
    joined = {}
    for name in batches[0]:
        parts = [b[name] for b in batches]
        if len(parts) == 1:
            joined[name] = np.asarray(parts[0], order="C")
        else:
            out = np.empty((sum(len(p) for p in parts), *parts[0].shape[1:]), np.result_type(*parts))
            joined[name] = np.concatenate(parts, out=out)
    return joined


def split_batches(values: list[np.ndarray], k: int) -> list[list[np.ndarray]]:
    """Arrays of k model batches cut back into k lists of per-batch arrays (views, in order); with k = 1 the
    arrays as they are (a 0-d output has no batch axis to cut)."""
    if k == 1:
        return [list(values)]
    return [[v[j * (len(v) // k):(j + 1) * (len(v) // k)] for v in values] for j in range(k)]


def observe_ranges(graph: Graph, batches: list[dict], observer: str, progress=None, outputs: list | None = None,
                   means: LinearMeans | None = None, workers: int | None = None) -> dict[str, tuple[float, float]]:
    """Run the float graph over every batch and return each activation's observed range by tensor name. Values are
    observed as they are made and dropped after their last reader. With `outputs` (a list), the graph's real
    outputs per batch are appended to it, so the same float run serves as output_sqnr_db's reference; with
    `means`, the same run also takes bias correction's float means (LinearMeans). `workers`: float_run's."""
    observers = RangeObservers(graph, observer)
    float_run(graph, batches, observers, progress, outputs, means, workers)
    return observers.ranges()


class RangeObservers:
    """One range observer (observers.make_observer) per float activation of a graph, by tensor name, fed model
    batches of the graph's batch size; fork and merge let a share of the samples be observed on another thread."""

    def __init__(self, graph: Graph, spec: str):
        self.batch = graph.inputs[0].shape[0]
        self.by_name = {t.name: make_observer(spec) for t in activations(graph)}

    def see(self, t: Tensor, value: np.ndarray) -> None:
        if t.name in self.by_name:
            self.by_name[t.name].update_batches(value, self.batch)

    def fork(self, kept: RangeObservers | None = None) -> RangeObservers:
        """Observers for later batches: each settled observer's fork (observers.Histogram.settled), and for the
        others (a histogram that has seen nothing finite yet, whose first finite batch fixes its bin width) a copy
        of every value they are shown, observed here in order by merge. With `kept` (a worker's own forks, from
        kept_forks), the settled observers' forks are kept's, made there on first use, so that they count many
        shares and are merged once: a settled histogram's width is the smallest at least its first batch's at which
        all extremes fit (Histogram.merge), its counts sums, so what it merges does not depend on the order. A
        worker may fork while this thread merges: a fork takes only its observer's bin width, which changes only
        by doubling, towards the one that the merges end with."""
        kept = self.kept_forks() if kept is None else kept
        twin = self.kept_forks()
        for name, o in self.by_name.items():
            if name not in kept.by_name and o.settled:
                kept.by_name[name] = o.fork()
            twin.by_name[name] = kept.by_name[name] if name in kept.by_name else _Values()
        return twin

    def kept_forks(self) -> RangeObservers:
        """An empty set of forks (for one worker's shares: fork's `kept`, merged when they are done)."""
        kept = RangeObservers.__new__(RangeObservers)
        kept.batch, kept.by_name = self.batch, {}
        return kept

    def merge(self, twin: RangeObservers, kept: RangeObservers | None = None) -> None:
        """Take in a fork's observations, forks merged in the order of their batches; the observers of `kept` (the
        worker's forks that `twin` was made with) are left to be merged with kept."""
        for name, o in twin.by_name.items():
            if isinstance(o, _Values):
                for value in o.values:
                    self.by_name[name].update_batches(value, self.batch)
            elif kept is None or kept.by_name.get(name) is not o:
                self.by_name[name].merge(o)

    def ranges(self) -> dict[str, tuple[float, float]]:
        return {name: o.range() for name, o in self.by_name.items()}


class _Values:
    """Stands in for an unsettled observer on another thread: keeps copies of the values it is shown (in practice
    only for the shares handed out before the first finite value of a tensor was merged; a tensor never finite is
    copied in at most in_order's look-ahead of shares at once)."""

    def __init__(self):
        self.values = []

    def update_batches(self, x: np.ndarray, batch: int) -> None:
        self.values.append(np.array(x))


def float_run(graph: Graph, batches: list[dict], observers: RangeObservers | None = None, progress=None,
              outputs: list | None = None, means: LinearMeans | None = None, workers: int | None = None) -> None:
    """Run the float graph over `batches` (in_chunks), `observers` seeing every value as it is made; with `outputs`
    (a list), append the real outputs per batch to it; with `means`, feed it the weighted layers' outputs before
    their activation over its batches (the later ones run the graph as it is). The chunks after the first run side
    by side on `workers` threads (runtime.threads.in_order; default sample_workers()): each worker's forks of the
    settled observers count all its chunks and are merged at the end (RangeObservers.fork's `kept`: 72 forks and
    merges per worker, not per MobileNetV2 sample), the other observers' values and the means of each chunk are
    merged here in chunk order, so ranges, means and outputs are those of one run after another, whatever the number
    of workers. The first chunk runs here on `observers` themselves: its values fix every histogram's bin width
    (Histogram.settled), the one step of an observer that depends on the order of the batches.
    The TFLite converter's calibration runs one interpreter over the samples in turn, and onnxruntime's calibrators
    one session (CalibraterBase.collect_data), keeping every sample's observed outputs (or max_intermediate_outputs
    of them) to reduce afterwards; each parallelises within an op. mcc splits the samples over the cores, which
    runs MobileNetV2 faster than splitting its layers (runtime/threads.py), and keeps no activations: each share
    reduces its values as they are made, into observers that merge exactly."""
    workers = sample_workers() if workers is None else workers
    head = 0 if means is None else means.batches

    def chunks():
        """Chunks that hold any of the means' batches on the graph without activations (LinearMeans), the later ones
        on the graph as it is, its activations fused in the kernels: the same bits, one pass over the values fewer."""
        if means is None:
            yield from in_chunks(graph, batches, progress)
            return
        first = 0
        for bare, feeds, k, (fused,) in in_chunks(means.without_activations(graph), batches, progress, (graph,)):
            yield (bare if first < head else fused), feeds, k
            first += k

    kept, local = [], threading.local()  # each worker's forks of the settled observers, merged at the end

    def shares():
        first = 0
        for i, (g, feeds, k) in enumerate(chunks()):
            apart = i > 0 and workers > 1  # forked here, as the jobs are taken: after the merges before them
            meaning = means if first < head else None
            yield g, feeds, k, first, meaning.fork() if apart and meaning is not None else meaning, apart
            first += k

    def run_share(share):
        g, feeds, k, first, meaning, apart = share
        observing, mine = observers, None
        if apart and observers is not None:  # on the worker, as the share starts
            mine = getattr(local, "kept", None)
            if mine is None:
                mine = local.kept = observers.kept_forks()
                kept.append(mine)
            observing = observers.fork(mine)

        def see(t, value):
            if meaning is not None:
                meaning.see(t, value, first)
            if observing is not None:
                observing.see(t, value)

        got = run(g, feeds, observe=see)
        return share, observing, mine, split_batches(real_outputs(g, got), k) if outputs is not None else None

    jobs = shares()
    done = 0
    for share, observing, mine, got in itertools.chain(map(run_share, itertools.islice(jobs, 1)),
                                                       in_order(run_share, jobs, workers)):
        _, _, k, _, meaning, apart = share
        if apart:
            if observing is not None:
                observers.merge(observing, mine)
            if meaning is not None:
                means.merge(meaning)
        if outputs is not None:
            outputs.extend(got)
        done += k
        if progress is not None:
            progress.say(f"calibrating {done}/{len(batches)}")
    for mine in kept:
        observers.merge(mine)


class LinearMeans:
    """Bias correction's float side (bias_correction.correct_biases): for each weighted layer of a float graph, the
    mean per output channel of its output before the fused activation over the first `batches` model batches,
    taken during a float run that happens anyway (the calibration run, observe_ranges), where AIMET's and NNCF's
    bias corrections run the float model again. For those batches the run's graph leaves the layers' activation out
    (without_activations) and `see` clamps each value in place as it is made, before any reader or observer gets
    it: the fused kernel's output stage is that same clamp after the linear output (fused_activation), so every
    value, range and output keeps its bits, and the later batches run the graph as it is (float_run). Means and
    clamp are one compiled pass over the value (_means_and_clamp), with no float64 copy of it."""

    def __init__(self, graph: Graph, batches: int):
        self.batch, self.batches = graph.inputs[0].shape[0], batches
        weighted_nodes = [n for n in graph.nodes if weighted(n.op)]
        self.activation = {n.outputs[0].name: n.attrs.get("activation") for n in weighted_nodes}
        self.node = {n.outputs[0].name: n.name for n in weighted_nodes}
        self.parts: dict[str, list] = {name: [] for name in self.node}

    def fork(self) -> LinearMeans:
        """Means of a later share of the batches (see's `first` counts from the run's start), merged in order."""
        twin = copy.copy(self)
        twin.parts = {name: [] for name in self.node}
        return twin

    def merge(self, twin: LinearMeans) -> None:
        for name, parts in twin.parts.items():
            self.parts[name].extend(parts)

    @staticmethod
    def without_activations(graph: Graph) -> Graph:
        bare = graph.copy()
        for n in bare.nodes:
            if weighted(n.op) and n.attrs.get("activation") is not None:
                n.attrs = {**n.attrs, "activation": None}
        return bare

    def see(self, t: Tensor, value: np.ndarray, first: int) -> None:
        """Take `value` of tensor `t`, which holds model batches first, first + 1, ... of the run."""
        if t.name not in self.node:
            return
        take = max(0, min(len(value) // self.batch, self.batches - first))
        activation = self.activation[t.name]
        if value.ndim > 1 and value.shape[-1] > 1 and value.flags.c_contiguous and value.size:
            clamps = activation is not None
            if take or clamps:
                means = np.empty((take, value.shape[-1]))
                x = value.reshape(len(value) // self.batch, -1, value.shape[-1])
                if value.size < _THREADED:
                    _means_and_clamp_one_thread(x, means, clamps, *clamp_bounds(activation))
                else:
                    _means_and_clamp_threads(x, means, clamps, *clamp_bounds(activation), numba.get_num_threads())
                if take:
                    self.parts[t.name].append(means)
            return
        if take:
            self.parts[t.name].append(batch_channel_means(value[:take * self.batch], self.batch))
        if activation is not None:
            np.copyto(value, fused_activation(value, activation))

    def means(self) -> dict[str, np.ndarray]:
        """Node name -> its mean per output channel (channel_mean's figure)."""
        return {self.node[name]: np.mean(np.concatenate(p), axis=0) for name, p in self.parts.items() if p}


_THREADED = 1 << 18  # values from which _means_and_clamp shares the work among threads


@numba.njit(inline="always")
def _means_and_clamp(x, means, clamps, lo, hi, at_lo, threads):
    """x: [model batches, positions, channels], C-contiguous. means[b] = x[b]'s mean per channel in float64 for the
    first len(means) batches, summed over positions in order and divided by their number: bit for bit
    batch_channel_means (numpy's float64 mean over a non-contiguous axis adds row after row; only over a single
    channel is it pairwise, which LinearMeans.see leaves to numpy). Every value is clamped in place as
    fused_activation would (activations.clamp_value of clamp_bounds' lo, hi, at_lo; a no-op without an
    activation), in the same pass over each row, so the activation is read once; `clamps`: whether the batches
    past the means are clamped too. Threads take (batch, block of channels) jobs, so each channel's sum is one
    thread's sequential sum: a block per thread, of 16 channels at least, as longer rows run faster (one thread,
    a sample worker's, took 1.6x longer in blocks of 16 channels than in whole rows); the batches past the means
    are clamped in `threads` slices."""
    batches, positions, channels = x.shape
    take = len(means)
    blocks = max(1, min(channels // 16, threads))
    for job in numba.prange(take * blocks):
        b, block = job // blocks, job % blocks
        c0, c1 = channels * block // blocks, channels * (block + 1) // blocks
        sums = np.zeros(c1 - c0)
        for p in range(positions):
            row = x[b, p, c0:c1]  # a view indexed from 0: no negative-index checks in the loops
            for c in range(row.size):  # one loop: 7% faster than the sums' and then the clamp's
                v = row[c]
                sums[c] += np.float64(v)
                row[c] = clamp_value(v, lo, hi, at_lo)
        means[b, c0:c1] = sums / positions
    if clamps and take < batches:
        rest = x[take:].reshape(-1)
        parts = max(1, min(threads, rest.size // 65536))
        for p in numba.prange(parts):
            _clamp_row(rest[rest.size * p // parts:rest.size * (p + 1) // parts], lo, hi, at_lo)


@numba.njit(cache=True, nogil=True, parallel=True)
def _means_and_clamp_threads(x, means, clamps, lo, hi, at_lo, threads):
    _means_and_clamp(x, means, clamps, lo, hi, at_lo, threads)


@numba.njit(cache=True, nogil=True)
def _means_and_clamp_one_thread(x, means, clamps, lo, hi, at_lo):
    """_means_and_clamp where waking threads would cost more than it saves (a small value)."""
    _means_and_clamp(x, means, clamps, lo, hi, at_lo, 1)


@numba.njit(inline="always")
def _clamp_row(row, lo, hi, at_lo):
    for c in range(row.size):
        row[c] = clamp_value(row[c], lo, hi, at_lo)


def batch_channel_means(value: np.ndarray, batch: int) -> np.ndarray:
    """[model batches, channels]: per model batch of `batch` samples, the mean over positions per channel (last
    axis), in float64."""
    return value.reshape(len(value) // batch, -1, value.shape[-1]).astype(np.float64).mean(axis=1)


def channel_mean(outs, batch: int) -> np.ndarray:
    """Mean over positions per output channel for each model batch of `batch` samples, then over the batches
    (`outs`: values of one tensor per chunk, consumed one at a time)."""
    return np.mean(np.concatenate([batch_channel_means(o, batch) for o in outs]), axis=0)


def graph_feeds(graph: Graph, feeds: dict[str, np.ndarray], rules="litert-ref") -> dict[str, np.ndarray]:
    """Float feeds made fit for `graph`: inputs that are int8 are quantized with their parameters, rounding as
    the kernel set `rules` quantizes, so an int8-interface graph can be run on the same data as a float one."""
    out = {}
    for t in graph.inputs:
        x = np.asarray(feeds[t.name], order="C")  # calibration_batches gives transposed views (analyze feeds one)
        if t.dtype == "int8":
            source = Tensor(f"{t.name}/float", x.shape, "float32", t.layout)
            x = evaluate_node(Node("quantize", f"{t.name}/quantize", [source], [t], {"dtype": "int8"}), [x], rules)[0]
        out[t.name] = x
    return out


def outputs_on(graph: Graph, arrays: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The graph's real outputs on every sample of `arrays` (by input name, batch first; whole model batches),
    each joined over the samples: re-batched runs of mcc's runtime (in_chunks)."""
    batch = graph.inputs[0].shape[0]
    n = len(next(iter(arrays.values())))
    batches = [{k: v[i:i + batch] for k, v in arrays.items()} for i in range(0, n - n % batch, batch)]
    parts = []
    for g, feeds, k in in_chunks(graph, batches):
        parts.extend(split_batches(real_outputs(g, run(g, feeds)), k))
    return [np.concatenate(p) for p in zip(*parts)]


def real_outputs(graph: Graph, values: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The graph outputs in order, int8 ones dequantized to the reals they stand for."""
    return [real_value(t, values[t.name]) for t in graph.outputs]


def real_value(t: Tensor, v: np.ndarray) -> np.ndarray:
    """The reals an int8 (per-tensor) tensor's value stands for; other values as float64."""
    if t.dtype == "int8":
        return (v.astype(np.float64) - float(t.quant.zero_point[0])) * float(t.quant.scale[0])
    return np.asarray(v, np.float64)


def squared_sums(t: Tensor, want: np.ndarray, got: np.ndarray) -> tuple[float, float]:
    """(sum want^2, sum (want - real_value(t, got))^2) in float64, in one pass without float64 copies (the fidelity
    guard measures every layer of every sample). The two sums may be reassociated (fastmath "reassoc": each SIMD
    lane sums a share, 4.5x faster than one running sum): deterministic on a machine, and across vector widths
    the float64 sums differ in their last bits, far below the 4 decimals of a dB figure in the report."""
    scale, zero_point = (float(t.quant.scale[0]), float(t.quant.zero_point[0])) if t.dtype == "int8" else (1.0, 0.0)
    return _squared_sums(np.ascontiguousarray(want).reshape(-1), np.ascontiguousarray(got).reshape(-1), scale,
                         zero_point)


@numba.njit(cache=True, nogil=True, fastmath={"reassoc"})
def _squared_sums(want, got, scale, zero_point):
    signal, noise = 0.0, 0.0
    for i in range(want.size):
        w = np.float64(want[i])
        d = w - (np.float64(got[i]) - zero_point) * scale
        signal += w * w
        noise += d * d
    return signal, noise


def reference_outputs(reference: Graph, batches: list[dict]) -> list[list[np.ndarray]]:
    """`reference`'s outputs per batch, for comparing many graphs with one (mcc analyze)."""
    out = []
    for g, feeds, k in in_chunks(reference, batches):
        out.extend(split_batches(real_outputs(g, run(g, feeds)), k))
    return out


def json_db(value, digits: int = 2) -> float | None:
    """An SQNR figure for a JSON report: rounded, and None for an error-free (infinite) one, which JSON lacks."""
    return round(float(value), digits) if np.isfinite(value) else None


def output_sqnr_db(reference: Graph | list, graph: Graph, batches: list[dict], rules="litert-ref") -> float:
    """10 log10(signal / noise) of `graph`'s outputs against `reference`'s over `batches` (all outputs
    pooled); the graphs take the same float feeds and have their outputs in the same order. `reference` may be
    given as its reference_outputs on `batches`."""
    wants = reference_outputs(reference, batches) if isinstance(reference, Graph) else reference
    gots = []
    for g, feeds, k in in_chunks(graph, batches):
        gots.extend(split_batches(real_outputs(g, run(g, graph_feeds(g, feeds, rules), rules=rules)), k))
    return outputs_sqnr_db(wants, gots)


def outputs_sqnr_db(wants: list[list[np.ndarray]], gots: list[list[np.ndarray]]) -> float:
    """output_sqnr_db from both graphs' real outputs per batch."""
    signal = noise = 0.0
    for want, got in zip(wants, gots):
        signal += sum(float(np.sum(w ** 2)) for w in want)
        noise += sum(float(np.sum((w - g) ** 2)) for w, g in zip(want, got))
    return sqnr_db(signal, noise)


def sqnr_db(signal: float, noise: float) -> float:
    if noise == 0.0:
        return float("inf")
    return float(10.0 * np.log10(max(signal, 1e-300) / noise))
