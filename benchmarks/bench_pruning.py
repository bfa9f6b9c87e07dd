"""mcc's structured pruning against Torch-Pruning at equal MAC reductions, both fine-tuned the same way, both
compiled to arm-int8 by mcc.

    python benchmarks/bench_pruning.py [--models digits_resnet,digits_classifier] [--ratios 0.3,0.5,0.7]
                                       [--epochs 5] [--lr 0.005]

For each model (trained on scikit-learn's digits; digits_resnet on the digits upsampled to 16x16) and each MAC
reduction r:
- mcc: `--prune r --prune-schedule global --prune-criterion l1` (first and last layer left alone, the default),
  then `--finetune` on the training split with its labels (Hinton distillation from the unpruned model + task loss);
- Torch-Pruning 1.6.1: tp.pruner.MagnitudePruner with GroupMagnitudeImportance(p=1) (1.6's name for the group L1
  norm, GroupNormImportance before), global_pruning=True, the first conv and the classifier ignored (as mcc leaves
  them), its pruning_ratio searched (bisection) for the smallest one whose MACs, counted by
  tp.utils.count_ops_and_params, drop by r; the pruned module exported with torch.export, loaded by mcc and
  fine-tuned by mcc's own trainer (passes/finetune.py, through IRModule: the same loss, epochs, learning rate,
  temperature, batch, seed and the same unpruned teacher), so only the channels chosen differ.
Both are compiled to arm-int8 with the same 128 calibration images. Printed side by side: MACs and params (mcc's
count on its IR), int8 file bytes, LiteRT latency (XNNPACK, one thread, median; analyze.latency_ms), and test
accuracy of the int8 file in LiteRT on the 450 held-out digits; then pruned vs unpruned int8 latency ratios. The
digits nets are small (the classifier runs in microseconds), so their latency ratios are noisy; the bytes and
accuracies repeat run to run. Torch-Pruning is a benchmark-only extra (`bench`): without it its columns are n/a.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import sys
from pathlib import Path

import numpy as np

# This file's folder is not an import root: benchmarks/coverage.py would shadow coverage.py, which numba imports.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from mcc.analyze import latency_ms  # noqa: E402
from mcc.compiler import compile_model  # noqa: E402
from mcc.examples.zoo import digits_classifier, digits_resnet, digits_split, digits_upsampled_split  # noqa: E402
from mcc.frontend.torch_export import from_module  # noqa: E402
from mcc.ir.stats import totals  # noqa: E402
from mcc.passes import run_pipeline  # noqa: E402
from mcc.passes.finetune import FinetuneData  # noqa: E402
from mcc.runtime.litert import make_interpreter  # noqa: E402
from mcc.targets import CANONICALIZE  # noqa: E402

MODELS = {"digits_resnet": (digits_resnet, digits_upsampled_split, ("stem.0", "fc")),
          "digits_classifier": (digits_classifier, digits_split, ("features.0.0", "fc"))}


def litert(data: bytes, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(test accuracy, latency in ms) of a .tflite with a float NHWC interface in LiteRT (XNNPACK)."""
    x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    interp = make_interpreter(data, "default")
    i, o = interp.get_input_details()[0], interp.get_output_details()[0]
    hits = 0
    for k in range(len(x)):
        interp.set_tensor(i["index"], x[k:k + 1])
        interp.invoke()
        hits += int(interp.get_tensor(o["index"]).argmax() == y[k])
    return hits / len(x), latency_ms(data, "tflite", {i["name"]: x[:1]})


def counts(graph) -> tuple[int, int]:
    t = totals(run_pipeline(graph, list(CANONICALIZE))[0])
    return t["macs"], t["params"]


def torch_pruned(model, example, ratio: float, ignored: tuple[str, ...]):
    """Torch-Pruning's global group-L1 pruning at the smallest pruning_ratio whose MACs (its own count) drop by
    `ratio`: (module, MAC reduction reached, pruning_ratio)."""
    import torch_pruning as tp

    base = tp.utils.count_ops_and_params(model, example)[0]

    def prune(pruning_ratio):
        m = copy.deepcopy(model)
        modules = dict(m.named_modules())
        pruner = tp.pruner.MagnitudePruner(m, example, importance=tp.importance.GroupMagnitudeImportance(p=1),
                                           global_pruning=True, pruning_ratio=pruning_ratio,
                                           ignored_layers=[modules[n] for n in ignored])
        pruner.step()
        return m, 1 - tp.utils.count_ops_and_params(m, example)[0] / base

    lo, hi = 0.0, 0.95
    best = prune(hi) + (hi,)
    for _ in range(12):
        mid = (lo + hi) / 2
        m, reached = prune(mid)
        if reached >= ratio:
            hi, best = mid, (m, reached, mid)
        else:
            lo = mid
    return best


