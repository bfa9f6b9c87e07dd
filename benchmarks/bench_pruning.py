"""mcc's structured pruning against Torch-Pruning at equal MAC reductions, both fine-tuned the same way, both
compiled to arm-int8 by mcc.

    python benchmarks/bench_pruning.py [--models digits_resnet,digits_classifier] [--ratios 0.3,0.5,0.7]
                                       [--epochs 5] [--lr 0.005] [--seeds 0,1,2]

For each model (trained on scikit-learn's digits; digits_resnet on the digits upsampled to 16x16) and each MAC
reduction r:
- mcc: `--prune r --prune-schedule global --prune-criterion l1` (first and last layer left alone, the default),
  then `--finetune` on the training split with its labels (Hinton distillation from the unpruned model + task loss);
- Torch-Pruning 1.6.1: tp.pruner.MagnitudePruner with GroupMagnitudeImportance(p=1) (1.6's name for the group L1
  norm, GroupNormImportance before), global_pruning=True, the first conv and the classifier ignored (as mcc leaves
  them), its pruning_ratio searched (bisection) for the smallest one whose MACs, counted by
  tp.utils.count_ops_and_params, drop by r; the pruned module exported with torch.export, loaded by mcc and
  fine-tuned by mcc's own trainer (passes/finetune.py, through IRModule: the same loss, epochs, learning rate,
  temperature, batch, seed and the same unpruned teacher), so only the channels chosen differ. Both rank by the
  same group L1 norm (weights as trained and |gamma|, normalized by the group's mean); mcc stops at the MAC target,
  Torch-Pruning at the threshold its pruning_ratio sets, so the kept counts can differ by a channel or two. Both
  rank every channel by the same normalized score and remove the lowest (Torch-Pruning: all under a threshold
  set by a channel count; mcc: one by one until the MAC goal), so the sets are nested and only the stopping point
  differs: the row "mcc @TP MACs" prunes mcc to exactly the MACs Torch-Pruning reached (by mcc's count), which
  is the issue's "at equal MACs".
Fine-tuning is run once per seed in --seeds (finetune_seed: the weights' init is the pruned model, the seed orders
the samples), for both tools; the accuracy printed is the mean over the seeds, and the test images each seed got
wrong follow it, as one run's difference between the tools is a few of the 450 images.
Both are compiled to arm-int8 with the same 128 calibration images. Printed side by side: MACs and params (mcc's
count on its IR), int8 file bytes, LiteRT latency (XNNPACK, one thread, median; analyze.latency_ms), and test
accuracy of the int8 file in LiteRT on the 450 held-out digits (examples/digits.py: the same set-up and scoring as
tests/test_prune_accuracy.py); then pruned vs unpruned int8 latency ratios. The
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
from mcc.examples.digits import digits_case, litert_accuracy  # noqa: E402
from mcc.frontend.torch_export import from_module  # noqa: E402
from mcc.ir.stats import totals  # noqa: E402
from mcc.passes import run_pipeline  # noqa: E402
from mcc.passes.finetune import FinetuneData  # noqa: E402
from mcc.runtime.litert import make_interpreter  # noqa: E402
from mcc.targets import CANONICALIZE  # noqa: E402

IGNORED = {"digits_resnet": ("stem.0", "fc"), "digits_classifier": ("features.0.0", "fc")}  # mcc's first, last


def latency(data: bytes, x: np.ndarray) -> float:
    """LiteRT latency in ms (XNNPACK, one thread, median) of a .tflite with one float NHWC input, on x[:1] (NCHW)."""
    name = make_interpreter(data, "default").get_input_details()[0]["name"]
    return latency_ms(data, "tflite", {name: np.ascontiguousarray(x[:1].transpose(0, 2, 3, 1))})


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


def tuned(graph, case, data: FinetuneData, options: dict, seeds: list[int]):
    """Compile `graph` to arm-int8 fine-tuned once per seed: (first seed's result, accuracy per seed)."""
    first, accuracies = None, []
    for seed in seeds:
        r = compile_model(graph.copy(), "arm-int8", calib=case.calib, finetune=data,
                          options={**options, "finetune_seed": seed})
        first = first or r
        accuracies.append(litert_accuracy(r.data, case.x_test, case.y_test))
    return first, accuracies


def bench(name: str, ratios: list[float], epochs: int, lr: float, seeds: list[int]) -> list[str]:
    import torch

    case = digits_case(name)
    n_test = len(case.y_test)
    data = FinetuneData({"x": case.x_train}, case.y_train, case.graph)  # one teacher, outputs computed once
    train = {"epochs": epochs, "finetune_lr": lr}
    have_tp = importlib.util.find_spec("torch_pruning") is not None

    plain = compile_model(case.graph.copy(), "arm-int8", calib=case.calib).data
    macs0, params0 = counts(case.graph)
    acc0, lat0 = litert_accuracy(plain, case.x_test, case.y_test), latency(plain, case.x_test)
    lines = [f"== {name}: global L1 pruning + distillation fine-tuning ({epochs} epochs, lr {lr:g}, T 4, labels; "
             f"finetune seeds {','.join(map(str, seeds))}), arm-int8; unpruned int8: {macs0:,} MACs, {params0:,} "
             f"params, {len(plain):,} bytes, {lat0 * 1000:.1f} us, accuracy {acc0:.2%} "
             f"({round((1 - acc0) * n_test)} of {n_test} wrong)",
             f"{'MACs cut':>8} | {'tool':<14} {'MAC cut':>7} {'MACs':>10} {'params':>8} {'int8 bytes':>10} "
             f"{'latency us':>10} {'accuracy':>8}  wrong per seed"]
    speed, notes, means = [], [], {}
    for ratio in ratios:
        rows = []
        r, accs = tuned(case.graph, case, data, {"prune": ratio, "prune_schedule": "global",
                                                 "prune_criterion": "l1", **train}, seeds)
        p = r.report["pruning"]
        lat = latency(r.data, case.x_test)
        rows.append(("mcc", p["mac_ratio_removed"], p["macs"]["after"], p["params"]["after"], len(r.data), lat, accs))
        speed.append(f"{ratio:.0%}: {lat0 / lat:.2f}x")
        if have_tp:
            tp_model, reached, tp_ratio = torch_pruned(case.model, case.example, ratio, IGNORED[name])
            with torch.no_grad():
                tp_graph = from_module(tp_model.eval(), (case.example,))
            t, accs = tuned(tp_graph, case, data, train, seeds)
            macs, params = counts(tp_graph)
            rows.append(("Torch-Pruning", 1 - macs / macs0, macs, params, len(t.data), latency(t.data, case.x_test),
                         accs))
            # mcc at exactly Torch-Pruning's MACs (the "at equal MACs"): its ratio, by mcc's count
            e, accs = tuned(case.graph, case, data, {"prune": 1 - macs / macs0, "prune_schedule": "global",
                                                     "prune_criterion": "l1", **train}, seeds)
            q = e.report["pruning"]
            rows.append(("mcc @TP MACs", q["mac_ratio_removed"], q["macs"]["after"], q["params"]["after"], len(e.data),
                         latency(e.data, case.x_test), accs))
            notes.append(f"{ratio:.0%}: Torch-Pruning pruning_ratio {tp_ratio:.3f}, MACs cut {reached:.1%} by its "
                         "own count")
        else:
            rows.append(("Torch-Pruning", None, None, None, None, None, None))
        for k, (tool, cut, macs, params, size, lat, accs) in enumerate(rows):
            if cut is None:
                lines.append(f"{'':>8} | {tool:<14} {'n/a (pip install torch-pruning==1.6.1)':>58}")
                continue
            means.setdefault(tool, []).append(float(np.mean(accs)))
            wrong = " ".join(str(round((1 - a) * n_test)) for a in accs)
            lines.append(f"{(f'{ratio:.0%}' if k == 0 else ''):>8} | {tool:<14} {cut:>7.1%} {macs:>10,} {params:>8,} "
                         f"{size:>10,} {lat * 1000:>10.1f} {float(np.mean(accs)):>8.2%}  {wrong}")
    lines.extend(notes)
    for tool in ("mcc", "mcc @TP MACs"):
        if tool in means and "Torch-Pruning" in means:
            lines.append(f"{tool}: mean accuracy minus Torch-Pruning's, in test images: " + ", ".join(
                f"{ratio:.0%}: {(m - t) * n_test:+.1f}" for ratio, m, t in zip(ratios, means[tool], means["Torch-Pruning"])))
    lines.append("mcc pruned vs unpruned int8 LiteRT latency (speed-up): " + ", ".join(speed))
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="digits_resnet,digits_classifier")
    p.add_argument("--ratios", default="0.3,0.5,0.7")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--lr", type=float, default=0.005)
    p.add_argument("--seeds", default="0,1,2", help="fine-tuning seeds, each run for both tools")
    args = p.parse_args(argv)
    for name in args.models.split(","):
        print("\n".join(bench(name, [float(v) for v in args.ratios.split(",")], args.epochs, args.lr,
                               [int(v) for v in args.seeds.split(",")])), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
