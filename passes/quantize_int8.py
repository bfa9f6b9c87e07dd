"""quantize_int8: post-training full-integer quantization of an NHWC float graph, after TFLite's int8 spec.

What the spec asks (https://ai.google.dev/edge/litert/models/quantization_spec), and what this pass does:
- weights of conv2d (OHWI, axis 0), depthwise_conv2d ([1,kh,kw,C*m], axis 3) and fully_connected ([O,K],
  axis 0): int8 symmetric per output channel, zero point 0, values in [-127, 127];
- their bias: int32 with scale s_in * s_w[c] and zero point 0 (a zero bias is added where there is none);
- activations: int8 asymmetric per tensor, the real range always containing 0, from the calibration observer;
- outputs with fixed parameters: softmax and sigmoid (LOGISTIC) 1/256 and -128, tanh 1/128 and 0;
- ops that move bytes without requantizing share their input's parameters: max_pool2d, avg_pool2d, reshape,
  transpose, pad (PAD / PADV2), slice, split (all its outputs), resize (RESIZE_NEAREST_NEIGHBOR and
  RESIZE_BILINEAR, whose int8 kernels interpolate the stored integers), gather, tile, depth_to_space,
  space_to_depth, reduce_max and reduce_min (issue 14), and concat, minimum and maximum with their inputs;
  such tensors form one group whose range is the union of its members' ranges (a constant operand is quantized
  with the group's parameters). Sharing never destroys an input (issue 15, _plan): fixed parameters never
  spread to a tensor whose range they do not cover, and a concat / minimum / maximum input that would lose
  precision by sharing gets a requantizing QUANTIZE (int8 -> int8) to the output's parameters instead. LiteRT
  2.3.0 leaves no other way: its int8 CONCATENATION refuses inputs whose scale differs from the output's
  (BUILTIN_REF: "concatenation.cc:235 t->params.scale != output->params.scale ... failed to prepare"; XNNPACK:
  "failed to delegate CONCATENATION"; measured with scales 0.1 / 0.2), and onnxruntime's Concat on int8 (what
  x86-int8 writes) copies bytes. On a detection head (boxes 0..~320 px concatenated with sigmoid scores,
  examples/detection_head.py) this took the int8 output from 0.09 dB to 31.9 dB SQNR;
- constants that feed other int8 ops (add 3 and mul 1/6 of a legalized hardsigmoid, per-channel mul/add of
  a decomposed batch norm) become int8 constants with their own per-tensor parameters;
- fused relu / relu6 need nothing extra: the observer sees the activated output, so its range starts at 0;
- kernel limits the spec leaves implicit are respected by widening an output range: HARD_SWISH needs
  s_out >= s_in / 128, ADD / SUB need s_out > max(s_a, s_b) / 2**19.
Ops without an int8 kernel in mcc's runtime (prelu, div; the math ops sqrt, exp, gelu, pow, sum, lrn, ...) stay
float between DEQUANTIZE and QUANTIZE; they are listed in the note "float_ops", and with option "require_int8" they
are an error.

16x8 layers (option "int16_layers", node names; mixed precision for the layers an analysis blames): those
nodes compute with int16 activations, symmetric (zero point 0) from their own observed ranges, with int8 weights
and an int64 bias, as TFLite's 16x8 kernels do. Their inputs are requantized to int16 (QUANTIZE int8 -> int16 or
float -> int16), and each int8 consumer of their output gets a QUANTIZE int16 -> int8. Only conv2d,
depthwise_conv2d, fully_connected and add have 16x8 kernels here; naming another op is an error, as is naming an
op that stays float. The TFLite converter applies 16x8 to a whole model (EXPERIMENTAL_TFLITE_BUILTINS_
ACTIVATIONS_INT16_WEIGHTS_INT8); mcc to the chosen nodes only, the rest staying int8.

Options: "calibration" (arrays by input name, source layout), "observer" (observers.OBSERVERS; default
DEFAULT_OBSERVER), "io" ("float": QUANTIZE after float inputs and DEQUANTIZE before float outputs, "int8":
int8 inputs and outputs), "bias_correction" (default DEFAULT_BIAS_CORRECTION, see bias_correction.py),
"require_int8", "progress", and "int16_layers", "float_layers", "ranges" (mixed precision, above).
Interface tensors keep their names; their int8 twins are called NAME/int8.

The TFLite converter's MLIR quantizer wraps every op in fake-quant (QDQ) pairs from the calibration
statistics, propagates parameters through "same scale" op traits, then folds each QDQ sandwich into an int8
kernel. mcc assigns parameters directly on its IR (a union-find over the tensors that must agree, fixed
outputs pinned) and retypes the graph in place, so the result is an int8 graph that the reference runtime
runs, and compares with the float graph, before any file exists. On shared-parameter ops: the converter's
quantization driver propagates one scale through same-scale ops (CONCATENATION among them) and requantizes where
two requirements conflict; onnxruntime's quantize_static (QDQ) has no rule for Concat in its QDQ registry, so
every concat input and the output keep their own calibrated parameters (DequantizeLinear -> float Concat ->
QuantizeLinear: each input is in effect requantized, a second rounding even where the ranges agree). mcc joins
an input whenever that costs nothing measurable (always for a tensor only the concat reads, whose values reach
the output at the output's scale either way) and requantizes only where joining would coarsen a tensor something
else reads, or where fixed parameters would clamp.

Defaults, measured on the zoo: output SQNR (dB) of the int8 graph under litert-ref against the float
graph on held-out data, for two seeds (0, 1): 64 calibration samples of N(0, 1) and 128 held-out ones
(digits: training images 0-63 or 64-127 for calibration, the 450 test images held out; int8 test accuracy
98.22% in every row, as in float). Observers, with neither bias correction nor equalization:

| observer | resnet18 | mobilenet_v2 | mobilenet_v3_small | digits |
|---|---|---|---|---|
| minmax | 28.66, 28.85 | 23.02, 22.74 | 21.19, 22.58 | 38.49, 39.52 |
| percentile (99.99) | 27.86, 28.07 | 23.38, 22.86 | 21.11, 21.89 | 38.51, 39.48 |
| percentile:99.999 | 29.03, 29.11 | 23.61, 23.07 | 21.37, 22.67 | 38.47, 39.48 |
| mse | 29.39, 29.13 | 23.61, 23.06 | 21.16, 23.42 | 38.49, 39.52 |

"mse" is best or within 0.05 dB of the best in 6 of the 8 cells and never far behind, so it is the default
(it costs about 0.2 s more per model than minmax). With "mse", bias correction and cross-layer equalization:

| | resnet18 | mobilenet_v2 | mobilenet_v3_small | digits |
|---|---|---|---|---|
| neither | 29.39, 29.13 | 23.61, 23.06 | 21.16, 23.42 | 38.49, 39.52 |
| bias correction | 29.23, 29.32 | 23.91, 23.01 | 21.51, 22.93 | 40.26, 42.02 |
| equalization | 29.23, 29.27 | 23.73, 23.00 | 21.21, 22.97 | 39.41, 40.82 |
| both | 29.16, 29.52 | 24.03, 23.06 | 21.54, 23.35 | 40.27, 42.02 |

On the randomly initialised zoo models every change is within seed noise (0.5 dB); on the one trained model,
digits, bias correction gains 2 dB. Bias correction is therefore on by default (DEFAULT_BIAS_CORRECTION),
and equalization follows it (see equalize.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numba
import numpy as np

from ..errors import MccError
from ..ir import Graph, Node, QuantParams, Tensor
from ..ir.traits import TRAITS, traits, weight_axes, weighted
from ..runtime.fixed_point import bias_bound, round_half_away, round_half_away_scalar
from ..runtime.kernels.int8_binary import binary_magnitudes
from ..runtime.kernels.int8_registry import INT8_KERNELS, LIMITS
from .bias_correction import BIAS_CORRECTION_SAMPLES, DEFAULT_BIAS_CORRECTION, correct_biases
from .calibrate import (LinearMeans, activations, calibration_batches, float_run, json_db, observe_ranges,
                        outputs_sqnr_db)
from .fold_constants import replace_constant
from .manager import PassContext, register_pass

DEFAULT_OBSERVER = "mse"

FIXED = {"softmax": (1 / 256, -128), "sigmoid": (1 / 256, -128), "tanh": (1 / 128, 0)}


# ---- parameters -----------------------------------------------------------------------------------------
def affine_params(lo: float, hi: float) -> QuantParams:
    """int8 asymmetric parameters covering [lo, hi] widened to contain 0 (an empty range becomes [0, 1]); the
    zero point is rounded, as the TFLite converter nudges it, so that the real 0 is exactly representable."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if hi == lo:
        hi = 1.0
    scale = np.float32((hi - lo) / 255.0)
    zero_point = int(np.clip(round_half_away(-128.0 - lo / np.float64(scale)), -128, 127))
    return QuantParams(np.array([scale], np.float32), np.array([zero_point], np.int64))


