"""low_rank: each form reproduces a layer whose weights have exactly its structure; the error it reports is the error
the split layer makes on the calibration data; on zoo models the pass meets the MAC ratio (ir/stats), the float
files match mcc's runtime in LiteRT and the int8 files validate bit-exact; bad options are MccErrors (exit 2)."""

import numpy as np
import pytest
import torch
from torch import nn

from mcc.cli import main
from mcc.compiler import compile_model
from mcc.errors import MccError
from mcc.examples.zoo import ZOO, digits_split
from mcc.frontend.torch_export import from_module
from mcc.ir.ops import macs
from mcc.ir.stats import layer_table, totals
from mcc.passes import run_pipeline
from mcc.passes.factorize import matrix_layer, patch_moments, relative_error, rewrite, spatial_conv, weight_matrix
from mcc.passes.low_rank import cp_form, spatial_form, spatial_matrix, svd_form, tucker_form
from mcc.runtime import run
from mcc.runtime.litert import run_litert
from mcc.targets import CANONICALIZE
from mcc.validate import validate


def _layer(module, shape, seed=0):
    """(graph, its one weighted node, an input) for a module of one layer."""
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    graph = from_module(module.eval(), (x,))
    node = next(n for n in graph.nodes if n.op in ("conv2d", "fully_connected"))
    return graph, node, x.numpy()


def _split_matches(graph, node, candidate, x, tol=1e-5):
    want = next(iter(run(graph, {graph.inputs[0].name: x}).values()))
    split = graph.copy()
    target = split.node(node.name)
    rewrite(split, target, candidate.pieces, None)
    split.infer_shapes()
    split.verify()
    got = next(iter(run(split, {split.inputs[0].name: x}).values()))
    assert got.shape == want.shape
    err = np.abs(got - want).max() / np.ptp(want)
    assert err <= tol, err
    assert sum(macs(n) for n in split.nodes) == candidate.macs  # the MACs the pass plans with are what ir/stats counts
    return split


def test_svd_of_exact_rank_fc_reproduces_it():
    fc = nn.Linear(32, 24)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        fc.weight.copy_(torch.randn(24, 4, generator=g) @ torch.randn(4, 32, generator=g))
    graph, node, x = _layer(fc, (5, 32))
    w_aug = weight_matrix(node)
    svd = np.linalg.svd(w_aug[:, :-1], full_matrices=False)
    split = _split_matches(graph, node, svd_form(node, w_aug, 4, svd), x)
    assert [n.op for n in split.nodes] == ["fully_connected", "fully_connected"]
    assert split.nodes[0].inputs[1].shape == (4, 32) and split.nodes[1].inputs[2] is not None  # bias on the second
    # one rank fewer must not reproduce it: the test can fail
    with pytest.raises(AssertionError):
        _split_matches(graph, node, svd_form(node, w_aug, 3, svd), x)


def test_svd_of_exact_rank_1x1_conv_with_stride_and_padding():
    conv = nn.Conv2d(16, 20, 1, stride=2, padding=1)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        conv.weight.copy_((torch.randn(20, 3, generator=g) @ torch.randn(3, 16, generator=g))[:, :, None, None])
    graph, node, x = _layer(conv, (2, 16, 9, 9))
    assert matrix_layer(node)
    w_aug = weight_matrix(node)
    _split_matches(graph, node, svd_form(node, w_aug, 3, np.linalg.svd(w_aug[:, :-1], full_matrices=False)), x)


@pytest.mark.parametrize("stride,padding,dilation", [(1, 1, 1), (2, 2, 2)])
def test_tucker2_of_exact_tucker_weights_reproduces_the_conv(stride, padding, dilation):
    conv = nn.Conv2d(10, 12, 3, stride=stride, padding=padding, dilation=dilation)
    g = torch.Generator().manual_seed(3)
    core, u_out, u_in = (torch.randn(4, 3, 3, 3, generator=g), torch.randn(12, 4, generator=g),
                         torch.randn(10, 3, generator=g))
    with torch.no_grad():
        conv.weight.copy_(torch.einsum("rsyx,or,is->oiyx", core, u_out, u_in))
    graph, node, x = _layer(conv, (2, 10, 11, 11))
    assert spatial_conv(node)
    split = _split_matches(graph, node, tucker_form(node, weight_matrix(node), 4, 3), x)
    assert [n.inputs[1].shape for n in split.nodes] == [(3, 10, 1, 1), (4, 3, 3, 3), (12, 4, 1, 1)]
    with pytest.raises(AssertionError):
        _split_matches(graph, node, tucker_form(node, weight_matrix(node), 4, 2), x)


