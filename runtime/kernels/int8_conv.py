"""int8 conv2d and depthwise_conv2d: TFLite's ConvPerChannel / DepthwiseConvPerChannel arithmetic.

The same loops serve TFLite's 16x8 kernels (int16 activations, zero point 0, int8 weights, int64 bias), which
differ only in the output stage's rule ("conv2d/int16" in runtime.rules) and the output type.

Each output is sum(w * (x - x_zp)) over the window, skipping positions in the padding (so padding means the real
value 0), plus the int32 bias, then the output stage of the run's rule. Weights are int8, symmetric, per output
channel (or per tensor, broadcast). The sums come from int8_gemm (a float GEMM on the integers, exact) or
int8_depthwise (a vector loop, as exact), and integer sums do not depend on order, so the rule alone decides
bit-exactness. A conv (one group) or fully_connected on int8 input whose weights are binary ({-k, +k} per output
channel) and whose input is binary too (two codes, one the zero point) takes int8_binary's packed XNOR-popcount
kernel instead, which computes the same integers.
"""

from __future__ import annotations

import numpy as np

from ...errors import MccError
from .int8_binary import binary_gemm, binary_weights
from .int8_depthwise import depthwise, pack_depthwise
from .int8_gemm import conv_gemm, pack_gemm
from .int8_output import ROW_ROUNDINGS, RowRequant, activation_bounds, product_scale
from .int8_registry import check_rounding, int8_kernel, per_tensor, quant, ruled_op
from .layout import from_nhwc, to_nhwc, window_output_hw
from .packing import packed


def weight_scales(node, w_tensor, out_channels: int, channel_axis: int) -> np.ndarray:
    """Per-output-channel float32 scales of symmetric int8 weights (a per-tensor scale is broadcast)."""
    q = quant(node, w_tensor, "weight")
    if np.any(q.zero_point != 0):
        raise MccError(f"{node.op}: weight '{w_tensor.name}' has nonzero zero points; TFLite's int8 kernels take "
                       "symmetric weights (zero point 0) and ignore any other", node=node.name)
    if q.scale.size == 1:
        return np.full(out_channels, q.scale[0], np.float32)
    if q.scale.size != out_channels or q.axis != channel_axis:
        raise MccError(f"{node.op}: weight '{w_tensor.name}' has {q.scale.size} scales along axis {q.axis}; "
                       f"per-channel weights need {out_channels} scales along axis {channel_axis}", node=node.name)
    return q.scale.astype(np.float32)


def int32_bias(node, bias, out_channels: int, rule) -> np.ndarray:
    """The bias as int64 (zeros when absent): int32 for int8 layers, int64 for 16x8 ones (TFLite's 16x8 conv also
    takes int32, which its default resolver runs through an optimized kernel that mcc has not measured, so that is
    refused). XNNPACK's delegate takes an int8 layer only when its int32 bias carries quantization parameters;
    without them LiteRT runs TFLite's optimized kernel (ruy), whose rounding depends on the CPU, so that case is
    refused rather than silently computed another way."""
    if bias is None:
        return np.zeros(out_channels, np.int64)
    want = np.int64 if node.inputs[0].dtype == "int16" else np.int32
    if bias.dtype != want:
        raise MccError(f"{node.op}: an int8 layer needs an int32 bias, a 16x8 layer an int64 one, of scale "
                       f"s_in * s_w; got {bias.dtype}", node=node.name)
    if rule.kernels == "xnnpack" and node.inputs[2].quant is None:
        raise MccError(f"{node.op}: bias '{node.inputs[2].name}' has no quantization parameters, so LiteRT's XNNPACK "
                       "delegate leaves the op to TFLite's optimized kernel, which mcc does not reproduce; give the "
                       "bias the scale s_in * s_w (zero point 0)", node=node.name)
    return bias.astype(np.int64)


