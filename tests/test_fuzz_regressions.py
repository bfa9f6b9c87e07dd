"""Every crash the fuzzers (tests/fuzz) found, as a test: the bad input built here, MccError naming the problem.

Each case says what the reader raised before it was fixed (the fuzzer's signature: exception type at the
innermost mcc frame)."""

import io
import struct
import time
import zipfile

import flatbuffers
import numpy as np
import onnx
import pytest
from ai_edge_litert import schema_py_generated as schema
from onnx import TensorProto, helper, numpy_helper

from mcc.formats.tflite.writer import write_tflite
from mcc.datafiles import match_inputs, read_arrays, run_in_batches
from mcc.errors import MccError
from mcc.frontend import load
from mcc.formats.tflite.reader import read_float_tflite, read_tflite
from mcc.ir import Graph, Tensor
from mcc.runtime import run
from mcc.runtime.litert import run_litert

OP = schema.BuiltinOperator


# ---- .npz / .npy (mcc.datafiles) ------------------------------------------------------------------------
def npy(header: str, data: bytes = b"", version=(1, 0)) -> bytes:
    """An .npy file from the text of its header dict and its data bytes (padded as numpy pads)."""
    text = header.encode("latin1")
    text += b" " * ((-(len(text) + 11)) % 64) + b"\n"
    return b"\x93NUMPY" + bytes(version) + struct.pack("<H", len(text)) + text + data


def header(descr="'<f4'", shape="(2, 3)", fortran="False") -> str:
    return f"{{'descr': {descr}, 'fortran_order': {fortran}, 'shape': {shape}, }}"


def npz(tmp_path, members: dict, compression=zipfile.ZIP_STORED, name="data.npz"):
    path = tmp_path / name
    with zipfile.ZipFile(path, "w", compression) as z:
        for member, raw in members.items():
            z.writestr(member, raw)
    return path


def good_npy(shape=(2, 3)) -> bytes:
    f = io.BytesIO()
    np.save(f, np.ones(shape, np.float32))
    return f.getvalue()


def read_error(path) -> str:
    with pytest.raises(MccError) as e:
        read_arrays(path)
    assert str(path) in str(e.value)
    return str(e.value)


def test_truncated_member(tmp_path):
    """ValueError at datafiles.py (np.load read members lazily, outside the try): 'EOF: reading array data'."""
    path = npz(tmp_path, {"x.npy": good_npy()[:-5]})
    msg = read_error(path)
    assert "member 'x.npy'" in msg and "truncated" in msg and "24 bytes" in msg


def test_member_longer_than_its_header_says(tmp_path):
    path = npz(tmp_path, {"x.npy": good_npy() + b"\x00" * 8})
    assert "holds 32" in read_error(path)


def test_bad_crc(tmp_path):
    """BadZipFile (Bad CRC-32) at datafiles.py when the member was first read."""
    path = npz(tmp_path, {"x.npy": good_npy()})
    data = bytearray(path.read_bytes())
    data[-30 - 22 - 5] ^= 1   # a byte of the member's data (before the central directory of one member)
    path.write_bytes(bytes(data))
    msg = read_error(path)
    assert "member 'x.npy' is damaged" in msg and "CRC" in msg


def test_bad_local_header(tmp_path):
    """BadZipFile (Bad magic number for file header) and OSError (Invalid argument): damaged member offsets."""
    path = npz(tmp_path, {"x.npy": good_npy()})
    data = bytearray(path.read_bytes())
    data[0:4] = b"PK\x00\x00"
    path.write_bytes(bytes(data))
    assert "member 'x.npy' is damaged" in read_error(path)


def test_bad_deflate_stream(tmp_path):
    """zlib.error at datafiles.py: a deflated member whose stream is damaged."""
    path = npz(tmp_path, {"x.npy": good_npy((64, 64))}, zipfile.ZIP_DEFLATED)
    data = bytearray(path.read_bytes())
    info = zipfile.ZipFile(path).infolist()[0]
    start = info.header_offset + 30 + len(info.filename)
    data[start + 5:start + 25] = bytes(range(20))
    path.write_bytes(bytes(data))
    assert "member 'x.npy' is damaged" in read_error(path)


