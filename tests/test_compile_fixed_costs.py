"""What a compile does once or per file, made cheaper without changing a result: calibration data read in pieces
and transposed batch by batch where it runs, the finiteness check's one-pass form, onnx.checker run on the model in
place (and the model restored), run_pipeline copying its input once, binary_magnitudes' early refusal, the TFLite
reader's table walk (what the object API unpacked), verify after infer_shapes without re-deriving shapes, weight
scales reduced in float32, and the source hashed while it loads."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from mcc.compiler import calibration_arrays
from mcc.datafiles import read_arrays
from mcc.errors import MccError
from mcc.frontend.onnx_loader import check_with_onnx
from mcc.ir import Graph
from mcc.passes import run_pipeline
from mcc.passes.calibrate import calibration_batches, graph_feeds, in_chunks
from mcc.runtime import run
from mcc.runtime.kernels.int8_binary import binary_magnitudes


def _nhwc_graph(batch: int = 1) -> Graph:
    g = Graph("g")
    x = g.add_input("x", (batch, 5, 4, 3), layout="NHWC")
    g.outputs = [g.add_node("tanh", [x]).outputs[0]]
    g.infer_shapes()
    return g


def test_large_members_read_back_in_pieces(tmp_path):
    """Arrays of several read pieces (not a whole number of them) read back exactly, stored, deflated and .npy."""
    arrays = {"a": np.random.default_rng(0).standard_normal((3, 700_001)).astype(np.float32),
              "b": np.arange(1_500_007, dtype=">i2")}
    np.savez(tmp_path / "s.npz", **arrays)
    np.savez_compressed(tmp_path / "c.npz", **arrays)
    np.save(tmp_path / "a.npy", arrays["a"])
    for got in (read_arrays(tmp_path / "s.npz"), read_arrays(tmp_path / "c.npz"),
                {"a": read_arrays(tmp_path / "a.npy")[""]}):
        for k, v in got.items():
            assert v.dtype == arrays[k].dtype and np.array_equal(v, arrays[k])
            assert v.flags.writeable


def test_nchw_calibration_is_transposed_batch_by_batch():
    """calibration_batches keeps views of the user's NCHW array; in_chunks and graph_feeds hand the runtime
    C-contiguous NHWC copies, whose outputs are those of the array transposed as a whole."""
    x = np.random.default_rng(1).standard_normal((7, 3, 5, 4)).astype(np.float32)
    g = _nhwc_graph()
    batches = calibration_batches(g, {"x": x})
    assert len(batches) == 7 and all(np.shares_memory(b["x"], x) for b in batches)
    whole = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    seen = 0
    for chunk, feeds, k in in_chunks(g, batches):
        assert feeds["x"].flags.c_contiguous and np.array_equal(feeds["x"], whole[seen:seen + k])
        got = run(chunk, feeds)[g.outputs[0].name]
        assert np.array_equal(got, np.tanh(whole[seen:seen + k]))
        seen += k
    assert seen == 7
    view = batches[2]["x"]
    assert not view.flags.c_contiguous and graph_feeds(g, {"x": view})["x"].flags.c_contiguous


def test_finiteness_check_names_the_sample_and_lets_an_overflowing_sum_through():
    g = _nhwc_graph()
    x = np.zeros((6, 3, 5, 4), np.float32)
    x[4, 1, 2, 3] = -np.inf
    with pytest.raises(MccError, match=r"in 1 of its 6 samples \(first: sample 4\)"):
        calibration_arrays("calib.npz", g, {"x": x})
    big = np.full((6, 3, 5, 4), 3e38, np.float32)  # finite values whose float32 sum is infinite
    assert np.array_equal(calibration_arrays("calib.npz", g, {"x": big})["x"].transpose(0, 3, 1, 2), big)


def _onnx_model(weight: np.ndarray, output_shape=None) -> onnx.ModelProto:
    w = numpy_helper.from_array(weight, "w")
    shape = numpy_helper.from_array(np.array([1, -1], np.int64), "shape")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Reshape", ["m", "shape"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, weight.shape[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, output_shape)], [w, shape])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_onnx_check_leaves_the_model_as_it_was():
    """The checks edit the model in place (an empty shape on an unshaped output, weights set aside for shape
    inference) and restore it, also when they refuse it; a weight's bytes are still checked."""
    model = _onnx_model(np.ones((32, 64), np.float32))
    before = model.SerializeToString()
    check_with_onnx(model, "m.onnx")
    assert model.SerializeToString() == before and not model.graph.output[0].type.tensor_type.HasField("shape")
    short = _onnx_model(np.ones((32, 64), np.float32))
    short.graph.initializer[0].raw_data = short.graph.initializer[0].raw_data[:-4]
    before = short.SerializeToString()
    with pytest.raises(MccError, match="raw_data size"):
        check_with_onnx(short, "m.onnx")
    assert short.SerializeToString() == before
    wrong = _onnx_model(np.ones((32, 64), np.float32), output_shape=[1, 65])  # shape inference says 64
    before = wrong.SerializeToString()
    with pytest.raises(MccError, match="not a valid ONNX model"):
        check_with_onnx(wrong, "m.onnx")
    assert wrong.SerializeToString() == before


