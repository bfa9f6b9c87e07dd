"""The torch frontend's direct lowering of torch.export's training IR (frontend.torch_export.core_names): where it
applies, the IR, names included, is the one lowering the run_decompositions program gives; where it does not (a
view of a tensor an in-place op writes), the program is decomposed first."""

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mcc.examples import zoo
from mcc.frontend.torch_export import core_names, lower, lower_decomposed
from mcc.ir.text import dumps
from mcc.runtime import run


def conv_bn():
    return nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4))


class Fn(nn.Module):
    """fn(self, x) over two conv + BatchNorm layers `a` and `b`, so each case is one line."""

    def __init__(self, fn):
        super().__init__()
        self.a, self.b, self.fc = conv_bn(), conv_bn(), nn.Linear(16, 5, bias=False)
        self.fn = fn

    def forward(self, x):
        return self.fn(self, x)


def _residual_in_place(m, x):
    y, z = m.a(x), m.b(x)
    r = y.relu_()
    w = y * 2  # reads y after relu_ wrote it
    y.add_(z)
    F.hardtanh(y, -1, 1, inplace=True)
    return r + w + y  # r and y: the tensor after both later writes


def _activations_in_place(m, x):
    y, z = m.a(x), m.b(x)
    F.hardswish(y, inplace=True)
    F.silu(z, inplace=True)
    z.sigmoid_()
    y.mul_(z).sub_(1)
    F.leaky_relu(y, 0.1, inplace=True)
    return F.hardsigmoid(y, inplace=True)


def _shuffle_pool_linear(m, x):
    y = F.relu6(m.a(x), inplace=True) * 1
    n, c, h, w = y.shape
    y = y.view(n, 2, c // 2, h, w).transpose(1, 2).contiguous().view(n, c, h, w)
    y = F.adaptive_avg_pool2d(F.max_pool2d(F.pad(y, (1, 1, 1, 1)), 2), 2)
    a, b = y.chunk(2, dim=1)
    return m.fc(torch.flatten(torch.cat([b, a], 1), 1)), F.dropout(y, 0.5, False)


def _dead_code(m, x):
    y = m.a(x)
    unused = torch.sigmoid(y) * 3  # noqa: F841  (dropped by run_decompositions, after taking a name)
    t = y + 1
    t.relu_()  # written, never read
    return F.adaptive_avg_pool2d(y.relu(), 1).flatten(1)


def _view_of_written(m, x):
    y = m.a(x)
    y.relu_()
    a, b = y.chunk(2, dim=1)  # functionalization replays this view: one split becomes two
    return torch.cat([b, a], 1)


def _view_before_write(m, x):
    y = m.a(x)
    v = y.view(1, 4, -1)
    y.relu_()  # also changes v
    return v.sum(-1) + y.mean((2, 3))


CASES = {  # name -> (module, input, lowered directly)
    "residual_in_place": (lambda: Fn(_residual_in_place), (1, 4, 6, 6), True),
    "activations_in_place": (lambda: Fn(_activations_in_place), (1, 4, 6, 6), True),
    "shuffle_pool_linear": (lambda: Fn(_shuffle_pool_linear), (1, 4, 6, 6), True),
    "dead_code": (lambda: Fn(_dead_code), (1, 4, 6, 6), True),
    "view_of_written": (lambda: Fn(_view_of_written), (1, 4, 6, 6), False),
    "view_before_write": (lambda: Fn(_view_before_write), (1, 4, 6, 6), False),
}


def _export(build, shape):
    torch.manual_seed(0)
    model = build().eval()
    x = torch.randn(shape)
    return model, x, torch.export.export(model, (x,))


@pytest.mark.parametrize("case", sorted(CASES))
def test_direct_lowering_gives_the_decomposed_programs_ir(case):
    build, shape, direct = CASES[case]
    model, x, ep = _export(build, shape)
    assert (core_names(ep) is not None) == direct
    graph = lower(ep, name=case)
    assert dumps(graph) == dumps(lower_decomposed(ep, name=case))
    with torch.no_grad():
        want = model(x)
    want = want if isinstance(want, tuple) else (want,)
    got = run(graph, {graph.inputs[0].name: x.numpy()})
    for t, w in zip(graph.outputs, want):
        np.testing.assert_allclose(got[t.name], w.numpy(), rtol=0, atol=1e-5 * max(1.0, float(w.abs().max())))


@pytest.mark.parametrize("name", ["resnet18_style", "mobilenet_v2_style", "mobilenet_v3_small_style"])
def test_zoo_models_are_lowered_directly_to_the_same_ir(name):
    model, x = getattr(zoo, name)()
    ep = torch.export.export(model, (x,))
    assert core_names(ep) is not None
    assert dumps(lower(ep, name=name), inline_constants=True) == dumps(lower_decomposed(ep, name=name),
                                                                       inline_constants=True)


def _pytorchcv_families():
    from mcc.benchmarks.coverage_suites.torch_suites import TASKS

    return sorted(family for families in TASKS.values() for family in families)


@pytest.mark.corpus
@pytest.mark.parametrize("family", _pytorchcv_families())
def test_every_pytorchcv_family_lowered_directly_has_the_decomposed_ir(family):
    """One model per pytorchcv family (benchmarks/coverage_suites): where the direct lowering applies (40 of the
    55 that export, on torch 2.13), its IR equals the decomposed program's, or both refuse the model alike."""
    from mcc.benchmarks.coverage_suites.torch_suites import build_pytorchcv, pytorchcv_cases
    from mcc.errors import MccError

    case = next(c for c in pytorchcv_cases(quick=False) if c.name.startswith(f"{family} ("))
    torch.manual_seed(0)
    model, example = build_pytorchcv(case.payload)
    try:
        ep = torch.export.export(model.eval(), (example,))
    except Exception:  # torch.export's own refusal (data-dependent shapes): nothing to lower
        return
    if core_names(ep) is None:
        return

    def text(lowering):
        try:
            return dumps(lowering(ep, name=family))
        except MccError as e:
            return f"refused: {e}"

    assert text(lower) == text(lower_decomposed)
