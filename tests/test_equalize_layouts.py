"""cross_layer_equalization reads channel axes from the op traits, so it keeps the model's function in NCHW (the
source layout) as in NHWC (after to_nhwc); it used to assume NHWC and changed an NCHW model's output."""

import numpy as np
import pytest
import torch
from torch import nn

from mcc.frontend.torch_export import from_module
from mcc.passes import run_pipeline
from mcc.runtime import run


class Chain(nn.Module):
    """3 channels into a 3x3 conv (the case that miscompiled), a pool and padding between layers, a depthwise
    conv as the B side of a pair, and a linear pair."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 3, 3, padding=1)
        self.b = nn.Conv2d(3, 6, 3, padding=1)
        self.dw = nn.Conv2d(6, 12, 3, padding=1, groups=6)
        self.c = nn.Conv2d(12, 5, 1)
        self.fc1 = nn.Linear(5, 7)
        self.fc2 = nn.Linear(7, 4)

    def forward(self, x):
        x = torch.relu(self.a(x))
        x = nn.functional.max_pool2d(torch.relu(self.b(x)), 2)
        x = torch.relu(self.c(torch.relu(self.dw(x))))
        x = x.mean(dim=(2, 3))
        return self.fc2(torch.relu(self.fc1(x)))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = Chain().eval()
    with torch.no_grad():  # channel ranges far apart, so equalization has work to do
        for layer in (m.a, m.b, m.dw, m.fc1):
            layer.weight.mul_(torch.logspace(-2, 1, layer.weight.shape[0]).reshape(-1, *[1] * (layer.weight.dim() - 1)))
    return m


@pytest.mark.parametrize("layout_passes", [[], ["to_nhwc"]], ids=["NCHW", "NHWC"])
def test_equalization_keeps_the_function(model, layout_passes):
    x = np.random.default_rng(1).normal(size=(2, 3, 8, 8)).astype(np.float32)
    graph = from_module(model, (torch.from_numpy(x),))
    graph, _ = run_pipeline(graph, ["fold_batchnorm", "fuse_activations"] + layout_passes)
    feed = {graph.inputs[0].name: x if not layout_passes else x.transpose(0, 2, 3, 1).copy()}
    before = run(graph, feed)
    equalized, records = run_pipeline(graph, ["cross_layer_equalization"], {"cle": True})
    notes = records[0].notes["cle"]
    assert notes["pairs"] >= 4
    assert notes["mean_channel_range_spread_after"] < notes["mean_channel_range_spread_before"] / 2
    after = run(equalized, feed)
    for name, y in before.items():
        np.testing.assert_allclose(after[name], y, rtol=1e-4, atol=1e-4 * np.abs(y).max())
    changed = [n for n, m in zip(graph.nodes, equalized.nodes) if n.op in ("conv2d", "depthwise_conv2d")
               and not np.array_equal(n.inputs[1].data, m.inputs[1].data)]
    assert len(changed) >= 3
