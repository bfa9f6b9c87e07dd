"""TFLite flatbuffers: small float (and one int8) models written by mcc, mutated through the schema's object API and
at the byte level.

Seeds are IR graphs written with backends.tflite_writer (convolutions, pools, FC, concat, resize, pad, slice,
split, mean, ...), one compiled to arm-int8, and two built with the object API the way converters write them:
float16 weights behind DEQUANTIZE and sparse weights behind DENSIFY. Most inputs unpack a seed (ModelT), change one
to three fields (tensor shapes, types, buffer indices and names, quantization and sparsity parameters, operator
inputs/outputs, opcode indices and codes, builtin options and their fields, subgraph inputs/outputs, buffers'
data and offset/size, subgraphs, tensors and operators added or removed) and pack it again with the "TFL3"
identifier; the rest corrupt the packed bytes: a vector's or string's length set to a boundary value, bytes
flipped, the file cut. Inputs alternate between mcc.frontend.load (a compile source: sniffing, then
read_float_tflite) and read_tflite (what validate and run use).
"""

from __future__ import annotations

import random
import struct

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

from mcc.formats.tflite.writer import write_tflite
from mcc.frontend import load
from mcc.formats.tflite.reader import read_tflite
from mcc.ir import Graph

from .runner import Reader, flip_bytes, interesting_int

OP = schema.BuiltinOperator
INT32 = (-(1 << 31), (1 << 31) - 1)
UINT32 = (0, (1 << 32) - 1)


# ---- seeds ----------------------------------------------------------------------------------------------
def _rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def _graphs() -> list[Graph]:
    rng = np.random.default_rng(0)
    out = []

    g = Graph("conv_net")   # conv + relu, add, max pool, reshape, fully connected, softmax
    x = g.add_input("x", (1, 4, 4, 2), layout="NHWC")
    c = g.add_node("conv2d", [x, g.constant("w", _rand(rng, 3, 3, 3, 2)), g.constant("b", _rand(rng, 3))],
                   {"padding": [1, 1, 1, 1], "stride": [1, 1], "dilation": [1, 1], "groups": 1,
                    "activation": "relu"}).outputs[0]
    a = g.add_node("add", [c, g.constant("k", _rand(rng, 1, 1, 1, 3))]).outputs[0]
    p = g.add_node("max_pool2d", [a], {"kernel": [2, 2], "stride": [2, 2]}).outputs[0]
    r = g.add_node("reshape", [p], {"shape": [1, 12]}).outputs[0]
    f = g.add_node("fully_connected", [r, g.constant("fw", _rand(rng, 4, 12)), g.constant("fb", _rand(rng, 4))],
                   {"activation": None}).outputs[0]
    g.outputs = [g.add_node("softmax", [f], {"beta": 1.0}).outputs[0]]
    out.append(g)

    g = Graph("dw_net")     # depthwise, average pool, concat, bilinear resize, pad, transpose
    x = g.add_input("x", (1, 4, 4, 2), layout="NHWC")
    d = g.add_node("depthwise_conv2d", [x, g.constant("w", _rand(rng, 1, 3, 3, 2)), g.constant("b", _rand(rng, 2))],
                   {"padding": [1, 1, 1, 1], "multiplier": 1, "activation": "relu6"}).outputs[0]
    ap = g.add_node("avg_pool2d", [d], {"kernel": [3, 3], "stride": [1, 1], "padding": [1, 1, 1, 1]}).outputs[0]
    cat = g.add_node("concat", [ap, x], {"axis": 3}).outputs[0]
    rs = g.add_node("resize", [cat], {"mode": "bilinear", "size": [6, 6]}).outputs[0]
    pd = g.add_node("pad", [rs], {"pads": [0, 1, 0, 0, 0, 1, 0, 0]}).outputs[0]
    g.outputs = [g.add_node("transpose", [pd], {"perm": [0, 3, 1, 2]}).outputs[0]]
    out.append(g)

    g = Graph("slice_net")  # slice, split, mul, mean, nearest resize
    x = g.add_input("x", (1, 4, 4, 4), layout="NHWC")
    s = g.add_node("slice", [x], {"starts": [1], "ends": [4], "axes": [1], "steps": [1]}).outputs[0]
    s1, s2 = g.add_node("split", [s], {"axis": 3, "sizes": [1, 3]}, n_outputs=2).outputs
    m = g.add_node("mul", [s2, s1]).outputs[0]
    rn = g.add_node("resize", [m], {"mode": "nearest", "size": [6, 8], "coordinate_transformation_mode": "asymmetric",
                                    "nearest_mode": "floor"}).outputs[0]
    g.outputs = [g.add_node("mean", [rn], {"axes": [1, 2], "keepdims": True}).outputs[0], s1]
    out.append(g)
    return out