def _fixed(op: str) -> QuantParams:
    scale, zero_point = FIXED[op]
    return QuantParams(np.array([scale], np.float32), np.array([zero_point], np.int64))


# ---- 16x8 layers -------------------------------------------------------------------------------------------
INT16_LAYER_OPS = tuple(op for op, t in TRAITS.items() if t.int16_layer)  # in the op table's order, for messages


def symmetric16(lo: float, hi: float, min_scale: float = 0.0) -> QuantParams:
    """int16 symmetric parameters (zero point 0, TFLite's 16x8 spec) covering [lo, hi], scale at least
    `min_scale`."""
    scale = max(max(abs(float(lo)), abs(float(hi))) / LIMITS["int16"][1], min_scale) or 1.0 / LIMITS["int16"][1]
    return QuantParams(np.array([scale], np.float32), np.array([0], np.int64))


def _int16_nodes(graph: Graph, names, reasons: dict) -> list[Node]:
    """The nodes named in option int16_layers, checked: they exist, have a 16x8 kernel and are quantized."""
    by_name = {n.name: n for n in graph.nodes}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise MccError(f"int16_layers names {', '.join(repr(n) for n in unknown)}, which the graph does not have "
                       f"(after legalization); its {' / '.join(INT16_LAYER_OPS)} nodes are: "
                       f"{', '.join(n.name for n in graph.nodes if n.op in INT16_LAYER_OPS) or 'none'}")
    nodes = [by_name[n] for n in dict.fromkeys(names)]
    for node in nodes:
        if node.op not in INT16_LAYER_OPS:
            raise MccError(f"'{node.name}' is a {node.op}, which has no 16-bit (16x8) kernel in mcc's runtime; "
                           f"int16_layers takes {', '.join(INT16_LAYER_OPS)} nodes. Leave it out, or keep it float",
                           node=node.name)
        if reasons[node.name]:
            raise MccError(f"'{node.name}' cannot be a 16x8 layer: it stays float ({reasons[node.name]})",
                           node=node.name)
        if node.op == "add" and any(t.is_constant for t in node.inputs):
            raise MccError(f"'{node.name}' adds a constant; a 16x8 ADD takes two activations here (an int16 "
                           "constant operand is not written): leave it int8", node=node.name)
    return nodes


