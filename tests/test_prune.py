"""Structured pruning (passes/prune.py, ir/channels.py prunable_groups): every zoo model at every ratio stays a
valid graph that runs; the channels kept are exactly those a numpy re-computation of the criterion keeps, through
residual adds, concats, depthwise and grouped convs, squeeze-excite and flatten -> linear; the emitted files
really shrink and run in LiteRT / onnxruntime as in mcc's runtime; int8 stays bit-exact after pruning."""

import json
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from compile_checks import compile_everywhere, export_onnx, spread
from mcc.cli import main
from mcc.compiler import compile_model
from mcc.errors import MccError
from mcc.examples.zoo import ZOO
from mcc.frontend.torch_export import from_module
from mcc.ir.stats import totals
from mcc.passes.finetune import FinetuneData
from mcc.passes import run_pipeline
from mcc.runtime import run
from mcc.runtime.litert import run_litert
from mcc.targets import CANONICALIZE
from mcc.validate import read_model_bytes

FRONT = list(CANONICALIZE) + ["prune"]
RATIOS = (0.1, 0.3, 0.5, 0.7, 0.9)


def _zoo(name):
    model, x = ZOO[name](train=False) if name == "digits_classifier" else ZOO[name]()
    return model, x


def _pruned(module, x, **options):
    """The module's IR after CANONICALIZE and prune with `options`, and the prune pass's notes."""
    graph = from_module(module.eval(), (x,))
    graph, records = run_pipeline(graph, FRONT, options)
    return graph, records[-1].notes


# ---- every zoo model, every ratio, both schedules ---------------------------------------------------------------
@pytest.mark.parametrize("schedule", ["uniform", "global"])
@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_models_prune_to_valid_graphs_that_run(name, schedule):
    model, x = _zoo(name)
    graph = from_module(model, (x,))
    base, _ = run_pipeline(graph, FRONT)
    before = totals(base)
    for ratio in RATIOS:
        pruned, records = run_pipeline(graph, FRONT, {"prune": ratio, "prune_schedule": schedule})
        pruned.verify()
        after, notes = totals(pruned), records[-1].notes
        assert after["params"] < before["params"] and after["macs"] < before["macs"], (ratio, after, before)
        assert notes["groups"] and all(0 < g["kept"] < g["channels"] for g in notes["groups"])
        assert notes["mac_ratio_removed"] == pytest.approx(1 - after["macs"] / before["macs"], abs=1e-4)
        if schedule == "global" and ratio <= 0.5:  # reachable for every zoo model: the MACs drop by the ratio
            assert notes["mac_ratio_removed"] >= ratio
        y = run(pruned, {pruned.inputs[0].name: x.numpy()})
        out = next(iter(y.values()))
        assert out.shape == tuple(pruned.outputs[0].shape) and np.isfinite(out).all()


def test_ratio_zero_leaves_every_target_byte_identical(tmp_path):
    model, x = _zoo("digits_classifier")
    np.savez(tmp_path / "calib.npz", x=np.random.default_rng(0).random((8, 1, 8, 8)).astype(np.float32))
    graph = from_module(model, (x,))
    for target in ("arm-fp32", "x86-fp32", "arm-int8"):
        calib = tmp_path / "calib.npz" if "int8" in target else None
        plain = compile_model(graph.copy(), target, calib=calib).data
        zero = compile_model(graph.copy(), target, calib=calib, options={"prune": 0.0}).data
        assert zero == plain, target
        assert compile_model(graph.copy(), target, calib=calib, options={"prune": 0.3}).data != plain


# ---- exact kept channels, per structure ----------------------------------------------------------------------
def _w(m):
    return m.weight.detach().numpy().astype(np.float64)


def _l1_out(m):
    return np.abs(_w(m)).reshape(_w(m).shape[0], -1).sum(1)


def _l1_in(m):
    return np.abs(np.moveaxis(_w(m), 1, 0)).reshape(_w(m).shape[1], -1).sum(1)


def _kept(score, ratio):
    """The channels uniform pruning keeps: all but the ratio * C (rounded half up) lowest scores."""
    return np.sort(np.argsort(score, kind="stable")[int(ratio * len(score) + 0.5):])


def _weight(graph, name):
    return graph.node(name).inputs[1].data


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem, self.c1, self.c2 = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.c3, self.fc = nn.Conv2d(8, 6, 1), nn.Linear(6, 5)

    def forward(self, x):
        a = torch.relu(self.c1(torch.relu(self.stem(x))))
        y = torch.relu(a + self.c2(a))
        return self.fc(torch.relu(self.c3(y)).mean((2, 3)))