def test_spatial_svd_of_separable_weights_reproduces_the_conv():
    conv = nn.Conv2d(6, 8, (3, 5), stride=(2, 1), padding=(1, 2))
    g = torch.Generator().manual_seed(4)
    vert, horiz = torch.randn(3, 6, 3, generator=g), torch.randn(8, 3, 5, generator=g)  # H[r, i, y], V[o, r, x]
    with torch.no_grad():
        conv.weight.copy_(torch.einsum("orx,riy->oiyx", horiz, vert))
    graph, node, x = _layer(conv, (2, 6, 10, 12))
    svd = np.linalg.svd(spatial_matrix(node), full_matrices=False)
    split = _split_matches(graph, node, spatial_form(node, weight_matrix(node), 3, svd), x)
    assert [n.inputs[1].shape for n in split.nodes] == [(3, 6, 3, 1), (8, 3, 1, 5)]
    with pytest.raises(AssertionError):
        _split_matches(graph, node, spatial_form(node, weight_matrix(node), 2, svd), x)


def test_cp_of_exact_cp_weights_reproduces_the_conv():
    conv = nn.Conv2d(6, 8, 3, stride=2, padding=1)
    g = torch.Generator().manual_seed(7)
    a_o, a_i, a_y, a_x = (torch.randn(n, 3, generator=g) for n in (8, 6, 3, 3))
    with torch.no_grad():
        conv.weight.copy_(torch.einsum("or,ir,yr,xr->oiyx", a_o, a_i, a_y, a_x))
    graph, node, x = _layer(conv, (2, 6, 10, 10))
    split = _split_matches(graph, node, cp_form(node, weight_matrix(node), 3), x, tol=1e-4)  # ALS converges, not exact
    assert [n.op for n in split.nodes] == ["conv2d", "depthwise_conv2d", "depthwise_conv2d", "conv2d"]
    with pytest.raises(AssertionError):
        _split_matches(graph, node, cp_form(node, weight_matrix(node), 2), x, tol=1e-4)


@pytest.mark.parametrize("shape, r", [((8, 6, 3, 3), 5), ((6, 8, 3, 5), 12)])
def test_cp_als_iterates_are_the_textbook_alternating_least_squares(shape, r):
    """cp_als shares the work of the four updates of a sweep; its iterates are the textbook ALS's (each mode solved
    against the Khatri-Rao product of the other three, formed explicitly) from the same start, sweep for sweep."""
    from mcc.passes.low_rank import cp_als

    w = np.random.default_rng(3).standard_normal(shape)
    factors = cp_als(w, r, sweeps=0)
    unfolded = [np.moveaxis(w, m, 0).reshape(n, -1) for m, n in enumerate(shape)]
    for sweeps in range(1, 4):
        for m in range(4):
            a, b, c = (f for k, f in enumerate(factors) if k != m)
            kr = (a[:, None, None, :] * b[None, :, None, :] * c[None, None, :, :]).reshape(-1, r)
            factors[m] = np.linalg.lstsq(kr, unfolded[m].T, rcond=None)[0].T
        want = np.einsum("or,ir,yr,xr->oiyx", *factors)
        got = np.einsum("or,ir,yr,xr->oiyx", *cp_als(w, r, sweeps=sweeps))
        assert np.abs(got - want).max() <= 1e-7 * np.abs(w).max(), sweeps
        assert np.abs(got - w).max() > 1e-3  # rank r does not reproduce the random weight: the sweeps matter


def test_a_long_search_says_which_layer_it_has_reached(monkeypatch):
    """Past PROGRESS_AFTER_S seconds the search prints one line per layer (here from the start)."""
    import io

    from mcc.passes import low_rank
    from mcc.progress import Progress

    monkeypatch.setattr(low_rank, "PROGRESS_AFTER_S", 0.0)
    graph, _, _ = _layer(nn.Sequential(nn.Conv2d(4, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3)), (1, 4, 10, 10))
    calib = np.random.default_rng(6).standard_normal((4, 4, 10, 10)).astype(np.float32)
    out = io.StringIO()
    run_pipeline(graph, ["low_rank"], {"low_rank": 0.6, "calibration": {graph.inputs[0].name: calib}},
                 reporter=Progress(True, out))
    lines = [line for line in out.getvalue().splitlines() if line.startswith("low_rank: layer")]
    names = [n.name for n in graph.nodes if n.op == "conv2d"]
    assert [line.split("'")[1] for line in lines] == names and lines[0].startswith("low_rank: layer 1/2")


