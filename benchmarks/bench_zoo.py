"""Baseline benchmark for the zoo: compile time, and mcc's runtime against LiteRT (XNNPACK) measured in one run.

    python benchmarks/bench_zoo.py [--repeat 20]

Prints, per model: compile seconds, median latency of LiteRT default kernels (XNNPACK, 1 thread), of LiteRT
BUILTIN_REF, of mcc's reference runtime, and the ratios mcc / XNNPACK and mcc / BUILTIN_REF. No targets yet: this
is the baseline that later optimisation of the runtime is measured against.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mcc.compiler import compile_model
from mcc.devices.host import describe
from mcc.examples.zoo import ZOO
from mcc.formats.tflite.reader import read_tflite
from mcc.runtime import run
from mcc.runtime.litert import make_interpreter, run_litert
from timing import median_seconds  # benchmarks/timing.py, beside this script




def bench(name: str, repeat: int, workdir: Path) -> dict:
    model, example = ZOO[name]()
    src = workdir / f"{name}.pt2"
    torch.export.save(torch.export.export(model, (example,)), src)
    start = time.perf_counter()
    result = compile_model(src, "arm-fp32", workdir / f"{name}.tflite")
    compile_s = time.perf_counter() - start
    graph = read_tflite(result.data)
    x = np.random.default_rng(0).standard_normal(graph.inputs[0].shape).astype(np.float32)
    feeds = {graph.inputs[0].name: x}
    timings = {}
    for kernels in ("default", "ref"):
        interp = make_interpreter(result.data, kernels)
        timings[kernels] = median_seconds(lambda: run_litert(result.data, feeds, interpreter=interp), repeat)
    timings["mcc"] = median_seconds(lambda: run(graph, feeds), repeat)
    return {"model": name, "bytes": len(result.data), "macs": result.report["output"]["totals"]["macs"],
            "compile_s": compile_s, "litert_xnnpack_s": timings["default"], "litert_ref_s": timings["ref"],
            "mcc_runtime_s": timings["mcc"], "mcc_over_xnnpack": timings["mcc"] / timings["default"],
            "mcc_over_ref": timings["mcc"] / timings["ref"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--models", nargs="*", default=sorted(ZOO))
    p.add_argument("--json", help="also write the rows as JSON here")
    args = p.parse_args(argv)
    print(f"host: {describe()}")
    header = (f"{'model':<26} {'bytes':>10} {'MACs':>12} {'compile s':>10} {'XNNPACK ms':>11} {'REF ms':>9} "
              f"{'mcc ms':>9} {'mcc/XNNPACK':>12} {'mcc/REF':>8}")
    print(header)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            r = bench(name, args.repeat, Path(tmp))
            rows.append(r)
            print(f"{r['model']:<26} {r['bytes']:>10,} {r['macs']:>12,} {r['compile_s']:>10.2f} "
                  f"{r['litert_xnnpack_s'] * 1e3:>11.3f} {r['litert_ref_s'] * 1e3:>9.3f} {r['mcc_runtime_s'] * 1e3:>9.3f} "
                  f"{r['mcc_over_xnnpack']:>12.2f} {r['mcc_over_ref']:>8.2f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
