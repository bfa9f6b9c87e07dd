"""A float .tflite as a compile source (issue 4, part 2): mcc's own float files, fp16 weights behind DEQUANTIZE and
sparse weights behind DENSIFY (files built here with the schema's object API, run in LiteRT), re-quantized to
arm-int8 and validated through the CLI; custom ops and already-quantized sources refused."""

import json

import flatbuffers
import numpy as np
import pytest
import torch
from ai_edge_litert import schema_py_generated as schema
from tflite_ops import operator_names

from mcc.cli import main
from mcc.errors import MccError
from mcc.examples.zoo import ZOO
from mcc.formats.tflite.reader import read_tflite
from mcc.runtime import run
from mcc.runtime.litert import run_litert

OP, AF = schema.BuiltinOperator, schema.ActivationFunctionType


class FileBuilder:
    """A TFLite model assembled tensor by tensor and operator by operator, independent of mcc's writer."""

    def __init__(self):
        self.buffers, self.tensors, self.operators, self.codes = [schema.BufferT()], [], [], []

    def tensor(self, name, shape, data=None, dtype=None, sparsity=None) -> int:
        t = schema.TensorT()
        t.name, t.shape = name, np.asarray(shape, np.int32)
        dtype = np.dtype(dtype or (data.dtype if data is not None else np.float32))
        t.type = {np.float32: schema.TensorType.FLOAT32, np.float16: schema.TensorType.FLOAT16,
                  np.int32: schema.TensorType.INT32}[dtype.type]
        t.sparsity = sparsity
        if data is not None:
            buf = schema.BufferT()
            buf.data = np.frombuffer(np.ascontiguousarray(data, dtype.newbyteorder("<")).tobytes(), np.uint8)
            t.buffer = len(self.buffers)
            self.buffers.append(buf)
        self.tensors.append(t)
        return len(self.tensors) - 1

    def op(self, code, inputs, outputs, options=None, custom=None) -> None:
        oc = schema.OperatorCodeT()
        oc.builtinCode, oc.deprecatedBuiltinCode, oc.customCode = code, min(code, 127), custom
        self.codes.append(oc)
        o = schema.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = len(self.codes) - 1, list(inputs), list(outputs)
        if options is not None:
            o.builtinOptionsType = getattr(schema.BuiltinOptions, type(options).__name__[:-1])
            o.builtinOptions = options
        self.operators.append(o)

    def finish(self, inputs, outputs) -> bytes:
        sub = schema.SubGraphT()
        sub.tensors, sub.operators, sub.inputs, sub.outputs = self.tensors, self.operators, inputs, outputs
        model = schema.ModelT()
        model.version, model.subgraphs, model.buffers, model.operatorCodes = 3, [sub], self.buffers, self.codes
        b = flatbuffers.Builder(0)
        b.Finish(model.Pack(b), file_identifier=b"TFL3")
        return bytes(b.Output())


def options(cls, **fields):
    o = getattr(schema, cls)()
    for k, v in fields.items():
        setattr(o, k, v)
    return o


def cli_json(capsys, *args):
    code = main(list(map(str, args)))
    return code, json.loads(capsys.readouterr().out)


def compile_and_validate(capsys, tmp, source, calib, evaluation):
    """`mcc compile SOURCE --target arm-int8` then `mcc validate` against SOURCE; returns (int8 path, report)."""
    np.savez(tmp / "calib.npz", x=calib)
    np.savez(tmp / "eval.npz", x=evaluation)
    out = tmp / f"{source.stem}_int8.tflite"
    assert main(["compile", str(source), "--target", "arm-int8", "--calib", str(tmp / "calib.npz"), "-o", str(out),
                 "--report", str(tmp / "report.json"), "-q"]) == 0
    code, report = cli_json(capsys, "validate", out, "--input", tmp / "eval.npz", "--reference", source, "--json")
    assert code == 0, [(c["kernels"], c["first_differing_op"]) for c in report["comparisons"]]
    assert [c["kernels"] for c in report["comparisons"]] == ["ref", "default"]
    for c in report["comparisons"]:
        assert c["exact"] and c["differing"] == 0 and c["elements"] > 0
    return out, report