def test_reported_error_is_the_split_layers_error_on_the_calibration_data():
    """The error from the patch moments equals the relative squared error of the rewritten layer's output on the
    same samples, run through the runtime; the least-squares refit of the last piece lowers it."""
    graph, node, _ = _layer(nn.Conv2d(8, 8, 3, padding=1), (1, 8, 8, 8))
    calib = np.random.default_rng(5).standard_normal((16, 8, 8, 8)).astype(np.float32)
    moment = patch_moments(graph, [node], {graph.inputs[0].name: calib}, "test")[node.name]
    for cand in (tucker_form(node, weight_matrix(node), 3, 5), cp_form(node, weight_matrix(node), 10),
                 spatial_form(node, weight_matrix(node), 6,
                              np.linalg.svd(spatial_matrix(node), full_matrices=False))):
        unfitted = relative_error(moment, weight_matrix(node), cand.weight)
        cand.refit(moment, weight_matrix(node))  # the last 1x1 refitted on the data (Tucker-2), then measured
        predicted = cand.error
        assert predicted < unfitted if cand.form != "spatial_svd" else predicted == unfitted
        split = graph.copy()
        rewrite(split, split.node(node.name), cand.pieces, cand.bias)
        split.infer_shapes()
        name = graph.inputs[0].name
        want = np.concatenate([run(graph, {name: calib[i:i + 1]})[graph.outputs[0].name] for i in range(16)])
        got = np.concatenate([run(split, {name: calib[i:i + 1]})[split.outputs[0].name] for i in range(16)])
        measured = float(((got.astype(np.float64) - want) ** 2).sum() / (want.astype(np.float64) ** 2).sum())
        assert 0.01 < measured and abs(predicted - measured) <= 1e-4 * measured, (cand.form, predicted, measured)


