"""The canonical passes on graphs the PyTorch frontend produces from real models: structure and numerics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from mcc.examples.zoo import mobilenet_v3_small_style, resnet18_style
from mcc.frontend.torch_export import from_module
from mcc.passes import run_pipeline
from mcc.runtime import run
from test_passes_common import CANONICAL, assert_equivalent, ops


class ChannelsLast(nn.Module):
    """Takes NHWC input and permutes around a conv, a per-pixel Linear and a flatten, as ported TF models do."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.pixel, self.head = nn.Linear(8, 4), nn.Linear(4 * 4 * 4, 5)

    def forward(self, x):
        y = torch.relu(self.bn(self.conv(x.permute(0, 3, 1, 2))))
        t = self.pixel(y.permute(0, 2, 3, 1))
        return self.head(torch.flatten(t.permute(0, 3, 1, 2) + 1.0, 1)), t


def channels_last():
    torch.manual_seed(0)
    return ChannelsLast().eval(), torch.randn(2, 4, 4, 3)


@pytest.mark.parametrize("build", [resnet18_style, mobilenet_v3_small_style, channels_last])
def test_canonical_pipeline_on_torch_models(build):
    model, x = build()
    g = from_module(model, (x,))
    out, records = run_pipeline(g, CANONICAL)
    kinds = ops(out)
    assert "transpose" not in kinds and "batch_norm" not in kinds
    assert records[0].notes.get("folded", 0) == sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    io = records[2].notes["io_layout"]
    assert_equivalent(g, out, io)
    with torch.no_grad():
        want = model(x)
    want = want if isinstance(want, tuple) else (want,)
    feed = x.numpy().transpose(io["inputs"].get(g.inputs[0].name, range(x.dim())))
    got = run(out, {out.inputs[0].name: np.ascontiguousarray(feed)})
    for t, ref in zip(out.outputs, want):
        ref = ref.numpy().transpose(io["outputs"].get(t.name, range(ref.dim())))
        assert np.abs(got[t.name] - ref).max() <= 1e-5 * np.ptp(ref)


def test_channels_last_model_keeps_its_io_and_loses_all_three_permutes():
    model, x = channels_last()
    out, records = run_pipeline(from_module(model, (x,)), CANONICAL)
    notes = records[2].notes
    assert notes["source_transposes_removed"] == 3 and notes["fc_weights_permuted"] == 1
    assert notes["io_layout"] == {"inputs": {}, "outputs": {}} and out.inputs[0].shape == (2, 4, 4, 3)
