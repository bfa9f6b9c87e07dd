"""Float TFLite files with the operators converters emit and mcc never writes (issue 14, tflite-in): EXPAND_DIMS,
SQUEEZE, PACK, UNPACK, SHAPE, CAST, EQUAL, SELECT_V2, STRIDED_SLICE of constants, BROADCAST_TO, RESHAPE with a
computed shape and SQUARED_DIFFERENCE, in files built here with the flatbuffer schema. Each file is read, compiled
to arm-fp32 and x86-fp32 (which compute what LiteRT computes on the original file) and to arm-int8 (0 differing
elements in `validate`), and the reshape-only operators and cancelling TRANSPOSE / RESHAPE pairs are gone."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from ai_edge_litert import schema_py_generated as schema
from test_frontend_tflite import FileBuilder, options
from tflite_ops import operator_names

from mcc.compiler import compile_model
from mcc.errors import MccError
from mcc.formats.tflite.reader import read_tflite
from mcc.runtime.litert import run_litert
from mcc.validate import validate

OP = schema.BuiltinOperator
SAME = {"padding": schema.Padding.SAME, "strideH": 1, "strideW": 1}


def rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def i32(*values):
    return np.array(values, np.int32)


def conv1d_file() -> bytes:
    """A converter's 1-D conv: EXPAND_DIMS, CONV_2D over [1, 1, W, C], SQUEEZE; then a TRANSPOSE pair and a RESHAPE
    pair that cancel, the second RESHAPE's shape computed (a SLICE node of SHAPE's value)."""
    rng = np.random.default_rng(1)
    f = FileBuilder()
    x, e, c, q, t1, t2, r1, y = (f.tensor(n, s) for n, s in [
        ("x", (1, 16, 3)), ("x_2d", (1, 1, 16, 3)), ("conv", (1, 1, 16, 4)), ("conv_1d", (1, 16, 4)),
        ("t1", (1, 4, 16)), ("t2", (1, 16, 4)), ("flat", (1, 64)), ("y", (1, 16, 4))])
    f.op(OP.EXPAND_DIMS, [x, f.tensor("axis", (), i32(1))], [e])
    f.op(OP.CONV_2D, [e, f.tensor("w", (4, 1, 3, 3), rand(rng, 4, 1, 3, 3)), f.tensor("b", (4,), rand(rng, 4))], [c],
         options("Conv2DOptionsT", **SAME, fusedActivationFunction=schema.ActivationFunctionType.RELU))
    f.op(OP.SQUEEZE, [c], [q], options("SqueezeOptionsT", squeezeDims=[1]))
    f.op(OP.TRANSPOSE, [q, f.tensor("p1", (3,), i32(0, 2, 1))], [t1])
    f.op(OP.TRANSPOSE, [t1, f.tensor("p2", (3,), i32(0, 2, 1))], [t2])
    f.op(OP.RESHAPE, [t2, f.tensor("s1", (2,), i32(1, 64))], [r1])
    shape, cut = f.tensor("shape", (3,), dtype=np.int32), f.tensor("cut", (3,), dtype=np.int32)
    f.op(OP.SHAPE, [t2], [shape], options("ShapeOptionsT", outType=schema.TensorType.INT32))
    f.op(OP.SLICE, [shape, f.tensor("begin", (1,), i32(0)), f.tensor("size", (1,), i32(3))], [cut])
    f.op(OP.RESHAPE, [r1, cut], [y])
    return f.finish([x], [y])


def stacks_file() -> bytes:
    """conv -> SQUARED_DIFFERENCE -> UNPACK of the channels -> PACK in another order, times BROADCAST_TO of the
    channel means behind a float CAST, plus a SELECT_V2 of an EQUAL of constants (a CAST of an int32 constant in
    it) -> conv -> RESHAPE to [batch, -1], its shape made by SHAPE, STRIDED_SLICE (shrink) and PACK."""
    rng = np.random.default_rng(2)
    f = FileBuilder()
    names = [("x", (1, 6, 6, 3)), ("c", (1, 6, 6, 4)), ("sd", (1, 6, 6, 4)), ("m", (1, 1, 1, 4)),
             ("bt", (1, 6, 6, 4)), ("k", (1, 6, 6, 4)), ("p", (1, 6, 6, 4)), ("prod", (1, 6, 6, 4)),
             ("eq", (4,)), ("fl", (4,)), ("sel", (4,)), ("sum", (1, 6, 6, 4)), ("c2", (1, 6, 6, 2)),
             ("shape", (4,)), ("batch", ()), ("newshape", (2,)), ("y", (1, 72))]
    t = {n: f.tensor(n, s, dtype=np.int32 if n in ("shape", "batch", "newshape") else None) for n, s in names}
    f.tensors[t["eq"]].type = schema.TensorType.BOOL
    u = [f.tensor(f"u{i}", (1, 6, 6)) for i in range(4)]
    f.op(OP.CONV_2D, [t["x"], f.tensor("w1", (4, 3, 3, 3), rand(rng, 4, 3, 3, 3)),
                      f.tensor("b1", (4,), rand(rng, 4))], [t["c"]], options("Conv2DOptionsT", **SAME))
    f.op(OP.SQUARED_DIFFERENCE, [t["c"], f.tensor("centre", (4,), rand(rng, 4))], [t["sd"]])
    f.op(OP.UNPACK, [t["sd"]], u, options("UnpackOptionsT", num=4, axis=3))
    f.op(OP.PACK, [u[3], u[0], u[2], u[1]], [t["p"]], options("PackOptionsT", valuesCount=4, axis=-1))
    f.op(OP.MEAN, [t["c"], f.tensor("hw", (2,), i32(1, 2))], [t["m"]], options("ReducerOptionsT", keepDims=True))
    f.op(OP.BROADCAST_TO, [t["m"], f.tensor("to", (4,), i32(1, 6, 6, 4))], [t["bt"]])
    f.codes[-1].version = 2   # LiteRT registers BROADCAST_TO from version 2
    f.op(OP.CAST, [t["bt"]], [t["k"]])
    f.op(OP.MUL, [t["p"], t["k"]], [t["prod"]], options("MulOptionsT"))
    f.op(OP.EQUAL, [f.tensor("ea", (4,), i32(1, 2, 3, 4)), f.tensor("eb", (4,), i32(1, 0, 3, 0))], [t["eq"]])
    f.op(OP.CAST, [f.tensor("ints", (4,), i32(3, -1, 4, 1))], [t["fl"]])
    f.op(OP.SELECT_V2, [t["eq"], t["fl"], f.tensor("other", (4,), rand(rng, 4))], [t["sel"]])
    f.op(OP.ADD, [t["prod"], t["sel"]], [t["sum"]], options("AddOptionsT"))
    f.op(OP.CONV_2D, [t["sum"], f.tensor("w2", (2, 1, 1, 4), rand(rng, 2, 1, 1, 4)),
                      f.tensor("b2", (2,), rand(rng, 2))], [t["c2"]], options("Conv2DOptionsT", **SAME))
    f.op(OP.SHAPE, [t["c2"]], [t["shape"]], options("ShapeOptionsT", outType=schema.TensorType.INT32))
    f.op(OP.STRIDED_SLICE, [t["shape"], f.tensor("b0", (1,), i32(0)), f.tensor("e1", (1,), i32(1)),
                            f.tensor("s1", (1,), i32(1))], [t["batch"]],
         options("StridedSliceOptionsT", shrinkAxisMask=1))
    f.op(OP.PACK, [t["batch"], f.tensor("minus1", (), i32(-1))], [t["newshape"]],
         options("PackOptionsT", valuesCount=2, axis=0))
    f.op(OP.RESHAPE, [t["c2"], t["newshape"]], [t["y"]])
    return f.finish([t["x"]], [t["y"]])


def compile_all(tmp_path, source: bytes, shape) -> dict:
    """Compile `source` to arm-fp32, x86-fp32 and arm-int8; check float outputs against LiteRT on the source and
    int8 with validate; {target: CompileResult}."""
    path = tmp_path / "source.tflite"
    path.write_bytes(source)
    rng = np.random.default_rng(3)
    x = rand(rng, *shape)
    want = next(iter(run_litert(source, {"x": x}, "ref").values()))
    spread = max(float(np.ptp(want)), 1e-6)
    np.savez(tmp_path / "calib.npz", x=rand(rng, 16, *shape[1:]))
    results = {}
    for target in ("arm-fp32", "x86-fp32", "arm-int8"):
        out = tmp_path / (target + (".onnx" if target.startswith("x86") else ".tflite"))
        r = results[target] = compile_model(path, target, out, calib=tmp_path / "calib.npz" if "int8" in target
                                            else None)
        if target == "arm-int8":
            report = validate(out, tmp_path / "calib.npz")
            assert len(report["comparisons"]) == 2
            for c in report["comparisons"]:
                assert c["elements"] > 0 and c["differing"] == 0, (c["kernels"], c["first_differing_op"])
            continue
        if target == "x86-fp32":
            nchw = r.graph.inputs[0].layout == "NCHW"
            s = ort.InferenceSession(r.data, providers=["CPUExecutionProvider"])
            got = s.run(None, {"x": x.transpose(0, 3, 1, 2) if nchw else x})[0]
            got = got.transpose(0, 2, 3, 1) if r.graph.outputs[0].layout == "NCHW" else got
            runs = {"ort": got}
        else:
            runs = {k: next(iter(run_litert(r.data, {"x": x}, k).values())) for k in ("ref", "default")}
        for kernels, got in runs.items():
            assert got.shape == want.shape and np.abs(got - want).max() <= 1e-5 * spread, (target, kernels)
    return results


def test_conv1d_and_cancelling_pairs_leave_one_reshape_each_side(tmp_path):
    graph = read_tflite(conv1d_file())
    assert [n.op for n in graph.nodes] == ["reshape", "conv2d", "reshape", "transpose", "transpose", "reshape",
                                           "slice", "reshape"]
    assert graph.node("y").attrs["shape"] == [1, 16, 4]
    r = compile_all(tmp_path, conv1d_file(), (1, 16, 3))
    assert operator_names(r["arm-fp32"].data) == ["RESHAPE", "CONV_2D", "RESHAPE"]
    assert operator_names(r["arm-int8"].data) == ["QUANTIZE", "RESHAPE", "CONV_2D", "RESHAPE", "DEQUANTIZE"]
    # NCHW's conv reads [1, C, 1, W], which a [1, W, C] input reaches only through a transpose, and back (the
    # layout pass may put the way back's reshape of size-1 axes before or after its transpose)
    ops = [n.op_type for n in onnx.load_from_string(r["x86-fp32"].data).graph.node]
    assert ops[:4] == ["Reshape", "Transpose", "Conv", "Relu"] and sorted(ops[4:]) == ["Reshape", "Transpose"], ops


def test_shape_logic_and_stacks_lower_to_existing_ops(tmp_path):
    graph = read_tflite(stacks_file())
    ops = [n.op for n in graph.nodes]
    # SHAPE, EQUAL, SELECT_V2, the constant CAST and STRIDED_SLICE and the shape PACK are values of the file
    assert ops.count("concat") == 1 and ops.count("split") == 1 and "identity" in ops
    assert graph.tensor("sel").is_constant and graph.node("y").attrs["shape"] == [1, -1]
    r = compile_all(tmp_path, stacks_file(), (1, 6, 6, 3))
    names = operator_names(r["arm-fp32"].data)
    # UNPACK -> PACK is a split and a concat: the reshapes that drop and re-add the channel axis cancel
    assert sorted(names) == sorted(["CONV_2D", "SUB", "SQUARE", "SPLIT", "CONCATENATION", "MEAN", "MUL", "MUL",
                                    "ADD", "CONV_2D", "RESHAPE"]), names
    # the one transpose of x86-fp32 is the one the flatten of an NHWC tensor needs in NCHW
    onnx_ops = [n.op_type for n in onnx.load_from_string(r["x86-fp32"].data).graph.node]
    assert onnx_ops.count("Transpose") == 1 and onnx_ops[-2:] == ["Transpose", "Reshape"], onnx_ops


@pytest.mark.parametrize("case", ["cast", "select", "squeeze"])
def test_what_has_no_ir_form_is_refused_by_node(case):
    f = FileBuilder()
    x = f.tensor("x", (1, 4, 1))
    if case == "cast":
        y = f.tensor("y", (1, 4, 1), dtype=np.int32)
        f.op(OP.CAST, [x], [y])
        message = "CAST of the computed tensor 'x' from float32 to int32"
    elif case == "select":
        y = f.tensor("y", (1, 4, 1))
        cond = f.tensor("cond", (1,), i32(1))
        f.tensors[cond].type = schema.TensorType.BOOL
        f.buffers[f.tensors[cond].buffer].data = np.ones(1, np.uint8)
        f.op(OP.SELECT_V2, [cond, x, f.tensor("zero", (1,), np.zeros(1, np.float32))], [y])
        message = "SELECT_V2 reads the computed tensor 'x'"
    else:
        y = f.tensor("y", (4,))
        f.op(OP.SQUEEZE, [x], [y], options("SqueezeOptionsT", squeezeDims=[1]))
        message = r"SQUEEZE of axes \[1\] of \[1, 4, 1\]"
    with pytest.raises(MccError, match=message) as e:
        read_tflite(f.finish([x], [y]))
    assert "'y'" in str(e.value)