def _int16_followers(graph: Graph, int16_nodes: list[Node], int8_nodes: list[Node]) -> list[Node]:
    """Reshapes between 16x8 layers (the flatten before a fully_connected): they copy bytes, so they stay int16
    rather than passing the activation through int8 and back."""
    wide = {id(n) for n in int16_nodes}
    quantized = {id(n) for n in int8_nodes}
    followers = []
    for node in graph.nodes:  # in graph order, so a chain of reshapes follows too
        producer = graph.producer(node.inputs[0])
        consumers = graph.consumers(node.outputs[0])
        if (node.op == "reshape" and id(node) in quantized and producer is not None and id(producer) in wide
                and consumers and all(id(c) in wide for c in consumers)
                and not any(node.outputs[0] is o for o in graph.outputs)):
            followers.append(node)
            wide.add(id(node))
    return followers


def _int16_params(graph: Graph, int16_nodes: list[Node], ranges) -> dict[int, QuantParams]:
    """int16 parameters of every activation a 16x8 node reads or writes, from the tensor's own range (a reshape
    keeps its input's); an add's output scale is raised to TFLite's limit for the 16x8 ADD, s_out > 2 *
    max(s_a, s_b) / 2**15."""
    params = {}
    wide = {id(n) for n in int16_nodes}
    for node in graph.nodes:
        if id(node) not in wide:
            continue
        ins = [t for t in node.inputs if t is not None and not t.is_constant]
        for t in ins:
            params.setdefault(id(t), symmetric16(*ranges[t.name]))
        out = node.outputs[0]
        if node.op == "reshape":
            params[id(out)] = params[id(ins[0])]
            continue
        widest = max(float(params[id(t)].scale[0]) for t in ins)
        params[id(out)] = symmetric16(*ranges[out.name], widest / 2.0 ** 14 * (1 + 1e-6) if node.op == "add" else 0)
    return params


