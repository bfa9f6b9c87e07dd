"""The one table between mcc IR ops and TFLite builtin operators, read by both the writer and the reader.

Each row says which builtin an IR op becomes, how the node's attributes become the builtin's options (and the
constant parameter inputs some builtins take instead of options: MEAN axes, RESHAPE shape, TRANSPOSE perm,
PAD paddings, PADV2 value) and how they come back. Keeping both directions in one row is what makes
write -> read an identity. A row may apply only to some attribute values (`when`): `clip` is RELU_N1_TO_1 or
RELU_0_TO_1 depending on its bounds, `pad` is PAD or PADV2 depending on its value, `slice` is SLICE or
STRIDED_SLICE depending on its steps, `split` is SPLIT or SPLIT_V depending on its sizes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from ...errors import MccError
from ...ir import Node, Tensor
from ...ir.ops import transpose_conv_full

# (align_corners, half_pixel_centers) of each IR coordinate mode, and the rounding TFLite's nearest kernel gives it
TFLITE_FLAGS = {"half_pixel": (False, True), "align_corners": (True, False), "asymmetric": (False, False)}
TFLITE_NEAREST = {"half_pixel": "round_prefer_ceil", "align_corners": "round_prefer_ceil", "asymmetric": "floor"}

AF = schema.ActivationFunctionType
ACTIVATION_TO_TFLITE = {None: AF.NONE, "relu": AF.RELU, "relu6": AF.RELU6, "relu_n1_to_1": AF.RELU_N1_TO_1}
ACTIVATION_FROM_TFLITE = {v: k for k, v in ACTIVATION_TO_TFLITE.items()}

DTYPE_TO_TFLITE = {"float32": schema.TensorType.FLOAT32, "float16": schema.TensorType.FLOAT16,
                   "int8": schema.TensorType.INT8, "uint8": schema.TensorType.UINT8,
                   "int16": schema.TensorType.INT16, "int32": schema.TensorType.INT32,
                   "int64": schema.TensorType.INT64, "bool": schema.TensorType.BOOL}
DTYPE_FROM_TFLITE = {v: k for k, v in DTYPE_TO_TFLITE.items()}

BUILTIN_NAMES = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}


# ---- padding ---------------------------------------------------------------------------------------------
def same_padding(size: int, k: int, stride: int, dilation: int) -> tuple[int, int]:
    """(before, after) padding TFLite's SAME uses on one axis: the odd pixel goes after (PyTorch puts it before)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (k - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def same_padding_2d(hw, khw, stride, dilation) -> list[int]:
    """[top, left, bottom, right] of TFLite's SAME for an (h, w) input."""
    (t, b), (l, r) = (same_padding(hw[i], khw[i], stride[i], dilation[i]) for i in range(2))
    return [t, l, b, r]


def padding_mode(padding, hw, khw, stride, dilation) -> int | None:
    """schema.Padding.VALID or SAME when the explicit `padding` is exactly what TFLite computes, else None."""
    if list(padding) == [0, 0, 0, 0]:
        return schema.Padding.VALID
    if list(padding) == same_padding_2d(hw, khw, stride, dilation):
        return schema.Padding.SAME
    return None


def kernel_hw(op: str, attrs: dict, inputs: list[Tensor]) -> tuple[int, int]:
    """Kernel (h, w) of an NHWC spatial op: the pool's `kernel`, or from the OHWI / [1,kh,kw,CM] weight of a
    conv."""
    if "kernel" in attrs:
        return tuple(attrs["kernel"])
    return inputs[1].shape[1], inputs[1].shape[2]


# ---- one row of the table -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Site:
    """What the reader knows about one TFLite operator when it turns it back into IR attributes."""

    options: object | None        # the unpacked builtin options (schema ...OptionsT) or None
    params: dict                   # parameter name -> numpy array (constant parameter inputs)
    inputs: list                   # the IR input tensors (without parameter inputs)


