"""The IR's rewrite API: use-lists that stay current under any edit, checked erase, one-to-many replacement, the
pattern matcher, and channel surgery over dependency groups (checked by running the graph before and after)."""

import numpy as np
import pytest
import torch
from torch import nn

from mcc.frontend.torch_export import from_module
from mcc.ir import Graph, Node, Tensor
from mcc.ir.channels import ChannelError, dependency_group, remove_channels
from mcc.ir.pattern import Pat, matches
from mcc.ir.traits import channel_axis, weight_axes
from mcc.passes import run_pipeline
from mcc.runtime import run


def _chain():
    g = Graph("chain")
    x = g.add_input("x", (1, 4))
    a = g.add_node("relu", [x], name="a")
    b = g.add_node("relu6", [a.outputs[0]], name="b")
    c = g.add_node("add", [a.outputs[0], b.outputs[0]], name="c")
    g.outputs = [c.outputs[0]]
    return g, x, a, b, c


def test_use_lists_follow_direct_edits():
    g, x, a, b, c = _chain()
    ya, yb = a.outputs[0], b.outputs[0]
    assert g.producer(ya) is a and g.consumers(ya) == [b, c]
    c.inputs[1] = ya  # item assignment
    assert g.consumers(yb) == [] and g.consumers(ya) == [b, c]
    c.inputs = [x, yb]  # whole-list assignment
    assert g.consumers(x) == [a, c] and g.consumers(ya) == [b]
    c.inputs.append(ya)
    del c.inputs[2]
    assert g.consumers(ya) == [b]
    g.nodes.remove(b)  # a node out of the graph is no consumer, though it still names the tensor
    assert g.consumers(ya) == [] and g.producer(yb) is None
    g.nodes.insert(1, b)
    assert g.consumers(ya) == [b] and g.producer(yb) is b
    temp = Node("relu", "temp", [ya], [Tensor("t")])  # never added: not a consumer
    assert g.consumers(ya) == [b] and temp.inputs[0] is ya


def test_erase_refuses_a_node_still_read():
    g, x, a, b, c = _chain()
    with pytest.raises(ValueError, match="still read"):
        g.erase(a)
    with pytest.raises(ValueError, match="still read"):
        g.erase(c)  # a graph output
    g.replace_all_uses(b.outputs[0], a.outputs[0])
    g.erase(b)
    assert [n.name for n in g.nodes] == ["a", "c"] and c.inputs[1] is a.outputs[0]
    g.verify()


def test_replace_node_by_several_and_insert():
    g, x, a, b, c = _chain()
    y = Tensor("b_min")
    first = Node("maximum", "b_max", [a.outputs[0], g.constant("zero", np.zeros((1,), np.float32))], [Tensor("m")])
    second = Node("minimum", "b_min", [first.outputs[0], g.constant("six", np.full((1,), 6, np.float32))], [y])
    g.replace_node(b, [first, second], outputs=[y])
    g.infer_shapes()
    g.verify()
    assert [n.name for n in g.nodes] == ["a", "b_max", "b_min", "c"] and g.consumers(y) == [c]
    ident = Node("identity", "id", [x], [Tensor("xi")])
    g.insert_before(a, ident)
    assert g.nodes[0] is ident and g.position(a) == 1
    last = Node("identity", "id2", [c.outputs[0]], [Tensor("out2")])
    g.insert_after(c, last)
    assert g.nodes[-1] is last


def test_unique_names_never_repeat_a_claimed_name():
    g, *_ = _chain()
    names = {g.unique_name("a") for _ in range(100)}
    assert len(names) == 100 and "a" not in names


def test_pattern_requires_the_producer_to_be_read_once():
    g, x, a, b, c = _chain()
    relu_into_relu6 = Pat("relu6", Pat("relu", name="p"), name="act")
    assert list(matches(g, relu_into_relu6)) == []  # a's output is also read by c
    c.inputs[0] = x
    found = list(matches(g, relu_into_relu6))
    assert found == [{"act": b, "p": a}]
    assert list(matches(g, Pat("relu6", Pat("relu", shared=True), name="act"))) != []


