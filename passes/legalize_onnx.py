"""legalize_onnx: rewrite an NCHW graph (after to_nchw) into the subset that formats.onnx.writer expresses.

It runs after quantize_int8, on the graph the arm-int8 target emits, so it never changes a weight, a scale or a
zero point: it moves explicit padding back into the operators and reshapes or isolates what ONNX has no operator
for, each rewrite counted in the pass notes and visible in `mcc inspect --after legalize_onnx`.

Rewrites
- a constant `pad` of H and W read only by a conv2d / depthwise_conv2d (value 0) or a max_pool2d (a value no
  input can exceed) becomes the operator's own padding: legalize_tflite put it there because TFLite's SAME pads
  the odd pixel after, while ONNX takes explicit [top, left, bottom, right]. In int8, QLinearConv pads with the
  input zero point, the code of the real 0 that the pad wrote, so the integers do not change;
- fully_connected over a rank > 2 input becomes reshape to [rows, K], fully_connected, reshape back (Gemm and
  QGemm take matrices);
- an int8 mean over trailing axes that are not all the axes from 2 on, or without keepdims, becomes reshape to
  [1, rows, reduced], mean over axis 2, reshape (QLinearGlobalAveragePool averages every axis from 2 on);
- an int8 op that onnxruntime has no integer operator for (sub; mean over leading axes; softmax with beta != 1;
  bilinear resize, whose int8 Resize truncates) becomes a float island: dequantize its inputs, compute in float,
  quantize to the op's output parameters, as onnxruntime's QDQ form would run it; the note "float_islands" lists
  them.

- a transpose or reshape of a dequantize's output moves before it, into int8 (see _move_before_dequantize).

onnxruntime's own optimizer fuses Pad into Conv at load time (PadFusion, from ORT_ENABLE_BASIC); mcc does it in the
IR, so the emitted file is the optimized one at every optimization level and mcc's runtime executes that file.
"""

from __future__ import annotations

import numpy as np

from ..errors import MccError
from ..formats.onnx.opmap import PADS_ATTRIBUTE, global_pool_axes, is_int8, row_for
from ..ir import Graph, Node, QuantParams, Tensor
from ..ir.ops import infer_node
from .manager import PassContext, register_pass



def _lowest(x: Tensor, value: float) -> bool:
    """Whether padding with `value` never changes a max over `x`: the lowest float, or in int8 a value whose
    code (as the int8 pad kernel rounds it) is -128."""
    if x.dtype == "float32":
        return value <= np.finfo(np.float32).min
    q = x.quant
    return np.round(np.float64(value) / np.float64(q.scale[0])) + int(q.zero_point[0]) <= -128


def _fold_pad(graph: Graph, node: Node) -> bool:
    pad = graph.producer(node.inputs[0])
    if pad is None or pad.op != "pad" or pad.attrs["mode"] != "constant" or pad.inputs[0].layout != "NCHW":
        return False
    y, p = pad.outputs[0], pad.attrs["pads"]
    if graph.only_reader(y) is None or any(p[:4]) or min(p) < 0:
        return False
    value = float(pad.attrs["value"])
    if (value != 0.0) if node.op != "max_pool2d" else not _lowest(pad.inputs[0], value):
        return False
    top, bottom, left, right = p[4:]
    t, l, b, r = node.attrs["padding"]
    node.attrs["padding"] = [t + top, l + left, b + bottom, r + right]
    node.inputs[0] = pad.inputs[0]
    graph.remove_node(pad)
    infer_node(node)
    return True


def _reshape(graph: Graph, x: Tensor, shape, name: str, index: int) -> Tensor:
    out = graph.add_node("reshape", [x], {"shape": [int(d) for d in shape]}, name=name, index=index).outputs[0]
    out.quant = x.quant
    return out


def _around(graph: Graph, node: Node, x_shape) -> None:
    """Run `node` on its input reshaped to `x_shape` (None: as it is), then reshape its result back to its
    output's shape."""
    x, y = node.inputs[0], node.outputs[0]
    if x_shape is not None:
        node.inputs[0] = _reshape(graph, x, x_shape, f"{node.name}/flatten", graph.nodes.index(node))
    inner = Tensor(graph.unique_name(f"{y.name}/{node.op}"), quant=y.quant)
    node.outputs = [inner]
    infer_node(node)
    after = Node("reshape", graph.unique_name(f"{node.name}/reshape"), [inner], [y], {"shape": list(y.shape)})
    graph.nodes.insert(graph.nodes.index(node) + 1, after)
    infer_node(after)


def _flatten_fc(graph: Graph, node: Node) -> None:
    x = node.inputs[0]
    _around(graph, node, (int(np.prod(x.shape[:-1])), x.shape[-1]))


