"""Read a TFLite flatbuffer into an NHWC IR graph: the inverse of formats.tflite.writer.

TensorFlow's own importer (flatbuffer_import.cc) lifts a .tflite file into MLIR's TFL dialect and keeps
SAME/VALID and fused activations as TFLite spells them. mcc reads through the same table its writer uses
(formats.tflite.opmap) and lands in its own IR spelling: explicit padding, the `activation` attribute,
parameters such as MEAN axes or RESHAPE shapes as attributes, quantization on Tensor.quant. So write -> read
is an identity on legal graphs, and the reference runtime executes the file that was emitted rather than
the graph it came from. Only numpy, flatbuffers and the generated schema are needed, never torch.

Operators that converters emit but mcc never writes (EXPAND_DIMS, SQUEEZE, PACK, UNPACK, SHAPE, CAST, ...) have no
row in the table, which is bidirectional; reader_ops.py lowers them to reshapes, concats, splits or constants.

The 4-D tensors that spatial ops read, and those their tag is inferred from, are tagged NHWC, TFLite's layout,
so the layout pass leaves a read graph as it is.

Two operators of float files only unpack constant weights: DENSIFY (sparse weights, decoded by
sparsity.py) and DEQUANTIZE of float16 weights. LiteRT evaluates them once, when it prepares the model; the
reader folds them as it reads the file. Folding, rather than emitting an IR `dequantize` for fold_constants,
keeps the IR's float path float32 (its dequantize is integer -> float, its float kernels are float32 only), and
it is exact: every float16 value is a float32. Such a file reads back as a float32 model with dense weights, the
form quantize_int8 re-quantizes (and the form mcc writes back). `read_float_tflite` reads compile sources: it
refuses a model that is quantized already, or whose inputs are not float32.

A file is checked before it is read, by the rules of the flatbuffers verifier LiteRT runs (flatbuffers/verifier.h
through tflite::VerifyModelBuffer): every table, vtable, vector and string of the tables mcc reads lies inside the
file, and no more tables are visited than the file has room for. The reading (a walk of the tables mcc uses, and the
schema's object API for builtin options) trusts the bytes: a vector length of 2^32 - 1 makes it iterate (and a
shared table re-read) for as long as the numbers allow, and a damaged offset fails as whatever struct or numpy
raises, far from the field. Then every
index is checked against what it indexes, shapes against sizes an edge model can have, and a buffer stored after
the flatbuffer (a Buffer's offset and size, how models over 2 GB keep their weights) against the file's length.
"""

from __future__ import annotations

import math
import struct
from collections import Counter

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

from . import reader_ops
from .opmap import BUILTIN_NAMES, BY_CODE, DTYPE_FROM_TFLITE, TABLE, Site
from ...errors import MccError
from ...ir import Graph, Node, QuantParams, Tensor
from ...ir.ops import infer_node
from ...ir.traits import traits
from .sparsity import densify

_DENSIFY, _DEQUANTIZE = schema.BuiltinOperator.DENSIFY, schema.BuiltinOperator.DEQUANTIZE
# The IR op whose layout behaviour each readable builtin has (for the NHWC tags): the table's rows, and the
# reader-only operators (reader_ops) beside them.
_LAYOUT_OP = {**{m.code: m.ir_op for m in TABLE}, **{c: r.layout_op for c, r in reader_ops.READER_ONLY.items()}}

# ---- the flatbuffer verifier --------------------------------------------------------------------------------
# The tables mcc's reading touches, as in schema.fbs: per field its vtable slot, name and kind. A kind is the byte
# size of a scalar, "str", ("vec", element size), ("table", name), ("tables", name) (a vector of tables), or
# ("union", {type: table name}); a union member without an entry (the builtin options tables, which hold
# scalars and scalar vectors the object API reads with bounds checks) has its table and vtable checked.
_SPARSE_INDEX = {schema.SparseIndexVector.Int32Vector: "Int32Vector",
                 schema.SparseIndexVector.Uint16Vector: "Uint16Vector",
                 schema.SparseIndexVector.Uint8Vector: "Uint8Vector"}
