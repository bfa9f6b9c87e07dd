"""What each op is, defined once: its layout behaviour, channel axes and the properties passes rely on.

TVM Relax registers such facts on the op (FInferMixedPrecision, layout inference, fusion pattern kind); ONNX keeps
them in prose. mcc registers them here, beside the op set of ir/ops.py, and every pass, backend and reader asks
this module instead of keeping its own list of op names (`test_traits.py` fails when a module spells out a
list of ops that this module can answer).

Traits
- `layout`: how an op meets a layout change. "spatial": reads its first input as a 4-D activation in the graph's
  layout, its weight follows (conv OIHW <-> OHWI, depthwise [C*m,1,kh,kw] <-> [1,kh,kw,C*m]), and writes that
  layout; "elementwise": works in any axis order (axis attributes remapped, operands broadcast); "own": decides its
  output's axis order itself (reshape, transpose, fully_connected's features-last), so layout is not inferred
  through it; "axes": works in any order once its axis attributes are remapped (concat, mean, slice, split, pad,
  softmax).
- `channels`: how output channels relate to input channels, for channel surgery (pruning, equalization):
  "weights": output channels are the weight's out axis and input channels its in axis (conv2d, fully_connected);
  "depthwise": output channel c*m + j reads input channel c; "follow": channel c of the output is channel c of
  every non-constant input (elementwise, pools, pad, resize, batch_norm, mean over spatial axes); "concat":
  ranges of the output's channels come from each input; "reshape": only a flatten whose channel blocks stay
  contiguous carries channels through; "none": the op mixes channels in a way no channel slice survives
  (softmax over channels, transpose, slice and split along channels are checked by the surgery itself).
- `homogeneous`: f(a * x) = a * f(x) for a > 0 (relu and linear layers without bias), so a per-channel scale
  moves through it (cross-layer equalization).
- `shares_quant`: in int8 its output carries its input's quantization parameters (moves or picks values: pools,
  reshape, pad, concat, slice, ...).
- `int16_layer`: TFLite has a 16x8 kernel for it (int16 activations, int8 weights) that mixed precision may keep a
  layer in (quantize_int8's option int16_layers, `mcc compile --fallback int16`).
"""

from __future__ import annotations

from dataclasses import dataclass

LAYOUTS = ("spatial", "elementwise", "axes", "own")
CHANNELS = ("weights", "depthwise", "follow", "concat", "reshape", "none")


@dataclass(frozen=True)
class Traits:
    layout: str
    channels: str
    homogeneous: bool = False
    shares_quant: bool = False
    int16_layer: bool = False

    def __post_init__(self):
        if self.layout not in LAYOUTS or self.channels not in CHANNELS:
            raise ValueError(f"traits {self}: layout must be one of {LAYOUTS}, channels one of {CHANNELS}")


_ELEMENTWISE_UNARY = ("relu6", "sigmoid", "tanh", "hardswish", "hardsigmoid", "silu", "leaky_relu", "clip", "prelu",
                      "quantize", "dequantize")
_ELEMENTWISE_BINARY = ("add", "sub", "mul", "div")
_MATH_ELEMENTWISE = ("neg", "abs", "sqrt", "rsqrt", "square", "exp", "log", "erf", "gelu", "pow")

