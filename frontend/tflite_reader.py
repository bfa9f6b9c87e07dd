"""Read a TFLite flatbuffer into an NHWC IR graph: the inverse of backends.tflite_writer.

TensorFlow's own importer (flatbuffer_import.cc) lifts a .tflite file into MLIR's TFL dialect and keeps
SAME/VALID and fused activations as TFLite spells them. mcc reads through the same table its writer uses
(backends.tflite_opmap) and lands in its own IR spelling: explicit padding, the `activation` attribute,
parameters such as MEAN axes or RESHAPE shapes as attributes, quantization on Tensor.quant. So write -> read
is an identity on legal graphs, and the reference runtime executes the file that was emitted rather than
the graph it came from. Only numpy, flatbuffers and the generated schema are needed, never torch.

The 4-D tensors that spatial ops read, and those their tag is inferred from, are tagged NHWC, TFLite's layout,
so the layout pass leaves a read graph as it is.

Two operators of float files only unpack constant weights: DENSIFY (sparse weights, decoded by
tflite_sparsity) and DEQUANTIZE of float16 weights. LiteRT evaluates them once, when it prepares the model; the
reader folds them as it reads the file. Folding, rather than emitting an IR `dequantize` for fold_constants,
keeps the IR's float path float32 (its dequantize is integer -> float, its float kernels are float32 only), and
it is exact: every float16 value is a float32. Such a file reads back as a float32 model with dense weights, the
form quantize_int8 re-quantizes (and the form mcc writes back). `read_float_tflite` reads compile sources: it
refuses a model that is quantized already.
"""

from __future__ import annotations

import struct
from collections import Counter

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from ..backends.tflite_opmap import BUILTIN_NAMES, BY_CODE, DTYPE_FROM_TFLITE, TABLE, Site
from ..errors import MccError
from ..ir import Graph, Node, QuantParams, Tensor
from ..ir.ops import infer_node
from .tflite_sparsity import densify

_SPATIAL = ("conv2d", "depthwise_conv2d", "max_pool2d", "avg_pool2d", "resize")
_OWN_LAYOUT = ("reshape", "transpose", "fully_connected")
_DENSIFY, _DEQUANTIZE = schema.BuiltinOperator.DENSIFY, schema.BuiltinOperator.DEQUANTIZE


def _unpack(data: bytes, path) -> schema.ModelT:
    if len(data) < 8 or not schema.Model.ModelBufferHasIdentifier(data, 0):
        found = bytes(data[4:8]) if len(data) >= 8 else b""
        raise MccError(f"not a TFLite model: file identifier is {found!r}, expected b'TFL3'", path=path)
    try:
        model = schema.ModelT.InitFromPackedBuf(data, 0)
    except (struct.error, IndexError, ValueError, TypeError, OverflowError, UnicodeDecodeError) as e:
        raise MccError(f"corrupt TFLite flatbuffer ({type(e).__name__}: {e}); re-export the model", path=path) from None
    if not model.subgraphs or len(model.subgraphs) != 1:
        raise MccError(f"the model has {len(model.subgraphs or [])} subgraphs; mcc reads single-subgraph models "
                       "(no control flow)", path=path)
    return model


def _code(oc: schema.OperatorCodeT) -> int:
    # Codes above 127 live only in builtinCode; old files fill only deprecatedBuiltinCode.
    return max(oc.builtinCode, oc.deprecatedBuiltinCode)


def _op_label(oc: schema.OperatorCodeT) -> str:
    code = _code(oc)
    if code == schema.BuiltinOperator.CUSTOM:
        return f"CUSTOM '{(oc.customCode or b'').decode('utf-8', 'replace')}'"
    return BUILTIN_NAMES.get(code, f"builtin {code}")


def _refuse_unknown(model: schema.ModelT, path) -> None:
    ops = model.subgraphs[0].operators or []
    unknown = Counter(_op_label(model.operatorCodes[op.opcodeIndex]) for op in ops
                      if _code(model.operatorCodes[op.opcodeIndex]) not in BY_CODE.keys() | {_DENSIFY})
    if unknown:
        listed = ", ".join(f"{name} (x{n})" for name, n in sorted(unknown.items()))
        known = ", ".join(sorted({m.builtin for m in TABLE} | {"DENSIFY"}))
        raise MccError(f"the model uses operators mcc cannot read: {listed}. mcc reads {known}; "
                       "replace the others in the source model or export without them", path=path)