_SCHEMA = {
    "Model": ((4, "version", 4), (6, "operator_codes", ("tables", "OperatorCode")),
              (8, "subgraphs", ("tables", "SubGraph")), (10, "description", "str"),
              (12, "buffers", ("tables", "Buffer")), (14, "metadata_buffer", ("vec", 4)),
              (16, "metadata", ("tables", "Metadata")), (18, "signature_defs", ("tables", "SignatureDef")),
              (20, "external_buffer_groups", ("tables", "ExternalBufferGroup")),
              (22, "external_buffers", ("tables", "ExternalBuffer"))),
    "SubGraph": ((4, "tensors", ("tables", "Tensor")), (6, "inputs", ("vec", 4)), (8, "outputs", ("vec", 4)),
                 (10, "operators", ("tables", "Operator")), (12, "name", "str"), (14, "debug_metadata_index", 4)),
    "Tensor": ((4, "shape", ("vec", 4)), (6, "type", 1), (8, "buffer", 4), (10, "name", "str"),
               (12, "quantization", ("table", "QuantizationParameters")), (14, "is_variable", 1),
               (16, "sparsity", ("table", "SparsityParameters")), (18, "shape_signature", ("vec", 4)),
               (20, "has_rank", 1), (22, "variant_tensors", ("tables", "VariantSubType")), (24, "external_buffer", 4)),
    "Operator": ((4, "opcode_index", 4), (6, "inputs", ("vec", 4)), (8, "outputs", ("vec", 4)),
                 (10, "builtin_options_type", 1), (12, "builtin_options", ("union", {})),
                 (14, "custom_options", ("vec", 1)), (16, "custom_options_format", 1),
                 (18, "mutating_variable_inputs", ("vec", 1)), (20, "intermediates", ("vec", 4)),
                 (22, "large_custom_options_offset", 8), (24, "large_custom_options_size", 8),
                 (26, "builtin_options_2_type", 1), (28, "builtin_options_2", ("union", {})),
                 (30, "debug_metadata_index", 4)),
    "OperatorCode": ((4, "deprecated_builtin_code", 1), (6, "custom_code", "str"), (8, "version", 4),
                     (10, "builtin_code", 4)),
    "Buffer": ((4, "data", ("vec", 1)), (6, "offset", 8), (8, "size", 8)),
    "QuantizationParameters": ((4, "min", ("vec", 4)), (6, "max", ("vec", 4)), (8, "scale", ("vec", 4)),
                               (10, "zero_point", ("vec", 8)), (12, "details_type", 1),
                               (14, "details", ("union", {schema.QuantizationDetails.CustomQuantization:
                                                          "CustomQuantization"})),
                               (16, "quantized_dimension", 4)),
    "CustomQuantization": ((4, "custom", ("vec", 1)),),
    "SparsityParameters": ((4, "traversal_order", ("vec", 4)), (6, "block_map", ("vec", 4)),
                           (8, "dim_metadata", ("tables", "DimensionMetadata"))),
    "DimensionMetadata": ((4, "format", 1), (6, "dense_size", 4), (8, "array_segments_type", 1),
                          (10, "array_segments", ("union", _SPARSE_INDEX)), (12, "array_indices_type", 1),
                          (14, "array_indices", ("union", _SPARSE_INDEX))),
    "Int32Vector": ((4, "values", ("vec", 4)),),
    "Uint16Vector": ((4, "values", ("vec", 2)),),
    "Uint8Vector": ((4, "values", ("vec", 1)),),
    "VariantSubType": ((4, "shape", ("vec", 4)), (6, "type", 1), (8, "has_rank", 1)),
    "Metadata": ((4, "name", "str"), (6, "buffer", 4)),
    "SignatureDef": ((4, "inputs", ("tables", "TensorMap")), (6, "outputs", ("tables", "TensorMap")),
                     (8, "signature_key", "str"), (12, "subgraph_index", 4)),
    "TensorMap": ((4, "name", "str"), (6, "tensor_index", 4)),
    "ExternalBufferGroup": ((4, "name", "str"),),
    "ExternalBuffer": ((4, "id", 4), (6, "group", 4), (8, "offset", 8), (10, "length", 8), (12, "packing", "str")),
}


