"""Issue 4: the "onnxruntime" rule set and `mcc validate` for ONNX files.

Unit level: one hand-built int8 IR graph per operator the x86-int8 writer emits, written by write_onnx, run by
onnxruntime 1.32 at ORT_ENABLE_ALL and ORT_DISABLE_ALL and by mcc's runtime on the file read back: 0 differing
elements under the "onnxruntime" rules on every tensor. Scales are powers of two and inputs cover every int8 code,
so many results land exactly on .5 (counted); LiteRT's reference rules differ wherever onnxruntime's arithmetic
is another, which shows the comparison could fail. End to end: every zoo model compiled for x86-int8 through
the CLI validates with 0 differing elements at both levels on random and real inputs, and fails under the wrong
rules.
"""

import json

import numpy as np
import onnx
import pytest
import torch

from mcc.runtime.format_arithmetic import ONNX_ARITHMETIC
from mcc.formats.onnx.reader import read_emitted_onnx
from mcc.backends import emit
from mcc.cli import main
from mcc.errors import MccError
from mcc.examples.zoo import ZOO, digits_split
from mcc.ir import Graph, QuantParams
from mcc.validate import compare

LEVELS = ("ort-all", "ort-none")
CODES = np.arange(-128, 128)


def p2(k: int) -> np.float32:
    return np.float32(2.0 ** k)


class Int8:
    """An int8 IR graph built by hand: every tensor gets the scale and zero point it is given."""

    def __init__(self, seed: int = 0):
        self.g = Graph("unit")
        self.rng = np.random.default_rng(seed)
        self.feeds = {}

    def input(self, name, shape, scale=None, zp=0, dtype="int8"):
        t = self.g.add_input(name, shape, dtype, "NCHW" if len(shape) == 4 else None)
        if dtype == "int8":
            t.quant = QuantParams(scale, zp)
            n = int(np.prod(shape))  # every code at least once where it fits, the rest near the zero point
            values = np.concatenate([CODES, zp + self.rng.integers(-12, 13, max(n - 256, 0))])[:n]
            self.feeds[name] = np.clip(self.rng.permutation(values), -128, 127).astype(np.int8).reshape(shape)
        return t

    def const(self, name, data, scale, zp=0, axis=None):
        t = self.g.constant(name, data)
        t.quant = QuantParams(scale, np.broadcast_to(zp, np.shape(scale)), axis)
        return t

    def weight(self, name, shape, scales, magnitude=127):
        codes = self.rng.integers(-magnitude, magnitude + 1, shape).astype(np.int8)
        return self.const(name, codes, scales, 0,
                          0 if np.size(scales) > 1 else None)

    def bias(self, name, x, w):
        s = np.float32(x.quant.scale[0]) * w.quant.scale
        n = w.shape[0]
        return self.const(name, self.rng.integers(-200, 200, n).astype(np.int32), np.broadcast_to(s, n), 0, 0)

    def op(self, op, inputs, scale=None, zp=0, name=None, **attrs):
        y = self.g.add_node(op, inputs, attrs, name=name or op).outputs[0]
        if scale is not None:
            y.quant = QuantParams(scale, zp)
        return y

    def done(self, *outputs) -> Graph:
        self.g.outputs = list(outputs)
        self.g.verify()
        return self.g


def _ties(values) -> int:
    """How many exact reals lie exactly halfway between two integers."""
    values = np.asarray(values, np.float64)
    return int(np.count_nonzero(np.abs(values - np.floor(values)) == 0.5))


def _conv_real(b, x, w, bias, sy, groups=1, stride=1, pad=1):
    """acc * s_x * s_w / s_y in float64 (exact for power-of-two scales), for counting ties."""
    xs, ws = (torch.tensor(a, dtype=torch.float64) for a in (b.feeds["x"] - x.quant.zero_point[0], w.data))
    acc = torch.nn.functional.conv2d(xs, ws, torch.tensor(bias.data, dtype=torch.float64), stride=stride,
                                     padding=pad, groups=groups).numpy()
    return acc * (x.quant.scale[0] * w.quant.scale.reshape(1, -1, 1, 1)).astype(np.float64) / sy


