"""Issue 4's acceptance on the zoo: torch -> ONNX (legacy and dynamo exporters) -> mcc -> TFLite int8 and ONNX int8,
each validated with 0 differing elements on every tensor against LiteRT BUILTIN_REF and onnxruntime."""

import json
import warnings

import numpy as np
import pytest
import torch

from mcc.cli import main
from mcc.examples.zoo import ZOO


def _export(model, example, path, dynamo):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(path), dynamo=dynamo, input_names=["x"], output_names=["y"])


@pytest.mark.parametrize("dynamo", [False, True], ids=["legacy", "dynamo"])
@pytest.mark.parametrize("name", sorted(ZOO))
def test_onnx_source_to_both_int8_formats_is_bit_exact(name, dynamo, tmp_path, capsys):
    model, example = ZOO[name](**({"train": False} if name == "digits_classifier" else {}))
    src = tmp_path / f"{name}.onnx"
    _export(model, example, src, dynamo)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "calib.npz", x=rng.standard_normal((8, *example.shape[1:])).astype(np.float32))
    np.savez(tmp_path / "eval.npz", x=rng.standard_normal((2, *example.shape[1:])).astype(np.float32))
    for target, suffix, kernels in [("arm-int8", "tflite", "ref"), ("x86-int8", "onnx", "ort-all")]:
        out = tmp_path / f"{name}.{target}.{suffix}"
        assert main(["compile", str(src), "--target", target, "--calib", str(tmp_path / "calib.npz"), "-o", str(out),
                     "-q", "--require-int8"]) == 0
        capsys.readouterr()
        code = main(["validate", str(out), "--input", str(tmp_path / "eval.npz"), "--reference", str(src),
                     "--kernels", kernels, "--json"])
        report = json.loads(capsys.readouterr().out)
        (c,) = report["comparisons"]
        assert code == 0 and c["exact"] and c["differing"] == 0 and c["elements"] > 0, (target, c["first_differing_op"])
        assert next(iter(report["fidelity"].values()))["sqnr_db"] > 10
