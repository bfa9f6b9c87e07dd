"""slice, split and resize after the frontend: the layout pass, the TFLite rows in both directions, legalize_tflite's
nearest respelling, the int8 kernels against LiteRT under both kernel sets, and torch models through ONNX to
float and int8 TFLite files that LiteRT runs like torch and that validate bit for bit."""

import itertools
import warnings
import zlib

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from ai_edge_litert import schema_py_generated as schema

from mcc.runtime.format_arithmetic import ONNX_ARITHMETIC
from mcc.formats.tflite.writer import write_tflite
from mcc.compiler import compile_model
from mcc.errors import MccError
from mcc.formats.tflite.reader import read_tflite
from mcc.ir import Graph, QuantParams
from mcc.passes import run_pipeline
from mcc.runtime import run, rule_set
from mcc.runtime.litert import make_interpreter, run_litert
from mcc.validate import validate
from tflite_ops import operator_names

MATCHING = {"ref": "litert-ref", "default": "litert-xnnpack"}


def rand(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def spread(a):
    return max(float(np.ptp(a)), 1e-6)


def one_op(op, attrs, shape, n_outputs=1, quant=None, out_quant=None):
    """An NHWC graph of one node on input x (int8 when `quant` is given)."""
    g = Graph("one")
    x = g.add_input("x", shape, "float32" if quant is None else "int8", "NHWC" if len(shape) == 4 else None)
    x.quant = quant
    node = g.add_node(op, [x], attrs, name="y", n_outputs=n_outputs)
    for o in node.outputs:
        o.quant = out_quant or quant
    g.outputs = list(node.outputs)
    return g


def q(scale, zero_point):
    return QuantParams(np.array([scale], np.float32), np.array([zero_point], np.int64))


def delegated(model: bytes) -> bool:
    return any(d["op_name"] == "DELEGATE" for d in make_interpreter(model, "default")._get_ops_details())


# ---- layout ------------------------------------------------------------------------------------------------
def nchw_graph():
    """conv -> slice of W (step -2) and H -> split of the channels (unequal) -> bilinear and nearest resizes."""
    g = Graph("ssr")
    x = g.add_input("x", (2, 4, 6, 8), "float32", "NCHW")
    w = g.constant("w", rand((6, 4, 3, 3), 0) * 0.3)
    c = g.add_node("conv2d", [x, w], {"padding": [1, 1, 1, 1], "activation": "relu"}, name="conv").outputs[0]
    s = g.add_node("slice", [c], {"starts": [6, 1], "ends": [-1, 5], "axes": [3, 2], "steps": [-2, 1]},
                   name="cut").outputs[0]
    a, b = g.add_node("split", [s], {"axis": 1, "sizes": [2, 4]}, name="parts", n_outputs=2).outputs
    up = g.add_node("resize", [b], {"mode": "bilinear", "size": [8, 6], "coordinate_transformation_mode": "half_pixel"},
                    name="up").outputs[0]
    near = g.add_node("resize", [a], {"mode": "nearest", "size": [8, 8], "nearest_mode": "round_prefer_floor"},
                      name="near").outputs[0]
    g.outputs = [up, near]
    return g


def test_layout_moves_slice_split_and_resize_without_transposes():
    g = nchw_graph()
    feeds = {"x": rand((2, 4, 6, 8), 1)}
    want = run(g, feeds)
    nhwc, records = run_pipeline(g.copy(), ["to_nhwc"], {})
    attrs = {n.name: n.attrs for n in nhwc.nodes}
    # axes follow the data (C,H,W -> H,W,C) and are listed in physical order, their bounds with them
    assert attrs["cut"] == {"starts": [1, 6], "ends": [5, -1], "axes": [1, 2], "steps": [1, -2]}
    assert attrs["parts"]["axis"] == 3
    assert all(t.layout == "NHWC" for n in nhwc.nodes for t in n.inputs + n.outputs if len(t.shape) == 4
               and not t.is_constant)
    assert "transpose" not in {n.op for n in nhwc.nodes} and "inserted_transposes" not in records[0].notes
    got = run(nhwc, {"x": feeds["x"].transpose(0, 2, 3, 1)})
    for name in want:
        np.testing.assert_array_equal(got[name], want[name].transpose(0, 2, 3, 1))
    back, _ = run_pipeline(nhwc, ["to_nchw"], {})
    assert {n.name: n.attrs for n in back.nodes}["cut"] == {"starts": [1, 6], "ends": [5, -1], "axes": [2, 3],
                                                             "steps": [1, -2]}
    again = run(back, feeds)
    for name in want:
        np.testing.assert_array_equal(again[name], want[name])


# ---- the TFLite rows, written and read back ---------------------------------------------------------------------
def _resize(mode, coordinates, size=(7, 12)):
    attrs = {"mode": mode, "size": list(size), "coordinate_transformation_mode": coordinates}
    if mode == "nearest":
        attrs["nearest_mode"] = "floor" if coordinates == "asymmetric" else "round_prefer_ceil"
    return attrs


ROWS = [  # builtin, op, attributes, outputs
    ("SLICE", "slice", {"starts": [1, 2], "ends": [4, 6], "axes": [1, 3], "steps": [1, 1]}, 1),
    ("STRIDED_SLICE", "slice", {"starts": [5, 0], "ends": [-1, 6], "axes": [2, 3], "steps": [-2, 3]}, 1),
    ("STRIDED_SLICE", "slice", {"starts": [4], "ends": [0], "axes": [1], "steps": [-1]}, 1),
    ("SPLIT", "split", {"axis": 3, "sizes": [3, 3, 3]}, 3),
    ("SPLIT_V", "split", {"axis": 2, "sizes": [1, 4, 1]}, 3),
] + [("RESIZE_BILINEAR" if mode == "bilinear" else "RESIZE_NEAREST_NEIGHBOR", "resize", _resize(mode, coordinates), 1)
     for mode, coordinates in itertools.product(("bilinear", "nearest"), ("half_pixel", "align_corners", "asymmetric"))]


@pytest.mark.parametrize("builtin,op,attrs,n_outputs", ROWS, ids=[f"{r[0]}-{i}" for i, r in enumerate(ROWS)])
def test_tflite_rows_write_read_and_run_like_the_runtime(builtin, op, attrs, n_outputs):
    g = one_op(op, attrs, (2, 5, 6, 9), n_outputs)
    model = write_tflite(g)
    assert operator_names(model) == [builtin]
    back = read_tflite(model)
    assert back.nodes[0].op == op and back.nodes[0].attrs == g.nodes[0].attrs
    feeds = {"x": rand((2, 5, 6, 9), 2)}
    want = run(g, feeds)
    for kernels in MATCHING:
        got = run_litert(model, feeds, kernels)
        for name, w in want.items():
            assert got[name].shape == w.shape and np.abs(got[name] - w).max() <= 1e-5 * spread(w), (kernels, name)


def _repacked(model: bytes, edit) -> bytes:
    """`model` with its first operator edited through the schema's object API."""
    import flatbuffers

    m = schema.ModelT.InitFromPackedBuf(model, 0)
    edit(m.subgraphs[0].operators[0], m)
    builder = flatbuffers.Builder(1024)
    builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def test_strided_slice_masks_and_negative_indices_read_like_litert():
    """A converter's STRIDED_SLICE: begin mask on H, negative begin on W (from the back), end mask on C."""
    attrs = {"starts": [0, 1, 1], "ends": [5, 5, 9], "axes": [1, 2, 3], "steps": [2, 1, 3]}
    g = one_op("slice", attrs, (1, 5, 6, 9))

    def edit(op, m):
        begin, end = (m.subgraphs[0].tensors[i] for i in op.inputs[1:3])
        m.buffers[begin.buffer].data = np.array([0, 3, -5, 1], np.int32).view(np.uint8)
        m.buffers[end.buffer].data = np.array([1, 5, -1, 0], np.int32).view(np.uint8)
        op.builtinOptions.beginMask, op.builtinOptions.endMask = 0b0010, 0b1000

    model = _repacked(write_tflite(g), edit)
    back = read_tflite(model)
    assert back.nodes[0].attrs == attrs
    feeds = {"x": rand((1, 5, 6, 9), 3)}
    np.testing.assert_array_equal(run(back, feeds)["y"], run_litert(model, feeds)["y"])

    def shrink(op, m):
        op.builtinOptions.shrinkAxisMask = 1

    with pytest.raises(MccError, match="STRIDED_SLICE with an ellipsis, new-axis or shrink-axis mask"):
        read_tflite(_repacked(write_tflite(g), shrink))


def test_split_axis_is_read_from_splits_leading_input():
    model = write_tflite(one_op("split", {"axis": -1, "sizes": [3, 3, 3]}, (1, 2, 2, 9), 3))
    m = schema.ModelT.InitFromPackedBuf(model, 0)
    op = m.subgraphs[0].operators[0]
    axis = m.subgraphs[0].tensors[op.inputs[0]]
    assert m.buffers[axis.buffer].data.view(np.int32).tolist() == [-1]  # TFLite's order: axis, then the data
    assert read_tflite(model).nodes[0].attrs == {"axis": 3, "sizes": [3, 3, 3]}


# ---- legalize_tflite: nearest resize in a TFLite spelling ----------------------------------------------------------
def test_legalize_respells_nearest_resize_that_tflite_reproduces():
    """ONNX's default nearest (half_pixel, round_prefer_floor) never meets a tie when upsampling by 2, so TFLite's
    half_pixel_centers (which rounds ties up) reads the same pixels; the writer refuses the unlegalized spelling."""
    attrs = {"mode": "nearest", "size": [8, 12], "coordinate_transformation_mode": "half_pixel",
             "nearest_mode": "round_prefer_floor"}
    g = one_op("resize", attrs, (1, 4, 6, 3))
    with pytest.raises(MccError, match="round_prefer_floor rounding has no TFLite form.*legalize_tflite"):
        write_tflite(g)
    feeds = {"x": rand((1, 4, 6, 3), 4)}
    want = run(g, feeds)["y"]
    legal, records = run_pipeline(g, ["legalize_tflite"], {})
    assert records[0].notes["resize_nearest_respelled"] == 1
    assert legal.nodes[0].attrs["nearest_mode"] == "round_prefer_ceil"
    np.testing.assert_array_equal(run(legal, feeds)["y"], want)
    np.testing.assert_array_equal(run_litert(write_tflite(legal), feeds)["y"], want)


@pytest.mark.parametrize("size_in,size_out,mode,rounding", [
    (4, 1, "half_pixel", "round_prefer_floor"),   # the tie 1.5 goes to 1; TFLite reads 2 or 0
    (14, 2, "asymmetric", "floor"),               # onnxruntime's 1 / (2 / 14) = 6.9999995 reads 6; TFLite's 7
])
def test_legalize_refuses_nearest_resize_that_no_tflite_setting_reproduces(size_in, size_out, mode, rounding):
    g = one_op("resize", {"mode": "nearest", "size": [size_out, 3], "coordinate_transformation_mode": mode,
                          "nearest_mode": rounding}, (1, size_in, 3, 2))
    with pytest.raises(MccError, match=f"nearest resize of {size_in} rows to {size_out} .*no setting of TFLite's "
                                       "RESIZE_NEAREST_NEIGHBOR reads the same rows") as e:
        run_pipeline(g, ["legalize_tflite"], {})
    assert e.value.node == "y"


# ---- int8 kernels against LiteRT ------------------------------------------------------------------------------
SIZES = [(1, 1), (2, 9), (3, 7), (4, 8), (5, 2), (7, 3), (8, 4), (13, 31), (2, 82)]


@pytest.mark.parametrize("mode,coordinates", list(itertools.product(("bilinear", "nearest"),
                                                                     ("half_pixel", "align_corners", "asymmetric"))))
def test_int8_resize_matches_litert_bit_for_bit(mode, coordinates):
    """Each size pair as H (and its reverse as W), 17 channels of int8 spread over the whole range. The two
    kernel sets differ for bilinear in every mode, and for nearest without flags at 2 -> 82 (16.16 fixed point)."""
    rng = np.random.default_rng(zlib.crc32(f"{mode}{coordinates}".encode()))
    differ, elements = {}, 0
    for (h, oh), (w, ow) in zip(SIZES, [s[::-1] for s in SIZES]):
        g = one_op("resize", _resize(mode, coordinates, (oh, ow)), (2, h, w, 17), quant=q(0.5, -3))
        model = write_tflite(g)
        back = read_tflite(model)
        feeds = {"x": rng.integers(-128, 128, (2, h, w, 17)).astype(np.int8)}
        want = {kernels: run_litert(model, feeds, kernels)["y"] for kernels in MATCHING}
        for kernels, rules in MATCHING.items():
            assert np.count_nonzero(run(back, feeds, rules=rules)["y"] != want[kernels]) == 0, (kernels, h, oh)
        differ[h, oh] = int(np.count_nonzero(want["ref"] != want["default"]))
        elements += want["ref"].size
    assert delegated(model) == (rule_set("litert-xnnpack").rule(f"resize_{mode}").kernels == "xnnpack")
    if mode == "bilinear":
        assert sum(differ.values()) > 0.1 * elements
    else:
        assert {k for k, v in differ.items() if v} == ({(2, 82)} if coordinates == "asymmetric" else set())


@pytest.mark.parametrize("op,attrs,n_outputs", [
    ("slice", {"starts": [1, 7], "ends": [4, -1], "axes": [1, 3], "steps": [1, -3]}, 1),
    ("slice", {"starts": [2], "ends": [5], "axes": [2], "steps": [1]}, 1),
    ("split", {"axis": 3, "sizes": [4, 4]}, 2),
    ("split", {"axis": 1, "sizes": [1, 3]}, 2),
])
def test_int8_slice_and_split_copy_bytes_like_litert(op, attrs, n_outputs):
    g = one_op(op, attrs, (2, 4, 6, 8), n_outputs, quant=q(0.25, 5))
    model = write_tflite(g)
    feeds = {"x": np.random.default_rng(5).integers(-128, 128, (2, 4, 6, 8)).astype(np.int8)}
    for kernels, rules in MATCHING.items():
        want = run_litert(model, feeds, kernels)
        got = run(read_tflite(model), feeds, rules=rules)
        assert all(np.array_equal(got[k], want[k]) for k in want) and len(want) == n_outputs


@pytest.mark.parametrize("op,attrs", [("resize", _resize("bilinear", "half_pixel", (8, 8))),
                                      ("split", {"axis": 3, "sizes": [1, 2]})])
def test_int8_data_movement_refuses_differing_parameters(op, attrs):
    g = one_op(op, attrs, (1, 4, 4, 3), 1 if op == "resize" else 2, quant=q(0.5, 0), out_quant=q(0.25, 0))
    feeds = {"x": np.zeros((1, 4, 4, 3), np.int8)}
    with pytest.raises(MccError, match=f"{op}: 'x' and 'y.*' are quantized differently"):
        run(g, feeds)
    if op == "resize":  # TFLite's reference kernel ignores the parameters; XNNPACK cannot prepare the model
        make_interpreter(write_tflite(g), "ref")
        with pytest.raises(RuntimeError, match="failed to delegate RESIZE_BILINEAR"):
            make_interpreter(write_tflite(g), "default")


# ---- whole models through compile_model -------------------------------------------------------------------------
class Upsampler(nn.Module):
    """Slices, splits and chunks along channels, and resizes every way torch exports to ONNX Resize."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 12, 3, padding=1)
        self.head = nn.Conv2d(12, 4, 1)

    def forward(self, x):
        y = torch.relu(self.conv(x))[:, :, 1:5]
        a, b, c = torch.split(y, [4, 4, 4], dim=1)
        d, e = torch.chunk(c, 2, dim=1)
        y = torch.cat([F.interpolate(a, scale_factor=2, mode="nearest"),
                       F.interpolate(b, size=(8, 12), mode="bilinear", align_corners=False),
                       F.interpolate(d, size=(8, 12), mode="bilinear", align_corners=True),
                       F.interpolate(e, size=(8, 12), mode="nearest")], 1)
        return self.head(y)[..., ::2]


@pytest.fixture(scope="module")
def upsampler(tmp_path_factory):
    torch.manual_seed(0)
    module = Upsampler().eval()
    folder = tmp_path_factory.mktemp("upsampler")
    x = torch.randn(1, 3, 6, 6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (x,), folder / "up.onnx", dynamo=False, input_names=["x"], output_names=["y"])
    np.savez(folder / "calib.npz", x=np.random.default_rng(6).standard_normal((64, 3, 6, 6)).astype(np.float32))
    return folder, module


def test_torch_model_compiles_to_float_tflite_that_runs_like_torch(upsampler):
    folder, module = upsampler
    result = compile_model(folder / "up.onnx", "arm-fp32", folder / "up.tflite")
    ops = operator_names(result.data)
    assert "TRANSPOSE" not in ops
    assert {"SLICE", "STRIDED_SLICE", "SPLIT", "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR"} <= set(ops)
    x = torch.randn(4, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = module(x).numpy()
    for i in range(4):
        for kernels in MATCHING:
            got = run_litert(result.data, {"x": x[i:i + 1].numpy().transpose(0, 2, 3, 1)}, kernels)["y"]
            assert np.abs(got.transpose(0, 3, 1, 2) - want[i:i + 1]).max() <= 1e-4 * spread(want), kernels


def test_torch_model_compiles_to_int8_tflite_that_validates_bit_for_bit(upsampler):
    folder, module = upsampler
    result = compile_model(folder / "up.onnx", "arm-int8", folder / "up8.tflite", calib=folder / "calib.npz")
    ops = operator_names(result.data)
    assert "TRANSPOSE" not in ops and ops.count("QUANTIZE") == 1 and ops.count("DEQUANTIZE") == 1
    for node in result.graph.nodes:  # slices, splits and resizes move bytes: one set of parameters throughout
        if node.op in ("slice", "split", "resize"):
            assert node.inputs[0].dtype == "int8" and all(o.quant == node.inputs[0].quant for o in node.outputs)
    report = validate(folder / "up8.tflite", folder / "calib.npz")
    for comparison in report["comparisons"]:
        assert comparison["elements"] > 0 and comparison["differing"] == 0, comparison["kernels"]
    x = np.load(folder / "calib.npz")["x"][:8]
    with torch.no_grad():
        want = module(torch.from_numpy(x)).numpy()
    got = np.concatenate([run_litert(result.data, {"x": x[i:i + 1].transpose(0, 2, 3, 1)})["y"] for i in range(8)])
    assert np.abs(got.transpose(0, 3, 1, 2) - want).max() <= 0.05 * spread(want)


def test_nchw_graph_compiles_to_float_and_int8(tmp_path):
    """The hand-built graph: a negative-step STRIDED_SLICE, SPLIT_V, and a nearest resize that legalize respells."""
    feeds = {"x": rand((2, 4, 6, 8), 7)}
    want = run(nchw_graph(), feeds)
    nhwc = {"x": feeds["x"].transpose(0, 2, 3, 1)}
    result = compile_model(nchw_graph(), "arm-fp32", tmp_path / "ssr.tflite")
    assert operator_names(result.data) == ["CONV_2D", "STRIDED_SLICE", "SPLIT_V", "RESIZE_BILINEAR",
                                           "RESIZE_NEAREST_NEIGHBOR"]
    for kernels in MATCHING:
        got = run_litert(result.data, nhwc, kernels)
        for name, w in want.items():
            assert np.abs(got[name].transpose(0, 3, 1, 2) - w).max() <= 1e-5 * spread(w), (kernels, name)
    np.savez(tmp_path / "calib.npz", x=rand((32, 4, 6, 8), 8))
    compile_model(nchw_graph(), "arm-int8", tmp_path / "ssr8.tflite", calib=tmp_path / "calib.npz")
    report = validate(tmp_path / "ssr8.tflite", tmp_path / "calib.npz")
    assert [(c["kernels"], c["differing"]) for c in report["comparisons"]] == [("ref", 0), ("default", 0)]
    for c in report["comparisons"]:  # every operator's every output is compared, both split parts included
        assert sorted(t["tensor"] for t in c["tensors"] if t["op"] in ("slice", "split", "resize")) == [
            "cut", "near/int8", "parts:0", "parts:1", "up/int8"]  # outputs: int8 twins of the float ones


def test_nchw_graph_compiles_to_onnx_float_and_int8():
    """x86 targets: Slice (end -1 written as -(dim + 1)), Split and Resize in onnxruntime; in int8 the slice, the
    split and the nearest resize move bytes exactly, and the bilinear resize is a float island within a step."""
    from mcc.formats.onnx.reader import read_emitted_onnx
    from test_onnx_backend import ort_values, per_operator, session

    feeds = {"x": rand((2, 4, 6, 8), 7)}
    want = run(nchw_graph(), feeds)
    result = compile_model(nchw_graph(), "x86-fp32")
    got = dict(zip(["up", "near"], session(result.data).run(["up", "near"], feeds)))
    for name, w in want.items():
        assert np.abs(got[name] - w).max() <= 1e-5 * spread(w), name
    back = read_emitted_onnx(result.data, ONNX_ARITHMETIC)
    assert [(n.op, n.attrs) for n in back.nodes] == [(n.op, n.attrs) for n in result.graph.nodes]
    result = compile_model(nchw_graph(), "x86-int8", calib={"x": rand((32, 4, 6, 8), 8)})
    assert next(r for r in result.report["passes"] if r["pass"] == "legalize_onnx")["notes"]["float_islands"] == ["up"]
    report = per_operator(read_emitted_onnx(result.data, ONNX_ARITHMETIC), ort_values(result.data, feeds))
    assert {name: report[name][2] for name in ("cut", "parts", "near")} == {"cut": 0, "parts": 0, "near": 0}
    assert all(worst <= 1 for op, _, _, worst in report.values() if op != "dequantize"), report
