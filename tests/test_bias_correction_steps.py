"""Bias correction's per-chunk tap sums (_tap_sums) against brute-force counts, and the chunk sizes that bias
correction and the guard share out (calibrate.even_chunks, in_sized_chunks)."""

import numpy as np
import pytest

from mcc.ir import Node
from mcc.ir.tensor import QuantParams, Tensor
from mcc.passes.bias_correction import _row_window_sums, _tap_sums


def _conv(rng, nhwc: bool, depthwise: bool) -> Node:
    """A conv node of random geometry (kernel, stride, dilation, asymmetric padding) on an int8 input."""
    c, h, w = int(rng.integers(1, 5)), int(rng.integers(1, 9)), int(rng.integers(1, 9))
    (kh, kw), (sh, sw), (dh, dw) = rng.integers(1, 4, 2), rng.integers(1, 4, 2), rng.integers(1, 3, 2)
    pad = [int(p) for p in rng.integers(0, 3, 4)]
    out_h = (h + pad[0] + pad[2] - dh * (kh - 1) - 1) // sh + 1
    out_w = (w + pad[1] + pad[3] - dw * (kw - 1) - 1) // sw + 1
    if out_h < 1 or out_w < 1:
        return _conv(rng, nhwc, depthwise)
    o = c if depthwise else 3
    x = Tensor("x", (2, h, w, c) if nhwc else (2, c, h, w), "int8", "NHWC" if nhwc else "NCHW",
               QuantParams(np.array([0.1], np.float32), np.array([3])))
    wshape = ((1, kh, kw, o) if depthwise else (o, kh, kw, c)) if nhwc else \
        ((o, 1, kh, kw) if depthwise else (o, c, kh, kw))
    weight = Tensor("w", wshape, "int8", data=np.ones(wshape, np.int8))
    y = Tensor("y", (2, out_h, out_w, o) if nhwc else (2, o, out_h, out_w), "int8", x.layout)
    attrs = {"stride": [int(sh), int(sw)], "dilation": [int(dh), int(dw)], "padding": pad}
    if depthwise:
        attrs["multiplier"] = 1
    return Node("depthwise_conv2d" if depthwise else "conv2d", "conv", [x, weight], [y], attrs)


def _brute_taps(node: Node, v: np.ndarray) -> np.ndarray:
    """Per tap, the int64 sum of the input values it reads at every output position and sample."""
    nhwc = node.inputs[0].layout == "NHWC"
    v = (v if nhwc else np.moveaxis(v, 1, 3)).astype(np.int64)
    (sh, sw), (dh, dw), (top, left, _, _) = node.attrs["stride"], node.attrs["dilation"], node.attrs["padding"]
    y = node.outputs[0]
    out_h, out_w = y.shape[1:3] if nhwc else y.shape[2:4]
    kh, kw = node.inputs[1].shape[1:3] if nhwc else node.inputs[1].shape[2:4]
    taps = np.zeros((kh, kw, v.shape[3]), np.int64)
    for i in range(kh):
        for j in range(kw):
            for oy in range(out_h):
                for ox in range(out_w):
                    r, c = i * dh - top + sh * oy, j * dw - left + sw * ox
                    if 0 <= r < v.shape[1] and 0 <= c < v.shape[2]:
                        taps[i, j] += v[:, r, c].sum(axis=0)
    return taps


@pytest.mark.parametrize("nhwc", [True, False])
def test_tap_sums_count_every_tap_position(nhwc):
    rng = np.random.default_rng(5)
    for trial in range(60):
        node = _conv(rng, nhwc, depthwise=bool(trial % 2))
        for dtype in (np.int8, np.int16):
            info = np.iinfo(dtype)
            v = rng.integers(info.min, info.max + 1, (int(rng.integers(1, 5)), *node.inputs[0].shape[1:])).astype(dtype)
            got = _tap_sums(node, v)
            assert got.dtype == np.int64
            assert np.array_equal(got, _brute_taps(node, v)), (node.attrs, node.inputs[0].shape)


def test_row_window_sums_of_many_16_bit_samples_do_not_wrap():
    """int32 partial sums over 2^15 samples at a time: 70,000 samples of 32767 exceed int32's range."""
    x = np.full((70_000, 1, 3, 2), np.iinfo(np.int16).max, np.int16)
    x[:, 0, 1] = np.iinfo(np.int16).min
    got = _row_window_sums(x, np.array([0, 1]), np.array([3, 2]), 1)
    want = np.stack([x[:, 0, 0:3].astype(np.int64).sum(axis=(0, 1)), x[:, 0, 1:2].astype(np.int64).sum(axis=(0, 1))])
    assert np.array_equal(got[:, 0], want)


def test_even_chunks_cover_the_batches_in_sizes_the_workers_share():
    """calibrate.even_chunks: every batch once; whole units but a last partial one; sizes within one unit of each
    other, the larger first; as many chunks as the workers share evenly, where there are enough units."""
    from mcc.passes.calibrate import even_chunks

    assert even_chunks(10, 6, 2) == [5, 5]
    assert even_chunks(125, 6, 2) == [6] * 15 + [5] * 7
    rng = np.random.default_rng(7)
    for _ in range(3000):
        unit = int(rng.integers(1, 4))
        most, workers, batches = unit * int(rng.integers(1, 9)), int(rng.integers(1, 5)), int(rng.integers(1, 200))
        sizes = even_chunks(batches, most, workers, unit)
        assert sum(sizes) == batches and all(0 < s <= most for s in sizes), (batches, most, workers, unit, sizes)
        assert all(s % unit == 0 for s in sizes[:-1]) and sizes == sorted(sizes, reverse=True)
        assert max(sizes) - min(sizes[:-1] or sizes) <= unit
        units = -(-batches // unit)
        assert len(sizes) % workers == 0 or len(sizes) == units  # else: one unit a chunk
        assert len(sizes) < -(-units // (most // unit)) + workers  # no more chunks than that takes


def test_sized_chunks_run_every_batch_once_in_order():
    from mcc.ir import Graph
    from mcc.passes.calibrate import in_sized_chunks

    g = Graph("g")
    x = g.add_input("x", (1, 3), "float32")
    g.outputs = [g.add_node("relu", [x]).outputs[0]]
    batches = [{"x": np.full((1, 3), i, np.float32)} for i in range(11)]
    runs = list(in_sized_chunks(g, batches, [4, 4, 3]))
    assert [k for _, _, k in runs] == [4, 4, 3]
    assert np.array_equal(np.concatenate([f["x"] for _, f, _ in runs])[:, 0], np.arange(11))
    assert all(chunk.inputs[0].shape == (k, 3) for chunk, _, k in runs)