def _trailing_mean(graph: Graph, node: Node) -> bool:
    """An int8 mean over a trailing block of axes as a mean that keeps its dimensions over every axis from 2 on:
    of the input itself when the block starts at axis 2, else of the input reshaped to [1, rows, reduced]."""
    x = node.inputs[0]
    rank = len(x.shape)
    axes = sorted({a % rank for a in node.attrs["axes"]})
    if axes != list(range(axes[0], rank)):
        return False
    first = axes[0]
    # the new axes before _around infers the node: with the old ones a [1, rows, reduced] mean over axes 1 and 2
    # would shrink the rows too
    node.attrs.update(axes=list(range(2, rank if first == 2 else 3)), keepdims=True)
    _around(graph, node, None if first == 2 else (1, int(np.prod(x.shape[:first])), int(np.prod(x.shape[first:]))))
    return True


def _dequantized(q: QuantParams, data: np.ndarray) -> np.ndarray:
    """(q - zp) * s in float32, per channel along q.axis: what DequantizeLinear computes."""
    shape = [1] * data.ndim
    if q.axis is not None:
        shape[q.axis] = -1
    zp, s = q.zero_point.astype(np.float32).reshape(shape), q.scale.astype(np.float32).reshape(shape)
    return ((data.astype(np.float32) - zp) * s).astype(np.float32)


def _float_island(graph: Graph, node: Node) -> None:
    """dequantize -> `node` in float -> quantize to the output's parameters; the output tensor is kept."""
    for i, t in enumerate(node.inputs):
        if t is None or t.dtype != "int8":
            continue
        if t.is_constant:
            node.inputs[i] = graph.constant(f"{t.name}/float", _dequantized(t.quant, t.data))
        else:
            node.inputs[i] = graph.add_node("dequantize", [t], name=f"{node.name}/{t.name}/dequantize",
                                            index=graph.nodes.index(node)).outputs[0]
    y = node.outputs[0]
    node.outputs = [Tensor(graph.unique_name(f"{y.name}/float"))]
    infer_node(node)
    q = Node("quantize", graph.unique_name(f"{node.name}/quantize"), [node.outputs[0]], [y], {"dtype": y.dtype})
    graph.nodes.insert(graph.nodes.index(node) + 1, q)
    infer_node(q)


def _move_before_dequantize(graph: Graph, node: Node) -> bool:
    """dequantize -> transpose / reshape (the layout pass's way into a float island or to a float graph output)
    becomes transpose / reshape -> dequantize: the same values, moved as int8. onnxruntime 1.32's QDQ propagation
    pushes such a node through a DequantizeLinear itself and then fails to load the model ("output_dtype INT8
    does not match y_zero_point type UINT8" on the QuantizeLinear it writes)."""
    dq = graph.producer(node.inputs[0])
    if dq is None or dq.op != "dequantize" or graph.only_reader(node.inputs[0]) is not node:
        return False
    moved = graph.add_node(node.op, [dq.inputs[0]], dict(node.attrs), name=f"{node.name}/int8",
                           index=graph.nodes.index(dq)).outputs[0]
    moved.quant = dq.inputs[0].quant
    dq.inputs[0] = moved
    infer_node(dq)
    graph.bypass(node)  # a graph output's name passes to the dequantize's output
    return True


@register_pass("legalize_onnx", requires=("nchw",))
def legalize_onnx(graph: Graph, ctx: PassContext) -> Graph:
    """Rewrite `graph` (NCHW) in place into operators that the ONNX writer expresses, as the docstring lists."""
    wide = next((n for n in graph.nodes if n.outputs[0].dtype == "int16"), None)
    if wide is not None:
        # QLinearConv, QGemm and QLinearAdd take 8-bit activations only; an int16 QDQ form would run in float
        # in onnxruntime, which is not TFLite's 16x8 arithmetic, so no exact ONNX form is claimed.
        raise MccError(f"'{wide.name}' ({wide.op}) computes with int16 activations (int16_layers), which "
                       "onnxruntime's integer operators (QLinearConv, QGemm, QLinearAdd) do not take; compile "
                       "x86-int8 without int16_layers, or use --target arm-int8 for 16x8 layers", node=wide.name)
    for node in list(graph.nodes):
        if node.op in PADS_ATTRIBUTE and _fold_pad(graph, node):
            ctx.count("pads_folded")
        elif node.op == "fully_connected" and len(node.inputs[0].shape) > 2:
            _flatten_fc(graph, node)
            ctx.count("fully_connected_flattened")
        elif node.op == "mean" and is_int8(node) and not global_pool_axes(node) and _trailing_mean(graph, node):
            ctx.count("means_reshaped")
        elif node.op in ("transpose", "reshape") and _move_before_dequantize(graph, node):
            ctx.count("moved_before_dequantize")
    islands = [n for n in graph.nodes if is_int8(n) and row_for(n) is None]
    for node in islands:
        _float_island(graph, node)
    if islands:
        ctx.note("float_islands", [n.name for n in islands])
    return graph