class _Groups:
    """Union-find over activation tensors that must carry the same parameters; a group may be pinned to fixed
    parameters, otherwise its range is the union of its members' observed ranges. `finest` is the smallest scale
    a member that others read needs on its own (see _plan: SHARE_FACTOR bounds how far a join may coarsen it)."""

    def __init__(self, tensors: list[Tensor], ranges: dict[str, tuple[float, float]], read: set[int]):
        self.parent = {id(t): id(t) for t in tensors}
        self.range = {id(t): ranges[t.name] for t in tensors}
        self.finest = {id(t): float(affine_params(*ranges[t.name]).scale[0]) if id(t) in read else np.inf
                       for t in tensors}
        self.pin: dict[int, QuantParams] = {}

    def find(self, t: Tensor) -> int:
        i = id(t)
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def can_join(self, a: Tensor, b: Tensor, coarsen: float = np.inf) -> bool:
        """Whether a's and b's groups may share parameters: fixed parameters must cover the other group's range
        (to within one step), and the shared scale may exceed neither group's `finest` by more than `coarsen`."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return True
        pa, pb = self.pin.get(ra), self.pin.get(rb)
        if pa is not None and pb is not None:
            return pa == pb
        if pa is not None or pb is not None:
            pin, other = (pa, rb) if pa is not None else (pb, ra)
            s, zp = float(pin.scale[0]), int(pin.zero_point[0])
            lo, hi = self.range[other]
            if lo < s * (-129 - zp) or hi > s * (128 - zp):
                return False
            scale = s
        else:
            (lo_a, hi_a), (lo_b, hi_b) = self.range[ra], self.range[rb]
            scale = float(affine_params(min(lo_a, lo_b), max(hi_a, hi_b)).scale[0])
        return scale <= coarsen * min(self.finest[ra], self.finest[rb])

    def join(self, a: Tensor, b: Tensor) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        (lo_a, hi_a), (lo_b, hi_b) = self.range[ra], self.range[rb]
        self.parent[rb] = ra
        self.range[ra] = (min(lo_a, lo_b), max(hi_a, hi_b))
        self.finest[ra] = min(self.finest[ra], self.finest.pop(rb))
        if rb in self.pin:
            self.pin[ra] = self.pin.pop(rb)

    def params(self, t: Tensor) -> QuantParams:
        root = self.find(t)
        return self.pin.get(root) or affine_params(*self.range[root])

    def widen(self, t: Tensor, min_scale: float) -> bool:
        """Stretch t's group range so its scale reaches `min_scale`; pinned groups cannot stretch."""
        root = self.find(t)
        if root in self.pin or self.params(t).scale[0] >= min_scale:
            return False
        lo, hi = self.range[root]
        factor = min_scale / float(self.params(t).scale[0]) * (1 + 1e-6)
        self.range[root] = (min(lo, 0.0) * factor, max(hi, 0.0) * factor)
        return True


# ---- shared parameters (issue 15) -------------------------------------------------------------------------
SHARE_FACTOR = 1.25


def _read_elsewhere(graph: Graph, int8_nodes: list[Node]) -> set[int]:
    """Tensors whose precision matters beyond a shared-parameter op: graph outputs, and those read by an op that
    computes with them (not a shares_quant op, or a node left in float)."""
    int8 = {id(n) for n in int8_nodes}
    read = {id(t) for t in graph.outputs}
    for node in graph.nodes:
        if id(node) not in int8 or not traits(node.op).shares_quant:
            read |= {id(t) for t in node.inputs if t is not None}
    return read


def _plan(graph: Graph, int8_nodes: list[Node], ranges) -> tuple[_Groups, set]:
    """Group and pin activation parameters; returns the groups and the inputs (node name, index) of shared-
    parameter ops that get a requantizing QUANTIZE to the output's parameters instead of sharing them.

    A single-input shared op (pool, pad, reshape, slice, ...) joins its input unless fixed parameters would not
    cover the other side (a sigmoid padded with -1): its output's values come from its input, so the input's range
    is the one to keep, and requantizing it to a narrower output (an average pool's) would clamp it. A concat,
    minimum or maximum joins an input only if that loses nothing measurable: fixed parameters cover the other
    group's range, and the shared scale is at most SHARE_FACTOR times the scale any member read elsewhere
    (_read_elsewhere) needs on its own. A tensor read only by the concat loses nothing by taking the output's
    scale (its values reach the output at that scale either way, and one rounding beats two), so it always joins.
    SHARE_FACTOR = 1.25 is where the two costs meet: joining at scale ratio r coarsens the member by
    20 log10 r dB (1.9 dB at 1.25), requantizing adds a second rounding to the output's slice, 10 log10(1 + 1/r^2)
    dB (2.1 dB at 1.25)."""
    ranges = dict(ranges)
    for node in int8_nodes:
        if node.op == "pad" and node.attrs["value"] <= np.finfo(np.float32).min:
            # a max pool's padding (legalize_tflite's PADV2 of the lowest float) stands for "never wins": it is not
            # data, and it quantizes to the lowest code, which never wins either
            ranges[node.outputs[0].name] = ranges[node.inputs[0].name]
    groups = _Groups(activations(graph), ranges, _read_elsewhere(graph, int8_nodes))
    for node in int8_nodes:
        if node.op in FIXED:
            groups.pin[groups.find(node.outputs[0])] = _fixed(node.op)
    requantized = set()
    for node in int8_nodes:
        if not traits(node.op).shares_quant:
            continue
        out = node.outputs[0]
        for other in node.outputs[1:]:
            groups.join(out, other)
        inputs = [(i, t) for i, t in enumerate(node.inputs) if t is not None and not t.is_constant]
        coarsen = np.inf if len(inputs) == 1 else SHARE_FACTOR
        for i, t in inputs:
            if groups.can_join(t, out, coarsen):
                groups.join(t, out)
            else:
                requantized.add((node.name, i))
    for node in int8_nodes:
        s_in = [float(groups.params(t).scale[0]) for t in node.inputs if t is not None and not t.is_constant]
        if node.op == "hardswish":
            groups.widen(node.outputs[0], s_in[0] / 128.0)
        elif node.op in ("add", "sub") and s_in:
            groups.widen(node.outputs[0], max(s_in) / 2.0 ** 19)
    return groups, requantized


