"""cross_layer_equalization: rescale the channels between consecutive linear layers so that each channel's
weight range is the same in both layers (Nagel et al. 2019, "Data-free quantization", section 4.1).

For layers A -> B with only a positively homogeneous function between them (nothing, relu, zero padding,
max or average pooling: f(x / s) = f(x) / s for s > 0), dividing A's output channel c (weights and bias) by
s_c and multiplying B's input channel c by s_c leaves the float function unchanged. With r1 = A's range of
output channel c and r2 = B's range of input channel c, s_c = sqrt(r1 / r2) makes both sqrt(r1 * r2). Layers
inside longer chains get both treatments, so the scales are iterated to a fixed point. relu6 (and hardswish)
bound their output, so a pair with one in between is left alone; so is a tensor that another op also reads
(a residual add), since the add would see the rescaled channels.

AIMET and NNCF equalize on their framework's module graph (conv / bn / relu patterns found by tracing).
mcc equalizes its IR after batch-norm folding and layout, where every pair is visible as constant weights
in one layout, and records the narrowing of the per-channel weight ranges in the pass notes.

Option "cle" (default: on exactly when bias correction runs, DEFAULT_BIAS_CORRECTION). Measured on the zoo
(quantize_int8's docstring has the setup and the full table), the change in held-out output SQNR that
equalization brings, averaged over two seeds:

| | resnet18 | mobilenet_v2 | mobilenet_v3_small | digits |
|---|---|---|---|---|
| alone | -0.01 dB | +0.03 | -0.20 | +1.11 |
| on top of bias correction | +0.06 | +0.09 | +0.23 | +0.01 |

With per-channel int8 weights, equalizing weight ranges matters less than it does for per-tensor weights
(Nagel et al.'s MobileNetV2 case); what it changes is the per-tensor activation range between A and B, and
the mean shift that rescaled weights round to, which is what bias correction removes. Together they never
lost on the zoo; equalization alone did (mobilenet_v3_small), so it is on only with bias correction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ir import Graph, Node
from ..ir.traits import grouped, is_homogeneous, weight_axes, weighted
from ..runtime.kernels.int8_binary import binary_magnitudes
from .bias_correction import DEFAULT_BIAS_CORRECTION
from .fold_constants import replace_constant
from .manager import PassContext, register_pass

MAX_ITERATIONS, TOLERANCE = 50, 1e-4


def _linear_layer(graph: Graph, node: Node) -> bool:
    """A conv / depthwise / fully-connected node with constant weights (and bias) that only it reads."""
    if not weighted(node.op) or grouped(node):
        return False
    params = [t for t in node.inputs[1:] if t is not None]
    return all(t.is_constant and len(graph.consumers(t)) == 1 for t in params)


def _binary_across_inputs(node: Node) -> bool:
    """A binary conv2d / fully_connected (passes/binarize.py): each output channel's weights share one magnitude,
    which scaling its input channels apart would undo (a depthwise layer's input channel is its output channel,
    so equalization keeps it binary)."""
    return node.op != "depthwise_conv2d" and binary_magnitudes(node.inputs[1].data, weight_axes(node)[0]) is not None


def find_pairs(graph: Graph) -> list[tuple[Node, Node]]:
    """(A, B) layer pairs whose channels can be rescaled against each other, in graph order."""
    pairs = []
    for a in graph.nodes:
        if not (_linear_layer(graph, a) and is_homogeneous(a)):
            continue
        t = a.outputs[0]
        while True:
            b = graph.only_reader(t)
            if b is None or b.inputs[0] is not t:
                break
            if weighted(b.op):
                if _linear_layer(graph, b) and not _binary_across_inputs(b):
                    pairs.append((a, b))
                break
            if not is_homogeneous(b):
                break
            t = b.outputs[0]
    return pairs


def _ranges(w: np.ndarray, axis: int, groups: int = 1) -> np.ndarray:
    """max |w| per index of `axis`, then per run of `groups` consecutive indices (a depthwise multiplier)."""
    r = np.abs(np.moveaxis(w, axis, 0)).reshape(w.shape[axis], -1).max(axis=1)
    return r.reshape(-1, groups).max(axis=1)


def _spread(w: np.ndarray, axis: int) -> float:
    """max / min of the per-channel ranges along `axis` (1 when a channel is all zero)."""
    r = _ranges(w, axis)
    return float(r.max() / r.min()) if r.min() > 0 else 1.0


def _equalize(weights: dict, biases: dict, a: Node, b: Node) -> float:
    """Rescale one pair in the float64 working copies; returns the largest |log s| applied."""
    w1, w2 = weights[a.name], weights[b.name]
    multiplier = b.attrs["multiplier"] if b.op == "depthwise_conv2d" else 1
    (out_axis, _), (_, in_axis) = weight_axes(a), weight_axes(b)
    r1, r2 = _ranges(w1, out_axis), _ranges(w2, in_axis, multiplier)
    s = np.where((r1 > 0) & (r2 > 0), np.sqrt(r1 / np.where(r2 > 0, r2, 1.0)), 1.0)
    shape1 = [1] * w1.ndim
    shape1[out_axis] = -1
    shape2 = [1] * w2.ndim
    shape2[in_axis] = -1
    weights[a.name] = w1 / s.reshape(shape1)
    if biases.get(a.name) is not None:
        biases[a.name] = biases[a.name] / s
    weights[b.name] = w2 * np.repeat(s, multiplier).reshape(shape2)
    return float(np.abs(np.log(s)).max())


@dataclass
class EqualizeOptions:
    cle: bool | None = None  # None: on exactly when bias correction is
    bias_correction: bool = DEFAULT_BIAS_CORRECTION


@register_pass("cross_layer_equalization", options=EqualizeOptions, requires=("float", "no_batch_norm"))
def cross_layer_equalization(graph: Graph, ctx: PassContext) -> Graph:
    """Equalize every pair find_pairs finds (option "cle", by default the bias-correction option; False leaves the
    graph as it is)."""
    opts = ctx.options
    if not (opts.cle if opts.cle is not None else opts.bias_correction):
        ctx.note("cle", "off")
        return ctx.unchanged(graph)
    pairs = find_pairs(graph)
    layers = list({id(n): n for pair in pairs for n in pair}.values())
    weights = {n.name: n.inputs[1].data.astype(np.float64) for n in layers}
    biases = {n.name: n.inputs[2].data.astype(np.float64) if n.input(2) is not None else None for n in layers}
    before = [_spread(weights[a.name], weight_axes(a)[0]) for a, _ in pairs]
    iterations = 0
    while pairs and iterations < MAX_ITERATIONS:
        iterations += 1
        if max(_equalize(weights, biases, a, b) for a, b in pairs) < TOLERANCE:
            break
    for n in layers:
        replace_constant(graph, n, 1, weights[n.name].astype(n.inputs[1].dtype))
        if biases[n.name] is not None:
            replace_constant(graph, n, 2, biases[n.name].astype(n.inputs[2].dtype))
    after = [_spread(weights[a.name], weight_axes(a)[0]) for a, _ in pairs]
    ctx.note("cle", {"pairs": len(pairs), "iterations": iterations,
                     "mean_channel_range_spread_before": round(float(np.mean(before)), 3) if pairs else None,
                     "mean_channel_range_spread_after": round(float(np.mean(after)), 3) if pairs else None})
    return graph