def _unique(base: str, taken: set) -> str:
    """`base`, or `base_1`, `base_2`, ... : converter files may repeat or omit tensor names, the IR may not."""
    name, i = base, 0
    while name in taken:
        i += 1
        name = f"{base}_{i}"
    taken.add(name)
    return name


def _tensor(t: schema.TensorT, index: int, model: schema.ModelT, taken: set, path) -> Tensor:
    name = _unique(t.name.decode("utf-8", "replace") if t.name else f"tensor_{index}", taken)
    if t.type not in DTYPE_FROM_TFLITE:
        types = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
        raise MccError(f"tensor '{name}' has type {types.get(t.type, t.type)}, which mcc's IR does not hold", path=path)
    dtype = DTYPE_FROM_TFLITE[t.type]
    shape = tuple(int(d) for d in (t.shape if t.shape is not None else ()))
    quant = None
    q = t.quantization
    if q is not None and q.scale is not None and len(q.scale):
        scale = np.asarray(q.scale, np.float32)
        zp = np.asarray(q.zeroPoint if q.zeroPoint is not None else np.zeros(len(scale)), np.int64)
        quant = QuantParams(scale, zp, q.quantizedDimension if len(scale) > 1 else None)
    buf = model.buffers[t.buffer] if t.buffer > 0 else None
    if buf is not None and buf.offset > 1:
        raise MccError(f"constant '{name}' is stored after the flatbuffer (a model over 2 GB); mcc reads edge "
                       "models whose weights sit inside it", path=path)
    if buf is None or buf.data is None or not len(buf.data):
        return Tensor(name, shape, dtype, None, quant)
    raw = np.asarray(buf.data, np.uint8).tobytes()
    itemsize = np.dtype(dtype).itemsize
    stored = int(np.prod(shape, dtype=np.int64)) if t.sparsity is None else len(raw) // itemsize
    if any(d < 0 for d in shape) or len(raw) != itemsize * stored:
        raise MccError(f"constant '{name}' holds {len(raw)} bytes, which is not {dtype}{list(shape)}", path=path)
    arr = np.frombuffer(raw, np.dtype(dtype).newbyteorder("<")).astype(dtype)
    if t.sparsity is not None:
        try:
            arr = densify(arr, shape, t.sparsity)
        except ValueError as e:
            raise MccError(f"sparse constant '{name}' {dtype}{list(shape)} cannot be decoded: {e}; re-export the "
                           "model", path=path) from None
    return Tensor(name, quant=quant, data=arr.reshape(shape))


def _flatten_for_fc(graph: Graph, x: Tensor, taken: set) -> Tensor:
    """FULLY_CONNECTED without keepNumDims flattens the leading axes; the IR says so with a reshape."""
    name = _unique(f"{x.name}/flatten", taken)
    out = Tensor(name)
    node = Node("reshape", name, [x], [out], {"shape": [-1, x.shape[-1]]})
    infer_node(node)
    graph.nodes.append(node)
    return out


def _ints(vector) -> list[int]:
    """A flatbuffer int vector as a list (the object API leaves an absent vector as None)."""
    return [int(i) for i in vector] if vector is not None else []


