"""The one table between mcc IR ops and ONNX operators, read by the writer and by the readback.

Each row says which ONNX operator an IR op becomes, in which form ("float": plain ONNX; "int8": the operator that
onnxruntime runs in integer arithmetic; "any": the same operator for both, e.g. data movement), how the node is
written (`encode`, against the writer's `Emit` interface) and how the operator comes back (`decode`, from a
readback `Site`). Keeping both directions in one row is what makes write -> read an identity, up to spellings
that compute the same thing: a fused activation whose int8 clamp is a no-op is not written (it reads back as
none), a float softmax with beta != 1 comes back as mul + softmax, an int8 pad value as the real of its code.

Why these int8 operators: see formats/onnx/writer.py, which records the measurements. In short, QLinearConv,
com.microsoft QGemm, QLinearAdd, QLinearMul, QLinearAveragePool, QLinearGlobalAveragePool and QLinearSoftmax, and
MaxPool / Pad / Concat / Reshape / Transpose / Slice / Split / Resize (nearest) / Min / Max / Clip on int8, run as
such at every graph optimization level. onnxruntime has no integer kernel for the int8 activations TFLite has
(hardswish, relu6 with requantization, tanh, requantize, ...): those are written as a 256-entry table indexed by
the input code (Cast to int32 + Gather, which is integer data movement), inside a model-local function of domain
"ai.mcc" named after the IR op, so the file says what the table computes and the readback knows the op. The tables, and the int8 bounds of
fused activations, are computed once by mcc's runtime with the TABLE_RULES rule set (TFLite's arithmetic), so for
those ops the ONNX file and the arm-int8 TFLite file compute the same integers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np
from onnx import TensorProto

from ...errors import MccError
from ...ir import OPS, Node, QuantParams, Tensor

OPSET = 21                   # ai.onnx opset: every operator used has a CPU kernel in onnxruntime 1.32 at 21
IR_VERSION = 10              # the ONNX IR version of opset 21 (onnx 1.16)
MS_DOMAIN = "com.microsoft"  # onnxruntime's contrib operators (QGemm, QLinearAdd, ...), opset 1
MCC_DOMAIN = "ai.mcc"        # mcc's model-local functions (lookup tables), opset 1
TABLE_RULES = "litert-ref@2.3.0"

DTYPE_TO_ONNX = {"float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16, "int8": TensorProto.INT8,
                 "uint8": TensorProto.UINT8, "int16": TensorProto.INT16, "int32": TensorProto.INT32,
                 "int64": TensorProto.INT64, "bool": TensorProto.BOOL}
DTYPE_FROM_ONNX = {v: k for k, v in DTYPE_TO_ONNX.items()}

# IR ops written as a lookup table in int8, with the function attributes that carry their IR attributes.
TABLE_OPS = {"requantize": (), "relu": (), "relu6": (), "clip": ("min", "max"), "leaky_relu": ("alpha",),
             "sigmoid": (), "tanh": (), "hardswish": ()}


def is_int8(node: Node) -> bool:
    """The node computes on int8 activations (its first input or output is int8): it takes an int8 row."""
    return any(t is not None and t.dtype == "int8" for t in (node.input(0), node.outputs[0]))


def table_op(node: Node) -> str:
    """The table function's name: the IR op, with an int8 -> int8 quantize called "requantize"."""
    return "requantize" if node.op == "quantize" else node.op


def takes_activation(op: str) -> bool:
    """Whether the IR op has a fused `activation` attribute (conv, fully_connected, add, pools, ...)."""
    return op in OPS and "activation" in OPS[op].attrs


# ---- the two sides of a row ------------------------------------------------------------------------------
class Emit(Protocol):
    """What an encoder may ask of the writer (formats.onnx.writer implements it)."""

    def name(self, t: Tensor) -> str: ...                                 # an IR tensor's value name
    def param(self, base: str, data: np.ndarray) -> str: ...             # a constant operand (shape, axes, ...)
    def qparams(self, t: Tensor) -> tuple[str, str]: ...                  # (scale, zero point) initializers
    def temp(self, like: Tensor, base: str) -> str: ...                   # an intermediate value shaped like `like`
    def node(self, op_type: str, inputs: list[str], outputs: list[str], name: str, domain: str = "",
             **attrs) -> None: ...
    def table(self, node: Node) -> str: ...                               # the 256-entry table initializer
    def activation_bounds(self, op: str, activation: str | None, q: QuantParams) -> tuple[int, int]: ...


@dataclass
class Site:
    """What the readback knows about one ONNX node when it turns it back into an IR node."""

    op_type: str
    attrs: dict                    # ONNX attributes as Python values
    inputs: list                   # IR tensors of the ONNX inputs (None for an omitted optional input)

    def array(self, i: int) -> np.ndarray:
        t = self.inputs[i]
        if t is None or not t.is_constant:
            raise MccError(f"{self.op_type} input {i} must be a constant initializer in files mcc writes")
        return t.data


