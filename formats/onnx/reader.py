"""Read an ONNX file that mcc wrote back into an NCHW IR graph: the inverse of formats.onnx.writer.

This is not the ONNX frontend (frontend/onnx_loader.py reads users' float models, in all their variety). It reads
the one form mcc emits, through the same table the writer uses (formats.onnx.opmap), so that the runtime and
`mcc validate` execute the file that was emitted rather than the graph it came from: QOperator nodes become int8 IR
nodes, the quantization comes back from the operators' scale / zero-point inputs (per-channel weights, with the
int32 bias at scale s_in * s_w) and from the graph's quantization_annotation (every other int8 tensor), the
ai.mcc table functions become the IR ops they are named after, and a Relu / Clip after an operator that takes a
fused activation becomes that activation again (an int8 Clip by matching its bounds against each activation's).
onnx's own reference evaluator (onnx.reference) executes a file; mcc lifts it into its IR instead, so every
intermediate tensor keeps the name and the quantization that the compiler gave it. Imports numpy and onnx only
(the runtime is imported only to match an int8 Clip's bounds, as the writer computed them).
"""

from __future__ import annotations

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import helper, numpy_helper

from ...errors import MccError
from ...ir import Graph, Node, QuantParams, Tensor
from ...ir.names import claim_unique
from ...ir.ops import infer_node
from ...ir.traits import traits
from .. import FormatArithmetic
from .opmap import BY_ONNX, DTYPE_FROM_ONNX, MCC_DOMAIN, MS_DOMAIN, TABLE_OPS, Site, takes_activation

_FLOAT_ACTIVATIONS = {"relu": "relu", "relu6": "relu6"}


def _parse(data: bytes, path) -> onnx.ModelProto:
    try:
        model = onnx.ModelProto.FromString(bytes(data))
    except DecodeError as e:
        raise MccError(f"not an ONNX model ({e}); read back only files that mcc compiled", path=path) from None
    domains = {o.domain for o in model.opset_import}
    unknown = sorted(domains - {"", "ai.onnx", MS_DOMAIN, MCC_DOMAIN})
    strange = [f.name for f in model.functions if f.domain != MCC_DOMAIN or f.name not in TABLE_OPS]
    if not model.graph.node or unknown or strange:
        raise MccError(f"this ONNX file was not written by mcc (operator domains {unknown}, functions {strange}, "
                       f"{len(model.graph.node)} nodes); load a user's model with the ONNX frontend instead", path=path)
    return model


def _type(vi: onnx.ValueInfoProto, path) -> tuple[str, tuple]:
    t = vi.type.tensor_type
    if t.elem_type not in DTYPE_FROM_ONNX or any(not d.HasField("dim_value") for d in t.shape.dim):
        raise MccError(f"value '{vi.name}' has no fixed shape and mcc dtype; mcc writes both for every value",
                       path=path)
    return DTYPE_FROM_ONNX[t.elem_type], tuple(d.dim_value for d in t.shape.dim)


class _Reader:
    def __init__(self, model: onnx.ModelProto, path):
        g = model.graph
        self.path = path
        self.arrays = {i.name: numpy_helper.to_array(i) for i in g.initializer}
        self.types = {vi.name: _type(vi, path) for vi in [*g.input, *g.output, *g.value_info]}
        self.quant = {}
        for a in g.quantization_annotation:
            names = {p.key: p.value for p in a.quant_parameter_tensor_names}
            try:
                scale, zero_point = (self.arrays[names[k]] for k in ("SCALE_TENSOR", "ZERO_POINT_TENSOR"))
            except KeyError as e:
                raise MccError(f"the quantization annotation of '{a.tensor_name}' names no initializer {e}; "
                               "mcc annotates every int8 tensor with its scale and zero-point initializers",
                               path=path) from None
            self.quant[a.tensor_name] = QuantParams(scale.reshape(-1), zero_point.reshape(-1).astype(np.int64))
        self.tensors: dict[str, Tensor] = {}
        self.taken: set = set()

    def tensor(self, name: str) -> Tensor | None:
        if name == "":
            return None
        if name not in self.tensors:
            if name in self.arrays:
                t = Tensor(name, quant=self.quant.get(name), data=self.arrays[name])
            elif name in self.types:
                dtype, shape = self.types[name]
                t = Tensor(name, shape, dtype, quant=self.quant.get(name))
            else:
                raise MccError(f"value '{name}' is neither an initializer nor typed in the graph", path=self.path)
            self.tensors[name] = t
        return self.tensors[name]

    def unique(self, base: str) -> str:
        return claim_unique(self.taken, base)

    def node(self, n: onnx.NodeProto) -> Node:
        key = (n.domain, "") if n.domain == MCC_DOMAIN else ("" if n.domain == "ai.onnx" else n.domain, n.op_type)
        if key not in BY_ONNX:
            raise MccError(f"operator {n.domain or 'ai.onnx'}:{n.op_type} is not one mcc writes", path=self.path,
                           node=n.name)
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        site = Site(n.op_type, attrs, [self.tensor(i) for i in n.input])
        op, inputs, ir_attrs = BY_ONNX[key].decode(site)
        outputs = [self.tensor(o) for o in n.output]
        if traits(op).layout == "spatial":
            inputs[0].layout = "NCHW"
        node = Node(op, self.unique(n.name or outputs[0].name), inputs, outputs, ir_attrs)
        stored = [(o.shape, o.dtype) for o in outputs]
        infer_node(node)
        for o, (shape, dtype) in zip(outputs, stored):
            if (o.shape, o.dtype) != (shape, dtype):
                raise MccError(f"{n.op_type} output '{o.name}' is typed {dtype}{list(shape)} but mcc's {op} computes "
                               f"{o.dtype}{list(o.shape)}; the file is inconsistent", path=self.path, node=n.name)
        return node