# ---- one case per operator: (graph, feeds, exact reals before rounding or None, differs under litert-ref) ------
def case_conv2d_per_channel_relu6():
    b = Int8(1)
    x = b.input("x", (1, 4, 16, 16), p2(-4), -3)
    w = b.weight("w", (6, 4, 3, 3), (p2(-3) * 2.0 ** -(np.arange(6) % 3)).astype(np.float32), 8)
    bias = b.bias("b", x, w)
    y = b.op("conv2d", [x, w, bias], p2(-4), 5, "conv", stride=[1, 1], padding=[1, 1, 1, 1], activation="relu6")
    return b.done(y), b.feeds, _conv_real(b, x, w, bias, p2(-4)), True


def case_conv2d_per_tensor_stride2():
    b = Int8(2)
    x = b.input("x", (1, 3, 17, 17), p2(-5), 7)
    w = b.weight("w", (5, 3, 3, 3), p2(-3), 10)
    bias = b.bias("b", x, w)
    y = b.op("conv2d", [x, w, bias], p2(-6), -9, "conv", stride=[2, 2], padding=[1, 1, 1, 1])
    return b.done(y), b.feeds, _conv_real(b, x, w, bias, p2(-6), stride=2), True


def case_depthwise_conv2d_multiplier2():
    b = Int8(3)
    x = b.input("x", (1, 4, 12, 12), p2(-4), 2)
    w = b.weight("w", (8, 1, 3, 3), (p2(-2) * 2.0 ** -(np.arange(8) % 2)).astype(np.float32), 12)
    bias = b.bias("b", x, w)
    y = b.op("depthwise_conv2d", [x, w, bias], p2(-4), -1, "dw", stride=[1, 1], padding=[1, 1, 1, 1], multiplier=2)
    return b.done(y), b.feeds, _conv_real(b, x, w, bias, p2(-4), groups=4), True


def case_fully_connected_per_channel():
    b = Int8(4)
    x = b.input("x", (32, 32), p2(-4), -5)
    w = b.weight("w", (12, 32), (p2(-2) * 2.0 ** -(np.arange(12) % 3)).astype(np.float32), 8)
    bias = b.bias("b", x, w)
    y = b.op("fully_connected", [x, w, bias], p2(-3), 3, "fc")
    acc = (b.feeds["x"].astype(np.float64) + 5) @ w.data.T.astype(np.float64) + bias.data
    return b.done(y), b.feeds, acc * (p2(-4) * w.quant.scale).astype(np.float64) / p2(-3), True


def case_fully_connected_per_tensor_relu():
    b = Int8(5)
    x = b.input("x", (24, 24), p2(-3), 4)
    w = b.weight("w", (10, 24), p2(-4), 16)
    bias = b.bias("b", x, w)
    y = b.op("fully_connected", [x, w, bias], p2(-3), -20, "fc", activation="relu")
    acc = (b.feeds["x"].astype(np.float64) - 4) @ w.data.T.astype(np.float64) + bias.data
    return b.done(y), b.feeds, acc * 2.0 ** -4, True


def case_add_same_shape_relu():
    b = Int8(6)
    x1, x2 = b.input("x", (1, 4, 16, 16), np.float32(0.05), -3), b.input("z", (1, 4, 16, 16), np.float32(0.08), 9)
    y = b.op("add", [x1, x2], np.float32(0.1), -12, "add", activation="relu")
    return b.done(y), b.feeds, None, True


def case_add_channel_broadcast():
    b = Int8(7)
    x = b.input("x", (1, 8, 8, 8), p2(-1), 3)
    gain = b.const("per_channel", b.rng.integers(-128, 128, (1, 8, 1, 1)).astype(np.int8), p2(-2), -7)
    y = b.op("add", [x, gain], p2(-1), 1, "add")
    real = ((b.feeds["x"] - 3.0) * 2.0 ** -1 + (gain.data - -7.0) * 2.0 ** -2) / 2.0 ** -1
    return b.done(y), b.feeds, real, True


