"""The int8 GEMM on AVX-512 VNNI tiles (runtime/kernels/int8_vnni.py) is taken where numba's target has VNNI and
gives the BLAS path's outputs to the bit: random one-group int8 convs (1x1, 3x3 stride 1 and 2 with padding) and
fully_connected layers with input zero points over -128..127, K not a multiple of 4, odd output channels and rows
not a multiple of the tile, under the litert-ref, litert-xnnpack and onnxruntime rules; accumulators whose
unsigned-by-signed sums wrap int32 while the true sums fit; the fallback where the target lacks VNNI. The kernels
against LiteRT and onnxruntime: tests/test_int8_kernels.py and tests/test_int8_e2e.py (which take the VNNI path on
such a host)."""

import os
import subprocess
import sys

import llvmlite.binding as llvm
import numpy as np
import pytest

from mcc.runtime.kernels import int8_gemm, int8_vnni
from mcc.runtime.kernels.int8_output import RowRequant, activation_bounds
from mcc.runtime.rules import rule_set

HOST_VNNI = "+avx512vnni" in llvm.get_host_cpu_features().flatten().split(",")
RULES = ("litert-ref", "litert-xnnpack", "onnxruntime")


def both_paths(monkeypatch, w_ohwi):
    """pack_gemm's packing for this host, and the BLAS path's (VNNI switched off for the packing)."""
    chosen = int8_gemm.pack_gemm(w_ohwi, 1, "int8")
    with monkeypatch.context() as patch:
        patch.setattr(int8_gemm, "VNNI", False)
        blas = int8_gemm.pack_gemm(w_ohwi, 1, "int8")
    assert blas[4] is None and blas[0] is not None
    return chosen, blas


def requant_for(rules, op, rng, out_c, depth, activation):
    """A bias and an output stage that spread sums of `depth` random int8 products over the output codes."""
    rule = rule_set(rules).rule(op)
    spread = 6000.0 * np.sqrt(depth)  # about the sums' deviation
    zero_point, scale = int(rng.integers(-128, 128)), np.float32(rng.uniform(0.02, 0.2))
    bounds = activation_bounds(activation, scale, zero_point, rule.kernels)
    bias = rng.integers(-spread, spread, out_c)
    return bias, RowRequant(rng.uniform(20, 60, out_c) / spread, rule, zero_point, bounds)


def test_the_vnni_path_is_chosen_by_the_target_features():
    """On a host with AVX-512 VNNI (and numba compiling for the host) the GEMM packs for VNNI tiles."""
    packed = int8_gemm.pack_gemm(np.ones((3, 1, 1, 5), np.int8), 1, "int8")
    assert int8_vnni.VNNI == HOST_VNNI
    assert (packed[4] is not None) == HOST_VNNI and (packed[0] is None) == HOST_VNNI
    # never for a 16x8 layer or several groups
    assert int8_gemm.pack_gemm(np.ones((4, 1, 1, 5), np.int8), 1, "int16")[4] is None
    assert int8_gemm.pack_gemm(np.ones((4, 1, 1, 5), np.int8), 2, "int8")[4] is None


def test_weight_row_sums_and_reach():
    """operand_dtype's one-pass row sums: each channel's sum(w) and the reach sum|w| * largest, as numpy's int64
    sums give them, for int8 weights with -128 and for a strided (depthwise-style) view; float64 at 2**24."""
    rng = np.random.default_rng(0)
    w = rng.integers(-128, 128, (37, 3, 3, 29)).astype(np.int8)
    w[0, 0, 0, 0] = -128
    for rows in (w.reshape(37, -1), w[..., 0].transpose(1, 2, 0).reshape(9, 37)):
        dtype, reach, sums = int8_gemm.operand_dtype(rows, 128)
        wide = rows.astype(np.int64)
        assert sums.dtype == np.int64 and np.array_equal(sums, wide.sum(axis=1))
        assert reach == float(np.abs(wide).sum(axis=1).max() * 128) and dtype is np.float32
    edge = np.full((2, 1 << 17), -128, np.int8)  # sum|w| * 128 = 2**31: past float32's exact integers
    assert int8_gemm.operand_dtype(edge, 128)[:2] == (np.float64, float(1 << 31))


@pytest.mark.skipif(not HOST_VNNI, reason="the host CPU has no AVX-512 VNNI")
@pytest.mark.parametrize("rules", RULES)
@pytest.mark.parametrize("seed", range(12))
def test_vnni_conv_equals_blas(monkeypatch, rules, seed):
    rng = np.random.default_rng(seed)
    kh = kw = int(rng.choice([1, 3]))
    stride = [int(rng.choice([1, 2]))] * 2 if kh == 3 else [1, 1]
    pad = [int(p) for p in rng.integers(0, 2, 4)] if kh == 3 else [0, 0, 0, 0]
    n, h, w = int(rng.integers(1, 3)), int(rng.integers(3, 23)), int(rng.integers(3, 23))
    channels, out_c = int(rng.choice([1, 3, 5, 16, 27, 64])), int(rng.choice([1, 7, 16, 33, 61, 96]))
    x = rng.integers(-128, 128, (n, h, w, channels)).astype(np.int8)
    w_ohwi = rng.integers(-128, 128, (out_c, kh, kw, channels)).astype(np.int8)
    out_h = (h + pad[0] + pad[2] - kh) // stride[0] + 1
    out_w = (w + pad[1] + pad[3] - kw) // stride[1] + 1
    chosen, blas = both_paths(monkeypatch, w_ohwi)
    assert chosen[4] is not None
    zero_point = int(rng.integers(-128, 128))
    bias, requant = requant_for(rules, "conv2d", rng, out_c, kh * kw * channels,
                                [None, "relu", "relu6"][int(rng.integers(3))])
    args = ((kh, kw), stride, (1, 1), pad, out_h, out_w, bias, requant, np.int8)
    got = int8_gemm.conv_gemm(x, zero_point, chosen, *args)
    want = int8_gemm.conv_gemm(x, zero_point, blas, *args)
    assert got.shape == (n, out_h, out_w, out_c)
    np.testing.assert_array_equal(got, want)
    assert len(np.unique(want)) > 2  # the output stage does not collapse the comparison to the bounds