@dataclass(frozen=True)
class Row:
    ir_ops: tuple[str, ...]
    form: str                                          # "float", "int8" or "any"
    onnx: tuple[str, str]                              # (domain, op_type) that `encode` writes and `decode` reads
    encode: Callable[[Emit, Node], None]
    decode: Callable[[Site], tuple[str, list, dict]]   # -> (IR op, IR inputs, IR attributes)
    when: Callable[[Node], bool] = lambda node: True


# ---- fused activations -------------------------------------------------------------------------------------
_FLOAT_ACTIVATION = {"relu": ("Relu", None), "relu6": ("Clip", (0.0, 6.0)), "relu_n1_to_1": ("Clip", (-1.0, 1.0))}


def f32(value) -> float:
    """formats.tflite.opmap.f32: the shortest decimal naming the same float32, as IR attributes spell it. Imported when a
    file is read, so that importing the readback needs neither the TFLite schema nor anything but numpy and onnx."""
    from ..tflite.opmap import f32 as shortest

    return shortest(value)


# The IR ops whose ONNX operator (Conv, MaxPool) takes explicit `pads`, so a zero Pad before them folds in; not
# AveragePool, whose count_include_pad would count the folded zeros.
PADS_ATTRIBUTE = ("conv2d", "depthwise_conv2d", "max_pool2d")


def _scalar(data, dtype) -> np.ndarray:
    return np.asarray(data, dtype).reshape(())


def _with_activation(e: Emit, node: Node, main: Callable[[str], None]) -> None:
    """Write the node's operator by `main(output name)`, followed by its fused activation when it has one:
    Relu / Clip in float; in int8 a Clip to the activation's quantized bounds, omitted when they are the whole
    int8 range (then the requantizing operator's own saturation is the activation)."""
    y, act = node.outputs[0], node.attrs.get("activation")
    if act is not None and y.dtype == "int8":
        lo, hi = e.activation_bounds(node.op, act, y.quant)
        if (lo, hi) == (-128, 127):
            act = None
    if act is None:
        main(e.name(y))
        return
    pre = e.temp(y, f"{node.name}/pre_{act}")
    main(pre)
    if y.dtype == "int8":
        bounds = [e.param(f"{node.name}/{k}", _scalar(v, np.int8)) for k, v in (("min", lo), ("max", hi))]
        e.node("Clip", [pre, *bounds], [e.name(y)], f"{node.name}/{act}")
        return
    op_type, limits = _FLOAT_ACTIVATION[act]
    bounds = [e.param(f"{node.name}/{k}", _scalar(v, np.float32)) for k, v in zip(("min", "max"), limits or ())]
    e.node(op_type, [pre, *bounds], [e.name(y)], f"{node.name}/{act}")


# ---- spatial ops -------------------------------------------------------------------------------------------
def _window(node: Node) -> dict:
    """strides, pads ([top, left, bottom, right] is ONNX's [h_begin, w_begin, h_end, w_end]) and dilations."""
    a = node.attrs
    attrs = {"strides": list(a["stride"]), "pads": list(a["padding"])}
    if "dilation" in a:
        attrs["dilations"] = list(a["dilation"])
    return attrs


def _window_back(attrs: dict) -> dict:
    return {"stride": list(attrs.get("strides", [1, 1])), "padding": list(attrs.get("pads", [0, 0, 0, 0]))}


def _conv_attrs(node: Node) -> dict:
    w = node.inputs[1]
    groups = node.attrs["groups"] if node.op == "conv2d" else node.inputs[0].shape[1]
    return {**_window(node), "group": groups, "kernel_shape": list(w.shape[2:])}


