"""Bias correction's float means (calibrate.LinearMeans): the compiled pass that takes each weighted layer's mean
per channel and applies its fused activation in place gives the bits of numpy's float64 mean and of
fused_activation, on every layout LinearMeans.see can be handed."""

import numba
import numpy as np
import pytest

from mcc.compiler import lower
from mcc.examples.zoo import ZOO
from mcc.frontend.torch_export import from_module
from mcc.ir.traits import weighted
from mcc.passes.calibrate import LinearMeans, batch_channel_means
from mcc.runtime.kernels.activations import fused_activation


@pytest.fixture(scope="module")
def graph():
    model, example = ZOO["mobilenet_v2_style"]()
    return lower(from_module(model, (example,)), "arm-fp32")[0]


def _awkward(rng, shape):
    """Values over 35 orders of magnitude (float64 sums that round), many -0.0 and 0.0, and in the last sample one
    NaN, +inf and -inf each."""
    x = (rng.standard_normal(shape) * np.exp(rng.uniform(-40, 40, shape))).astype(np.float32)
    flat, last = x.reshape(-1), x[-1].reshape(-1)
    for value in (-0.0, 0.0):
        flat[rng.integers(0, flat.size, flat.size // 10)] = value
    last[rng.integers(0, last.size, 3)] = [np.nan, np.inf, -np.inf]
    return x


def _same_bits(got, want):
    """Equal bit for bit, but for which NaN a sum of infinities and NaNs ends with (its sign and payload follow
    the order of the operands of each addition, which no caller reads)."""
    assert got.shape == want.shape and np.array_equal(np.isnan(got), np.isnan(want))
    finite = ~np.isnan(want)
    assert np.isfinite(want).any() and np.array_equal(got[finite].view(np.int64), want[finite].view(np.int64))


@pytest.mark.parametrize("activation", [None, "relu", "relu6", "relu_n1_to_1"])
@pytest.mark.parametrize("shape, batch, first, batches", [
    ((3, 9, 7, 40), 1, 0, 2),      # means of the first 2 of 3 samples, the rest only clamped
    ((4, 5, 5, 24), 2, 0, 8),      # batch 2: means per model batch of 2 samples
    ((2, 6, 6, 17), 1, 5, 5),      # past the means' batches: clamp only
    ((2, 4, 4, 1), 1, 0, 1),       # one channel: numpy's pairwise mean
    ((5, 33), 1, 1, 3),            # a fully-connected output
    ((3, 64, 64, 33), 1, 1, 2),    # large enough to be shared among threads
])
def test_means_and_activation_are_those_of_numpy(graph, activation, shape, batch, first, batches):
    rng = np.random.default_rng(abs(hash((activation, shape))) % 2**32)
    node = next(n for n in graph.nodes if weighted(n.op))
    means = LinearMeans(graph, batches)
    means.batch = batch
    name = node.outputs[0].name
    means.activation[name] = activation
    value = _awkward(rng, shape)
    want = value.copy()
    take = max(0, min(len(value) // batch, batches - first))
    means.see(node.outputs[0], value, first)
    got = means.parts[name]
    if take:
        assert len(got) == 1
        _same_bits(got[0], batch_channel_means(want[:take * batch], batch))
    else:
        assert got == []
    assert np.array_equal(value.view(np.int32), fused_activation(want, activation).view(np.int32))


def test_a_strided_value_takes_numpy_s_path(graph):
    node = next(n for n in graph.nodes if weighted(n.op))
    means = LinearMeans(graph, 4)
    name = node.outputs[0].name
    means.activation[name] = "relu6"
    base = _awkward(np.random.default_rng(3), (2, 4, 4, 16))
    value = base[:, ::2]  # not contiguous: numpy's path, writing through the view
    want = value.copy()
    means.see(node.outputs[0], value, 0)
    _same_bits(means.parts[name][0], batch_channel_means(want, 1))
    assert np.array_equal(value.view(np.int32), fused_activation(want, "relu6").view(np.int32))


@pytest.mark.parametrize("threads", [1, 2])
def test_a_large_value_gives_numpy_s_bits_on_any_number_of_threads(graph, threads):
    """A value large enough for the threaded pass, whose channels are cut into a block per thread (one block, whole
    rows, on a sample worker's one thread): numpy's means and fused_activation's clamp, bit for bit."""
    node = next(n for n in graph.nodes if weighted(n.op))
    name = node.outputs[0].name
    value = _awkward(np.random.default_rng(9), (2, 96, 96, 40))
    want = value.copy()
    before = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        for activation in (None, "relu", "relu6"):
            means = LinearMeans(graph, 1)
            means.activation[name] = activation
            got = value.copy()
            means.see(node.outputs[0], got, 0)
            _same_bits(means.parts[name][0], batch_channel_means(want[:1], 1))
            assert np.array_equal(got.view(np.int32), fused_activation(want, activation).view(np.int32))
    finally:
        numba.set_num_threads(before)
