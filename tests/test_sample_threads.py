"""runtime/threads.py: samples on worker threads come back in order with their own bits, and BLAS's one-thread
limit is shared by concurrent runs and lifted by the last."""

import threading

import numba
import numpy as np
import pytest
from threadpoolctl import threadpool_info

from mcc.compiler import lower
from mcc.examples.zoo import ZOO
from mcc.frontend.torch_export import from_module
from mcc.passes import run_pipeline
from mcc.passes.calibrate import graph_feeds
from mcc.runtime import run
from mcc.runtime.threads import blas_on_one_thread, in_order, sample_workers


def _blas_threads():
    """numpy's BLAS threads (the runtime's GEMMs); a BLAS loaded later by another library (scipy's, in a suite)
    is not the runtime's to limit."""
    found = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas" and "numpy" in p["filepath"]]
    assert found, threadpool_info()
    return found


def test_in_order_keeps_order_and_uses_workers():
    names = set()

    def job(i):
        names.add((threading.current_thread().name, numba.get_num_threads()))
        return i * i

    assert list(in_order(job, range(40), workers=2)) == [i * i for i in range(40)]
    assert all(name.startswith("mcc-sample") and threads == 1 for name, threads in names)
    assert list(in_order(job, range(3), workers=1)) == [0, 1, 4]


def test_in_order_raises_the_jobs_error():
    def job(i):
        if i == 5:
            raise ValueError("sample 5")
        return i

    with pytest.raises(ValueError, match="sample 5"):
        list(in_order(job, range(20), workers=2))


def test_blas_limit_lifted_by_the_last_run():
    before = _blas_threads()
    outer = blas_on_one_thread()
    outer.__enter__()
    inner = blas_on_one_thread()
    inner.__enter__()
    assert all(n == 1 for n in _blas_threads())
    outer.__exit__(None, None, None)  # out of order: the limit stays while `inner` is inside
    assert all(n == 1 for n in _blas_threads())
    inner.__exit__(None, None, None)
    assert _blas_threads() == before


def test_sample_workers_follow_numba_threads():
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        assert sample_workers() == 1
    finally:
        numba.set_num_threads(threads)
    assert sample_workers() in (1, threads)  # 1 only under the workqueue layer
    if numba.threading_layer() != "workqueue":
        assert sample_workers() == threads


def test_samples_on_workers_keep_their_bits():
    """Float and int8 (both LiteRT rule sets) MobileNetV2-style runs, a sample per job on two workers at once,
    give every output the bits of the same runs one after another in the caller's thread."""
    model, example = ZOO["mobilenet_v2_style"]()
    graph, _ = lower(from_module(model, (example,)), "arm-fp32")
    x = np.random.default_rng(5).standard_normal((12, *graph.inputs[0].shape[1:])).astype(np.float32)
    int8, _ = run_pipeline(graph, ["quantize_int8"], {"calibration": {"x": x[:4].transpose(0, 3, 1, 2)}})
    for g, rules in ((graph, None), (int8, "litert-ref"), (int8, "litert-xnnpack")):
        feeds = [graph_feeds(g, {"x": x[i:i + 1]}, rules) for i in range(len(x))]
        alone = [run(g, f, rules=rules) for f in feeds]
        together = list(in_order(lambda f: run(g, f, rules=rules), feeds, workers=2))
        for a, b in zip(alone, together, strict=True):
            assert a.keys() == b.keys()
            for name in a:
                assert np.array_equal(a[name], b[name]), (rules, name)
