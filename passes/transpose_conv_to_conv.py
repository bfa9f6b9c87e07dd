"""transpose_conv_to_conv: in the int8 pipelines, rewrite transpose_conv2d as conv2d over the zero-upsampled input,
so that it runs in int8 kernels mcc already has bit-exact on every target.

mcc has no int8 transposed-convolution kernel, so a transpose_conv2d would stay a float island, and a float island
is exact only where mcc's float sums equal the peer's: onnxruntime's ConvTranspose (MLAS, ORT_ENABLE_ALL) differs
from mcc's float kernel by ~1e-3 of the range, enough for the QUANTIZE after it to flip codes. A transposed
convolution with stride s, dilation d, kernel k, crop p (before) / q (after) and output padding e is, per spatial
axis, a stride-1 convolution with dilation d of the spatially flipped, in/out-swapped weight (per group) over the
input with s - 1 zeros between its elements, padded by d * (k - 1) - p before and d * (k - 1) - q + e after (a
negative padding crops). Here that is four ops, each exact in int8 (zeros are the zero point):
- pad the channels with (s^2 - 1) x as many zeros after them (a pad rather than a concat with a zero constant:
  the same values without (s^2 - 1) x input-size bytes of zeros in the file);
- depth_to_space (DCR, block s): the input's channels come first, so each input pixel lands at (h * s, w * s) with
  zeros in the rest of its s x s block; the s - 1 zeros after the last element serve as padding after;
- slice: the crops, where a padding is negative or shorter than those s - 1 zeros;
- conv2d with the remaining (non-negative) padding, stride 1, the same dilation, groups, bias and activation.
Strides must be equal (depth_to_space has one block size) except along an axis of input size 1, where a stride
inserts nothing; other transposed convolutions are left as they are (notes: "kept", with the reason). The cost is
MACs: the conv multiplies every zero, about s^2 times the transposed convolution's MACs (4x for stride 2).

The TFLite converter keeps TRANSPOSE_CONV (with int8 kernels in LiteRT), and onnxruntime has no integer
ConvTranspose; mcc could add an exact int8 TRANSPOSE_CONV kernel for the TFLite targets later, which would drop
the MAC cost there. This pass runs on the float graph before to_nhwc, so the layout pass, legalization (explicit
padding, grouped conv to depthwise) and the quantizer's calibration all see the rewritten ops.
"""

from __future__ import annotations

import numpy as np

from ..ir import Graph, Node
from ..ir.ops import infer_node, transpose_conv_weight_dims
from ..ir.traits import channel_axis
from .manager import PassContext, register_pass


def _spatial_axes(node: Node) -> tuple[int, int]:
    return (1, 2) if node.inputs[0].layout == "NHWC" else (2, 3)


def _block(node: Node) -> int | None:
    """The one stride every spatial axis of input size > 1 uses (1 if none has), or None if they differ."""
    hw = [node.inputs[0].shape[a] for a in _spatial_axes(node)]
    strides = {s for s, size in zip(node.attrs["stride"], hw) if size > 1}
    return None if len(strides) > 1 else next(iter(strides), 1)


def conv_weight(node: Node) -> np.ndarray:
    """The conv2d weight (OIHW, or OHWI under NHWC) that computes `node`'s transposed convolution over its
    zero-upsampled input: per group, input and output channels swapped, and the kernel flipped in H and W."""
    o, i, kh, kw = transpose_conv_weight_dims(node)
    w = node.inputs[1].data
    nhwc = node.inputs[0].layout == "NHWC"
    iohw = w.transpose(3, 0, 1, 2) if nhwc else w  # [C_in, C_out/g, kh, kw]
    g = node.attrs["groups"]
    oihw = iohw.reshape(g, i // g, o, kh, kw).transpose(0, 2, 1, 3, 4).reshape(g * o, i // g, kh, kw)
    oihw = oihw[:, :, ::-1, ::-1]
    return np.ascontiguousarray(oihw.transpose(0, 2, 3, 1) if nhwc else oihw)


def _rewrite(graph: Graph, node: Node, b: int) -> None:
    x, a = node.inputs[0], node.attrs
    axes = _spatial_axes(node)
    _, _, kh, kw = transpose_conv_weight_dims(node)
    at = graph.position(node)
    name = node.name

    def before(op, inputs, attrs, suffix):
        nonlocal at
        new = graph.add_node(op, inputs, attrs, name=f"{name}/{suffix}", index=at, source=node.source)
        at += 1
        return new.outputs[0]

    z = x
    if b > 1:
        pads = [0] * 8
        pads[2 * channel_axis(x) + 1] = (b * b - 1) * x.shape[channel_axis(x)]
        stacked = before("pad", [x], {"pads": pads, "value": 0.0}, "zero_channels")
        z = before("depth_to_space", [stacked], {"block_size": b, "mode": "DCR"}, "upsample")
    # Per axis: the upsampled length U, the padding wanted before / after, what z has and what conv2d adds.
    cuts, pad_before, pad_after = [], [], []
    for i, (axis, k) in enumerate(zip(axes, (kh, kw))):
        size, d = x.shape[axis], a["dilation"][i]
        upsampled = (size - 1) * b + 1
        before_pad = d * (k - 1) - a["padding"][i]
        after_pad = d * (k - 1) - a["padding"][2 + i] + a["output_padding"][i]
        start, end = max(0, -before_pad), min(z.shape[axis], upsampled + after_pad)
        if (start, end) != (0, z.shape[axis]):
            cuts.append((axis, start, end))
        pad_before.append(max(0, before_pad))
        pad_after.append(max(0, upsampled + after_pad - z.shape[axis]))
    if cuts:
        axes_, starts, ends = (list(c) for c in zip(*cuts))
        z = before("slice", [z], {"starts": starts, "ends": ends, "axes": axes_, "steps": [1] * len(cuts)}, "crop")
    w = graph.constant(f"{node.inputs[1].name}/as_conv", conv_weight(node))
    node.op, node.inputs = "conv2d", [z, w] + node.inputs[2:]
    node.attrs = {"stride": [1, 1], "padding": pad_before + pad_after, "dilation": list(a["dilation"]),
                  "activation": a["activation"], "groups": a["groups"]}
    infer_node(node)


@register_pass("transpose_conv_to_conv", requires=("float",))
def transpose_conv_to_conv(graph: Graph, ctx: PassContext) -> Graph:
    """Rewrite every transpose_conv2d with a constant weight and one block size into ops with exact int8 kernels."""
    for node in [n for n in graph.nodes if n.op == "transpose_conv2d"]:
        b = _block(node)
        if not node.inputs[1].is_constant:
            ctx.notes.setdefault("kept", {})[node.name] = "its weight is not a constant"
        elif b is None:
            ctx.notes.setdefault("kept", {})[node.name] = (f"strides {node.attrs['stride']} differ; depth_to_space "
                                                           "has one block size")
        else:
            _rewrite(graph, node, b)
            ctx.count("rewritten")
    return graph if "rewritten" in ctx.notes else ctx.unchanged(graph)