def test_encrypted_or_unsupported_member(tmp_path):
    """RuntimeError (File is encrypted) and NotImplementedError (zip version / compressed patched data)."""
    path = npz(tmp_path, {"x.npy": good_npy()})
    data = bytearray(path.read_bytes())
    data[6] |= 1                                   # the local header's "encrypted" flag
    central = data.rfind(b"PK\x01\x02")
    data[central + 8] |= 1                         # and the central directory's
    path.write_bytes(bytes(data))
    assert "member 'x.npy' is damaged" in read_error(path)
    data[6] &= ~1
    data[central + 8] &= ~1
    data[central + 6] = 255                        # "version needed to extract" 25.5
    path.write_bytes(bytes(data))
    assert "zip file version 25.5" in read_error(path)


def test_member_that_is_not_an_array(tmp_path):
    """AttributeError ('bytes' object has no attribute 'ndim') in match_inputs: np.load returns such a member as
    bytes."""
    path = npz(tmp_path, {"x": b"hello"})
    assert "member 'x' is not a .npy array" in read_error(path)


def test_two_arrays_of_one_name(tmp_path):
    path = npz(tmp_path, {"x.npy": good_npy(), "x": good_npy()})
    assert "two arrays named 'x'" in read_error(path)


@pytest.mark.parametrize("text, what", [
    ("{'descr': '<f4', 'fortran_order': False, 'shape': (2, ", "TokenError"),     # TokenError at datafiles.py
    ("{'descr': '<f4', 'fortran_order': False, 'shape': ('2',), }", "shape is not valid"),
    ("[1, 2, 3]", "not a dictionary"),
    ("{'descr': '<f3', 'fortran_order': False, 'shape': (2,), }", "descr"),
])
def test_damaged_header(tmp_path, text, what):
    path = npz(tmp_path, {"x.npy": npy(text, bytes(8))})
    msg = read_error(path)
    assert "member 'x.npy' has a damaged .npy header" in msg and what in msg
    (tmp_path / "x.npy").write_bytes(npy(text, bytes(8)))
    assert "the array has a damaged .npy header" in read_error(tmp_path / "x.npy")


def test_huge_shape_is_not_allocated(tmp_path):
    """MemoryError at datafiles.py: np.load allocated the 2 PiB the header claims before reading the data."""
    bad = npy(header("'<f8'", "(281474976710656,)"), bytes(16))
    (tmp_path / "x.npy").write_bytes(bad)
    for path in (npz(tmp_path, {"x.npy": bad}), tmp_path / "x.npy"):
        assert "2,251,799,813,685,248 bytes of data, but holds 16" in read_error(path)


def test_bool_and_negative_shapes(tmp_path):
    """TypeError (an integer is required) at datafiles.py: numpy's header check lets a shape of (True,) through."""
    for shape in ("(True,)", "(-1,)", "(-2, 3)"):
        path = npz(tmp_path, {"x.npy": npy(header(shape=shape), bytes(4))})
        assert "impossible shape" in read_error(path)


def test_object_array(tmp_path):
    """ValueError (Object arrays cannot be loaded when allow_pickle=False) when the member was first read."""
    path = npz(tmp_path, {"x.npy": npy(header("'|O'", "(2,)"), b"\x80\x04\x95" + bytes(20) + b".")})
    assert "Python objects" in read_error(path)
    (tmp_path / "x.npy").write_bytes(npy(header("'|O'", "(2,)"), b"\x80\x04."))
    assert "Python objects" in read_error(tmp_path / "x.npy")


@pytest.mark.parametrize("descr", ["'<U5'", "'|S3'", "[('f0', '<i4'), ('f1', '<f4')]", "'<c8'", "'<M8[s]'"])
def test_non_numeric_dtypes(tmp_path, descr):
    """ValueError (invalid literal for int()), SystemError (invalid maximum character passed to PyUnicode_New) and
    TypeError (Cannot cast array data from dtype([('f0', '<i4'), ('f1', '<f4')])) at match_inputs' astype."""
    itemsize = np.lib.format.descr_to_dtype(eval(descr)).itemsize
    path = npz(tmp_path, {"input.npy": npy(header(descr, "(1, 3)"), b"\xff" * 3 * itemsize)})
    assert "mcc reads numeric arrays" in read_error(path)
    with pytest.raises(MccError, match="array 'input' is dtype"):
        match_inputs({"input": np.zeros((1, 3), np.dtype(np.lib.format.descr_to_dtype(eval(descr))))},
                     [Tensor("input", (1, 3), "int32")])


