"""Binary layers in mcc's runtime: the packed 1-bit kernels (runtime/kernels/int8_binary.py) against the int8 GEMM on
the same layers, and the bytes of the stock file against 1 bit per weight.

    python benchmarks/bench_binary.py [--models digits_classifier,resnet18_style] [--repeat 30] [--batch 8]

Per model, its arm-binary files (digits: trained, calibrated on 64 training images; the others: random weights, 32
standard-normal samples), with binary weights only and with binary weights and activations (binarize's
binary_activations), and its arm-int8 file. For every binary layer (every conv2d / fully_connected but the first and
last), the median time of the int8 kernel (float GEMM over the integers, numpy's BLAS on one thread) and of the
packed kernel on the layer's real int8 input of a --batch sample batch, in the same process, with the packed kernel's
output checked equal to the int8 kernel's; their ratio (int8 / packed: above 1, the packed kernel is faster), and the
kernel the interpreter runs: never the 8-bit-plane one (int8 activations: slower), and XNOR-popcount for binary
activations where its cost model (int8_binary.xnor_chosen) takes it. Bytes: per binary layer its int8 weights and
float32 scales as the stock file stores them against 1 bit per weight plus a float32 scale per channel, and the whole
file with the binary layers stored either way. Accuracy (digits): the arm-int8 file and the arm-binary ones without
fine-tuning, in mcc's runtime (fine-tuned figures: tests/test_binarize.py prints them).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

# This file's folder is not an import root: benchmarks/coverage.py would shadow coverage.py, which numba imports.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from mcc.benchmarks.timing import median_seconds  # noqa: E402
from mcc.compiler import compile_model  # noqa: E402
from mcc.examples.zoo import ZOO, digits_split  # noqa: E402
from mcc.ir.traits import weight_axes, weighted  # noqa: E402
from mcc.runtime.interpreter import evaluate_node, run  # noqa: E402
from mcc.runtime.kernels.int8_binary import (binary_magnitudes, bit_planes, int8_only, packed_bytes,  # noqa: E402
                                             xnor_always, xnor_chosen)
from mcc.validate import read_compiled  # noqa: E402


def _batched(model, example, batch: int, tmp: Path, name: str):
    """The model exported at batch size `batch`, its calibration data, and an input batch."""
    if name == "digits_classifier":
        split = digits_split()
        calib, x = split.x_train[:64].numpy(), split.x_test[:batch]
    else:
        rng = np.random.default_rng(0)
        calib = rng.standard_normal((32, *example.shape[1:])).astype(np.float32)
        x = torch.from_numpy(rng.standard_normal((batch, *example.shape[1:])).astype(np.float32))
    src = tmp / f"{name}.pt2"
    torch.export.save(torch.export.export(model, (x,)), src)
    np.savez(tmp / "calib.npz", x=calib[:len(calib) // batch * batch])
    return src, x.numpy()


def _accuracy(path: Path, split) -> float:
    _, _, graph = read_compiled(path)
    name, batch = graph.inputs[0].name, graph.inputs[0].shape[0]
    x = split.x_test.numpy().transpose(0, 2, 3, 1)
    n = len(x) // batch * batch
    preds = np.concatenate([next(iter(run(graph, {name: x[i:i + batch]}).values())).argmax(-1)
                            for i in range(0, n, batch)])
    return float((preds == split.y_test.numpy()[:n]).mean())


# variant -> (binarize options, the context that forces the packed kernel, the runtime's choice for a window of
# `taps` taps: the 8-plane kernel never, XNOR-popcount by its cost model)
VARIANTS = {"binary weights (8-bit-plane kernel)": ({}, bit_planes, lambda taps: False),
            "binary weights and activations (XNOR-popcount kernel)": ({"binary_activations": True}, xnor_always,
                                                                      xnor_chosen)}


def bench(name: str, repeat: int, batch: int) -> None:
    model, example = ZOO[name]()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        src, x = _batched(model, example, batch, tmp, name)
        int8_file = tmp / f"{name}.arm-int8.tflite"
        compile_model(src, "arm-int8", int8_file, calib=tmp / "calib.npz")
        print(f"\n## {name} (batch {batch}; arm-int8 file {int8_file.stat().st_size:,} bytes)")
        accuracy = {"arm-int8": int8_file}
        for variant, (options, packed_mode, chosen) in VARIANTS.items():
            path = tmp / f"{name}.{len(accuracy)}.tflite"
            compile_model(src, "arm-binary", path, calib=tmp / "calib.npz", options=options)
            accuracy[f"arm-binary, {variant.split(' (')[0]}"] = path
            _layers(path, x, repeat, variant, packed_mode, chosen)
        if name == "digits_classifier":
            split = digits_split()
            print("\ndigits test accuracy without fine-tuning: " + ", ".join(
                f"{label} {_accuracy(path, split):.4f}" for label, path in accuracy.items()))


def _layers(path: Path, x: np.ndarray, repeat: int, variant: str, packed_context, chosen) -> None:
    """The per-layer table (both kernels timed, and the one the runtime's cost model runs) and the whole-model
    times of one arm-binary file."""
    _, _, graph = read_compiled(path)
    feeds = {graph.inputs[0].name: x.transpose(0, 2, 3, 1)}
    values = run(graph, feeds, keep_all=True)
    print(f"\n### {variant}\n")
    print("| layer | weights | int8 kernel ms | packed kernel ms | int8 / packed | runtime runs | stock bytes | "
          "packed bytes |")
    print("|---|---|---|---|---|---|---|---|")
    totals = np.zeros(5)
    for node in graph.nodes:
        if not weighted(node.op) or binary_magnitudes(node.inputs[1].data, weight_axes(node)[0]) is None:
            continue
        ins = [None if t is None else values[t.name] for t in node.inputs]
        with packed_context():
            packed_out = evaluate_node(node, ins)
            packed_s = median_seconds(lambda: evaluate_node(node, ins), repeat)
        with int8_only():
            plain_out = evaluate_node(node, ins)
            plain_s = median_seconds(lambda: evaluate_node(node, ins), repeat)
        assert all(np.array_equal(a, b) for a, b in zip(packed_out, plain_out)), node.name
        w, axis = node.inputs[1].data, weight_axes(node)[0]
        stock, packed = w.size + 4 * w.shape[axis], packed_bytes(w, axis)
        takes_packed = chosen(w.size // w.shape[axis])  # the taps of one output channel's window
        totals += (plain_s, packed_s, stock, packed, packed_s if takes_packed else plain_s)
        print(f"| {node.name} ({node.op}) | {w.size:,} | {plain_s * 1e3:.3f} | {packed_s * 1e3:.3f} | "
              f"{plain_s / packed_s:.2f} | {'packed' if takes_packed else 'int8'} | {stock:,} | {packed:,} |")
    size = path.stat().st_size
    print(f"| all binary layers | | {totals[0] * 1e3:.3f} | {totals[1] * 1e3:.3f} | {totals[0] / totals[1]:.2f} | "
          f"{totals[4] * 1e3:.3f} ms ({totals[0] / totals[4]:.2f}) | {int(totals[2]):,} | {int(totals[3]):,} |")
    print(f"\nfile: stock arm-binary .tflite {size:,} bytes; with the binary layers at 1 bit per weight "
          f"{size - int(totals[2]) + int(totals[3]):,} bytes ({(size - totals[2] + totals[3]) / size:.2f}x)")
    with packed_context():
        whole_packed = median_seconds(lambda: run(graph, feeds), repeat)
    with int8_only():
        whole_plain = median_seconds(lambda: run(graph, feeds), repeat)
    whole_chosen = median_seconds(lambda: run(graph, feeds), repeat)
    print(f"whole model in mcc's runtime: int8 kernels {whole_plain * 1e3:.3f} ms, packed binary kernels "
          f"{whole_packed * 1e3:.3f} ms (int8 / packed {whole_plain / whole_packed:.2f}), as the runtime chooses "
          f"{whole_chosen * 1e3:.3f} ms (int8 / chosen {whole_plain / whole_chosen:.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="digits_classifier,resnet18_style")
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--batch", type=int, default=8, help="a divisor of 32")
    args = parser.parse_args()
    import numba

    print(f"numba threads: {numba.get_num_threads()}; BLAS on one thread")
    for name in args.models.split(","):
        bench(name, args.repeat, args.batch)


if __name__ == "__main__":
    main()
