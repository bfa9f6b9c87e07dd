"""Compile a torch module from torch.export and from its ONNX export to every target, and check each result
against torch: float files within 1e-4 of the output range in LiteRT (both kernel sets) and onnxruntime; int8
files bit for bit between mcc's runtime and LiteRT (litert-ref, litert-xnnpack) or onnxruntime."""

import warnings

import numpy as np
import torch

from mcc.benchmarks.coverage_suites.torch_suites import samples_like
from mcc.compiler import compile_model
from mcc.frontend.torch_export import from_module
from mcc.runtime.litert import run_litert
from mcc.validate import validate

TARGETS = ("arm-fp32", "x86-fp32", "arm-int8", "x86-int8")


def spread(a):
    return max(float(np.ptp(a)), 1e-6)


def export_onnx(module, x, path, opset=17):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (x,), path, dynamo=False, input_names=["x"], output_names=["y"],
                          opset_version=opset)
    return path


def _float_output(result, target: str, x: np.ndarray) -> dict:
    """{kernels: output} of a float file: LiteRT's two kernel sets for TFLite (NHWC data), onnxruntime for ONNX."""
    if target.startswith("x86"):
        import onnxruntime as ort

        s = ort.InferenceSession(result.data, providers=["CPUExecutionProvider"])
        return {"ort": s.run(None, {s.get_inputs()[0].name: x})[0]}
    nhwc = result.graph.inputs[0].layout == "NHWC"
    feeds = {result.graph.inputs[0].name: x.transpose(0, 2, 3, 1) if nhwc else x}
    out = {}
    for kernels in ("ref", "default"):
        y = next(iter(run_litert(result.data, feeds, kernels).values()))
        out[kernels] = y.transpose(0, 3, 1, 2) if result.graph.outputs[0].layout == "NHWC" else y
    return out


def compile_everywhere(module, shape, tmp_path, sources=("pt2", "onnx"), targets=TARGETS, seed=0,
                       example=None, require_int8=False, options=None) -> dict:
    """{(source, target): CompileResult}, each checked as the module docstring says; `example` (an input of
    `shape`, e.g. token ids) replaces the seeded standard-normal input; `require_int8` makes a float island in an
    int8 target an error; `options` are pass options for every compile (e.g. {"prune": 0.5}: then only int8
    targets make sense here, as float files are compared with the unpruned module)."""
    torch.manual_seed(seed)
    module = module.eval()
    x = example if example is not None else torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        want = module(x).numpy()
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=samples_like(x, 16, seed + 1))
    loaded = {"pt2": lambda: from_module(module, (x,)),
              "onnx": lambda: export_onnx(module, x, tmp_path / "model.onnx")}
    results = {}
    for source in sources:
        model = loaded[source]()
        for target in targets:
            out = tmp_path / f"{source}_{target}"
            src = model.copy() if source == "pt2" else model  # compile_model rewrites a Graph in place
            path = out.with_suffix(".tflite" if target.startswith("arm") else ".onnx")
            given = {**(options or {}), **({"require_int8": True} if require_int8 and "int8" in target else {})}
            r = compile_model(src, target, path, calib=calib if "int8" in target else None, options=given or None)
            if "int8" in target:
                report = validate(path, calib)
                for c in report["comparisons"]:
                    bad = [(t["tensor"], t["op"], t["differing"], t["max_abs_diff"]) for t in c["tensors"]
                           if t["differing"]]
                    assert c["elements"] > 0 and c["differing"] == 0, (source, target, c["kernels"], bad)
            else:
                for kernels, got in _float_output(r, target, x.numpy()).items():
                    assert got.shape == want.shape, (source, target, kernels, got.shape, want.shape)
                    err = np.abs(got - want).max() / spread(want)
                    assert err <= 1e-4, (source, target, kernels, err)
            results[source, target] = r
    return results