def _check_indices(model: schema.ModelT, path) -> None:
    """Every index in the file points at something: a corrupt file fails here, with the file's name."""
    sub = model.subgraphs[0]
    n_tensors, n_codes, n_buffers = len(sub.tensors or []), len(model.operatorCodes or []), len(model.buffers or [])
    bad = [f"tensor {i} names buffer {t.buffer}" for i, t in enumerate(sub.tensors or [])
           if not 0 <= t.buffer < max(n_buffers, 1)]
    bad += [f"graph {kind} {i}" for kind, idx in (("input", sub.inputs), ("output", sub.outputs))
            for i in _ints(idx) if not 0 <= i < n_tensors]
    for k, op in enumerate(sub.operators or []):
        if not 0 <= op.opcodeIndex < n_codes:
            bad.append(f"operator {k} names operator code {op.opcodeIndex}")
        ins, outs = _ints(op.inputs), _ints(op.outputs)
        if not outs or any(not 0 <= i < n_tensors for i in outs) or any(not -1 <= i < n_tensors for i in ins):
            bad.append(f"operator {k} reads tensors {ins} and writes {outs}")
    if bad:
        raise MccError(f"corrupt TFLite model: {'; '.join(bad[:3])}, out of {n_tensors} tensors, {n_codes} operator "
                       f"codes and {n_buffers} buffers; re-export the model", path=path)


def _nhwc_tensors(model: schema.ModelT, tensors: list) -> list[int]:
    """Indices of the computed 4-D tensors to tag NHWC: the graph's inputs, what a spatial op reads, and upstream
    of the latter every tensor that ir.ops' layout inference derives its tag from (an op's output follows its
    inputs, except reshape, transpose and fully_connected), so that re-running shape inference keeps the tags."""
    sub = model.subgraphs[0]
    mapping = [BY_CODE.get(_code(model.operatorCodes[op.opcodeIndex])) for op in sub.operators or []]
    producer = {o: k for k, op in enumerate(sub.operators or []) for o in _ints(op.outputs)}
    stack = _ints(sub.inputs) + [i for op, m in zip(sub.operators or [], mapping)
                                 if m is not None and m.ir_op in _SPATIAL for i in _ints(op.inputs)[:1]]
    seen: set[int] = set()
    while stack:
        i = stack.pop()
        if i < 0 or i in seen or tensors[i].is_constant or len(tensors[i].shape) != 4:
            continue
        seen.add(i)
        k = producer.get(i)
        if k is not None and mapping[k] is not None and mapping[k].ir_op not in _OWN_LAYOUT:
            stack += _ints(sub.operators[k].inputs)
    return sorted(seen)


def _unpacked(code: int, op: schema.OperatorT, tensors: list) -> Tensor | None:
    """The constant that DENSIFY, or DEQUANTIZE of float16, makes of its constant input; None for other operators
    (DEQUANTIZE of an integer tensor stays an IR dequantize)."""
    if code not in (_DENSIFY, _DEQUANTIZE):
        return None
    label, ins = BUILTIN_NAMES[code], _ints(op.inputs)
    if len(ins) != 1 or ins[0] < 0:
        raise MccError(f"{label} reads {len(ins)} tensors {ins}, not one; the file is inconsistent")
    x, y = tensors[ins[0]], tensors[op.outputs[0]]
    if code == _DEQUANTIZE and x.dtype != "float16":
        return None
    if not x.is_constant:
        raise MccError(f"{label} reads the computed tensor '{x.name}'; mcc computes in float32 and reads float16 and "
                       "sparse tensors only as constant weights: export the model with float32 activations")
    data = x.data.astype(np.float32) if code == _DEQUANTIZE else x.data
    if (data.shape, str(data.dtype)) != (y.shape, y.dtype):
        raise MccError(f"{label} turns {x.dtype}{list(x.shape)} '{x.name}' into {y.dtype}{list(y.shape)}; "
                       "the file is inconsistent")
    return Tensor(y.name, data=data)


