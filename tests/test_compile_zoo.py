"""Every zoo model, from .pt2 and from TorchScript, compiled by `mcc compile` and run in LiteRT and mcc's runtime."""

import numpy as np
import pytest
import torch
from tflite_ops import operator_names

from mcc.cli import main
from mcc.examples.zoo import ZOO
from mcc.formats.tflite.reader import read_tflite
from mcc.runtime import run
from mcc.runtime.litert import run_litert


def _export(name, tmp_path):
    model, example = ZOO[name]()
    pt2 = tmp_path / f"{name}.pt2"
    torch.export.save(torch.export.export(model, (example,)), pt2)
    ts = tmp_path / f"{name}.pt"
    torch.jit.save(torch.jit.trace(model, (example,)), ts)
    return model, example, pt2, ts


def _nhwc(x):
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if x.ndim == 4 else x


@pytest.fixture(scope="module", params=sorted(ZOO))
def compiled(request, tmp_path_factory):
    name = request.param
    tmp = tmp_path_factory.mktemp(name)
    model, example, pt2, ts = _export(name, tmp)
    out = {}
    for kind, src, extra in [("pt2", pt2, []), ("ts", ts, ["--input-shape", ",".join(map(str, example.shape))])]:
        dst = tmp / f"{name}.{kind}.tflite"
        assert main(["compile", str(src), "--target", "arm-fp32", "-o", str(dst), "-q", *extra]) == 0
        out[kind] = dst.read_bytes()
    rng = np.random.default_rng(0)
    x = rng.standard_normal(tuple(example.shape)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    return name, out, x, expected, pt2, tmp


def test_litert_matches_torch(compiled):
    name, files, x, expected, _, _ = compiled
    span = float(expected.max() - expected.min())
    for kind, data in files.items():
        for kernels in ("ref", "default"):
            got = next(iter(run_litert(data, {"x": _nhwc(x)}, kernels).values()))
            err = float(np.abs(got.reshape(expected.shape) - expected).max())
            assert err <= 1e-4 * span, f"{name} from {kind}, LiteRT {kernels}: max abs error {err} > 1e-4 * {span}"


def test_mcc_runtime_matches_litert(compiled):
    name, files, x, _, _, _ = compiled
    for kind, data in files.items():
        graph = read_tflite(data)
        ours = run(graph, {graph.inputs[0].name: _nhwc(x)})
        theirs = run_litert(data, {graph.inputs[0].name: _nhwc(x)}, "ref")
        for k, v in theirs.items():
            span = float(v.max() - v.min()) or 1.0
            err = float(np.abs(ours[k] - v).max())
            assert err <= 1e-5 * span, f"{name} from {kind}: mcc runtime vs LiteRT {k}: {err} > 1e-5 * {span}"


def test_no_stray_transposes(compiled):
    name, files, *_ = compiled
    for kind, data in files.items():
        ops = operator_names(data)
        assert "TRANSPOSE" not in ops, f"{name} from {kind} has TRANSPOSE: {ops}"
        assert "CONV_2D" in ops


def test_compile_is_byte_identical(compiled):
    name, files, _, _, pt2, tmp = compiled
    again = tmp / "again.tflite"
    assert main(["compile", str(pt2), "--target", "arm-fp32", "-o", str(again), "-q"]) == 0
    assert again.read_bytes() == files["pt2"]