@pytest.mark.parametrize("criterion", ["l1", "l2"])
def test_residual_add_keeps_the_channels_of_the_summed_group_norm(criterion):
    torch.manual_seed(0)
    m = Residual()
    graph, notes = _pruned(m, torch.randn(1, 3, 8, 8), prune=0.5, prune_criterion=criterion)
    p = 1 if criterion == "l1" else 2
    w = {k: np.abs(_w(getattr(m, k))) ** p for k in ("c1", "c2", "c3")}
    score = (w["c1"].sum((1, 2, 3)) + w["c2"].sum((1, 2, 3)) + w["c2"].sum((0, 2, 3)) + w["c3"].sum((0, 2, 3))) ** (1 / p)
    keep = _kept(score, 0.5)
    keep3 = _kept(((w["c3"].sum((1, 2, 3)) + (np.abs(_w(m.fc)) ** p).sum(0))) ** (1 / p), 0.5)
    np.testing.assert_array_equal(_weight(graph, "c1"), _w(m.c1)[keep].astype(np.float32))
    np.testing.assert_array_equal(_weight(graph, "c2"), _w(m.c2)[keep][:, keep].astype(np.float32))
    np.testing.assert_array_equal(_weight(graph, "c3"), _w(m.c3)[keep3][:, keep].astype(np.float32))
    np.testing.assert_array_equal(_weight(graph, "fc"), _w(m.fc)[:, keep3].astype(np.float32))
    assert {g["group"]: g["kept"] for g in notes["groups"]} == {"c1": 4, "c3": 3}
    assert "stem" in notes["left_alone"] and "fc" in notes["left_alone"]


class Concat(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem, self.a, self.b = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 6, 3, padding=1), nn.Conv2d(4, 5, 1)
        self.c, self.fc = nn.Conv2d(11, 7, 1), nn.Linear(7, 3)

    def forward(self, x):
        s = torch.relu(self.stem(x))
        cat = torch.cat([torch.relu(self.a(s)), torch.relu(self.b(s))], 1)
        return self.fc(torch.relu(self.c(cat)).mean((2, 3)))


def test_concat_ranges_prune_with_their_producers():
    torch.manual_seed(1)
    m = Concat()
    graph, _ = _pruned(m, torch.randn(1, 3, 8, 8), prune=0.5)
    keep_a = _kept(_l1_out(m.a) + _l1_in(m.c)[:6], 0.5)
    keep_b = _kept(_l1_out(m.b) + _l1_in(m.c)[6:], 0.5)
    np.testing.assert_array_equal(_weight(graph, "a"), _w(m.a)[keep_a].astype(np.float32))
    np.testing.assert_array_equal(_weight(graph, "b"), _w(m.b)[keep_b].astype(np.float32))
    keep_c = _kept(_l1_out(m.c) + _l1_in(m.fc), 0.5)
    np.testing.assert_array_equal(_weight(graph, "c"), _w(m.c)[keep_c][:, np.concatenate([keep_a, 6 + keep_b])]
                                  .astype(np.float32))


class GroupedBlock(nn.Module):
    """stem, a 1x1 conv to `mid` channels, a 3x3 conv of `groups` groups on them (depthwise where groups == mid),
    a 1x1 conv to 6, a classifier."""

    def __init__(self, mid, groups):
        super().__init__()
        self.stem, self.p = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, mid, 1)
        self.g = nn.Conv2d(mid, mid, 3, padding=1, groups=groups)
        self.q, self.fc = nn.Conv2d(mid, 6, 1), nn.Linear(6, 3)

    def forward(self, x):
        h = torch.relu(self.g(torch.relu(self.p(torch.relu(self.stem(x))))))
        return self.fc(torch.relu(self.q(h)).mean((2, 3)))


def test_depthwise_conv_follows_its_input_channels():
    torch.manual_seed(2)
    m = GroupedBlock(8, 8)
    graph, _ = _pruned(m, torch.randn(1, 3, 8, 8), prune=0.3)
    keep = _kept(_l1_out(m.p) + _l1_out(m.g) + _l1_in(m.q), 0.3)
    keep_q = _kept(_l1_out(m.q) + _l1_in(m.fc), 0.3)
    assert len(keep) == 6 and len(keep_q) == 4  # 0.3 * 8 -> 2 removed, 0.3 * 6 -> 2
    np.testing.assert_array_equal(_weight(graph, "p"), _w(m.p)[keep].astype(np.float32))
    np.testing.assert_array_equal(_weight(graph, "g"), _w(m.g)[keep].astype(np.float32))
    np.testing.assert_array_equal(_weight(graph, "q"), _w(m.q)[keep_q][:, keep].astype(np.float32))