def test_npy_version_3_and_unknown(tmp_path):
    for version in ((3, 0), (9, 9)):
        path = npz(tmp_path, {"x.npy": npy(header(), bytes(24), version)})
        assert "format version" in read_error(path)


def test_zero_samples(tmp_path):
    """IndexError at run_in_batches (parts[0] of no parts): an array with batch 0 matched a model input."""
    path = npz(tmp_path, {"x.npy": npy(header(shape="(0, 3)"))})
    arrays = read_arrays(path)
    with pytest.raises(MccError, match=r"array 'x' holds no samples \(shape \[0, 3\]\)"):
        match_inputs(arrays, [Tensor("x", (1, 3))], path=path)
    with pytest.raises(MccError, match="no samples"):
        run_in_batches(lambda f: f, {"x": np.zeros((0, 3), np.float32)}, 1)


def test_not_a_data_file(tmp_path):
    (tmp_path / "d.npz").write_bytes(b"\x80\x04K\x01.")
    assert "is not a .npz or .npy file" in read_error(tmp_path / "d.npz")
    (tmp_path / "e.npz").write_bytes(b"PK\x03\x04" + bytes(10))
    assert "damaged .npz (zip) archive" in read_error(tmp_path / "e.npz")


def test_good_files_still_read(tmp_path):
    """What numpy writes reads back identically: stored and deflated archives, .npy, Fortran order, big-endian."""
    arrays = {"x": np.arange(24, dtype=np.float32).reshape(2, 3, 4), "f": np.asfortranarray(np.eye(3)),
              "b": np.arange(5, dtype=">i4"), "s": np.float16(2.5), "e": np.zeros((0,), np.int8)}
    np.savez(tmp_path / "a.npz", **arrays)
    np.savez_compressed(tmp_path / "c.npz", **arrays)
    for name in ("a.npz", "c.npz"):
        got = read_arrays(tmp_path / name)
        assert sorted(got) == sorted(arrays)
        for k, v in arrays.items():
            assert got[k].dtype == v.dtype and np.array_equal(got[k], v)
        got["x"][0, 0, 0] = 5   # writable, as np.load's arrays are
    np.save(tmp_path / "f.npy", arrays["f"])
    assert np.array_equal(read_arrays(tmp_path / "f.npy")[""], arrays["f"])


# ---- TFLite (mcc.formats.tflite.reader) ------------------------------------------------------------------
def fc_model() -> schema.ModelT:
    """An mcc-written float model, unpacked: x[1, 4] -> FULLY_CONNECTED (weights w[3, 4], bias b[3]) -> y[1, 3]."""
    g = Graph("fc")
    x = g.add_input("x", (1, 4))
    rng = np.random.default_rng(0)
    n = g.add_node("fully_connected", [x, g.constant("w", rng.standard_normal((3, 4)).astype(np.float32)),
                                       g.constant("b", rng.standard_normal(3).astype(np.float32))],
                   {"activation": None})
    g.outputs = list(n.outputs)
    return schema.ModelT.InitFromPackedBuf(write_tflite(g), 0)


def pack(model: schema.ModelT) -> bytes:
    b = flatbuffers.Builder(0)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def tensor(model: schema.ModelT, name: bytes) -> schema.TensorT:
    return next(t for t in model.subgraphs[0].tensors if t.name == name)


def tflite_error(data: bytes, match: str, reader=read_tflite) -> str:
    with pytest.raises(MccError, match=match) as e:
        reader(data, "model.tflite")
    assert str(e.value).startswith("model.tflite: ")
    return str(e.value)


