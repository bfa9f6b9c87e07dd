"""binarize: weights as per-output-channel scaled signs, alpha * sign(W) with alpha = mean |W| of the channel
(Rastegari et al. 2016, XNOR-Net's binary-weight networks, BWN; sign(0) = +1).

The weight stays a float constant, so every later pass sees an ordinary layer; quantize_int8's per-channel scale
max|w| / 127 = alpha / 127 then turns it into codes +-127, two per channel, which stock LiteRT and onnxruntime run
as int8 layers bit-exactly and mcc's runtime runs with 1-bit packed weights (runtime/kernels/int8_binary.py). The
values are the record: a layer is binary when every weight of each output channel has the same magnitude
(int8_binary.binary_magnitudes), which survives layout changes, file writing and reading back, so nothing else
marks the layers. cross_layer_equalization leaves a binary layer's input channels alone (it would scale them
apart), and quantize_int8 checks that each binary layer got exactly two codes per channel.

Options: "binary_layers" (fnmatch patterns of node names; empty: every weighted layer, ir.traits.weighted: conv,
depthwise, fully connected, transposed conv), "binary_keep_first_last" (default on: the first and the last of those layers in graph order stay
int8, as in XNOR-Net, where they hold most of the accuracy and a small part of the weights). The pass notes list,
per binary layer, its weights, the int8 bytes a stock file stores for them (one byte each, and a float32 scale per
channel) and the bytes at 1 bit per weight (int8_binary.packed_bytes), and the totals.

larq (the only binary-network converter) trains with quantizers on Keras layers and converts to custom TFLite ops;
mcc binarizes a trained float graph and emits standard int8 ops, with `ste_sign` below for the straight-through
training that recovers the accuracy.

Option "binary_activations" (default off) also makes the inputs of those layers binary (XNOR-Net's full binary
layers, Hubara et al.'s BNN): each gets a binary_activation node, 0 where x >= 0 and -2 where x < 0, i.e.
sign(x) - 1, and the layer's bias gains sum(W) per output channel, so that the layer computes W * sign(x) with the
padding counted +1 (larq's pad_values=1: a padded tap stays a bit). A per-tensor activation scale beta would only
multiply the layer's alpha, so it is left at 1. Why not +-1 itself: an int8 tensor always holds its real 0 at the
zero point, and the only standard-op form of a sign that stock runtimes compute exactly is two requantizing
QUANTIZEs (quantize_int8), whose output codes are {zero point, -128}, i.e. {0, -c}. A relu feeding the layer (fused
or its own op, through max pools) is dropped, since the sign of a relu's output is constant; the notes name it.
Where other nodes read that relu's output too (a residual block's output, read by the next block's body and its
shortcut), the sign reads the relu's input and the relu stays for them (note "relu_kept_for"): the binary
layer's branch alone changes.
ste_step trains through the step as BNN does (identity gradient where |x| <= 1).
"""

from __future__ import annotations

import fnmatch
import functools
from dataclasses import dataclass

import numpy as np

from ..errors import MccError
from ..ir import Graph
from ..ir.traits import weight_axes, weighted
from ..runtime.kernels.int8_binary import binary_magnitudes, packed_bytes
from .fold_constants import replace_constant
from .manager import PassContext, register_pass

def binarize_array(w: np.ndarray, axis: int) -> np.ndarray:
    """alpha * sign(w) per index of `axis`, alpha = mean |w| over the rest, sign(0) = +1; float32."""
    w = np.asarray(w, np.float32)
    others = tuple(a for a in range(w.ndim) if a != axis)
    alpha = np.abs(w.astype(np.float64)).mean(axis=others, keepdims=True).astype(np.float32)
    return np.where(w >= 0, alpha, -alpha).astype(np.float32)


@dataclass
class BinarizeOptions:
    binary_layers: tuple = ()  # fnmatch patterns of node names; empty: every weighted layer
    binary_keep_first_last: bool = True  # the first and last such layer stay int8
    binary_activations: bool = False  # the chosen layers' inputs become signs too (module docstring)