def _int8(graph: Graph) -> bytes:
    from mcc.compiler import compile_model

    calib = {"x": np.random.default_rng(1).standard_normal((4, *graph.inputs[0].shape[1:])).astype(np.float32)}
    return compile_model(graph, "arm-int8", calib=calib).data


def _packed(model: schema.ModelT) -> bytes:
    b = flatbuffers.Builder(1024)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def _hand_built(kind: str) -> bytes:
    """FULLY_CONNECTED whose weights come from DEQUANTIZE (float16) or DENSIFY (a 2x4 block-free CSR matrix), as
    converters write them."""
    rng = np.random.default_rng(2)
    buffers = [schema.BufferT()]

    def tensor(name, shape, ttype, data=None, sparsity=None):
        t = schema.TensorT()
        t.name, t.shape, t.type, t.sparsity = name, list(shape), ttype, sparsity
        if data is not None:
            buf = schema.BufferT()
            buf.data = np.frombuffer(data.tobytes(), np.uint8)
            t.buffer = len(buffers)
            buffers.append(buf)
        return t

    tensors = [tensor("x", (1, 4), schema.TensorType.FLOAT32)]
    if kind == "dequantize":
        tensors.append(tensor("w16", (2, 4), schema.TensorType.FLOAT16, rng.standard_normal((2, 4)).astype(np.float16)))
        code = OP.DEQUANTIZE
    else:
        sp = schema.SparsityParametersT()
        sp.traversalOrder, sp.blockMap = [0, 1], []
        dense, csr = schema.DimensionMetadataT(), schema.DimensionMetadataT()
        dense.format, dense.denseSize = schema.DimensionType.DENSE, 2
        csr.format = schema.DimensionType.SPARSE_CSR
        csr.arraySegmentsType = csr.arrayIndicesType = schema.SparseIndexVector.Int32Vector
        csr.arraySegments, csr.arrayIndices = schema.Int32VectorT(), schema.Int32VectorT()
        csr.arraySegments.values, csr.arrayIndices.values = [0, 2, 3], [0, 3, 1]
        sp.dimMetadata = [dense, csr]
        tensors.append(tensor("wsp", (2, 4), schema.TensorType.FLOAT32, rng.standard_normal(3).astype(np.float32), sp))
        code = OP.DENSIFY
    tensors += [tensor("w", (2, 4), schema.TensorType.FLOAT32),
                tensor("b", (2,), schema.TensorType.FLOAT32, rng.standard_normal(2).astype(np.float32)),
                tensor("y", (1, 2), schema.TensorType.FLOAT32)]
    codes = []
    for c in (code, OP.FULLY_CONNECTED):
        oc = schema.OperatorCodeT()
        oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = c, min(c, 127), 1
        codes.append(oc)
    unpack, fc = schema.OperatorT(), schema.OperatorT()
    unpack.opcodeIndex, unpack.inputs, unpack.outputs = 0, [1], [2]
    fc.opcodeIndex, fc.inputs, fc.outputs = 1, [0, 2, 3], [4]
    fc.builtinOptionsType, fc.builtinOptions = schema.BuiltinOptions.FullyConnectedOptions, \
        schema.FullyConnectedOptionsT()
    sub = schema.SubGraphT()
    sub.tensors, sub.operators, sub.inputs, sub.outputs, sub.name = tensors, [unpack, fc], [0], [4], b"main"
    model = schema.ModelT()
    model.version, model.subgraphs, model.buffers, model.operatorCodes = 3, [sub], buffers, codes
    return _packed(model)