def _per_block(score, blocks, ratio):
    """Uniform pruning under a grouped conv: the same number of lowest scores removed from every block."""
    size = len(score) // blocks
    return np.concatenate([k * size + _kept(score[k * size:(k + 1) * size], ratio) for k in range(blocks)])


def test_grouped_conv_keeps_equal_channels_per_group_and_computes_the_pruned_net():
    torch.manual_seed(3)
    m, x = GroupedBlock(16, 4).eval(), torch.randn(1, 3, 8, 8)
    graph, notes = _pruned(m, x, prune=0.5)
    wg = np.abs(_w(m.g))  # [16 out, 4 in per group, 3, 3]: input channel c is column c % 4 of group c // 4's rows
    g_in = np.concatenate([wg[4 * k:4 * k + 4].sum((0, 2, 3)) for k in range(4)])
    keep_p = _per_block(_l1_out(m.p) + g_in, 4, 0.5)
    keep_g = _per_block(_l1_out(m.g) + _l1_in(m.q), 4, 0.5)
    keep_q = _kept(_l1_out(m.q) + _l1_in(m.fc), 0.5)
    assert _weight(graph, "g").shape == (8, 2, 3, 3) and graph.node("g").attrs["groups"] == 4
    np.testing.assert_array_equal(_weight(graph, "p"), _w(m.p)[keep_p].astype(np.float32))
    local = (keep_p % 4).reshape(4, 2)
    want_g = np.stack([_w(m.g)[o][local[o // 4]] for o in keep_g])
    np.testing.assert_array_equal(_weight(graph, "g"), want_g.astype(np.float32))
    with torch.no_grad():  # the pruned net, built by hand from the expected channels
        h = F.relu(F.conv2d(F.relu(m.stem(x)), m.p.weight[keep_p], m.p.bias[keep_p]))
        h = F.relu(F.conv2d(h, torch.from_numpy(want_g.astype(np.float32)), m.g.bias[keep_g], padding=1, groups=4))
        h = F.relu(F.conv2d(h, m.q.weight[keep_q][:, keep_g], m.q.bias[keep_q])).mean((2, 3))
        want = F.linear(h, m.fc.weight[:, keep_q], m.fc.bias).numpy()
    got = next(iter(run(graph, {graph.inputs[0].name: x.numpy()}).values()))
    np.testing.assert_allclose(got, want, atol=1e-5 * spread(want))
    assert {g["group"]: g["kept"] for g in notes["groups"]} == {"p": 8, "g": 8, "q": 3}


def test_grouped_conv_refuses_unequal_groups_and_leaves_the_graph_unchanged():
    from mcc.ir.channels import ChannelError, remove_channels

    torch.manual_seed(3)
    graph, _ = _pruned(GroupedBlock(16, 4), torch.randn(1, 3, 8, 8))
    before = _weight(graph, "g")
    with pytest.raises(ChannelError, match="equal number in every group"):
        remove_channels(graph, graph.node("p").outputs[0], [0, 1, 2, 4, 5, 8, 12, 13])  # 3, 2, 1, 2 per group
    assert _weight(graph, "g") is before and _weight(graph, "p").shape[0] == 16
    remove_channels(graph, graph.node("p").outputs[0], [0, 1, 4, 5, 8, 9, 12, 13])
    assert _weight(graph, "g").shape == (16, 2, 3, 3)


class Ghost(nn.Module):
    """GhostNet's module: cat([y, depthwise(y)]) added to a shortcut, so shortcut channel c and 6 + c are one."""

    def __init__(self, shortcut_first):
        super().__init__()
        self.shortcut_first = shortcut_first  # which conv the group is rooted at (the first in graph order)
        self.stem, self.s, self.p = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 12, 1), nn.Conv2d(4, 6, 1)
        self.dw, self.q, self.fc = nn.Conv2d(6, 6, 3, padding=1, groups=6), nn.Conv2d(12, 5, 1), nn.Linear(5, 3)

    def forward(self, x):
        h = torch.relu(self.stem(x))
        sc = self.s(h) if self.shortcut_first else None
        y = self.p(h)
        g = torch.relu(torch.cat([y, self.dw(y)], 1) + (sc if self.shortcut_first else self.s(h)))
        return self.fc(torch.relu(self.q(g)).mean((2, 3)))


@pytest.mark.parametrize("shortcut_first", [False, True])
def test_channels_that_meet_in_a_ghost_module_are_removed_together(shortcut_first):
    torch.manual_seed(8)
    m, x = Ghost(shortcut_first).eval(), torch.randn(1, 3, 8, 8)
    graph, notes = _pruned(m, x, prune=0.5)
    score = _l1_out(m.s) + _l1_in(m.q)
    score[:6] += _l1_out(m.p) + _l1_out(m.dw)
    pair = score[:6] + score[6:]  # shortcut channel c and 6 + c go together
    keep = _kept(pair, 0.5)
    np.testing.assert_array_equal(_weight(graph, "p"), _w(m.p)[keep].astype(np.float32))
    np.testing.assert_array_equal(_weight(graph, "dw"), _w(m.dw)[keep].astype(np.float32))
    np.testing.assert_array_equal(_weight(graph, "s"), _w(m.s)[np.concatenate([keep, 6 + keep])].astype(np.float32))
    groups = {g["group"]: (g["channels"], g["kept"]) for g in notes["groups"]}
    # rooted at p: 6 channels, each owning a shortcut pair; rooted at s: 12 channels tied in pairs
    assert groups["s"] == (12, 6) if shortcut_first else groups["p"] == (6, 3)
    assert np.isfinite(next(iter(run(graph, {graph.inputs[0].name: x.numpy()}).values()))).all()


class SqueezeExcite(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem, self.p = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 16, 1)
        self.r, self.e = nn.Conv2d(16, 4, 1), nn.Conv2d(4, 16, 1)
        self.q, self.fc = nn.Conv2d(16, 6, 1), nn.Linear(6, 3)

    def forward(self, x):
        h = torch.relu(self.p(torch.relu(self.stem(x))))
        h = h * torch.sigmoid(self.e(torch.relu(self.r(h.mean((2, 3), keepdim=True)))))
        return self.fc(torch.relu(self.q(h)).mean((2, 3)))


def test_squeeze_excite_scale_path_prunes_with_the_channels_it_scales():
    torch.manual_seed(4)
    m = SqueezeExcite()
    graph, notes = _pruned(m, torch.randn(1, 3, 8, 8), prune=0.5)
    keep = _kept(_l1_out(m.p) + _l1_in(m.r) + _l1_out(m.e) + _l1_in(m.q), 0.5)
    squeeze = _kept(_l1_out(m.r) + _l1_in(m.e), 0.5)
    np.testing.assert_array_equal(_weight(graph, "p"), _w(m.p)[keep].astype(np.float32))
    np.testing.assert_array_equal(_weight(graph, "e"), _w(m.e)[keep][:, squeeze].astype(np.float32))
    np.testing.assert_array_equal(_weight(graph, "r"), _w(m.r)[squeeze][:, keep].astype(np.float32))
    assert {g["group"]: g["kept"] for g in notes["groups"]} == {"p": 8, "r": 2, "q": 3}


class Flatten(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem, self.p = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 6, 3, padding=1)
        self.fc1, self.fc2 = nn.Linear(6 * 4 * 4, 10), nn.Linear(10, 3)

    def forward(self, x):
        h = F.max_pool2d(torch.relu(self.p(torch.relu(self.stem(x)))), 2)
        return self.fc2(torch.relu(self.fc1(torch.flatten(h, 1))))


def test_flatten_into_linear_removes_whole_feature_blocks():
    torch.manual_seed(5)
    m = Flatten()
    graph, _ = _pruned(m, torch.randn(1, 1, 8, 8), prune=0.5)
    fc1 = np.abs(_w(m.fc1)).reshape(10, 6, 16)
    keep = _kept(_l1_out(m.p) + fc1.sum((0, 2)), 0.5)
    hidden = _kept(_l1_out(m.fc1) + _l1_in(m.fc2), 0.5)
    np.testing.assert_array_equal(_weight(graph, "p"), _w(m.p)[keep].astype(np.float32))
    features = (keep[:, None] * 16 + np.arange(16)).ravel()
    np.testing.assert_array_equal(_weight(graph, "fc1"), _w(m.fc1)[hidden][:, features].astype(np.float32))


def test_bn_scale_ranks_by_gamma_taken_before_folding():
    torch.manual_seed(6)
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 8, 1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 5, 1),
                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 2))
    gamma = torch.tensor([0.9, -0.1, 0.5, 2.0, -0.05, 0.3, -1.2, 0.7])
    m[2].weight.data = gamma
    m[2].running_var.data = torch.rand(8) + 0.5
    graph, notes = _pruned(m, torch.randn(1, 3, 8, 8), prune=0.5, prune_criterion="bn_scale")
    keep = _kept(gamma.abs().numpy(), 0.5)
    assert keep.tolist() == [0, 3, 6, 7]
    assert _weight(graph, "1").shape[0] == 4 and _weight(graph, "4").shape[1] == 4
    np.testing.assert_array_equal(_weight(graph, "4"), m[4].weight.detach().numpy()[:, keep])
    np.testing.assert_allclose(_weight(graph, "1"), m[1].weight.detach().numpy()[keep]
                               * (m[2].weight / (m[2].running_var + m[2].eps).sqrt()).detach().numpy()[keep, None, None, None],
                               rtol=1e-6)
    assert "4" in notes["left_alone"]  # no batch norm in its group: bn_scale leaves it alone
    assert not graph.bn_gamma  # consumed