def assert_close(got, want, rel=1e-5):
    assert got.shape == want.shape
    assert np.max(np.abs(got - want)) <= rel * max(float(np.max(np.abs(want))), 1e-6)


# ---- (1) a float .tflite written by mcc -------------------------------------------------------------------
@pytest.fixture(scope="module")
def zoo_files(tmp_path_factory):
    """mobilenet_v3_small_style (depthwise, hardswish, squeeze-excite, odd paddings) as .pt2 and mcc arm-fp32."""
    tmp = tmp_path_factory.mktemp("zoo")
    model, example = ZOO["mobilenet_v3_small_style"]()
    pt2, fp32 = tmp / "m.pt2", tmp / "m.tflite"
    torch.export.save(torch.export.export(model, (example,)), pt2)
    assert main(["compile", str(pt2), "--target", "arm-fp32", "-o", str(fp32), "-q"]) == 0
    rng = np.random.default_rng(0)
    nchw = [rng.standard_normal((n, *example.shape[1:])).astype(np.float32) for n in (32, 8)]
    return tmp, pt2, fp32, nchw


def test_mcc_float_tflite_requantizes_like_its_pt2_source(zoo_files, capsys):
    """The arm-fp32 file holds the float graph that arm-int8 reaches after its own TFLite legalization (same
    float32 weights; tensors keep their IR names and the reader names nodes after their outputs), and
    re-running the canonicalization, layout, legalize and fuse passes on it changes nothing. Calibration on
    the same samples (NHWC here, NCHW for the .pt2) then sees the same values, so equalization, observers
    and bias correction choose the same parameters: the two int8 files are byte-identical (so are those of the
    other three zoo models; this one has the most legalization: hardsigmoid, asymmetric padding, SE blocks)."""
    tmp, pt2, fp32, (calib, evaluation) = zoo_files
    nhwc = [np.ascontiguousarray(a.transpose(0, 2, 3, 1)) for a in (calib, evaluation)]
    out, report = compile_and_validate(capsys, tmp, fp32, *nhwc)
    assert next(iter(report["fidelity"].values()))["sqnr_db"] > 15
    passes = {p["pass"]: p["notes"] for p in json.loads((tmp / "report.json").read_text())["passes"]}
    assert passes["to_nhwc"]["already_nhwc"] > 0
    assert not passes["fuse_activations"] and "hardsigmoid_decomposed" not in passes["legalize_tflite"]
    assert "TRANSPOSE" not in operator_names(out.read_bytes())

    np.savez(tmp / "calib_nchw.npz", x=calib)
    direct = tmp / "direct_int8.tflite"
    assert main(["compile", str(pt2), "--target", "arm-int8", "--calib", str(tmp / "calib_nchw.npz"), "-o",
                 str(direct), "-q"]) == 0
    assert out.read_bytes() == direct.read_bytes()


def test_already_int8_tflite_is_refused_as_source_but_runs(zoo_files, capsys):
    tmp, _, fp32, (calib, _) = zoo_files
    np.savez(tmp / "c.npz", x=calib.transpose(0, 2, 3, 1))
    int8 = tmp / "q.tflite"
    assert main(["compile", str(fp32), "--target", "arm-int8", "--calib", str(tmp / "c.npz"), "-o", str(int8),
                 "-q"]) == 0
    capsys.readouterr()
    again = tmp / "qq.tflite"
    for target in ("arm-int8", "arm-fp32"):
        assert main(["compile", str(int8), "--target", target, "--calib", str(tmp / "c.npz"), "-o", str(again),
                     "-q"]) == 2
        err = capsys.readouterr().err
        assert str(int8) in err and "already quantized" in err and "int8" in err and not again.exists()
    np.savez(tmp / "one.npz", x=calib[:2].transpose(0, 2, 3, 1))
    assert main(["run", str(int8), "--input", str(tmp / "one.npz")]) == 0