class _Corrupt(Exception):
    """Where (a path of field names and indices) and what is wrong; read_tflite turns it into an MccError."""


def _at(where) -> str:
    """('subgraphs', 0, 'tensors', 3, 'shape') -> 'subgraphs[0].tensors[3].shape' (where is a linked pair list)."""
    parts = []
    while where:
        where, part = where
        parts.append(f"[{part}]" if isinstance(part, int) else f".{part}")
    return "".join(reversed(parts)).lstrip(".") or "the root table"


class _Verifier:
    """The flatbuffers verifier's checks (offsets, vtables, vector and string lengths inside the buffer; a bound on
    the number of tables) over the tables in _SCHEMA; raises _Corrupt."""

    def __init__(self, data: bytes):
        self.data, self.size = data, len(data)
        self.tables_left = len(data) // 4 + 16   # every table takes at least its 4-byte vtable offset

    def fail(self, where, problem: str):
        raise _Corrupt(f"{_at(where)} {problem}")

    def uoffset(self, pos: int, where) -> int:
        """The position a uoffset stored at `pos` points to (it counts forward from `pos`)."""
        if not 0 <= pos <= self.size - 4:
            self.fail(where, f"is stored at byte {pos}, outside the {self.size}-byte file")
        return pos + struct.unpack_from("<I", self.data, pos)[0]

    def vector(self, pos: int, elem: int, where) -> int:
        """Check a vector (or string, elem 1) at `pos`; its length."""
        if not 0 <= pos <= self.size - 4:
            self.fail(where, f"starts at byte {pos}, outside the {self.size}-byte file")
        n = struct.unpack_from("<I", self.data, pos)[0]
        if pos + 4 + n * elem > self.size:
            self.fail(where, f"claims {n:,} elements of {elem} byte(s) from byte {pos}, past the end of the "
                      f"{self.size}-byte file")
        return n

    def table(self, pos: int, name: str | None, where) -> None:
        self.tables_left -= 1
        if self.tables_left < 0:
            self.fail(where, "is one table too many: the file's offsets visit more tables than it has room for "
                      "(tables shared or nested without end)")
        if not 0 <= pos <= self.size - 4:
            self.fail(where, f"starts at byte {pos}, outside the {self.size}-byte file")
        vtable = pos - struct.unpack_from("<i", self.data, pos)[0]
        if not 0 <= vtable <= self.size - 4:
            self.fail(where, f"has its vtable at byte {vtable}, outside the {self.size}-byte file")
        vt_size, t_size = struct.unpack_from("<HH", self.data, vtable)
        if vt_size < 4 or vt_size % 2 or vtable + vt_size > self.size or t_size < 4 or pos + t_size > self.size:
            self.fail(where, f"has a vtable of {vt_size} bytes at byte {vtable} for a table of {t_size} bytes at "
                      f"byte {pos}, which do not fit the {self.size}-byte file")
        fields = struct.unpack_from(f"<{(vt_size - 4) // 2}H", self.data, vtable + 4)
        if name is None:   # a union member whose fields are not listed: each must lie inside its table
            if any(off and off >= t_size for off in fields):
                self.fail(where, f"has a field outside its {t_size}-byte table")
            return
        for slot, field, kind in _SCHEMA[name]:
            k = (slot - 4) // 2
            off = fields[k] if k < len(fields) else 0
            if not off:
                continue
            here = (where, field)
            if off + (kind if isinstance(kind, int) else 4) > t_size:
                self.fail(here, f"lies outside its {t_size}-byte table")
            if isinstance(kind, int):
                continue
            target = self.uoffset(pos + off, here)
            if kind == "str":
                self.vector(target, 1, here)
            elif kind[0] == "vec":
                self.vector(target, kind[1], here)
            elif kind[0] == "table":
                self.table(target, kind[1], here)
            elif kind[0] == "tables":
                for i in range(self.vector(target, 4, here)):
                    elem = target + 4 + 4 * i
                    self.table(self.uoffset(elem, (here, i)), kind[1], (here, i))
            else:   # a union: its type is the field before
                type_off = fields[k - 1] if k - 1 < len(fields) else 0
                member = self.data[pos + type_off] if type_off else 0
                if member:
                    self.table(target, kind[1].get(member), here)