def test_run_pipeline_leaves_its_input_graph_alone():
    g = _nhwc_graph()
    g.outputs = [g.add_node("relu", [g.outputs[0]]).outputs[0]]
    g.add_node("relu", [g.inputs[0]])  # dead: eliminate_dead removes it from the copy
    nodes, tensors = list(g.nodes), [(t.name, t.shape, t.dtype) for t in g.tensors()]
    out, records = run_pipeline(g, ["eliminate_dead", "fold_constants", "eliminate_dead"])
    assert len(out.nodes) == 2 and [r.name for r in records] == ["eliminate_dead", "fold_constants", "eliminate_dead"]
    assert g.nodes == nodes and [(t.name, t.shape, t.dtype) for t in g.tensors()] == tensors
    assert not {id(n) for n in out.nodes} & {id(n) for n in g.nodes}


def _magnitudes_by_definition(w, axis):
    m = np.abs(np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1))
    return m[:, 0].copy() if (m == m[:, :1]).all() else None


@pytest.mark.parametrize("shape", [(8, 3, 3, 4), (1, 3, 3, 16), (5, 1), (6, 7)])
def test_binary_magnitudes(shape):
    rng = np.random.default_rng(2)
    for axis in range(len(shape)):
        sizes = [1] * len(shape)
        sizes[axis] = -1
        binary = np.where(rng.standard_normal(shape) > 0, 1, -1) * rng.uniform(0.5, 2, shape[axis]).reshape(sizes)
        late = binary.copy()
        late.flat[-1] *= 1.5  # equal second weights, a different last one
        for w in (rng.standard_normal(shape), binary, late, np.round(binary * 3).astype(np.int8)):
            want, got = _magnitudes_by_definition(w, axis), binary_magnitudes(w, axis)
            assert (want is None) == (got is None) and (want is None or np.array_equal(want, got))
        assert binary_magnitudes(binary, axis) is not None
        if late.size > shape[axis]:  # more than one weight per channel
            assert binary_magnitudes(late, axis) is None


@pytest.mark.parametrize("batch, n", [(1, 500), (2, 135), (4, 130)])
def test_split_in_place_keeps_the_samples_and_their_order(batch, n):
    """split_held_out(owned=True) moves the calibration samples to the front of the array it owns: the same samples
    in the same order as the copy it otherwise takes, the held-out ones untouched by the move."""
    from mcc.compiler import split_held_out

    g = Graph("g")
    g.outputs = [g.add_node("tanh", [g.add_input("x", (batch, 3, 2, 2))]).outputs[0]]
    x = np.random.default_rng(3).standard_normal((n, 3, 2, 2)).astype(np.float32)
    want_calib, want_held = split_held_out({"x": x.copy()}, g)
    mine = x.copy()
    calib, held = split_held_out({"x": mine}, g, owned=True)
    assert np.array_equal(calib["x"], want_calib["x"]) and np.array_equal(held["x"], want_held["x"])
    assert np.shares_memory(calib["x"], mine) and calib["x"].flags.c_contiguous
    assert len(held["x"]) and len(calib["x"]) + len(held["x"]) == n


def _conv_onnx(path) -> None:
    rng = np.random.default_rng(4)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2]),
         helper.make_node("Relu", ["c"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4, 4])], [w, b])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def _same(a, b, where="model") -> None:
    """a (the reader's walk) holds what b (the schema's object API) unpacked: same types, numpy dtypes and values."""
    assert type(a) is type(b), where
    if isinstance(b, np.ndarray):
        assert a.dtype == b.dtype and np.array_equal(a, b), where
    elif isinstance(b, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]")
    elif hasattr(b, "__dict__"):
        for k in vars(b):
            _same(getattr(a, k), getattr(b, k), f"{where}.{k}")
    else:
        assert a == b, where