def test_nhwc_tag_reaches_back_through_elementwise_ops(tmp_path):
    """RESHAPE [1,48] -> [1,4,4,3], then ADD, then CONV_2D: the ADD's output layout is inferred from the
    RESHAPE's, so the reader tags both NHWC and every pass's re-inference keeps the conv's input NHWC."""
    rng = np.random.default_rng(7)
    f = FileBuilder()
    x, r, a, y = (f.tensor(n, s) for n, s in [("x", (1, 48)), ("img", (1, 4, 4, 3)), ("shifted", (1, 4, 4, 3)),
                                               ("y", (1, 4, 4, 2))])
    f.op(OP.RESHAPE, [x, f.tensor("shape", (4,), np.array([1, 4, 4, 3], np.int32))], [r])
    f.op(OP.ADD, [r, f.tensor("shift", (3,), rng.standard_normal(3).astype(np.float32))], [a], options("AddOptionsT"))
    f.op(OP.CONV_2D, [a, f.tensor("w", (2, 3, 3, 3), rng.standard_normal((2, 3, 3, 3)).astype(np.float32)),
                      f.tensor("b", (2,), rng.standard_normal(2).astype(np.float32))], [y],
         options("Conv2DOptionsT", padding=schema.Padding.SAME, strideH=1, strideW=1))
    source, out = tmp_path / "reshaped.tflite", tmp_path / "out.tflite"
    source.write_bytes(f.finish([x], [y]))
    assert [t.name for t in read_tflite(source.read_bytes()).tensors() if t.layout == "NHWC"] == ["img", "shifted", "y"]
    assert main(["compile", str(source), "--target", "arm-fp32", "-o", str(out), "-q"]) == 0
    feeds = {"x": rng.standard_normal((1, 48)).astype(np.float32)}
    assert_close(run_litert(out.read_bytes(), feeds)["y"], run_litert(source.read_bytes(), feeds)["y"])


# ---- (2) fp16 weights behind DEQUANTIZE -------------------------------------------------------------------
def fp16_model():
    """What the TFLite converter makes with float16 weight quantization: every weight and bias stored as float16
    and turned into float32 by a DEQUANTIZE; converter-style names (';' and ':' in them)."""
    rng = np.random.default_rng(1)
    f = FileBuilder()
    weights = {}

    def fp16(name, shape, scale):
        w = (rng.standard_normal(shape) * scale).astype(np.float16)
        half = f.tensor(f"{name}_fp16", shape, w)
        full = f.tensor(name, shape)
        f.op(OP.DEQUANTIZE, [half], [full])
        weights[name] = w
        return full

    x = f.tensor("serving_default_x:0", (1, 8, 8, 3))
    c1 = f.tensor("model/conv/Relu;model/conv/BiasAdd;model/conv/Conv2D", (1, 8, 8, 8))
    f.op(OP.CONV_2D, [x, fp16("model/conv/Conv2D", (8, 3, 3, 3), 0.3), fp16("model/conv/bias", (8,), 0.1)], [c1],
         options("Conv2DOptionsT", padding=schema.Padding.SAME, strideH=1, strideW=1, fusedActivationFunction=AF.RELU))
    c2 = f.tensor("model/dw/Relu6;model/dw/depthwise", (1, 4, 4, 8))
    f.op(OP.DEPTHWISE_CONV_2D, [c1, fp16("model/dw/depthwise_weights", (1, 3, 3, 8), 0.3),
                                fp16("model/dw/bias", (8,), 0.1)], [c2],
         options("DepthwiseConv2DOptionsT", padding=schema.Padding.SAME, strideH=2, strideW=2, depthMultiplier=1,
                 fusedActivationFunction=AF.RELU6))
    axes = f.tensor("model/gap/Mean/reduction_indices", (2,), np.array([1, 2], np.int32))
    m = f.tensor("model/gap/Mean", (1, 8))
    f.op(OP.MEAN, [c2, axes], [m], options("ReducerOptionsT", keepDims=False))
    y = f.tensor("StatefulPartitionedCall:0", (1, 5))
    f.op(OP.FULLY_CONNECTED, [m, fp16("model/fc/MatMul", (5, 8), 0.5), fp16("model/fc/bias", (5,), 0.1)], [y],
         options("FullyConnectedOptionsT", fusedActivationFunction=AF.NONE))
    return f.finish([x], [y]), weights


