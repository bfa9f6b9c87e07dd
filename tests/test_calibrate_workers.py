"""The calibration float run on worker threads (calibrate.float_run, runtime.threads.in_order): ranges, bias
correction's means and the float outputs are those of one chunk after another, whatever the number of workers."""

import numpy as np
import pytest

from mcc.compiler import lower
from mcc.examples.zoo import ZOO
from mcc.frontend.torch_export import from_module
from mcc.passes.calibrate import CHUNK_SAMPLES, LinearMeans, float_run, observe_ranges
from mcc.progress import Progress


@pytest.fixture(scope="module")
def graph():
    model, example = ZOO["mobilenet_v2_style"]()
    return lower(from_module(model, (example,)), "arm-fp32")[0]


class _Said(Progress):
    def __init__(self):
        super().__init__(False)
        self.lines = []

    def say(self, text):
        self.lines.append(text)


def _calibrate(graph, batches, spec, workers):
    outputs, means, progress = [], LinearMeans(graph, len(batches) - 3), _Said()
    ranges = observe_ranges(graph, batches, spec, progress, outputs=outputs, means=means, workers=workers)
    return ranges, means.means(), outputs, progress.lines


@pytest.mark.parametrize("spec", ["percentile", "mse", "minmax"])
@pytest.mark.parametrize("nan_first", [False, True])
def test_ranges_means_and_outputs_do_not_depend_on_the_workers(graph, spec, nan_first):
    """Five chunks of samples whose scale grows (later chunks widen the histograms' bins as they merge); with
    `nan_first`, nothing finite in the first chunk, so no histogram has its bin width when the others are handed
    out and their values are observed in order from copies."""
    rng = np.random.default_rng(5)
    n = 4 * CHUNK_SAMPLES + 9
    x = rng.standard_normal((n, *graph.inputs[0].shape[1:])).astype(np.float32)
    x *= np.geomspace(0.01, 300.0, n, dtype=np.float32)[:, None, None, None]
    if nan_first:
        x[:CHUNK_SAMPLES] = np.nan
    batches = [{graph.inputs[0].name: x[i:i + 1]} for i in range(n)]
    ranges, means, outputs, said = _calibrate(graph, batches, spec, 1)
    assert said[-1] == f"calibrating {n}/{n}" and len(said) == 5 and len(outputs) == n
    for workers in (2, 3):
        ranges_w, means_w, outputs_w, said_w = _calibrate(graph, batches, spec, workers)
        assert ranges_w == ranges and said_w == said
        assert means_w.keys() == means.keys() and all(np.array_equal(means_w[k], means[k], equal_nan=True)
                                                      for k in means)
        assert len(outputs_w) == n and all(
            np.array_equal(a, b, equal_nan=True) for o, o_w in zip(outputs, outputs_w) for a, b in zip(o, o_w))
    assert len(set(ranges.values())) > len(ranges) // 3  # the ranges differ from layer to layer
    finite = [r for r in ranges.values() if r != (0.0, 0.0)]
    assert len(finite) == len(ranges)
    if nan_first:
        assert np.isnan(outputs[0][0]).all() and np.isfinite(outputs[-1][0]).all()


@pytest.mark.parametrize("workers", [1, 2])
def test_batches_past_the_means_run_the_graph_as_it_is(graph, workers):
    """Means over the first 3 batches of 3 chunks: the first chunk runs without the activations (means of 3 batches,
    the rest clamped by LinearMeans.see), the other two on the graph itself (float_run), with the ranges and outputs
    of a run that takes no means, and the means of a run over the 3 batches alone."""
    rng = np.random.default_rng(6)
    n = 2 * CHUNK_SAMPLES + 5
    x = rng.standard_normal((n, *graph.inputs[0].shape[1:])).astype(np.float32)
    x *= np.geomspace(0.1, 30.0, n, dtype=np.float32)[:, None, None, None]
    batches = [{graph.inputs[0].name: x[i:i + 1]} for i in range(n)]
    plain = []
    plain_ranges = observe_ranges(graph, batches, "mse", outputs=plain, workers=workers)
    taken, means = [], LinearMeans(graph, 3)
    ranges = observe_ranges(graph, batches, "mse", outputs=taken, means=means, workers=workers)
    head = LinearMeans(graph, 3)
    float_run(graph, batches[:3], means=head, workers=workers)
    assert ranges == plain_ranges and len(taken) == len(plain) == n
    assert all(np.array_equal(a, b) for t, p in zip(taken, plain) for a, b in zip(t, p))
    assert means.means().keys() == head.means().keys() and len(head.means()) > 5
    assert all(np.array_equal(means.means()[k], head.means()[k]) for k in head.means())
    assert all(len(p) == 1 for p in means.parts.values())  # the one chunk that holds the 3 batches
