"""legalize_tflite: rewrite an NHWC IR graph into the subset that formats.tflite.writer can express.

The TensorFlow converter legalizes with MLIR rewrite patterns (TF -> TFL dialect) inside the converter, so
what it changed is visible only in the emitted file. mcc legalizes on its own IR as a named pass, so each
rewrite shows in `mcc inspect --after legalize_tflite`, is counted in the pass notes, and is executed by the
reference runtime before any file exists. It runs on float graphs, before quantization, so that the
quantizer calibrates the tensors these rewrites introduce.

Rewrites
- explicit padding of conv2d / depthwise_conv2d / pools becomes SAME or VALID when it equals what TFLite
  computes (after dropping padding no window reaches); otherwise an explicit `pad` and VALID. TFLite's SAME
  puts the odd pixel after (bottom/right), PyTorch's padding is symmetric, so stride 2 on even sizes usually
  needs the `pad`. max_pool2d pads with the lowest value (PADV2) so padding never wins; avg_pool2d, whose
  TFLite form excludes padding from the count, gets zero padding and, when the IR excludes padding too, a
  multiplication by kh*kw / count per output position;
- conv2d and depthwise_conv2d without bias get a zero bias (LiteRT needs one);
- conv2d with one group per input channel becomes depthwise_conv2d (LiteRT 2.3 runs other grouped CONV_2D
  natively, float and int8, in both its default and BUILTIN_REF kernels, so those are kept);
- hardsigmoid -> add(x, 3) with fused relu6, then mul by 1/6; silu -> x * sigmoid(x); identity is removed;
  clip(0, 6) -> relu6, clip(0, inf) -> relu, clip(-1, 1) and clip(0, 1) stay (RELU_N1_TO_1 / RELU_0_TO_1),
  other clips -> maximum / minimum; batch_norm -> mul and add by per-channel constants;
- softmax over another axis than the last is wrapped in two transposes that swap that axis with the last;
- nearest resize takes the coordinate mode and rounding of the TFLite flags (RESIZE_NEAREST_NEIGHBOR has three
  settings, each with its own rounding) whose source rows and columns, computed as TFLite computes them in
  float32, equal the IR's for this node's sizes: ONNX's default (half_pixel, round_prefer_floor) upsampling by 2
  becomes half_pixel_centers, for instance. Float rounding makes even a matching pair differ at a few sizes
  (half_pixel 2 -> 41), so every nearest resize is checked; one that no setting reproduces is refused.
  Bilinear resize needs nothing: its coordinates differ from TFLite's by float rounding only.
- depth_to_space in mode CRD (torch's pixel_shuffle) becomes a gather that puts the channels in DCR order, then
  DCR (TFLite's DEPTH_TO_SPACE). A reshape / 6-D transpose / reshape would compute the same, but its 6-D tensors
  have no layout, so the x86 targets' to_nchw could not move the result back to NCHW without a transpose;
- x * 0.5 * (1 + erf(x / sqrt(2))), in the association orders torch.onnx.export writes (and with x * (1 / sqrt(2))),
  becomes gelu (TFLite has GELU but no ERF); an erf outside that formula stays and the TFLite writer refuses it.
  The TFLite converter matches the same formula in its MLIR patterns; mcc does it on the IR, where it also gives
  the ONNX targets one Gelu instead of five operators.
- transpose_conv2d whose crop is not what TRANSPOSE_CONV's SAME or VALID computes is computed uncropped and cut
  by a `slice`.
"""

from __future__ import annotations

import math

import numpy as np
from ai_edge_litert.schema_py_generated import Padding

from ..formats.tflite.opmap import (TFLITE_FLAGS, TFLITE_NEAREST, f32, kernel_hw, padding_mode,
                                    transpose_conv_padding_mode)
from ..errors import MccError
from ..ir import Graph, Node, Tensor
from ..ir.ops import infer_node, transpose_conv_full
from ..runtime.kernels.int8_resize import tflite_nearest_indices
from ..runtime.kernels.resize import nearest_indices, source_coordinates
from .manager import PassContext, register_pass

_INF = float("inf")