def test_tflite_walk_reads_what_the_object_api_unpacks(tmp_path):
    """The reader's table walk fills each field it reads as ModelT.InitFromPackedBuf does (numpy views, bytes,
    builtin options objects), on a compiled file with per-channel quantization, options, a signature and metadata;
    and the compile report's source hash (computed while the model loads) is the file's."""
    import hashlib

    from ai_edge_litert import schema_py_generated as schema

    from mcc.compiler import compile_model
    from mcc.formats.tflite.reader import _walk

    _conv_onnx(tmp_path / "m.onnx")
    calib = {"x": np.random.default_rng(5).standard_normal((8, 3, 8, 8)).astype(np.float32)}
    result = compile_model(tmp_path / "m.onnx", "arm-int8", tmp_path / "m.tflite", calib=calib,
                           metadata={"normalization": {"mean": [0.0] * 3, "std": [1.0] * 3}})
    assert result.report["source"]["sha256"] == hashlib.sha256((tmp_path / "m.onnx").read_bytes()).hexdigest()
    data = (tmp_path / "m.tflite").read_bytes()
    walked, unpacked = _walk(data), schema.ModelT.InitFromPackedBuf(data, 0)
    for code_w, code_u in zip(walked.operatorCodes, unpacked.operatorCodes, strict=True):
        for f in ("builtinCode", "deprecatedBuiltinCode", "customCode"):
            _same(getattr(code_w, f), getattr(code_u, f), f)
    for buf_w, buf_u in zip(walked.buffers, unpacked.buffers, strict=True):
        for f in ("data", "offset", "size"):
            _same(getattr(buf_w, f), getattr(buf_u, f), f)
    (sub_w,), (sub_u,) = walked.subgraphs, unpacked.subgraphs
    for f in ("inputs", "outputs", "name"):
        _same(getattr(sub_w, f), getattr(sub_u, f), f)
    quantized = 0
    for t_w, t_u in zip(sub_w.tensors, sub_u.tensors, strict=True):
        for f in ("shape", "type", "buffer", "name", "sparsity"):
            _same(getattr(t_w, f), getattr(t_u, f), f)
        assert (t_w.quantization is None) == (t_u.quantization is None)
        if t_u.quantization is not None:
            for f in ("scale", "zeroPoint", "quantizedDimension"):
                _same(getattr(t_w.quantization, f), getattr(t_u.quantization, f), f)
            quantized += len(t_u.quantization.scale) > 1
    assert quantized  # the conv's weight, per channel
    for op_w, op_u in zip(sub_w.operators, sub_u.operators, strict=True):
        for f in ("opcodeIndex", "inputs", "outputs", "builtinOptionsType", "builtinOptions"):
            _same(getattr(op_w, f), getattr(op_u, f), f)
    assert any(op.builtinOptions is not None for op in sub_w.operators)
    for sig_w, sig_u in zip(walked.signatureDefs, unpacked.signatureDefs, strict=True):
        for f in ("signatureKey", "subgraphIndex"):
            _same(getattr(sig_w, f), getattr(sig_u, f), f)
        for m_w, m_u in zip(sig_w.inputs + sig_w.outputs, sig_u.inputs + sig_u.outputs, strict=True):
            _same(m_w.name, m_u.name, "name")
            _same(m_w.tensorIndex, m_u.tensorIndex, "tensorIndex")


def test_verify_after_inference_refuses_what_verify_refuses():
    """Graph.verify(inferred=True), the pass manager's check after infer_shapes, skips only the re-derivation of
    shapes that infer_shapes has just set: names, wiring, attributes and biases are still refused."""
    def conv_graph(bias_channels):
        g = _nhwc_graph()
        w = g.constant("w", np.ones((4, 1, 1, 3), np.float32))
        b = g.constant("b", np.ones(bias_channels, np.float32))
        g.outputs = [g.add_node("conv2d", [g.inputs[0], w, b]).outputs[0]]
        return g

    good = conv_graph(4)
    good.infer_shapes()
    good.verify(inferred=True)
    dup = _nhwc_graph()
    dup.outputs = [dup.add_node("relu", [dup.outputs[0]]).outputs[0]]
    dup.outputs[0].name = dup.inputs[0].name
    for broken, problem in ((conv_graph(5), "bias has shape"), (dup, "two tensors are named")):
        broken.infer_shapes()
        with pytest.raises(ValueError, match=problem) as full:
            broken.verify()
        with pytest.raises(ValueError) as after:
            broken.verify(inferred=True)
        assert str(full.value) == str(after.value)
    stale = conv_graph(4)
    stale.infer_shapes()
    stale.outputs[0].shape = (1, 5, 4, 5)
    with pytest.raises(ValueError, match="inference says"):
        stale.verify()


def test_weight_scales_are_the_float64_forms_to_the_bit():
    """_weight_scales takes max|w| in the weights' dtype and widens the maxima: the scales of widening every weight
    first, with zeros, negative zeros, NaN, subnormals and the float32 extremes about."""
    from mcc.passes.quantize_int8 import _weight_scales

    rng = np.random.default_rng(6)
    for k in range(60):
        shape = tuple(int(s) for s in rng.integers(1, 5, size=rng.integers(1, 5)))
        w = (rng.standard_normal(shape) * 10.0 ** rng.integers(-30, 30)).astype(np.float32)
        w[rng.random(shape) < 0.3] = -0.0 if k % 2 else 0.0
        w.flat[0] = (np.float32(3.4e38), np.float32(1e-45), np.nan, -np.inf, w.flat[0])[k % 5]
        axis = int(rng.integers(0, len(shape)))
        bias = rng.standard_normal(shape[axis]).astype(np.float32) * 100 if k % 3 else None
        s_in, bound = np.float32(10.0 ** rng.integers(-8, 2)), (1 << 31) - 1
        reduce = tuple(a for a in range(w.ndim) if a != axis)
        want = np.abs(w.astype(np.float64)).max(axis=reduce) / 127.0
        want[want == 0] = want.max() if want.any() else 1.0 / 127.0
        if bias is not None:
            want = np.maximum(want, np.abs(bias.astype(np.float64)) / (float(s_in) * bound))
        got = _weight_scales(w, axis, bias, s_in, bound)
        assert got.dtype == np.float32 and got.tobytes() == want.astype(np.float32).tobytes()