def _chosen(graph: Graph, opts: BinarizeOptions) -> list:
    candidates = [n for n in graph.nodes if weighted(n.op) and n.inputs[1].is_constant]
    patterns = tuple(opts.binary_layers or ())
    if patterns:
        unmatched = [p for p in patterns if not any(fnmatch.fnmatchcase(n.name, p) for n in candidates)]
        if unmatched:
            raise MccError(f"binary_layers pattern(s) {', '.join(repr(p) for p in unmatched)} match no layer; the "
                           "layers binarize can take (weighted ops with constant weights) are: "
                           f"{', '.join(n.name for n in candidates) or 'none'}")
    kept = {id(candidates[0]), id(candidates[-1])} if opts.binary_keep_first_last and candidates else set()
    return [n for n in candidates if id(n) not in kept
            and (not patterns or any(fnmatch.fnmatchcase(n.name, p) for p in patterns))]


@register_pass("binarize", options=BinarizeOptions, requires=("float", "no_batch_norm"))
def binarize(graph: Graph, ctx: PassContext) -> Graph:
    """Replace the chosen layers' weights by alpha * sign(W) per output channel (module docstring)."""
    graph.toposort()
    nodes = _chosen(graph, ctx.options)
    if not nodes:
        raise MccError("binarize found no layer to binarize: the graph has no weighted layer (conv, depthwise, "
                       "fully connected, transposed conv) with constant weights besides the first and last, which "
                       "stay int8 (option binary_keep_first_last); turn that off or compile for arm-int8")
    done: dict[int, object] = {}  # a weight several nodes read (shared) is binarized once
    layers = {}
    for node in nodes:
        w, axis = node.inputs[1], weight_axes(node)[0]
        if id(w) not in done:
            done[id(w)] = replace_constant(graph, node, 1, binarize_array(w.data, axis))
        node.inputs[1] = done[id(w)]
        stock = w.size + 4 * w.shape[axis]
        layers[node.name] = {"op": node.op, "weights": w.size, "stock_bytes": stock,
                             "packed_bytes": packed_bytes(w.data, axis)}
    ctx.note("layers", layers)
    ctx.note("total", {k: sum(la[k] for la in layers.values()) for k in ("weights", "stock_bytes", "packed_bytes")})
    if ctx.options.binary_activations:
        ctx.note("binary_activations", _binarize_inputs(graph, nodes))
        graph.toposort()
    return graph


STEP = 2.0  # binary_activation's magnitude: sign(x) - 1 (beta = 1)


def _binarize_inputs(graph: Graph, nodes: list) -> dict:
    """Put a binary_activation before each node's input (one per input tensor), fold sum(W) into the biases, drop
    a relu upstream; node name -> {"input", "relu_dropped"}."""
    steps: dict[int, object] = {}
    noted = {}
    for node in nodes:
        x = node.inputs[0]
        noted_relu = noted_shared = None
        if id(x) not in steps:
            noted_relu = _drop_relu(graph, x)
            x = node.inputs[0]  # a relu right before the node is bypassed: the node now reads the relu's input
            if noted_relu is None:
                x, noted_shared = _before_shared_relu(graph, x, node)
        if id(x) not in steps:
            steps[id(x)] = graph.add_node("binary_activation", [x], {"magnitude": STEP}, name=f"{x.name}/sign")
        node.inputs[0] = steps[id(x)].outputs[0]
        w, axis = node.inputs[1], weight_axes(node)[0]
        others = tuple(a for a in range(w.data.ndim) if a != axis)
        fold = (STEP / 2) * w.data.astype(np.float64).sum(axis=others)
        bias = node.input(2)
        new_bias = (fold if bias is None else bias.data.astype(np.float64) + fold).astype(np.float32)
        if bias is None:
            node.inputs = [*node.inputs[:2], graph.constant(f"{node.name}/bias", new_bias)]
        else:
            replace_constant(graph, node, 2, new_bias)
        noted[node.name] = {"input": x.name, "relu_dropped": noted_relu,
                            **({"relu_kept_for": noted_shared} if noted_shared else {})}
    return noted


