"""TFLite operators mcc reads but never writes: converter spellings of IR ops it already has (issue 14, tflite-in).

TensorFlow's converter emits EXPAND_DIMS and SQUEEZE around a 1-D convolution, PACK / UNPACK for stacks, SHAPE,
CAST, EQUAL, SELECT_V2 and STRIDED_SLICE of constants for shape logic, RESHAPE with a computed shape, BROADCAST_TO
and SQUARED_DIFFERENCE. Each
is a reshape, a concat or split of reshapes, a sub and a square, or a value known when the file is read, so none
needs an IR op or a row in opmap.TABLE, whose rows are bidirectional: mcc's writer would never pick these. They
live here, out of the table, and the reader calls `lower` for them. Over constants every one is evaluated with
numpy as the file is read (LiteRT evaluates such subgraphs once at prepare time too); SHAPE is a constant whatever
it reads, since mcc's shapes are static. What is left over activations is reshapes, which fold_constants merges
and drops and the layout pass folds, so a converter's EXPAND_DIMS / SQUEEZE pairs cost no operator. tf2onnx and
onnx2tf keep such ops one for one (Unsqueeze, Squeeze, Shape, Cast) and leave them to an optimizer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from ...errors import MccError
from ...ir import Graph, Node, Tensor
from ...ir.ops import broadcast_ones, infer_node

OP = schema.BuiltinOperator


@dataclass
class Site:
    """One reader-only operator as it is lowered: its tensors, options, and where its nodes go."""

    builtin: str
    inputs: list            # Tensor (None for an omitted optional input)
    outputs: list           # the file's output Tensors, already tagged by the reader
    options: object | None  # the unpacked builtin options, or None
    graph: Graph
    fresh: Callable[[str], str]   # an unused tensor / node name from a base

    def const(self, value, out: int = 0) -> Tensor:
        """Output `out` as a constant of `value`; its stored shape and dtype must agree."""
        y = self.outputs[out]
        value = np.asarray(value)
        if value.shape != tuple(y.shape):
            raise MccError(f"{self.builtin} output '{y.name}' is stored as {list(y.shape)} but its inputs give "
                           f"{list(value.shape)}; the file is inconsistent")
        return Tensor(y.name, data=np.array(value, dtype=y.dtype))   # (ascontiguousarray makes a scalar 1-D)

    def node(self, op: str, inputs: list, attrs: dict | None = None, out: Tensor | None = None,
             n_outputs: int = 1, layout: str | None = None) -> list[Tensor]:
        """Append an IR node writing the file tensor `out` (its stored shape checked) or fresh tensors (tagged
        `layout`); its output tensors."""
        if out is not None:
            outs, stored = [out], (tuple(out.shape), out.dtype)
        else:
            base = self.fresh(f"{self.outputs[0].name}/{op}")
            outs = [Tensor(self.fresh(f"{base}:{i}") if n_outputs > 1 else base) for i in range(n_outputs)]
            for t in outs:
                t.layout = layout
        node = Node(op, outs[0].name, inputs, outs, attrs or {})   # named after its output, as the reader does
        infer_node(node)
        if out is not None:
            if out.shape != stored[0]:
                raise MccError(f"{self.builtin} output '{out.name}' is stored as {list(stored[0])} but mcc's {op} "
                               f"computes {list(out.shape)}; the file is inconsistent")
            out.dtype = stored[1]
        self.graph.nodes.append(node)
        return outs

    def reshape(self, x: Tensor, shape, out: Tensor | None = None, layout: str | None = None) -> Tensor:
        """`x` reshaped: into the file tensor `out`, or a fresh one tagged `layout`; a constant stays one."""
        if x.is_constant:
            data = x.data.reshape(shape)
            if out is None:
                return Tensor(self.fresh(x.name), data=data)
            return self.const(data, next(k for k, y in enumerate(self.outputs) if y is out))
        return self.node("reshape", [x], {"shape": [int(d) for d in shape]}, out, layout=layout)[0]

    def param(self, k: int, what: str) -> np.ndarray:
        t = self.inputs[k] if k < len(self.inputs) else None
        if t is None or not t.is_constant:
            raise MccError(f"{self.builtin} reads its {what} from a computed tensor; mcc needs it constant")
        return t.data

    def constant_inputs(self) -> bool:
        return all(t is None or t.is_constant for t in self.inputs)


def _axis(axis: int, rank: int, builtin: str) -> int:
    """`axis` in [0, rank), where rank counts the axes it may name (one more than the input's for PACK and
    EXPAND_DIMS, which insert one)."""
    if not -rank <= axis < rank:
        raise MccError(f"{builtin} axis {axis} is outside [{-rank}, {rank})")
    return axis % rank


# ---- reshapes ----------------------------------------------------------------------------------------------------
def _expand_dims(s: Site) -> list:
    x = s.inputs[0]
    shape = list(x.shape)
    shape.insert(_axis(int(s.param(1, "axis").reshape(-1)[0]), len(shape) + 1, s.builtin), 1)
    return [s.reshape(x, shape, s.outputs[0])]


def _squeeze(s: Site) -> list:
    x = s.inputs[0]
    dims = [int(d) for d in (s.options.squeezeDims if s.options is not None and s.options.squeezeDims is not None
                             else [])]
    axes = {_axis(d, len(x.shape), s.builtin) for d in dims} or {a for a, d in enumerate(x.shape) if d == 1}
    if any(x.shape[a] != 1 for a in axes):
        raise MccError(f"SQUEEZE of axes {sorted(axes)} of {list(x.shape)}: only size-1 axes can be squeezed")
    return [s.reshape(x, [d for a, d in enumerate(x.shape) if a not in axes], s.outputs[0])]


def _computed_reshape(s: Site) -> list:
    """RESHAPE whose shape input is computed: mcc's shapes are static, so the stored output shape is the shape."""
    return [s.reshape(s.inputs[0], s.outputs[0].shape, s.outputs[0])]


