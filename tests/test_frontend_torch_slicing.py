"""torch slicing, split/chunk and F.interpolate through the PyTorch frontend: exported to .pt2, lowered to the IR's
slice, split and resize, run in mcc's runtime and compiled to float TFLite that LiteRT runs like torch."""

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mcc.compiler import compile_model
from mcc.errors import MccError
from mcc.frontend import load
from mcc.runtime import run
from mcc.runtime.litert import run_litert


class Sliced(nn.Module):
    """A conv (so the slice reads a computed tensor) followed by the case's slicing or resizing."""

    def __init__(self, fn):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fn = fn

    def forward(self, x):
        return self.fn(torch.relu(self.conv(x)))


def _chunk_product(y):
    a, b = torch.chunk(y, 2, dim=3)
    return a * b


CASES = {
    "slice_h": (lambda y: y[:, :, 1:5], ["slice"]),
    "step_w": (lambda y: y[..., ::2], ["slice"]),
    "negative_bounds_and_narrow": (lambda y: y[:, -3:, :, 1:-1].narrow(2, 1, 3), ["slice", "slice", "slice"]),
    "select": (lambda y: y[:, 1] - y[:, -1], ["slice", "reshape", "slice", "reshape", "sub"]),
    "split": (lambda y: torch.split(y, [1, 3], dim=1), ["split"]),
    "chunk": (_chunk_product, ["split", "mul"]),
    "nearest_scale_factor": (lambda y: F.interpolate(y, scale_factor=2, mode="nearest"), ["resize"]),
    "nearest_size": (lambda y: F.interpolate(y, size=(9, 12), mode="nearest"), ["resize"]),
    "nearest_exact": (lambda y: F.interpolate(y, size=(12, 16), mode="nearest-exact"), ["resize"]),
    "bilinear_scale_factor": (lambda y: F.interpolate(y, scale_factor=2, mode="bilinear"), ["resize"]),
    "bilinear_down": (lambda y: F.interpolate(y, size=(3, 5), mode="bilinear"), ["resize"]),
    "bilinear_align_corners": (
        lambda y: F.interpolate(y, size=(5, 11), mode="bilinear", align_corners=True), ["resize"]),
    "bilinear_align_corners_scale_factor": (
        lambda y: F.interpolate(y, scale_factor=1.5, mode="bilinear", align_corners=True), ["resize"]),
}


def _export(fn, tmp_path, shape=(1, 3, 6, 8)):
    torch.manual_seed(0)
    model = Sliced(fn).eval()
    x = torch.randn(shape)
    src = tmp_path / "model.pt2"
    torch.export.save(torch.export.export(model, (x,)), src)
    with torch.no_grad():
        want = model(x)
    return src, x.numpy(), [t.numpy() for t in (want if isinstance(want, tuple) else (want,))]


def _close(got, want, tol):
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= tol * max(float(np.ptp(want)), 1e-6)


@pytest.mark.parametrize("case", CASES)
def test_lowered_runs_like_torch_in_runtime_and_litert(case, tmp_path):
    fn, ops = CASES[case]
    src, x, wants = _export(fn, tmp_path)
    graph = load(src)
    assert [n.op for n in graph.nodes][2:] == ops  # after the conv and its relu
    outs = run(graph, {graph.inputs[0].name: x})
    for t, want in zip(graph.outputs, wants, strict=True):
        _close(outs[t.name], want, 1e-5)

    result = compile_model(src, "arm-fp32", tmp_path / "model.tflite")
    lite = run_litert(result.data, {result.graph.inputs[0].name: x.transpose(0, 2, 3, 1).copy()})
    for t, want in zip(result.graph.outputs, wants, strict=True):
        got = lite[t.name]
        _close(got.transpose(0, 3, 1, 2) if got.ndim == 4 else got, want, 1e-4)