def test_fp16_weights_fold_to_float32_and_requantize(tmp_path, capsys):
    data, weights = fp16_model()
    assert operator_names(data).count("DEQUANTIZE") == 6
    g = read_tflite(data)
    assert [n.op for n in g.nodes] == ["conv2d", "depthwise_conv2d", "mean", "fully_connected"]
    for name, w in weights.items():
        assert g.tensor(name).dtype == "float32" and np.array_equal(g.tensor(name).data, w.astype(np.float32))
    x = np.random.default_rng(2).standard_normal((1, 8, 8, 3)).astype(np.float32)
    ours = run(g, {"serving_default_x:0": x})["StatefulPartitionedCall:0"]
    for kernels in ("ref", "default"):
        assert_close(ours, run_litert(data, {"serving_default_x:0": x}, kernels)["StatefulPartitionedCall:0"])

    source = tmp_path / "fp16.tflite"
    source.write_bytes(data)
    rng = np.random.default_rng(3)
    calib, evaluation = (rng.standard_normal((n, 8, 8, 3)).astype(np.float32) for n in (64, 16))
    out, report = compile_and_validate(capsys, tmp_path, source, calib, evaluation)
    assert next(iter(report["fidelity"].values()))["sqnr_db"] > 20
    ops = operator_names(out.read_bytes())
    assert ops.count("DEQUANTIZE") == 1  # only the float output's: every weight is int8 now
    assert not any(n.dtype == "float16" for n in read_tflite(out.read_bytes()).tensors())


def test_fp16_activation_is_refused():
    f = FileBuilder()
    x, y, z = f.tensor("x", (1, 4), dtype=np.float16), f.tensor("y", (1, 4)), f.tensor("z", (1, 4))
    f.op(OP.DEQUANTIZE, [x], [y])
    f.op(OP.RELU, [y], [z])
    with pytest.raises(MccError, match="DEQUANTIZE reads the computed tensor 'x'.*float32 activations"):
        read_tflite(f.finish([x], [z]), path="half.tflite")


# ---- (3) sparse weights behind DENSIFY --------------------------------------------------------------------
def csr(expanded, leading, index_vector):
    """SparsityParameters of `expanded` (the weight with block axes split off, already in traversal order):
    `leading` DENSE levels, one SPARSE_CSR level, then DENSE levels (the block); returns (params, values)."""
    rows, cols = int(np.prod(expanded.shape[:leading])), expanded.shape[leading]
    e = expanded.reshape(rows, cols, -1)
    keep = np.any(e != 0, axis=2)
    dtype = {"Int32Vector": np.int32, "Uint16Vector": np.uint16, "Uint8Vector": np.uint8}[index_vector]

    def ints(values):
        v = getattr(schema, index_vector + "T")()
        v.values = np.asarray(values, dtype)
        return v

    dims = []
    for size in expanded.shape[:leading]:
        dims.append(options("DimensionMetadataT", format=schema.DimensionType.DENSE, denseSize=size))
    dims.append(options("DimensionMetadataT", format=schema.DimensionType.SPARSE_CSR,
                        arraySegmentsType=getattr(schema.SparseIndexVector, index_vector),
                        arraySegments=ints(np.concatenate([[0], np.cumsum(keep.sum(1))])),
                        arrayIndicesType=getattr(schema.SparseIndexVector, index_vector),
                        arrayIndices=ints(np.nonzero(keep)[1])))
    for size in expanded.shape[leading + 1:]:
        dims.append(options("DimensionMetadataT", format=schema.DimensionType.DENSE, denseSize=size))
    return dims, e[keep].reshape(-1)