def test_quantization_scale_and_zero_point_lengths_differ():
    """ValueError at ir/tensor.py:35 ('quantization scale (1,) and zero point (2,) differ in shape')."""
    m = fc_model()
    q = schema.QuantizationParametersT()
    q.scale, q.zeroPoint = [0.1], [0, 0]
    tensor(m, b"w").quantization = q
    tflite_error(pack(m), r"tensor 1 \('w'\) \[3, 4\] has 1 quantization scales and 2 zero points")
    q.scale, q.zeroPoint, q.quantizedDimension = [0.1, 0.2], [0, 0], 5   # per channel along no dimension
    tflite_error(pack(m), "has 2 quantization scales and 2 zero points along dimension 5")


def dimension(dense_size=None, segments=None, indices=None) -> schema.DimensionMetadataT:
    """A DENSE dimension of `dense_size`, or a SPARSE_CSR one with these segments and indices."""
    d = schema.DimensionMetadataT()
    if dense_size is not None:
        d.format, d.denseSize = schema.DimensionType.DENSE, dense_size
        return d
    d.format = schema.DimensionType.SPARSE_CSR
    d.arraySegmentsType = d.arrayIndicesType = schema.SparseIndexVector.Int32Vector
    d.arraySegments, d.arrayIndices = schema.Int32VectorT(), schema.Int32VectorT()
    d.arraySegments.values, d.arrayIndices.values = segments, indices
    return d


def densify_model(shape, dims=None, stored=3) -> bytes:
    """x[1, 4] -> FULLY_CONNECTED with weights DENSIFY(`stored` values of a sparse `shape` matrix): by default
    CSR, row 0 holding columns 0 and 3, row 1 column 1 (and the other rows none)."""
    m = fc_model()
    sub = m.subgraphs[0]
    w = tensor(m, b"w")
    sp = schema.SparsityParametersT()
    sp.traversalOrder, sp.blockMap = list(range(len(shape))), []
    sp.dimMetadata = dims or [dimension(shape[0]), dimension(segments=[0, 2] + [3] * (shape[0] - 1),
                                                             indices=[0, 3, 1])]
    sparse = schema.TensorT()
    sparse.name, sparse.shape, sparse.type, sparse.sparsity = b"w_sparse", list(shape), w.type, sp
    buf = schema.BufferT()
    buf.data = np.frombuffer(np.ones(stored, np.float32).tobytes(), np.uint8)
    sparse.buffer, w.buffer = len(m.buffers), 0
    m.buffers.append(buf)
    sub.tensors.append(sparse)
    code = schema.OperatorCodeT()
    code.builtinCode, code.deprecatedBuiltinCode, code.version = OP.DENSIFY, OP.DENSIFY, 1
    m.operatorCodes.append(code)
    op = schema.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = len(m.operatorCodes) - 1, [len(sub.tensors) - 1], [sub.tensors.index(w)]
    sub.operators.insert(0, op)
    return pack(m)


def test_sparse_constant_with_absurd_dense_shape():
    """MemoryError at frontend/tflite_sparsity.py:78: the dense form of a 3-value sparse constant declared
    [2, 1598282067] (12 GB) was allocated."""
    read_tflite(densify_model((3, 4)))   # the same construction with a possible shape reads
    tflite_error(densify_model((2, 1598282067)), r"'w_sparse'\) has shape \[2, 1598282067\], 12,786,256,536 bytes")


def test_sparse_dense_levels_larger_than_what_is_stored():
    """MemoryError in tflite_sparsity.densify (4 GB of int64 indices, after 9 s): DENSE levels of 16384 and 32767
    over one stored value, a shape under the 2 GB bound."""
    data = densify_model((16384, 32767), [dimension(16384), dimension(32767)], stored=1)
    start = time.perf_counter()
    tflite_error(data, r"'w_sparse' float32\[16384, 32767\] cannot be decoded: its DENSE levels up to level 0 "
                       r"describe 16,384 positions, more than the 1 values")
    assert time.perf_counter() - start < 1


def test_negative_dimension():
    m = fc_model()
    sub = m.subgraphs[0]
    sub.tensors[sub.outputs[0]].shape = [1, -3]
    tflite_error(pack(m), r"has shape \[1, -3\], a negative dimension")