def layer_requant(node, weight, bias, rules, out_channels: int, channel_axis: int) -> tuple[np.ndarray, RowRequant]:
    """The int64 bias and the output stage of a conv / fully_connected node under the run's rule, prepared once and
    cached on the weight array (packing.packed) per rule, input and output quantization, activation, output type
    and bias array (the entry holds the bias, so its id stays unique): an IR constant is never mutated, and a
    weight array carries one quantization, so repeated runs of a graph skip the preparation and its checks."""
    s_in, _ = per_tensor(node, node.inputs[0], "input")
    s_out, zp_out = per_tensor(node, node.outputs[0], "output")
    rule = rules.rule(ruled_op(node), node.name)
    bias_quant = bias is not None and node.inputs[2].quant is not None
    key = ("requant", rule, s_in, s_out, zp_out, node.attrs["activation"], node.inputs[0].dtype,
           node.outputs[0].dtype, id(bias), bias_quant)  # a tuple: formatting floats into a string cost 15 us

    def prepare(_):
        s_w = weight_scales(node, node.inputs[1], out_channels, channel_axis)
        wide_bias = int32_bias(node, bias, out_channels, rule)
        check_rounding(node, rule, *ROW_ROUNDINGS)
        bounds = activation_bounds(node.attrs["activation"], s_out, zp_out, rule.kernels, node.outputs[0].dtype,
                                   node)
        return bias, wide_bias, RowRequant(product_scale(s_in, s_w, s_out, rule), rule, zp_out, bounds)

    return packed(weight, key, prepare)[1:]


def _ohwi(node, w):
    """The conv's weight as OHWI; depthwise [1,kh,kw,C*m] (NHWC) or [C*m,1,kh,kw] (NCHW) as the OHWI weight of a
    conv with C groups, [C*m,kh,kw,1]."""
    nhwc = node.inputs[0].layout == "NHWC"
    if node.op == "conv2d":
        return to_nhwc(w, node.inputs[0].layout)
    return w.transpose(3, 1, 2, 0) if nhwc else w.transpose(0, 2, 3, 1)


def _conv(node, inputs, rules, channel_axis):
    x, w, bias = (inputs + [None])[:3]
    layout = node.inputs[0].layout
    _, zp_in = per_tensor(node, node.inputs[0], "input")
    x = to_nhwc(x, layout)
    w_ohwi = _ohwi(node, w)
    out_c, kh, kw, group_c = w_ohwi.shape
    bias, requant = layer_requant(node, w, bias, rules, out_c, channel_axis)
    out_h, out_w = window_output_hw(x, node, kh, kw)
    window = (node.attrs["stride"], node.attrs["dilation"], node.attrs["padding"], out_h, out_w)
    dtype = node.outputs[0].dtype
    key = f"{node.op}:{layout}:{x.dtype.char}"  # the type code: formatting a dtype costs microseconds per node
    if node.op == "depthwise_conv2d":
        taps = packed(w, key, lambda w: pack_depthwise(_ohwi(node, w), str(x.dtype)))
        y = depthwise(x, zp_in, taps, *window, bias, requant, dtype)
    else:
        binary = binary_weights(w, key, lambda w: _ohwi(node, w)) if _packs(node, x, group_c) else None
        y = None if binary is None else binary_gemm(x, zp_in, binary, (kh, kw), *window, bias, requant, dtype)
        if y is None:
            gemm = packed(w, key, lambda w: pack_gemm(_ohwi(node, w), x.shape[3] // group_c, str(x.dtype)))
            y = conv_gemm(x, zp_in, gemm, (kh, kw), *window, bias, requant, dtype)
    return [from_nhwc(y, layout)]


def _packs(node, x, group_c: int) -> bool:
    """Whether the packed binary kernel may take the node, if its weight is binary: one group, int8 input."""
    return x.dtype == np.int8 and x.shape[3] == group_c


@int8_kernel("conv2d")
def conv2d(node, inputs, rules):
    return _conv(node, inputs, rules, 0)


@int8_kernel("depthwise_conv2d")
def depthwise_conv2d(node, inputs, rules):
    return _conv(node, inputs, rules, 3 if node.inputs[0].layout == "NHWC" else 0)