def _verify(data: bytes, path) -> None:
    try:
        root = _Verifier(data)
        root.table(root.uoffset(0, None), "Model", None)
    except _Corrupt as e:
        raise MccError(f"corrupt TFLite flatbuffer: {e}; re-export or re-copy the model", path=path) from None


# ---- the table walk -----------------------------------------------------------------------------------------
# The schema's object API (ModelT.InitFromPackedBuf) unpacks every field of every table through a Python call per
# field (two for a vtable look-up): 47 ms for a 3.5 MB MobileNetV2, on every compile's fidelity guard. _walk reads
# the few fields the reader uses into the same ...T objects (the rest keep the object API's defaults), with the same
# types the object API gives them (numpy views of the file for vectors, bytes for strings); builtin options and
# sparsity records, rare or small, still go through the object API.
_I32, _U16, _U32 = struct.Struct("<i"), struct.Struct("<H"), struct.Struct("<I")
_SCALARS = {fmt: struct.Struct("<" + fmt) for fmt in "bBiIQ"}
_VTABLES: dict[int, struct.Struct] = {}


class _Table:
    """One table of the file: its position and its vtable's field offsets, read once."""

    __slots__ = ("data", "pos", "fields")

    def __init__(self, data: bytes, pos: int):
        self.data, self.pos = data, pos
        vtable = pos - _I32.unpack_from(data, pos)[0]
        n = (_U16.unpack_from(data, vtable)[0] - 4) // 2
        fmt = _VTABLES.get(n) or _VTABLES.setdefault(n, struct.Struct(f"<{n}H"))
        self.fields = fmt.unpack_from(data, vtable + 4)

    def _at(self, slot: int) -> int:
        """The field's position in the file, 0 where it is absent (as flatbuffers.Table.Offset, plus pos)."""
        k, fields = (slot - 4) // 2, self.fields
        return self.pos + fields[k] if k < len(fields) and fields[k] else 0

    def scalar(self, slot: int, fmt: str):
        at = self._at(slot)
        return _SCALARS[fmt].unpack_from(self.data, at)[0] if at else 0

    def _target(self, at: int) -> int:
        return at + _U32.unpack_from(self.data, at)[0]

    def vector(self, slot: int, dtype: str) -> np.ndarray | None:
        at = self._at(slot)
        if not at:
            return None
        start = self._target(at)
        n = _U32.unpack_from(self.data, start)[0]
        return np.frombuffer(self.data, np.dtype(dtype), n, start + 4)

    def string(self, slot: int) -> bytes | None:
        at = self._at(slot)
        if not at:
            return None
        start = self._target(at)
        return self.data[start + 4:start + 4 + _U32.unpack_from(self.data, start)[0]]

    def table(self, slot: int) -> "_Table | None":
        at = self._at(slot)
        return _Table(self.data, self._target(at)) if at else None

    def tables(self, slot: int, unpack) -> list | None:
        at = self._at(slot)
        if not at:
            return None
        start = self._target(at) + 4
        n = _U32.unpack_from(self.data, start - 4)[0]
        return [unpack(_Table(self.data, self._target(start + 4 * i))) for i in range(n)]


def _fill(obj, **fields):
    for k, v in fields.items():
        setattr(obj, k, v)
    return obj


def _quantization(t: _Table) -> schema.QuantizationParametersT:
    return _fill(schema.QuantizationParametersT(), scale=t.vector(8, "<f4"), zeroPoint=t.vector(10, "<i8"),
                 quantizedDimension=t.scalar(16, "i"))