def test_vector_length_past_the_end_of_the_file():
    """The object API trusted vector lengths (a shape of 2^32 - 1 elements failed as numpy's ValueError, a vector
    of tables iterated until an offset left the file); the verifier names the field."""
    data = bytearray(pack(fc_model()))
    model = schema.Model.GetRootAs(data, 0)
    t = model.Subgraphs(0).Tensors(0)
    at = t._tab.Vector(t._tab.Offset(4)) - 4   # the shape vector's length
    struct.pack_into("<I", data, at, 0xFFFFFFF0)
    tflite_error(bytes(data), r"subgraphs\[0\]\.tensors\[0\]\.shape claims 4,294,967,280 elements of 4 byte\(s\)")


def _repeated(b, start, table, k: int):
    """A vector of k offsets that all point at one table."""
    start(b, k)
    for _ in range(k):
        b.PrependUOffsetTRelative(table)
    return b.EndVector()


def shared_table_bomb(k: int) -> bytes:
    """A Model whose k subgraphs are all one SubGraph table, whose k tensors are all one Tensor table."""
    b = flatbuffers.Builder(0)
    schema.TensorStart(b)
    t = schema.TensorEnd(b)
    tensors = _repeated(b, schema.SubGraphStartTensorsVector, t, k)
    schema.SubGraphStart(b)
    schema.SubGraphAddTensors(b, tensors)
    sub = schema.SubGraphEnd(b)
    subgraphs = _repeated(b, schema.ModelStartSubgraphsVector, sub, k)
    schema.ModelStart(b)
    schema.ModelAddSubgraphs(b, subgraphs)
    b.Finish(schema.ModelEnd(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def test_shared_tables_do_not_hang():
    """A 12 KB file whose 1500 subgraphs share one table of 1500 tensors: the object API unpacked 2.25 million
    tensors (quadratic: 6 s at 600, a hang at this size); the verifier stops at the file's room for tables."""
    start = time.perf_counter()
    tflite_error(shared_table_bomb(1500), "more tables than it has room for")
    assert time.perf_counter() - start < 2


def weights_after_flatbuffer(gap: int = 0, extra: int = 0) -> tuple[bytes, bytes]:
    """(the fc model, the same model with w's data stored after the flatbuffer via Buffer.offset/size)."""
    m = fc_model()
    plain = pack(m)
    buf = m.buffers[tensor(m, b"w").buffer]
    payload = bytes(np.asarray(buf.data, np.uint8))
    mark = 0x5A5A5A5A5A5A5A5A
    buf.data, buf.offset, buf.size = None, mark, len(payload) + extra
    data = pack(m)
    offset = len(data) + (-len(data)) % 16 + gap
    data = data.replace(struct.pack("<Q", mark), struct.pack("<Q", offset))
    return plain, data + bytes(offset - len(data)) + payload


def test_buffer_stored_after_the_flatbuffer_is_read():
    """A Buffer with offset > 1 (how models over 2 GB keep weights) used to be refused; inside the file it reads as
    the same model (as LiteRT reads it); past the end it is a truncated file."""
    plain, external = weights_after_flatbuffer()
    want, got = read_tflite(plain), read_tflite(external)
    w_want = next(t for t in want.tensors() if t.name == "w")
    w_got = next(t for t in got.tensors() if t.name == "w")
    assert np.array_equal(w_want.data, w_got.data)
    feeds = {"x": np.arange(4, dtype=np.float32).reshape(1, 4)}
    assert np.array_equal(list(run(got, feeds).values())[0], list(run(want, feeds).values())[0])
    assert np.array_equal(list(run_litert(external, feeds).values())[0], list(run_litert(plain, feeds).values())[0])
    _, cut = weights_after_flatbuffer(extra=4)
    tflite_error(cut, r"\('w'\) keeps its data at bytes .* but the file has .* bytes: it is truncated")


def test_subgraph_without_outputs():
    m = fc_model()
    m.subgraphs[0].outputs = []
    tflite_error(pack(m), "lists no outputs")


def test_int32_input_refused_as_compile_source():
    """A float model whose input is int32 read as a compile source: refused by name; read_tflite (validate, run)
    still reads it."""
    m = fc_model()
    x = tensor(m, b"x")
    x.type = schema.TensorType.INT32
    sub = m.subgraphs[0]
    sub.operators[0].opcodeIndex = len(m.operatorCodes)   # y = x + x, int32
    code = schema.OperatorCodeT()
    code.builtinCode, code.deprecatedBuiltinCode, code.version = OP.ADD, OP.ADD, 1
    m.operatorCodes.append(code)
    op = sub.operators[0]
    op.inputs, op.builtinOptionsType, op.builtinOptions = [0, 0], schema.BuiltinOptions.AddOptions, schema.AddOptionsT()
    y = sub.tensors[op.outputs[0]]
    y.type, y.shape = schema.TensorType.INT32, [1, 4]
    data = pack(m)
    assert read_tflite(data).inputs[0].dtype == "int32"
    tflite_error(data, "input 'x' is int32; mcc compiles float models, whose inputs are float32",
                 reader=read_float_tflite)


# ---- ONNX (mcc.frontend.onnx_loader / onnx_lowering) -------------------------------------------------------
# Crashes the fuzzer found in the ONNX frontend: each is now an MccError naming the file.
def onnx_file(tmp_path, nodes, inits=(), inputs=None, outputs=None, functions=(), opsets=(), name="m.onnx"):
    vi = helper.make_tensor_value_info
    graph = helper.make_graph(nodes, "g", inputs or [vi("x", TensorProto.FLOAT, [1, 4])],
                              outputs or [vi("y", TensorProto.FLOAT, None)], list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), *opsets], functions=list(functions))
    model.ir_version = 8
    path = tmp_path / name
    path.write_bytes(model.SerializeToString())
    return path


