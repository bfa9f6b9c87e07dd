"""Lower a checked ONNX model with static input shapes to mcc's IR, node by node, through the table in onnx_ops.

Every value is an IR Tensor (computed at run time), a Const (known at compile time: an initializer, a Constant
node, a static shape, or the result of a folded node) or None (an absent optional input, or an output mcc does
not compute). A node whose inputs are all Consts is folded by onnx's reference evaluator, so shape arithmetic and
weight transposes never reach the IR, as the PyTorch frontend folds with torch. Every other node first gets its
output shapes from ONNX's shape inference for that node, which the lowering uses where ONNX defines a shape
(Reshape, Squeeze, Resize, ...) and which checks every lowered result. The graph stays NCHW, as the model computes
it; IR nodes are named after the ONNX nodes and keep their names as `source`, and the graph's inputs and outputs
keep the model's names.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import MccError, summarize
from ..ir import Graph, Tensor
from ..ir.tensor import DTYPES
from ..ir.names import claim_unique

# Model inputs mcc takes: activations, and integer indices (token ids into an embedding).
INPUT_DTYPES = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.INT32: "int32", onnx.TensorProto.INT64: "int64"}


@dataclass(eq=False)
class Const:
    """A compile-time value (any dtype) and the name its IR constant gets: a weight keeps its initializer's name
    through folded transposes and casts."""

    value: np.ndarray
    name: str


DEFAULT_DOMAINS = ("", "ai.onnx")


def default_opset(model: onnx.ModelProto) -> int | None:
    """The model's opset of the default ONNX domain (None if it declares none)."""
    return next((o.version for o in model.opset_import if o.domain in DEFAULT_DOMAINS), None)


def node_label(node: onnx.NodeProto) -> str:
    """The node's name, or for an unnamed node its first present output's (unique in a valid model)."""
    return node.name or next((o for o in node.output if o), node.op_type)