def case_add_broadcast_first_input_and_scalar():
    b = Int8(8)
    x = b.input("x", (1, 6, 5, 5), np.float32(0.07), -11)
    first = b.const("first", b.rng.integers(-128, 128, (1, 6, 1, 1)).astype(np.int8), np.float32(0.031), 17)
    y = b.op("add", [first, x], np.float32(0.09), 6, "add")
    z = b.op("add", [y, b.const("one", np.array(100, np.int8), np.float32(0.013), -2)], np.float32(0.1), 0, "add2")
    return b.done(z), b.feeds, None, True


def case_add_and_mul_every_code_pair():
    b = Int8(18)
    x, z = b.input("x", (1, 256, 256), np.float32(0.0173), -37), b.input("z", (1, 256, 256), np.float32(0.0291), 55)
    b.feeds = {"x": np.repeat(CODES, 256).astype(np.int8).reshape(1, 256, 256),
               "z": np.tile(CODES, 256).astype(np.int8).reshape(1, 256, 256)}
    add = b.op("add", [x, z], np.float32(0.0437), 12, "add")
    return b.done(add, b.op("mul", [x, z], np.float32(0.0611), -7, "mul")), b.feeds, None, True


def case_add_first_input_constant_every_pair():
    """Input 0 is constant along the innermost run, so onnxruntime hands input 1 to MLAS as `a` (with these
    parameters, 21 of the 65536 results differ if the roles are not swapped)."""
    b = Int8(19)
    x, z = b.input("x", (256, 1), np.float32(0.0465), 80), b.input("z", (256, 256), np.float32(0.0343), 33)
    b.feeds = {"x": CODES.astype(np.int8).reshape(256, 1), "z": np.tile(CODES, 256).astype(np.int8).reshape(256, 256)}
    return b.done(b.op("add", [x, z], np.float32(0.0392), 11, "add")), b.feeds, None, True


def case_mul_broadcast_relu():
    b = Int8(9)
    x = b.input("x", (1, 8, 8, 8), p2(-3), -4)
    gain = b.const("gain", b.rng.integers(-128, 128, (1, 8, 1, 1)).astype(np.int8), p2(-5), 10)
    y = b.op("mul", [x, gain], p2(-4), -5, "mul", activation="relu")
    real = (b.feeds["x"] + 4.0) * (gain.data - 10.0) * 2.0 ** -8 / 2.0 ** -4
    return b.done(y), b.feeds, real, True


def case_mul_same_shape():
    b = Int8(10)
    x1, x2 = b.input("x", (4, 256), np.float32(0.021), 3), b.input("z", (4, 256), np.float32(0.017), -8)
    return b.done(b.op("mul", [x1, x2], np.float32(0.05), 2, "mul")), b.feeds, None, True


def case_avg_pool2d_padded():
    b = Int8(11)
    x = b.input("x", (1, 8, 7, 7), p2(-3), 4)
    y = b.op("avg_pool2d", [x], p2(-3), 4, "pool", kernel=[3, 3], stride=[1, 1], padding=[1, 1, 1, 1])
    real = torch.nn.functional.avg_pool2d(torch.tensor(b.feeds["x"] - 4.0), 3, 1, 1, count_include_pad=False)
    return b.done(y), b.feeds, real.numpy() + 4, True


def case_avg_pool2d_rescaled_and_global():
    b = Int8(12)
    x = b.input("x", (1, 8, 4, 4), p2(-2), -6)
    y = b.op("avg_pool2d", [x], p2(-1), 2, "pool", kernel=[2, 2], stride=[2, 2], padding=[0, 0, 0, 0])
    g = b.op("avg_pool2d", [x], p2(-3), -1, "global", kernel=[4, 4], stride=[1, 1], padding=[0, 0, 0, 0])
    return b.done(y, g), b.feeds, None, True


def case_mean_global():
    b = Int8(13)
    x = b.input("x", (4, 64, 4, 4), p2(-3), 5)
    y = b.op("mean", [x], p2(-3), -3, "gap", axes=[2, 3], keepdims=True)
    real = (b.feeds["x"].astype(np.float64) - 5).mean(axis=(2, 3))
    return b.done(y), b.feeds, real, True


