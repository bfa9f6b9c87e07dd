"""depthwise_separable: exactly separable convs are reproduced, the least-squares refit never does worse than the
closed-form start, layers are chosen by pattern or by "auto", the files run in LiteRT as in mcc's runtime and the
int8 files validate bit-exact; bad options are MccErrors (exit 2)."""

import numpy as np
import pytest
import torch
from torch import nn

from mcc.cli import main
from mcc.compiler import compile_model
from mcc.examples.zoo import ZOO, digits_split
from mcc.frontend.torch_export import from_module
from mcc.ir.ops import macs
from mcc.ir.stats import totals
from mcc.passes import run_pipeline
from mcc.passes.depthwise_separable import rank1_init, replace, separable
from mcc.passes.factorize import oihw, patch_moments, relative_error, weight_matrix
from mcc.runtime import run
from mcc.runtime.litert import run_litert
from mcc.targets import CANONICALIZE
from mcc.validate import validate


def _conv(conv, shape, seed=0):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    graph = from_module(conv.eval(), (x,))
    return graph, graph.nodes[0], x.numpy()


@pytest.mark.parametrize("stride,padding,dilation", [(1, 1, 1), (2, 2, 2)])
def test_exactly_separable_conv_is_reproduced(stride, padding, dilation):
    conv = nn.Conv2d(6, 10, 3, stride=stride, padding=padding, dilation=dilation)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # W[o, c] = u_c[o] d_c
        conv.weight.copy_(torch.randn(10, 6, 1, 1, generator=g) * torch.randn(1, 6, 3, 3, generator=g))
    graph, node, x = _conv(conv, (2, 6, 12, 12))
    calib = np.random.default_rng(2).standard_normal((8, 6, 12, 12)).astype(np.float32)
    sep = separable(node, patch_moments(graph, [node], {graph.inputs[0].name: calib}, "test")[node.name])
    assert sep.error < 1e-10
    want = next(iter(run(graph, {graph.inputs[0].name: x}).values()))
    split = graph.copy()
    replace(split, split.nodes[0], sep)
    split.infer_shapes()
    split.verify()
    assert [n.op for n in split.nodes] == ["depthwise_conv2d", "conv2d"]
    assert split.nodes[0].attrs["stride"] == [stride] * 2 and split.nodes[1].inputs[1].shape == (10, 6, 1, 1)
    got = next(iter(run(split, {split.inputs[0].name: x}).values()))
    assert np.abs(got - want).max() <= 1e-5 * np.ptp(want)
    assert sum(macs(n) for n in split.nodes) == sep.macs


def test_refit_beats_the_closed_form_start_on_correlated_inputs():
    """With correlated input channels the least-squares pointwise weights lower the output error below the rank-1
    initialisation's, and the error reported is the one measured by running the pair."""
    graph, node, _ = _conv(nn.Conv2d(8, 16, 3, padding=1), (1, 8, 8, 8))
    rng = np.random.default_rng(3)
    base = rng.standard_normal((32, 2, 8, 8))
    calib = np.einsum("nkhw,kc->nchw", base, rng.standard_normal((2, 8))).astype(np.float32)  # rank-2 channels
    moment = patch_moments(graph, [node], {graph.inputs[0].name: calib}, "test")[node.name]
    sep = separable(node, moment)
    d, u = rank1_init(oihw(node))
    o, c = u.shape
    start = np.zeros((o, c * 9 + 1))
    for ch in range(c):
        start[:, ch * 9:(ch + 1) * 9] = np.outer(u[:, ch], d[ch])
    start[:, -1] = weight_matrix(node)[:, -1]
    assert sep.error < 0.8 * relative_error(moment, weight_matrix(node), start)
    split = graph.copy()
    replace(split, split.nodes[0], sep)
    split.infer_shapes()
    name = graph.inputs[0].name
    want = np.concatenate([next(iter(run(graph, {name: calib[i:i + 1]}).values())) for i in range(32)])
    got = np.concatenate([next(iter(run(split, {name: calib[i:i + 1]}).values())) for i in range(32)])
    measured = float(((got.astype(np.float64) - want) ** 2).sum() / (want.astype(np.float64) ** 2).sum())
    assert abs(measured - sep.error) <= 1e-3 * measured + 1e-9


def _digits(tmp_path, n=64, train=True):
    model, example = ZOO["digits_classifier"](train=train)
    pt2 = tmp_path / "d.pt2"
    torch.export.save(torch.export.export(model, (example,)), pt2)
    calib = tmp_path / "c.npz"
    np.savez(calib, x=digits_split().x_train[:n].numpy())
    return model, example, pt2, calib