def _tensor_record(t: _Table) -> schema.TensorT:
    q, sparsity = t.table(12), t.table(16)
    return _fill(schema.TensorT(), shape=t.vector(4, "<i4"), type=t.scalar(6, "b"), buffer=t.scalar(8, "I"),
                 name=t.string(10), quantization=None if q is None else _quantization(q),
                 sparsity=None if sparsity is None else schema.SparsityParametersT.InitFromBuf(t.data, sparsity.pos))


def _operator(t: _Table) -> schema.OperatorT:
    kind, at = t.scalar(10, "B"), t._at(12)
    options = schema.BuiltinOptionsCreator(kind, flatbuffers.table.Table(t.data, t._target(at))) if at else None
    return _fill(schema.OperatorT(), opcodeIndex=t.scalar(4, "I"), inputs=t.vector(6, "<i4"),
                 outputs=t.vector(8, "<i4"), builtinOptionsType=kind, builtinOptions=options)


def _subgraph(t: _Table) -> schema.SubGraphT:
    return _fill(schema.SubGraphT(), tensors=t.tables(4, _tensor_record), inputs=t.vector(6, "<i4"),
                 outputs=t.vector(8, "<i4"), operators=t.tables(10, _operator), name=t.string(12))


def _opcode(t: _Table) -> schema.OperatorCodeT:
    return _fill(schema.OperatorCodeT(), deprecatedBuiltinCode=t.scalar(4, "b"), customCode=t.string(6),
                 builtinCode=t.scalar(10, "i"))


def _buffer(t: _Table) -> schema.BufferT:
    return _fill(schema.BufferT(), data=t.vector(4, "<u1"), offset=t.scalar(6, "Q"), size=t.scalar(8, "Q"))


def _tensor_map(t: _Table) -> schema.TensorMapT:
    return _fill(schema.TensorMapT(), name=t.string(4), tensorIndex=t.scalar(6, "I"))


def _signature(t: _Table) -> schema.SignatureDefT:
    return _fill(schema.SignatureDefT(), inputs=t.tables(4, _tensor_map), outputs=t.tables(6, _tensor_map),
                 signatureKey=t.string(8), subgraphIndex=t.scalar(12, "I"))


def _walk(data: bytes) -> schema.ModelT:
    root = _Table(data, _U32.unpack_from(data, 0)[0])
    return _fill(schema.ModelT(), operatorCodes=root.tables(6, _opcode), subgraphs=root.tables(8, _subgraph),
                 buffers=root.tables(12, _buffer), signatureDefs=root.tables(18, _signature))


def _unpack(data: bytes, path) -> schema.ModelT:
    if len(data) < 8 or not schema.Model.ModelBufferHasIdentifier(data, 0):
        found = bytes(data[4:8]) if len(data) >= 8 else b""
        raise MccError(f"not a TFLite model: file identifier is {found!r}, expected b'TFL3'", path=path)
    _verify(data, path)
    try:
        model = _walk(data)
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
                      if _code(model.operatorCodes[op.opcodeIndex]) not in _LAYOUT_OP.keys() | {_DENSIFY})
    if unknown:
        listed = ", ".join(f"{name} (x{n})" for name, n in sorted(unknown.items()))
        known = ", ".join(sorted(BUILTIN_NAMES[c] for c in _LAYOUT_OP.keys() | {_DENSIFY}))
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


