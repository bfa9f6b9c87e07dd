"""runtime/plan.py: plans made once and redone when the graph changes, values dropped after their last reader,
graphs re-batched so that one run gives each sample the bits a run of its own gives it, and refused where an op
would mix samples; calibrate.in_chunks falling back to one batch per run with a reason."""

import gc
import io
import weakref

import numpy as np
import pytest

from mcc.compiler import lower
from mcc.errors import MccError
from mcc.examples.zoo import ZOO
from mcc.frontend.torch_export import from_module
from mcc.ir import Graph
from mcc.passes import run_pipeline
from mcc.passes.calibrate import graph_feeds, in_chunks
from mcc.progress import Progress
from mcc.runtime import run
from mcc.runtime.plan import plan_for, rebatch


def _chain(length: int, batch: int = 1) -> Graph:
    g = Graph("chain")
    t = g.add_input("x", (batch, 4, 4, 3), layout="NHWC")
    for i in range(length):
        t = g.add_node("relu" if i % 2 else "tanh", [t], name=f"n{i}").outputs[0]
    g.outputs = [t]
    g.infer_shapes()
    return g


def _every_sample_alone(graph: Graph, x: np.ndarray, rules: str) -> list[dict]:
    name = graph.inputs[0].name
    return [run(graph, graph_feeds(graph, {name: x[i:i + 1]}, rules), keep_all=True, rules=rules)
            for i in range(len(x))]


@pytest.mark.parametrize("name", ["mobilenet_v2_style", "mobilenet_v3_small_style"])
def test_rebatched_runs_give_every_tensor_the_bits_of_per_sample_runs(name):
    model, example = ZOO[name]()
    graph, _ = lower(from_module(model, (example,)), "arm-fp32")
    x = np.random.default_rng(3).standard_normal((5, *graph.inputs[0].shape[1:])).astype(np.float32)
    int8, _ = run_pipeline(graph, ["quantize_int8"], {"calibration": {"x": x.transpose(0, 3, 1, 2)}})
    for g, rules in ((graph, "litert-ref"), (int8, "litert-ref"), (int8, "litert-xnnpack")):
        wide, reason = rebatch(g, 5)
        assert reason is None and wide.inputs[0].shape == (5, *g.inputs[0].shape[1:])
        together = run(wide, graph_feeds(wide, {"x": x}, rules), keep_all=True, rules=rules)
        checked = 0
        for i, alone in enumerate(_every_sample_alone(g, x, rules)):
            for tensor, value in alone.items():
                if g.tensor(tensor).is_constant:
                    continue
                assert np.array_equal(together[tensor][i:i + 1], value), (tensor, i)
                checked += 1
        assert checked == 5 * len([t for t in alone if not g.tensor(t).is_constant]) > 5 * 20


def test_rebatch_refuses_ops_that_mix_samples_and_in_chunks_falls_back():
    g = Graph("mix")
    x = g.add_input("x", (1, 6), layout=None)
    g.outputs = [g.add_node("softmax", [x], {"axis": 0}, name="across").outputs[0]]
    g.infer_shapes()
    copy, reason = rebatch(g, 4)
    assert copy is None and "softmax 'across' works along the batch axis" in reason
    flat = Graph("flat")
    x = flat.add_input("x", (1, 2, 3), layout=None)
    flat.outputs = [flat.add_node("reshape", [x], {"shape": [6]}, name="fold").outputs[0]]
    flat.infer_shapes()
    assert "first dimension is not the batch of 1" in rebatch(flat, 3)[1]
    batches = [{"x": np.full((1, 6), i, np.float32)} for i in range(3)]
    stream = io.StringIO()
    runs = list(in_chunks(g, batches, Progress(True, stream)))
    assert [(r[0] is g, r[2]) for r in runs] == [(True, 1)] * 3
    assert "running batch by batch: the graph cannot be re-batched (softmax 'across'" in stream.getvalue()
    chain = _chain(3)
    runs = list(in_chunks(chain, [{"x": np.zeros((1, 4, 4, 3), np.float32)}] * 3))
    assert len(runs) == 1 and runs[0][2] == 3 and runs[0][0].inputs[0].shape == (3, 4, 4, 3)


def test_values_are_dropped_after_their_last_reader():
    graph = _chain(12)
    alive, most = [], 0

    def observe(t, value):
        nonlocal most
        gc.collect()
        most = max(most, sum(r() is not None for r in alive))
        alive.append(weakref.ref(value))

    x = np.random.default_rng(0).standard_normal((1, 4, 4, 3)).astype(np.float32)
    out = run(graph, {"x": x}, observe=observe)
    assert len(alive) == 13 and most <= 2  # the input and the value being read; not all 12 so far
    assert set(out) == {graph.outputs[0].name}
    kept = run(graph, {"x": x}, keep_all=True)
    assert len(kept) == 13 and np.array_equal(kept[graph.outputs[0].name], out[graph.outputs[0].name])


def test_plan_is_cached_and_redone_when_the_graph_changes():
    graph = _chain(2)
    x = np.linspace(-3, 3, 48, dtype=np.float32).reshape(1, 4, 4, 3)
    first = run(graph, {"x": x})[graph.outputs[0].name]
    assert plan_for(graph) is plan_for(graph)
    before = plan_for(graph)
    extra = graph.add_node("relu6", [graph.outputs[0]], name="n2").outputs[0]
    graph.outputs = [extra]
    graph.infer_shapes()
    assert plan_for(graph) is not before
    assert np.array_equal(run(graph, {"x": x})[extra.name], np.clip(first, 0, 6))
    cycle = _chain(2)
    cycle.nodes[0].inputs = [cycle.nodes[1].outputs[0]]
    with pytest.raises(MccError, match="cycle or a dangling input"):
        run(cycle, {"x": x})


def test_a_graph_that_was_run_can_be_collected():
    graph = _chain(2)
    run(graph, {"x": np.zeros((1, 4, 4, 3), np.float32)})
    gone = weakref.ref(graph)
    del graph
    gc.collect()
    assert gone() is None  # the plan cache holds its graphs weakly, and a plan does not refer to its graph