@pytest.mark.skipif(not HOST_VNNI, reason="the host CPU has no AVX-512 VNNI")
@pytest.mark.parametrize("rules", RULES)
@pytest.mark.parametrize("rows, depth, out_c", [(1, 1280, 1000), (5, 37, 11), (9, 130, 33), (300, 66, 17)])
def test_vnni_fully_connected_equals_blas(monkeypatch, rules, rows, depth, out_c):
    rng = np.random.default_rng(rows * depth)
    x = rng.integers(-128, 128, (1, 1, rows, depth)).astype(np.int8)
    w_ohwi = rng.integers(-128, 128, (out_c, 1, 1, depth)).astype(np.int8)
    chosen, blas = both_paths(monkeypatch, w_ohwi)
    bias, requant = requant_for(rules, "fully_connected", rng, out_c, depth, None)
    window = ((1, 1), (1, 1), (1, 1), (0, 0, 0, 0), 1, rows, bias, requant, np.int8)
    zero_point = int(rng.integers(-128, 128))
    want = int8_gemm.conv_gemm(x, zero_point, blas, *window)
    np.testing.assert_array_equal(int8_gemm.conv_gemm(x, zero_point, chosen, *window), want)
    assert len(np.unique(want)) > 2


@pytest.mark.skipif(not HOST_VNNI, reason="the host CPU has no AVX-512 VNNI")
def test_vnni_sums_that_wrap_int32_before_the_offset_is_taken_off(monkeypatch):
    """x = 127 and w = 127 over K = 70001: the tiles' unsigned sums (x + 128) * w pass 2**31 and wrap, the true
    sums (~1.13e9, and reach ~1.14e9 < 2**31) do not, so the accumulators must still be exact, as integer sums
    in numpy give them."""
    depth, rows = 70001, 10
    x = np.full((1, 1, rows, depth), 127, np.int8)
    x[0, 0, ::3, ::7] = -128
    w_ohwi = np.full((3, 1, 1, depth), 127, np.int8)
    w_ohwi[1, ..., ::2] = -127
    chosen, blas = both_paths(monkeypatch, w_ohwi)
    assert chosen[4] is not None and 255 * 127 * depth > 2 ** 31
    requant = RowRequant(np.full(3, 2.0 ** -24), rule_set("litert-ref").rule("fully_connected"), 0, (-128, 127))
    window = ((1, 1), (1, 1), (1, 1), (0, 0, 0, 0), 1, rows, np.zeros(3, np.int64), requant, np.int8)
    got = int8_gemm.conv_gemm(x, 0, chosen, *window)
    np.testing.assert_array_equal(got, int8_gemm.conv_gemm(x, 0, blas, *window))
    exact = x[0, 0].astype(np.int64) @ w_ohwi[:, 0, 0].astype(np.int64).T
    np.testing.assert_array_equal(got[0, 0], np.clip(np.round(exact / 2.0 ** 24), -128, 127))


def test_accumulators_beyond_int32_keep_the_blas_path():
    """sum|w| * 128 >= 2**31: no int32 accumulator holds every sum, so the float64 BLAS product runs."""
    packed = int8_gemm.pack_gemm(np.full((1, 1, 1, 132200), 127, np.int8), 1, "int8")
    assert packed[4] is None and packed[0].dtype == np.float64


@pytest.mark.slow
def test_a_target_without_vnni_runs_the_blas_path(tmp_path):
    """NUMBA_CPU_NAME=generic (a portable cache's target): no VNNI, the BLAS path, the same outputs."""
    rng = np.random.default_rng(7)
    x = rng.integers(-128, 128, (1, 9, 9, 13)).astype(np.int8)
    w_ohwi = rng.integers(-128, 128, (21, 3, 3, 13)).astype(np.int8)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "w.npy", w_ohwi)
    script = f"""
import numpy as np
from mcc.runtime.kernels import int8_gemm, int8_vnni
from mcc.runtime.kernels.int8_output import RowRequant
from mcc.runtime.rules import rule_set
x, w = np.load({str(tmp_path / 'x.npy')!r}), np.load({str(tmp_path / 'w.npy')!r})
packed = int8_gemm.pack_gemm(w, 1, "int8")
assert not int8_vnni.VNNI and packed[4] is None
requant = RowRequant(np.full(21, 1e-3), rule_set("litert-xnnpack").rule("conv2d"), 4, (-128, 127))
out = int8_gemm.conv_gemm(x, -5, packed, (3, 3), (2, 2), (1, 1), (1, 1, 1, 1), 5, 5, np.arange(21) * 99, requant,
                          np.int8)
np.save({str(tmp_path / 'out.npy')!r}, out)
"""
    env = dict(os.environ, NUMBA_CPU_NAME="generic", NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    subprocess.run([sys.executable, "-c", script], check=True, env=env, timeout=600)
    requant = RowRequant(np.full(21, 1e-3), rule_set("litert-xnnpack").rule("conv2d"), 4, (-128, 127))
    want = int8_gemm.conv_gemm(x, -5, int8_gemm.pack_gemm(w_ohwi, 1, "int8"), (3, 3), (2, 2), (1, 1), (1, 1, 1, 1),
                               5, 5, np.arange(21) * 99, requant, np.int8)
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), want)