def _tensor(t: schema.TensorT, index: int, model: schema.ModelT, data: bytes, taken: set, path) -> Tensor:
    name = _unique(t.name.decode("utf-8", "replace") if t.name else f"tensor_{index}", taken)
    if t.type not in DTYPE_FROM_TFLITE:
        types = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
        raise MccError(f"tensor '{name}' has type {types.get(t.type, t.type)}, which mcc's IR does not hold", path=path)
    dtype = DTYPE_FROM_TFLITE[t.type]
    shape = tuple(_ints(t.shape))
    quant = None
    q = t.quantization
    if q is not None and q.scale is not None and len(q.scale):
        scale = np.asarray(q.scale, np.float32)
        zp = np.asarray(q.zeroPoint if q.zeroPoint is not None and len(q.zeroPoint) else np.zeros(len(scale)), np.int64)
        quant = QuantParams(scale, zp, q.quantizedDimension if len(scale) > 1 else None)
    buf = model.buffers[t.buffer] if t.buffer > 0 else None
    if buf is not None and buf.offset > 1:   # stored after the flatbuffer; _check_indices saw it inside the file
        raw = memoryview(data)[buf.offset:buf.offset + buf.size]
    else:   # a view of the file: astype below makes the tensor's own copy
        raw = memoryview(buf.data) if buf is not None and buf.data is not None else b""
    if not raw:
        return Tensor(name, shape, dtype, None, quant)
    itemsize = np.dtype(dtype).itemsize
    stored = math.prod(shape) if t.sparsity is None else len(raw) // itemsize
    if len(raw) != itemsize * stored:
        raise MccError(f"constant '{name}' holds {len(raw)} bytes, which is not {dtype}{list(shape)}", path=path)
    arr = np.frombuffer(raw, np.dtype(dtype).newbyteorder("<")).astype(dtype)
    if t.sparsity is not None:
        try:
            _check_expansion(t.sparsity, arr.size)
            arr = densify(arr, shape, t.sparsity)
        except ValueError as e:
            raise MccError(f"sparse constant '{name}' {dtype}{list(shape)} cannot be decoded: {e}; re-export the "
                           "model", path=path) from None
    return Tensor(name, quant=quant, data=arr.reshape(shape))


def _check_expansion(sparsity: schema.SparsityParametersT, stored: int) -> None:
    """Refuse (ValueError) a sparsity record whose DENSE levels multiply out to more positions than any later level
    can index or the buffer stores. densify expands level by level, holding an index per position; the positions a
    valid record reaches never exceed the stored values or the longest segment or index vector (both bounded by the
    file), while a record of DENSE levels of 16384 and 32767 over one stored value asks for 4 GB of indices."""
    dims = sparsity.dimMetadata or []
    vectors = [getattr(getattr(d, f), "values", None) for d in dims for f in ("arraySegments", "arrayIndices")]
    bound = max([stored] + [len(v) for v in vectors if v is not None])
    count = 1
    for level, d in enumerate(dims):
        indices = getattr(d.arrayIndices, "values", None)
        dense = d.format == schema.DimensionType.DENSE
        count = count * max(d.denseSize, 0) if dense else len(indices) if indices is not None else 0
        if count > bound:
            raise ValueError(f"its DENSE levels up to level {level} describe {count:,} positions, more than the "
                             f"{bound:,} values and indices the file stores")


def _flatten_for_fc(graph: Graph, x: Tensor, taken: set) -> Tensor:
    """FULLY_CONNECTED without keepNumDims flattens the leading axes; the IR says so with a reshape."""
    name = _unique(f"{x.name}/flatten", taken)
    out = Tensor(name)
    node = Node("reshape", name, [x], [out], {"shape": [-1, x.shape[-1]]})
    infer_node(node)
    graph.nodes.append(node)
    return out


def _ints(vector) -> list[int]:
    """A flatbuffer int vector (a numpy view, or None where absent) as a list of Python ints."""
    return vector.tolist() if vector is not None else []


# The largest tensor a file may declare: 2 GB, the most a flatbuffer holds and far beyond any edge model. A shape
# past it (or a negative dimension) is corrupt data, and trusting it would allocate the dense form of a sparse
# constant, or an activation, of that size.
_MAX_BYTES = (1 << 31) - 1


