"""Every zoo model saved as .pt2 and as TorchScript, loaded by mcc.frontend.load and run in mcc's runtime,
matches torch; the zoo is deterministic and its BatchNorms carry real statistics; digits is really trained."""

import numpy as np
import pytest
import torch
import torch.nn as nn

from mcc.examples.zoo import ZOO, digits_classifier, digits_split, resnet18_style
from mcc.frontend import load
from mcc.frontend.torch_export import from_module
from mcc.ir.text import dumps
from mcc.runtime import run


@pytest.fixture(scope="module")
def digits():
    return digits_classifier()


@pytest.fixture(scope="module", params=sorted(ZOO))
def saved(request, tmp_path_factory, digits):
    name = request.param
    model, example = digits if name == "digits_classifier" else ZOO[name]()
    tmp = tmp_path_factory.mktemp(name)
    torch.export.save(torch.export.export(model, (example,)), tmp / "model.pt2")
    torch.jit.save(torch.jit.trace(model, (example,)), tmp / "model.pt")
    return name, model, example, tmp


@pytest.mark.parametrize("fmt", ["pt2", "pt"])
def test_lowered_model_matches_torch(saved, fmt):
    name, model, example, tmp = saved
    graph = load(tmp / f"model.{fmt}", input_shapes=[tuple(example.shape)] if fmt == "pt" else None)
    assert [t.name for t in graph.inputs] == ["x"] and len(graph.outputs) == 1
    x = torch.randn(example.shape, generator=torch.Generator().manual_seed(1))
    got = run(graph, {"x": x.numpy()})[graph.outputs[0].name]
    with torch.no_grad():
        want = model(x).numpy()
    span = float(want.max() - want.min())
    err = float(np.abs(got - want).max())
    assert err <= 1e-4 * span, f"{name} from .{fmt}: max abs error {err} > 1e-4 * {span}"
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert sum(n.op == "batch_norm" for n in graph.nodes) == len(bns) > 0


def test_batchnorm_statistics_are_not_trivial(saved):
    name, model, *_ = saved
    for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
        assert bn.running_mean.abs().max() > 1e-3 and (bn.running_var - 1).abs().max() > 1e-2, name
        assert (bn.weight - 1).abs().max() > 1e-2 and bn.bias.abs().max() > 1e-3, name


def test_zoo_is_deterministic_and_leaves_the_global_rng_alone():
    state = torch.get_rng_state()
    (m1, x1), (m2, x2) = resnet18_style(), resnet18_style()
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(x1, x2)
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))
    assert dumps(from_module(m1, (x1,))) == dumps(from_module(m2, (x2,)))


def test_digits_classifier_is_trained_and_its_ir_agrees(digits):
    model, example = digits
    split = digits_split()
    assert example.shape == (1, 1, 8, 8) and torch.equal(example, split.x_test[:1])
    assert len(split.x_train) + len(split.x_test) == 1797 and len(set(split.y_test.tolist())) == 10
    with torch.no_grad():
        logits = model(split.x_test)
    accuracy = float((logits.argmax(1) == split.y_test).float().mean())
    assert accuracy >= 0.9
    graph = from_module(model, (split.x_test,))
    ours = run(graph, {"x": split.x_test.numpy()})[graph.outputs[0].name]
    assert float((ours.argmax(1) == split.y_test.numpy()).mean()) == pytest.approx(accuracy, abs=1 / len(split.y_test))
    untrained, _ = digits_classifier(train=False)
    with torch.no_grad():
        assert float((untrained(split.x_test).argmax(1) == split.y_test).float().mean()) < 0.5
