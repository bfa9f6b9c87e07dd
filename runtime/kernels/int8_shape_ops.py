"""int8 concat, reshape, transpose, slice, split and pad: byte movement, as in TFLite, which never requantizes.

TFLite's int8 CONCATENATION refuses inputs whose scale or zero point differ from the output's, and RESHAPE,
TRANSPOSE, SLICE / STRIDED_SLICE, SPLIT / SPLIT_V and PAD copy bytes whatever the parameters say; so a graph
whose parameters differ across one of these ops has no meaning LiteRT would honour, and mcc refuses it rather
than guess (the quantizer gives them one set of parameters, or puts a quantize node in front). PAD fills with
the quantized pad value: the output zero point for 0, otherwise the value rounded the way the TFLite writer
stores PADV2's constant.
"""

from __future__ import annotations

import numpy as np

from .int8_registry import check_rounding, int8_kernel, per_tensor, require_same_quant, ruled_op, saturate_int8
from .layout import pad_constant
from .registry import KERNELS


@int8_kernel("concat", "reshape", "transpose", "slice", "split")
def move(node, inputs, rules):
    check_rounding(node, rules.rule(ruled_op(node), node.name), "exact")
    for t in node.inputs:
        for y in node.outputs:
            require_same_quant(node, t, y)
    return KERNELS[node.op](node, inputs)


@int8_kernel("pad")
def pad(node, inputs, rules):
    check_rounding(node, rules.rule(node.op, node.name), "exact")
    x_t, y_t = node.inputs[0], node.outputs[0]
    require_same_quant(node, x_t, y_t)
    if node.attrs["mode"] != "constant":  # MIRROR_PAD copies codes
        return KERNELS[node.op](node, inputs)
    scale, zero_point = per_tensor(node, y_t, "output")
    value = saturate_int8(np.round(np.float64(node.attrs["value"]) / np.float64(scale)) + zero_point)
    p, x = node.attrs["pads"], inputs[0]
    widths = [(p[2 * i], p[2 * i + 1]) for i in range(x.ndim)]
    if min(p, default=0) < 0:
        return [np.pad(x, widths, constant_values=value)]  # refuses negative widths as it always did
    return [pad_constant(x, widths, value)]