def test_pattern_and_auto_choose_layers_and_float_file_matches_runtime(tmp_path):
    model, example, pt2, calib = _digits(tmp_path, 32)
    r = compile_model(str(pt2), "arm-fp32", tmp_path / "p.tflite", calib=calib, options={"depthwise": ("features.2*",)})
    notes = next(p for p in r.report["passes"] if p["pass"] == "depthwise_separable")["notes"]["layers"]
    assert list(notes) == ["features.2.0"] and notes["features.2.0"]["form"] == "depthwise_separable"
    assert [la["op"] for la in r.report["layers"] if la["name"].startswith("features.2.0")] == \
        ["depthwise_conv2d", "conv2d"]
    x = np.ascontiguousarray(digits_split().x_test[:1].numpy().transpose(0, 2, 3, 1))
    ours = next(iter(run(r.graph, {r.graph.inputs[0].name: x}).values()))
    for kernels in ("ref", "default"):
        theirs = next(iter(run_litert(r.data, {r.graph.inputs[0].name: x}, kernels).values()))
        assert np.abs(ours - theirs).max() <= 1e-4 * np.ptp(ours), kernels
    # auto: best MAC saving per unit of error first, until the ratio is met (measured with ir/stats)
    folded = run_pipeline(from_module(model, (example,)), list(CANONICALIZE))[0]
    convs = [n for n in folded.nodes if n.op == "conv2d" and n.inputs[1].shape[2:] == (3, 3)]
    full = sum(macs(n) for n in convs)
    auto = compile_model(str(pt2), "arm-fp32", None, calib=calib, options={"depthwise": ("auto",),
                                                                       "depthwise_ratio": 0.5})
    rec = next(p for p in auto.report["passes"] if p["pass"] == "depthwise_separable")
    assert rec["before"]["macs"] - rec["after"]["macs"] >= 0.5 * full
    assert totals(auto.graph)["macs"] == auto.report["output"]["totals"]["macs"] < auto.report["source"]["totals"]["macs"]


@pytest.mark.slow
@pytest.mark.parametrize("target", ["arm-int8", "x86-int8"])
def test_digits_depthwise_int8_validates_bit_exact(target, tmp_path):
    _, _, pt2, calib = _digits(tmp_path)
    out = tmp_path / ("d.tflite" if target.startswith("arm") else "d.onnx")
    assert main(["compile", str(pt2), "--target", target, "--calib", str(calib), "--depthwise", "features.*",
                 "-o", str(out), "-q"]) == 0
    report = validate(out, calib)
    for c in report["comparisons"]:
        assert c["elements"] > 0 and c["differing"] == 0, (c["kernels"], c["differing"])


@pytest.mark.slow
def test_resnet18_style_all_convs_after_the_stem(tmp_path):
    model, example = ZOO["resnet18_style"]()
    graph = from_module(model, (example,))
    calib = np.random.default_rng(0).standard_normal((16, 3, 32, 32)).astype(np.float32)
    folded = run_pipeline(graph.copy(), list(CANONICALIZE))[0]
    split, records = run_pipeline(folded.copy(), ["depthwise_separable"],
                                  {"depthwise": ("blocks.*",), "calibration": {"x": calib}})
    replaced = [k for k, v in records[0].notes["layers"].items() if v["form"] == "depthwise_separable"]
    assert len(replaced) == 16 and not any(k.startswith("stem") or "shortcut" in k for k in replaced)
    assert totals(split)["macs"] <= 0.35 * totals(folded)["macs"]


def test_bad_options_exit_2(tmp_path, capsys):
    _, _, pt2, calib = _digits(tmp_path, 16, train=False)
    out = str(tmp_path / "d.tflite")
    cases = [(["--depthwise", "features.*"], "calibration data"),
             (["--depthwise", "auto", "--calib", str(calib)], "needs a MAC ratio"),
             (["--depthwise-ratio", "0.5", "--calib", str(calib)], "applies only"),
             (["--depthwise", "auto", "--depthwise", "fc", "--depthwise-ratio", "0.5", "--calib", str(calib)],
              "give it alone"),
             (["--depthwise", "nosuch", "--calib", str(calib)], "matches no layer"),
             (["--depthwise", "auto", "--depthwise-ratio", "0.01", "--calib", str(calib)], "ask for at least"),
             (["--depthwise", "auto", "--depthwise-ratio", "2", "--calib", str(calib)], "between 0 and 1")]
    for extra, message in cases:
        assert main(["compile", str(pt2), "--target", "arm-fp32", "-o", out, "-q", *extra]) == 2, extra
        assert message in capsys.readouterr().err, extra