def _node(graph: Graph, m, op: schema.OperatorT, tensors: list, taken: set) -> Node:
    """The IR node of one TFLite operator (after any reshape it needs); raises MccError or a malformed-file error."""
    ins = [tensors[i] if i >= 0 else None for i in _ints(op.inputs)]
    leading, ins = ins[:len(m.leading)], ins[len(m.leading):]
    n_ir = len(ins) - len(m.params) if m.params and len(ins) > len(m.params) else len(ins)
    ir_ins, param_ts = ins[:n_ir], leading + ins[n_ir:]
    while ir_ins and ir_ins[-1] is None:
        ir_ins.pop()
    outs = [tensors[i] for i in _ints(op.outputs)]
    names = m.leading + m.params
    for what, p in zip(names, param_ts):
        if p is None or not p.is_constant:
            raise MccError(f"{m.builtin} reads its {what} from a computed tensor; mcc needs it constant")
    options = op.builtinOptions
    if m.options is not None and options is None:
        options = getattr(schema, m.options + "T")()
    attrs = m.decode(Site(options, {k: p.data for k, p in zip(names, param_ts)}, ir_ins))
    if m.ir_op == "fully_connected" and not getattr(options, "keepNumDims", True) and len(ir_ins[0].shape) > 2:
        ir_ins[0] = _flatten_for_fc(graph, ir_ins[0], taken)
    node = Node(m.ir_op, outs[0].name, ir_ins, outs, attrs)
    stored = [(o.shape, o.dtype) for o in outs]
    infer_node(node)
    for o, (shape, dtype) in zip(outs, stored):
        if o.shape != shape:
            raise MccError(f"{m.builtin} output '{o.name}' is stored as {list(shape)} but mcc's {m.ir_op} computes "
                           f"{list(o.shape)}; the file is inconsistent")
        o.dtype = dtype
    return node


# What a structurally valid flatbuffer with nonsense contents (a zero stride, a wrong rank) raises on the way.
_MALFORMED = (ValueError, IndexError, KeyError, TypeError, AttributeError, ZeroDivisionError)


def read_tflite(data: bytes, path=None) -> Graph:
    """The NHWC IR graph of a TFLite model; `path` only names the file in errors."""
    data = bytes(data)
    model = _unpack(data, path)
    _check_indices(model, path)
    _refuse_unknown(model, path)
    sub = model.subgraphs[0]
    taken: set = set()
    tensors = [_tensor(t, i, model, taken, path) for i, t in enumerate(sub.tensors or [])]
    graph = Graph(sub.name.decode("utf-8", "replace") if sub.name else "main")
    graph.inputs = [tensors[i] for i in _ints(sub.inputs)]
    for i in _nhwc_tensors(model, tensors):
        tensors[i].layout = "NHWC"
    for k, op in enumerate(sub.operators or []):
        code = _code(model.operatorCodes[op.opcodeIndex])
        where = tensors[op.outputs[0]].name
        try:
            folded = _unpacked(code, op, tensors)
            if folded is not None:
                tensors[op.outputs[0]] = folded
            else:
                graph.nodes.append(_node(graph, BY_CODE[code], op, tensors, taken))
        except MccError as e:
            raise MccError(str(e), path=path, node=where) from None
        except _MALFORMED as e:
            raise MccError(f"operator {k} ({BUILTIN_NAMES[code]}) is malformed ({type(e).__name__}: {e}); "
                           "re-export the model", path=path, node=where) from None
    graph.outputs = [tensors[i] for i in _ints(sub.outputs)]
    half = next((t for t in graph.tensors() if t.dtype == "float16"), None)
    if half is not None:
        raise MccError(f"tensor '{half.name}' is float16 but is not a constant weight behind DEQUANTIZE; mcc "
                       "computes in float32: export the model with float32 inputs and activations", path=path)
    try:
        graph.verify()
    except ValueError as e:
        raise MccError(f"the model does not form a valid graph: {e}", path=path) from None
    return graph


def read_float_tflite(data: bytes, path=None) -> Graph:
    """The IR graph of a float TFLite model given as a compile source; refuses one that is quantized already
    (int8 / uint8 / int16 tensors or quantization parameters anywhere, weight-only and dynamic-range included),
    whose re-quantization would stack a second rounding on the first."""
    graph = read_tflite(data, path)
    quantized = next((t for t in graph.tensors() if t.quant is not None or t.dtype in ("int8", "uint8", "int16")), None)
    if quantized is not None:
        raise MccError(f"the model is already quantized (tensor '{quantized.name}' is {quantized.dtype}"
                       f"{' with quantization parameters' if quantized.quant is not None else ''}); mcc compiles "
                       "float models: compile the float source model instead. `mcc validate` and `mcc run` read "
                       "this file as it is", path=path)
    return graph