def case_softmax():
    """Rows of 10 and 100 at TFLite's output scale 1/256, and onnxruntime's general form (any output scale, any
    axis), which TFLite's SOFTMAX does not have."""
    b = Int8(14)
    x = b.input("x", (64, 10), np.float32(0.1), 3)
    w = b.input("w", (4, 100), np.float32(0.04), -3)
    v = b.input("v", (2, 6, 3, 3), np.float32(0.02), 0)
    y = b.op("softmax", [x], p2(-8), -128, "probabilities", axis=-1)
    z = b.op("softmax", [w], p2(-8), -128, "wide", axis=-1)
    c = b.op("softmax", [v], np.float32(0.006), -100, "channels", axis=1)
    return b.done(y, z, c), b.feeds, None, True


def case_quantize_dequantize():
    """Halves of the scale (ties), NaN, infinities and noise, at a power-of-two scale and at 0.1, where dividing
    by the scale and multiplying by its inverse part ways."""
    b = Int8(15)
    x = b.input("x", (1, 2048), dtype="float32")
    q = b.op("quantize", [x], p2(-3), -5, "quantize", dtype="int8")
    q10 = b.op("quantize", [x], np.float32(0.1), 3, "quantize_tenth", dtype="int8")
    halves = np.concatenate([np.arange(-300, 300) * 0.5 * 2.0 ** -3, np.arange(-300, 300) * 0.05]).astype(np.float32)
    special = np.array([np.nan, np.inf, -np.inf, 1e10, -1e10, 0.0, -0.0], np.float32)
    noise = (b.rng.standard_normal(2048 - halves.size - special.size) * 8).astype(np.float32)
    feeds = {"x": np.concatenate([halves, special, noise]).reshape(1, 2048)}
    outputs = [b.op("dequantize", [t], None, 0, f"{t.name}/dequantize") for t in (q, q10)]
    return b.done(*outputs), feeds, feeds["x"][np.isfinite(feeds["x"])] / 2.0 ** -3, True


def case_tables():
    """The activations onnxruntime has no integer kernel for: 256-entry tables filled by the writer."""
    b = Int8(16)
    x = b.input("x", (1, 256), np.float32(0.05), -10)
    outs = [b.op("quantize", [x], np.float32(0.15), 4, "requantize", dtype="int8"),
            b.op("relu", [x], np.float32(0.03), -128, "relu"),
            b.op("relu6", [x], np.float32(0.025), -128, "relu6"),
            b.op("clip", [x], np.float32(0.01), 0, "clip", min=-1.0, max=1.0),
            b.op("leaky_relu", [x], np.float32(0.04), 20, "leaky", alpha=0.2),
            b.op("sigmoid", [x], p2(-8), -128, "sigmoid"),
            b.op("tanh", [x], p2(-7), 0, "tanh"),
            b.op("hardswish", [x], np.float32(0.03), -100, "hardswish")]
    return b.done(*outs), b.feeds, None, False


def case_data_movement():
    b = Int8(17)
    x = b.input("x", (1, 4, 6, 6), p2(-4), -3)
    mp = b.op("max_pool2d", [x], p2(-4), -3, "pool", kernel=[2, 2], stride=[2, 2], padding=[0, 0, 0, 0],
              activation="relu6")
    floor = b.op("maximum", [mp, b.const("low", np.array(-1, np.int8), p2(-4), -3)], p2(-4), -3, "floor")
    cat = b.op("concat", [floor, b.op("minimum", [mp, mp], p2(-4), -3, "same")], p2(-4), -3, "cat", axis=1)
    pad = b.op("pad", [cat], p2(-4), -3, "pad", pads=[0, 0, 0, 0, 1, 0, 0, 2], value=0.5)
    t = b.op("transpose", [pad], p2(-4), -3, "t", perm=[0, 2, 3, 1])
    return b.done(b.op("reshape", [t], p2(-4), -3, "flat", shape=[1, -1])), b.feeds, None, False


def _differing_under(data, graph, feeds, rules):
    """Differing elements against onnxruntime (ORT_ENABLE_ALL) under another rule set, or "refused" when that
    rule set's kernels refuse the graph (TFLite's average pool does not requantize, ...)."""
    try:
        return compare(data, graph, [feeds], "ort-all", rules=rules).differing
    except MccError:
        return "refused"


