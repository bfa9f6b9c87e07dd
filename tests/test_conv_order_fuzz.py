"""The float conv kernels against a plain per-element reference of the exact float32 sequence each rule set
prescribes (runtime/kernels/conv.py): random groups, depthwise multipliers, kernels, strides, dilations,
asymmetric padding, odd channel tails and batches, compared bit for bit (as int32)."""

import os
import subprocess
import sys
from pathlib import Path

import numba
import numpy as np
import pytest

from mcc.ir import Graph
from mcc.runtime import run
from mcc.runtime.kernels.conv import fma32

RULES = ("litert-ref", "litert-xnnpack")


@numba.njit(cache=True)
def reference(x, w, bias, groups, stride, pad, dil, out_hw, fused, columns_first):
    """One output element at a time, scalar: start at the bias (`fused`, XNNPACK) or 0, one step per tap in
    filter-row, filter-column (column, row with `columns_first`), input-channel order skipping the padding, each
    step w * x + total rounded twice, or once (`fused`); TFLite's reference adds the bias last."""
    n, h, wd, c = x.shape
    kh, kw, group_c, out_c = w.shape
    per_group = out_c // groups
    out = np.empty((n, out_hw[0], out_hw[1], out_c), np.float32)
    for b in range(n):
        for oy in range(out_hw[0]):
            for ox in range(out_hw[1]):
                for oc in range(out_c):
                    total = bias[oc] if fused else np.float32(0)
                    for t in range(kh * kw):
                        ky, kx = (t % kh, t // kh) if columns_first else (t // kw, t % kw)
                        iy = oy * stride[0] - pad[0] + ky * dil[0]
                        ix = ox * stride[1] - pad[1] + kx * dil[1]
                        if 0 <= iy < h and 0 <= ix < wd:
                            for ic in range(group_c):
                                v = x[b, iy, ix, oc // per_group * group_c + ic]
                                total = fma32(w[ky, kx, ic, oc], v, total) if fused else total + w[ky, kx, ic, oc] * v
                    out[b, oy, ox, oc] = total if fused else total + bias[oc]
    return out


def random_case(rng):
    """(op, x NHWC, HWIO weight, bias, groups, attrs) of a random conv or depthwise conv."""
    kind = rng.choice(["dense", "depthwise", "multiplier2", "grouped"])
    kh, kw = rng.integers(1, 8, 2)
    if kind == "dense":
        groups, group_c, per_group = 1, int(rng.integers(1, 20)), int(rng.integers(1, 71))
    elif kind == "grouped":
        groups, group_c, per_group = int(rng.integers(2, 5)), int(rng.integers(2, 6)), int(rng.integers(1, 20))
    else:
        groups, group_c, per_group = int(rng.integers(1, 71)), 1, 1 if kind == "depthwise" else 2
    stride, dil = [int(s) for s in rng.integers(1, 3, 2)], [int(d) for d in rng.integers(1, 3, 2)]
    pad = [int(p) for p in rng.integers(0, 4, 4)]
    h, w_ = dil[0] * (kh - 1) + int(rng.integers(1, 9)), dil[1] * (kw - 1) + int(rng.integers(1, 9))
    x = rng.standard_normal((int(rng.integers(1, 4)), h, w_, groups * group_c)).astype(np.float32) * 3
    w = rng.standard_normal((kh, kw, group_c, groups * per_group)).astype(np.float32)
    if rng.random() < 0.2:  # signed zeros: a tap in the padding must not turn -0 into +0
        x[rng.random(x.shape) < 0.5] = -0.0
        w[rng.random(w.shape) < 0.5] = 0.0
    if rng.random() < 0.1:  # infinities: inf * 0 and inf - inf make NaN, so a skipped tap shows
        x[rng.random(x.shape) < 0.05] = np.inf
        w[rng.random(w.shape) < 0.1] = 0.0
    bias = rng.standard_normal(groups * per_group).astype(np.float32) * (rng.random() < 0.8)
    op = "depthwise_conv2d" if kind in ("depthwise", "multiplier2") and rng.random() < 0.7 else "conv2d"
    attrs = {"stride": stride, "padding": pad, "dilation": dil,
             **({"groups": groups} if op == "conv2d" else {"multiplier": per_group})}
    return op, x, w, None if rng.random() < 0.1 else bias, groups, attrs


def run_conv(op, x, w_hwio, bias, attrs, rules):
    """The conv as a one-node NHWC graph through the runtime (weights in the TFLite convention of the op)."""
    g = Graph()
    t = g.add_input("x", x.shape, layout="NHWC")
    w = w_hwio.transpose(3, 0, 1, 2) if op == "conv2d" else w_hwio.transpose(2, 0, 1, 3)  # OHWI / [1,kh,kw,O]
    bias = [] if bias is None else [g.constant("b", bias)]
    node = g.add_node(op, [t, g.constant("w", np.ascontiguousarray(w))] + bias, attrs)
    g.outputs = list(node.outputs)
    g.verify()
    return run(g, {"x": x}, rules=rules)[node.outputs[0].name]


def check(seed):
    rng = np.random.default_rng(seed)
    op, x, w, bias, groups, attrs = random_case(rng)
    kh, kw = w.shape[:2]
    (top, left, bottom, right), (sh, sw), (dh, dw) = attrs["padding"], attrs["stride"], attrs["dilation"]
    out_hw = ((x.shape[1] + top + bottom - dh * (kh - 1) - 1) // sh + 1,
              (x.shape[2] + left + right - dw * (kw - 1) - 1) // sw + 1)
    for rules in RULES:
        fused = rules == "litert-xnnpack"
        # XNNPACK's single-pass depthwise (multiplier 1, <= 25 taps) walks its taps column by column
        columns_first = fused and op == "depthwise_conv2d" and w.shape[3] == x.shape[3] and kh * kw <= 25
        zero_bias = np.zeros(w.shape[3], np.float32) if bias is None else bias  # TFLite adds 0.0f
        want = reference(x, w, zero_bias, groups, (sh, sw), (top, left), (dh, dw), out_hw, fused, columns_first)
        got = run_conv(op, x, w, bias, attrs, rules)
        assert got.shape == want.shape and np.array_equal(got.view(np.int32), want.view(np.int32)), \
            (seed, op, x.shape, w.shape, groups, attrs, rules, int((got.view(np.int32) != want.view(np.int32)).sum()))


@pytest.mark.parametrize("seed", range(60))
def test_conv_matches_the_per_element_sequence(seed):
    check(seed)


@pytest.mark.slow
@pytest.mark.parametrize("block", range(10))
def test_conv_matches_the_per_element_sequence_many(block):
    for seed in range(1000 + 100 * block, 1100 + 100 * block):
        check(seed)


def test_the_two_orders_differ():
    """The reference's two sequences really differ on these data, so each rule set's order is checked."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1, 6, 6, 24)).astype(np.float32)
    w = rng.standard_normal((3, 3, 24, 40)).astype(np.float32)
    bias = rng.standard_normal(40).astype(np.float32)
    attrs = {"stride": [1, 1], "padding": [1, 1, 1, 1], "dilation": [1, 1], "groups": 1}
    assert not np.array_equal(run_conv("conv2d", x, w, bias, attrs, "litert-ref"),
                              run_conv("conv2d", x, w, bias, attrs, "litert-xnnpack"))


# The tiles' vector width follows the CPU numba compiles for; the other widths, compiled for older x86 CPUs that this
# one also runs, in a child process (the width is fixed at import).
NARROWER = [("haswell", "+64bit,+avx,+avx2,+fma,+sse,+sse2,+sse3,+ssse3,+sse4.1,+sse4.2,+popcnt,+cx16", 8),
            ("nehalem", "+64bit,+sse,+sse2,+sse3,+ssse3,+sse4.1,+sse4.2,+popcnt,+cx16", 4)]


def passes_with_lanes(cpu: str, features: str, lanes: int, module: str, checks: str) -> None:
    """Run `checks` (Python source calling test module `module`'s checks as m) in a process whose numba compiles
    for `cpu` with `features`, where the float tiles must have `lanes` lanes. The module is imported by its name, so
    numba's cache can name the module of its compiled functions (a module loaded from a spec without one is
    "<dynamic>", which the next process's cache load cannot import)."""
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import {module} as m; "
            "from mcc.runtime.kernels import conv; "
            f"assert conv.L == {lanes}, conv.L; {checks}; print('ok')")
    env = {**os.environ, "NUMBA_CPU_NAME": cpu, "NUMBA_CPU_FEATURES": features}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("cpu, features, lanes", NARROWER)
def test_narrower_vectors_keep_the_sequence(cpu, features, lanes):
    passes_with_lanes(cpu, features, lanes, "test_conv_order_fuzz", "[m.check(seed) for seed in range(300)]")


def test_tile_variants_have_their_own_names():
    """numba names a compiled function's symbols after its qualified name and a per-process counter: closures of one
    name, each cached by another process as its first compiled function, got one symbol, and a process that loaded
    two of them crashed ("NRT_adapt_ndarray_to_python: descr is NULL", seen with the package's numba cache)."""
    from mcc.runtime.kernels import conv

    names = {f.py_func.__qualname__ for f in conv._TILES.values()}
    assert len(names) == len(conv._TILES) == 4