def _conv_back(attrs: dict, x: Tensor, w: Tensor) -> tuple[str, dict]:
    """conv2d, or depthwise_conv2d when there is one group per input channel (legalize_tflite's rule)."""
    group, channels = attrs.get("group", 1), x.shape[1]
    out = {**_window_back(attrs), "dilation": list(attrs.get("dilations", [1, 1]))}
    if group > 1 and group == channels:
        return "depthwise_conv2d", {**out, "multiplier": w.shape[0] // channels}
    return "conv2d", {**out, "groups": group}


def _conv(e: Emit, node: Node) -> None:
    inputs = [e.name(t) for t in node.inputs if t is not None]
    _with_activation(e, node, lambda y: e.node("Conv", inputs, [y], node.name, **_conv_attrs(node)))


def _conv_decode(site: Site):
    op, attrs = _conv_back(site.attrs, *site.inputs[:2])
    return op, site.inputs[:3], attrs


def _weight_qparams(e: Emit, w: Tensor) -> list[str]:
    if w.quant is None or np.any(w.quant.zero_point != 0):
        raise MccError(f"weight '{w.name}' needs symmetric int8 quantization (zero point 0) for onnxruntime's "
                       "integer kernels; run the quantize_int8 pass")
    return list(e.qparams(w))


def _bias(e: Emit, node: Node) -> str:
    b = node.input(2)
    if b is not None and b.dtype != "int32":
        raise MccError(f"an int8 {node.op} needs an int32 bias (scale s_in * s_w), got {b.dtype}", node=node.name)
    return "" if b is None else e.name(b)


def _qlinear_conv(e: Emit, node: Node) -> None:
    x, w, y = node.inputs[0], node.inputs[1], node.outputs[0]
    inputs = [e.name(x), *e.qparams(x), e.name(w), *_weight_qparams(e, w), *e.qparams(y), _bias(e, node)]
    _with_activation(e, node, lambda out: e.node("QLinearConv", inputs, [out], node.name, **_conv_attrs(node)))


def _weight_quant_back(site: Site, x: int, w: int, bias: int | None) -> None:
    """Per-channel weight parameters from the operator's inputs (axis 0 when there is one scale per output
    channel); the int32 bias has scale float32(s_in) * s_w and zero point 0, as ONNX defines it."""
    scale, zero_point = site.array(w + 1), site.array(w + 2)
    per_channel = scale.ndim == 1
    site.inputs[w].quant = QuantParams(scale.reshape(-1), zero_point.reshape(-1), 0 if per_channel else None)
    if bias is not None and site.inputs[bias] is not None:
        s_b = (np.float32(site.array(x + 1)) * np.broadcast_to(scale.reshape(-1), site.inputs[bias].shape))
        s_b = s_b.astype(np.float32)
        site.inputs[bias].quant = QuantParams(s_b, np.zeros(s_b.shape, np.int64), 0)


def _qlinear_conv_decode(site: Site):
    _weight_quant_back(site, 0, 3, 8)
    x, w = site.inputs[0], site.inputs[3]
    op, attrs = _conv_back(site.attrs, x, w)
    return op, [x, w, site.inputs[8] if len(site.inputs) > 8 else None], attrs


def _pool_attrs(node: Node) -> dict:
    attrs = {"kernel_shape": list(node.attrs["kernel"]), **_window(node)}
    if node.op == "avg_pool2d":
        attrs["count_include_pad"] = int(node.attrs["count_include_pad"])
    return attrs


def _pool_back(op: str):
    def decode(site: Site):
        attrs = {"kernel": list(site.attrs["kernel_shape"]), **_window_back(site.attrs)}
        if op == "avg_pool2d":
            attrs["count_include_pad"] = bool(site.attrs.get("count_include_pad", 0))
        return op, site.inputs[:1], attrs
    return decode


def _pool(op_type: str):
    def encode(e: Emit, node: Node) -> None:
        x = e.name(node.inputs[0])
        _with_activation(e, node, lambda y: e.node(op_type, [x], [y], node.name, **_pool_attrs(node)))
    return encode


def _qlinear_avg_pool(e: Emit, node: Node) -> None:
    x, y = node.inputs[0], node.outputs[0]
    inputs = [e.name(x), *e.qparams(x), *e.qparams(y)]
    _with_activation(e, node, lambda out: e.node("QLinearAveragePool", inputs, [out], node.name, MS_DOMAIN,
                                                 **_pool_attrs(node)))


# ---- matrix products ---------------------------------------------------------------------------------------
def _fc_2d(node: Node) -> bool:
    return len(node.inputs[0].shape) == 2


def _gemm(e: Emit, node: Node) -> None:
    inputs = [e.name(t) for t in node.inputs if t is not None]
    _with_activation(e, node, lambda y: e.node("Gemm", inputs, [y], node.name, transB=1))


def _gemm_decode(site: Site):
    if site.attrs.get("transB", 0) != 1 or site.attrs.get("transA", 0) or site.attrs.get("alpha", 1.0) != 1.0 \
            or site.attrs.get("beta", 1.0) != 1.0:
        raise MccError("mcc reads Gemm as written by mcc: y = x @ w.T + b (transB=1, alpha = beta = 1)")
    return "fully_connected", site.inputs[:3], {}


def _qgemm(e: Emit, node: Node) -> None:
    x, w, y = node.inputs[0], node.inputs[1], node.outputs[0]
    inputs = [e.name(x), *e.qparams(x), e.name(w), *_weight_qparams(e, w), _bias(e, node), *e.qparams(y)]
    _with_activation(e, node, lambda out: e.node("QGemm", inputs, [out], node.name, MS_DOMAIN, transB=1))


def _qgemm_decode(site: Site):
    _weight_quant_back(site, 0, 3, 6)
    return "fully_connected", [site.inputs[0], site.inputs[3], site.inputs[6]], {}


# ---- elementwise ---------------------------------------------------------------------------------------------
def _binary(op_type: str, **attrs):
    """An encoder for a two-input operator; an attribute given as a function is computed from the node."""
    def encode(e: Emit, node: Node) -> None:
        a, b = (e.name(t) for t in node.inputs)
        values = {k: (f(node) if callable(f) else f) for k, f in attrs.items()}
        _with_activation(e, node, lambda y: e.node(op_type, [a, b], [y], node.name, **values))
    return encode


def _qlinear_binary(op_type: str):
    def encode(e: Emit, node: Node) -> None:
        a, b = node.inputs
        inputs = [e.name(a), *e.qparams(a), e.name(b), *e.qparams(b), *e.qparams(node.outputs[0])]
        _with_activation(e, node, lambda y: e.node(op_type, inputs, [y], node.name, MS_DOMAIN))
    return encode


def _unary(op_type: str, **attrs):
    """An encoder for a one-input operator; an attribute given as a function is computed from the node."""
    def encode(e: Emit, node: Node) -> None:
        values = {k: (f(node) if callable(f) else f) for k, f in attrs.items()}
        e.node(op_type, [e.name(node.inputs[0])], [e.name(node.outputs[0])], node.name, **values)
    return encode


def _clip(e: Emit, node: Node) -> None:
    """relu6 and clip as Clip(min, max); an infinite bound is an omitted input."""
    lo, hi = (0.0, 6.0) if node.op == "relu6" else (float(node.attrs["min"]), float(node.attrs["max"]))
    bounds = ["" if np.isinf(v) else e.param(f"{node.name}/{k}", _scalar(v, np.float32))
              for k, v in (("min", lo), ("max", hi))]
    while bounds and bounds[-1] == "":
        bounds.pop()
    e.node("Clip", [e.name(node.inputs[0]), *bounds], [e.name(node.outputs[0])], node.name)


def _clip_decode(site: Site):
    lo = f32(site.array(1)) if len(site.inputs) > 1 and site.inputs[1] is not None else -float("inf")
    hi = f32(site.array(2)) if len(site.inputs) > 2 and site.inputs[2] is not None else float("inf")
    if (lo, hi) == (0.0, 6.0):
        return "relu6", site.inputs[:1], {}
    return "clip", site.inputs[:1], {"min": lo, "max": hi}


def _softmax(e: Emit, node: Node) -> None:
    """Softmax(beta * x): a Mul by beta first when beta is not 1 (ONNX's Softmax has no temperature)."""
    x, beta = e.name(node.inputs[0]), float(node.attrs["beta"])
    if beta != 1.0:
        scaled = e.temp(node.inputs[0], f"{node.name}/beta_x")
        e.node("Mul", [x, e.param(f"{node.name}/beta", _scalar(beta, np.float32))], [scaled], f"{node.name}/beta")
        x = scaled
    e.node("Softmax", [x], [e.name(node.outputs[0])], node.name, axis=int(node.attrs["axis"]))


def _qlinear_softmax(e: Emit, node: Node) -> None:
    x, y = node.inputs[0], node.outputs[0]
    e.node("QLinearSoftmax", [e.name(x), *e.qparams(x), *e.qparams(y)], [e.name(y)], node.name, MS_DOMAIN,
           axis=int(node.attrs["axis"]), opset=OPSET)


def _softmax_decode(site: Site):
    return "softmax", site.inputs[:1], {"axis": int(site.attrs.get("axis", -1)), "beta": 1.0}


def _table(e: Emit, node: Node) -> None:
    """int8 -> int8 through the 256-entry table of the op's function (see the module docstring)."""
    x, y = node.inputs[0], node.outputs[0]
    attrs = {k: float(node.attrs[k]) for k in TABLE_OPS[table_op(node)]}
    inputs = [e.name(x), *e.qparams(x), *e.qparams(y), e.table(node)]
    e.node(table_op(node), inputs, [e.name(y)], node.name, MCC_DOMAIN, **attrs)


def _table_decode(site: Site):
    if site.op_type not in TABLE_OPS:
        raise MccError(f"ai.mcc operator '{site.op_type}' is not one of mcc's tables ({', '.join(TABLE_OPS)})")
    op = "quantize" if site.op_type == "requantize" else site.op_type
    attrs = {"dtype": "int8"} if op == "quantize" else {k: f32(site.attrs[k]) for k in TABLE_OPS[site.op_type]}
    return op, site.inputs[:1], attrs


def _is_table(node: Node) -> bool:
    return node.op != "quantize" or node.inputs[0].dtype == "int8"


# ---- reductions, shapes, data movement ---------------------------------------------------------------------
def global_pool_axes(node: Node) -> bool:
    """An int8 mean that QLinearGlobalAveragePool computes: every axis from 2 on, dimensions kept."""
    rank = len(node.inputs[0].shape)
    return rank >= 3 and node.attrs["keepdims"] and sorted(a % rank for a in node.attrs["axes"]) == list(range(2, rank))


def _mean(e: Emit, node: Node) -> None:
    axes = e.param(f"{node.name}/axes", np.asarray(node.attrs["axes"], np.int64))
    e.node("ReduceMean", [e.name(node.inputs[0]), axes], [e.name(node.outputs[0])], node.name,
           keepdims=int(node.attrs["keepdims"]))


def _mean_decode(site: Site):
    axes = [int(a) for a in site.array(1)]
    return "mean", site.inputs[:1], {"axes": axes, "keepdims": bool(site.attrs.get("keepdims", 1))}


def _global_mean(e: Emit, node: Node) -> None:
    """A float mean over every axis from 2 on is written GlobalAveragePool, as the ONNX sources and converters
    spell it: onnxruntime's ReduceMean kernel sums channels in different orders, so values the source's
    GlobalAveragePool computes equal differ by an ulp (light/test_squeezenet's 1,000 logits are all 9.48e9, and
    its softmax turned that ulp into 0 for 250 classes and 1/750 for the rest)."""
    e.node("GlobalAveragePool", [e.name(node.inputs[0])], [e.name(node.outputs[0])], node.name)


def _qlinear_mean(e: Emit, node: Node) -> None:
    x, y = node.inputs[0], node.outputs[0]
    e.node("QLinearGlobalAveragePool", [e.name(x), *e.qparams(x), *e.qparams(y)], [e.name(y)], node.name,
           MS_DOMAIN, channels_last=0)


def _global_mean_decode(site: Site):
    return "mean", site.inputs[:1], {"axes": list(range(2, len(site.inputs[0].shape))), "keepdims": True}


def _reshape(e: Emit, node: Node) -> None:
    shape = e.param(f"{node.name}/shape", np.asarray(node.attrs["shape"], np.int64))
    e.node("Reshape", [e.name(node.inputs[0]), shape], [e.name(node.outputs[0])], node.name)


def _pad(e: Emit, node: Node) -> None:
    """Constant Pad; ONNX lists all begins, then all ends. An int8 pad value is the quantized code that TFLite's
    PADV2 stores (formats.tflite.opmap), so both files pad with the same integer."""
    from ..tflite.opmap import _pad_value

    p = node.attrs["pads"]
    pads = e.param(f"{node.name}/pads", np.asarray(p[0::2] + p[1::2], np.int64))
    if node.attrs["mode"] != "constant":  # reflect and edge are ONNX's modes of the same names
        e.node("Pad", [e.name(node.inputs[0]), pads], [e.name(node.outputs[0])], node.name, mode=node.attrs["mode"])
        return
    value = e.param(f"{node.name}/value", _pad_value(node).reshape(()))
    e.node("Pad", [e.name(node.inputs[0]), pads, value], [e.name(node.outputs[0])], node.name, mode="constant")


def _pad_decode(site: Site):
    """IR pads interleave each axis' before and after; an int8 pad value comes back as the real its code means."""
    p = [int(d) for d in site.array(1)]
    half = len(p) // 2
    code = np.float64(site.array(2)) if len(site.inputs) > 2 and site.inputs[2] is not None else np.float64(0)
    q = site.inputs[0].quant
    value = f32((code - q.zero_point[0]) * q.scale[0]) if q is not None else f32(code)
    return "pad", site.inputs[:1], {"pads": [d for pair in zip(p[:half], p[half:]) for d in pair], "value": value,
                                    "mode": site.attrs.get("mode", b"constant").decode()}


def _quantize(e: Emit, node: Node) -> None:
    y = node.outputs[0]
    e.node("QuantizeLinear", [e.name(node.inputs[0]), *e.qparams(y)], [e.name(y)], node.name)


def _dequantize(e: Emit, node: Node) -> None:
    x = node.inputs[0]
    e.node("DequantizeLinear", [e.name(x), *e.qparams(x)], [e.name(node.outputs[0])], node.name)


def _batch_norm(e: Emit, node: Node) -> None:
    x, mean, var, weight, bias = (e.name(t) for t in node.inputs)
    e.node("BatchNormalization", [x, weight, bias, mean, var], [e.name(node.outputs[0])], node.name,
           epsilon=float(node.attrs["eps"]))


def _batch_norm_decode(site: Site):
    x, weight, bias, mean, var = site.inputs[:5]
    return "batch_norm", [x, mean, var, weight, bias], {"eps": f32(site.attrs.get("epsilon", 1e-5))}


def _slice(e: Emit, node: Node) -> None:
    """Slice with int64 starts, ends, axes and steps. The IR's end -1 of a negative step (through element 0) would
    count from the back in ONNX, so it is written as -(dim + 1), which ONNX clamps to -1."""
    x, a = node.inputs[0], node.attrs
    ends = [end if end >= 0 else -(x.shape[axis] + 1) for axis, end in zip(a["axes"], a["ends"])]
    params = [e.param(f"{node.name}/{k}", np.asarray(v, np.int64))
              for k, v in (("starts", a["starts"]), ("ends", ends), ("axes", a["axes"]), ("steps", a["steps"]))]
    e.node("Slice", [e.name(x), *params], [e.name(node.outputs[0])], node.name)


def _slice_decode(site: Site):
    dims = site.inputs[0].shape
    starts, ends, axes, steps = ([int(v) for v in site.array(i)] for i in range(1, 5))
    ends = [-1 if end < -dims[axis] else end for axis, end in zip(axes, ends)]
    return "slice", site.inputs[:1], {"starts": starts, "ends": ends, "axes": axes, "steps": steps}


def _split(e: Emit, node: Node) -> None:
    sizes = e.param(f"{node.name}/split", np.asarray(node.attrs["sizes"], np.int64))
    e.node("Split", [e.name(node.inputs[0]), sizes], [e.name(t) for t in node.outputs], node.name,
           axis=int(node.attrs["axis"]))


def _resize(e: Emit, node: Node) -> None:
    """Resize to `sizes` (no roi, no scales), which onnxruntime computes as the IR's resize does."""
    x, a = node.inputs[0], node.attrs
    sizes = e.param(f"{node.name}/sizes", np.asarray([*x.shape[:2], *a["size"]], np.int64))
    e.node("Resize", [e.name(x), "", "", sizes], [e.name(node.outputs[0])], node.name,
           mode="linear" if a["mode"] == "bilinear" else "nearest",
           coordinate_transformation_mode=a["coordinate_transformation_mode"], nearest_mode=a["nearest_mode"])


def _resize_decode(site: Site):
    text = {k: site.attrs.get(k, default).decode() for k, default in
            (("mode", b"nearest"), ("coordinate_transformation_mode", b"half_pixel"),
             ("nearest_mode", b"round_prefer_floor"))}  # ONNX string attributes are bytes
    attrs = {"mode": "bilinear" if text["mode"] == "linear" else "nearest", "size": [int(d) for d in site.array(3)[2:]],
             "coordinate_transformation_mode": text["coordinate_transformation_mode"],
             "nearest_mode": text["nearest_mode"]}
    return "resize", site.inputs[:1], attrs


def _mul_decode(site: Site):
    """Mul(x, x) is the IR's square (how the writer spells it), any other Mul a mul."""
    a, b = site.inputs[:2]
    return ("square", [a], {}) if a is b else ("mul", [a, b], {})


def _square(e: Emit, node: Node) -> None:
    x = e.name(node.inputs[0])
    e.node("Mul", [x, x], [e.name(node.outputs[0])], node.name)


def _pow(e: Emit, node: Node) -> None:
    if node.op == "rsqrt":
        exponent = e.param(f"{node.name}/exponent", _scalar(-0.5, np.float32))
        e.node("Pow", [e.name(node.inputs[0]), exponent], [e.name(node.outputs[0])], node.name)
        return
    _binary("Pow")(e, node)


def _pow_decode(site: Site):
    """Pow by the constant -0.5 is the IR's rsqrt (how the writer spells it), any other Pow a pow."""
    x, exponent = site.inputs[:2]
    if exponent.is_constant and exponent.data.size == 1 and float(exponent.data.reshape(-1)[0]) == -0.5:
        return "rsqrt", [x], {}
    return "pow", [x, exponent], {}


def _tile(e: Emit, node: Node) -> None:
    repeats = e.param(f"{node.name}/repeats", np.asarray(node.attrs["multiples"], np.int64))
    e.node("Tile", [e.name(node.inputs[0]), repeats], [e.name(node.outputs[0])], node.name)


def _reduce(op_type: str):
    """A reduction with its axes as an input (ReduceSum since opset 13, the others since 18), as ReduceMean."""
    def encode(e: Emit, node: Node) -> None:
        axes = e.param(f"{node.name}/axes", np.asarray(node.attrs["axes"], np.int64))
        e.node(op_type, [e.name(node.inputs[0]), axes], [e.name(node.outputs[0])], node.name,
               keepdims=int(node.attrs["keepdims"]))
    return encode


def _reduce_decode(op: str):
    def decode(site: Site):
        return op, site.inputs[:1], {"axes": [int(a) for a in site.array(1)],
                                     "keepdims": bool(site.attrs.get("keepdims", 1))}
    return decode
# ---- transposed convolution ------------------------------------------------------------------------------------
def _conv_transpose(e: Emit, node: Node) -> None:
    """ConvTranspose with explicit pads and output_padding (no output_shape, which onnxruntime would turn back
    into pads by its own rounding)."""
    a = node.attrs
    attrs = {**_window(node), "output_padding": list(a["output_padding"]), "group": int(a["groups"]),
             "kernel_shape": list(node.inputs[1].shape[2:])}
    inputs = [e.name(t) for t in node.inputs if t is not None]
    _with_activation(e, node, lambda y: e.node("ConvTranspose", inputs, [y], node.name, **attrs))


def _conv_transpose_decode(site: Site):
    attrs = {**_window_back(site.attrs), "dilation": list(site.attrs.get("dilations", [1, 1])),
             "output_padding": list(site.attrs.get("output_padding", [0, 0])), "groups": site.attrs.get("group", 1)}
    return "transpose_conv2d", site.inputs[:3], attrs


def _same(op: str, n_inputs: int = 1, **attrs_back):
    """A decoder for an operator whose IR inputs are its first `n_inputs` inputs."""
    def decode(site: Site):
        attrs = {k: (f(site.attrs) if callable(f) else f) for k, f in attrs_back.items()}
        return op, site.inputs[:n_inputs], attrs
    return decode


TABLE: list[Row] = [
    Row(("conv2d", "depthwise_conv2d"), "float", ("", "Conv"), _conv, _conv_decode),
    Row(("conv2d", "depthwise_conv2d"), "int8", ("", "QLinearConv"), _qlinear_conv, _qlinear_conv_decode),
    Row(("fully_connected",), "float", ("", "Gemm"), _gemm, _gemm_decode, when=_fc_2d),
    Row(("fully_connected",), "int8", (MS_DOMAIN, "QGemm"), _qgemm, _qgemm_decode, when=_fc_2d),
    Row(("add",), "float", ("", "Add"), _binary("Add"), _same("add", 2)),
    Row(("sub",), "float", ("", "Sub"), _binary("Sub"), _same("sub", 2)),
    Row(("mul",), "float", ("", "Mul"), _binary("Mul"), _mul_decode),
    Row(("div",), "float", ("", "Div"), _binary("Div"), _same("div", 2)),
    Row(("add",), "int8", (MS_DOMAIN, "QLinearAdd"), _qlinear_binary("QLinearAdd"),
        lambda site: ("add", [site.inputs[0], site.inputs[3]], {})),
    Row(("mul",), "int8", (MS_DOMAIN, "QLinearMul"), _qlinear_binary("QLinearMul"),
        lambda site: ("mul", [site.inputs[0], site.inputs[3]], {})),
    Row(("minimum",), "any", ("", "Min"), _binary("Min"), _same("minimum", 2)),
    Row(("maximum",), "any", ("", "Max"), _binary("Max"), _same("maximum", 2)),
    Row(("relu",), "float", ("", "Relu"), _unary("Relu"), _same("relu")),
    Row(("relu6", "clip"), "float", ("", "Clip"), _clip, _clip_decode),
    Row(("sigmoid",), "float", ("", "Sigmoid"), _unary("Sigmoid"), _same("sigmoid")),
    Row(("tanh",), "float", ("", "Tanh"), _unary("Tanh"), _same("tanh")),
    Row(("hardswish",), "float", ("", "HardSwish"), _unary("HardSwish"), _same("hardswish")),
    Row(("hardsigmoid",), "float", ("", "HardSigmoid"), _unary("HardSigmoid", alpha=1 / 6, beta=0.5),
        _same("hardsigmoid")),
    Row(("leaky_relu",), "float", ("", "LeakyRelu"), _unary("LeakyRelu", alpha=lambda n: float(n.attrs["alpha"])),
        _same("leaky_relu", alpha=lambda a: f32(a.get("alpha", 0.01)))),
    Row(("prelu",), "float", ("", "PRelu"), _binary("PRelu"), _same("prelu", 2)),
    Row(("identity",), "any", ("", "Identity"), _unary("Identity"), _same("identity")),
    Row(("softmax",), "float", ("", "Softmax"), _softmax, _softmax_decode),
    Row(("softmax",), "int8", (MS_DOMAIN, "QLinearSoftmax"), _qlinear_softmax, _softmax_decode,
        when=lambda n: float(n.attrs["beta"]) == 1.0),
    Row(tuple(op for op in TABLE_OPS if op != "requantize") + ("quantize",), "int8", (MCC_DOMAIN, ""), _table,
        _table_decode, when=_is_table),
    Row(("batch_norm",), "float", ("", "BatchNormalization"), _batch_norm, _batch_norm_decode),
    Row(("max_pool2d",), "any", ("", "MaxPool"), _pool("MaxPool"), _pool_back("max_pool2d")),
    Row(("avg_pool2d",), "float", ("", "AveragePool"), _pool("AveragePool"), _pool_back("avg_pool2d")),
    Row(("avg_pool2d",), "int8", (MS_DOMAIN, "QLinearAveragePool"), _qlinear_avg_pool, _pool_back("avg_pool2d")),
    Row(("mean",), "float", ("", "GlobalAveragePool"), _global_mean, _global_mean_decode, when=global_pool_axes),
    Row(("mean",), "float", ("", "ReduceMean"), _mean, _mean_decode),
    Row(("mean",), "int8", (MS_DOMAIN, "QLinearGlobalAveragePool"), _qlinear_mean, _global_mean_decode,
        when=global_pool_axes),
    Row(("concat",), "any", ("", "Concat"),
        lambda e, n: e.node("Concat", [e.name(t) for t in n.inputs], [e.name(n.outputs[0])], n.name,
                            axis=int(n.attrs["axis"])),
        lambda site: ("concat", list(site.inputs), {"axis": int(site.attrs["axis"])})),
    Row(("reshape",), "any", ("", "Reshape"), _reshape,
        lambda site: ("reshape", site.inputs[:1], {"shape": [int(d) for d in site.array(1)]})),
    Row(("transpose",), "any", ("", "Transpose"), _unary("Transpose", perm=lambda n: list(n.attrs["perm"])),
        _same("transpose", perm=lambda a: list(a["perm"]))),
    Row(("pad",), "any", ("", "Pad"), _pad, _pad_decode),
    Row(("slice",), "any", ("", "Slice"), _slice, _slice_decode),
    Row(("split",), "any", ("", "Split"), _split,
        lambda site: ("split", site.inputs[:1], {"axis": int(site.attrs.get("axis", 0)),
                                                 "sizes": [int(d) for d in site.array(1)]})),
    # int8 nearest moves bytes; onnxruntime's int8 linear Resize truncates (half the elements 1 or 2 below
    # TFLite's), so an int8 bilinear resize has no row and legalize_onnx makes it a float island
    Row(("resize",), "float", ("", "Resize"), _resize, _resize_decode),
    Row(("resize",), "int8", ("", "Resize"), _resize, _resize_decode, when=lambda n: n.attrs["mode"] == "nearest"),
    Row(("quantize",), "any", ("", "QuantizeLinear"), _quantize, _same("quantize", dtype="int8"),
        when=lambda n: n.inputs[0].dtype == "float32"),
    Row(("dequantize",), "any", ("", "DequantizeLinear"), _dequantize, _same("dequantize")),
    # transposed convolution and batched matrix products; onnxruntime has no integer ConvTranspose in the default
    # domain, so an int8 one has no row and legalize_onnx makes it a float island
    Row(("transpose_conv2d",), "float", ("", "ConvTranspose"), _conv_transpose, _conv_transpose_decode),
    Row(("batch_matmul",), "float", ("", "MatMul"), _binary("MatMul"), _same("batch_matmul", 2)),
]

# ---- math (issue 14, ops-math): ONNX operators of the same name; square is Mul(x, x) and rsqrt Pow(x, -0.5), since
# ONNX has neither, and the readback folds those spellings back (as the frontends fold a constant exponent)
TABLE += [
    *(Row((op,), "float", ("", op_type), _unary(op_type), _same(op)) for op, op_type in
      (("neg", "Neg"), ("abs", "Abs"), ("sqrt", "Sqrt"), ("exp", "Exp"), ("log", "Log"), ("erf", "Erf"))),
    Row(("square",), "float", ("", "Mul"), _square, _mul_decode),
    Row(("gelu",), "float", ("", "Gelu"), _unary("Gelu", approximate=lambda n: n.attrs["approximate"]),
        _same("gelu", approximate=lambda a: a.get("approximate", b"none").decode())),
    Row(("pow", "rsqrt"), "float", ("", "Pow"), _pow, _pow_decode),
    Row(("sum",), "float", ("", "ReduceSum"), _reduce("ReduceSum"), _reduce_decode("sum")),
    # ReduceMax / ReduceMin pick an int8 code as such in onnxruntime: one row for float and int8
    Row(("reduce_max",), "any", ("", "ReduceMax"), _reduce("ReduceMax"), _reduce_decode("reduce_max")),
    Row(("reduce_min",), "any", ("", "ReduceMin"), _reduce("ReduceMin"), _reduce_decode("reduce_min")),
    Row(("lrn",), "float", ("", "LRN"),
        _unary("LRN", **{k: (lambda n, k=k: (int if k == "size" else float)(n.attrs[k]))
                         for k in ("size", "alpha", "beta", "bias")}),
        _same("lrn", size=lambda a: int(a["size"]), alpha=lambda a: f32(a.get("alpha", 1e-4)),
              beta=lambda a: f32(a.get("beta", 0.75)), bias=lambda a: f32(a.get("bias", 1.0)))),
    # data movement: the same operator moves int8 codes in onnxruntime
    Row(("gather",), "any", ("", "Gather"), _binary("Gather", axis=lambda n: int(n.attrs["axis"])),
        _same("gather", 2, axis=lambda a: int(a.get("axis", 0)))),
    Row(("tile",), "any", ("", "Tile"), _tile,
        lambda site: ("tile", site.inputs[:1], {"multiples": [int(m) for m in site.array(1)]})),
    Row(("depth_to_space",), "any", ("", "DepthToSpace"),
        _unary("DepthToSpace", blocksize=lambda n: int(n.attrs["block_size"]), mode=lambda n: n.attrs["mode"]),
        _same("depth_to_space", block_size=lambda a: int(a["blocksize"]),
              mode=lambda a: a.get("mode", b"DCR").decode())),
    Row(("space_to_depth",), "any", ("", "SpaceToDepth"),
        _unary("SpaceToDepth", blocksize=lambda n: int(n.attrs["block_size"])),
        _same("space_to_depth", block_size=lambda a: int(a["blocksize"]))),
]

BY_ONNX: dict[tuple[str, str], Row] = {r.onnx: r for r in TABLE}


def row_for(node: Node) -> Row | None:
    """The row that writes `node` in its form (float or int8), or None when ONNX has no such operator here."""
    form = "int8" if is_int8(node) else "float"
    return next((r for r in TABLE if node.op in r.ir_ops and r.form in (form, "any") and r.when(node)), None)


def mapping_for(node: Node) -> Row:
    """The row that writes `node`, or an MccError that says what to do."""
    row = row_for(node)
    if row is not None:
        return row
    form = "int8" if is_int8(node) else "float"
    known = sorted({op for r in TABLE if r.form in (form, "any") for op in r.ir_ops})
    raise MccError(f"{form} {node.op} with {node.attrs} has no ONNX form that mcc writes (its {form} ops: "
                   f"{', '.join(known)}); run the legalize_onnx pass first, which rewrites what it can",
                   node=node.name)