CASES = {name[5:]: fn for name, fn in sorted(globals().items()) if name.startswith("case_")}


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_operator_bit_exact_against_onnxruntime(name):
    graph, feeds, real, differs = CASES[name]()
    data = emit(graph, "onnx")
    back = read_emitted_onnx(data, ONNX_ARITHMETIC)
    assert [t.name for t in back.outputs] == [t.name for t in graph.outputs]
    counts = {}
    for kernels in LEVELS:
        c = compare(data, back, [feeds], kernels)
        assert c.rules == "onnxruntime" and c.exact and c.elements > 0
        assert c.differing == 0, [(t.node, t.differing, t.elements) for t in c.tensors if t.differing]
        counts[kernels] = c.elements
    wrong = {r: _differing_under(data, back, feeds, r) for r in ("litert-ref", "litert-xnnpack")}
    ties = None if real is None else _ties(real)
    print(f"\n{name}: {counts['ort-all']} elements, 0 differ (onnxruntime rules, both levels); "
          f"litert-ref {wrong['litert-ref']}, litert-xnnpack {wrong['litert-xnnpack']}; exact ties {ties}")
    assert (wrong["litert-ref"] != 0) == differs
    if real is not None:
        assert ties > 0


# ---- end to end: the zoo through the CLI ---------------------------------------------------------------------
@pytest.fixture(scope="module", params=sorted(ZOO))
def x86_model(request, tmp_path_factory):
    """(name, .pt2 source, x86-int8 .onnx, folder, real inputs or None, example) for one zoo model."""
    name = request.param
    tmp = tmp_path_factory.mktemp(name)
    model, example = ZOO[name]()
    src = tmp / f"{name}.pt2"
    torch.export.save(torch.export.export(model, (example,)), src)
    if name == "digits_classifier":
        split = digits_split()
        calib, real = split.x_train[:64].numpy(), split.x_test[:16].numpy()
    else:
        calib = np.random.default_rng(0).standard_normal((32, *example.shape[1:])).astype(np.float32)
        real = None
    np.savez(tmp / "calib.npz", x=calib)
    out = tmp / f"{name}.int8.onnx"
    assert main(["compile", str(src), "--target", "x86-int8", "--calib", str(tmp / "calib.npz"), "-o", str(out),
                 "-q", "--require-int8"]) == 0
    return name, src, out, tmp, real, example


def _validate(capsys, out, data, *extra):
    code = main(["validate", str(out), "--input", str(data), "--json", *extra])
    return code, json.loads(capsys.readouterr().out)


def test_zoo_onnx_validates_bit_exact_on_every_tensor(x86_model, capsys):
    name, src, out, tmp, real, example = x86_model
    np.savez(tmp / "random.npz", x=np.random.default_rng(1).standard_normal((3, *example.shape[1:])).astype(np.float32))
    inputs = [tmp / "random.npz"]
    if real is not None:
        np.savez(tmp / "real.npz", x=real)
        inputs.append(tmp / "real.npz")
    values = {o for n in onnx.load(str(out)).graph.node for o in n.output}
    for data in inputs:
        code, report = _validate(capsys, out, data, "--reference", str(src))
        assert code == 0 and report["ok"], [(c["kernels"], c["first_differing_op"]) for c in report["comparisons"]]
        assert [(c["kernels"], c["rules"]) for c in report["comparisons"]] == [("ort-all", "onnxruntime"),
                                                                              ("ort-none", "onnxruntime")]
        for c in report["comparisons"]:
            assert c["exact"] and c["differing"] == 0 and c["elements"] > 0
            assert all(t["differing"] == 0 and t["elements"] > 0 for t in c["tensors"])
            assert {t["op"] for t in c["tensors"]} >= {"quantize", "conv2d", "fully_connected", "dequantize"}
            assert {t["tensor"] for t in c["tensors"]} <= values  # the readback keeps ONNX's value names
        if data.name == "real.npz" or real is None:
            assert next(iter(report["fidelity"].values()))["sqnr_db"] > 10


