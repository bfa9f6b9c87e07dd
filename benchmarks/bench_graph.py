"""Graph operations are linear: build and lower graphs of 500 to 8,000 nodes and print the time per node.

    python benchmarks/bench_graph.py [--sizes 500,1000,2000,8000] [--repeat 3]

Each graph is a chain of residual blocks (conv -> batch_norm -> relu -> conv -> add), the shape of a deep CNN, built
through Graph.add_node as a frontend builds it, then lowered by the arm-fp32 pipeline's passes (fold_batchnorm,
to_nhwc, legalize_tflite, fuse_activations, fold_constants, eliminate_dead). Time per node should stay flat (within
2x) from the smallest to the largest graph; before the rewrite API, building took 0.18 / 0.83 / 3.57 s for 500 /
1,000 / 2,000 nodes and to_nhwc 0.08 / 0.32 / 1.35 s (quadratic: every unique_name and producer lookup scanned the
graph).
"""

from __future__ import annotations

import argparse
import gc
import sys
import time

import numpy as np

from mcc.ir import Graph
from mcc.passes import run_pipeline

PASSES = ["fold_batchnorm", "to_nhwc", "legalize_tflite", "fuse_activations", "fold_constants", "eliminate_dead"]
NODES_PER_BLOCK = 5


def build(nodes: int) -> Graph:
    rng = np.random.default_rng(0)
    g = Graph(f"chain{nodes}")
    x = g.add_input("x", (1, 8, 8, 8), layout="NCHW")
    for k in range(nodes // NODES_PER_BLOCK):
        w1 = g.constant(f"b{k}.w1", rng.normal(size=(8, 8, 3, 3)).astype(np.float32))
        w2 = g.constant(f"b{k}.w2", rng.normal(size=(8, 8, 3, 3)).astype(np.float32))
        stats = [g.constant(f"b{k}.bn{i}", np.abs(rng.normal(size=8)).astype(np.float32) + 0.5) for i in range(4)]
        c1 = g.add_node("conv2d", [x, w1], {"padding": [1, 1, 1, 1]}, name=f"b{k}.conv1").outputs[0]
        bn = g.add_node("batch_norm", [c1, *stats], name=f"b{k}.bn").outputs[0]
        r = g.add_node("relu", [bn], name=f"b{k}.relu").outputs[0]
        c2 = g.add_node("conv2d", [r, w2], {"padding": [1, 1, 1, 1]}, name=f"b{k}.conv2").outputs[0]
        x = g.add_node("add", [c2, x], name=f"b{k}.add").outputs[0]
    g.outputs = [x]
    return g


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="500,1000,2000,8000")
    p.add_argument("--repeat", type=int, default=3, help="best of this many runs per size (the machine is shared)")
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    build(50)  # warm-up: imports and first calls
    rows = []
    print(f"{'nodes':>7} {'build s':>9} {'lower s':>9} {'build us/node':>14} {'lower us/node':>14}")
    for n in sizes:
        built = lowered = float("inf")
        for _ in range(args.repeat):
            gc.collect()  # each run starts from the same heap
            start = time.perf_counter()
            g = build(n)
            built = min(built, time.perf_counter() - start)
            start = time.perf_counter()
            run_pipeline(g, PASSES)
            lowered = min(lowered, time.perf_counter() - start)
        count = len(g.nodes)
        rows.append((count, built / count, lowered / count))
        print(f"{count:>7} {built:>9.3f} {lowered:>9.3f} {built / count * 1e6:>14.1f} {lowered / count * 1e6:>14.1f}")
    build_ratio = max(r[1] for r in rows) / min(r[1] for r in rows)
    lower_ratio = max(r[2] for r in rows) / min(r[2] for r in rows)
    print(f"time per node, largest / smallest over sizes: build {build_ratio:.2f}x, lower {lower_ratio:.2f}x "
          f"(target: within 2x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