def _fold_activation(graph: Graph, act_node: Node, activation: str) -> bool:
    """Make `activation` the fused activation of the producer of act_node's input, when that is what it was."""
    x = act_node.inputs[0]
    producer = graph.producer(x)
    if (producer is None or not takes_activation(producer.op) or producer.attrs.get("activation") is not None
            or graph.only_reader(x) is not act_node):
        return False
    producer.attrs["activation"] = activation
    producer.outputs[0] = act_node.outputs[0]
    graph.remove_node(act_node)
    return True


def _float_activation(node: Node) -> str | None:
    if node.op in _FLOAT_ACTIVATIONS:
        return _FLOAT_ACTIVATIONS[node.op]
    if node.op == "clip" and (node.attrs["min"], node.attrs["max"]) == (-1.0, 1.0):
        return "relu_n1_to_1"
    return None


def _int8_activation(graph: Graph, clip: Node, lo: int, hi: int, path, arithmetic: FormatArithmetic) -> str:
    """The fused activation whose int8 bounds are [lo, hi] for the producer of the Clip's input."""
    producer = graph.producer(clip.inputs[0])
    for activation in ("relu", "relu6", "relu_n1_to_1"):
        if producer is not None and arithmetic.activation_bounds(producer.op, activation,
                                                                 clip.outputs[0].quant) == (lo, hi):
            return activation
    raise MccError(f"int8 Clip to [{lo}, {hi}] is not the bound of a fused activation of the operator before it; "
                   "mcc writes int8 Clips only for those", path=path, node=clip.name)


def read_emitted_onnx(data: bytes, arithmetic: FormatArithmetic, path=None) -> Graph:
    """The NCHW IR graph of an ONNX file written by formats.onnx.writer; `path` only names the file in errors.
    `arithmetic` gives the int8 bounds of fused activations, to recognise the Clips that write them."""
    model = _parse(data, path)
    r = _Reader(model, path)
    graph = Graph(model.graph.name or "main")
    graph.inputs = [r.tensor(vi.name) for vi in model.graph.input]
    for t in graph.inputs:
        t.layout = "NCHW" if len(t.shape) == 4 else None
    int8_clips = []
    for n in model.graph.node:
        if n.op_type == "Clip" and not n.domain and r.tensor(n.input[0]).dtype == "int8":
            bounds = [int(r.arrays[i]) for i in n.input[1:3]]
            clip = Node("clip", r.unique(n.name), [r.tensor(n.input[0])], [r.tensor(n.output[0])], {})
            int8_clips.append((clip, *bounds))
            graph.nodes.append(clip)
            continue
        graph.nodes.append(r.node(n))
    graph.outputs = [r.tensor(vi.name) for vi in model.graph.output]
    for clip, lo, hi in int8_clips:
        if not _fold_activation(graph, clip, _int8_activation(graph, clip, lo, hi, path, arithmetic)):
            raise MccError("an int8 Clip that is not a fused activation; mcc writes int8 Clips only for those",
                           path=path, node=clip.name)
    for node in list(graph.nodes):
        activation = _float_activation(node)
        if activation is not None:
            _fold_activation(graph, node, activation)
    try:
        graph.verify()
    except ValueError as e:
        raise MccError(f"the model does not form a valid graph: {e}", path=path) from None
    return graph
