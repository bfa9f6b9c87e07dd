"""mcc's op set, documented in one place: inputs, attributes, shape inference and MAC count of every op.

Conventions
- Shapes are physical. A 4-D activation's `layout` says where N, C, H, W are. Spatial ops read the layout of
  their input and their weights follow it: conv2d weight is OIHW under NCHW and OHWI under NHWC (TFLite);
  depthwise_conv2d weight is [C*m, 1, kh, kw] under NCHW and [1, kh, kw, C*m] under NHWC.
- `padding` of spatial ops is explicit [top, left, bottom, right]; backends turn it into SAME/VALID or a PAD op.
- Axis attributes (concat, mean, softmax, transpose, reshape shapes, pad) are physical; the layout pass remaps them.
- `activation` is the fused activation of a producing op: None, "relu", "relu6" or "relu_n1_to_1".
- Elementwise binary ops broadcast like numpy.

Unlike ONNX's large op set with many optional forms, each op here has one form; frontends normalise
(e.g. padding modes, ceil_mode) while lowering, so passes and backends see one spelling of each thing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .node import Node
from .traits import channel_axis, weighted

ACTIVATIONS = (None, "relu", "relu6", "relu_n1_to_1")

_REQ = object()  # marks a required attribute


@dataclass
class OpDef:
    name: str
    doc: str
    inputs: tuple[int, int]                     # min and max number of inputs
    attrs: dict = field(default_factory=dict)   # name -> default (or _REQ)
    infer: Callable | None = None               # node -> list of (shape, dtype, layout)
    macs: Callable = lambda node: 0


OPS: dict[str, OpDef] = {}


def op(name, doc, inputs=(1, 1), attrs=None, macs=None):
    def register(infer):
        OPS[name] = OpDef(name, doc, inputs, attrs or {}, infer, macs or (lambda node: 0))
        return infer
    return register


def nchw(t):
    """(N, C, H, W) of a 4-D activation, whatever its layout."""
    if t.layout == "NHWC":
        n, h, w, c = t.shape
    else:
        n, c, h, w = t.shape
    return n, c, h, w


def make4(n, c, h, w, layout):
    return (n, h, w, c) if layout == "NHWC" else (n, c, h, w)


def _same(node):
    x = node.inputs[0]
    return [(x.shape, x.dtype, x.layout)]


def _conv_out(size, k, stride, pad_before, pad_after, dilation):
    return (size + pad_before + pad_after - dilation * (k - 1) - 1) // stride + 1


def _spatial_out(node, kh, kw):
    x = node.inputs[0]
    n, c, h, w = nchw(x)
    (sh, sw), (dh, dw) = node.attrs["stride"], node.attrs.get("dilation", [1, 1])
    t, l, b, r = node.attrs["padding"]
    return n, c, _conv_out(h, kh, sh, t, b, dh), _conv_out(w, kw, sw, l, r, dw)


def conv_weight_dims(node):
    """(out_channels, in_channels_per_group, kh, kw) of a conv2d weight in either layout."""
    w = node.inputs[1]
    if node.inputs[0].layout == "NHWC":
        o, kh, kw, i = w.shape
    else:
        o, i, kh, kw = w.shape
    return o, i, kh, kw


def depthwise_weight_dims(node):
    """(channels*multiplier, kh, kw) of a depthwise weight in either layout."""
    w = node.inputs[1]
    if node.inputs[0].layout == "NHWC":
        _, kh, kw, cm = w.shape
    else:
        cm, _, kh, kw = w.shape
    return cm, kh, kw


_CONV_ATTRS = {"stride": [1, 1], "padding": [0, 0, 0, 0], "dilation": [1, 1], "activation": None}


@op("conv2d", "2-D convolution, any groups. Inputs: x, weight, optional bias [O].", (2, 3),
    {**_CONV_ATTRS, "groups": 1},
    macs=lambda n: math.prod(n.outputs[0].shape) * math.prod(conv_weight_dims(n)[1:]))
def _conv2d(node):
    x = node.inputs[0]
    o, i, kh, kw = conv_weight_dims(node)
    n, c, h, w = _spatial_out(node, kh, kw)
    if c != i * node.attrs["groups"]:
        raise ValueError(f"conv2d input has {c} channels but weight expects {i} x {node.attrs['groups']} groups")
    return [(make4(n, o, h, w, x.layout), x.dtype, x.layout)]


@op("depthwise_conv2d", "Depthwise convolution (one group per input channel, `multiplier` outputs each).",
    (2, 3), {**_CONV_ATTRS, "multiplier": 1},
    macs=lambda n: math.prod(n.outputs[0].shape) * math.prod(depthwise_weight_dims(n)[1:]))
def _depthwise(node):
    x = node.inputs[0]
    cm, kh, kw = depthwise_weight_dims(node)
    n, c, h, w = _spatial_out(node, kh, kw)
    if c * node.attrs["multiplier"] != cm:
        raise ValueError(f"depthwise_conv2d input has {c} channels, weight has {cm} (multiplier {node.attrs['multiplier']})")
    return [(make4(n, cm, h, w, x.layout), x.dtype, x.layout)]


@op("fully_connected", "y = x @ weight.T + bias over the last axis. Inputs: x [..., K], weight [O, K], bias [O].",
    (2, 3), {"activation": None},
    macs=lambda n: math.prod(n.outputs[0].shape) * n.inputs[1].shape[1])
def _fc(node):
    x, w = node.inputs[:2]
    if x.shape[-1] != w.shape[1]:
        raise ValueError(f"fully_connected input has {x.shape[-1]} features, weight expects {w.shape[1]}")
    return [(x.shape[:-1] + (w.shape[0],), x.dtype, None)]


def _broadcast(node):
    a, b = node.inputs
    shape = tuple(np.broadcast_shapes(a.shape, b.shape))
    var = a if not a.is_constant else b
    return [(shape, var.dtype, var.layout if len(shape) == 4 else None)]


for _name in ("add", "sub", "mul", "div"):
    op(_name, f"Elementwise {_name} with numpy broadcasting.", (2, 2), {"activation": None})(_broadcast)

for _name, _doc in [("relu", "max(x, 0)"), ("relu6", "min(max(x, 0), 6)"), ("sigmoid", "1 / (1 + exp(-x))"),
                    ("tanh", "tanh(x)"), ("hardswish", "x * relu6(x + 3) / 6"),
                    ("hardsigmoid", "relu6(x + 3) / 6"), ("silu", "x * sigmoid(x)"), ("identity", "x")]:
    op(_name, _doc)(_same)

op("leaky_relu", "x if x >= 0 else alpha * x", attrs={"alpha": _REQ})(_same)
op("clip", "min(max(x, min), max)", attrs={"min": _REQ, "max": _REQ})(_same)
op("prelu", "x if x >= 0 else alpha * x, alpha broadcast against x. Inputs: x, alpha.", (2, 2))(_same)
op("softmax", "softmax along `axis` with inverse temperature `beta`.", attrs={"axis": -1, "beta": 1.0})(_same)


@op("batch_norm", "Inference batch norm over the channel axis. Inputs: x, mean, var, weight, bias (all [C]); "
    "fold_batchnorm removes it.", (5, 5), {"eps": 1e-5})
def _batch_norm(node):
    x = node.inputs[0]
    c = nchw(x)[1] if len(x.shape) == 4 else x.shape[1]
    if any(t.shape != (c,) for t in node.inputs[1:]):
        raise ValueError(f"batch_norm statistics must have shape ({c},)")
    return [(x.shape, x.dtype, x.layout)]


_POOL_ATTRS = {"kernel": _REQ, "stride": _REQ, "padding": [0, 0, 0, 0], "activation": None}


def _pool(node):
    x = node.inputs[0]
    kh, kw = node.attrs["kernel"]
    n, c, h, w = _spatial_out(node, kh, kw)
    return [(make4(n, c, h, w, x.layout), x.dtype, x.layout)]


op("max_pool2d", "Max pooling; padded positions never win.", attrs=_POOL_ATTRS)(_pool)
op("avg_pool2d", "Average pooling; padded positions are excluded from the count (TFLite's rule) "
   "unless count_include_pad.", attrs={**_POOL_ATTRS, "count_include_pad": False})(_pool)


@op("mean", "Mean over `axes`.", attrs={"axes": _REQ, "keepdims": True})
def _mean(node):
    x = node.inputs[0]
    axes = [a % len(x.shape) for a in node.attrs["axes"]]
    if node.attrs["keepdims"]:
        shape = tuple(1 if i in axes else d for i, d in enumerate(x.shape))
    else:
        shape = tuple(d for i, d in enumerate(x.shape) if i not in axes)
    return [(shape, x.dtype, x.layout if len(shape) == 4 else None)]


@op("concat", "Concatenate along `axis`.", (1, 1 << 16), {"axis": _REQ})
def _concat(node):
    x = node.inputs[0]
    axis = node.attrs["axis"] % len(x.shape)
    for t in node.inputs[1:]:
        if len(t.shape) != len(x.shape) or any(a != b for i, (a, b) in enumerate(zip(t.shape, x.shape)) if i != axis):
            raise ValueError(f"concat inputs {x.shape} and {t.shape} differ outside axis {axis}")
    shape = list(x.shape)
    shape[axis] = sum(t.shape[axis] for t in node.inputs)
    var = next((t for t in node.inputs if not t.is_constant), x)
    return [(tuple(shape), var.dtype, var.layout)]


def _kept_layout(node, shape):
    """Reshape and transpose cannot know how their 4-D output's axes are named: they keep the layout that the
    frontend or the layout pass assigned to the output, so re-running shape inference does not erase it."""
    return node.outputs[0].layout if len(shape) == 4 else None


@op("reshape", "Reshape to `shape` (row-major order of the physical shape; one entry may be -1).",
    attrs={"shape": _REQ})
def _reshape(node):
    x = node.inputs[0]
    shape = list(node.attrs["shape"])
    if shape.count(-1) == 1:
        known = int(np.prod([d for d in shape if d != -1]))
        shape[shape.index(-1)] = x.size // max(known, 1)
    if int(np.prod(shape)) != x.size:
        raise ValueError(f"cannot reshape {x.shape} to {node.attrs['shape']}")
    return [(tuple(shape), x.dtype, _kept_layout(node, shape))]


@op("transpose", "Permute axes: output axis i is input axis perm[i].", attrs={"perm": _REQ})
def _transpose(node):
    x = node.inputs[0]
    shape = tuple(x.shape[p] for p in node.attrs["perm"])
    return [(shape, x.dtype, _kept_layout(node, shape))]


PAD_MODES = ("constant", "reflect", "edge")


@op("pad", "Padding; `pads` is [before_0, after_0, before_1, after_1, ...] per axis. `mode` 'constant' fills with "
    "`value`, 'reflect' mirrors the input without its edge element (numpy's reflect; each pad below the axis' size), "
    "'edge' repeats the edge element.", attrs={"pads": _REQ, "value": 0.0, "mode": "constant"})
def _pad(node):
    x = node.inputs[0]
    p = node.attrs["pads"]
    if node.attrs["mode"] not in PAD_MODES:
        raise ValueError(f"pad mode {node.attrs['mode']!r} is not one of {PAD_MODES}")
    if node.attrs["mode"] == "reflect" and any(max(p[2 * i:2 * i + 2]) >= d for i, d in enumerate(x.shape)):
        raise ValueError(f"reflect pads {p} must each be smaller than their axis of {x.shape}")
    shape = tuple(d + p[2 * i] + p[2 * i + 1] for i, d in enumerate(x.shape))
    return [(shape, x.dtype, x.layout)]


# TFLite's form of a clip with arbitrary bounds (its fused activations cover only 0/6, -1/1 and 0/1).
op("minimum", "Elementwise min(a, b) with numpy broadcasting; a NaN in `a` yields `b` (TFLite's a < b ? a : b).",
   (2, 2))(_broadcast)
op("maximum", "Elementwise max(a, b) with numpy broadcasting; a NaN in `a` yields `b` (TFLite's a > b ? a : b).",
   (2, 2))(_broadcast)


def broadcast_ones(shape, out) -> np.ndarray:
    """The ones that a multiply broadcasts a tensor of `shape` to `out` with, shaped like the expanded axes only:
    the IR has no broadcast op (ONNX Expand, TFLite BROADCAST_TO, torch's expand), and x * 1 is exact in float and
    in int8 (1.0 is exact in the constant's [0, 1] parameters). ValueError when `shape` does not broadcast."""
    aligned = (1,) * (len(out) - len(shape)) + tuple(shape)
    if len(aligned) != len(out) or any(a not in (1, o) for a, o in zip(aligned, out)):
        raise ValueError(f"cannot broadcast {list(shape)} to {list(out)}")
    return np.ones([1 if a == o else o for a, o in zip(aligned, out)], np.float32)


def infer_node(node: Node) -> None:
    """Fill the shapes, dtypes and layouts of a node's outputs; keeps quantization parameters already set."""
    d = OPS.get(node.op)
    if d is None:
        raise ValueError(f"node '{node.name}': unknown op '{node.op}'")
    lo, hi = d.inputs
    if any(i is None for i in node.inputs[:lo]) or (hi > 3 and None in node.inputs):
        raise ValueError(f"node '{node.name}' ({node.op}) lacks a required input")
    for k, default in d.attrs.items():
        if k not in node.attrs:
            if default is _REQ:
                raise ValueError(f"node '{node.name}' ({node.op}) lacks attribute '{k}'")
            node.attrs[k] = list(default) if isinstance(default, list) else default
    for t, (shape, dtype, layout) in zip(node.outputs, d.infer(node)):
        t.shape, t.dtype, t.layout = tuple(int(s) for s in shape), dtype, layout


def check_node(node: Node, rederive: bool = True) -> None:
    """Check a node's inputs, attributes and bias; re-derive its output shapes and compare them with what the graph
    holds (unless `rederive` is False: Graph.verify right after infer_shapes)."""
    d = OPS.get(node.op)
    if d is None:
        raise ValueError(f"node '{node.name}': unknown op '{node.op}'")
    lo, hi = d.inputs
    if not lo <= len(node.inputs) <= hi or any(i is None for i in node.inputs[:lo]):
        raise ValueError(f"node '{node.name}' ({node.op}) takes {lo}..{hi} inputs, has {len(node.inputs)}")
    unknown = set(node.attrs) - set(d.attrs)
    if unknown:
        raise ValueError(f"node '{node.name}' ({node.op}) has unknown attributes {sorted(unknown)}")
    if node.attrs.get("activation", None) not in ACTIVATIONS:
        raise ValueError(f"node '{node.name}': activation {node.attrs['activation']!r} is not one of {ACTIVATIONS}")
    if rederive:
        try:
            expected = d.infer(node)
        except (ValueError, IndexError) as e:
            raise ValueError(f"node '{node.name}' ({node.op}): {e}") from None
        for t, (shape, _, _) in zip(node.outputs, expected):
            if tuple(t.shape) != tuple(shape):
                raise ValueError(f"node '{node.name}' ({node.op}): output '{t.name}' has shape {t.shape}, inference "
                                 f"says {tuple(shape)}")
    if weighted(node.op) and node.input(2) is not None:
        out = node.outputs[0]
        out_ch = out.shape[-1 if node.op == "fully_connected" else channel_axis(out)]
        if node.inputs[2].shape != (out_ch,):
            raise ValueError(f"node '{node.name}' ({node.op}): bias has shape {node.inputs[2].shape}, expected ({out_ch},)")


def ops_with_attr(name: str) -> frozenset[str]:
    """The ops that take attribute `name` (e.g. every op with a fused `activation`)."""
    return frozenset(op for op, d in OPS.items() if name in d.attrs)


def macs(node: Node) -> int:
    return int(OPS[node.op].macs(node))


@op("quantize", "float -> integer (or integer -> integer requantization) with the output tensor's quantization "
    "parameters; `dtype` is the output dtype.", attrs={"dtype": "int8"})
def _quantize(node):
    x = node.inputs[0]
    return [(x.shape, node.attrs["dtype"], x.layout)]


@op("dequantize", "integer -> float32 with the input tensor's quantization parameters.")
def _dequantize(node):
    x = node.inputs[0]
    return [(x.shape, "float32", x.layout)]


# ---- slicing and resampling (the ONNX frontend's Slice, Split and Resize) -----------------------------------
@op("slice", "Strided slice: along axes[i], the elements range(starts[i], ends[i], steps[i]) in Python's "
    "sense. Frontends normalise the bounds: for a positive step 0 <= start, end <= dim; for a negative step "
    "-1 <= start, end <= dim - 1, where end -1 means through element 0. Axes are distinct and non-negative.",
    attrs={"starts": _REQ, "ends": _REQ, "axes": _REQ, "steps": _REQ})
def _slice(node):
    x = node.inputs[0]
    a = node.attrs
    shape = list(x.shape)
    if not len(a["starts"]) == len(a["ends"]) == len(a["axes"]) == len(a["steps"]):
        raise ValueError("slice needs one start, end and step per axis")
    if len(set(a["axes"])) != len(a["axes"]) or any(not 0 <= ax < len(shape) for ax in a["axes"]):
        raise ValueError(f"slice axes {a['axes']} must be distinct axes of a rank-{len(shape)} tensor")
    for ax, start, end, step in zip(a["axes"], a["starts"], a["ends"], a["steps"]):
        lo, hi = (0, shape[ax]) if step > 0 else (-1, shape[ax] - 1)
        if step == 0 or not (lo <= start <= hi and lo <= end <= hi):
            raise ValueError(f"slice bounds {start}:{end}:{step} of axis {ax} (size {shape[ax]}) are not normalised")
        shape[ax] = len(range(start, end, step))
    return [(tuple(shape), x.dtype, x.layout if len(shape) == 4 else None)]


@op("split", "Split along `axis` into consecutive parts of the given `sizes`, one output per part.",
    attrs={"axis": _REQ, "sizes": _REQ})
def _split(node):
    x = node.inputs[0]
    axis, sizes = node.attrs["axis"] % len(x.shape), node.attrs["sizes"]
    if sum(sizes) != x.shape[axis] or min(sizes, default=0) < 1 or len(sizes) != len(node.outputs):
        raise ValueError(f"split sizes {sizes} must be positive, sum to axis {axis}'s {x.shape[axis]} "
                         f"and number the node's {len(node.outputs)} outputs")
    return [(x.shape[:axis] + (s,) + x.shape[axis + 1:], x.dtype, x.layout) for s in sizes]


RESIZE_MODES = ("nearest", "bilinear")
RESIZE_COORDINATES = ("half_pixel", "align_corners", "asymmetric")
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


@op("resize", "Resample H and W of a 4-D activation to `size` [out_h, out_w], as ONNX Resize computes it. Each "
    "output index o maps to the input coordinate (o + 0.5) / (out / in) - 0.5 (half_pixel), o * (in - 1) / "
    "(out - 1) (align_corners; 0 when out is 1) or o / (out / in) (asymmetric), in float32. `nearest` rounds it by "
    "`nearest_mode` and clamps it to [0, in - 1]; `bilinear` clamps it and blends its two neighbours. TFLite's "
    "RESIZE_NEAREST_NEIGHBOR computes (half_pixel, round_prefer_ceil) with half_pixel_centers, (align_corners, "
    "round_prefer_ceil) with align_corners and (asymmetric, floor) with neither; RESIZE_BILINEAR computes the three "
    "coordinate modes with half_pixel_centers, align_corners and neither.",
    attrs={"mode": _REQ, "size": _REQ, "coordinate_transformation_mode": "half_pixel",
           "nearest_mode": "round_prefer_floor"})
def _resize(node):
    x, a = node.inputs[0], node.attrs
    if len(x.shape) != 4:
        raise ValueError(f"resize takes a 4-D activation, got shape {x.shape}")
    for key, allowed in (("mode", RESIZE_MODES), ("coordinate_transformation_mode", RESIZE_COORDINATES),
                         ("nearest_mode", NEAREST_MODES)):
        if a[key] not in allowed:
            raise ValueError(f"resize {key} {a[key]!r} is not one of {allowed}")
    n, c, _, _ = nchw(x)
    out_h, out_w = a["size"]
    if min(out_h, out_w) < 1:
        raise ValueError(f"resize size {a['size']} must be positive")
    return [(make4(n, c, out_h, out_w, x.layout), x.dtype, x.layout)]


# ---- math: elementwise unary ops and pow (issue 14, ops-math) ----------------------------------------------
for _name, _doc in [("neg", "-x"), ("abs", "|x|"), ("sqrt", "sqrt(x)"), ("rsqrt", "1 / sqrt(x)"),
                    ("square", "x * x"), ("exp", "exp(x)"), ("log", "natural log of x"), ("erf", "erf(x)")]:
    op(_name, _doc)(_same)

GELU_APPROXIMATIONS = ("none", "tanh")


@op("gelu", "x * Phi(x): 0.5 * x * (1 + erf(x / sqrt(2))) with approximate 'none'; with 'tanh', "
    "0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x^3))).", attrs={"approximate": "none"})
def _gelu(node):
    if node.attrs["approximate"] not in GELU_APPROXIMATIONS:
        raise ValueError(f"gelu approximate {node.attrs['approximate']!r} is not one of {GELU_APPROXIMATIONS}")
    return _same(node)


# The unary op that a constant exponent makes of pow (None: x itself), which frontends emit instead of pow.
POW_FOLDS = {2.0: "square", 0.5: "sqrt", -0.5: "rsqrt", 1.0: None}

op("pow", "a ** b elementwise with numpy broadcasting. Frontends fold a constant exponent of 2, 0.5, -0.5 and 1 "
   "into square, sqrt, rsqrt and nothing.", (2, 2))(_broadcast)


# ---- math: reductions (issue 14, ops-math), shaped like mean ----------------------------------------------
for _name, _doc in [("sum", "Sum over `axes`."), ("reduce_max", "Maximum over `axes`."),
                    ("reduce_min", "Minimum over `axes`.")]:
    op(_name, _doc, attrs={"axes": _REQ, "keepdims": True})(_mean)


# ---- math: local response normalization (issue 14, ops-math) -----------------------------------------------
@op("lrn", "Local response normalization across the channels of a 4-D activation, as ONNX LRN and torch's "
    "LocalResponseNorm: y = x / (bias + alpha / size * s) ** beta, s the sum of x^2 over channels "
    "c - (size - 1) / 2 .. c + (size - 1) / 2. The size is odd: ONNX's even window is off-centre, which onnxruntime refuses, torch centres "
    "the other way, and TFLite cannot express.", attrs={"size": _REQ, "alpha": 1e-4, "beta": 0.75, "bias": 1.0})
def _lrn(node):
    x, size = node.inputs[0], node.attrs["size"]
    if len(x.shape) != 4 or size < 1 or size % 2 == 0:
        raise ValueError(f"lrn takes a 4-D activation and an odd positive size, got shape {x.shape} and size {size} "
                         "(an even window is off-centre: onnxruntime refuses it and TFLite cannot express it)")
    return _same(node)
# ---- transposed convolution and batched matrix products (torch / ONNX decoders and attention) ----------------
def transpose_conv_weight_dims(node):
    """(out_channels_per_group, in_channels, kh, kw) of a transpose_conv2d weight in either layout: [C_in,
    C_out/groups, kh, kw] (ONNX's and torch's) under NCHW, [C_out/groups, kh, kw, C_in] under NHWC (TFLite's
    [C_out, kh, kw, C_in] when groups is 1; one permutation of the NCHW form for any groups)."""
    w = node.inputs[1]
    if node.inputs[0].layout == "NHWC":
        o, kh, kw, i = w.shape
    else:
        i, o, kh, kw = w.shape
    return o, i, kh, kw


def _per_input_pixel(node) -> int:
    """Products each input element takes part in: kh * kw * out_channels_per_group."""
    o, _, kh, kw = transpose_conv_weight_dims(node)
    return o * kh * kw


def transpose_conv_full(size, k, stride, dilation):
    """The uncropped output size of a transposed convolution along one axis."""
    return (size - 1) * stride + dilation * (k - 1) + 1


@op("transpose_conv2d", "Transposed 2-D convolution (the gradient of conv2d with respect to its input): each input "
    "pixel adds weight * x into a stride-spaced window of the output. `padding` [top, left, bottom, right] crops the "
    "full output ((in - 1) * stride + dilation * (k - 1) + 1), `output_padding` [h, w] extends it at the bottom and "
    "right. Inputs: x, weight, optional bias [C_out].", (2, 3),
    {**_CONV_ATTRS, "output_padding": [0, 0], "groups": 1},
    macs=lambda n: math.prod(n.inputs[0].shape) * _per_input_pixel(n))
def _transpose_conv2d(node):
    x = node.inputs[0]
    o, i, kh, kw = transpose_conv_weight_dims(node)
    n, c, h, w = nchw(x)
    if c != i:
        raise ValueError(f"transpose_conv2d input has {c} channels but weight expects {i}")
    if c % node.attrs["groups"]:
        raise ValueError(f"transpose_conv2d {c} input channels do not divide into {node.attrs['groups']} groups")
    (sh, sw), (dh, dw) = node.attrs["stride"], node.attrs["dilation"]
    t, l, b, r = node.attrs["padding"]
    oph, opw = node.attrs["output_padding"]
    out_h = transpose_conv_full(h, kh, sh, dh) - t - b + oph
    out_w = transpose_conv_full(w, kw, sw, dw) - l - r + opw
    if min(out_h, out_w) < 1 or min(t, l, b, r, oph, opw) < 0:
        raise ValueError(f"transpose_conv2d crop {node.attrs['padding']} and output padding "
                         f"{node.attrs['output_padding']} must be non-negative and leave an output")
    return [(make4(n, o * node.attrs["groups"], out_h, out_w, x.layout), x.dtype, x.layout)]




# ---- math: data movement (issue 14, ops-math) ---------------------------------------------------------------
INDEX_DTYPES = ("int32", "int64")


@op("gather", "Pick entries along `axis` of input 0 (data) at the integer input 1 (indices): constant indices "
    "(each in [0, dim); frontends normalise negative ones) picking from an activation, or run-time indices (a "
    "model's int32/int64 input, e.g. token ids) looking up a constant table, an embedding, whose out-of-range ids "
    "the kernels refuse at run time. The output's shape is data's with that axis replaced by indices'.",
    (2, 2), {"axis": _REQ})
def _gather(node):
    x, indices = node.inputs
    axis = node.attrs["axis"] % len(x.shape)
    if indices.is_constant:
        if not np.issubdtype(indices.data.dtype, np.integer):
            raise ValueError("gather takes integer indices")
        if indices.data.size and not (0 <= indices.data.min() and indices.data.max() < x.shape[axis]):
            raise ValueError(f"gather indices must lie in [0, {x.shape[axis]}) along axis {axis}")
    elif not x.is_constant or indices.dtype not in INDEX_DTYPES:
        raise ValueError(f"gather at run-time indices looks up a constant table with {' or '.join(INDEX_DTYPES)} "
                         f"indices; got {'a run-time table' if not x.is_constant else indices.dtype + ' indices'}")
    shape = x.shape[:axis] + tuple(indices.shape) + x.shape[axis + 1:]
    return [(shape, x.dtype, x.layout if len(shape) == 4 and len(indices.shape) == 1 else None)]


@op("tile", "Repeat the input `multiples[i]` times along each axis i.", attrs={"multiples": _REQ})
def _tile(node):
    x, m = node.inputs[0], node.attrs["multiples"]
    if len(m) != len(x.shape) or min(m, default=1) < 1:
        raise ValueError(f"tile multiples {m} must be positive, one per axis of {x.shape}")
    return [(tuple(d * k for d, k in zip(x.shape, m)), x.dtype, x.layout)]


DEPTH_TO_SPACE_MODES = ("DCR", "CRD")


def _blocks(node, to_space: bool):
    x, b = node.inputs[0], node.attrs["block_size"]
    if len(x.shape) != 4 or b < 1:
        raise ValueError(f"takes a 4-D activation and a positive block size, got {x.shape} and {b}")
    if node.attrs.get("mode", "DCR") not in DEPTH_TO_SPACE_MODES:
        raise ValueError(f"mode {node.attrs['mode']!r} is not one of {DEPTH_TO_SPACE_MODES}")
    n, c, h, w = nchw(x)
    if to_space and c % (b * b) or not to_space and (h % b or w % b):
        raise ValueError(f"block size {b} does not divide {'the channels' if to_space else 'H and W'} of {x.shape}")
    out = (n, c // (b * b), h * b, w * b) if to_space else (n, c * b * b, h // b, w // b)
    return [(make4(*out, x.layout), x.dtype, x.layout)]


op("depth_to_space", "Move channel blocks into b x b spatial blocks. Channel k of the input is (i, j, c) = "
   "(k // (b * C'), k // C' % b, k % C') in mode DCR (TFLite's DEPTH_TO_SPACE, ONNX's default) and (c, i, j) = "
   "(k // b^2, k // b % b, k % b) in CRD (torch's pixel_shuffle); it lands at row h * b + i, column w * b + j.",
   attrs={"block_size": _REQ, "mode": "DCR"})(lambda node: _blocks(node, True))
op("space_to_depth", "The inverse of depth_to_space in mode DCR (TFLite's SPACE_TO_DEPTH, ONNX's SpaceToDepth).",
   attrs={"block_size": _REQ})(lambda node: _blocks(node, False))


@op("batch_matmul", "a [..., M, K] @ b [..., K, N] with numpy broadcasting of the batch axes (attention's products, "
    "or a constant b of rank > 2). Inputs: a, b.", (2, 2),
    macs=lambda n: math.prod(n.outputs[0].shape) * n.inputs[0].shape[-1])
def _batch_matmul(node):
    a, b = node.inputs
    if min(len(a.shape), len(b.shape)) < 2 or a.shape[-1] != b.shape[-2]:
        raise ValueError(f"batch_matmul needs a [..., M, K] and b [..., K, N], got {a.shape} and {b.shape}")
    try:
        batch = tuple(np.broadcast_shapes(a.shape[:-2], b.shape[:-2]))
    except ValueError:
        raise ValueError(f"batch_matmul batch axes {a.shape[:-2]} and {b.shape[:-2]} do not broadcast") from None
    var = a if not a.is_constant else b
    return [(batch + (a.shape[-2], b.shape[-1]), var.dtype, None)]


# ---- binary activations (issue 18, passes/binarize.py) ---------------------------------------------------------
op("binary_activation", "0 where x >= 0, -magnitude where x < 0: (magnitude / 2) * (sign(x) - 1), the input of a "
   "layer with binary activations (binarize folds the constant half into the layer's bias; quantize_int8 writes it "
   "as two int8 QUANTIZEs, whose codes are exactly these two values).", attrs={"magnitude": _REQ})(_same)