def test_l1_ranks_the_weights_as_trained_with_gamma_not_the_folded_ones():
    """Torch-Pruning's GroupMagnitudeImportance: the conv's own weights, its batch norm's |gamma| and the reader's
    input slices, before fold_batchnorm scaled the conv's filters by gamma / sigma."""
    torch.manual_seed(6)
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 8, 1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 5, 1),
                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 2))
    m[2].weight.data = torch.tensor([0.9, -0.8, 1.0, 1.1, -0.9, 1.2, -1.0, 0.8])
    m[2].running_var.data = torch.logspace(-3, 3, 8)[torch.randperm(8)]
    graph, notes = _pruned(m, torch.randn(1, 3, 8, 8), prune=0.5)
    gamma = m[2].weight.detach().abs().numpy()
    keep = _kept(_l1_out(m[1]) + gamma + _l1_in(m[4]), 0.5)
    factor = (m[2].weight / (m[2].running_var + m[2].eps).sqrt()).detach().numpy()
    assert not np.array_equal(keep, _kept(_l1_out(m[1]) * np.abs(factor) + _l1_in(m[4]), 0.5))  # folded: others
    keep4 = _kept(_l1_out(m[4]) + _l1_in(m[7]), 0.5)  # no batch norm: the weights as they are
    np.testing.assert_array_equal(_weight(graph, "4"), m[4].weight.detach().numpy()[keep4][:, keep])
    np.testing.assert_allclose(_weight(graph, "1"), m[1].weight.detach().numpy()[keep]
                               * factor[keep, None, None, None], rtol=1e-6)
    assert {g["group"]: g["kept"] for g in notes["groups"]} == {"1": 4, "4": 2}
    assert not graph.bn_fold and not graph.bn_gamma