# Where the uint32 length of each vector and string sits, found by walking the packed file with the generated
# accessors: (table class, vtable slot, kind) per field; kind "tables" recurses into each element.
_WALK = {
    "Model": [(6, "tables", "OperatorCode"), (8, "tables", "SubGraph"), (10, "str", None), (12, "tables", "Buffer")],
    "SubGraph": [(4, "tables", "Tensor"), (6, "vec", None), (8, "vec", None), (10, "tables", "Operator"),
                 (12, "str", None)],
    "Tensor": [(4, "vec", None), (10, "str", None), (12, "table", "QuantizationParameters"),
               (16, "table", "SparsityParameters")],
    "Operator": [(6, "vec", None), (8, "vec", None)],
    "OperatorCode": [(6, "str", None)],
    "Buffer": [(4, "vec", None)],
    "QuantizationParameters": [(8, "vec", None), (10, "vec", None)],
    "SparsityParameters": [(4, "vec", None), (6, "vec", None), (8, "tables", "DimensionMetadata")],
    "DimensionMetadata": [],
}


def _length_positions(data: bytes) -> list[int]:
    found = []

    def walk(cls: str, pos: int) -> None:
        obj = getattr(schema, cls)()
        obj.Init(data, pos)
        tab = obj._tab
        for slot, kind, inner in _WALK[cls]:
            o = tab.Offset(slot)
            if not o:
                continue
            if kind == "table":
                walk(inner, tab.Indirect(o + tab.Pos))
                continue
            start = tab.Vector(o)
            found.append(start - 4)
            if kind == "tables":
                for i in range(tab.VectorLen(o)):
                    walk(inner, tab.Indirect(start + 4 * i))

    walk("Model", struct.unpack_from("<I", data, 0)[0])
    return found


def build():
    files = [write_tflite(g) for g in _graphs()]
    files.append(_int8(_graphs()[0]))
    files += [_hand_built("dequantize"), _hand_built("densify")]
    return [(f, _length_positions(f)) for f in files]


# ---- object-level mutations -----------------------------------------------------------------------------
def _pick(rng, items):
    return rng.choice(items) if items else None


def _shape(rng: random.Random, shape) -> list[int]:
    shape = list(shape if shape is not None else [])
    choice = rng.randrange(8)
    if choice == 0:
        return rng.choice([[], [0], [-1], [(1 << 31) - 1], [65536, 65536, 65536], [1, 1 << 30, 1 << 30, 4],
                           [1, 4, 4, 2, 1, 1, 1, 1, 1], [2, 3]])
    if choice == 1 and shape:
        shape[rng.randrange(len(shape))] = interesting_int(rng, *INT32) if rng.random() < 0.5 else rng.randrange(-2, 9)
    elif choice == 2 and shape:
        del shape[rng.randrange(len(shape))]
    elif choice == 3:
        shape.insert(rng.randrange(len(shape) + 1), rng.randrange(0, 5))
    elif choice == 4:
        rng.shuffle(shape)
    else:
        shape = [rng.randrange(0, 9) for _ in range(rng.randrange(0, 6))]
    return shape


def _index_list(rng: random.Random, values, n: int) -> list[int]:
    values = [int(v) for v in (values if values is not None else [])]
    choice = rng.randrange(7)
    if choice == 0 and values:
        values[rng.randrange(len(values))] = rng.choice([-1, -2, n, n + 1, interesting_int(rng, *INT32),
                                                         rng.randrange(max(n, 1))])
    elif choice == 1:
        values.append(rng.choice([-1, n, rng.randrange(max(n, 1))]))
    elif choice == 2 and values:
        del values[rng.randrange(len(values))]
    elif choice == 3:
        values = []
    elif choice == 4 and values:
        values.append(values[0])
    elif choice == 5:
        values = values[::-1]
    else:
        values = [rng.randrange(-1, n + 2) for _ in range(rng.randrange(0, 5))]
    return values


