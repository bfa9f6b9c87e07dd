"""mcc's runtime against LiteRT, side by side in one run: latency on the zoo and a 224x224 MobileNetV2, the
first-call cost of the compiled kernels, and the peak memory of a validation.

    python benchmarks/bench_runtime.py [--models mobilenetv2_224,resnet18_style,...] [--repeat 20]
                                       [--validate-samples 100] [--json out.json]

Per model, for its arm-fp32 and arm-int8 files (compiled in this run, int8 calibrated on 32 standard-normal
samples), one thread everywhere: LiteRT's default kernels (XNNPACK) and BUILTIN_REF, and mcc's runtime under the
rule set that reproduces each (litert-xnnpack, litert-ref), with numba limited to one thread (the runtime keeps
numpy's BLAS on one: runtime/kernels/int8_gemm.py); then mcc again with every core. Ratios: mcc / XNNPACK latency (issue 16's goal: at most 5) and BUILTIN_REF / mcc latency, i.e. mcc's
throughput relative to the reference kernels (goal: at least 1).

mobilenetv2_224 is pytorchcv's mobilenetv2_w1 (the architecture of MobileNetV2 1.0, 224x224, random weights;
pytorchcv is installed by the README's set-up with --no-deps); timings do not depend on the weights.

First call: a fresh process runs the int8 MobileNetV2 once with an empty numba cache directory (every kernel it
uses is compiled), then a second process with the cache the first one left (what every later `mcc` process pays).
Memory: `mcc validate` of the int8 MobileNetV2 on --validate-samples images in a child process, its peak resident
set (issue 16's goal: under 2 GB for 100 images).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# This file's folder is not an import root: benchmarks/coverage.py would shadow coverage.py, which numba imports.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import numba
import numpy as np
import torch

from mcc.compiler import compile_model
from mcc.devices.host import describe
from mcc.examples.zoo import ZOO
from mcc.formats.tflite.reader import read_tflite
from mcc.runtime import run
from mcc.benchmarks.timing import median_seconds
from mcc.runtime.litert import make_interpreter, run_litert

SEED = 0
CALIB_SAMPLES = 32
PAIRS = (("default", "litert-xnnpack"), ("ref", "litert-ref"))  # LiteRT kernel set, mcc rule set reproducing it


def _pytorchcv(module: str, name: str):
    """pytorchcv's model `name` at 224x224 with random weights (seeded), from its module, not model_provider,
    which imports torchvision."""
    try:
        model = getattr(importlib.import_module(f"pytorchcv.models.{module}"), name)
    except ImportError:
        raise SystemExit(f"{name} needs pytorchcv: pip install --no-deps pytorchcv==0.0.74") from None
    torch.manual_seed(SEED)
    return model().eval(), torch.zeros(1, 3, 224, 224)


def mobilenetv2_224():
    """MobileNetV2 1.0 (pytorchcv's mobilenetv2_w1)."""
    return _pytorchcv("mobilenetv2", "mobilenetv2_w1")


def efficientnet_b0b_224():
    """EfficientNet-B0 "like the TF implementation" (pytorchcv's efficientnet_b0b): TF-style asymmetric padding,
    swish, squeeze-and-excitation blocks, 5x5 depthwise convs; issue 16's second held-out CNN (depthwise, TF-style
    padding), whose compile bench_compile.py times."""
    return _pytorchcv("efficientnet", "efficientnet_b0b")


MODELS = {"mobilenetv2_224": mobilenetv2_224, "efficientnet_b0b_224": efficientnet_b0b_224, **ZOO}
DEFAULT_MODELS = ("mobilenetv2_224", *ZOO)  # the runtime goals are MobileNetV2's


def compile_pair(name: str, workdir: Path) -> dict[str, bytes]:
    """The model's arm-fp32 and arm-int8 files, from one torch.export."""
    model, example = MODELS[name]()
    src = workdir / f"{name}.pt2"
    torch.export.save(torch.export.export(model, (example,)), src)
    calib = workdir / f"{name}_calib.npz"
    np.savez(calib, np.random.default_rng(SEED).standard_normal((CALIB_SAMPLES, *example.shape[1:])).astype(np.float32))
    out = {}
    for target in ("arm-fp32", "arm-int8"):
        path = workdir / f"{name}_{target}.tflite"
        compile_model(src, target, path, calib=calib if target.endswith("int8") else None, hold_out=False)
        out[target] = path.read_bytes()
    return out


def feeds_for(data: bytes) -> dict[str, np.ndarray]:
    t = read_tflite(data).inputs[0]
    x = np.random.default_rng(SEED + 1).standard_normal(t.shape)
    return {t.name: x.astype(t.dtype) if t.dtype == "float32" else np.clip(x * 40, -128, 127).astype(t.dtype)}


def latencies(data: bytes, repeat: int) -> dict[str, float]:
    """Median seconds per invocation: LiteRT per kernel set, mcc per rule set at 1 thread, mcc at every core."""
    graph, feeds = read_tflite(data), feeds_for(data)
    out = {}
    for kernels, rules in PAIRS:
        interp = make_interpreter(data, kernels)
        out[f"litert_{kernels}"] = median_seconds(lambda: run_litert(data, feeds, interpreter=interp), repeat)
        numba.set_num_threads(1)
        out[f"mcc_{rules}"] = median_seconds(lambda: run(graph, feeds, rules=rules), repeat)
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    out["mcc_litert-xnnpack_all_cores"] = median_seconds(lambda: run(graph, feeds, rules="litert-xnnpack"), repeat)
    return out


_FIRST_CALL = """
import time; start = time.perf_counter()
from mcc.formats.tflite.reader import read_tflite; from mcc.runtime import run; import numpy as np
g = read_tflite(open({path!r}, "rb").read()); t = g.inputs[0]
run(g, {{t.name: np.zeros(t.shape, t.dtype)}}, rules="litert-xnnpack"); print(time.perf_counter() - start)
"""


def first_call_seconds(path: Path, cache_dir: Path) -> float:
    """Seconds from import to the end of the first run in a fresh process whose numba cache is `cache_dir`."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache_dir)}
    done = subprocess.run([sys.executable, "-c", _FIRST_CALL.format(path=str(path))], env=env, check=True,
                          capture_output=True, text=True)
    return float(done.stdout.strip().splitlines()[-1])


_VALIDATE = """
import resource; from mcc.cli import main
assert main({args!r}) == 0; print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def validate_peak_rss(path: Path, samples: int, workdir: Path) -> tuple[float, float]:
    """(seconds, peak resident bytes) of `mcc validate` on `samples` images in a child process."""
    t = read_tflite(path.read_bytes()).inputs[0]
    x = np.random.default_rng(SEED + 2).standard_normal((samples, 3, 224, 224)).astype(np.float32)
    npz = workdir / "validate.npz"
    np.savez(npz, **{t.name: x})
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _VALIDATE.format(args=["validate", str(path), "--input", str(npz)])],
                          check=True, capture_output=True, text=True)
    return time.perf_counter() - start, int(done.stdout.strip().splitlines()[-1]) * 1024


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated, from: " + ", ".join(MODELS))
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--validate-samples", type=int, default=100)
    p.add_argument("--json", help="also write the rows as JSON here")
    args = p.parse_args(argv)
    names = args.models.split(",")
    unknown = sorted(set(names) - set(MODELS))
    if unknown:
        p.error(f"unknown models {unknown}; known: {', '.join(MODELS)}")
    print(f"host: {describe()}; numba threads: 1 (all cores: {numba.config.NUMBA_NUM_THREADS})")
    print(f"{'model':<20} {'file':<5} {'XNNPACK ms':>10} {'mcc xnn ms':>10} {'mcc/XNNPACK':>11} {'REF ms':>8} "
          f"{'mcc ref ms':>10} {'REF/mcc':>8} {'mcc xnn, all cores ms':>22}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for name in names:
            files = compile_pair(name, workdir)
            for target, data in files.items():
                r = {"model": name, "target": target, **latencies(data, args.repeat)}
                r["mcc_over_xnnpack"] = r["mcc_litert-xnnpack"] / r["litert_default"]
                r["ref_over_mcc"] = r["litert_ref"] / r["mcc_litert-ref"]
                rows.append(r)
                print(f"{name:<20} {target[4:]:<5} {r['litert_default'] * 1e3:>10.2f} "
                      f"{r['mcc_litert-xnnpack'] * 1e3:>10.2f} {r['mcc_over_xnnpack']:>11.2f} "
                      f"{r['litert_ref'] * 1e3:>8.2f} {r['mcc_litert-ref'] * 1e3:>10.2f} {r['ref_over_mcc']:>8.2f} "
                      f"{r['mcc_litert-xnnpack_all_cores'] * 1e3:>22.2f}", flush=True)
        extra = {}
        if "mobilenetv2_224" in names:
            int8 = workdir / "mobilenetv2_224_arm-int8.tflite"
            cache = workdir / "numba-cache"
            extra["first_call_empty_cache_s"] = first_call_seconds(int8, cache)
            extra["first_call_disk_cache_s"] = first_call_seconds(int8, cache)
            print(f"first call, int8 mobilenetv2_224, fresh process: {extra['first_call_empty_cache_s']:.2f} s with "
                  f"an empty numba cache, {extra['first_call_disk_cache_s']:.2f} s with the disk cache")
            seconds, peak = validate_peak_rss(int8, args.validate_samples, workdir)
            extra.update(validate_samples=args.validate_samples, validate_s=seconds, validate_peak_rss_bytes=peak)
            print(f"mcc validate, int8 mobilenetv2_224, {args.validate_samples} images (mcc under both rule sets, "
                  f"LiteRT REF and XNNPACK): {seconds:.1f} s, peak resident memory {peak / 2**20:,.0f} MiB")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, **extra}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