@dataclass(frozen=True)
class Mapping:
    ir_op: str
    builtin: str                                            # schema.BuiltinOperator member name
    options: str | None = None                              # schema.BuiltinOptions member name
    params: tuple[str, ...] = ()                            # constant inputs that follow the IR inputs
    encode: Callable[[Node], tuple[dict, dict]] = lambda node: ({}, {})   # -> option fields, param arrays
    decode: Callable[[Site], dict] = lambda site: {}                    # -> IR attributes
    when: Callable[[Node], bool] = lambda node: True
    unless: str = ""                                        # what the builtin lacks when `when` is False
    like_input: tuple[str, ...] = ()                        # params quantized like input 0 (TFLite checks)
    leading: tuple[str, ...] = ()                           # constant inputs that precede the IR inputs (SPLIT's axis)
    input_order: tuple[int, ...] = ()                       # builtin position -> IR input (TRANSPOSE_CONV: w, x)

    def position(self, i: int) -> int:
        """Where IR input `i` sits among the builtin's inputs."""
        return len(self.leading) + (self.input_order.index(i) if i < len(self.input_order) else i)

    @property
    def code(self) -> int:
        return getattr(schema.BuiltinOperator, self.builtin)

    def options_object(self, fields: dict):
        """(BuiltinOptions type, ...OptionsT object or None) with `fields` set."""
        if self.options is None:
            return schema.BuiltinOptions.NONE, None
        obj = getattr(schema, self.options + "T")()
        for k, v in fields.items():
            if not hasattr(obj, k):
                raise AttributeError(f"{self.options} has no field {k}")
            setattr(obj, k, v)
        return getattr(schema.BuiltinOptions, self.options), obj


def _act(node: Node) -> int:
    return ACTIVATION_TO_TFLITE[node.attrs.get("activation")]


def _act_back(site: Site) -> str | None:
    code = site.options.fusedActivationFunction
    if code not in ACTIVATION_FROM_TFLITE:
        names = {v: k for k, v in vars(AF).items() if not k.startswith("_")}
        raise MccError(f"fused activation {names.get(code, code)} has no IR equivalent; mcc reads "
                       f"{', '.join(names[c] for c in ACTIVATION_FROM_TFLITE.values())}")
    return ACTIVATION_FROM_TFLITE[code]


def _spatial(node: Node) -> dict:
    """Padding, strides and dilations of a conv / depthwise / pool node as option fields."""
    x = node.inputs[0]
    khw = kernel_hw(node.op, node.attrs, node.inputs)
    stride, dilation = node.attrs["stride"], node.attrs.get("dilation", [1, 1])
    mode = padding_mode(node.attrs["padding"], x.shape[1:3], khw, stride, dilation)
    if mode is None:
        raise MccError(f"{node.op} padding {node.attrs['padding']} is neither TFLite SAME "
                       f"{same_padding_2d(x.shape[1:3], khw, stride, dilation)} nor VALID [0, 0, 0, 0]; "
                       "run the legalize_tflite pass first, which inserts a PAD", node=node.name)
    fields = {"padding": mode, "strideH": stride[0], "strideW": stride[1]}
    if "dilation" in node.attrs:
        fields.update(dilationHFactor=dilation[0], dilationWFactor=dilation[1])
    return fields


def _spatial_back(site: Site, op: str, attrs: dict) -> dict:
    o = site.options
    stride = [o.strideH, o.strideW]
    dilation = [getattr(o, "dilationHFactor", 1), getattr(o, "dilationWFactor", 1)]
    khw = kernel_hw(op, attrs, site.inputs)
    if o.padding not in (schema.Padding.SAME, schema.Padding.VALID):
        raise MccError(f"padding code {o.padding} is neither SAME nor VALID")
    pad = [0, 0, 0, 0] if o.padding == schema.Padding.VALID else \
        same_padding_2d(site.inputs[0].shape[1:3], khw, stride, dilation)
    attrs.update(stride=stride, padding=pad, activation=_act_back(site))
    if op in ("conv2d", "depthwise_conv2d"):
        attrs["dilation"] = dilation
    return attrs


def _require_bias(node: Node) -> None:
    if node.input(2) is None:
        raise MccError(f"{node.op} has no bias: LiteRT's reference CONV_2D refuses that and XNNPACK's "
                       "DEPTHWISE_CONV_2D crashes on it; run the legalize_tflite pass first, which adds a zero bias",
                       node=node.name)


def _conv(node: Node):
    _require_bias(node)
    return {**_spatial(node), "fusedActivationFunction": _act(node)}, {}