class Residual(nn.Module):
    """stem -> (conv -> relu -> conv) + stem, then a depthwise, a concat with a second branch, a flatten into FC."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.c1 = nn.Conv2d(8, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.dw = nn.Conv2d(8, 16, 3, padding=1, groups=8)
        self.side = nn.Conv2d(8, 4, 1)
        self.pw = nn.Conv2d(20, 6, 1)
        self.fc = nn.Linear(6 * 4 * 4, 5)

    def forward(self, x):
        s = torch.relu(self.stem(x))
        r = torch.relu(self.c2(torch.relu(self.c1(s))) + s)
        d = torch.relu(self.dw(r))
        cat = torch.cat([d, torch.relu(self.side(r))], dim=1)
        p = nn.functional.max_pool2d(torch.relu(self.pw(cat)), 2)
        return self.fc(torch.flatten(p, 1))


@pytest.fixture(scope="module", params=[[], ["to_nhwc"]], ids=["NCHW", "NHWC"])
def residual(request):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8)
    graph = from_module(Residual().eval(), (x,))
    graph, _ = run_pipeline(graph, ["fold_batchnorm", "fuse_activations"] + request.param)
    feed = x.numpy() if not request.param else x.numpy().transpose(0, 2, 3, 1).copy()
    return graph, {graph.inputs[0].name: feed}


def _silence(graph, t, keep):
    """Zero the weights and biases that write the channels `keep` drops, in every producer of t's dependency group,
    so that removing those channels must leave the graph's function exactly as it is."""
    for u, kept in dependency_group(graph, t, keep):
        p = graph.producer(u)
        if p is not None and p.op in ("conv2d", "depthwise_conv2d", "fully_connected"):
            w, axis = p.inputs[1].data.copy(), weight_axes(p)[0]
            drop = np.setdiff1d(np.arange(w.shape[axis]), kept)
            np.moveaxis(w, axis, 0)[drop] = 0
            p.inputs[1] = Tensor(p.inputs[1].name, data=w)
            bias = p.inputs[2].data.copy()
            bias[drop] = 0
            p.inputs[2] = Tensor(p.inputs[2].name, data=bias)


@pytest.mark.parametrize("where", ["stem", "c1", "side", "pw"])
def test_remove_channels_keeps_the_function_of_silenced_channels(residual, where):
    graph, feed = residual
    graph = graph.copy()
    t = graph.node(where).outputs[0]
    channels = t.shape[channel_axis(t)]
    keep = np.setdiff1d(np.arange(channels), np.arange(0, channels, 3))
    _silence(graph, t, keep)
    before = run(graph, feed)
    sliced = remove_channels(graph, t, keep)
    assert sliced >= 2 and t.shape[channel_axis(t)] == len(keep)
    after = run(graph, feed)
    for name, y in before.items():
        np.testing.assert_allclose(after[name], y, rtol=1e-5, atol=1e-5 * np.abs(y).max())


def test_residual_add_ties_both_branches(residual):
    graph, _ = residual
    group = {t.name for t, _ in dependency_group(graph, graph.node("stem").outputs[0])}
    assert graph.node("c2").outputs[0].name in group  # the add joins c2's output to the stem's
    assert graph.node("c1").outputs[0].name not in group  # c1's channels are its own


def test_refusals_leave_the_graph_unchanged(residual):
    graph, _ = residual
    graph = graph.copy()
    before = [(n.name, [t.shape for t in n.inputs if t is not None]) for n in graph.nodes]
    with pytest.raises(ChannelError, match="graph output"):
        remove_channels(graph, graph.outputs[0], [0, 1])
    with pytest.raises(ChannelError, match="depthwise"):
        remove_channels(graph, graph.node("dw").outputs[0], [0, 2, 4])  # half a group of the multiplier 2
    assert [(n.name, [t.shape for t in n.inputs if t is not None]) for n in graph.nodes] == before
