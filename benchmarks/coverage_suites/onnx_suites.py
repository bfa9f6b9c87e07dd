"""The ONNX backend test suites, run through mcc.onnx_backend: node cases and model cases.

onnx-node: the node cases of onnx.backend.test.case.node.collect_testcases (one operator, or its function
expansion, with inputs and expected outputs made by onnx's reference code), judged by each case's own rtol/atol.
Their int8 cells are n/a: the data are a single handful of values chosen to exercise the operator, not a
distribution to calibrate on, and the suite's float tolerances say nothing about an int8 result.

onnx-models: the model cases in onnx/backend/test/data: "light" (9 ImageNet models at opset 9 with random weights,
fed as onnx.backend.test.runner feeds them: arange(n)/n in the input's shape, against light_*_output_0.pb),
pytorch-converted, pytorch-operator and simple (test_data_set_*/input_*.pb against output_*.pb). Float cells use
the case's rtol/atol; int8 cells calibrate on the case's own inputs and are judged as in common.int8_cell.
"""

from __future__ import annotations

import glob
import os

import numpy as np
import onnx
from onnx import numpy_helper

from mcc.errors import MccError

from .common import COLUMNS, Case, Cell, allclose_judge, float_cell, guarded, int8_cell, not_applicable

MODEL_KINDS = {"real": "light", "pytorch-converted": "pytorch-converted", "pytorch-operator": "pytorch-operator",
               "simple": "simple"}
NODE_INT8 = "n/a: node cases carry no calibration data (see the header)"


def _array(value):
    """An expected value as an array (the node cases hold TensorProtos in places; sequences stay lists)."""
    return numpy_helper.to_array(value) if isinstance(value, onnx.TensorProto) else value


def _source(model: onnx.ModelProto) -> str:
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    return f"onnx (opset {opset})"


def _ops(model: onnx.ModelProto) -> list[str]:
    return sorted({n.op_type for n in model.graph.node})


# ---- onnx-node ----

def node_cases(quick: bool) -> list[Case]:
    from onnx.backend.test.case.node import collect_testcases

    cases = sorted(collect_testcases(None), key=lambda c: c.name)
    return [node_case(c) for c in (cases[::20] if quick else cases)]


def node_case(c) -> Case:
    """The Case of one of onnx's node TestCases."""
    return Case("onnx-node", c.name, _source(c.model),
                {"model": c.model.SerializeToString(), "rtol": c.rtol, "atol": c.atol, "ops": _ops(c.model),
                 "data_sets": [([_array(v) for v in ins], [_array(v) for v in outs]) for ins, outs in c.data_sets]})


# A refusal that says an input must be known at compile time (a weight, repeats, indices, a shape).
_NEEDS_CONSTANT = ("computed at run time", "run-time ids", "constant table")


def run_node_case(case: Case):
    model = onnx.load_from_string(case.payload["model"])
    judge = allclose_judge(case.payload["rtol"], case.payload["atol"])
    for column in COLUMNS:
        if column.endswith("int8"):
            yield from not_applicable([column], NODE_INT8)
        else:
            yield guarded(column, lambda: _node_cell(model, column, case.payload["data_sets"], judge))


def _node_cell(model, column, data_sets, judge) -> Cell:
    """The case as the suite runs it (every input fed at run time); where mcc refuses an input that is not known at
    compile time and the case has one data set, again with inputs 2.. as initializers, as model files carry
    weights, repeats and indices (the cell says so)."""
    try:
        return float_cell(_prepare(model, column), data_sets, judge)
    except MccError as e:
        if len(data_sets) != 1 or len(model.graph.input) < 2 or not any(m in str(e) for m in _NEEDS_CONSTANT):
            raise
    baked, fed = _inputs_as_initializers(model, data_sets[0][0])
    cell = float_cell(_prepare(baked, column), [(fed, data_sets[0][1])], judge)
    return Cell(cell.status, f"{cell.text} (inputs 2.. as initializers)")


def _inputs_as_initializers(model: onnx.ModelProto, inputs: list):
    """`model` with every graph input after the first turned into an initializer holding its case value."""
    baked = onnx.ModelProto()
    baked.CopyFrom(model)
    keep = baked.graph.input[0]
    for v, value in zip(model.graph.input[1:], inputs[1:]):
        baked.graph.initializer.append(numpy_helper.from_array(np.asarray(value), v.name))
    del baked.graph.input[:]
    baked.graph.input.append(keep)
    return baked, inputs[:1]


