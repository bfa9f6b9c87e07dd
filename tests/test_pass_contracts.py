"""Pass contracts: typed options (unknown or mistyped ones are errors naming the pass), preconditions checked by
the manager before a pass runs, and every registered pass declaring both."""

import dataclasses

import numpy as np
import pytest

from mcc.errors import MccError
from mcc.ir import Graph, QuantParams
from mcc.passes import PASSES, run_pipeline
from mcc.passes.manager import CONDITIONS


def _graph(layout="NHWC"):
    g = Graph()
    x = g.add_input("x", (1, 4, 4, 3) if layout == "NHWC" else (1, 3, 4, 4), layout=layout)
    g.outputs = [g.add_node("relu", [x]).outputs[0]]
    return g


def test_every_pass_declares_a_contract():
    assert set(PASSES) >= {"fold_constants", "fold_batchnorm", "to_nhwc", "legalize_tflite", "quantize_int8",
                           "cross_layer_equalization", "legalize_onnx", "to_nchw", "fuse_activations"}
    for spec in PASSES.values():
        assert set(spec.requires) <= set(CONDITIONS)
        if spec.options is not None:
            for f in dataclasses.fields(spec.options):  # every option has a default: a pass runs with none given
                assert f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING


def test_unknown_option_names_the_pipeline_and_its_options():
    with pytest.raises(MccError, match=r"'observr' are not options of any pass in the pipeline fold_constants, "
                                       r"fuse_activations \(fuse_activations: fusable_ops\)"):
        run_pipeline(_graph(), ["fold_constants", "fuse_activations"], {"observr": "mse"})


def test_option_of_the_wrong_type_names_the_pass():
    with pytest.raises(MccError, match="pass cross_layer_equalization: option 'cle' must be"):
        run_pipeline(_graph(), ["cross_layer_equalization"], {"cle": "yes"})
    with pytest.raises(MccError, match="quantize_int8: option 'require_int8' must be bool"):
        run_pipeline(_graph(), ["quantize_int8"], {"require_int8": 1, "calibration": {}})


@pytest.mark.parametrize("name,graph,message", [
    ("quantize_int8", lambda: _graph("NCHW"), "quantize_int8 needs a graph that is nhwc, but 'x' is NCHW"),
    ("legalize_onnx", lambda: _graph("NHWC"), "legalize_onnx needs a graph that is nchw, but 'x' is NHWC"),
])
def test_layout_preconditions(name, graph, message):
    with pytest.raises(MccError, match=message):
        run_pipeline(graph(), [name])


def test_float_precondition_refuses_a_quantized_graph():
    g = _graph()
    g.inputs[0].quant = QuantParams(np.float32([0.1]), np.int64([0]))
    with pytest.raises(MccError, match="cross_layer_equalization needs a graph that is float, but 'x' is quantized"):
        run_pipeline(g, ["cross_layer_equalization"])


def test_batch_norm_must_be_folded_before_equalization():
    g = Graph()
    x = g.add_input("x", (1, 3, 4, 4), layout="NCHW")
    stats = [g.constant(n, np.ones(3, np.float32)) for n in ("m", "v", "w", "b")]
    g.outputs = [g.add_node("batch_norm", [x, *stats], name="bn").outputs[0]]
    with pytest.raises(MccError, match="'bn' is a batch_norm; run fold_batchnorm first"):
        run_pipeline(g, ["cross_layer_equalization"])
    run_pipeline(g, ["fold_batchnorm", "cross_layer_equalization"])


def test_compile_refuses_an_option_its_target_does_not_take(tmp_path):
    from mcc.compiler import compile_model

    with pytest.raises(MccError, match="'observer' are not options of any pass"):
        compile_model(_graph("NCHW"), "arm-fp32", options={"observer": "minmax"})


def _conv_graph():
    g = Graph()
    x = g.add_input("x", (1, 6, 6, 3), layout="NHWC")
    w = g.constant("w", np.random.default_rng(0).normal(size=(4, 3, 3, 3)).astype(np.float32))
    c = g.add_node("conv2d", [x, w], {"padding": [1, 1, 1, 1]})
    g.outputs = [g.add_node("relu", c.outputs).outputs[0]]
    return g


@pytest.mark.parametrize("name,options", [("prune", {}), ("depthwise_separable", {}), ("low_rank", {}),
                                          ("finetune", {}), ("transpose_conv_to_conv", {}), ("to_nhwc", {}),
                                          ("cross_layer_equalization", {"cle": False})])
def test_a_pass_that_says_unchanged_leaves_the_graph_as_it_was(name, options):
    """The manager skips re-checking a graph a pass returns as ctx.unchanged(graph), so a pass may say so only
    when it touched nothing: its option off, nothing to rewrite, the layout already the target's."""
    from mcc.ir.text import dumps
    from mcc.passes.manager import PassContext

    g = _conv_graph()
    before = dumps(g, inline_constants=True)
    spec = PASSES[name]
    ctx = PassContext(options=spec.make_options(options))
    assert spec.run(g, ctx) is g and ctx.untouched
    assert dumps(g, inline_constants=True) == before


def test_an_unchanged_pass_keeps_the_checked_graph_and_the_first_pass_is_always_checked():
    """An unchanged pass's record repeats the previous pass's totals; the first pass of a pipeline is checked even
    when unchanged, as nothing checked the graph it was given (here a wrong output shape, which inference fixes)."""
    out, records = run_pipeline(_conv_graph(), ["fold_constants", "prune", "eliminate_dead"])
    assert [r.name for r in records] == ["fold_constants", "prune", "eliminate_dead"]
    assert records[1].before == records[1].after == records[0].after
    g = _conv_graph()
    g.outputs[0].shape = (1, 6, 6, 5)
    assert run_pipeline(g, ["prune"])[0].outputs[0].shape == (1, 6, 6, 4)