def _before(graph: Graph, node: Node, op: str, inputs, attrs: dict, suffix: str) -> Tensor:
    """Insert a node that computes part of `node` just before it; returns its output tensor."""
    new = graph.add_node(op, inputs, attrs, name=f"{node.name}/{suffix}", index=graph.nodes.index(node),
                         source=node.source)
    return new.outputs[0]


def _become(node: Node, op: str, inputs, attrs: dict) -> None:
    """Turn `node` into `op` in place: its name and output tensors stay, so consumers and graph outputs do too."""
    node.op, node.inputs, node.attrs = op, list(inputs), dict(attrs)
    infer_node(node)


def _scalar(graph: Graph, node: Node, value: float, suffix: str) -> Tensor:
    return graph.constant(f"{node.name}/{suffix}", np.array(value, np.float32))


# ---- padding -----------------------------------------------------------------------------------------------
def _used_padding(node: Node) -> list[int]:
    """The explicit padding with the rows/columns after the input that no window reaches dropped."""
    x = node.inputs[0]
    khw = kernel_hw(node.op, node.attrs, node.inputs)
    stride, dilation = node.attrs["stride"], node.attrs.get("dilation", [1, 1])
    out = node.outputs[0].shape[1:3]
    t, l, b, r = node.attrs["padding"]
    after = [min(pad, max(0, (o - 1) * s + (k - 1) * d + 1 - size - before))
             for pad, o, s, k, d, size, before in zip((b, r), out, stride, khw, dilation, x.shape[1:3], (t, l))]
    return [t, l, after[0], after[1]]


def _explicit_pad(graph: Graph, node: Node, value: float) -> Tensor:
    x = node.inputs[0]
    t, l, b, r = node.attrs["padding"]
    return _before(graph, node, "pad", [x], {"pads": [0, 0, t, b, l, r, 0, 0], "value": value}, "pad")


def _avg_count_correction(node: Node) -> np.ndarray:
    """kh*kw / (input positions in each window), shaped [1, OH, OW, 1]: turns a zero-padded average into
    one that excludes padding."""
    (h, w), (kh, kw) = node.inputs[0].shape[1:3], node.attrs["kernel"]
    (sh, sw), (t, l, _, _) = node.attrs["stride"], node.attrs["padding"]
    oh, ow = node.outputs[0].shape[1:3]
    y0, x0 = np.arange(oh) * sh - t, np.arange(ow) * sw - l
    rows = np.minimum(y0 + kh, h) - np.maximum(y0, 0)
    cols = np.minimum(x0 + kw, w) - np.maximum(x0, 0)
    count = np.maximum(np.outer(rows, cols), 1)
    return (kh * kw / count).astype(np.float32).reshape(1, oh, ow, 1)


def _padding(graph: Graph, node: Node, ctx: PassContext) -> None:
    x = node.inputs[0]
    explicit = node.attrs["padding"] != [0, 0, 0, 0]
    node.attrs["padding"] = _used_padding(node)
    include_pad = node.attrs.get("count_include_pad", False) and node.attrs["padding"] != [0, 0, 0, 0]
    khw = kernel_hw(node.op, node.attrs, node.inputs)
    dilation = node.attrs.get("dilation", [1, 1])
    mode = padding_mode(node.attrs["padding"], x.shape[1:3], khw, node.attrs["stride"], dilation)
    if node.op == "avg_pool2d":
        node.attrs["count_include_pad"] = False  # exact for VALID and TFLite's SAME; handled below otherwise
    if mode is not None and not include_pad:
        ctx.count("padding_to_same" if mode == Padding.SAME else "padding_to_valid", int(explicit))
        return
    ctx.count("padding_to_pad_op")
    if node.op == "avg_pool2d" and not include_pad:
        correction = graph.constant(f"{node.name}/count", _avg_count_correction(node))
        padded = _explicit_pad(graph, node, 0.0)
        attrs = {**node.attrs, "padding": [0, 0, 0, 0], "activation": None}
        pooled = _before(graph, node, "avg_pool2d", [padded], attrs, "sum")
        _become(node, "mul", [pooled, correction], {"activation": node.attrs["activation"]})
        return
    # The lowest float never wins a max, so it is a neutral padding for max_pool (TFLite's PADV2).
    lowest = f32(np.finfo(np.dtype(x.dtype)).min)
    node.inputs[0] = _explicit_pad(graph, node, lowest if node.op == "max_pool2d" else 0.0)
    node.attrs["padding"] = [0, 0, 0, 0]
    infer_node(node)