def _check_indices(model: schema.ModelT, data: bytes, path) -> None:
    """Every index in the file points at something, every shape and quantization record is possible, and every
    buffer stored after the flatbuffer lies inside the file: a corrupt file fails here, with the file's name."""
    sub = model.subgraphs[0]
    tensors, buffers = sub.tensors or [], model.buffers or []
    n_tensors, n_codes, n_buffers = len(tensors), len(model.operatorCodes or []), len(buffers)
    bad = [f"tensor {i} names buffer {t.buffer}" for i, t in enumerate(tensors)
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
    if not _ints(sub.outputs):
        raise MccError("the model's subgraph lists no outputs, so it computes nothing; re-export the model", path=path)
    for i, t in enumerate(tensors):
        name = f"tensor {i} ('{t.name.decode('utf-8', 'replace') if t.name else ''}')"
        shape = _ints(t.shape)
        size = np.dtype(DTYPE_FROM_TFLITE.get(t.type, "float32")).itemsize * math.prod(shape)
        if any(d < 0 for d in shape) or size > _MAX_BYTES:
            raise MccError(f"corrupt TFLite model: {name} has shape {shape}, "
                           f"{'a negative dimension' if any(d < 0 for d in shape) else f'{size:,} bytes'}; "
                           "re-export the model", path=path)
        q = t.quantization
        n_scale = len(q.scale) if q is not None and q.scale is not None else 0
        if n_scale:
            n_zp = len(q.zeroPoint) if q.zeroPoint is not None else 0
            axis = q.quantizedDimension
            if n_zp not in (0, n_scale) or (n_scale > 1 and not (0 <= axis < len(shape) and shape[axis] == n_scale)):
                raise MccError(f"corrupt TFLite model: {name} {shape} has {n_scale} quantization scales and {n_zp} "
                               f"zero points along dimension {axis}; re-export the model", path=path)
        buf = buffers[t.buffer] if t.buffer > 0 else None
        if buf is not None and buf.offset > 1 and buf.offset + buf.size > len(data):
            raise MccError(f"corrupt TFLite model: {name} keeps its data at bytes {buf.offset:,} to "
                           f"{buf.offset + buf.size:,} of the file (after the flatbuffer), but the file has "
                           f"{len(data):,} bytes: it is truncated; re-copy or re-export the model", path=path)


def _nhwc_tensors(model: schema.ModelT, tensors: list) -> list[int]:
    """Indices of the computed 4-D tensors to tag NHWC: the graph's inputs, what a spatial op reads, and upstream
    of the latter every tensor that ir.ops' layout inference derives its tag from (an op's output follows its
    inputs, except reshape, transpose and fully_connected), so that re-running shape inference keeps the tags."""
    sub = model.subgraphs[0]
    codes = [_code(model.operatorCodes[op.opcodeIndex]) for op in sub.operators or []]
    layout = [traits(_LAYOUT_OP[c]).layout if c in _LAYOUT_OP else None for c in codes]
    data = [BY_CODE[c].position(0) if c in BY_CODE else 0 for c in codes]  # TRANSPOSE_CONV's comes third
    producer = {o: k for k, op in enumerate(sub.operators or []) for o in _ints(op.outputs)}
    stack = _ints(sub.inputs) + [i for op, kind, p in zip(sub.operators or [], layout, data)
                                 if kind == "spatial" for i in _ints(op.inputs)[p:p + 1]]
    seen: set[int] = set()
    while stack:
        i = stack.pop()
        if i < 0 or i in seen or tensors[i].is_constant or len(tensors[i].shape) != 4:
            continue
        seen.add(i)
        k = producer.get(i)
        if k is not None and layout[k] not in (None, "own"):
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
    if len(ir_ins) >= len(m.input_order):  # builtin position k holds IR input input_order[k]
        ir_ins[:len(m.input_order)] = [ir_ins[m.input_order.index(i)] for i in range(len(m.input_order))]
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


def _signature_names(model: schema.ModelT, tensors: list, path) -> dict[str, str]:
    """{tensor name: signature name} where the file's signature (serving_default, else its first one) names an
    input or output otherwise than its tensor ("serving_default_x:0" is "x"), for the writer to keep."""
    sigs = [s for s in model.signatureDefs or [] if s.subgraphIndex == 0]
    sig = next((s for s in sigs if s.signatureKey == b"serving_default"), sigs[0] if sigs else None)
    if sig is None:
        return {}
    names = {}
    for m in (sig.inputs or []) + (sig.outputs or []):
        if not 0 <= m.tensorIndex < len(tensors):
            raise MccError(f"corrupt TFLite model: signature '{sig.signatureKey.decode('utf-8', 'replace')}' maps "
                           f"a name to tensor {m.tensorIndex}, out of {len(tensors)}; re-export the model", path=path)
        name = m.name.decode("utf-8", "replace") if m.name else ""
        if name and name != tensors[m.tensorIndex].name:
            names[tensors[m.tensorIndex].name] = name
    return names


# What a structurally valid flatbuffer with nonsense contents (a zero stride, a wrong rank) raises on the way.
_MALFORMED = (ValueError, IndexError, KeyError, TypeError, AttributeError, ZeroDivisionError)


def read_tflite(data: bytes, path=None) -> Graph:
    """The NHWC IR graph of a TFLite model; `path` only names the file in errors."""
    data = bytes(data)
    model = _unpack(data, path)
    _check_indices(model, data, path)
    _refuse_unknown(model, path)
    sub = model.subgraphs[0]
    taken: set = set()
    tensors = [_tensor(t, i, model, data, taken, path) for i, t in enumerate(sub.tensors or [])]
    graph = Graph(sub.name.decode("utf-8", "replace") if sub.name else "main")
    graph.inputs = [tensors[i] for i in _ints(sub.inputs)]
    for i in _nhwc_tensors(model, tensors):
        tensors[i].layout = "NHWC"
    for k, op in enumerate(sub.operators or []):
        code = _code(model.operatorCodes[op.opcodeIndex])
        where = tensors[op.outputs[0]].name
        try:
            folded = _unpacked(code, op, tensors)
            ins = [tensors[i] if i >= 0 else None for i in _ints(op.inputs)]
            if folded is not None:
                tensors[op.outputs[0]] = folded
            elif reader_ops.reads(code, ins):
                outs = _ints(op.outputs)
                lowered = reader_ops.lower(graph, code, BUILTIN_NAMES[code], ins, [tensors[i] for i in outs],
                                           op.builtinOptions, lambda base: _unique(base, taken))
                for i, t in zip(outs, lowered):
                    tensors[i] = t
            else:
                graph.nodes.append(_node(graph, BY_CODE[code], op, tensors, taken))
        except MccError as e:
            raise MccError(str(e), path=path, node=where) from None
        except _MALFORMED as e:
            raise MccError(f"operator {k} ({BUILTIN_NAMES[code]}) is malformed ({type(e).__name__}: {e}); "
                           "re-export the model", path=path, node=where) from None
    graph.outputs = [tensors[i] for i in _ints(sub.outputs)]
    signature = _signature_names(model, tensors, path)
    if signature:
        graph.origin["signature"] = signature
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
    whose re-quantization would stack a second rounding on the first, and one with an input other than float32."""
    graph = read_tflite(data, path)
    quantized = next((t for t in graph.tensors() if t.quant is not None or t.dtype in ("int8", "uint8", "int16")), None)
    if quantized is not None:
        raise MccError(f"the model is already quantized (tensor '{quantized.name}' is {quantized.dtype}"
                       f"{' with quantization parameters' if quantized.quant is not None else ''}); mcc compiles "
                       "float models: compile the float source model instead. `mcc validate` and `mcc run` read "
                       "this file as it is", path=path)
    other = next((t for t in graph.inputs if t.dtype != "float32"), None)
    if other is not None:
        raise MccError(f"input '{other.name}' is {other.dtype}; mcc compiles float models, whose inputs are float32 "
                       "(its float pipeline, calibration and int8 quantizer take float32 activations): export the "
                       "model with float32 inputs. `mcc validate` and `mcc run` read this file as it is", path=path)
    return graph
