"""mcc's low-rank splits against tensorly's Tucker and CP decompositions at equal MACs, layer by layer.

    python benchmarks/bench_lowrank.py [--models resnet18_style,digits_classifier] [--ratio 0.5] [--samples 32]

For each model: mcc's low_rank pass at MAC ratio --ratio chooses a form (Tucker-2, spatial SVD) and rank per k x k
conv; then for each such conv, at the MACs mcc's choice costs:
- tensorly Tucker: `tensorly.decomposition.partial_tucker` on modes [0, 1] (HOOI in tensorly) at the ranks mcc's
  Tucker-2 would use for those MACs (mcc's own ranks where it chose Tucker-2; else equal fractions of the output
  and input channels, the largest whose Tucker-2 fits the MACs);
- tensorly CP: `tensorly.decomposition.parafac` at the largest rank whose 4-layer CP conv (Lebedev et al. 2015:
  1x1 C -> R, depthwise kh x 1, depthwise 1 x kw, 1x1 R -> O) fits the MACs.
Every figure is the layer's output relative squared error on the same calibration activations (mcc's float runtime
over the samples, factorize.patch_moments: exactly the error of running the split layer). Then totals: the MACs of
the k x k convs and the sum of their relative errors (mcc's as measured when choosing, on the unsplit model's
activations), and the whole model's output relative error with every conv split each way (mcc's choices as the pass
leaves them, last pieces refitted in graph order on the split upstream's activations; tensorly Tucker; tensorly CP), and for the digits classifier (trained in a second on
scikit-learn's digits; calibration on its training images) the test accuracy of each. resnet18_style has seeded
random weights and standard-normal inputs from a fixed seed, so the figures repeat run to run. tensorly is a peer for this
benchmark only, not a dependency of mcc.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

# This file's folder is not an import root: benchmarks/coverage.py would shadow coverage.py, which numba imports.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from mcc.examples.zoo import ZOO, digits_split  # noqa: E402
from mcc.frontend.torch_export import from_module  # noqa: E402
from mcc.ir.ops import macs, nchw  # noqa: E402
from mcc.passes import run_pipeline  # noqa: E402
from mcc.passes.factorize import (Piece, conv_geometry, oihw, patch_moments, relative_error, rewrite,  # noqa: E402
                                  spatial_conv, weight_matrix)
from mcc.passes.low_rank import _tucker_cost, cp_pieces  # noqa: E402
from mcc.runtime import run  # noqa: E402
from mcc.runtime.threads import blas_on_one_thread  # noqa: E402
from mcc.targets import CANONICALIZE  # noqa: E402


def tucker_ranks(node, budget: int, chosen: dict) -> tuple[int, int]:
    if chosen.get("form") == "tucker2":
        return tuple(chosen["rank"])
    o, c = nchw(node.outputs[0])[1], nchw(node.inputs[0])[1]
    best = (1, 1)
    for f in np.linspace(0.01, 1, 100):
        ro, ri = max(1, round(o * f)), max(1, round(c * f))
        if _tucker_cost(node, ro, ri) <= budget:
            best = (ro, ri)
    return best


def tensorly_tucker(node, ranks):
    import tensorly as tl
    from tensorly.decomposition import partial_tucker

    w = oihw(node)
    (core, (u_out, u_in)), _ = partial_tucker(tl.tensor(w), rank=list(ranks), modes=[0, 1], init="svd",
                                              random_state=0)
    core, u_out, u_in = (np.asarray(a, np.float64) for a in (core, u_out, u_in))
    pieces = [Piece("conv2d", "tl_reduce", u_in.T[:, :, None, None], conv_geometry()),
              Piece("conv2d", "tl_core", core, _geometry(node)),
              Piece("conv2d", "tl_expand", u_out[:, :, None, None], conv_geometry())]
    eff = np.einsum("rsyx,or,is->oiyx", core, u_out, u_in, optimize=True)
    return pieces, eff, _tucker_cost(node, *ranks)


def cp_cost(node, r: int) -> int:
    n, c, h, wi = nchw(node.inputs[0])
    _, o, ho, wo = nchw(node.outputs[0])
    kh, kw = oihw(node).shape[2:]
    return n * h * wi * c * r + n * ho * wi * r * kh + n * ho * wo * r * kw + n * ho * wo * r * o


def tensorly_cp(node, budget: int):
    import tensorly as tl
    from tensorly.decomposition import parafac

    r = 1
    while cp_cost(node, r + 1) <= budget:
        r += 1
    w = oihw(node)
    weights, (a_o, a_i, a_y, a_x) = parafac(tl.tensor(w), rank=r, init="svd", random_state=0, n_iter_max=200)
    a_o = np.asarray(a_o, np.float64) * np.asarray(weights, np.float64)
    a_i, a_y, a_x = (np.asarray(a, np.float64) for a in (a_i, a_y, a_x))
    pieces = cp_pieces(node, a_o, a_i, a_y, a_x)
    eff = np.einsum("or,ir,yr,xr->oiyx", a_o, a_i, a_y, a_x, optimize=True)
    return pieces, eff, cp_cost(node, r), r


def _geometry(node) -> dict:
    return conv_geometry(node.attrs["stride"], node.attrs["padding"], node.attrs["dilation"])


def _with_bias(node, eff):
    w_aug = weight_matrix(node)
    return np.concatenate([eff.reshape(len(eff), -1), w_aug[:, -1:]], axis=1)


def _split_graph(base, splits: dict):
    g = base.copy()
    for name, pieces in splits.items():
        rewrite(g, g.node(name), pieces, None)
    g.infer_shapes()
    g.verify()
    return g


def model_error(base, splits: dict, calib: np.ndarray) -> float:
    """The whole model's output relative squared error with each conv replaced by its pieces."""
    return output_error(base, _split_graph(base, splits), calib)