def bench(name: str, ratios: list[float], epochs: int, lr: float) -> list[str]:
    import torch

    build, split_of, ignored = MODELS[name]
    model, example = build()
    split = split_of()
    graph = from_module(model, (example,))
    x_train, y_train = split.x_train.numpy(), split.y_train.numpy()
    x_test, y_test = split.x_test.numpy(), split.y_test.numpy()
    calib = {"x": x_train[:128]}
    data = FinetuneData({"x": x_train}, y_train, graph)  # one teacher, its outputs computed once for every run
    train = {"epochs": epochs, "finetune_lr": lr}
    have_tp = importlib.util.find_spec("torch_pruning") is not None

    plain = compile_model(graph.copy(), "arm-int8", calib=calib).data
    macs0, params0 = counts(graph)
    acc0, lat0 = litert(plain, x_test, y_test)
    lines = [f"== {name}: global L1 pruning + distillation fine-tuning ({epochs} epochs, lr {lr:g}, T 4, labels), "
             f"arm-int8; unpruned int8: {macs0:,} MACs, {params0:,} params, {len(plain):,} bytes, "
             f"{lat0 * 1000:.1f} us, accuracy {acc0:.2%}",
             f"{'MACs cut':>8} | {'tool':<13} {'MAC cut':>7} {'MACs':>10} {'params':>8} {'int8 bytes':>10} "
             f"{'latency us':>10} {'accuracy':>8}"]
    speed, notes = [], []
    for ratio in ratios:
        rows = []
        r = compile_model(graph.copy(), "arm-int8", calib=calib, finetune=data,
                          options={"prune": ratio, "prune_schedule": "global", "prune_criterion": "l1", **train})
        p = r.report["pruning"]
        acc, lat = litert(r.data, x_test, y_test)
        rows.append(("mcc", p["mac_ratio_removed"], p["macs"]["after"], p["params"]["after"], len(r.data), lat, acc))
        speed.append(f"{ratio:.0%}: {lat0 / lat:.2f}x")
        if have_tp:
            tp_model, reached, tp_ratio = torch_pruned(model, example, ratio, ignored)
            with torch.no_grad():
                tp_graph = from_module(tp_model.eval(), (example,))
            t = compile_model(tp_graph, "arm-int8", calib=calib, finetune=data, options=train)
            macs, params = counts(tp_graph)
            acc, lat = litert(t.data, x_test, y_test)
            rows.append(("Torch-Pruning", 1 - macs / macs0, macs, params, len(t.data), lat, acc))
            notes.append(f"{ratio:.0%}: Torch-Pruning pruning_ratio {tp_ratio:.3f}, MACs cut {reached:.1%} by its "
                         "own count")
        else:
            rows.append(("Torch-Pruning", None, None, None, None, None, None))
        for k, (tool, cut, macs, params, size, lat, acc) in enumerate(rows):
            if cut is None:
                lines.append(f"{'':>8} | {tool:<13} {'n/a (pip install torch-pruning==1.6.1)':>58}")
                continue
            lines.append(f"{(f'{ratio:.0%}' if k == 0 else ''):>8} | {tool:<13} {cut:>7.1%} {macs:>10,} {params:>8,} "
                         f"{size:>10,} {lat * 1000:>10.1f} {acc:>8.2%}")
    lines.extend(notes)
    lines.append("mcc pruned vs unpruned int8 LiteRT latency (speed-up): " + ", ".join(speed))
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="digits_resnet,digits_classifier")
    p.add_argument("--ratios", default="0.3,0.5,0.7")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--lr", type=float, default=0.005)
    args = p.parse_args(argv)
    for name in args.models.split(","):
        print("\n".join(bench(name, [float(v) for v in args.ratios.split(",")], args.epochs, args.lr)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