def _prepare(model, target, **kw):
    from mcc.onnx_backend import MccBackend

    return MccBackend.prepare(model, "CPU", target=target, **kw)


# ---- onnx-models ----

def model_cases(quick: bool) -> list[Case]:
    from onnx.backend.test.loader import load_model_tests

    cases = []
    for kind, label in MODEL_KINDS.items():
        tests = sorted(load_model_tests(kind=kind), key=lambda t: t.name)
        if quick:
            tests = tests[:1]
        for t in tests:
            path = _model_path(t)
            source = _source(onnx.load(path, load_external_data=False))
            cases.append(Case("onnx-models", f"{label}/{t.name}", source,
                              {"kind": kind, "path": path, "model_dir": t.model_dir, "rtol": t.rtol, "atol": t.atol}))
    return cases


def _model_path(t) -> str:
    if t.model_dir is not None:
        return os.path.join(t.model_dir, "model.onnx")
    import onnx.backend.test.loader as loader

    return os.path.normpath(os.path.join(loader.DATA_DIR, "..", "..", "..", "..", t.url))


def model_data_sets(payload, model: onnx.ModelProto) -> list:
    """[(inputs, expected outputs)] as onnx.backend.test.runner builds them for the case."""
    if payload["model_dir"] is None:  # a light model: generated inputs, the stored expected output
        from onnx.backend.test.runner import Runner

        initializers = {i.name for i in model.graph.initializer}
        inputs = [Runner.generate_dummy_data(x, seed=0, name=model.graph.name, random=False)
                  for x in model.graph.input if x.name not in initializers]
        prefix = os.path.splitext(payload["path"])[0]
        outputs = [_read_pb(f"{prefix}_output_{i}.pb", model.graph.output[i].type)
                   for i in range(len(model.graph.output))]
        return [(inputs, outputs)]
    sets = []
    for folder in sorted(glob.glob(os.path.join(payload["model_dir"], "test_data_set*"))):
        n_in = len(glob.glob(os.path.join(folder, "input_*.pb")))
        n_out = len(glob.glob(os.path.join(folder, "output_*.pb")))
        sets.append(([_read_pb(os.path.join(folder, f"input_{i}.pb"), model.graph.input[i].type)
                      for i in range(n_in)],
                     [_read_pb(os.path.join(folder, f"output_{i}.pb"), model.graph.output[i].type)
                      for i in range(n_out)]))
    return sets


def _stack(samples, names) -> dict:
    """Calibration arrays by input name: the samples' inputs one after another on the batch axis (0-d ones, which
    have none, stacked)."""
    join = lambda arrays: np.stack(arrays) if np.ndim(arrays[0]) == 0 else np.concatenate(arrays)  # noqa: E731
    return {name: join([s[i] for s in samples]) for i, name in enumerate(names)}


def _read_pb(path: str, type_proto: onnx.TypeProto):
    with open(path, "rb") as f:
        content = f.read()
    if type_proto.HasField("sequence_type"):
        sequence = onnx.SequenceProto()
        sequence.ParseFromString(content)
        return numpy_helper.to_list(sequence)
    tensor = onnx.TensorProto()
    tensor.ParseFromString(content)
    return numpy_helper.to_array(tensor)


def run_model_case(case: Case):
    model = onnx.load(case.payload["path"])
    data_sets = model_data_sets(case.payload, model)
    judge = allclose_judge(case.payload["rtol"], case.payload["atol"])
    initializers = {i.name for i in model.graph.initializer}
    names = [x.name for x in model.graph.input if x.name not in initializers]
    samples = [list(ins) for ins, _ in data_sets]
    expected = [list(outs) for _, outs in data_sets]
    for column in COLUMNS:
        if column.endswith("int8"):
            yield guarded(column, lambda: int8_cell(_prepare(model, column, calib=_stack(samples, names)), samples,
                                                    expected, names))
        else:
            yield guarded(column, lambda: float_cell(_prepare(model, column), data_sets, judge))
