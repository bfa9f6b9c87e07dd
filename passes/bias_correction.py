"""Empirical bias correction: after quantization, shift each int8 conv / depthwise / fully-connected bias so that
the layer's mean pre-activation output per channel, over the calibration data, equals the float model's.

Rounding weights to int8 changes a layer's expected output by sum(dW * E[x]), a per-channel offset that no
later layer undoes (Nagel et al. 2019, "Data-free quantization", section 4.2; most visible in depthwise
layers, whose few weights per channel round coarsely). AIMET corrects it empirically by running float and
quantized models side by side. mcc does the same, layer by layer in graph order: both graphs run node by
node over all calibration batches, each layer is corrected before anything downstream is computed from it,
so a layer's correction also absorbs the mean error its quantized inputs bring along. Means are compared
before the fused activation (the quantized layer's pre-activation is its exact integer accumulator in
reals: conv(x_hat, w_hat) + b_hat), because after a relu the mean no longer moves with the bias linearly.
Only the values that some later node still reads are kept, so memory stays that of a few activations times
the number of batches.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from ..ir import Graph, Node
from ..ir.traits import weight_axes, weighted
from ..runtime import evaluate_node
from ..runtime.fixed_point import bias_bound
from .calibrate import graph_feeds, in_chunks
from .fold_constants import replace_constant

DEFAULT_BIAS_CORRECTION = True  # measured in quantize_int8's docstring


class _Stepper:
    """Runs a graph one node at a time over all chunks of samples (calibrate.in_chunks: the graph re-batched per
    chunk size, so each chunk steps through its own copy's nodes, in the same order), dropping each value after its
    last reader."""

    def __init__(self, graph: Graph, batches: list[dict], rules, quantize_inputs: bool = False):
        graph.toposort()
        chunks = list(in_chunks(graph, batches))
        for g, _, _ in chunks:
            g.toposort()
        self.nodes, self.position, self.rules = graph.nodes, 0, rules
        # a chunk's copy is stepped in the original's order; constants are read from the original's nodes (which
        # bias correction edits), the copies only lend their attributes (a reshape's batch)
        self.chunk_nodes = [g.nodes for g, _, _ in chunks]
        feeds = [graph_feeds(g, f, rules) if quantize_inputs else f for g, f, _ in chunks]
        self.values = {id(t): [f[t.name] for f in feeds] for t in graph.inputs}
        self.readers = Counter(id(t) for n in graph.nodes for t in n.inputs if t is not None and not t.is_constant)
        self.readers.update(id(t) for t in graph.outputs)
        self.batch = graph.inputs[0].shape[0]

    def value(self, t) -> list:
        return [t.data] * len(self.chunk_nodes) if t.is_constant else self.values[id(t)]

    def inputs(self, node: Node) -> list[list]:
        """Per chunk, the node's input arrays (None for an absent optional input)."""
        columns = [[None] * len(self.chunk_nodes) if t is None else self.value(t) for t in node.inputs]
        return [list(row) for row in zip(*columns)]

    def advance_to(self, name: str) -> Node:
        """Evaluate every node before the one called `name` and return that one (not yet evaluated)."""
        while self.nodes[self.position].name != name:
            self.step()
        return self.nodes[self.position]

    def step(self) -> None:
        node = self.nodes[self.position]
        outs = [evaluate_node(nodes[self.position], ins, self.rules)
                for nodes, ins in zip(self.chunk_nodes, self.inputs(node))]
        for k, t in enumerate(node.outputs):
            self.values[id(t)] = [o[k] for o in outs]
        for t in node.inputs:
            if t is not None and not t.is_constant:
                self.readers[id(t)] -= 1
                if self.readers[id(t)] == 0:
                    del self.values[id(t)]
        self.position += 1


def _dequantize(x: np.ndarray, t) -> np.ndarray:
    q = t.quant
    shape = [1] * x.ndim
    if q.axis is not None:
        shape[q.axis] = -1
    return ((x.astype(np.float64) - q.zero_point.reshape(shape)) * q.scale.reshape(shape)).astype(np.float32)


def _channel_mean(float_node: Node, rows: list[list], batch: int) -> np.ndarray:
    """Mean over positions of the node's output before its fused activation, per output channel, for each model
    batch of `batch` samples, then over those batches (rows: per chunk of whole batches, the node's inputs)."""
    linear = Node(float_node.op, float_node.name, float_node.inputs, float_node.outputs,
                  {**float_node.attrs, "activation": None})
    means = []
    for ins in rows:
        o = evaluate_node(linear, ins)[0]
        means.append(o.reshape(len(o) // batch, -1, o.shape[-1]).astype(np.float64).mean(axis=1))
    return np.mean(np.concatenate(means), axis=0)


def correct_biases(float_graph: Graph, graph: Graph, batches: list[dict], rules="litert-ref") -> int:
    """Correct the bias of every int8 (and 16x8) conv / depthwise / fully-connected node of `graph` (the quantized
    form of `float_graph`, same node names) on the float `batches`; returns how many layers were corrected."""
    reference = _Stepper(float_graph.copy(), batches, rules)
    quantized = _Stepper(graph, batches, rules, quantize_inputs=True)
    corrected = 0
    while quantized.position < len(quantized.nodes):
        node = quantized.nodes[quantized.position]
        if weighted(node.op) and node.outputs[0].dtype in ("int8", "int16"):
            float_node = reference.advance_to(node.name)
            want = _channel_mean(float_node, reference.inputs(float_node), reference.batch)
            rows = [[_dequantize(v, t) for v, t in zip(ins, node.inputs)] for ins in quantized.inputs(node)]
            got = _channel_mean(float_node, rows, quantized.batch)
            bias = node.inputs[2]
            step = np.round((want - got) / bias.quant.scale.astype(np.float64)).astype(np.int64)
            w = node.inputs[1]
            bound = bias_bound(w.size // w.shape[weight_axes(node)[0]], node.outputs[0].dtype)
            fixed = np.clip(bias.data.astype(np.int64) + step, -bound, bound).astype(bias.data.dtype)
            replace_constant(graph, node, 2, fixed).quant = bias.quant
            corrected += 1
        quantized.step()
    return corrected