def test_global_schedule_round_to_and_exclusion():
    model, x = _zoo("resnet18_style")
    graph, notes = _pruned(model, x, prune=0.4, prune_schedule="global", prune_round_to=4,
                           prune_exclude=("blocks.7.*",))
    assert notes["mac_ratio_removed"] >= 0.4 and all(g["kept"] % 4 == 0 for g in notes["groups"])
    assert "blocks.7.body.0.0" in notes["left_alone"] and "matches" in notes["left_alone"]["blocks.7.body.0.0"]
    with_first, first_notes = _pruned(model, x, prune=0.4, prune_first_last=True)
    assert "stem.0" not in first_notes["left_alone"]
    with pytest.raises(MccError, match="matches no layer"):
        _pruned(model, x, prune=0.4, prune_exclude=("no_such_layer",))


@pytest.mark.parametrize("name", ["resnet18_style", "mobilenet_v2_style"])
def test_global_schedule_pruned_to_a_reached_mac_count_stops_exactly_there(name):
    """Asked for the MAC cut an earlier run reached (as benchmarks/bench_pruning.py asks for Torch-Pruning's), the
    global schedule removes exactly the same channels: no float error in its running MAC total takes one more."""
    model, x = _zoo(name)
    macs0 = totals(run_pipeline(from_module(model.eval(), (x,)), FRONT)[0])["macs"]
    for ratio in (0.3, 0.5, 0.7):
        first, notes = _pruned(model, x, prune=ratio, prune_schedule="global")
        macs = totals(first)["macs"]
        again, again_notes = _pruned(model, x, prune=1 - macs / macs0, prune_schedule="global")
        assert totals(again)["macs"] == macs and again_notes["groups"] == notes["groups"], ratio