def _option_value(rng: random.Random, value):
    """A new value for one field of a builtin-options object, in a range its type can pack."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return rng.choice([0, 1, 2, 3, 4, 5, 6, 7, 16, 127, -1, -2, -128, rng.randrange(-128, 128)])
    if isinstance(value, float):
        return rng.choice([0.0, -1.0, 1.0, 1e30, -1e30, float("nan"), float("inf"), 1e-30])
    if isinstance(value, (list, np.ndarray)) or value is None:
        return [rng.randrange(-2, 9) for _ in range(rng.randrange(0, 6))]
    return value


OPTION_CLASSES = [c for c in dir(schema.BuiltinOptions) if not c.startswith("_") and c != "NONE"]


def _mutate_options(op: schema.OperatorT, others: list, rng: random.Random) -> None:
    choice = rng.randrange(5)
    if choice == 0 and op.builtinOptions is not None:
        fields = [k for k in vars(op.builtinOptions)]
        if fields:
            k = rng.choice(fields)
            setattr(op.builtinOptions, k, _option_value(rng, getattr(op.builtinOptions, k)))
    elif choice == 1:   # another operator's options (of another type, or the type left stale)
        donor = _pick(rng, [o for o in others if o.builtinOptions is not None])
        if donor is not None:
            op.builtinOptions = donor.builtinOptions
            if rng.random() < 0.5:
                op.builtinOptionsType = donor.builtinOptionsType
    elif choice == 2:
        op.builtinOptions = None
    elif choice == 3:   # a fresh options object of a random type, default fields
        name = rng.choice(OPTION_CLASSES)
        cls = getattr(schema, name + "T", None)
        if cls is not None:
            op.builtinOptionsType, op.builtinOptions = getattr(schema.BuiltinOptions, name), cls()
    else:
        op.builtinOptionsType = interesting_int(rng, 0, 255)


def _quantization(rng: random.Random) -> schema.QuantizationParametersT:
    q = schema.QuantizationParametersT()
    n = rng.choice([0, 1, 1, 2, 3, 4, 9])
    q.scale = [rng.choice([0.1, 1.0, 0.0, -1.0, float("nan"), float("inf"), 1e-30]) for _ in range(n)]
    q.zeroPoint = [rng.choice([0, 1, -128, 127, 1 << 40]) for _ in range(rng.choice([n, n, 0, n + 1]))]
    q.quantizedDimension = rng.choice([0, 1, 3, 4, -1, (1 << 31) - 1])
    if rng.random() < 0.2:
        q.min, q.max = [0.0], [-1.0]
    return q


def _sparse_vector(rng: random.Random):
    kind = rng.randrange(1, 4)
    cls = {1: schema.Int32VectorT, 2: schema.Uint16VectorT, 3: schema.Uint8VectorT}[kind]
    v = cls()
    top = {1: (1 << 31) - 1, 2: 65535, 3: 255}[kind]
    v.values = [rng.choice([0, 1, 2, 3, 4, top]) for _ in range(rng.randrange(0, 6))]
    return kind, v


def _sparsity(rng: random.Random, old) -> schema.SparsityParametersT:
    sp = old if old is not None and rng.random() < 0.6 else schema.SparsityParametersT()
    choice = rng.randrange(4)
    if choice == 0 or sp.dimMetadata is None:
        sp.traversalOrder = [rng.randrange(-1, 4) for _ in range(rng.randrange(0, 4))]
        sp.blockMap = [rng.randrange(-1, 3) for _ in range(rng.randrange(0, 2))]
    if choice <= 1 or sp.dimMetadata is None:
        sp.dimMetadata = []
        for _ in range(rng.randrange(0, 4)):
            d = schema.DimensionMetadataT()
            d.format = rng.choice([0, 1, 2, -1])
            d.denseSize = rng.choice([0, 1, 2, 4, -1, (1 << 31) - 1])
            if d.format == 1 or rng.random() < 0.3:
                d.arraySegmentsType, d.arraySegments = _sparse_vector(rng)
                d.arrayIndicesType, d.arrayIndices = _sparse_vector(rng)
            sp.dimMetadata.append(d)
    elif sp.dimMetadata:
        d = rng.choice(sp.dimMetadata)
        if rng.random() < 0.5:
            d.denseSize = rng.choice([0, 1, 2, 3, 4, -1, (1 << 31) - 1])
        else:
            d.arraySegmentsType, d.arraySegments = _sparse_vector(rng)
    return sp


BUFFER_MARK = 0x5A5A_0000_0000_0000   # a Buffer.offset patched after packing (the file's length is known then)


def _mutate(m: schema.ModelT, rng: random.Random, marks: list) -> None:
    sub = _pick(rng, m.subgraphs or [])
    tensors = (sub.tensors or []) if sub is not None else []
    ops = (sub.operators or []) if sub is not None else []
    n_t = len(tensors)
    t, op = _pick(rng, tensors), _pick(rng, ops)
    choice = rng.randrange(26)
    if choice <= 2 and t is not None:
        t.shape = _shape(rng, t.shape)
    elif choice == 3 and t is not None:
        t.type = rng.choice([0, 1, 2, 3, 4, 6, 7, 9, 10, 11, 15, 16, 17, 18, 19, 20, 99, 127, -1, -128])
    elif choice == 4 and t is not None:
        n = len(m.buffers or [])
        t.buffer = rng.choice([0, n, n + 1, rng.randrange(max(n, 1)), interesting_int(rng, *UINT32)])
    elif choice == 5 and t is not None:
        t.name = rng.choice([None, b"", b"\xff\xfe\xfd", b"x" * 300, _pick(rng, tensors).name, "\u00e9".encode()])
    elif choice == 6 and t is not None:
        t.quantization = _quantization(rng) if rng.random() < 0.8 else None
    elif choice == 7 and t is not None:
        if rng.random() < 0.3:   # a record that fits a (possibly huge) shape: DENSE levels of its sizes
            t.shape = rng.choice([[16384, 32767], [2, 3], [1 << 15, 1 << 15], [4, 4], [3, 1 << 20, 2]])
            sp = schema.SparsityParametersT()
            sp.traversalOrder, sp.blockMap, sp.dimMetadata = list(range(len(t.shape))), [], []
            for size in t.shape:
                d = schema.DimensionMetadataT()
                d.format, d.denseSize = schema.DimensionType.DENSE, size
                sp.dimMetadata.append(d)
            t.sparsity = sp
        else:
            t.sparsity = _sparsity(rng, t.sparsity)
    elif choice == 8 and t is not None:
        t.shapeSignature = _shape(rng, t.shape)
        t.isVariable = rng.random() < 0.5
    elif choice in (9, 10) and op is not None:
        op.inputs = _index_list(rng, op.inputs, n_t)
    elif choice == 11 and op is not None:
        op.outputs = _index_list(rng, op.outputs, n_t)
    elif choice == 12 and op is not None:
        n = len(m.operatorCodes or [])
        op.opcodeIndex = rng.choice([n, n + 1, rng.randrange(max(n, 1)), interesting_int(rng, *UINT32)])
    elif choice in (13, 14) and op is not None:
        _mutate_options(op, ops, rng)
    elif choice == 15 and m.operatorCodes:
        oc = rng.choice(m.operatorCodes)
        k = rng.randrange(4)
        if k == 0:
            oc.builtinCode = rng.choice([0, OP.CUSTOM, OP.DENSIFY, OP.DEQUANTIZE, OP.CONV_2D, OP.ADD, 127, 128, 210,
                                         1000, -1, interesting_int(rng, *INT32)])
        elif k == 1:
            oc.deprecatedBuiltinCode = rng.choice([0, 3, 9, 32, 127, -1, -128])
        elif k == 2:
            oc.customCode = rng.choice([None, b"", b"MyOp", b"\xff\xfe"])
        else:
            oc.version = interesting_int(rng, *INT32)
    elif choice in (16, 17) and sub is not None:
        if rng.random() < 0.5:
            sub.inputs = _index_list(rng, sub.inputs, n_t) if rng.random() < 0.8 else None
        else:
            sub.outputs = _index_list(rng, sub.outputs, n_t) if rng.random() < 0.8 else None
    elif choice == 18 and m.buffers:
        buf = rng.choice(m.buffers)
        data = np.asarray(buf.data if buf.data is not None else [], np.uint8)
        k = rng.randrange(4)
        if k == 0 and len(data):
            buf.data = data[:rng.randrange(len(data))]
        elif k == 1:
            buf.data = np.concatenate([data, np.frombuffer(rng.randbytes(rng.choice([1, 2, 4, 8, 64])), np.uint8)])
        elif k == 2:
            buf.data = None
        else:
            buf.data = np.frombuffer(rng.randbytes(len(data)), np.uint8)
    elif choice == 19 and m.buffers:
        buf = rng.choice(m.buffers)   # data stored after the flatbuffer: offset and size patched after packing
        mark = BUFFER_MARK + 2 * len(marks)
        marks.append((mark, buf.data))
        buf.offset, buf.size, buf.data = mark, mark + 1, None
    elif choice == 20 and m.buffers is not None:
        if rng.random() < 0.5 and m.buffers:
            del m.buffers[rng.randrange(len(m.buffers))]
        else:
            m.buffers.append(schema.BufferT())
    elif choice == 21 and m.subgraphs is not None:
        k = rng.randrange(3)
        if k == 0:
            m.subgraphs.append(m.subgraphs[0] if m.subgraphs else schema.SubGraphT())
        elif k == 1:
            m.subgraphs = [] if rng.random() < 0.5 else None
        elif sub is not None:
            sub.name = rng.choice([None, b"\xff\xfe", b""])
    elif choice == 22 and sub is not None and ops:
        k = rng.randrange(3)
        if k == 0:
            del ops[rng.randrange(len(ops))]
        elif k == 1:
            ops.insert(rng.randrange(len(ops) + 1), rng.choice(ops))
        else:
            rng.shuffle(ops)
    elif choice == 23 and sub is not None and tensors:
        if rng.random() < 0.6:
            del tensors[rng.randrange(len(tensors))]
        else:
            tensors.append(rng.choice(tensors))
    elif choice == 24:
        m.version = rng.choice([0, 1, 3, 4, (1 << 32) - 1])
        m.description = rng.choice([None, b"\xff", b"mcc"])
    else:
        sig = schema.SignatureDefT()
        tm = schema.TensorMapT()
        tm.name, tm.tensorIndex = b"x", rng.choice([0, n_t, interesting_int(rng, *UINT32)])
        sig.inputs, sig.outputs, sig.signatureKey, sig.subgraphIndex = [tm], [tm], b"serving_default", \
            rng.choice([0, 1, 5])
        m.signatureDefs = [sig]
        md = schema.MetadataT()
        md.name, md.buffer = b"min_runtime_version", rng.choice([0, len(m.buffers or []), 1 << 20])
        m.metadata = [md]


def _place_marked_buffers(data: bytes, marks: list, rng: random.Random) -> bytes:
    """Give each buffer marked in _mutate an offset and size: its data appended after the flatbuffer (aligned), an
    offset or size past the end of the file, or one pointing into the flatbuffer itself."""
    out = bytearray(data)
    for mark, payload in marks:
        at = bytes(out).find(struct.pack("<Q", mark))
        if at < 0:
            continue
        payload = bytes(np.asarray(payload, np.uint8)) if payload is not None else rng.randbytes(rng.randrange(0, 9))
        k = rng.randrange(5)
        end = len(out) + (-len(out)) % 16
        if k <= 1:
            out += bytes(end - len(out)) + payload
            offset, size = end, len(payload)
        elif k == 2:
            offset, size = end, len(payload) + rng.choice([1, 4, 1 << 20])
        elif k == 3:
            offset, size = rng.randrange(2, len(out)), rng.choice([0, 4, len(out)])
        else:
            offset, size = interesting_int(rng, 2, (1 << 64) - 1), interesting_int(rng, 0, (1 << 64) - 1)
        out[at:at + 8] = struct.pack("<Q", offset)
        size_at = bytes(out).find(struct.pack("<Q", mark + 1))
        if size_at >= 0:
            out[size_at:size_at + 8] = struct.pack("<Q", size)
    return bytes(out)


def generate(seeds, rng: random.Random) -> bytes:
    data, lengths = rng.choice(seeds)
    r = rng.random()
    if r < 0.7:
        for _ in range(5):   # a value out of its field's range (an options field is unsigned) fails to pack: retry
            m = schema.ModelT.InitFromPackedBuf(data, 0)
            marks: list = []
            for _ in range(rng.choice([1, 1, 1, 2, 3])):
                _mutate(m, rng, marks)
            try:
                packed = _packed(m)
            except (TypeError, struct.error):
                continue
            packed = _place_marked_buffers(packed, marks, rng)
            return flip_bytes(packed, rng, keep=8) if rng.random() < 0.1 else packed
    if r < 0.85:   # a vector's or string's length set to a boundary value
        out = bytearray(data)
        for _ in range(rng.choice([1, 1, 2])):
            at = rng.choice(lengths)
            old = struct.unpack_from("<I", out, at)[0]
            new = rng.choice([0, old + 1, old * 2, old + 1000, len(data) // 4, len(data), 0x7FFFFFFF, 0xFFFFFFFF,
                              interesting_int(rng, *UINT32)])
            struct.pack_into("<I", out, at, new & 0xFFFFFFFF)
        return bytes(out)
    if r < 0.95:
        return flip_bytes(data, rng, keep=8 if rng.random() < 0.9 else 0)
    return data[:rng.randrange(8, len(data))]


READER = Reader("tflite", ".tflite", build, generate,
                (("load", lambda data, path: load(path)), ("read_tflite", lambda data, path: read_tflite(data, path))))