def _before_shared_relu(graph: Graph, x, node) -> tuple:
    """(the tensor to take the sign of, the relu's other readers or None) for `node`'s input x. When `x` is a relu's
    output that other nodes read too (a residual block's output, which the next block's body and its shortcut
    both read), sign(x) would be constant; the sign reads the relu's input instead, and the relu stays for the
    other readers: the binary layer's branch alone changes (Bi-Real Net's binary convs read the pre-activation
    the same way). A relu op is read past; a relu fused into its producer is split off it first."""
    producer = graph.producer(x)
    if producer is None or graph.is_output(x):
        return x, None
    others = [n.name for n in graph.consumers(x) if n is not node]
    if producer.op == "relu":
        return producer.inputs[0], others
    if producer.attrs.get("activation") == "relu":
        producer.attrs["activation"] = None
        relu = graph.add_node("relu", [x], name=f"{producer.name}/relu", index=graph.position(producer) + 1)
        for n in graph.consumers(x):
            if n is not relu:
                n.inputs = [relu.outputs[0] if i is x else i for i in n.inputs]
        return x, others
    return x, None


def _drop_relu(graph: Graph, x) -> str | None:
    """Remove the relu (an op, or fused into its producer) that makes `x`, through max pools, when nothing else
    reads the tensors on the way: sign(relu(v)) would be constant. Returns the relu's node name, or None."""
    t = x
    while True:
        if len(graph.consumers(t)) != 1 or graph.is_output(t):
            return None
        producer = graph.producer(t)
        if producer is None:
            return None
        if producer.op == "max_pool2d" and producer.attrs.get("activation") is None:
            t = producer.inputs[0]
            continue
        if producer.op == "relu":
            graph.bypass(producer)
            return producer.name
        if producer.attrs.get("activation") == "relu":
            producer.attrs["activation"] = None
            return producer.name
        return None


# ---- straight-through training (used by the fine-tuning pass's per-weight transform) ---------------------------
@functools.cache
def _ste_function():
    import torch

    class SteSign(torch.autograd.Function):
        """Forward alpha * sign(w) per output channel (axis 0); backward the identity where |w| <= 1, else 0
        (Courbariaux et al.'s clipped straight-through estimator; alpha's own gradient is left out, as in BWN)."""

        @staticmethod
        def forward(ctx, w):
            ctx.save_for_backward(w)
            alpha = w.abs().double().mean(dim=tuple(range(1, w.dim())), keepdim=True).to(w.dtype)  # as the pass
            return torch.where(w >= 0, alpha, -alpha)

        @staticmethod
        def backward(ctx, grad):
            (w,) = ctx.saved_tensors
            return grad * (w.abs() <= 1).to(grad.dtype)

    return SteSign


def binary_weight_transforms(graph: Graph) -> dict:
    """Weight name -> straight-through binarization, for every layer whose weights are binary (each output channel
    +-alpha, more than one weight per channel): what the fine-tuning pass trains them through, so that they come
    back binary."""
    out = {}
    for n in graph.nodes:
        w = n.input(1) if weighted(n.op) else None
        if w is not None and w.is_constant and w.size > w.shape[weight_axes(n)[0]] \
                and binary_magnitudes(w.data, weight_axes(n)[0]) is not None:
            out[w.name] = functools.partial(_ste_on_axis, axis=weight_axes(n)[0])
    return out


def _ste_on_axis(weight, axis: int):
    return ste_sign(weight.movedim(axis, 0)).movedim(0, axis)


@functools.cache
def _ste_step_function():
    import torch

    class SteStep(torch.autograd.Function):
        """Forward binary_activation (0 where x >= 0, else -magnitude); backward (magnitude / 2) times the gradient
        where |x| <= 1, else 0: the straight-through sign of Hubara et al. for sign(x) - 1, scaled."""

        @staticmethod
        def forward(ctx, x, magnitude):
            ctx.save_for_backward(x)
            ctx.magnitude = magnitude
            return torch.where(x >= 0, torch.zeros_like(x), torch.full_like(x, -magnitude))

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            return grad * (x.abs() <= 1).to(grad.dtype) * (ctx.magnitude / 2), None

    return SteStep


def ste_step(x, magnitude: float):
    """binary_activation of a torch tensor with a straight-through gradient (the IR torch module's op)."""
    return _ste_step_function().apply(x, float(magnitude))


def ste_sign(weight):
    """Binarized `weight` (a torch tensor, output channels on axis 0, as the IR's NCHW weights and torch's
    modules hold them) with a straight-through gradient; torch is imported on first use only."""
    return _ste_function().apply(weight)