def _broadcast_to(s: Site) -> list:
    """As the ONNX frontend's Expand: a reshape when only leading 1s are added, else a multiply by
    ir.ops.broadcast_ones."""
    x, y = s.inputs[0], s.outputs[0]
    out = tuple(int(d) for d in s.param(1, "shape").reshape(-1))
    if x.is_constant:
        return [s.const(np.broadcast_to(x.data, out))]
    if int(np.prod(out)) == x.size:
        return [s.reshape(x, out, y)]
    try:
        ones = Tensor(s.fresh(f"{y.name}/ones"), data=broadcast_ones(x.shape, out))
    except ValueError as e:
        raise MccError(f"BROADCAST_TO {e}") from None
    return s.node("mul", [x, ones], out=y)


def _pack(s: Site) -> list:
    """PACK: every value gets the new axis (a reshape), then one concat along it."""
    y = s.outputs[0]
    axis = _axis(int(s.options.axis), len(s.inputs[0].shape) + 1, s.builtin)
    if s.constant_inputs():
        return [s.const(np.stack([t.data for t in s.inputs], axis))]
    if len(s.inputs) == 1:
        return [s.reshape(s.inputs[0], y.shape, y)]
    parts = [s.reshape(t, t.shape[:axis] + (1,) + t.shape[axis:], layout=y.layout) for t in s.inputs]
    return s.node("concat", parts, {"axis": axis}, out=y)


def _unpack(s: Site) -> list:
    """UNPACK: one split into size-1 slices, each reshaped without the axis."""
    x = s.inputs[0]
    axis = _axis(int(s.options.axis), len(x.shape), s.builtin)
    if len(s.outputs) != x.shape[axis]:
        raise MccError(f"UNPACK of axis {axis} of {list(x.shape)} writes {len(s.outputs)} tensors, not "
                       f"{x.shape[axis]}")
    if x.is_constant:
        return [s.const(np.take(x.data, i, axis), i) for i in range(len(s.outputs))]
    parts = s.node("split", [x], {"axis": axis, "sizes": [1] * len(s.outputs)}, n_outputs=len(s.outputs),
                   layout=x.layout) if len(s.outputs) > 1 else [x]
    return [s.reshape(p, y.shape, y) for p, y in zip(parts, s.outputs)]


# ---- values known when the file is read -------------------------------------------------------------------------
def _shape(s: Site) -> list:
    return [s.const(np.array(s.inputs[0].shape))]


def _cast(s: Site) -> list:
    """A constant is cast with numpy (as CAST's static_cast: float -> int truncates); an activation only between
    equal float types, where CAST copies (an identity node, which fold_constants removes)."""
    x, y = s.inputs[0], s.outputs[0]
    if x.is_constant:
        return [s.const(x.data)]
    if x.dtype != y.dtype or x.dtype != "float32":
        raise MccError(f"CAST of the computed tensor '{x.name}' from {x.dtype} to {y.dtype}: mcc computes "
                       "activations in float32 and reads CAST of an activation only from float32 to float32; export "
                       "the model without the cast (or with it applied to constants only)")
    return s.node("identity", [x], out=y)