def test_splits_are_refitted_in_graph_order_on_the_split_upstream():
    """After the choice, each split's last piece is refitted on what the split upstream feeds it, against the
    original layer's outputs: the last conv's in-chain error (note) is the whole model's output error as run, and
    it is a least-squares optimum (scaling the refitted weights either way makes the model's output worse)."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1),
                          nn.ReLU(), nn.Conv2d(16, 8, 3, padding=1)).eval()
    calib = np.random.default_rng(7).standard_normal((16, 8, 8, 8)).astype(np.float32)
    graph = from_module(model, (torch.from_numpy(calib[:1]),))
    name = graph.inputs[0].name
    split, records = run_pipeline(graph.copy(), ["low_rank"], {"low_rank": 0.4, "calibration": {name: calib}})
    notes = records[0].notes["layers"]
    last = [n for n in graph.nodes if n.op == "conv2d"][-1].name
    assert sum(la["form"] != "kept" for la in notes.values()) >= 2 and notes[last]["form"] != "kept", notes

    def model_error(g):
        want = np.concatenate([run(graph, {name: calib[i:i + 1]})[graph.outputs[0].name] for i in range(16)])
        got = np.concatenate([run(g, {name: calib[i:i + 1]})[g.outputs[0].name] for i in range(16)])
        return float(((got.astype(np.float64) - want) ** 2).sum() / (want.astype(np.float64) ** 2).sum())

    measured = model_error(split)
    assert 1e-3 < measured and abs(notes[last]["output_error_in_chain"] - measured) <= 1e-3 * measured, (notes, measured)
    for scale in (0.97, 1.03):
        worse = split.copy()
        w = worse.node(last).inputs[1]
        worse.node(last).inputs = [worse.node(last).inputs[0], worse.constant(w.name, w.data * scale),
                                   worse.node(last).inputs[2]]
        assert model_error(worse) > measured


def test_layer_where_no_split_saves_macs_is_left_alone():
    """An FC 2 -> 2: its rank-1 split costs as many MACs (1 x (2 + 2)) as the layer."""
    graph, _, x = _layer(nn.Linear(2, 2), (1, 2))
    with pytest.raises(MccError, match="reach at best 1.000"):
        run_pipeline(graph, ["low_rank"], {"low_rank": 0.5, "calibration": {graph.inputs[0].name: np.repeat(x, 4, 0)}})
    # beside splittable layers, it is kept and noted, and they are split
    graph2, _, _ = _layer(nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 64), nn.Linear(64, 64)), (1, 2))
    calib = np.random.default_rng(6).standard_normal((8, 2)).astype(np.float32)
    out, records = run_pipeline(graph2, ["low_rank"], {"low_rank": 0.6, "calibration": {graph2.inputs[0].name: calib}})
    notes = records[0].notes["layers"]
    first, last = graph2.nodes[0].name, graph2.nodes[-1].name
    assert notes[first]["form"] == "kept" and notes[first]["why"] == "no split saves MACs", notes
    assert out.node(first).inputs[1].shape == (2, 2)
    assert notes[last]["form"] == "svd" and out.node(last).inputs[1].shape[1] < 64


def _considered_macs(graph):
    return sum(macs(n) for n in graph.nodes if matrix_layer(n) or spatial_conv(n))


def _nhwc(x):
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


@pytest.mark.slow
@pytest.mark.parametrize("ratio", [0.5, 0.3])
def test_resnet18_style_meets_the_mac_ratio_and_runs_in_litert(ratio, tmp_path):
    model, example = ZOO["resnet18_style"]()
    graph = from_module(model, (example,))
    calib = np.random.default_rng(0).standard_normal((32, 3, 32, 32)).astype(np.float32)
    folded, _ = run_pipeline(graph.copy(), list(CANONICALIZE))
    split, records = run_pipeline(folded.copy(), ["low_rank"], {"low_rank": ratio, "calibration": {"x": calib}})
    considered = _considered_macs(folded)
    kept_out = totals(folded)["macs"] - considered
    assert totals(split)["macs"] - kept_out <= ratio * considered  # measured by ir/stats on the graphs
    assert totals(split)["macs"] - kept_out >= 0.8 * ratio * considered  # and the budget is used, not wasted
    assert records[0].notes["macs"]["ratio"] <= ratio
    forms = {la["form"] for la in records[0].notes["layers"].values()}
    assert forms & {"tucker2", "spatial_svd", "cp"}, forms
    # the emitted arm-fp32 file computes what mcc's runtime computes on the split graph
    path = tmp_path / "r.tflite"
    result = compile_model(graph.copy(), "arm-fp32", path, calib={"x": calib}, options={"low_rank": ratio})
    assert sum(r.macs for r in layer_table(result.graph)) == result.report["output"]["totals"]["macs"]
    assert result.report["output"]["totals"]["macs"] < 0.5 * result.report["source"]["totals"]["macs"] + kept_out
    x = calib[:1]
    ours = next(iter(run(result.graph, {result.graph.inputs[0].name: _nhwc(x)}).values()))
    for kernels in ("ref", "default"):
        theirs = next(iter(run_litert(result.data, {result.graph.inputs[0].name: _nhwc(x)}, kernels).values()))
        assert np.abs(ours - theirs).max() <= 1e-4 * np.ptp(ours), kernels


def _digits_calib(tmp_path, n=64):
    split = digits_split()
    path = tmp_path / "digits.npz"
    np.savez(path, x=split.x_train[:n].numpy())
    return path


@pytest.mark.slow
@pytest.mark.parametrize("target", ["arm-int8", "x86-int8"])
def test_digits_low_rank_int8_validates_bit_exact(target, tmp_path):
    model, example = ZOO["digits_classifier"]()
    pt2 = tmp_path / "digits.pt2"
    torch.export.save(torch.export.export(model, (example,)), pt2)
    calib = _digits_calib(tmp_path)
    out = tmp_path / ("d.tflite" if target.startswith("arm") else "d.onnx")
    compiled = compile_model(str(pt2), target, out, calib=calib, options={"low_rank": 0.6})
    record = next(r for r in compiled.report["passes"] if r["pass"] == "low_rank")
    assert record["notes"]["macs"]["ratio"] <= 0.6 and record["after"]["macs"] < record["before"]["macs"]
    split = [la["name"] for la in compiled.report["layers"] if "/" in la["name"]]
    assert any(name.split("/")[-1].startswith(("svd_", "tucker_", "spatial_", "cp_")) for name in split), split
    report = validate(out, calib)
    for c in report["comparisons"]:
        assert c["elements"] > 0 and c["differing"] == 0, (c["kernels"], c["differing"])


def test_float_target_with_low_rank_needs_calib_and_bad_options_exit_2(tmp_path, capsys):
    model, example = ZOO["digits_classifier"](train=False)
    pt2 = tmp_path / "d.pt2"
    torch.export.save(torch.export.export(model, (example,)), pt2)
    calib = _digits_calib(tmp_path, 16)
    out = str(tmp_path / "d.tflite")
    cases = [(["--low-rank", "0.5"], "calibration data"),
             (["--low-rank", "1.5", "--calib", str(calib)], "between 0 and 1"),
             (["--low-rank", "0.5", "--low-rank-energy", "0.9", "--calib", str(calib)], "both given"),
             (["--low-rank", "0.5", "--low-rank-layers", "nosuch*", "--calib", str(calib)], "matches no layer"),
             (["--low-rank", "0.01", "--calib", str(calib)], "reach at best")]
    for extra, message in cases:
        assert main(["compile", str(pt2), "--target", "arm-fp32", "-o", out, "-q", *extra]) == 2, extra
        assert message in capsys.readouterr().err, extra
    # a float target accepts --calib for the pass, and the energy mode splits by the singular values' energy
    assert main(["compile", str(pt2), "--target", "arm-fp32", "-o", out, "--calib", str(calib),
                 "--low-rank-energy", "0.9"]) == 0
    printed = capsys.readouterr().out
    assert "low_rank: MACs" in printed and "output error" in printed