TRAITS: dict[str, Traits] = {
    "conv2d": Traits("spatial", "weights", homogeneous=True, int16_layer=True),
    "depthwise_conv2d": Traits("spatial", "depthwise", homogeneous=True, int16_layer=True),
    "fully_connected": Traits("own", "weights", homogeneous=True, int16_layer=True),
    "max_pool2d": Traits("spatial", "follow", homogeneous=True, shares_quant=True),
    "avg_pool2d": Traits("spatial", "follow", homogeneous=True, shares_quant=True),
    "resize": Traits("spatial", "follow", shares_quant=True),
    "batch_norm": Traits("spatial", "follow"),
    "relu": Traits("elementwise", "follow", homogeneous=True),
    "identity": Traits("elementwise", "follow", homogeneous=True),
    **{op: Traits("elementwise", "follow", int16_layer=op == "add")
       for op in _ELEMENTWISE_UNARY + _ELEMENTWISE_BINARY},
    "minimum": Traits("elementwise", "follow", shares_quant=True),
    "maximum": Traits("elementwise", "follow", shares_quant=True),
    "pad": Traits("axes", "follow", homogeneous=True, shares_quant=True),
    "softmax": Traits("axes", "none"),
    "mean": Traits("axes", "follow"),
    "concat": Traits("axes", "concat", shares_quant=True),
    "slice": Traits("axes", "none", shares_quant=True),
    "split": Traits("axes", "none", shares_quant=True),
    "reshape": Traits("own", "reshape", shares_quant=True),
    "transpose": Traits("own", "none", shares_quant=True),
    # computed values (float islands in int8)
    **{op: Traits("elementwise", "follow") for op in _MATH_ELEMENTWISE},
    "sum": Traits("axes", "follow"),
    "lrn": Traits("spatial", "none"),
    "batch_matmul": Traits("own", "none"),
    "transpose_conv2d": Traits("spatial", "weights", homogeneous=True),
    # values picked or moved: int8 with their input's parameters
    "reduce_max": Traits("axes", "follow", shares_quant=True),
    "reduce_min": Traits("axes", "follow", shares_quant=True),
    "gather": Traits("axes", "none", shares_quant=True),
    "tile": Traits("axes", "none", shares_quant=True),
    "depth_to_space": Traits("spatial", "none", shares_quant=True),
    "space_to_depth": Traits("spatial", "none", shares_quant=True),
    # binary activations (issue 18): not homogeneous, so equalization does not scale a channel through the sign
    "binary_activation": Traits("elementwise", "follow"),
}


def traits(op: str) -> Traits:
    """The traits of `op`; KeyError names an op that ir/ops.py defines without traits (a test checks none is)."""
    try:
        return TRAITS[op]
    except KeyError:
        raise KeyError(f"op '{op}' has no traits in ir/traits.py") from None


def weighted(op: str) -> bool:
    """True for the ops whose second input is a weight with channel axes (conv2d, depthwise_conv2d,
    fully_connected, transpose_conv2d): see weight_axes."""
    return traits(op).channels in ("weights", "depthwise")


def grouped(node) -> bool:
    """A weighted node with several groups: its input channels are tied to its output channels group by group,
    which channel surgery and equalization do not follow."""
    return node.attrs.get("groups", 1) != 1


def is_homogeneous(node) -> bool:
    """f(a * x) = a * f(x) for a > 0 for this node as configured: a homogeneous op whose fused activation is none
    or relu, and a pad only with value 0."""
    if not traits(node.op).homogeneous or node.attrs.get("activation") not in (None, "relu"):
        return False
    return node.op != "pad" or node.attrs["value"] == 0


def ops_where(**wanted) -> frozenset[str]:
    """The ops whose traits have every given value, e.g. ops_where(layout="spatial")."""
    return frozenset(op for op, t in TRAITS.items() if all(getattr(t, k) == v for k, v in wanted.items()))


def channel_axis(t) -> int:
    """The channel axis of activation `t`: 3 for a 4-D NHWC tensor, else 1 (NCHW, [N, C], [N, C, L])."""
    return 3 if len(t.shape) == 4 and t.layout == "NHWC" else 1


def weight_axes(node) -> tuple[int, int]:
    """(output-channel axis, input-channel axis) of a weighted node's weight, in the layout of its input.

    conv2d: OIHW (1 in) / OHWI (3 in); depthwise_conv2d: [C*m, 1, kh, kw] (out 0) / [1, kh, kw, C*m] (out 3),
    whose input channel is out // multiplier on the same axis; fully_connected: [O, K]; transpose_conv2d: IOHW
    (out 1, in 0) / OHWI (out 0, in 3), whose out axis counts the channels of one group."""
    op, nhwc = node.op, node.inputs[0].layout == "NHWC"
    if op == "conv2d":
        return 0, (3 if nhwc else 1)
    if op == "depthwise_conv2d":
        axis = 3 if nhwc else 0
        return axis, axis
    if op == "fully_connected":
        return 0, 1
    if op == "transpose_conv2d":  # [C_in, C_out/groups, kh, kw] / [C_out/groups, kh, kw, C_in]
        return (0, 3) if nhwc else (1, 0)
    raise ValueError(f"node '{node.name}' ({op}) has no weight with channel axes")