def _conv_back(site: Site) -> dict:
    x, w = site.inputs[:2]
    return _spatial_back(site, "conv2d", {"groups": x.shape[3] // w.shape[3]})


def _depthwise(node: Node):
    _require_bias(node)
    return {**_spatial(node), "fusedActivationFunction": _act(node), "depthMultiplier": node.attrs["multiplier"]}, {}


def _depthwise_back(site: Site) -> dict:
    x, w = site.inputs[:2]
    return _spatial_back(site, "depthwise_conv2d", {"multiplier": w.shape[3] // x.shape[3]})


def _pool(node: Node):
    if node.op == "avg_pool2d" and node.attrs["count_include_pad"] and node.attrs["padding"] != [0, 0, 0, 0]:
        raise MccError("avg_pool2d with count_include_pad and padding has no TFLite form (AVERAGE_POOL_2D "
                       "excludes padding); run the legalize_tflite pass first", node=node.name)
    kh, kw = node.attrs["kernel"]
    return {**_spatial(node), "filterHeight": kh, "filterWidth": kw, "fusedActivationFunction": _act(node)}, {}


def _pool_back(op: str):
    def decode(site: Site) -> dict:
        attrs = {"kernel": [site.options.filterHeight, site.options.filterWidth]}
        if op == "avg_pool2d":
            attrs["count_include_pad"] = False
        return _spatial_back(site, op, attrs)
    return decode


def _fused(node: Node):
    return {"fusedActivationFunction": _act(node)}, {}


def _fused_back(site: Site) -> dict:
    return {"activation": _act_back(site)}


# ---- 16x8 ADD: int16 inputs -------------------------------------------------------------------------------------
def _add(node: Node):
    """ADD's options; for int16 inputs pot_scale_int16 = false, which selects TFLite's general 16x8 kernel (the
    int8 arithmetic with a smaller shift) whatever the scales: the flag's default, true, switches to another
    kernel whenever all three scales are powers of two."""
    fields, params = _fused(node)
    if node.inputs[0].dtype == "int16":
        fields["potScaleInt16"] = False
    return fields, params


def _add_back(site: Site) -> dict:
    if site.inputs[0].dtype == "int16" and site.options is not None and site.options.potScaleInt16:
        raise MccError("int16 ADD with pot_scale_int16 = true (TFLite's power-of-two 16-bit kernel) is not "
                       "reproduced by mcc's runtime, which runs the general kernel (pot_scale_int16 = false, as mcc "
                       "writes it); re-export the model with pot_scale_int16 false")
    return _fused_back(site)


def _fc(node: Node):
    # keepNumDims keeps [..., O]; without it TFLite flattens the leading axes, which the IR never does.
    return {"fusedActivationFunction": _act(node), "keepNumDims": len(node.inputs[0].shape) != 2}, {}


def _softmax(node: Node):
    x = node.inputs[0]
    if node.attrs["axis"] % len(x.shape) != len(x.shape) - 1:
        raise MccError(f"softmax over axis {node.attrs['axis']} of a rank-{len(x.shape)} tensor: TFLite's "
                       "SOFTMAX works on the last axis only; run the legalize_tflite pass first", node=node.name)
    return {"beta": float(node.attrs["beta"])}, {}


def f32(value) -> float:
    """The shortest decimal naming the same float32: what TFLite stores, spelled the way an IR attribute is."""
    return float(str(np.float32(value)))


def _int32(values) -> np.ndarray:
    return np.asarray(values, dtype=np.int32)


def _mean(node: Node):
    return {"keepDims": bool(node.attrs["keepdims"])}, {"axes": _int32(node.attrs["axes"]).reshape(-1)}


def _reshape(node: Node):
    return {"newShape": [int(d) for d in node.attrs["shape"]]}, {"shape": _int32(node.attrs["shape"])}


def _reshape_back(site: Site) -> dict:
    shape = site.params.get("shape", site.options.newShape)
    if shape is None:
        raise MccError("RESHAPE has neither a shape input nor a new_shape option")
    return {"shape": [int(d) for d in np.asarray(shape).reshape(-1)]}


def _pad_value(node: Node) -> np.ndarray:
    """PADV2's constant value in the input's own dtype (quantized with the input's parameters when it has them)."""
    x = node.inputs[0]
    value = np.float64(node.attrs["value"])
    if x.quant is not None:
        value = np.round(value / x.quant.scale[0]) + x.quant.zero_point[0]
    if np.issubdtype(np.dtype(x.dtype), np.integer):
        info = np.iinfo(x.dtype)
        value = np.clip(value, info.min, info.max)
    return np.array([value], dtype=x.dtype)


def _pad(node: Node):
    params = {"paddings": _int32(node.attrs["pads"]).reshape(-1, 2)}
    if node.attrs["value"] != 0:
        params["value"] = _pad_value(node)
    return {}, params


def _pad_back(site: Site) -> dict:
    attrs = {"pads": [int(p) for p in site.params["paddings"].reshape(-1)], "value": 0.0}
    if "value" in site.params:
        v = site.params["value"].reshape(-1)[0].astype(np.float64)
        q = site.inputs[0].quant
        attrs["value"] = f32((v - q.zero_point[0]) * q.scale[0]) if q is not None else f32(v)
    return attrs


# ---- slicing -----------------------------------------------------------------------------------------------
def _is_strided(node: Node) -> bool:
    return any(step != 1 for step in node.attrs["steps"])


def _slice(node: Node):
    """SLICE's begin and size over every axis (unsliced axes whole)."""
    shape = node.inputs[0].shape
    begin, size = [0] * len(shape), list(shape)
    for axis, start, end in zip(node.attrs["axes"], node.attrs["starts"], node.attrs["ends"]):
        begin[axis], size[axis] = start, end - start
    return {}, {"begin": _int32(begin), "size": _int32(size)}


def _strided_slice(node: Node):
    """STRIDED_SLICE's begin, end and strides over every axis. The IR's end -1 of a negative step (through
    element 0) would count from the back there, so that end is given by the end mask instead."""
    shape = node.inputs[0].shape
    begin, end, strides, end_mask = [0] * len(shape), list(shape), [1] * len(shape), 0
    for axis, start, stop, step in zip(*(node.attrs[k] for k in ("axes", "starts", "ends", "steps"))):
        begin[axis], end[axis], strides[axis] = start, max(stop, 0), step
        if stop < 0:
            end_mask |= 1 << axis
    return {"endMask": end_mask}, {"begin": _int32(begin), "end": _int32(end), "strides": _int32(strides)}


def _sliced_axes(shape, ranges) -> dict:
    """IR slice attributes from one normalised (start, end, step) per axis; whole axes are left out, as the
    frontends leave them out."""
    attrs = {"starts": [], "ends": [], "axes": [], "steps": []}
    for axis, (dim, (start, end, step)) in enumerate(zip(shape, ranges)):
        if (start, end, step) != (0, dim, 1):
            for key, value in zip(("starts", "ends", "axes", "steps"), (start, end, axis, step)):
                attrs[key].append(int(value))
    return attrs


def _slice_back(site: Site) -> dict:
    shape = site.inputs[0].shape
    begin, size = (site.params[k].reshape(-1).astype(np.int64) for k in ("begin", "size"))
    if len(begin) != len(shape) or len(size) != len(shape):
        raise MccError(f"SLICE of a rank-{len(shape)} tensor has {len(begin)} begins and {len(size)} sizes")
    ends = [dim if s == -1 else b + s for b, s, dim in zip(begin, size, shape)]
    if any(not 0 <= b <= e <= dim for b, e, dim in zip(begin, ends, shape)):
        raise MccError(f"SLICE begin {begin.tolist()} size {size.tolist()} leaves the input's shape {list(shape)}")
    return _sliced_axes(shape, [(b, e, 1) for b, e in zip(begin, ends)])


def _strided_slice_back(site: Site) -> dict:
    """Python's slice semantics, which STRIDED_SLICE's begin / end / strides and their masks follow; the masks
    that add, drop or skip axes (ellipsis, new axis, shrink) have no IR slice form."""
    o, shape = site.options, site.inputs[0].shape
    if o.ellipsisMask or o.newAxisMask or o.shrinkAxisMask or o.offset:
        raise MccError("STRIDED_SLICE with an ellipsis, new-axis or shrink-axis mask (or offset) has no IR slice "
                       "form; mcc reads begin / end / strides with begin and end masks only")
    begin, end, strides = (site.params[k].reshape(-1).astype(np.int64) for k in ("begin", "end", "strides"))
    if not len(begin) == len(end) == len(strides) == len(shape) or not strides.all():
        raise MccError(f"STRIDED_SLICE of a rank-{len(shape)} tensor has begin {begin.tolist()}, end "
                       f"{end.tolist()} and strides {strides.tolist()}")
    ranges = [slice(None if o.beginMask >> i & 1 else int(begin[i]), None if o.endMask >> i & 1 else int(end[i]),
                    int(strides[i])).indices(dim) for i, dim in enumerate(shape)]
    return _sliced_axes(shape, ranges)


def _equal_parts(node: Node) -> bool:
    return len(set(node.attrs["sizes"])) == 1


def _split(node: Node):
    return {"numSplits": len(node.attrs["sizes"])}, {"axis": np.array(node.attrs["axis"], np.int32)}


def _split_v(node: Node):
    fields, params = _split(node)
    return fields, {**params, "size_splits": _int32(node.attrs["sizes"])}


def _split_axis(site: Site) -> int:
    rank = len(site.inputs[0].shape)
    axis = int(site.params["axis"].reshape(-1)[0])
    if not -rank <= axis < rank:
        raise MccError(f"split axis {axis} is not an axis of a rank-{rank} tensor")
    return axis % rank


def _split_back(site: Site) -> dict:
    axis, parts = _split_axis(site), site.options.numSplits
    dim = site.inputs[0].shape[axis]
    if parts < 1 or dim % parts:
        raise MccError(f"SPLIT cannot cut axis {axis} of size {dim} into {parts} equal parts")
    return {"axis": axis, "sizes": [dim // parts] * parts}


def _split_v_back(site: Site) -> dict:
    axis = _split_axis(site)
    sizes = [int(s) for s in site.params["size_splits"].reshape(-1)]
    if sizes.count(-1) == 1:  # one size may be left for TFLite to infer
        sizes[sizes.index(-1)] = site.inputs[0].shape[axis] - sum(s for s in sizes if s != -1)
    return {"axis": axis, "sizes": sizes}


# ---- resampling -------------------------------------------------------------------------------------------
def _resize(node: Node):
    mode, nearest = node.attrs["coordinate_transformation_mode"], node.attrs["nearest_mode"]
    if node.attrs["mode"] == "nearest" and TFLITE_NEAREST[mode] != nearest:
        raise MccError(f"nearest resize with {mode} coordinates and {nearest} rounding has no TFLite form "
                       f"(RESIZE_NEAREST_NEIGHBOR rounds {mode} coordinates {TFLITE_NEAREST[mode]}); run the "
                       "legalize_tflite pass first", node=node.name)
    align, half = TFLITE_FLAGS[mode]
    return {"alignCorners": align, "halfPixelCenters": half}, {"size": _int32(node.attrs["size"])}


def _resize_back(mode: str):
    def decode(site: Site) -> dict:
        flags = (bool(site.options.alignCorners), bool(site.options.halfPixelCenters))
        if flags == (True, True):
            raise MccError("RESIZE with both align_corners and half_pixel_centers has no IR resize form")
        coordinates = next(k for k, v in TFLITE_FLAGS.items() if v == flags)
        size = [int(s) for s in site.params["size"].reshape(-1)]
        attrs = {"mode": mode, "size": size, "coordinate_transformation_mode": coordinates}
        if mode == "nearest":
            attrs["nearest_mode"] = TFLITE_NEAREST[coordinates]
        return attrs
    return decode


# ---- math (issue 14, ops-math) ----------------------------------------------------------------------------
def _reducer_back(site: Site) -> dict:
    """axes and keepdims of a reduction (SUM, REDUCE_MAX, REDUCE_MIN: ReducerOptions and an axes input, as MEAN)."""
    return {"axes": [int(a) for a in site.params["axes"].reshape(-1)], "keepdims": bool(site.options.keepDims)}


def _lrn(node: Node):
    """TFLite's window is 2 * radius + 1 channels centred on c and its alpha multiplies the plain sum: radius
    (size - 1) / 2 and alpha / size."""
    size, a = node.attrs["size"], node.attrs
    return {"radius": (size - 1) // 2, "bias": float(a["bias"]), "alpha": float(a["alpha"]) / size,
            "beta": float(a["beta"])}, {}


def _lrn_back(site: Site) -> dict:
    """The IR's alpha is TFLite's times the size: the shortest decimal whose alpha / size is the stored float32."""
    o = site.options
    size = 2 * o.radius + 1
    stored = np.float32(o.alpha)
    alpha = next(v for v in (float(f"{float(stored) * size:.{d}g}") for d in range(1, 18))
                 if np.float32(v / size) == stored)
    return {"size": size, "alpha": alpha, "beta": f32(o.beta), "bias": f32(o.bias)}
# ---- transposed convolution ---------------------------------------------------------------------------------
def transpose_conv_same_crop(out_hw, khw, stride) -> list[int]:
    """[top, left] that TRANSPOSE_CONV crops with SAME padding for an output of `out_hw`: the SAME padding of
    a conv from that output back to the input (ComputePaddingHeightWidth); the rest is cropped at the end."""
    return [same_padding(out_hw[i], khw[i], stride[i], 1)[0] for i in range(2)]


def transpose_conv_padding_mode(node: Node) -> int | None:
    """SAME or VALID when TRANSPOSE_CONV computes the node's crop, else None. LiteRT requires the conv of the
    output_shape back to be the input: VALID (no crop at the top and left) takes outputs of full .. full +
    stride - 1 rows, SAME (its own top crop) those of (in - 1) * stride + 1 .. in * stride."""
    a, x, (_, out_h, out_w, _) = node.attrs, node.inputs[0], node.outputs[0].shape
    khw, stride, out = kernel_hw(node.op, a, node.inputs), a["stride"], (out_h, out_w)
    full = [transpose_conv_full(x.shape[1 + i], khw[i], stride[i], 1) for i in range(2)]
    if a["padding"][:2] == [0, 0] and all(full[i] <= out[i] < full[i] + stride[i] for i in range(2)):
        return schema.Padding.VALID
    if (a["padding"][:2] == transpose_conv_same_crop(out, khw, stride)
            and all(-(-out[i] // stride[i]) == x.shape[1 + i] for i in range(2))):
        return schema.Padding.SAME
    return None


def _transpose_conv(node: Node):
    """TRANSPOSE_CONV computes the output_shape it is given with SAME's or no crop at the top and left."""
    a = node.attrs
    if a["groups"] != 1 or list(a["dilation"]) != [1, 1]:
        raise MccError(f"transpose_conv2d with groups {a['groups']} and dilation {a['dilation']}: TFLite's "
                       "TRANSPOSE_CONV has neither groups nor dilation; compile it for an ONNX target (x86-fp32), "
                       "or rewrite the layer as several ungrouped, undilated transposed convolutions", node=node.name)
    mode = transpose_conv_padding_mode(node)
    if mode is None:
        raise MccError(f"transpose_conv2d crop {a['padding']} with output padding {a['output_padding']} is not "
                       "what TRANSPOSE_CONV's SAME or VALID computes; run the legalize_tflite pass first, which "
                       "crops with a SLICE", node=node.name)
    fields = {"padding": mode, "strideH": a["stride"][0], "strideW": a["stride"][1],
              "fusedActivationFunction": _act(node)}
    return fields, {"output_shape": _int32(node.outputs[0].shape)}


def _transpose_conv_back(site: Site) -> dict:
    o, out = site.options, [int(d) for d in site.params["output_shape"].reshape(-1)]
    x, w = site.inputs[:2]
    if len(out) != 4 or len(x.shape) != 4 or len(w.shape) != 4:
        raise MccError(f"TRANSPOSE_CONV needs a 4-D input, weight and output_shape, got {list(x.shape)}, "
                       f"{list(w.shape)} and {out}")
    stride, khw = [o.strideH, o.strideW], [w.shape[1], w.shape[2]]
    if o.padding not in (schema.Padding.SAME, schema.Padding.VALID) or min(stride) < 1:
        raise MccError(f"TRANSPOSE_CONV padding {o.padding} / stride {stride} is not one TFLite defines")
    top_left = transpose_conv_same_crop(out[1:3], khw, stride) if o.padding == schema.Padding.SAME else [0, 0]
    crops = [transpose_conv_full(x.shape[1 + i], khw[i], stride[i], 1) - out[1 + i] - top_left[i] for i in range(2)]
    return {"stride": stride, "padding": top_left + [max(c, 0) for c in crops],
            "output_padding": [max(-c, 0) for c in crops], "dilation": [1, 1], "groups": 1,
            "activation": _act_back(site)}


def _mirror_pad(node: Node):
    """reflect is MIRROR_PAD's REFLECT; edge is its SYMMETRIC (mirror including the edge element) only where no pad
    exceeds 1, where both repeat the edge element once."""
    if node.attrs["mode"] == "edge" and max(node.attrs["pads"]) > 1:
        raise MccError(f"edge padding by {max(node.attrs['pads'])} has no TFLite form: MIRROR_PAD's SYMMETRIC repeats "
                       "the edge element only for a pad of 1 (further out it mirrors the input); use reflect "
                       "padding or pads of at most 1, or compile for an x86 (ONNX) target", node=node.name)
    mode = schema.MirrorPadMode.REFLECT if node.attrs["mode"] == "reflect" else schema.MirrorPadMode.SYMMETRIC
    return {"mode": mode}, {"paddings": _int32(node.attrs["pads"]).reshape(-1, 2)}


def _mirror_pad_back(site: Site) -> dict:
    pads = [int(p) for p in site.params["paddings"].reshape(-1)]
    if site.options.mode == schema.MirrorPadMode.SYMMETRIC and max(pads) > 1:
        raise MccError(f"MIRROR_PAD SYMMETRIC by {max(pads)} has no IR pad form (mcc reads it as edge padding, which "
                       "it equals for pads of at most 1)")
    return {"pads": pads, "value": 0.0,
            "mode": "reflect" if site.options.mode == schema.MirrorPadMode.REFLECT else "edge"}


def _gather_back(site: Site) -> dict:
    if site.options.batchDims:
        raise MccError(f"GATHER with batch_dims {site.options.batchDims} has no IR gather form (mcc reads batch_dims 0)")
    return {"axis": int(site.options.axis) % len(site.inputs[0].shape)}


def _batch_matmul_back(site: Site) -> dict:
    if site.options.adjX or site.options.adjY:
        raise MccError("BATCH_MATMUL with adj_x or adj_y has no IR form; mcc reads it untransposed")
    return {}


def _clip_is(lo, hi):
    return lambda node: float(node.attrs["min"]) == lo and float(node.attrs["max"]) == hi


TABLE: list[Mapping] = [
    Mapping("conv2d", "CONV_2D", "Conv2DOptions", encode=_conv, decode=_conv_back),
    Mapping("depthwise_conv2d", "DEPTHWISE_CONV_2D", "DepthwiseConv2DOptions", encode=_depthwise,
            decode=_depthwise_back),
    Mapping("fully_connected", "FULLY_CONNECTED", "FullyConnectedOptions", encode=_fc, decode=_fused_back),
    Mapping("add", "ADD", "AddOptions", encode=_add, decode=_add_back),
    Mapping("sub", "SUB", "SubOptions", encode=_fused, decode=_fused_back),
    Mapping("mul", "MUL", "MulOptions", encode=_fused, decode=_fused_back),
    Mapping("div", "DIV", "DivOptions", encode=_fused, decode=_fused_back),
    Mapping("minimum", "MINIMUM", "MaximumMinimumOptions"),
    Mapping("maximum", "MAXIMUM", "MaximumMinimumOptions"),
    Mapping("relu", "RELU"),
    Mapping("relu6", "RELU6"),
    Mapping("clip", "RELU_N1_TO_1", decode=lambda site: {"min": -1.0, "max": 1.0}, when=_clip_is(-1.0, 1.0)),
    Mapping("clip", "RELU_0_TO_1", decode=lambda site: {"min": 0.0, "max": 1.0}, when=_clip_is(0.0, 1.0)),
    Mapping("sigmoid", "LOGISTIC"),
    Mapping("tanh", "TANH"),
    Mapping("hardswish", "HARD_SWISH"),
    Mapping("leaky_relu", "LEAKY_RELU", "LeakyReluOptions", encode=lambda n: ({"alpha": float(n.attrs["alpha"])}, {}),
            decode=lambda site: {"alpha": f32(site.options.alpha)}),
    Mapping("prelu", "PRELU"),
    Mapping("softmax", "SOFTMAX", "SoftmaxOptions", encode=_softmax,
            decode=lambda site: {"axis": -1, "beta": f32(site.options.beta)}),
    Mapping("max_pool2d", "MAX_POOL_2D", "Pool2DOptions", encode=_pool, decode=_pool_back("max_pool2d")),
    Mapping("avg_pool2d", "AVERAGE_POOL_2D", "Pool2DOptions", encode=_pool, decode=_pool_back("avg_pool2d")),
    Mapping("mean", "MEAN", "ReducerOptions", ("axes",), _mean,
            lambda site: {"axes": [int(a) for a in site.params["axes"].reshape(-1)],
                          "keepdims": bool(site.options.keepDims)}),
    Mapping("concat", "CONCATENATION", "ConcatenationOptions",
            encode=lambda n: ({"axis": int(n.attrs["axis"]), "fusedActivationFunction": AF.NONE}, {}),
            decode=lambda site: {"axis": int(site.options.axis)}),
    Mapping("reshape", "RESHAPE", "ReshapeOptions", ("shape",), _reshape, _reshape_back),
    Mapping("transpose", "TRANSPOSE", "TransposeOptions", ("perm",),
            lambda n: ({}, {"perm": _int32(n.attrs["perm"])}),
            lambda site: {"perm": [int(p) for p in site.params["perm"]]}),
    Mapping("pad", "PAD", "PadOptions", ("paddings",), _pad, _pad_back,
            when=lambda n: n.attrs["value"] == 0 and n.attrs["mode"] == "constant"),
    Mapping("pad", "PADV2", "PadV2Options", ("paddings", "value"), _pad, _pad_back,
            when=lambda n: n.attrs["value"] != 0 and n.attrs["mode"] == "constant", like_input=("value",)),
    Mapping("slice", "SLICE", "SliceOptions", ("begin", "size"), _slice, _slice_back,
            when=lambda n: not _is_strided(n)),
    Mapping("slice", "STRIDED_SLICE", "StridedSliceOptions", ("begin", "end", "strides"), _strided_slice,
            _strided_slice_back, when=_is_strided),
    Mapping("split", "SPLIT", "SplitOptions", encode=_split, decode=_split_back, when=_equal_parts,
            leading=("axis",)),
    Mapping("split", "SPLIT_V", "SplitVOptions", ("size_splits", "axis"), _split_v, _split_v_back,
            when=lambda n: not _equal_parts(n)),
    Mapping("resize", "RESIZE_BILINEAR", "ResizeBilinearOptions", ("size",), _resize, _resize_back("bilinear"),
            when=lambda n: n.attrs["mode"] == "bilinear"),
    Mapping("resize", "RESIZE_NEAREST_NEIGHBOR", "ResizeNearestNeighborOptions", ("size",), _resize,
            _resize_back("nearest"), when=lambda n: n.attrs["mode"] == "nearest"),
    Mapping("quantize", "QUANTIZE"),
    Mapping("dequantize", "DEQUANTIZE"),
    # ---- math (issue 14, ops-math) ----
    Mapping("neg", "NEG"),
    Mapping("abs", "ABS"),
    Mapping("sqrt", "SQRT"),
    Mapping("rsqrt", "RSQRT"),
    Mapping("square", "SQUARE"),
    Mapping("exp", "EXP"),
    Mapping("log", "LOG"),
    Mapping("gelu", "GELU", "GeluOptions", encode=lambda n: ({"approximate": n.attrs["approximate"] == "tanh"}, {}),
            decode=lambda site: {"approximate": "tanh" if site.options.approximate else "none"}),
    Mapping("pow", "POW", when=lambda n: n.inputs[0].dtype == n.inputs[1].dtype in ("float32", "int32"),
            unless="TFLite's POW has kernels for float32 ** float32 and int32 ** int32 only; cast the operands to "
                   "one of those in the model, or compile for an ONNX target"),
    Mapping("sum", "SUM", "ReducerOptions", ("axes",), _mean, _reducer_back),
    Mapping("reduce_max", "REDUCE_MAX", "ReducerOptions", ("axes",), _mean, _reducer_back),
    Mapping("reduce_min", "REDUCE_MIN", "ReducerOptions", ("axes",), _mean, _reducer_back),
    Mapping("pad", "MIRROR_PAD", "MirrorPadOptions", ("paddings",), _mirror_pad, _mirror_pad_back,
            when=lambda n: n.attrs["mode"] != "constant"),
    Mapping("lrn", "LOCAL_RESPONSE_NORMALIZATION", "LocalResponseNormalizationOptions", encode=_lrn, decode=_lrn_back),
    # transposed convolution and batched matrix products
    Mapping("transpose_conv2d", "TRANSPOSE_CONV", "TransposeConvOptions", encode=_transpose_conv,
            decode=_transpose_conv_back, leading=("output_shape",), input_order=(1, 0)),
    Mapping("gather", "GATHER", "GatherOptions", decode=_gather_back,
            encode=lambda n: ({"axis": int(n.attrs["axis"]), "batchDims": 0}, {})),
    Mapping("tile", "TILE", params=("multiples",), encode=lambda n: ({}, {"multiples": _int32(n.attrs["multiples"])}),
            decode=lambda site: {"multiples": [int(m) for m in site.params["multiples"].reshape(-1)]}),
    Mapping("depth_to_space", "DEPTH_TO_SPACE", "DepthToSpaceOptions",
            encode=lambda n: ({"blockSize": int(n.attrs["block_size"])}, {}),
            decode=lambda site: {"block_size": int(site.options.blockSize), "mode": "DCR"},
            when=lambda n: n.attrs["mode"] == "DCR"),
    Mapping("space_to_depth", "SPACE_TO_DEPTH", "SpaceToDepthOptions",
            encode=lambda n: ({"blockSize": int(n.attrs["block_size"])}, {}),
            decode=lambda site: {"block_size": int(site.options.blockSize)}),
    Mapping("batch_matmul", "BATCH_MATMUL", "BatchMatMulOptions", encode=lambda n: ({"adjX": False, "adjY": False}, {}),
            decode=_batch_matmul_back),
]

# IR ops that no TFLite builtin computes, with what to do instead (mapping_for's refusal).
NO_BUILTIN = {
    "erf": "TFLite has no ERF builtin; legalize_tflite turns x * 0.5 * (1 + erf(x / sqrt(2))) into GELU, but a lone "
           "erf has no TFLite form: compile for an x86 (ONNX) target, or use gelu in the model",
}

BY_CODE: dict[int, Mapping] = {m.code: m for m in TABLE}


def mapping_for(node: Node) -> Mapping:
    """The row that writes `node`, or an MccError that says what to do."""
    rows = [m for m in TABLE if m.ir_op == node.op]
    for m in rows:
        if m.when(node):
            return m
    if rows:
        lacking = next((m.unless for m in rows if m.unless), "")
        dtypes = " and ".join(t.dtype for t in node.inputs if t is not None)
        raise MccError(f"{node.op} of {dtypes}: {lacking}" if lacking else
                       f"{node.op} with {node.attrs} has no TFLite builtin; run the legalize_tflite pass first",
                       node=node.name)
    if node.op in NO_BUILTIN:
        raise MccError(NO_BUILTIN[node.op], node=node.name)
    raise MccError(f"op '{node.op}' has no TFLite builtin (mcc writes {', '.join(sorted({m.ir_op for m in TABLE}))}); "
                   "run the legalize_tflite pass first", node=node.name)