def _folded_only(fn):
    """An operator mcc evaluates when every input is constant (shape logic), and has no IR op for otherwise."""
    def lower(s: Site) -> list:
        if not s.constant_inputs():
            computed = next(t.name for t in s.inputs if t is not None and not t.is_constant)
            raise MccError(f"{s.builtin} reads the computed tensor '{computed}'; mcc evaluates {s.builtin} only over "
                           "constants (shape logic) and has no operator for it on activations: export the model "
                           "without it")
        return [s.const(fn(*(t.data for t in s.inputs)))]
    return lower


def _strided_slice_of_constant(s: Site) -> list:
    """STRIDED_SLICE of a constant (a converter's shape logic: the batch of SHAPE's result, shrunk to a scalar),
    evaluated with numpy; the table's row reads the activation form, whose IR slice has no shrink-axis mask."""
    o, x = s.options, s.inputs[0].data
    if o.ellipsisMask or o.newAxisMask or o.offset:
        raise MccError("STRIDED_SLICE of a constant with an ellipsis or new-axis mask (or offset): mcc evaluates "
                       "begin / end / strides with begin, end and shrink-axis masks")
    begin, end, strides = (s.param(k, what).reshape(-1) for k, what in enumerate(("begin", "end", "strides"), 1))
    if not len(begin) == len(end) == len(strides) == x.ndim or not strides.all():
        raise MccError(f"STRIDED_SLICE of a rank-{x.ndim} constant has begin {begin.tolist()}, end {end.tolist()} "
                       f"and strides {strides.tolist()}")
    index = tuple(int(begin[i]) if o.shrinkAxisMask >> i & 1 else
                  slice(None if o.beginMask >> i & 1 else int(begin[i]), None if o.endMask >> i & 1 else int(end[i]),
                        int(strides[i])) for i in range(x.ndim))
    return [s.const(x[index])]


def _squared_difference(s: Site) -> list:
    a, b = s.inputs[:2]
    if a.is_constant and b.is_constant:
        return [s.const(np.square(a.data - b.data))]
    (diff,) = s.node("sub", [a, b])
    return s.node("square", [diff], out=s.outputs[0])


@dataclass(frozen=True)
class ReaderOp:
    layout_op: str                       # the IR op whose layout behaviour the reader's NHWC tagging follows
    lower: Callable[[Site], list]        # -> the file's output tensors (constants, or written by new nodes)


READER_ONLY: dict[int, ReaderOp] = {
    OP.EXPAND_DIMS: ReaderOp("reshape", _expand_dims),
    OP.SQUEEZE: ReaderOp("reshape", _squeeze),
    OP.BROADCAST_TO: ReaderOp("mul", _broadcast_to),
    OP.PACK: ReaderOp("reshape", _pack),
    OP.UNPACK: ReaderOp("reshape", _unpack),
    OP.SHAPE: ReaderOp("reshape", _shape),
    OP.CAST: ReaderOp("identity", _cast),
    OP.EQUAL: ReaderOp("reshape", _folded_only(np.equal)),
    OP.SELECT_V2: ReaderOp("reshape", _folded_only(np.where)),
    OP.SQUARED_DIFFERENCE: ReaderOp("sub", _squared_difference),
}


def reads(code: int, inputs: list) -> bool:
    """Whether `lower` reads this operator: a reader-only builtin, RESHAPE with a computed shape input, or
    STRIDED_SLICE of a constant."""
    return code in READER_ONLY or (code == OP.RESHAPE and len(inputs) > 1 and inputs[1] is not None
                                   and not inputs[1].is_constant) or (
        code == OP.STRIDED_SLICE and bool(inputs) and inputs[0] is not None and inputs[0].is_constant)


def lower(graph: Graph, code: int, builtin: str, inputs: list, outputs: list, options, fresh) -> list[Tensor]:
    """Lower one operator that `reads` into `graph`; the tensors that stand for its outputs."""
    site = Site(builtin, inputs, outputs, options, graph, fresh)
    if code == OP.RESHAPE:
        return _computed_reshape(site)
    if code == OP.STRIDED_SLICE:
        return _strided_slice_of_constant(site)
    if not inputs or inputs[0] is None:
        raise MccError(f"{builtin} reads no input; the file is inconsistent")
    return READER_ONLY[code].lower(site)