def onnx_error(path) -> str:
    with pytest.raises(MccError) as e:
        load(path)
    assert str(path) in str(e.value)
    return str(e.value)


def block_function(extra_node=None):
    """Model-local function local::Block(a) -> b = Sigmoid(Relu(a))."""
    nodes = [helper.make_node("Relu", ["a"], ["t"]), helper.make_node("Sigmoid", ["t"], ["b"])]
    return helper.make_function("local", "Block", ["a"], ["b"], nodes + ([extra_node] if extra_node else []),
                                [helper.make_opsetid("", 18)])


def test_onnx_function_called_with_more_inputs_than_it_takes(tmp_path):
    """RuntimeError at onnx_loader.py (read_model, onnx.inliner: "Bind: Assertion `actuals.size() <=
    formals.size()` failed")."""
    path = onnx_file(tmp_path, [helper.make_node("Block", ["x", "x"], ["y"], domain="local")],
                     functions=[block_function()], opsets=[helper.make_opsetid("local", 1)])
    onnx_error(path)


def test_onnx_recursive_function(tmp_path):
    """ValidationError at onnx_loader.py (read_model: "Cycle detected in model-local function references")."""
    fn = block_function(helper.make_node("Block", ["b"], ["b2"], domain="local"))
    path = onnx_file(tmp_path, [helper.make_node("Block", ["x"], ["y"], domain="local")], functions=[fn],
                     opsets=[helper.make_opsetid("local", 1)])
    onnx_error(path)


def add_weight(name="W"):
    return numpy_helper.from_array(np.ones((1, 4), np.float32), name)


def test_onnx_initializer_with_segment(tmp_path):
    """ValueError at onnx_lowering.py (run: numpy_helper.to_array's "Currently not supporting loading segments")."""
    w = add_weight()
    w.segment.begin, w.segment.end = 0, 1
    onnx_error(onnx_file(tmp_path, [helper.make_node("Add", ["x", "W"], ["y"])], [w]))


def test_onnx_initializer_with_more_values_than_its_shape(tmp_path):
    """ValueError at onnx_lowering.py (run, numpy_helper.to_array: "cannot reshape array of size 8 into shape
    (1, 4)"): float_data holds 8 values for dims [1, 4]."""
    w = helper.make_tensor("W", TensorProto.FLOAT, [1, 4], [1.0] * 4)
    w.float_data.extend([1.0] * 4)
    onnx_error(onnx_file(tmp_path, [helper.make_node("Add", ["x", "W"], ["y"])], [w]))


