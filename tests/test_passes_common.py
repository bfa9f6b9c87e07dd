"""Helpers shared by the pass tests (graph building, equivalence through the runtime), and whole-pipeline tests."""

from __future__ import annotations

import numpy as np

from mcc.ir import Graph, Tensor
from mcc.ir.text import dumps
from mcc.passes import run_pipeline
from mcc.runtime import run


class Builder:
    """A Graph plus a seeded generator, with one-line helpers for the layers the tests compose."""

    def __init__(self, seed: int = 0, name: str = "t"):
        self.g = Graph(name)
        self.rng = np.random.default_rng(seed)

    def rand(self, *shape, positive=False) -> np.ndarray:
        a = self.rng.standard_normal(shape).astype(np.float32)
        return np.abs(a) + 0.5 if positive else a

    def input(self, name, shape, layout="NCHW") -> Tensor:
        return self.g.add_input(name, shape, layout=layout if len(shape) == 4 else None)

    def const(self, name, data) -> Tensor:
        return self.g.constant(name, np.asarray(data, np.float32))

    def op(self, op, inputs, name=None, **attrs) -> Tensor:
        return self.g.add_node(op, inputs, attrs, name=name).outputs[0]

    def conv(self, x, cout, k=3, stride=1, groups=1, bias=True, name="conv", **attrs) -> Tensor:
        cin = x.shape[1]
        w = self.const(f"{name}.weight", self.rand(cout, cin // groups, k, k) * 0.3)
        b = self.const(f"{name}.bias", self.rand(cout)) if bias else None
        return self.op("conv2d", [x, w, b] if bias else [x, w], name, stride=[stride, stride],
                       padding=[k // 2] * 4, groups=groups, **attrs)

    def dwconv(self, x, multiplier=1, k=3, stride=1, name="dw", **attrs) -> Tensor:
        cm = x.shape[1] * multiplier
        w = self.const(f"{name}.weight", self.rand(cm, 1, k, k) * 0.3)
        return self.op("depthwise_conv2d", [x, w, self.const(f"{name}.bias", self.rand(cm))], name,
                       stride=[stride, stride], padding=[k // 2] * 4, multiplier=multiplier, **attrs)

    def fc(self, x, out, name="fc", **attrs) -> Tensor:
        w = self.const(f"{name}.weight", self.rand(out, x.shape[-1]) * 0.3)
        return self.op("fully_connected", [x, w, self.const(f"{name}.bias", self.rand(out))], name, **attrs)

    def bn(self, x, name="bn") -> Tensor:
        c = x.shape[1]
        stats = [self.rand(c), self.rand(c, positive=True), self.rand(c, positive=True), self.rand(c)]
        return self.op("batch_norm", [x] + [self.const(f"{name}.{k}", v) for k, v in
                                             zip(("mean", "var", "weight", "bias"), stats)], name, eps=1e-3)

    def done(self, *outputs) -> Graph:
        self.g.outputs = list(outputs)
        self.g.infer_shapes()
        self.g.verify()
        return self.g


def ops(graph: Graph) -> list[str]:
    return [n.op for n in graph.nodes]


def _permuted(a: np.ndarray, perm) -> np.ndarray:
    return np.ascontiguousarray(a.transpose(perm)) if perm is not None else a


def assert_equivalent(before: Graph, after: Graph, io: dict | None = None) -> None:
    """Run both graphs on the same data (NCHW feeds permuted as `io` says) and compare every output:
    the max abs error must be at most 1e-5 of the output's range."""
    io = io or {"inputs": {}, "outputs": {}}
    rng = np.random.default_rng(1)
    feeds = {t.name: rng.standard_normal(t.shape).astype(np.float32) for t in before.inputs}
    want = run(before, feeds)
    got = run(after, {k: _permuted(v, io["inputs"].get(k)) for k, v in feeds.items()})
    assert list(got) == list(want), f"outputs differ in names: {list(got)} vs {list(want)}"
    for name, ref in want.items():
        ref = _permuted(ref, io["outputs"].get(name))
        assert got[name].shape == ref.shape, f"{name}: {got[name].shape} vs {ref.shape}"
        span = float(np.ptp(ref))
        assert span > 0, f"{name} is constant, so the comparison would prove nothing"
        err = float(np.abs(got[name].astype(np.float64) - ref).max()) / span
        assert err <= 1e-5, f"{name}: max abs error is {err:.3g} of the output range"


def se_resnet_block(seed=0) -> Graph:
    """conv-bn-relu, depthwise x2 + bn, squeeze-excite with FCs, residual add, concat, flatten (4x4) -> FC."""
    b = Builder(seed)
    x = b.input("x", (2, 4, 8, 8))
    h = b.op("relu", [b.bn(b.conv(x, 8, bias=False, name="c1"), name="bn1")], "r1")
    d = b.op("relu6", [b.bn(b.dwconv(h, multiplier=2, stride=2, name="dw"), name="bn2")], "r2")
    s = b.op("mean", [d], "gap", axes=[2, 3], keepdims=True)
    s = b.op("reshape", [s], "squeeze", shape=[2, 16])
    s = b.op("relu", [b.fc(s, 4, name="se1")], "se_relu")
    s = b.op("sigmoid", [b.fc(s, 16, name="se2")], "se_gate")
    s = b.op("reshape", [s], "unsqueeze", shape=[2, 16, 1, 1])
    e = b.op("mul", [d, s], "excite")
    p = b.conv(e, 16, k=1, name="proj")
    r = b.op("add", [p, e], "residual")
    r = b.op("clip", [r], "clip", min=0.0, max=6.0)
    c = b.op("concat", [r, d], "cat", axis=1)
    f = b.op("reshape", [c], "flatten", shape=[2, -1])
    return b.done(b.fc(f, 10, name="head"))


CANONICAL = ["fold_batchnorm", "fold_constants", "to_nhwc", "fuse_activations", "fold_constants", "eliminate_dead"]


def test_canonical_pipeline_gives_an_nhwc_graph_without_transposes_or_batch_norms():
    g = se_resnet_block()
    out, records = run_pipeline(g, CANONICAL)
    assert [r.name for r in records] == CANONICAL
    kinds = ops(out)
    assert "batch_norm" not in kinds and "transpose" not in kinds
    assert not {"relu", "relu6", "clip"} & set(kinds), dumps(out)
    assert all(t.layout in (None, "NHWC") for t in out.tensors())
    assert records[0].notes["folded"] == 2 and records[2].notes["fc_weights_permuted"] == 1
    assert records[3].notes["fused"] == 4
    assert records[2].notes["io_layout"] == {"inputs": {"x": [0, 2, 3, 1]}, "outputs": {}}
    assert records[-1].after["nodes"] < records[0].before["nodes"]
    assert_equivalent(g, out, records[2].notes["io_layout"])


def test_pipeline_result_survives_the_text_round_trip():
    from mcc.ir.text import loads

    out, records = run_pipeline(se_resnet_block(seed=3), CANONICAL)
    back = loads(dumps(out, inline_constants=True))
    back.infer_shapes()
    back.verify()
    assert dumps(back) == dumps(out)
    assert_equivalent(out, back)


def test_pipeline_is_deterministic():
    a, _ = run_pipeline(se_resnet_block(seed=5), CANONICAL)
    b, _ = run_pipeline(se_resnet_block(seed=5), CANONICAL)
    assert dumps(a, inline_constants=True) == dumps(b, inline_constants=True)