def test_wrong_rule_set_differs_and_fails(x86_model, capsys, monkeypatch):
    """LiteRT's reference rules against onnxruntime: differing elements, exit 1, the first differing op named."""
    import mcc.validate

    name, src, out, tmp, real, example = x86_model
    np.savez(tmp / "two.npz", x=np.random.default_rng(2).standard_normal((2, *example.shape[1:])).astype(np.float32))
    monkeypatch.setitem(mcc.validate.RULES_FOR_KERNELS, "ort-all", "litert-ref")
    code, report = _validate(capsys, out, tmp / "two.npz", "--kernels", "ort-all")
    (c,) = report["comparisons"]
    assert code == 1 and not report["ok"] and c["rules"] == "litert-ref" and c["differing"] > 0
    assert c["first_differing_op"]["op"] in ("conv2d", "depthwise_conv2d", "add", "mul", "mean", "fully_connected")
    assert main(["validate", str(out), "--input", str(tmp / "two.npz"), "--kernels", "ort-all"]) == 1
    text = capsys.readouterr().out
    assert "onnxruntime at ORT_ENABLE_ALL vs mcc runtime" in text and "first differing operator:" in text


def test_float_onnx_reference_and_text_report(tmp_path, capsys):
    """`mcc validate det_int8.onnx --input eval.npz --reference det.onnx`: fidelity against a float ONNX source
    agrees with the one against the .pt2 it came from."""
    model, example = ZOO["digits_classifier"](train=False)
    src = tmp_path / "det.pt2"
    torch.export.save(torch.export.export(model, (example,)), src)
    split = digits_split()
    np.savez(tmp_path / "calib.npz", x=split.x_train[:32].numpy())
    np.savez(tmp_path / "eval.npz", x=split.x_test[:8].numpy())
    for target, out in (("x86-fp32", "det.onnx"), ("x86-int8", "det_int8.onnx")):
        assert main(["compile", str(src), "--target", target, "--calib", str(tmp_path / "calib.npz"), "-o",
                     str(tmp_path / out), "-q"]) == 0
    fidelity = {}
    for ref in ("det.onnx", "det.pt2"):
        code, report = _validate(capsys, tmp_path / "det_int8.onnx", tmp_path / "eval.npz", "--reference",
                                 str(tmp_path / ref))
        assert code == 0
        fidelity[ref] = next(iter(report["fidelity"].values()))
    assert fidelity["det.onnx"]["sqnr_db"] == pytest.approx(fidelity["det.pt2"]["sqnr_db"], abs=0.01)
    assert main(["validate", str(tmp_path / "det_int8.onnx"), "--input", str(tmp_path / "eval.npz")]) == 0
    text = capsys.readouterr().out
    assert "onnxruntime at ORT_DISABLE_ALL vs mcc runtime (rules onnxruntime, claim: bit-exact)" in text
    assert "OK: every comparison holds its claim" in text


def test_bad_kernel_sets_and_files_are_clear_errors(tmp_path, capsys):
    model, example = ZOO["digits_classifier"](train=False)
    src = tmp_path / "d.pt2"
    torch.export.save(torch.export.export(model, (example,)), src)
    np.savez(tmp_path / "x.npz", x=np.zeros((1, 1, 8, 8), np.float32))
    assert main(["compile", str(src), "--target", "x86-fp32", "-o", str(tmp_path / "d.onnx"), "-q"]) == 0
    assert main(["validate", str(tmp_path / "d.onnx"), "--input", str(tmp_path / "x.npz"), "--kernels", "ref"]) == 2
    err = capsys.readouterr().err
    assert "d.onnx" in err and "ort-all" in err and "ref" in err
    (tmp_path / "notes.txt").write_text("not a model")
    assert main(["validate", str(tmp_path / "notes.txt"), "--input", str(tmp_path / "x.npz")]) == 2
    assert "neither TFLite" in capsys.readouterr().err
    # a float ONNX file validates against onnxruntime within the float tolerance
    code, report = _validate(capsys, tmp_path / "d.onnx", tmp_path / "x.npz")
    assert code == 0 and not any(c["exact"] for c in report["comparisons"])


