"""fold_batchnorm: fold inference batch norm into the weights of the conv / FC before it, else into mul + add.

y = (x - mean) / sqrt(var + eps) * weight + bias is a per-channel affine map s * x + t. After a linear op that
nobody else reads, it becomes part of that op: W' = W * s along the output channel, b' = b * s + t. The arithmetic
is done in float64 and stored as float32, so folding adds a single rounding per weight. torch.fx's `fuse`
(torch.fx.experimental.optimization) folds Conv/Linear + BatchNorm module pairs under the same one-reader rule and
leaves every other batch norm alone; mcc lowers those to mul + add by per-channel constants shaped for the
tensor's layout, so no later pass or backend ever sees a batch_norm.
"""

from __future__ import annotations

import numpy as np

from ..errors import MccError
from ..ir import Graph, Node
from ..ir.traits import channel_axis, grouped, weight_axes, weighted
from .fold_constants import replace_constant
from .manager import PassContext, register_pass


def _affine(node: Node) -> tuple[np.ndarray, np.ndarray]:
    """The batch norm as per-channel (scale, shift), in float64."""
    if not all(t.is_constant for t in node.inputs[1:]):
        raise MccError("batch_norm statistics (mean, var, weight, bias) must be constants; export the model in "
                       "eval mode", node=node.name)
    mean, var, weight, bias = (t.data.astype(np.float64) for t in node.inputs[1:])
    scale = weight / np.sqrt(var + float(node.attrs["eps"]))
    return scale, bias - mean * scale


def _foldable_into(graph: Graph, bn: Node) -> Node | None:
    x = bn.inputs[0]
    op = graph.producer(x)
    if op is None or not weighted(op.op) or op.attrs.get("activation") is not None:
        return None
    if graph.only_reader(x) is None:
        return None
    if not op.inputs[1].is_constant or (op.input(2) is not None and not op.inputs[2].is_constant):
        return None
    if op.inputs[1].dtype != "float32" or (op.op == "fully_connected" and len(x.shape) != 2):
        return None  # a quantized weight, or an FC whose features are not the batch norm's channel axis
    if op.op == "transpose_conv2d" and grouped(op):
        return None  # its weight's out axis counts the channels of one group
    return op


def _fold_into(graph: Graph, op: Node, scale: np.ndarray, shift: np.ndarray) -> None:
    w = op.inputs[1].data.astype(np.float64)
    axis = weight_axes(op)[0]
    shape = [1] * w.ndim
    shape[axis] = -1
    replace_constant(graph, op, 1, (w * scale.reshape(shape)).astype(np.float32))
    bias = op.inputs[2].data.astype(np.float64) if op.input(2) is not None else np.zeros_like(scale)
    new_bias = (bias * scale + shift).astype(np.float32)
    if op.input(2) is not None:
        replace_constant(graph, op, 2, new_bias)
    else:
        op.inputs[2:] = [graph.constant(f"{op.name}.bias", new_bias)]


def _lower_to_mul_add(graph: Graph, bn: Node, scale: np.ndarray, shift: np.ndarray) -> None:
    x, y = bn.inputs[0], bn.outputs[0]
    shape = [1] * len(x.shape)
    shape[channel_axis(x)] = -1
    index = graph.nodes.index(bn)
    s = graph.constant(f"{bn.name}.scale", scale.reshape(shape).astype(np.float32))
    t = graph.constant(f"{bn.name}.shift", shift.reshape(shape).astype(np.float32))
    mul = graph.add_node("mul", [x, s], name=f"{bn.name}.mul", index=index, source=bn.source)
    add = graph.add_node("add", [mul.outputs[0], t], name=f"{bn.name}.add", index=index + 1, source=bn.source)
    add.outputs = [y]  # the batch norm's output tensor keeps its name and its readers
    graph.remove_node(bn)
    return mul


@register_pass("fold_batchnorm", requires=("float",))
def fold_batchnorm(graph: Graph, ctx: PassContext) -> Graph:
    for bn in [n for n in graph.nodes if n.op == "batch_norm"]:
        scale, shift = _affine(bn)
        gamma = np.abs(bn.inputs[3].data.astype(np.float32))
        op = _foldable_into(graph, bn)
        if op is not None:
            _fold_into(graph, op, scale, shift)
            graph.bn_fold[op.name] = graph.bn_fold.get(op.name, 1.0) * scale
            graph.bypass(bn)
            ctx.count("folded")
        else:
            op = _lower_to_mul_add(graph, bn, scale, shift)
            ctx.count("lowered_to_mul_add")
        graph.bn_gamma[op.name] = gamma
    return graph