# ---- which nodes become int8 --------------------------------------------------------------------------------
def _float_reason(node: Node) -> str | None:
    """Why `node` cannot run in int8, or None when it can."""
    if node.op not in INT8_KERNELS or node.op in ("quantize", "dequantize"):
        return "mcc's runtime has no int8 kernel for it"
    if any(t is not None and not t.is_constant and t.dtype != "float32" for t in node.inputs):
        return "its inputs are not float32 activations"
    if weighted(node.op) and not all(t is None or t.is_constant for t in node.inputs[1:]):
        return "its weights are computed, not constant"
    return None


# ---- constants ----------------------------------------------------------------------------------------------
def _weight_scales(w: np.ndarray, axis: int, bias: np.ndarray | None, s_in: np.float32, bound: int) -> np.ndarray:
    """Per-channel symmetric scales max|w| / 127, raised where the bias at s_in * s_w would not leave the int32
    accumulator room for the products (fixed_point.bias_bound: a random-weight hardnet's tiny s_in gave a bias at
    the int32 limit, and the peers' accumulators overflowed differently); all-zero channels borrow the largest
    scale, so their requantization factor stays ordinary."""
    reduce = tuple(a for a in range(w.ndim) if a != axis)
    # max|w| in the weights' own float dtype: abs and max are exact there, so widening the maxima alone gives the
    # bits that widening every weight first gave, at a fraction of the passes over the weights.
    magnitude = np.abs(w) if w.dtype.kind == "f" else np.abs(w.astype(np.float64))
    scales = magnitude.max(axis=reduce).astype(np.float64) / 127.0
    scales[scales == 0] = scales.max() if scales.any() else 1.0 / 127.0
    if bias is not None:
        scales = np.maximum(scales, np.abs(bias.astype(np.float64)) / (float(s_in) * bound))
    return scales.astype(np.float32)


