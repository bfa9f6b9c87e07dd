"""Bias correction: its quantized means (bias_correction._tap_sums and _tap_means: the integer input summed over
samples and over each kernel tap's rows and columns) against a tap-by-tap, position-by-position count, and its
stepping on workers (_Stepper.run): the same corrections on any number of them, and a failing kernel's own error."""

import numpy as np
import pytest

from mcc.compiler import lower
from mcc.examples.zoo import ZOO
from mcc.frontend.torch_export import from_module
from mcc.passes import run_pipeline
from mcc.passes.bias_correction import _tap_means, _tap_sums, _window
from mcc.runtime.kernels.int8_reduce import int64_sum


def test_a_window_is_the_taps_rows_in_range():
    rng = np.random.default_rng(0)
    for _ in range(2000):
        start, stride, n, size = int(rng.integers(-6, 6)), int(rng.integers(1, 4)), int(rng.integers(1, 9)), \
            int(rng.integers(1, 12))
        want = [r for r in start + stride * np.arange(n) if 0 <= r < size]
        assert list(range(size)[_window(start, stride, n, size)]) == want, (start, stride, n, size)


@pytest.mark.parametrize("dtype", [np.int8, np.int16])
def test_sample_sums_are_numpy_s_int64_sums(dtype):
    rng = np.random.default_rng(1)
    info = np.iinfo(dtype)
    chunks = [rng.integers(info.min, info.max + 1, (k, 5, 6, 7)).astype(dtype) for k in (3, 1, 4)]
    total = sum(int64_sum(c, (0,), keepdims=False) for c in chunks)  # chunk by chunk, as bias correction's jobs
    assert total.dtype == np.int64
    assert np.array_equal(total, np.concatenate(chunks).sum(axis=0, dtype=np.int64))


def _brute_window_means(node, values, x):
    """Per tap, per output position: the input value it reads, or nothing where it reads padding."""
    nhwc = x.layout == "NHWC"
    v = np.concatenate([c if nhwc else np.moveaxis(c, 1, 3) for c in values]).astype(np.int64)
    (sh, sw), (dh, dw), (top, left, _, _) = node.attrs["stride"], node.attrs["dilation"], node.attrs["padding"]
    y = node.outputs[0]
    out_h, out_w = y.shape[1:3] if nhwc else y.shape[2:4]
    kh, kw = node.inputs[1].shape[1:3] if nhwc else node.inputs[1].shape[2:4]
    zp, scale = float(x.quant.zero_point[0]), float(x.quant.scale[0])
    out = np.zeros((kh, kw, v.shape[3]))
    for i in range(kh):
        for j in range(kw):
            total, n = np.zeros(v.shape[3], np.int64), 0
            for oy in range(out_h):
                for ox in range(out_w):
                    r, c = i * dh - top + sh * oy, j * dw - left + sw * ox
                    if 0 <= r < v.shape[1] and 0 <= c < v.shape[2]:
                        total += v[:, r, c].sum(axis=0)
                        n += len(v)
            out[i, j] = (total - zp * n) * scale / (len(v) * out_h * out_w)
    return out


def test_window_means_count_every_tap_position():
    model, example = ZOO["mobilenet_v2_style"]()
    graph = lower(from_module(model, (example,)), "arm-fp32")[0]
    calib = np.random.default_rng(2).standard_normal((4, *example.shape[1:])).astype(np.float32)
    q, _ = run_pipeline(graph, ["quantize_int8"], {"calibration": {graph.inputs[0].name: calib},
                                                    "bias_correction": False})
    rng = np.random.default_rng(3)
    convs = [n for n in q.nodes if n.op in ("conv2d", "depthwise_conv2d") and n.inputs[0].dtype == "int8"]
    strided = [n for n in convs if max(n.attrs["stride"]) > 1 or max(n.attrs["padding"]) > 0]
    assert len(convs) > 10 and strided
    for node in convs:
        x = node.inputs[0]
        values = [rng.integers(-128, 128, (k, *x.shape[1:])).astype(np.int8) for k in (2, 3)]
        taps = sum(_tap_sums(node, v) for v in values)  # chunk by chunk, as bias correction's workers sum them
        got = _tap_means(node, taps, sum(len(v) for v in values))
        assert np.allclose(got, _brute_window_means(node, values, x), rtol=1e-12, atol=0), node.name