def accuracy(graph, digits) -> float:
    name, x = graph.inputs[0].name, digits.x_test.numpy()
    logits = np.concatenate([next(iter(run(graph, {name: x[i:i + 1]}).values())) for i in range(len(x))])
    return float((logits.argmax(1) == digits.y_test.numpy()).mean())


def output_error(base, graph, calib: np.ndarray) -> float:
    name = base.inputs[0].name
    want = np.concatenate([next(iter(run(base, {name: calib[i:i + 1]}).values())) for i in range(len(calib))])
    got = np.concatenate([next(iter(run(graph, {name: calib[i:i + 1]}).values())) for i in range(len(calib))])
    return float(((got.astype(np.float64) - want) ** 2).sum() / (want.astype(np.float64) ** 2).sum())


def bench(model_name: str, ratio: float, samples: int) -> list[str]:
    model, example = ZOO[model_name]()
    base = run_pipeline(from_module(model, (example,)), list(CANONICALIZE))[0]
    digits = digits_split() if model_name == "digits_classifier" else None
    calib = digits.x_train[:samples].numpy() if digits else \
        np.random.default_rng(0).standard_normal((samples,) + tuple(example.shape[1:])).astype(np.float32)
    feeds = {base.inputs[0].name: calib}
    convs = [n for n in base.nodes if spatial_conv(n)]
    start = time.perf_counter()  # the k x k convs only, as tensorly's decompositions are
    split, records = run_pipeline(base.copy(), ["low_rank"], {"low_rank": ratio, "calibration": feeds,
                                                              "low_rank_include": tuple(n.name for n in convs)})
    seconds = time.perf_counter() - start
    notes = records[0].notes["layers"]
    moments = patch_moments(base, convs, feeds, "bench")
    lines = [f"== {model_name}: low_rank {ratio:g} ({seconds:.1f} s, {samples} samples); per k x k conv, output "
             "relative squared error at equal MACs",
             f"{'layer':<22} {'MACs':>9} {'budget':>9} | {'mcc form':<18} {'mcc err':>8} | {'tl Tucker':<9} "
             f"{'MACs':>8} {'err':>8} | {'tl CP':<6} {'MACs':>8} {'err':>8}"]
    totals = {"full": 0, "mcc": [0, 0.0], "tucker": [0, 0.0], "cp": [0, 0.0]}
    splits = {"tucker": {}, "cp": {}}
    wins = 0
    with blas_on_one_thread():
        for n in convs:
            la, full = notes[n.name], macs(n)
            budget = la["macs_after"] if la["form"] != "kept" else full // 2
            w_aug, s = weight_matrix(n), moments[n.name]
            mcc_err = la["output_error"] if la["form"] != "kept" else 0.0
            t_pieces, t_eff, t_macs = tensorly_tucker(n, tucker_ranks(n, budget, la))
            c_pieces, c_eff, c_macs, c_rank = tensorly_cp(n, budget)
            t_err = relative_error(s, w_aug, _with_bias(n, t_eff))
            c_err = relative_error(s, w_aug, _with_bias(n, c_eff))
            if la["form"] != "kept":
                splits["tucker"][n.name], splits["cp"][n.name] = t_pieces, c_pieces
                wins += mcc_err <= min(t_err, c_err)
            form = la["form"] + (" " + "x".join(map(str, la["rank"])) if "rank" in la else "")
            lines.append(f"{n.name[:22]:<22} {full:>9,} {budget:>9,} | {form:<18} {mcc_err:>8.4f} | "
                         f"{'x'.join(map(str, tucker_ranks(n, budget, la))):<9} {t_macs:>8,} {t_err:>8.4f} | "
                         f"{c_rank:<6} {c_macs:>8,} {c_err:>8.4f}")
            totals["full"] += full
            if la["form"] != "kept":
                for k, m, e in (("mcc", la["macs_after"], mcc_err), ("tucker", t_macs, t_err), ("cp", c_macs, c_err)):
                    totals[k][0] += m
                    totals[k][1] += e
            else:
                for k in ("mcc", "tucker", "cp"):
                    totals[k][0] += full
    n_split = len(splits["tucker"])
    lines.append(f"{'total (k x k convs)':<22} {totals['full']:>9,} {'':>9} | {'mcc':<18} "
                 f"{totals['mcc'][1]:>8.4f} | {'':<9} {totals['tucker'][0]:>8,} {totals['tucker'][1]:>8.4f} | "
                 f"{'':<6} {totals['cp'][0]:>8,} {totals['cp'][1]:>8.4f}")
    lines.append(f"MACs of the k x k convs: mcc {totals['mcc'][0]:,}, tensorly Tucker {totals['tucker'][0]:,}, "
                 f"tensorly CP {totals['cp'][0]:,} (of {totals['full']:,}); mcc's error is the lowest of the three on "
                 f"{wins} of {n_split} split convs")
    errors = {"mcc": output_error(base, split, calib), "tensorly Tucker": model_error(base, splits["tucker"], calib),
              "tensorly CP": model_error(base, splits["cp"], calib)}
    lines.append("model output relative squared error, the same convs split each way: "
                 + ", ".join(f"{k} {v:.4f}" for k, v in errors.items()))
    if digits:
        graphs = {"unsplit": base, "mcc": split, "tensorly Tucker": _split_graph(base, splits["tucker"]),
                  "tensorly CP": _split_graph(base, splits["cp"])}
        lines.append("test accuracy (450 held-out digits): " + ", ".join(
            f"{k} {accuracy(g, digits):.2%}" for k, g in graphs.items()))
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="resnet18_style,digits_classifier")
    p.add_argument("--ratio", type=float, default=0.5)
    p.add_argument("--samples", type=int, default=32)
    args = p.parse_args(argv)
    for name in args.models.split(","):
        print("\n".join(bench(name, args.ratio, args.samples)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