def _quantize_weights(graph: Graph, node: Node, s_in: np.float32, shared: dict) -> None:
    """int8 weight and int32 bias of one node (an int64 bias for a 16x8 node, whose input is int16). A float
    constant that several nodes read (an unrolled LSTM's weights, read once per step) becomes one int8 constant
    wherever its scales come out the same, so the file holds each weight once, as the float file does."""
    axis = weight_axes(node)[0]
    w = node.inputs[1].data
    channels = w.shape[axis]
    if node.input(2) is None:
        node.inputs[2:] = [graph.constant(f"{node.name}/bias", np.zeros(channels, np.float32))]
    bias = node.inputs[2].data
    activation = node.inputs[0].dtype
    bound = bias_bound(w.size // channels, activation)
    s_w = _weight_scales(w, axis, bias, s_in, bound)
    s_b = (np.float32(s_in) * s_w).astype(np.float32)
    _shared_constant(graph, node, 1, s_w, shared, lambda: (
        _round_per_channel(w, s_w.astype(np.float64), axis),
        QuantParams(s_w, np.zeros(channels, np.int64), axis)))
    _shared_constant(graph, node, 2, s_b, shared, lambda: (
        np.clip(round_half_away(bias / s_b.astype(np.float64)), -bound, bound).astype(
            np.int64 if activation == "int16" else np.int32),
        QuantParams(s_b, np.zeros(channels, np.int64), 0)))


def _round_per_channel(w: np.ndarray, scales: np.ndarray, axis: int) -> np.ndarray:
    """np.clip(round_half_away(w / scales along `axis`), -127, 127) as int8, in one compiled pass (numpy's took
    eight passes over every weight in float64: 40 ms of a MobileNetV2's quantization)."""
    shape = w.shape
    outer, inner = int(np.prod(shape[:axis], dtype=np.int64)), int(np.prod(shape[axis + 1:], dtype=np.int64))
    out = np.empty(shape, np.int8)
    _round_weights(np.ascontiguousarray(w).reshape(outer, shape[axis], inner), scales, out.reshape(outer, -1, inner))
    return out


@numba.njit(cache=True, nogil=True)
def _round_weights(w, scales, out):
    """round_half_away element for element, clipped to [-127, 127]."""
    for i in range(w.shape[0]):
        for c in range(w.shape[1]):
            s = scales[c]
            for k in range(w.shape[2]):
                out[i, c, k] = min(max(round_half_away_scalar(np.float64(w[i, c, k]) / s), -127.0), 127.0)


def _shared_constant(graph: Graph, node: Node, index: int, scales: np.ndarray, shared: dict, quantize) -> None:
    """Input `index` of `node` replaced by its quantized form, made once per (float constant, scales); `shared`
    keeps the float constant too, so its id is not reused while the cache lives."""
    old = node.inputs[index]
    key = (id(old), scales.tobytes(), node.inputs[0].dtype)  # a 16x8 node's int64 bias is another constant
    if key in shared:
        node.inputs[index] = shared[key][1]
        return
    data, params = quantize()
    new = replace_constant(graph, node, index, data)
    new.quant = params
    shared[key] = (old, new)


def quantize_array(data: np.ndarray, params: QuantParams) -> np.ndarray:
    """Per-tensor int8 of float data: round(x / s) + zp, ties away from zero, saturated."""
    q = round_half_away(np.asarray(data, np.float64) / np.float64(params.scale[0])) + int(params.zero_point[0])
    return np.clip(q, -128, 127).astype(np.int8)


def _quantize_constant(graph: Graph, node: Node, index: int, params: QuantParams | None) -> None:
    data = node.inputs[index].data
    if params is None:
        params = affine_params(float(data.min()), float(data.max()))
    replace_constant(graph, node, index, quantize_array(data, params)).quant = params


# ---- rewriting ----------------------------------------------------------------------------------------------
class _Rewriter:
    """Gives each consumer an activation in the form it needs: float, or int8 (int16 for a 16x8 node) with given
    parameters. A tensor has one native form (int8 or int16 where a quantized node or an int8 graph input produces
    it, float otherwise); other forms are twins made by QUANTIZE / DEQUANTIZE nodes placed right after the
    producer, made once each."""

    def __init__(self, graph: Graph, native_int8: set[int]):
        self.graph = graph
        self.native_int8 = native_int8
        self.twins: dict[tuple, Tensor] = {}

    def operand(self, t: Tensor, want: QuantParams | None, dtype: str = "int8") -> Tensor:
        native = id(t) in self.native_int8
        if want is None and not native or want is not None and native and t.quant == want and t.dtype == dtype:
            return t
        key = (id(t), None if want is None else (float(want.scale[0]), int(want.zero_point[0]), dtype))
        if key not in self.twins:
            self.twins[key] = self._twin(t, want, native, dtype)
        return self.twins[key]

    def _twin(self, t: Tensor, want: QuantParams | None, native: bool, dtype: str) -> Tensor:
        op = "dequantize" if want is None else "requantize" if native else "quantize"
        is_input = any(t is i for i in self.graph.inputs)
        name = f"{t.name}/{dtype}" if is_input and op == "quantize" else f"{t.name}/{op}"
        producer = self.graph.producer(t)
        index = self.graph.nodes.index(producer) + 1 if producer is not None else 0
        node = self.graph.add_node("dequantize" if want is None else "quantize", [t],
                                   None if want is None else {"dtype": dtype}, name=name, index=index)
        node.outputs[0].quant = want
        return node.outputs[0]


def _rewrite(graph: Graph, int8_nodes: list[Node], groups: _Groups, requantized: set, io: str,
             int16_nodes: list[Node], params16: dict) -> dict:
    int8_set = {id(n) for n in int8_nodes}
    int16_set = {id(n) for n in int16_nodes}
    native = {id(o) for n in int8_nodes for o in n.outputs}
    if io == "int8":
        native |= {id(t) for t in graph.inputs}
    tensors = activations(graph)
    params = {id(t): groups.params(t) for t in tensors}
    for t in tensors:
        if id(t) in native:
            t.dtype, t.quant = "int8", params[id(t)]
    for node in int16_nodes:
        node.outputs[0].dtype, node.outputs[0].quant = "int16", params16[id(node.outputs[0])]
    counts = {"weights_per_channel": 0, "constants": 0}
    rewriter = _Rewriter(graph, native)
    shared: dict = {}
    for node in list(graph.nodes):
        if id(node) not in int8_set:
            node.inputs = [t if t is None or t.is_constant else rewriter.operand(t, None) for t in node.inputs]
            continue
        out_params = params[id(node.outputs[0])]
        for i, t in enumerate(node.inputs):
            if t is None or t.is_constant or (weighted(node.op) and i > 0):
                continue
            if id(node) in int16_set:
                node.inputs[i] = rewriter.operand(t, params16[id(t)], "int16")
                continue
            want = out_params if (node.name, i) in requantized else params[id(t)]
            node.inputs[i] = rewriter.operand(t, want)
        if weighted(node.op):
            _quantize_weights(graph, node, node.inputs[0].quant.scale[0], shared)
            counts["weights_per_channel"] += 1
            continue
        for i, t in enumerate(node.inputs):
            if t is not None and t.is_constant and t.dtype == "float32":
                _quantize_constant(graph, node, i, out_params if traits(node.op).shares_quant else None)
                counts["constants"] += 1
    for k, t in enumerate(graph.outputs):
        twin = rewriter.operand(t, None if io == "float" else params[id(t)])
        if twin is not t:
            t.name, twin.name = graph.unique_name(f"{t.name}/{'int8' if t.dtype == 'int8' else 'float'}"), t.name
            graph.outputs[k] = twin
    roots = {groups.find(t) for t in tensors}
    counts["int16_layers"] = [n.name for n in int16_nodes]
    counts.update(activations=len(tensors), parameter_sets=len(roots), fixed=len(groups.pin),
                  shared=len(tensors) - len(roots), quantize_dequantize_nodes=len(rewriter.twins))
    return counts


@dataclass
class QuantizeOptions:
    calibration: dict | None = None  # input name -> array, batch first
    observer: str = DEFAULT_OBSERVER  # see passes/observers.py
    io: Literal["float", "int8"] = "float"  # float: QUANTIZE / DEQUANTIZE inside the model; int8: int8 interface
    require_int8: bool = False  # fail rather than leave an op in float
    int16_layers: tuple[str, ...] = ()  # node names computed by TFLite's 16x8 kernels (see the module docstring)
    bias_correction: bool = DEFAULT_BIAS_CORRECTION
    # mixed precision (analyze.py): nodes kept float; ranges observed once for many quantizations of one graph
    float_layers: tuple = ()
    ranges: dict | None = None


@register_pass("quantize_int8", options=QuantizeOptions, requires=("float", "nhwc"))
def quantize_int8(graph: Graph, ctx: PassContext) -> Graph:
    """Quantize `graph` (float, NHWC, legalized for TFLite) to int8 with the options described in the module
    docstring."""
    opts = ctx.options
    io, observer = opts.io, opts.observer or DEFAULT_OBSERVER
    batches = calibration_batches(graph, opts.calibration)
    graph.toposort()
    reasons = {n.name: _float_reason(n) for n in graph.nodes}
    float_ops = [n for n in graph.nodes if reasons[n.name]]
    if float_ops and opts.require_int8:
        listing = "; ".join(f"'{n.name}' ({n.op}: {reasons[n.name]})" for n in float_ops)
        raise MccError(f"{len(float_ops)} op(s) have no int8 form and would stay float: {listing}. Drop "
                       "--require-int8 to keep them in float between DEQUANTIZE and QUANTIZE", node=float_ops[0].name)
    int16_nodes = _int16_nodes(graph, tuple(opts.int16_layers or ()), reasons)
    subset = batches[:max(1, BIAS_CORRECTION_SAMPLES // graph.inputs[0].shape[0])] if opts.bias_correction else []
    means = LinearMeans(graph, len(subset)) if opts.bias_correction else None
    want = []  # the float graph's outputs per batch, from the run that also gives the ranges or the means
    ranges = opts.ranges or observe_ranges(graph, batches, observer, ctx.progress, outputs=want, means=means)
    float_graph = graph.copy()
    kept = _kept_float(graph, opts.float_layers)
    int8_nodes = [n for n in graph.nodes if not reasons[n.name] and n.name not in kept]
    groups, requantized = _plan(graph, int8_nodes, ranges)
    steps = _pin_binary_activations(graph, int8_nodes, groups)
    int16_nodes += _int16_followers(graph, int16_nodes, int8_nodes)
    binary = _binary_layers(int8_nodes)
    counts = _rewrite(graph, int8_nodes, groups, requantized, io, int16_nodes,
                      _int16_params(graph, int16_nodes, ranges))
    _check_binary(binary)
    _expand_binary_activations(graph, steps)
    graph.infer_shapes()
    ctx.note("observer", observer)
    ctx.note("io", io)
    ctx.note("calibration", {"samples": sum(len(next(iter(b.values()))) for b in batches), "batches": len(batches)})
    ctx.note("ranges", counts)
    if opts.bias_correction:
        if opts.ranges:  # no calibration run here: one float run of the subset for the means and the outputs
            float_run(float_graph, subset, outputs=want, means=means)
        got = []
        layers = correct_biases(float_graph, graph, subset, means.means(), outputs=got)
        # the output SQNR after correction costs nothing more; the SQNR before it is not noted, as it would cost a
        # run of the uncorrected int8 graph (0.22 s of the 2.9 s a 10-sample MobileNetV2 compile took)
        after = outputs_sqnr_db(want[:len(subset)], got)
        ctx.note("bias_correction", {"layers": layers, "samples": sum(len(next(iter(b.values()))) for b in subset),
                                     "sqnr_db_after": json_db(after)})
    else:
        ctx.note("bias_correction", "off")
    ctx.note("float_ops", [n.name for n in float_ops])
    if kept:
        ctx.note("float_layers", [n.name for n in graph.nodes if n.name in kept])
    if binary:
        ctx.note("binary_layers", [n.name for n in binary])
    if steps:
        ctx.note("binary_activations", [n.name for n in steps])
    return graph


# ---- binary layers (issue 18, passes/binarize.py) -------------------------------------------------------------
def _binary_layers(int8_nodes: list[Node]) -> list[Node]:
    """The int8 weighted nodes whose float weights are binary ({-a, +a} per output channel, more than one weight
    each): _weight_scales gives them the scale a / 127 (or more, for the bias), so each channel gets two codes."""
    return [n for n in int8_nodes if weighted(n.op) and n.inputs[1].is_constant
            and n.inputs[1].size > n.inputs[1].shape[weight_axes(n)[0]]
            and binary_magnitudes(n.inputs[1].data, weight_axes(n)[0]) is not None]


def _check_binary(nodes: list[Node]) -> None:
    """Each binary layer's int8 weight still holds two codes +-k per channel, which the packed kernel needs."""
    for node in nodes:
        if binary_magnitudes(node.inputs[1].data, weight_axes(node)[0]) is None:
            raise MccError(f"'{node.name}': its binary weights did not quantize to two int8 codes per channel; "
                           "this is a bug in quantize_int8", node=node.name)


def _kept_float(graph: Graph, names: tuple) -> set[str]:
    """The names of option "float_layers", each checked to name a node of `graph`."""
    known = {n.name for n in graph.nodes}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise MccError(f"float_layers names {', '.join(repr(n) for n in unknown)}, which are not nodes of the graph "
                       "being quantized; take layer names from `mcc analyze` (or `mcc inspect --after "
                       "cross_layer_equalization`)", node=unknown[0])
    return set(names)


# ---- binary activations (issue 18, passes/binarize.py) --------------------------------------------------------
STEP_RATIO = 128  # the largest int8 -> int8 QUANTIZE scale ratio XNNPACK delegates (int8_quantize)


def _pin_binary_activations(graph: Graph, int8_nodes: list[Node], groups: _Groups) -> list[Node]:
    """Pin each int8 binary_activation's output to scale s_x / 128^2, zero point 127, and move the float
    magnitude into the weights of the layers reading it.

    x -> QUANTIZE(s_x / 128, zp 127) -> QUANTIZE(s_x / 128^2, zp 127) is 127 + 128 (x - zp_x) saturated, then
    127 + 128 (y - 127) saturated: 127 where x >= zp_x, -128 below (the first step alone leaves -1 at
    x = zp_x - 1), exact under TFLite's double rounding, XNNPACK's multiplier (256 * 128) and onnxruntime's table,
    since the ratio is a power of two. Real values {0, -255 s}: the magnitude is the int8 one, not the float 2, so
    the readers' binary weights take the ratio (still two values per channel) and the function stays the same."""
    steps = [n for n in int8_nodes if n.op == "binary_activation"]
    for node in steps:
        readers, wrong = _weighted_readers(graph, node.outputs[0])
        if wrong:
            raise MccError(f"binary_activation '{node.name}' feeds {', '.join(wrong) or 'the graph output'}, which "
                           "cannot take its int8 scale into weights; binarize puts it only before weighted layers",
                           node=node.name)
        s_x = np.float32(groups.params(node.inputs[0]).scale[0])
        scale = np.float32(s_x / np.float32(STEP_RATIO ** 2))
        groups.pin[groups.find(node.outputs[0])] = QuantParams(np.array([scale], np.float32), np.array([127]))
        magnitude = 255.0 * float(scale)
        ratio = np.float32(node.attrs["magnitude"] / magnitude)
        node.attrs["magnitude"] = magnitude
        for reader in readers:
            replace_constant(graph, reader, 1, reader.inputs[1].data * ratio)
    return steps


def _weighted_readers(graph: Graph, t: Tensor) -> tuple[list[Node], list[str]]:
    """The weighted layers reading `t` as their input, through single-input ops that share its parameters (the
    PAD of 0 that legalize_tflite puts before a strided conv, reshape, pools: scaling t scales their output, so
    the readers' weights can take the ratio); and the names of any other readers."""
    readers, wrong = [], ["the graph output"] if graph.is_output(t) else []
    for reader in graph.consumers(t):
        if weighted(reader.op) and reader.inputs[0] is t:
            readers.append(reader)
        elif traits(reader.op).shares_quant and [i for i in reader.inputs if i is not None and not i.is_constant] \
                == [t] and reader.attrs.get("value", 0) == 0:
            more, other = _weighted_readers(graph, reader.outputs[0])
            readers, wrong = readers + more, wrong + other
        else:
            wrong.append(reader.name)
    return readers, wrong


def _expand_binary_activations(graph: Graph, steps: list[Node]) -> None:
    """Each int8 binary_activation becomes the two QUANTIZEs that _pin_binary_activations describes."""
    for node in steps:
        x, y = node.inputs[0], node.outputs[0]
        name = graph.unique_name(f"{node.name}/requantize")
        first = Node("quantize", name, [x], [Tensor(name, x.shape, "int8", x.layout)], {"dtype": "int8"})
        first.outputs[0].quant = QuantParams(np.array([x.quant.scale[0] / np.float32(STEP_RATIO)], np.float32),
                                             np.array([127]))
        graph.replace_node(node, [first, Node("quantize", node.name, [first.outputs[0]], [y], {"dtype": "int8"})])