# ---- taylor criterion -------------------------------------------------------------------------------------------
class TaylorNet(nn.Module):
    """A residual pair (conv0 + conv2 share their channels) and a plain conv1, into a classifier."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.conv0, self.conv1, self.conv2 = nn.Conv2d(2, 6, 3, padding=1), nn.Conv2d(6, 5, 3, padding=1), \
            nn.Conv2d(5, 6, 3, padding=1)
        self.fc = nn.Linear(6, 4)

    def forward(self, x):
        a = self.conv0(x)
        y = F.relu(a + self.conv2(F.relu(self.conv1(F.relu(a)))))
        return self.fc(torch.flatten(F.avg_pool2d(y, 4), 1))


def _direct_taylor(model, x, labels):
    """Per conv, per batch of 64: |sum over batch and positions of output * d(CE)/d(output)|, summed over
    batches, by torch hooks on the module itself."""
    scores = {}
    for start in range(0, len(x), 64):
        acts = {}
        def keep(module, inputs, output, name):
            output.retain_grad()
            acts[name] = output

        hooks = [getattr(model, n).register_forward_hook(lambda m, i, o, n=n: keep(m, i, o, n))
                 for n in ("conv0", "conv1", "conv2")]
        out = model(x[start:start + 64])
        target = labels[start:start + 64] if labels is not None else out.detach().argmax(1)
        model.zero_grad()
        F.cross_entropy(out, target).backward()
        for h in hooks:
            h.remove()
        for n, a in acts.items():
            scores[n] = scores.get(n, 0) + (a * a.grad).detach().double().sum((0, 2, 3)).abs()
    return scores


@pytest.mark.parametrize("with_labels", [True, False], ids=["labels", "own-top1"])
def test_taylor_importance_is_molchanovs_activation_gradient_product(with_labels):
    from mcc.ir.channels import prunable_groups
    from mcc.passes.prune import importance, taylor_scores

    model = TaylorNet().eval()
    x = torch.from_numpy(np.random.default_rng(1).normal(size=(128, 2, 4, 4)).astype(np.float32))
    labels = torch.from_numpy(np.random.default_rng(2).integers(0, 4, 128))
    graph = run_pipeline(from_module(model, (x[:1],)), list(CANONICALIZE))[0]
    groups = {g.root.name: g for g in prunable_groups(graph)[0]}
    assert set(groups) == {"conv0", "conv1"}
    names = [n.outputs[0].name for g in groups.values() for n in g.producers()]
    got = taylor_scores(graph, names, {graph.inputs[0].name: x.numpy()}, labels.numpy() if with_labels else None)
    want = _direct_taylor(model, x, labels if with_labels else None)
    residual = importance(graph, groups["conv0"], "taylor", got)
    plain = importance(graph, groups["conv1"], "taylor", got)
    for score, expected in ((residual, want["conv0"] + want["conv2"]), (plain, want["conv1"])):
        assert np.allclose(score, expected.numpy(), rtol=1e-4, atol=1e-9 * float(expected.max()))
    assert len(set(np.argsort(residual)[:3])) == 3 and residual.max() > 2 * residual.min()  # channels differ


def test_taylor_criterion_prunes_by_data_and_refuses_without_it(tmp_path):
    model = TaylorNet().eval()
    x = np.random.default_rng(1).normal(size=(128, 2, 4, 4)).astype(np.float32)
    graph = from_module(model, (torch.from_numpy(x[:1]),))
    taylor, notes = run_pipeline(graph, FRONT, {"prune": 0.5, "prune_criterion": "taylor", "prune_first_last": True,
                                               "calibration": {graph.inputs[0].name: x}})
    assert notes[-1].notes["criterion"] == "taylor"
    want = _direct_taylor(model, torch.from_numpy(x), None)
    keep1 = _kept(want["conv1"].numpy(), 0.5)
    assert np.array_equal(taylor.node("conv1").inputs[2].data, model.conv1.bias.detach().numpy()[keep1])
    assert not np.array_equal(keep1, _kept(_l1_out(model.conv1), 0.5))  # the data decided, not the weights
    labels = np.random.default_rng(2).integers(0, 4, 128)  # --finetune data comes first, with its labels
    data = FinetuneData({graph.inputs[0].name: x}, labels, graph)
    tuned = run_pipeline(graph, FRONT, {"prune": 0.5, "prune_criterion": "taylor", "finetune": data,
                                        "prune_first_last": True, "calibration": {graph.inputs[0].name: x[:64]}})[0]
    by_labels = _direct_taylor(model, torch.from_numpy(x), torch.from_numpy(labels))
    keep0 = _kept((by_labels["conv0"] + by_labels["conv2"]).numpy(), 0.5)  # the residual group
    assert np.array_equal(tuned.node("conv0").inputs[2].data, model.conv0.bias.detach().numpy()[keep0])
    assert np.array_equal(taylor.node("conv0").inputs[2].data,
                          model.conv0.bias.detach().numpy()[_kept((want["conv0"] + want["conv2"]).numpy(), 0.5)])
    assert not np.array_equal(tuned.node("conv0").inputs[2].data, taylor.node("conv0").inputs[2].data)
    with pytest.raises(MccError, match="taylor ranks channels on data"):
        run_pipeline(graph, FRONT, {"prune": 0.5, "prune_criterion": "taylor"})


def test_taylor_on_a_float_tflite_source_ranks_as_torch_and_prunes_to_bit_exact_int8(tmp_path, capsys):
    """An NHWC source: TaylorNet written by mcc's arm-fp32 backend and read back, conv1 with its relu fused (the
    product activation x gradient after a relu equals the one before it, where the gradient is masked)."""
    from mcc.ir.channels import prunable_groups
    from mcc.passes.prune import importance, taylor_scores

    model = TaylorNet().eval()
    x = torch.from_numpy(np.random.default_rng(1).normal(size=(128, 2, 4, 4)).astype(np.float32))
    labels = torch.from_numpy(np.random.default_rng(2).integers(0, 4, 128))
    source = tmp_path / "taylor.tflite"
    compile_model(from_module(model, (x[:1],)), "arm-fp32", source)
    graph = run_pipeline(read_model_bytes(source.read_bytes(), "tflite", None), list(CANONICALIZE))[0]
    assert graph.node("conv1").attrs["activation"] == "relu" and graph.inputs[0].shape == (1, 4, 4, 2)
    nhwc = {graph.inputs[0].name: x.numpy().transpose(0, 2, 3, 1).copy()}
    groups = {g.root.name: g for g in prunable_groups(graph)[0]}
    names = [n.outputs[0].name for g in groups.values() for n in g.producers()]
    for target in (labels, None):
        got = taylor_scores(graph, names, nhwc, None if target is None else target.numpy())
        want = _direct_taylor(model, x, target)
        for group, expected in (("conv0", want["conv0"] + want["conv2"]), ("conv1", want["conv1"])):
            score = importance(graph, groups[group], "taylor", got)
            assert np.allclose(score, expected.numpy(), rtol=1e-4, atol=1e-9 * float(expected.max()))
    pruned = run_pipeline(graph, FRONT, {"prune": 0.5, "prune_criterion": "taylor", "prune_first_last": True,
                                        "calibration": nhwc})[0]
    for name, score in (("conv1", want["conv1"]), ("conv0", want["conv0"] + want["conv2"])):
        bias = getattr(model, name).bias.detach().numpy()
        assert np.array_equal(pruned.node(name).inputs[2].data, bias[_kept(score.numpy(), 0.5)])
    np.savez(tmp_path / "calib.npz", **nhwc)
    out = tmp_path / "pruned_int8.tflite"
    assert main(["compile", str(source), "--target", "arm-int8", "--calib", str(tmp_path / "calib.npz"), "--prune",
                 "0.5", "--prune-criterion", "taylor", "--prune-first-last", "-q", "-o", str(out)]) == 0
    assert len(read_model_bytes(out.read_bytes(), "tflite", None).node("conv1").inputs[2].data) == 2  # 5 -> 2 kept
    capsys.readouterr()
    assert main(["validate", str(out), "--input", str(tmp_path / "calib.npz"), "--json"]) == 0
    checked = json.loads(capsys.readouterr().out)
    assert len(checked["comparisons"]) == 2
    for c in checked["comparisons"]:
        assert c["exact"] and c["differing"] == 0 and c["elements"] > 0


# ---- what is emitted ---------------------------------------------------------------------------------------------
def _weight_elements(data, backend):
    return sum(t.size for t in read_model_bytes(data, backend, None).constants())


def test_pruned_files_shrink_and_run_in_litert_and_onnxruntime_as_in_mcc(tmp_path):
    import onnxruntime as ort

    model, x = _zoo("mobilenet_v3_small_style")
    graph = from_module(model, (x,))
    for target in ("arm-fp32", "x86-fp32"):
        full = compile_model(graph.copy(), target)
        r = compile_model(graph.copy(), target, options={"prune": 0.5, "prune_schedule": "global"})
        assert len(r.data) < 0.75 * len(full.data)
        feed = x.numpy().transpose(0, 2, 3, 1).copy() if target == "arm-fp32" else x.numpy()
        mine = next(iter(run(r.graph, {r.graph.inputs[0].name: feed}).values()))
        backend = "tflite" if target == "arm-fp32" else "onnx"
        if backend == "tflite":
            peer = next(iter(run_litert(r.data, {r.graph.inputs[0].name: feed}, "default").values()))
        else:
            s = ort.InferenceSession(r.data, providers=["CPUExecutionProvider"])
            peer = s.run(None, {s.get_inputs()[0].name: feed})[0]
        assert _weight_elements(r.data, backend) < 0.75 * _weight_elements(full.data, backend)
        np.testing.assert_allclose(peer, mine, atol=1e-4 * spread(mine))
        pr = r.report["pruning"]
        assert pr["bytes"] == {"before": len(full.data), "after": len(r.data)}
        assert pr["latency"]["before_ms"] > 0 and pr["latency"]["after_ms"] > 0
        assert pr["macs"]["after"] < pr["macs"]["before"] and any(
            la["macs_after"] < la["macs_before"] for la in pr["layers"])


def test_pruned_int8_is_bit_exact_from_torch_and_onnx(tmp_path):
    torch.manual_seed(7)
    compile_everywhere(SqueezeExcite(), (1, 3, 8, 8), tmp_path, targets=("arm-int8", "x86-int8"),
                       options={"prune": 0.5, "prune_schedule": "global"})


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18_style", "mobilenet_v2_style", "mobilenet_v3_small_style"])
def test_pruned_zoo_int8_is_bit_exact_from_torch_and_onnx(name, tmp_path):
    model, x = _zoo(name)
    compile_everywhere(model, tuple(x.shape), tmp_path, targets=("arm-int8", "x86-int8"),
                       options={"prune": 0.5, "prune_schedule": "global"})


def test_float_tflite_and_onnx_sources_prune_through_the_cli(tmp_path, capsys):
    model, x = _zoo("mobilenet_v2_style")
    source = tmp_path / "m.tflite"
    assert main(["compile", str(export_onnx(model, x, tmp_path / "m.onnx")), "--target", "arm-fp32", "-q",
                 "-o", str(source)]) == 0
    out, report = tmp_path / "p.tflite", tmp_path / "p.json"
    assert main(["compile", str(source), "--target", "arm-fp32", "--prune", "0.5", "--prune-criterion", "l2",
                 "--prune-exclude", "*features.2/*", "-o", str(out), "--report", str(report)]) == 0
    assert "pruned (l2, uniform 0.5)" in capsys.readouterr().out
    pr = json.loads(report.read_text())["pruning"]
    assert any("matches --prune-exclude '*features.2/*'" in why for why in pr["left_alone"].values())
    assert pr["bytes"]["after"] < 0.6 * pr["bytes"]["before"] and out.stat().st_size == pr["bytes"]["after"]
    pruned = read_model_bytes(out.read_bytes(), "tflite", None)
    feed = x.numpy().transpose(0, 2, 3, 1).copy()
    mine = next(iter(run(pruned, {pruned.inputs[0].name: feed}).values()))
    peer = next(iter(run_litert(out.read_bytes(), {pruned.inputs[0].name: feed}, "ref").values()))
    np.testing.assert_allclose(peer, mine, atol=1e-4 * spread(mine))


@pytest.mark.parametrize("flags, message", [
    (["--prune", "1.2"], "fraction in \\[0, 1\\)"),
    (["--prune", "half"], "not a number"),
    (["--prune", "0.3", "--prune-schedule", "layerwise"], "uniform, global"),
    (["--prune-criterion", "l2"], "add --prune RATIO"),
])
def test_bad_prune_flags_are_refused_before_any_work(flags, message, tmp_path, capsys):
    model = tmp_path / "m.pt2"
    model.write_bytes(b"never read: the flags are refused first")
    assert main(["compile", str(model), "--target", "arm-fp32", *flags]) == 2
    assert re.search(message, capsys.readouterr().err)


def _pytorchcv_families():
    from mcc.benchmarks.coverage_suites.torch_suites import TASKS

    return sorted(family for families in TASKS.values() for family in families)


@pytest.mark.corpus
@pytest.mark.parametrize("family", _pytorchcv_families())
def test_every_pytorchcv_family_that_compiles_prunes_at_0_3(family):
    """The coverage issue's corpus (benchmarks/coverage_suites, one model per pytorchcv family): a family that
    compiles to arm-fp32 also compiles with --prune 0.3 (run_pipeline verifies the graph after every pass) to a
    smaller file; one that does not is refused by mcc without pruning too. Run once: 57 families, 50 compile, all
    50 prune, 49 of them losing channels (one has no prunable group)."""
    from mcc.benchmarks.coverage_suites.torch_suites import build_pytorchcv, pytorchcv_cases

    case = next(c for c in pytorchcv_cases(quick=False) if c.name.startswith(f"{family} ("))
    torch.manual_seed(0)
    model, example = build_pytorchcv(case.payload)
    try:
        graph = from_module(model.eval(), (example,))
    except MccError:  # torch.export's or the frontend's refusal: nothing to prune
        return
    try:
        r = compile_model(graph.copy(), "arm-fp32", options={"prune": 0.3})
    except MccError:
        with pytest.raises(MccError):  # refused because of the model, not of pruning
            compile_model(graph, "arm-fp32")
        return
    pruning = r.report["pruning"]
    if pruning["groups"]:
        assert pruning["bytes"]["after"] < pruning["bytes"]["before"] and pruning["macs"]["after"] < pruning["macs"]["before"]