def sparse_model(fc_order, index_vector):
    """x [1,6,6,8] -> CONV_2D whose OHWI weight is block-sparse (blocks of 4 input channels, CSR over blocks)
    -> MEAN -> FULLY_CONNECTED whose weight is CSR in traversal order `fc_order`; both behind DENSIFY."""
    rng = np.random.default_rng(4)
    f = FileBuilder()
    conv_w = rng.standard_normal((4, 3, 3, 8)).astype(np.float32)
    conv_w.reshape(4, 3, 3, 2, 4)[rng.random((4, 3, 3, 2)) < 0.5] = 0
    fc_w = (rng.standard_normal((5, 4)) * (rng.random((5, 4)) < 0.4)).astype(np.float32)

    def dense_behind_densify(name, w, dims, values, order, block_map):
        sp = options("SparsityParametersT", traversalOrder=order, blockMap=block_map, dimMetadata=dims)
        packed = f.tensor(f"{name}_sparse", w.shape, values.astype(np.float32), sparsity=sp)
        dense = f.tensor(name, w.shape)
        f.op(OP.DENSIFY, [packed], [dense])
        return dense

    dims, values = csr(conv_w.reshape(4, 3, 3, 2, 4), 3, index_vector)
    cw = dense_behind_densify("conv_w", conv_w, dims, values, [0, 1, 2, 3, 4], [3])
    dims, values = csr(fc_w.transpose(fc_order), 1, index_vector)
    fw = dense_behind_densify("fc_w", fc_w, dims, values, list(fc_order), [])
    x, c, m, y = (f.tensor(n, s) for n, s in [("x", (1, 6, 6, 8)), ("conv", (1, 6, 6, 4)), ("gap", (1, 4)),
                                               ("y", (1, 5))])
    f.op(OP.CONV_2D, [x, cw, f.tensor("conv_b", (4,), rng.standard_normal(4).astype(np.float32))], [c],
         options("Conv2DOptionsT", padding=schema.Padding.SAME, strideH=1, strideW=1, fusedActivationFunction=AF.RELU))
    f.op(OP.MEAN, [c, f.tensor("axes", (2,), np.array([1, 2], np.int32))], [m], options("ReducerOptionsT"))
    f.op(OP.FULLY_CONNECTED, [m, fw, -1], [y], options("FullyConnectedOptionsT"))
    return f.finish([x], [y]), {"conv_w": conv_w, "fc_w": fc_w}


@pytest.mark.parametrize("fc_order, index_vector", [((0, 1), "Int32Vector"), ((1, 0), "Uint8Vector"),
                                                    ((0, 1), "Uint16Vector")])
def test_sparse_weights_behind_densify_match_litert(fc_order, index_vector, tmp_path, capsys):
    data, dense = sparse_model(fc_order, index_vector)
    assert operator_names(data).count("DENSIFY") == 2
    g = read_tflite(data)
    assert [n.op for n in g.nodes] == ["conv2d", "mean", "fully_connected"]
    for name, w in dense.items():
        assert np.array_equal(g.tensor(name).data, w)
    x = np.random.default_rng(5).standard_normal((1, 6, 6, 8)).astype(np.float32)
    for kernels in ("ref", "default"):
        assert_close(run(g, {"x": x})["y"], run_litert(data, {"x": x}, kernels)["y"])

    if index_vector == "Int32Vector":  # re-quantized and validated once
        source = tmp_path / "sparse.tflite"
        source.write_bytes(data)
        rng = np.random.default_rng(6)
        _, report = compile_and_validate(capsys, tmp_path, source,
                                         *(rng.standard_normal((n, 6, 6, 8)).astype(np.float32) for n in (32, 8)))
        assert report["fidelity"]["y"]["sqnr_db"] > 10


def test_sparsity_that_does_not_fit_is_refused_by_name():
    model = schema.ModelT.InitFromPackedBuf(sparse_model((0, 1), "Int32Vector")[0], 0)
    fc = next(t for t in model.subgraphs[0].tensors if t.name == b"fc_w_sparse")
    indices = fc.sparsity.dimMetadata[1].arrayIndices
    indices.values = np.concatenate([indices.values[:-1], [9]]).astype(np.int32)  # beyond the 4 columns
    b = flatbuffers.Builder(0)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    with pytest.raises(MccError, match=r"sparse.tflite: sparse constant 'fc_w_sparse' float32\[5, 4\].*outside"):
        read_tflite(bytes(b.Output()), path="sparse.tflite")


# ---- (4) custom operators -------------------------------------------------------------------------------
def test_custom_op_is_refused_by_name_through_the_cli(tmp_path, capsys):
    f = FileBuilder()
    x, y, z = (f.tensor(n, (1, 4)) for n in "xyz")
    f.op(OP.CUSTOM, [x], [y], custom=b"MyFancyGelu")
    f.op(OP.RELU, [y], [z])
    source, out = tmp_path / "custom.tflite", tmp_path / "out.tflite"
    source.write_bytes(f.finish([x], [z]))
    assert main(["compile", str(source), "--target", "arm-fp32", "-o", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert str(source) in err and "CUSTOM 'MyFancyGelu' (x1)" in err and "RELU (x" not in err
    assert not out.exists()