class _Upsample(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        return torch.nn.functional.interpolate(torch.relu(self.conv(x)), scale_factor=2, mode="nearest")


def test_int8_nearest_resize_is_exact_against_onnxruntime(tmp_path, capsys):
    torch.manual_seed(0)
    model, example = _Upsample().eval(), torch.randn(1, 3, 8, 8)
    src = tmp_path / "up.pt2"
    torch.export.save(torch.export.export(model, (example,)), src)
    np.savez(tmp_path / "c.npz", x=np.random.default_rng(0).standard_normal((8, 3, 8, 8)).astype(np.float32))
    out = tmp_path / "up.onnx"
    assert main(["compile", str(src), "--target", "x86-int8", "--calib", str(tmp_path / "c.npz"), "-o", str(out),
                 "-q"]) == 0
    capsys.readouterr()
    assert main(["validate", str(out), "--input", str(tmp_path / "c.npz"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    for c in report["comparisons"]:
        resize = [t for t in c["tensors"] if t["op"] == "resize"]
        assert resize and resize[0]["elements"] == 8 * 4 * 16 * 16 and c["differing"] == 0


def test_run_executes_an_emitted_onnx_with_onnxruntime_rules(tmp_path, capsys):
    """`mcc run` on an x86-int8 file gives onnxruntime's integers; `--rules litert-ref` gives LiteRT's."""
    from mcc.runtime.ort import run_ort

    model, example = ZOO["mobilenet_v2_style"]()
    src = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(model, (example,)), src)
    x = np.random.default_rng(5).standard_normal((2, *example.shape[1:])).astype(np.float32)
    np.savez(tmp_path / "x.npz", x=x)
    out = tmp_path / "m.onnx"
    assert main(["compile", str(src), "--target", "x86-int8", "--calib", str(tmp_path / "x.npz"), "-o", str(out),
                 "-q"]) == 0
    assert main(["run", str(out), "--input", str(tmp_path / "x.npz"), "-o", str(tmp_path / "y.npz")]) == 0
    assert main(["run", str(out), "--input", str(tmp_path / "x.npz"), "-o", str(tmp_path / "z.npz"),
                 "--rules", "litert-ref"]) == 0
    ours, litert_rules = np.load(tmp_path / "y.npz"), np.load(tmp_path / "z.npz")
    (name,) = ours.files
    theirs = np.concatenate([run_ort(out.read_bytes(), {"x": x[i:i + 1]}, "ort-all")[name] for i in range(2)])
    assert np.array_equal(ours[name], theirs)
    assert not np.array_equal(litert_rules[name], theirs)


def test_counts_do_not_depend_on_the_worker_count(monkeypatch):
    """Chunks of samples compared side by side on two workers, each with its own onnxruntime session, count what
    one worker counts: every tensor's elements, differing elements (under the wrong rules, so there are some) and
    largest difference."""
    from mcc.compiler import compile_model
    from mcc.frontend.torch_export import from_module
    from mcc.passes import calibrate
    from mcc.validate import model_batches

    model, example = ZOO["mobilenet_v2_style"]()
    source = from_module(model, (example,))
    rng = np.random.default_rng(8)
    calib = {source.inputs[0].name: rng.standard_normal((8, *example.shape[1:])).astype(np.float32)}
    data = compile_model(source, "x86-int8", calib=calib).data
    graph = read_emitted_onnx(data, ONNX_ARITHMETIC, None)
    feeds = {graph.inputs[0].name: rng.standard_normal((7, *graph.inputs[0].shape[1:])).astype(np.float32)}
    monkeypatch.setattr(calibrate, "CHUNK_BYTES", 2 * sum(t.nbytes for t in calibrate.activations(graph, True)))
    assert calibrate.chunk_batches(graph) == 2  # chunks of 2, 2, 2, 1 samples
    for rules in ("onnxruntime", "litert-ref"):
        one, two = (compare(data, graph, model_batches(graph, feeds), "ort-all", rules, workers=w).to_json()
                    for w in (1, 2))
        assert one == two and one["elements"] > 0
        assert (one["differing"] > 0) == (rules == "litert-ref")