def _conv2d(graph: Graph, node: Node, ctx: PassContext) -> None:
    x, w = node.inputs[:2]
    channels = x.shape[3]
    if channels > 1 and node.attrs["groups"] == channels and w.is_constant:
        # OHWI [C*m, kh, kw, 1] -> [1, kh, kw, C*m]: output channel c*m + j still reads input channel c.
        dw = graph.constant(f"{w.name}/depthwise", np.ascontiguousarray(w.data.transpose(3, 1, 2, 0)))
        attrs = {k: node.attrs[k] for k in ("stride", "padding", "dilation", "activation")}
        _become(node, "depthwise_conv2d", [x, dw] + node.inputs[2:],
                {**attrs, "multiplier": w.shape[0] // channels})
        ctx.count("grouped_conv_to_depthwise")
    _conv_like(graph, node, ctx)


def _conv_like(graph: Graph, node: Node, ctx: PassContext) -> None:
    """A zero bias where there is none (LiteRT's reference CONV_2D refuses a missing bias and XNNPACK's
    DEPTHWISE_CONV_2D crashes on one), then the padding."""
    if node.input(2) is None:
        out = node.outputs[0].shape[3]
        node.inputs[2:] = [graph.constant(f"{node.name}/bias", np.zeros(out, np.dtype(node.inputs[0].dtype)))]
        ctx.count("zero_bias_added")
    _padding(graph, node, ctx)


# ---- ops TFLite lacks ------------------------------------------------------------------------------------
def _identity(graph: Graph, node: Node, ctx: PassContext) -> None:
    graph.bypass(node)
    ctx.count("identity_removed")


def _hardsigmoid(graph: Graph, node: Node, ctx: PassContext) -> None:
    x = node.inputs[0]
    shifted = _before(graph, node, "add", [x, _scalar(graph, node, 3.0, "three")], {"activation": "relu6"}, "relu6")
    _become(node, "mul", [shifted, _scalar(graph, node, 1.0 / 6.0, "sixth")], {"activation": None})
    ctx.count("hardsigmoid_decomposed")


def _silu(graph: Graph, node: Node, ctx: PassContext) -> None:
    x = node.inputs[0]
    gate = _before(graph, node, "sigmoid", [x], {}, "sigmoid")
    _become(node, "mul", [x, gate], {"activation": None})
    ctx.count("silu_decomposed")


def _clip(graph: Graph, node: Node, ctx: PassContext) -> None:
    lo, hi = float(node.attrs["min"]), float(node.attrs["max"])
    x = node.inputs[0]
    if (lo, hi) in ((-1.0, 1.0), (0.0, 1.0)):
        return
    ctx.count("clip_rewritten")
    if (lo, hi) == (0.0, 6.0):
        _become(node, "relu6", [x], {})
    elif (lo, hi) == (0.0, _INF):
        _become(node, "relu", [x], {})
    elif lo == -_INF and hi == _INF:
        graph.bypass(node)
    elif hi == _INF:
        _become(node, "maximum", [x, _scalar(graph, node, lo, "min")], {})
    elif lo == -_INF:
        _become(node, "minimum", [x, _scalar(graph, node, hi, "max")], {})
    else:
        floor = _before(graph, node, "maximum", [x, _scalar(graph, node, lo, "min")], {}, "floor")
        _become(node, "minimum", [floor, _scalar(graph, node, hi, "max")], {})


def _batch_norm(graph: Graph, node: Node, ctx: PassContext) -> None:
    x, mean, var, weight, bias = node.inputs
    if not all(t.is_constant for t in node.inputs[1:]):
        raise MccError("batch_norm with computed statistics has no TFLite form", node=node.name)
    scale = weight.data.astype(np.float64) / np.sqrt(var.data.astype(np.float64) + node.attrs["eps"])
    shift = bias.data.astype(np.float64) - mean.data * scale
    shape = (-1,) if x.layout == "NHWC" or len(x.shape) == 2 else (-1,) + (1,) * (len(x.shape) - 2)
    k = graph.constant(f"{node.name}/scale", scale.astype(np.float32).reshape(shape))
    c = graph.constant(f"{node.name}/shift", shift.astype(np.float32).reshape(shape))
    scaled = _before(graph, node, "mul", [x, k], {"activation": None}, "scaled")
    _become(node, "add", [scaled, c], {"activation": None})
    ctx.count("batch_norm_decomposed")


def _softmax(graph: Graph, node: Node, ctx: PassContext) -> None:
    x = node.inputs[0]
    rank, axis = len(x.shape), node.attrs["axis"] % len(x.shape)
    if axis == rank - 1:
        return
    perm = list(range(rank))
    perm[axis], perm[-1] = perm[-1], perm[axis]
    moved = _before(graph, node, "transpose", [x], {"perm": perm}, "to_last")
    soft = _before(graph, node, "softmax", [moved], {"axis": -1, "beta": node.attrs["beta"]}, "softmax")
    _become(node, "transpose", [soft], {"perm": perm})
    ctx.count("softmax_axis_transposed")


def _resize(graph: Graph, node: Node, ctx: PassContext) -> None:
    a = node.attrs
    if a["mode"] != "nearest":
        return
    mode, rounding = a["coordinate_transformation_mode"], a["nearest_mode"]
    axes = list(zip(("row", "column"), a["size"], node.inputs[0].shape[1:3]))
    want = [nearest_indices(source_coordinates(out, size, mode), size, rounding) for _, out, size in axes]
    for flags in [mode] + [m for m in TFLITE_FLAGS if m != mode]:  # the node's own mode first
        if all(np.array_equal(w, tflite_nearest_indices(out, size, flags)) for w, (_, out, size) in zip(want, axes)):
            if (flags, TFLITE_NEAREST[flags]) != (mode, rounding):
                a.update(coordinate_transformation_mode=flags, nearest_mode=TFLITE_NEAREST[flags])
                ctx.count("resize_nearest_respelled")
            return
    for w, (axis, out, size) in zip(want, axes):
        tflite = tflite_nearest_indices(out, size, mode)
        if not np.array_equal(w, tflite):
            o = int(np.flatnonzero(w != tflite)[0])
            raise MccError(f"nearest resize of {size} {axis}s to {out} ({mode}, {rounding}) reads input {axis} {w[o]} "
                           f"at output {axis} {o}, and no setting of TFLite's RESIZE_NEAREST_NEIGHBOR reads the same "
                           f"{axis}s (with {mode} coordinates it reads {tflite[o]}); resize by an integer factor, to "
                           "another size, or bilinearly", node=node.name)


# ---- gelu from its erf formula (issue 14, ops-math) --------------------------------------------------------
def _scalar_value(t: Tensor | None) -> float | None:
    return float(t.data.reshape(-1)[0]) if t is not None and t.is_constant and t.size == 1 else None


def _near(value: float | None, want: float) -> bool:
    return value is not None and abs(value - want) <= 1e-6 * abs(want)


def _binary_with(node: Node | None, op: str, t: Tensor) -> Tensor | None:
    """The other operand of `node` when it is `op` without a fused activation and reads `t`, else None."""
    if node is None or node.op != op or node.attrs.get("activation") is not None:
        return None
    if not any(i is t for i in node.inputs):
        return None
    a, b = node.inputs
    return b if a is t else a


def _gelu_from_erf(graph: Graph, erf: Node, ctx: PassContext) -> None:
    """Match, around `erf`, x * 0.5 * (1 + erf(x / sqrt(2))) as ((x * A) * 0.5), ((x * 0.5) * A) or (x * (A * 0.5))
    with A = 1 + erf(...) (mul and add operands in either order), and make its last mul a gelu of x."""
    scaled = graph.producer(erf.inputs[0])
    if scaled is None or scaled.op not in ("div", "mul") or graph.only_reader(scaled.outputs[0]) is not erf:
        return
    x, c = scaled.inputs
    if scaled.attrs.get("activation") is not None or x.is_constant or \
            not _near(_scalar_value(c), math.sqrt(2) if scaled.op == "div" else 1 / math.sqrt(2)):
        return
    plus = graph.only_reader(erf.outputs[0])
    if not _near(_scalar_value(_binary_with(plus, "add", erf.outputs[0])), 1.0):
        return
    first = graph.only_reader(plus.outputs[0])
    other = _binary_with(first, "mul", plus.outputs[0])
    if other is None:
        return
    chain = [scaled, erf, plus]
    if other is x or _near(_scalar_value(other), 0.5):
        last = graph.only_reader(first.outputs[0])
        want = 0.5 if other is x else None
        rest = _binary_with(last, "mul", first.outputs[0])
        if rest is None or (rest is not x if want is None else not _near(_scalar_value(rest), want)):
            return
        chain.append(first)
    else:
        half = graph.producer(other)
        if _binary_with(half, "mul", x) is None or not _near(_scalar_value(_binary_with(half, "mul", x)), 0.5) \
                or graph.only_reader(other) is not first:
            return
        chain.append(half)
        last = first
    for node in chain:
        graph.remove_node(node)
    _become(last, "gelu", [x], {"approximate": "none"})
    ctx.count("gelu_from_erf")
# ---- transposed convolution ------------------------------------------------------------------------------------
def _transpose_conv2d(graph: Graph, node: Node, ctx: PassContext) -> None:
    """TRANSPOSE_CONV crops only what SAME or VALID imply (transpose_conv_padding_mode): another crop is computed
    uncropped (VALID, extended at the end where the output reaches past the full size) and cut by a SLICE, as
    onnx2tf does with a STRIDED_SLICE."""
    if transpose_conv_padding_mode(node) is not None:
        return
    a, x, out = node.attrs, node.inputs[0], node.outputs[0].shape
    khw = kernel_hw(node.op, a, node.inputs)
    full = [transpose_conv_full(x.shape[1 + i], khw[i], a["stride"][i], a["dilation"][i]) for i in range(2)]
    top_left = a["padding"][:2]
    extend = [max(0, top_left[i] + out[1 + i] - full[i]) for i in range(2)]
    whole = _before(graph, node, "transpose_conv2d", node.inputs,
                    {**a, "padding": [0, 0, 0, 0], "output_padding": extend}, "uncropped")
    cut = [(1 + i, top_left[i], top_left[i] + out[1 + i]) for i in range(2)
           if (top_left[i], top_left[i] + out[1 + i]) != (0, full[i] + extend[i])]
    _become(node, "slice", [whole], {"starts": [c[1] for c in cut], "ends": [c[2] for c in cut],
                                     "axes": [c[0] for c in cut], "steps": [1] * len(cut)})
    ctx.count("transpose_conv_crop_sliced")


def _depth_to_space(graph: Graph, node: Node, ctx: PassContext) -> None:
    """DCR channel (i * b + j) * C' + c is CRD channel c * b^2 + i * b + j."""
    if node.attrs["mode"] != "CRD":
        return
    x, b = node.inputs[0], node.attrs["block_size"]
    groups = x.shape[3] // (b * b)
    order = np.arange(x.shape[3], dtype=np.int32).reshape(groups, b * b).T.reshape(-1)
    dcr = _before(graph, node, "gather", [x, graph.constant(f"{node.name}/dcr_order", order)], {"axis": 3}, "dcr")
    _become(node, "depth_to_space", [dcr], {"block_size": b, "mode": "DCR"})
    ctx.count("depth_to_space_crd_to_dcr")


RULES = {
    "conv2d": _conv2d,
    "depthwise_conv2d": _conv_like,
    "max_pool2d": _padding,
    "avg_pool2d": _padding,
    "identity": _identity,
    "hardsigmoid": _hardsigmoid,
    "silu": _silu,
    "clip": _clip,
    "batch_norm": _batch_norm,
    "softmax": _softmax,
    "resize": _resize,
    "erf": _gelu_from_erf,
    "transpose_conv2d": _transpose_conv2d,
    "depth_to_space": _depth_to_space,
}


@register_pass("legalize_tflite", requires=("float", "nhwc"))
def legalize_tflite(graph: Graph, ctx: PassContext) -> Graph:
    """Rewrite `graph` (NHWC) in place into ops and paddings that TFLite's builtins express exactly."""
    for node in list(graph.nodes):
        rule = RULES.get(node.op)
        if rule is not None:
            rule(graph, node, ctx)
    return graph
