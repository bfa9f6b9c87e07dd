"""The models of tests/handwritten_models.py (the architectures issue 14 names beyond pytorchcv's CNNs) compile from
torch.export to arm-fp32, x86-fp32, arm-int8 and x86-int8: float files match torch within 1e-4 of the output range
in LiteRT and onnxruntime, int8 files validate with 0 differing elements against LiteRT (reference and XNNPACK
kernels) and onnxruntime. The same models through torch.onnx.export (opset 17) are the slow half."""

import pytest
from compile_checks import compile_everywhere
from handwritten_models import MODELS


def _check(name, tmp_path, source):
    module, example = MODELS[name]()
    results = compile_everywhere(module, tuple(example.shape), tmp_path, sources=(source,), example=example)
    assert len(results) == 4


@pytest.mark.parametrize("name", sorted(MODELS))
def test_from_torch_export_to_every_target(name, tmp_path):
    _check(name, tmp_path, "pt2")


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MODELS))
def test_from_onnx_export_to_every_target(name, tmp_path):
    _check(name, tmp_path, "onnx")