class Lowering:
    """One walk over the (topologically sorted) nodes; `env` maps each ONNX value name to Tensor, Const or None."""

    def __init__(self, model: onnx.ModelProto, input_shapes: dict[str, tuple[int, ...]], name: str, path=None):
        self.model, self.input_shapes, self.path = model, input_shapes, path
        self.opset = default_opset(model)
        self.inferred: dict[str, tuple[int, ...]] = {}  # the current node's output shapes, by ONNX inference
        self.graph = Graph(name)
        self.env: dict[str, Tensor | Const | None] = {}
        self.materialized: dict[Const, Tensor] = {}
        self.names: set[str] = {v.name for v in model.graph.input}  # reserved: nothing else may take them
        self.node: onnx.NodeProto | None = None

    def run(self) -> Graph:
        g = self.model.graph
        for init in g.initializer:
            try:
                self.env[init.name] = Const(numpy_helper.to_array(init), init.name)
            except (ValueError, TypeError) as e:  # segments, value counts that disagree with the dims
                raise MccError(f"initializer '{init.name}' cannot be read as a {list(init.dims)} tensor "
                               f"({summarize(e)}); the file is corrupt: re-export it", path=self.path) from None
        for v in g.input:
            if v.name not in self.env:
                shape, dtype = self.input_shapes[v.name], INPUT_DTYPES[v.type.tensor_type.elem_type]
                layout = "NCHW" if len(shape) == 4 else None
                self.env[v.name] = self.graph.add_input(v.name, shape, dtype, layout)
        for node in g.node:
            self.node = node
            self._lower(node)
        self._outputs([v.name for v in g.output])
        self.graph.cleanup()
        try:
            self.graph.verify()
        except ValueError as e:
            raise MccError(f"the lowered model is not a valid graph: {e}", path=self.path) from None
        return self.graph

    def _lower(self, node):
        from .onnx_ops import LOWERINGS

        ins = [self._read(name) if name else None for name in node.input]
        if node.op_type == "If" and node.domain in DEFAULT_DOMAINS:
            results = self._inline_if(node, ins[0])
        elif node.op_type not in LOWERINGS and any(isinstance(v, Tensor) for v in ins):
            self.fail("is not supported on tensors computed at run time (the supported ops are the keys of "
                      "mcc.frontend.onnx_ops.LOWERINGS); rewrite this part of the model")
        elif node.op_type not in LOWERINGS or all(not isinstance(v, Tensor) for v in ins):
            results = self._fold(node, ins)
        else:
            self.inferred = self._infer(node, ins)
            results = LOWERINGS[node.op_type](self, *ins)
        results = list(results) if isinstance(results, (list, tuple)) else [results]
        for i, name in enumerate(node.output):
            if name:
                value = results[i] if i < len(results) else None
                self._check_shape(name, value)
                self.env[name] = value
        self.inferred = {}

    def _inline_if(self, node, cond) -> list:
        """The taken branch of an If whose condition is known once input shapes are fixed (a test on x.shape, a
        flag), lowered in place: its nodes read the outer scope's values by name, as ONNX scoping says, and its
        outputs stand for the If's. The other branch is never looked at, so it may hold anything. onnxruntime
        evaluates the condition at run time; mcc, compiling static shapes, decides it once."""
        if not isinstance(cond, Const):
            self.fail("its condition is computed at run time; mcc inlines an If only when the condition is a "
                      "constant once input shapes are fixed (data-dependent control flow is not compiled)")
        branch = self.attr("then_branch" if bool(np.asarray(cond.value).reshape(-1)[0]) else "else_branch")
        outer = self.node
        for init in branch.initializer:
            self.env[init.name] = Const(numpy_helper.to_array(init), init.name)
        for inner in branch.node:
            self.node = inner
            self._lower(inner)
        self.node = outer
        return [self._read(v.name) for v in branch.output]

    def _infer(self, node, ins) -> dict[str, tuple[int, ...]]:
        """The node's static output shapes by ONNX's shape inference, given its inputs' shapes and the values of
        its small constant inputs (the shapes, axes and scales that decide an output's shape; weights do not)."""
        types, data = {}, {}
        for name, v in zip(node.input, ins):
            if v is not None:
                dtype = v.value.dtype if isinstance(v, Const) else np.dtype(v.dtype)
                elem = onnx.helper.np_dtype_to_tensor_dtype(dtype)
                types[name] = onnx.helper.make_tensor_type_proto(elem, self.shape(v))
                if isinstance(v, Const) and v.value.size <= 64:
                    data[name] = numpy_helper.from_array(v.value, name)
        schema = onnx.defs.get_schema(node.op_type, self.opset, node.domain)
        try:
            out = onnx.shape_inference.infer_node_outputs(schema, node, types, data, None, self.model.opset_import,
                                                          self.model.ir_version)
        except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError) as e:
            self.fail(f"ONNX shape inference fails: {str(e).strip().splitlines()[0]}")
        shapes = {}
        for name, t in out.items():
            dims = t.tensor_type.shape.dim
            if t.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
                shapes[name] = tuple(d.dim_value for d in dims)
        return shapes

    def _read(self, name: str):
        value = self.env[name]
        if value is None:
            self.fail(f"reads '{name}', an output that mcc does not compute (it computes a node's main results, "
                      "not e.g. MaxPool's indices or Dropout's mask)")
        return value

    def _fold(self, node, ins):
        """Evaluate a node on its constant inputs with onnx's reference implementation of the node's opset."""
        from onnx.reference import ReferenceEvaluator

        feeds = {name: v.value for name, v in zip(node.input, ins) if name}
        try:
            if _tensor_constant(node):  # the evaluator's own conversion, without building one (0.1 ms a node)
                outs = [numpy_helper.to_array(node.attribute[0].t)]
            else:
                outs = ReferenceEvaluator(node, opsets={"": self.opset}).run(None, feeds)
        except Exception as e:  # the reference implementation raises whatever numpy raises
            self.fail(f"could not be evaluated on its constant inputs ({summarize(e)})")
        consts = [v for v in ins if v is not None]
        name = consts[0].name if len(consts) == 1 else node.output[0]
        return [Const(np.asarray(o), name) for o in outs]

    def _check_shape(self, name, value):
        """A lowering that disagrees with ONNX's shape inference is a frontend bug; stop at the node that shows it."""
        want = self.inferred.get(name)
        got = self.shape(value) if value is not None else None
        if want is not None and got is not None and tuple(got) != tuple(want):
            self.fail(f"lowered '{name}' to shape {tuple(got)} but ONNX shape inference computes {tuple(want)}")

    def _outputs(self, names):
        for name in names:
            value = self.env[name]
            if value is None:
                raise MccError(f"graph output '{name}' is an output that mcc does not compute", path=self.path)
            taken = any(value is t for t in self.graph.inputs + self.graph.outputs)
            if isinstance(value, Const) or taken:
                self.node = onnx.helper.make_node("Identity", [name], [name], name=name)
                value = self.emit("identity", [self._output_constant(value) if isinstance(value, Const) else value])
            if value.name != name:  # the output takes the model's name from whichever tensor holds it
                for t in self.graph.tensors():
                    if t.name == name:
                        t.name = self._unique(name)
                value.name = name
                self.names.add(name)
            self.graph.outputs.append(value)

    # ---- the interface the lowering functions in onnx_ops.py use ---------------------------------------
    def emit(self, op: str, inputs: list, n_outputs: int = 1, **attrs):
        """Append one IR node for the current ONNX node; Const inputs become float32 IR constants. Returns the
        output tensor, or the list of them when n_outputs > 1."""
        ins = [self.materialize(v) if isinstance(v, Const) else v for v in inputs]
        label = node_label(self.node)
        try:
            node = self.graph.add_node(op, ins, attrs, name=self._unique(label), n_outputs=n_outputs, source=label)
        except ValueError as e:
            self.fail(str(e))
        for t in node.outputs:
            if t.name != node.name:
                t.name = self._unique(t.name)
            if len(t.shape) == 4 and t.layout is None:
                t.layout = "NCHW"
        return node.outputs[0] if n_outputs == 1 else list(node.outputs)

    def const(self, value, like: Const | None = None, dtype=np.float32, name: str | None = None) -> Const:
        """A new compile-time value, named after the constant it was derived from (`like`), `name` or the node."""
        name = like.name if like is not None else name or f"{node_label(self.node)}.const"
        return Const(np.asarray(value, dtype=dtype), name)

    def materialize(self, c: Const) -> Tensor:
        """The float32 IR constant for `c`, created once however many nodes read it."""
        t = self.materialized.get(c)
        if t is None:
            t = Tensor(self._unique(c.name), data=np.array(c.value, dtype=np.float32, order="C"))
            self.materialized[c] = t
        return t

    def _output_constant(self, c: Const) -> Tensor:
        """A graph output known at compile time keeps the model's dtype (Size and Shape give int64), where the IR
        has it; other values are read as float32 like every constant."""
        dtype = str(np.asarray(c.value).dtype)
        if dtype == "float32" or dtype not in DTYPES:
            return self.materialize(c)
        return Tensor(self._unique(c.name), data=np.array(c.value, order="C"))

    def attr(self, name: str, default=None):
        """The current node's attribute `name` as a Python value (strings decoded), or `default`."""
        for a in self.node.attribute:
            if a.name == name:
                value = onnx.helper.get_attribute_value(a)
                if isinstance(value, bytes):
                    try:
                        return value.decode()
                    except UnicodeDecodeError:
                        self.fail(f"attribute '{name}' is not UTF-8 text ({value[:20]!r})")
                return value
        return default

    def shape(self, v) -> tuple[int, ...]:
        return tuple(v.value.shape) if isinstance(v, Const) else tuple(v.shape)

    def out_shape(self, i: int = 0) -> tuple[int, ...]:
        """The static shape ONNX shape inference gives the node's output i."""
        shape = self.inferred.get(self.node.output[i])
        if shape is None:
            self.fail(f"ONNX shape inference gives output '{self.node.output[i]}' no static shape")
        return shape

    def require_const(self, v, what: str) -> Const:
        if not isinstance(v, Const):
            self.fail(f"needs a constant {what} (an initializer or Constant), got a tensor computed at run time")
        return v

    def scalar(self, v, what: str) -> float:
        """A constant one-element input (Clip's bounds, Pad's value) as a float."""
        value = np.asarray(self.require_const(v, what).value)
        if value.size != 1:
            self.fail(f"{what} must be a single value, got shape {value.shape}")
        return float(value.reshape(-1)[0])

    def ints(self, v, what: str) -> list[int]:
        """A constant integer input (starts, axes, pads, split sizes, ...) as a list of ints."""
        return [int(i) for i in np.asarray(self.require_const(v, what).value).reshape(-1)]

    def fail(self, message: str):
        label = node_label(self.node)
        raise MccError(f"ONNX {self.node.op_type}: {message}", path=self.path, node=label)

    def _unique(self, base: str) -> str:
        return claim_unique(self.names, base)


def _tensor_constant(node) -> bool:
    """A Constant node holding its value as a tensor attribute (what exporters write; torch's MobileNetV2 has 75)."""
    return (node.op_type == "Constant" and node.domain in DEFAULT_DOMAINS and len(node.attribute) == 1
            and node.attribute[0].name == "value" and node.attribute[0].type == onnx.AttributeProto.TENSOR)