def _uncorrected(samples: int, seed: int):
    """(float graph, its int8 graph without bias correction, the calibration batches, their LinearMeans) of the
    zoo's mobilenet_v2_style on `samples` random samples."""
    from mcc.passes.calibrate import LinearMeans, calibration_batches, float_run

    model, example = ZOO["mobilenet_v2_style"]()
    graph = lower(from_module(model, (example,)), "arm-fp32")[0]
    arrays = {graph.inputs[0].name: np.random.default_rng(seed).standard_normal((samples, *example.shape[1:]))
              .astype(np.float32)}
    q, _ = run_pipeline(graph, ["quantize_int8"], {"calibration": arrays, "bias_correction": False})
    batches = calibration_batches(graph, arrays)
    means = LinearMeans(graph, len(batches))
    float_run(graph, batches, means=means)
    return graph, q, batches, means


def test_corrections_do_not_depend_on_the_worker_count(monkeypatch):
    """Chunks of samples stepped side by side on two workers (chunked otherwise, to keep both busy) give every
    corrected bias and output the bits of one worker's chunk after chunk."""
    from mcc.passes import calibrate
    from mcc.passes.bias_correction import correct_biases

    graph, q, batches, means = _uncorrected(12, 4)
    monkeypatch.setattr(calibrate, "CHUNK_BYTES", 4 * sum(t.nbytes for t in calibrate.activations(q, True)))
    assert calibrate.chunk_batches(q) == 4  # three chunks of 4 samples on one worker, four of 3 on two
    biases, outputs = {}, {}
    for workers in (1, 2):
        corrected, outputs[workers] = q.copy(), []
        assert correct_biases(graph, corrected, batches, means.means(), outputs=outputs[workers], workers=workers) > 10
        biases[workers] = {n.name: n.inputs[2].data for n in corrected.nodes if n.op in ("conv2d", "fully_connected",
                                                                                         "depthwise_conv2d")}
    before = {n.name: n.inputs[2].data for n in q.nodes if n.name in biases[1]}
    assert any(not np.array_equal(biases[1][name], b) for name, b in before.items())
    assert biases[1].keys() == biases[2].keys()
    for name, b in biases[1].items():
        assert b.dtype == biases[2][name].dtype and np.array_equal(b, biases[2][name]), name
    assert len(outputs[1]) == len(outputs[2]) == len(batches)
    for a, b in zip(outputs[1], outputs[2]):
        assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("workers", [1, 2])
def test_a_failing_layer_stops_every_worker_with_its_error(monkeypatch, workers):
    """A kernel that raises on one worker stops the others at their barrier (no deadlock) and its own error, not
    the broken barrier, reaches the caller."""
    from mcc.passes import bias_correction
    from mcc.passes.bias_correction import correct_biases

    graph, q, batches, means = _uncorrected(4, 6)
    victim = [n for n in q.nodes if n.op == "depthwise_conv2d"][3].name
    evaluate, calls = bias_correction.evaluate_node, []

    def failing(node, values, rules=None):
        calls.append(node.name)
        if node.name == victim and calls.count(victim) == 2:  # the second chunk's, on whichever worker
            raise RuntimeError(f"kernel failed on {node.name}")
        return evaluate(node, values, rules)

    monkeypatch.setattr(bias_correction, "evaluate_node", failing)
    monkeypatch.setattr(bias_correction, "chunk_batches", lambda g: 1)  # 4 chunks: 2 a worker
    with pytest.raises(RuntimeError, match=f"kernel failed on {victim}"):
        correct_biases(graph, q.copy(), batches, means.means(), workers=workers)