def test_resize_attributes_follow_torch_modes(tmp_path):
    spelled = {}
    for mode, kwargs in [("nearest", {}), ("nearest-exact", {}), ("bilinear", {"align_corners": False}),
                         ("bilinear", {"align_corners": True})]:
        src, _, _ = _export(lambda y: F.interpolate(y, size=(7, 9), mode=mode, **kwargs), tmp_path)
        (node,) = [n for n in load(src).nodes if n.op == "resize"]
        spelled[mode, *kwargs.values()] = (node.attrs["mode"], node.attrs["coordinate_transformation_mode"],
                                           node.attrs["nearest_mode"] if node.attrs["mode"] == "nearest" else None,
                                           node.attrs["size"])
    assert spelled == {
        ("nearest",): ("nearest", "asymmetric", "floor", [7, 9]),
        ("nearest-exact",): ("nearest", "half_pixel", "round_prefer_ceil", [7, 9]),
        ("bilinear", False): ("bilinear", "half_pixel", None, [7, 9]),
        ("bilinear", True): ("bilinear", "align_corners", None, [7, 9]),
    }


def test_bilinear_scale_factor_that_is_not_out_over_in_is_refused(tmp_path):
    """6 * 1.7 gives 10 rows, but torch steps by 1 / 1.7, not 6 / 10, and the IR (like TFLite) by in / out.
    (Nearest survives this when another spelling reads the same rows: see the test below.)"""
    src, _, _ = _export(lambda y: F.interpolate(y, scale_factor=1.7, mode="bilinear"), tmp_path)
    with pytest.raises(MccError) as err:
        load(src)
    msg = str(err.value)
    assert "upsample_bilinear2d" in msg and "6 rows to 10" in msg and "size=" in msg


@pytest.mark.parametrize("mode, shape, size, spelling", [
    ("nearest", (1, 3, 14, 6), (2, 3), ("asymmetric", "round_prefer_floor")),
    ("nearest-exact", (1, 3, 4, 5), (41, 7), ("half_pixel", "round_prefer_floor")),
])
def test_nearest_that_the_ir_rounds_otherwise_is_respelled(mode, shape, size, spelling, tmp_path):
    """torch reads floor(o * 14 / 2) = 7 for nearest, the IR's floor(o / (2 / 14)) would read 6: the frontend
    takes the spelling that reads torch's rows, and LiteRT then reads them too."""
    src, x, (want,) = _export(lambda y: F.interpolate(y, size=size, mode=mode), tmp_path, shape)
    graph = load(src)
    (node,) = [n for n in graph.nodes if n.op == "resize"]
    assert (node.attrs["coordinate_transformation_mode"], node.attrs["nearest_mode"]) == spelling
    _close(run(graph, {graph.inputs[0].name: x})[graph.outputs[0].name], want, 1e-5)
    result = compile_model(src, "arm-fp32", tmp_path / "model.tflite")
    lite = run_litert(result.data, {result.graph.inputs[0].name: x.transpose(0, 2, 3, 1).copy()})
    _close(lite[result.graph.outputs[0].name].transpose(0, 3, 1, 2), want, 1e-4)


def test_nearest_scale_factor_tflite_cannot_read_is_lowered_then_refused_when_compiling(tmp_path):
    """torch's nearest by 1.7 (6 -> 10 rows, stepping by 1 / 1.7) has an IR spelling that the runtime runs like
    torch, but none of TFLite's three RESIZE_NEAREST_NEIGHBOR settings reads those rows: legalize_tflite refuses
    it and names the node."""
    src, x, (want,) = _export(lambda y: F.interpolate(y, scale_factor=1.7, mode="nearest"), tmp_path)
    graph = load(src)
    _close(run(graph, {graph.inputs[0].name: x})[graph.outputs[0].name], want, 1e-5)
    with pytest.raises(MccError) as err:
        compile_model(src, "arm-fp32", tmp_path / "model.tflite")
    assert err.value.node == "upsample_nearest2d"
    assert "nearest resize of 6 rows to 10" in str(err.value) and "RESIZE_NEAREST_NEIGHBOR" in str(err.value)