def test_onnx_input_without_a_type(tmp_path):
    """KeyError: 0 at onnx_loader.py (static_inputs: an input whose TypeProto is empty reads as element type 0,
    UNDEFINED, which the message itself maps to numpy)."""
    inputs = [helper.make_value_info("x", onnx.TypeProto())]
    onnx_error(onnx_file(tmp_path, [helper.make_node("Relu", ["x"], ["y"])], inputs=inputs))


def external_weight(tmp_path, **entries):
    """W (4 float32) stored in weights.bin beside the model, with these external_data entries."""
    (tmp_path / "weights.bin").write_bytes(np.ones(4, np.float32).tobytes())
    w = add_weight()
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    for k, v in {"location": "weights.bin", **entries}.items():
        w.external_data.add(key=k, value=v)
    return w


@pytest.mark.parametrize("entries", [
    {"length": "y"},             # ValueError at onnx_loader.py (load_external_data: int('y'))
    {"offset": str(1 << 63)},    # ValueError at onnx_loader.py (f.seek: cannot fit 'int' into an offset-sized integer)
    {"length": str(1 << 64)},    # OverflowError at onnx_loader.py (f.read: cannot fit 'int' into an index-sized int)
    {"location": "a" * 300},     # OSError at onnx_loader.py (File name too long)
])
def test_onnx_external_data_entries(tmp_path, entries):
    w = external_weight(tmp_path, **entries)
    path = onnx_file(tmp_path, [helper.make_node("Add", ["x", "W"], ["y"])], [w])
    onnx_error(path)


def test_onnx_constant_with_overlong_external_location(tmp_path):
    """RuntimeError at onnx_loader.py (check_model, onnx.checker.check_node: "filesystem error: symlink_status:
    File name too long")."""
    value = numpy_helper.from_array(np.ones((1, 4), np.float32), "K")
    value.ClearField("raw_data")
    value.data_location = TensorProto.EXTERNAL
    value.external_data.add(key="location", value="a" * 300)
    nodes = [helper.make_node("Constant", [], ["K"], value=value), helper.make_node("Add", ["x", "K"], ["y"])]
    onnx_error(onnx_file(tmp_path, nodes))


def test_onnx_string_attribute_not_utf8(tmp_path):
    """UnicodeDecodeError at onnx_lowering.py (attr: Resize's mode given as bytes that are not UTF-8)."""
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "S")
    resize = helper.make_node("Resize", ["x", "", "S"], ["y"], mode="nearest")
    resize.attribute[0].s = b"\xff\xfe"
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 2, 2])]
    onnx_error(onnx_file(tmp_path, [resize], [scales], inputs=inputs))


def test_onnx_opset_version_beyond_int(tmp_path):
    """TypeError at onnx_loader.py (check_model: CheckerContext.opset_imports refuses a version of 2^63 - 1)."""
    path = onnx_file(tmp_path, [helper.make_node("Relu", ["x"], ["y"])],
                     opsets=[helper.make_opsetid("custom.domain", (1 << 63) - 1)])
    onnx_error(path)


def test_onnx_concat_of_an_absent_input(tmp_path):
    """AttributeError at ir/ops.py:199 (_concat: 'NoneType' object has no attribute 'shape'): Concat given the
    empty name, ONNX's "no input", among its inputs."""
    onnx_error(onnx_file(tmp_path, [helper.make_node("Concat", ["x", ""], ["y"], axis=1)]))


def test_onnx_version_conversion_of_a_node_without_its_input(tmp_path):
    """InferenceError at onnx_loader.py (to_known_opset: onnx.version_converter ran shape inference on an opset-22
    GlobalAveragePool given no input)."""
    nodes = [helper.make_node("GlobalAveragePool", [], ["K"]), helper.make_node("Add", ["x", "K"], ["y"])]
    path = onnx_file(tmp_path, nodes)
    model = onnx.load(path)
    model.opset_import[0].version = 22
    path.write_bytes(model.SerializeToString())
    assert "version converter" in onnx_error(path)
