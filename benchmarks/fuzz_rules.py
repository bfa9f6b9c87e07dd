"""Every integer kernel rule against the real runtime it claims to match, on randomised single-op int8 models.

    python benchmarks/fuzz_rules.py [--quick | --elements N] [--rows conv2d,softmax] [--sets onnxruntime] [--out FILE]

For each row of the rule tables that an int8 kernel implements (runtime.rules: the ops of INT8_KERNELS, with
QUANTIZE split by its input into quantize / requantize and resize by its mode, and the 16x8 rows "op/int16":
int16 activations at zero point 0, int8 weights, int64 bias) and each rule set, it builds
random one-op graphs, writes them (write_tflite for litert-ref and litert-xnnpack, the x86-int8 ONNX writer for
onnxruntime), runs them in the peer (LiteRT BUILTIN_REF, LiteRT's default resolver with XNNPACK, onnxruntime at
ORT_ENABLE_ALL and ORT_DISABLE_ALL) and in mcc's runtime on the file read back under the matching rule set
(validate.compare), and counts the output elements compared and differing. The cases are meant to break
arithmetic, not to look like a network: scales drawn log-uniformly over 1e-4..1e2 (a third of them powers of
two, where exact results land on .5), zero points at -128 and 127 as often as elsewhere, and inputs drawn one of
five ways per tensor: near the zero point (ties), uniform over int8, at the code limits (saturation), rows of
one repeated value (softmax, mean, pooling, reduce over equal rows) and a mix of these. Output scales follow the
input's within two to four orders of magnitude either way (saturating many outputs), except where the format
fixes them (TFLite's SOFTMAX, LOGISTIC and TANH; its data-movement ops keep the input's).

A row that a runtime has no kernel for (onnxruntime has no int8 Sub or bilinear Resize: legalize_onnx makes them
float islands) is listed as such, not run. A case that mcc's runtime and the peer both refuse (TFLite fails to
prepare a fused relu6 whose bound overflows int32) counts as refused; one that only mcc refuses is a gap in what
it reproduces, counted apart (litert-xnnpack refuses an ADD, SUB or MUL that XNNPACK leaves to TFLite's optimized
kernel); one that only the runtime refuses is a finding, listed with the differing cases (their case numbers
replay with build(row, rule set, number, size)). Seeds are fixed (crc32 of row, rule set and case number), so a run
repeats; the full run compares at least 10**6 output elements per row and rule set (onnxruntime's count adds
both optimization levels) and writes its table to benchmarks/results/fuzz_rules.txt. tests/test_fuzz_rules.py
runs --quick's slice. Unlike onnxruntime's and TFLite's own kernel tests, which compare a kernel with a float
reference within a tolerance, this compares two integer implementations and tolerates no difference.
"""

from __future__ import annotations

import argparse
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# This file's folder is not an import root: benchmarks/coverage.py would shadow coverage.py, which numba imports.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from mcc.backends import emit
from mcc.errors import MccError
from mcc.formats.onnx.reader import read_emitted_onnx
from mcc.formats.tflite.reader import read_tflite
from mcc.ir import Graph, QuantParams
from mcc.runtime import rule_set, run
from mcc.runtime.format_arithmetic import ONNX_ARITHMETIC
from mcc.validate import compare

# rule set -> (file format, the peer's kernel sets)
RULE_SETS = {"litert-ref": ("tflite", ("ref",)), "litert-xnnpack": ("tflite", ("default",)),
             "onnxruntime": ("onnx", ("ort-all", "ort-none"))}
FULL_ELEMENTS, QUICK_ELEMENTS = 10 ** 6, 4000
RESULTS = Path(__file__).parent / "results" / "fuzz_rules.txt"


# ---- random parameters and inputs ----------------------------------------------------------------------------
class Case:
    """One random single-op int8 graph under construction, in the layout of its file format."""

    def __init__(self, rng: np.random.Generator, fmt: str, size: int):
        self.rng, self.fmt, self.size = rng, fmt, size
        self.nhwc = fmt == "tflite"
        self.g = Graph("fuzz")
        self.feeds: dict[str, np.ndarray] = {}
        self.pow2 = rng.random() < 1 / 3  # every scale a power of two: exact results land on .5

    def scale(self, lo: float = 1e-4, hi: float = 1e2) -> float:
        return self.derived(10 ** self.rng.uniform(np.log10(lo), np.log10(hi)))

    def derived(self, scale: float) -> float:
        """A scale as the file stores it: float32, or the nearest power of two in a tie-rich case."""
        return float(2.0 ** np.round(np.log2(scale))) if self.pow2 else float(np.float32(scale))

    def zp(self) -> int:
        return int(self.rng.choice([-128, 127, int(self.rng.integers(-128, 128)), int(self.rng.integers(-20, 21))]))

    def image(self, n, c, h, w) -> tuple[int, ...]:
        return (n, h, w, c) if self.nhwc else (n, c, h, w)

    @property
    def channel_axis(self) -> int:
        return 3 if self.nhwc else 1

    @property
    def spatial_axes(self) -> tuple[int, int]:
        return (1, 2) if self.nhwc else (2, 3)

    def codes(self, shape, zp: int, rows: tuple[int, ...] = (-1,), dtype: str = "int8") -> np.ndarray:
        """Integer codes drawn one of five ways; 'equal' repeats one value along the axes `rows`."""
        rng = self.rng
        lo, hi = int(np.iinfo(dtype).min), int(np.iinfo(dtype).max)
        kind = rng.choice(["near", "uniform", "limits", "equal", "mixed"])
        near = zp + rng.integers(-12, 13, shape)
        uniform = rng.integers(lo, hi + 1, shape)
        limits = rng.choice([lo, hi, lo + 1, hi - 1], shape)
        if kind == "equal":
            small = tuple(1 if a % len(shape) in {r % len(shape) for r in rows} else d for a, d in enumerate(shape))
            x = np.broadcast_to(rng.integers(lo, hi + 1, small), shape)
        elif kind == "mixed":
            pick = rng.integers(0, 3, shape)
            x = np.choose(pick, [near, uniform, limits])
        else:
            x = {"near": near, "uniform": uniform, "limits": limits}[kind]
        return np.clip(x, lo, hi).astype(dtype)

    def input(self, name, shape, scale, zp, rows=(-1,), dtype="int8"):
        t = self.g.add_input(name, tuple(shape), dtype, ("NHWC" if self.nhwc else "NCHW") if len(shape) == 4 else None)
        t.quant = QuantParams(np.float32(scale), zp)
        self.feeds[name] = self.codes(shape, zp, rows, dtype)
        return t

    def const(self, name, data, scale, zp=0, axis=None):
        t = self.g.constant(name, data)
        t.quant = QuantParams(np.asarray(scale, np.float32), np.broadcast_to(np.int64(zp), np.shape(scale)).copy(),
                              axis)
        return t

    def op(self, op, inputs, scale, zp, n_outputs=1, **attrs):
        node = self.g.add_node(op, inputs, attrs, name="y", n_outputs=n_outputs)
        for o in node.outputs:
            if scale is not None:
                o.quant = QuantParams(np.float32(scale), zp)
        self.g.outputs = list(node.outputs)
        return node

    def done(self) -> Graph:
        self.g.verify()
        return self.g

    def batch_for(self, per_item: int, cap: int = 64) -> int:
        return int(np.clip(self.size // max(per_item, 1), 1, cap))


# ---- one generator per row -----------------------------------------------------------------------------------
GENERATORS = {}


def row(*names):
    """Register a generator for rows `names`; an "op/int16" row calls it with dtype "int16"."""
    def register(fn):
        for name in names:
            GENERATORS[name] = (lambda c, fn=fn: fn(c, "int16")) if name.endswith("/int16") else fn
        return fn
    return register


def _same_pads(size: int, k: int, s: int) -> tuple[int, int]:
    total = max((-(-size // s) - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def _spatial_attrs(c: Case, h: int, w: int, k: int, s: int) -> dict:
    """TFLite has SAME and VALID only; either, at random."""
    if c.rng.random() < 0.5:
        (t, b), (l, r) = _same_pads(h, k, s), _same_pads(w, k, s)
        return {"stride": [s, s], "padding": [t, l, b, r]}
    return {"stride": [s, s], "padding": [0, 0, 0, 0]}


def _activation(c: Case):
    return c.rng.choice([None, None, "relu", "relu6"])


def _weights(c: Case, shape, n_channels: int, axis: int, per_channel: bool):
    mag = int(c.rng.choice([3, 20, 127]))
    w = c.rng.integers(-mag, mag + 1, shape).astype(np.int8)
    base = c.scale(1e-4, 1e0)
    spread = 2.0 ** -c.rng.integers(0, 4, n_channels) if c.pow2 else 10 ** c.rng.uniform(-1.5, 0, n_channels)
    s_w = (base * spread).astype(np.float32) if per_channel else np.float32([base])
    return c.const("w", w, s_w, 0, axis if per_channel else None), s_w, mag


def _bias(c: Case, s_in, s_w, n: int, dtype="int32"):
    s_b = (np.float32(s_in) * s_w).astype(np.float32)  # one scale with per-tensor weights, as XNNPACK requires
    return c.const("b", c.rng.integers(-3000, 3001, n).astype(dtype), s_b, 0, 0 if s_b.size > 1 else None)


def _accumulator_out_scale(c: Case, s_in, s_w, mag, depth):
    """An output scale about the size of the accumulator's spread, give or take a factor of 30."""
    return c.derived(s_in * float(np.max(s_w)) * mag * 40 * np.sqrt(depth) * 10 ** c.rng.uniform(-1.5, 1))


# 16x8 rows ("op/int16", TFLite's kernels with int16 activations): zero points 0, an int64 bias, int16 codes, and
# an output scale for int16's wider range (the accumulator's spread over 256 codes, not 1).
_WIDTH = {"int8": ("int32", 1.0), "int16": ("int64", 1 / 256)}


def _zp(c: Case, dtype: str) -> int:
    return c.zp() if dtype == "int8" else 0


def _out(c: Case, node, dtype: str):
    for o in node.outputs:
        o.dtype = dtype


@row("conv2d", "conv2d/int16")
def _conv2d(c: Case, dtype="int8"):
    bias, narrow = _WIDTH[dtype]
    cin, cout, k, s = int(c.rng.integers(1, 9)), int(c.rng.integers(1, 17)), int(c.rng.choice([1, 3, 5])), int(c.rng.integers(1, 3))
    d = int(c.rng.choice([1, 1, 2]))
    h, w = int(c.rng.integers((k - 1) * d + 1, 14)), int(c.rng.integers((k - 1) * d + 1, 14))
    x = c.input("x", c.image(c.batch_for(h * w * cout // (s * s)), cin, h, w), s_in := c.scale(), _zp(c, dtype),
                dtype=dtype)
    shape = (cout, k, k, cin) if c.nhwc else (cout, cin, k, k)
    wt, s_w, mag = _weights(c, shape, cout, 0, c.rng.random() < 0.7)
    _out(c, c.op("conv2d", [x, wt, _bias(c, s_in, s_w, cout, bias)],
                 c.derived(_accumulator_out_scale(c, s_in, s_w, mag, k * k * cin) * narrow), _zp(c, dtype),
                 activation=_activation(c), dilation=[d, d], **_spatial_attrs(c, h, w, (k - 1) * d + 1, s)), dtype)


@row("depthwise_conv2d", "depthwise_conv2d/int16")
def _depthwise(c: Case, dtype="int8"):
    bias, narrow = _WIDTH[dtype]
    cin, m, k, s = int(c.rng.integers(1, 9)), int(c.rng.choice([1, 1, 2])), int(c.rng.choice([3, 5])), int(c.rng.integers(1, 3))
    d = int(c.rng.choice([1, 1, 2]))
    h, w = int(c.rng.integers((k - 1) * d + 1, 16)), int(c.rng.integers((k - 1) * d + 1, 16))
    x = c.input("x", c.image(c.batch_for(h * w * cin * m // (s * s)), cin, h, w), s_in := c.scale(), _zp(c, dtype),
                dtype=dtype)
    shape, axis = ((1, k, k, cin * m), 3) if c.nhwc else ((cin * m, 1, k, k), 0)
    wt, s_w, mag = _weights(c, shape, cin * m, axis, c.rng.random() < 0.7)
    _out(c, c.op("depthwise_conv2d", [x, wt, _bias(c, s_in, s_w, cin * m, bias)],
                 c.derived(_accumulator_out_scale(c, s_in, s_w, mag, k * k) * narrow), _zp(c, dtype), multiplier=m,
                 activation=_activation(c), dilation=[d, d], **_spatial_attrs(c, h, w, (k - 1) * d + 1, s)), dtype)


@row("fully_connected", "fully_connected/int16")
def _fully_connected(c: Case, dtype="int8"):
    bias, narrow = _WIDTH[dtype]
    depth, n = int(c.rng.integers(1, 200)), int(c.rng.integers(1, 65))
    batch = c.batch_for(n, 4096)
    three_d = c.fmt == "tflite" and c.rng.random() < 0.3  # QGemm is 2-D
    shape = (2, max(batch // 2, 1), depth) if three_d else (batch, depth)
    x = c.input("x", shape, s_in := c.scale(), _zp(c, dtype), dtype=dtype)
    wt, s_w, mag = _weights(c, (n, depth), n, 0, c.rng.random() < 0.7)
    _out(c, c.op("fully_connected", [x, wt, _bias(c, s_in, s_w, n, bias)],
                 c.derived(_accumulator_out_scale(c, s_in, s_w, mag, depth) * narrow), _zp(c, dtype),
                 activation=_activation(c)), dtype)


def _broadcast_shape(c: Case, shape):
    kind = c.rng.integers(0, 4)
    if kind == 0:
        return shape
    if kind == 1:  # per channel
        return tuple(d if a == c.channel_axis else 1 for a, d in enumerate(shape))
    if kind == 2:
        return (1,) * len(shape)
    return tuple(d if c.rng.random() < 0.5 else 1 for d in shape)


def _binary(c: Case, op: str):
    shape = c.image(c.batch_for(8 * 8 * 16), 16, 8, 8)
    s = c.scale()
    sa, sb = (c.derived(s * 10 ** c.rng.uniform(-2, 2)) for _ in range(2))
    a = c.input("a", shape, sa, c.zp())
    b_shape = _broadcast_shape(c, shape)
    b = c.input("b", b_shape, sb, c.zp()) if b_shape == shape else c.const(
        "b", c.codes(b_shape, 0), sb, c.zp())
    if c.rng.random() < 0.5:
        a, b = b, a
    # across XNNPACK's accepted ranges (ADD / SUB: [2**-10, 2**8) per input, MUL: [2**-16, 2**8)), beyond
    # which LiteRT's default resolver runs TFLite's kernel
    so = max(sa, sb) * 10 ** c.rng.uniform(-3, 2.5) if op != "mul" else sa * sb * 10 ** c.rng.uniform(-3, 6)
    c.op(op, [a, b], c.derived(so), c.zp(), activation=_activation(c))


for _op in ("add", "sub", "mul"):
    GENERATORS[_op] = (lambda op: lambda c: _binary(c, op))(_op)


@row("add/int16")
def _add16(c: Case, dtype="int16"):
    """TFLite's 16x8 ADD: int16 inputs and output at zero point 0, any broadcast, output scales down to the
    2 * max(input scales) / 2**15 its rescaling can express."""
    shape = c.image(c.batch_for(8 * 8 * 16), 16, 8, 8)
    s = c.scale()
    sa, sb = (c.derived(s * 10 ** c.rng.uniform(-2, 2)) for _ in range(2))
    a = c.input("a", shape, sa, 0, dtype=dtype)
    b = c.input("b", _broadcast_shape(c, shape), sb, 0, dtype=dtype)
    if c.rng.random() < 0.5:
        a, b = b, a
    _out(c, c.op("add", [a, b], c.derived(max(sa, sb) * 10 ** c.rng.uniform(-2, 2.5)), 0, activation=_activation(c)),
         dtype)


def _pool(c: Case, op: str):
    k, s = int(c.rng.integers(1, 5)), int(c.rng.integers(1, 3))
    ch, h, w = int(c.rng.integers(1, 17)), int(c.rng.integers(k, 14)), int(c.rng.integers(k, 14))
    x = c.input("x", c.image(c.batch_for(h * w * ch // (s * s)), ch, h, w), s_in := c.scale(), zp := c.zp(),
                rows=c.spatial_axes)
    attrs = {"kernel": [k, k], **_spatial_attrs(c, h, w, k, s)}
    if op == "max_pool2d" or c.fmt == "tflite":  # TFLite's pools keep the input's parameters
        c.op(op, [x], s_in, zp, activation=_activation(c) if op == "max_pool2d" else None, **attrs)
    else:  # QLinearAveragePool requantizes
        c.op(op, [x], c.derived(s_in * 10 ** c.rng.uniform(-2, 2)), c.zp(), **attrs)


GENERATORS["max_pool2d"] = lambda c: _pool(c, "max_pool2d")
GENERATORS["avg_pool2d"] = lambda c: _pool(c, "avg_pool2d")


@row("mean")
def _mean(c: Case):
    if c.fmt == "onnx":  # QLinearGlobalAveragePool: over H and W
        ch, h, w = int(c.rng.integers(1, 65)), int(c.rng.integers(1, 12)), int(c.rng.integers(1, 12))
        shape, axes = c.image(c.batch_for(ch, 512), ch, h, w), list(c.spatial_axes)
    else:
        rank = int(c.rng.integers(2, 5))
        shape = tuple(int(d) for d in c.rng.integers(1, 12, rank))
        axes = sorted((1 + c.rng.choice(rank - 1, int(c.rng.integers(1, rank)), replace=False)).tolist())
        kept = int(np.prod(shape[1:])) // int(np.prod([shape[a] for a in axes]))
        shape = (c.batch_for(kept, 4096),) + shape[1:]
    x = c.input("x", shape, s_in := c.scale(), c.zp(), rows=tuple(axes))
    c.op("mean", [x], c.derived(s_in * 10 ** c.rng.uniform(-2, 2)), c.zp(), axes=axes, keepdims=True)


@row("quantize", "quantize/int16")
def _quantize(c: Case, dtype="int8"):
    s, zp = c.scale(), _zp(c, dtype)
    n = c.size
    x = c.g.add_input("x", (1, n), "float32", None)
    rng = c.rng
    halves = (rng.integers(-600, 600, n) * np.float32(s) / np.float32(2)).astype(np.float32)  # grid points and ties
    wide = (rng.standard_normal(n) * s * 10 ** rng.uniform(0, 3)).astype(np.float32)
    values = np.where(rng.random(n) < 0.5, halves, wide).astype(np.float32)
    values[:7] = [np.nan, np.inf, -np.inf, 1e30, -1e30, -0.0, 1e-40]
    c.feeds["x"] = values.reshape(1, n)
    _out(c, c.op("quantize", [x], s, zp, dtype=dtype), dtype)


@row("requantize", "requantize/int16")
def _requantize(c: Case, dtype="int8"):
    pairs = [("int8", "int8")] if dtype == "int8" else [("int8", "int16"), ("int16", "int8"), ("int16", "int16")]
    src, dst = pairs[int(c.rng.integers(0, len(pairs)))]
    s_in = c.scale()
    x = c.input("x", (1, c.size), s_in, _zp(c, src), dtype=src)
    _out(c, c.op("quantize", [x], c.derived(s_in * 10 ** c.rng.uniform(-2.5, 2.5)), _zp(c, dst), dtype=dst), dst)


@row("dequantize", "dequantize/int16")
def _dequantize(c: Case, dtype="int8"):
    x = c.input("x", (1, c.size), c.scale(), _zp(c, dtype), dtype=dtype)
    c.op("dequantize", [x], None, 0)


def _random_shape(c: Case, rank=None, lo=1, hi=9):
    rank = rank or int(c.rng.integers(1, 5))
    shape = [int(d) for d in c.rng.integers(lo, hi, rank)]
    shape[0] = int(np.clip(c.size // max(int(np.prod(shape[1:])), 1), 1, 4096))
    return tuple(shape)


def _moving(c: Case, shape, rows=(-1,)):
    """An input and the parameters a byte-moving op's output shares."""
    s, zp = c.scale(), c.zp()
    return c.input("x", shape, s, zp, rows), s, zp


@row("concat")
def _concat(c: Case):
    shape = _random_shape(c)
    axis = int(c.rng.integers(0, len(shape)))
    s, zp = c.scale(), c.zp()
    parts = []
    for i in range(int(c.rng.integers(1, 4))):
        part = tuple(int(c.rng.integers(1, 6)) if a == axis else d for a, d in enumerate(shape))
        parts.append(c.input(f"x{i}", part, s, zp))
    c.op("concat", parts, s, zp, axis=axis)


@row("reshape", "reshape/int16")
def _reshape(c: Case, dtype="int8"):
    shape = _random_shape(c)
    s, zp = c.scale(), _zp(c, dtype)
    x = c.input("x", shape, s, zp, dtype=dtype)
    _out(c, c.op("reshape", [x], s, zp, shape=[shape[0], -1]), dtype)


@row("transpose")
def _transpose(c: Case):
    shape = _random_shape(c, int(c.rng.integers(2, 5)))
    x, s, zp = _moving(c, shape)
    node = c.op("transpose", [x], s, zp, perm=[int(p) for p in c.rng.permutation(len(shape))])
    node.outputs[0].layout = None


@row("pad")
def _pad(c: Case):
    shape = _random_shape(c, int(c.rng.integers(2, 5)))
    x, s, zp = _moving(c, shape)
    pads = [int(p) for p in c.rng.integers(0, 3, 2 * len(shape))]
    value = float(s * (int(c.rng.integers(-128, 128)) - zp)) if c.rng.random() < 0.5 else 0.0
    c.op("pad", [x], s, zp, pads=pads, value=value)


@row("slice")
def _slice(c: Case):
    shape = _random_shape(c, int(c.rng.integers(2, 5)), 2, 10)
    x, s, zp = _moving(c, shape)
    axes = sorted(c.rng.choice(len(shape), int(c.rng.integers(1, len(shape) + 1)), replace=False).tolist())
    starts, ends, steps = [], [], []
    for a in axes:
        d = shape[a]
        if c.rng.random() < 0.3:  # a negative step
            step = -int(c.rng.integers(1, 3))
            start = int(c.rng.integers(0, d))
            starts.append(start), ends.append(int(c.rng.integers(-1, start))), steps.append(step)
        else:
            step = int(c.rng.integers(1, 3))
            start = int(c.rng.integers(0, d))
            starts.append(start), ends.append(int(c.rng.integers(start + 1, d + 1))), steps.append(step)
    c.op("slice", [x], s, zp, starts=starts, ends=ends, axes=axes, steps=steps)


@row("split")
def _split(c: Case):
    shape = _random_shape(c, int(c.rng.integers(2, 5)), 2, 10)
    axis = int(c.rng.integers(0, len(shape)))
    x, s, zp = _moving(c, shape)
    cuts = sorted(set(c.rng.integers(1, shape[axis], int(c.rng.integers(1, 3))).tolist())) if shape[axis] > 1 else []
    sizes = np.diff([0, *cuts, shape[axis]]).tolist()
    c.op("split", [x], s, zp, n_outputs=len(sizes), axis=axis, sizes=sizes)


def _min_max(c: Case, op: str):
    shape = _random_shape(c, 4)
    s, zp = c.scale(), c.zp()
    a = c.input("a", shape, s, zp)
    b_shape = _broadcast_shape(c, shape)
    b = c.input("b", b_shape, s, zp) if b_shape == shape else c.const("b", c.codes(b_shape, zp), s, zp)
    c.op(op, [a, b], s, zp)


GENERATORS["minimum"] = lambda c: _min_max(c, "minimum")
GENERATORS["maximum"] = lambda c: _min_max(c, "maximum")


def _activation_row(c: Case, op: str):
    """Every int8 code many times over, at random parameters (TFLite fixes LOGISTIC's and TANH's output)."""
    s_in, zp_in = c.scale(), c.zp()
    x = c.g.add_input("x", (c.batch_for(256, 4096), 256), "int8", None)
    x.quant = QuantParams(np.float32(s_in), zp_in)
    c.feeds["x"] = np.tile(c.rng.permutation(np.arange(-128, 128)), (x.shape[0], 1)).astype(np.int8)
    attrs, s_out, zp_out = {}, c.derived(s_in * 10 ** c.rng.uniform(-1.5, 1.5)), c.zp()
    if op == "sigmoid":
        s_out, zp_out = 1 / 256, -128
    elif op == "tanh":
        s_out, zp_out = 1 / 128, 0
    elif op == "clip" and c.fmt == "tflite":  # RELU_N1_TO_1 and RELU_0_TO_1
        attrs = {"min": float(c.rng.choice([-1.0, 0.0])), "max": 1.0}
    elif op == "clip":
        lo = float(np.float32(c.rng.uniform(-3, 1) * s_in * 40))
        attrs = {"min": lo, "max": float(np.float32(lo + abs(c.rng.uniform(0.1, 3)) * s_in * 40))}
    elif op == "leaky_relu":
        attrs = {"alpha": float(np.float32(c.rng.choice([0.01, 0.1, 0.2, 0.3, c.rng.uniform(0, 1)])))}
    elif op in ("relu", "relu6"):
        s_out = c.derived((s_in * 128 if op == "relu" else 6) / 255 * 10 ** c.rng.uniform(-1, 1))
    c.op(op, [x], s_out, zp_out, **attrs)


for _op in ("relu", "relu6", "clip", "leaky_relu", "sigmoid", "tanh", "hardswish"):
    GENERATORS[_op] = (lambda op: lambda c: _activation_row(c, op))(_op)


@row("softmax")
def _softmax(c: Case):
    # TFLite's reference SOFTMAX aborts the process on a row whose exponentials sum to 512 or more: rows < 512
    n = int(c.rng.choice([1, 2, 3, 4, 10, 80, 100, 256, 500, 1000 if c.fmt == "onnx" else 511]))
    s_in = c.scale()
    if c.fmt == "onnx" and c.rng.random() < 0.4:  # any axis, any output parameters
        shape = (c.batch_for(n * 6, 256), n, 6)
        x = c.input("x", shape, s_in, c.zp(), rows=(1,))
        c.op("softmax", [x], c.scale(1e-4, 1e-1), c.zp(), axis=1, beta=1.0)
        return
    x = c.input("x", (c.batch_for(n, 8192), n), s_in, c.zp())
    beta = 1.0 if c.fmt == "onnx" else float(np.float32(c.rng.choice([1.0, c.rng.uniform(0.05, 3)])))
    if c.fmt == "onnx":
        s_out, zp_out = (1 / 256, -128) if c.rng.random() < 0.6 else (c.scale(1e-4, 1e-1), c.zp())
    else:
        s_out, zp_out = 1 / 256, -128
    c.op("softmax", [x], s_out, zp_out, axis=-1, beta=beta)


def _resize(c: Case, mode: str):
    ch, h, w = int(c.rng.integers(1, 9)), int(c.rng.integers(1, 14)), int(c.rng.integers(1, 14))
    size = [int(c.rng.integers(1, 3 * h + 2)), int(c.rng.integers(1, 3 * w + 2))]
    x, s, zp = _moving(c, c.image(c.batch_for(size[0] * size[1] * ch, 32), ch, h, w), rows=c.spatial_axes)
    coordinates = str(c.rng.choice(["half_pixel", "align_corners", "asymmetric"]))
    attrs = {"mode": mode, "size": size, "coordinate_transformation_mode": coordinates}
    if mode == "nearest":  # the settings TFLite's RESIZE_NEAREST_NEIGHBOR has
        attrs["nearest_mode"] = "floor" if coordinates == "asymmetric" else "round_prefer_ceil"
    c.op("resize", [x], s, zp, **attrs)


GENERATORS["resize_nearest"] = lambda c: _resize(c, "nearest")
GENERATORS["resize_bilinear"] = lambda c: _resize(c, "bilinear")


@row("gather")
def _gather(c: Case):
    shape = _random_shape(c, int(c.rng.integers(2, 5)), 2, 9)
    axis = int(c.rng.integers(1, len(shape)))
    x, s, zp = _moving(c, shape)
    indices = c.g.constant("i", c.rng.integers(0, shape[axis], int(c.rng.integers(1, 2 * shape[axis] + 1))).astype(np.int32))
    node = c.op("gather", [x, indices], s, zp, axis=axis)
    if len(shape) == 4 and axis != c.channel_axis:
        node.outputs[0].layout = x.layout


@row("tile")
def _tile(c: Case):
    shape = _random_shape(c, int(c.rng.integers(2, 5)), 1, 6)
    x, s, zp = _moving(c, shape)
    c.op("tile", [x], s, zp, multiples=[1] + [int(m) for m in c.rng.integers(1, 4, len(shape) - 1)])


def _blocks(c: Case, op: str):
    b = int(c.rng.integers(2, 4))
    ch, h, w = int(c.rng.integers(1, 5)), int(c.rng.integers(1, 6)), int(c.rng.integers(1, 6))
    if op == "depth_to_space":
        ch *= b * b
    else:
        h, w = h * b, w * b
    x, s, zp = _moving(c, c.image(c.batch_for(ch * h * w, 64), ch, h, w))
    c.op(op, [x], s, zp, block_size=b, **({"mode": "DCR"} if op == "depth_to_space" else {}))


GENERATORS["depth_to_space"] = lambda c: _blocks(c, "depth_to_space")
GENERATORS["space_to_depth"] = lambda c: _blocks(c, "space_to_depth")


def _reduce_pick(c: Case, op: str):
    shape = _random_shape(c, int(c.rng.integers(2, 5)), 1, 8)
    axes = sorted((1 + c.rng.choice(len(shape) - 1, int(c.rng.integers(1, len(shape))), replace=False)).tolist())
    kept = int(np.prod(shape[1:])) // int(np.prod([shape[a] for a in axes]))
    shape = (c.batch_for(kept, 4096),) + shape[1:]
    x, s, zp = _moving(c, shape, rows=tuple(axes))
    c.op(op, [x], s, zp, axes=axes, keepdims=bool(c.rng.random() < 0.5))


GENERATORS["reduce_max"] = lambda c: _reduce_pick(c, "reduce_max")
GENERATORS["reduce_min"] = lambda c: _reduce_pick(c, "reduce_min")

ROWS = tuple(GENERATORS)


# ---- running --------------------------------------------------------------------------------------------------
@dataclass
class Cell:
    """One (row, rule set) of the table."""
    row: str
    rules: str
    elements: int = 0
    differing: int = 0
    max_diff: float = 0.0
    cases: int = 0
    refused: dict = field(default_factory=dict)  # "refused" (by both), "mcc refuses", "peer refuses" -> cases
    no_kernel: str = ""
    first_bad: list = field(default_factory=list)  # case numbers that differ or are refused by one side only

    @property
    def mismatched(self) -> int:
        """Cases the runtime refuses and mcc runs: a finding (mcc refusing what the runtime runs is a gap, listed
        in its own column, never a wrong answer)."""
        return self.refused.get("peer refuses", 0)


def build(name: str, rules: str, index: int, size: int) -> tuple[Graph, dict, np.random.Generator]:
    seed = zlib.crc32(f"{name}/{rules}/{index}".encode())
    c = Case(np.random.default_rng(seed), RULE_SETS[rules][0], size)
    GENERATORS[name](c)
    return c.done(), c.feeds, c.rng


def run_case(name: str, rules: str, index: int, size: int):
    """(elements, differing, max diff) of one case over the peer's kernel sets; or "refused" where mcc and the peer
    both refuse the model, "mcc refuses" / "peer refuses" where only one does."""
    fmt, kernel_sets = RULE_SETS[rules]
    graph, feeds, _ = build(name, rules, index, size)
    try:
        data = emit(graph, fmt)
    except MccError:  # the format has no such operator: nothing to compare
        return "refused"
    back = read_tflite(data) if fmt == "tflite" else read_emitted_onnx(data, ONNX_ARITHMETIC)
    try:
        comparisons = [compare(data, back, [feeds], kernels, rules=rules) for kernels in kernel_sets]
    except MccError:  # compare builds the peer first: it accepted the model
        return "mcc refuses"
    except Exception:  # noqa: BLE001 - LiteRT raises RuntimeError, onnxruntime its own exception classes
        try:
            run(back, feeds, rules=rules)
        except MccError:
            return "refused"
        return "peer refuses"
    outputs = {t.name for t in back.outputs}
    elements = differing = 0
    max_diff = 0.0
    for comparison in comparisons:
        for t in comparison.tensors:
            if t.tensor in outputs:
                elements += t.elements
                differing += t.differing
                max_diff = max(max_diff, t.max_abs_diff)
    return elements, differing, max_diff


def fuzz(name: str, rules: str, target: int, min_cases: int = 2, progress=None) -> Cell:
    cell = Cell(name, rules)
    if name not in rule_set(rules).rules:
        cell.no_kernel = f"no {'16x8' if name.endswith('/int16') else 'int8'} kernel in {rules}"
        return cell
    size = int(np.clip(target // 400, 256, 10000))  # about 400 parameter draws per row in the full run
    index = 0
    while cell.elements < target or cell.cases < min_cases:
        result = run_case(name, rules, index, size)
        if isinstance(result, str):
            cell.refused[result] = cell.refused.get(result, 0) + 1
            if result == "peer refuses" and len(cell.first_bad) < 5:
                cell.first_bad.append(index)
            if sum(cell.refused.values()) > 20 and cell.cases == 0:
                cell.no_kernel = f"every case refused ({', '.join(cell.refused)})"
                break
        else:
            elements, differing, max_diff = result
            cell.cases += 1
            cell.elements += elements
            cell.differing += differing
            cell.max_diff = max(cell.max_diff, max_diff)
            if differing and len(cell.first_bad) < 5:
                cell.first_bad.append(index)
        index += 1
        if progress:
            progress(cell)
    return cell


def table(cells: list[Cell]) -> str:
    lines = [f"{'row':<22} {'rule set':<15} {'elements':>11} {'differing':>10} {'max diff':>9} {'cases':>6} "
             f"{'refused':>8} {'mcc only':>9} {'rt only':>8}  cases to replay"]
    for c in cells:
        if c.no_kernel:
            lines.append(f"{c.row:<22} {c.rules:<15} {'-':>11} {'-':>10} {'-':>9} {'-':>6} {'-':>8} {'-':>9} "
                         f"{'-':>8}  {c.no_kernel}")
        else:
            lines.append(f"{c.row:<22} {c.rules:<15} {c.elements:>11,} {c.differing:>10,} {c.max_diff:>9g} "
                         f"{c.cases:>6} {c.refused.get('refused', 0):>8} {c.refused.get('mcc refuses', 0):>9} "
                         f"{c.mismatched:>8}  {' '.join(map(str, c.first_bad))}")
    run = [c for c in cells if not c.no_kernel]
    lines.append(f"total: {sum(c.elements for c in run):,} elements compared in {sum(c.cases for c in run):,} cases "
                 f"over {len(run)} (row, rule set) pairs, {sum(c.differing for c in run):,} differing; "
                 f"cases refused by both mcc and the runtime {sum(c.refused.get('refused', 0) for c in run)}, by "
                 f"mcc only {sum(c.refused.get('mcc refuses', 0) for c in run)}, by the runtime only "
                 f"{sum(c.mismatched for c in run)}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help=f"{QUICK_ELEMENTS} elements per row and rule set, not 10**6")
    p.add_argument("--elements", type=int, help="output elements per row and rule set (overrides --quick)")
    p.add_argument("--rows", help="comma-separated rows (default: all)")
    p.add_argument("--sets", help="comma-separated rule sets (default: all)")
    p.add_argument("--out", type=Path, help=f"where to write the table (default for a full run: {RESULTS})")
    a = p.parse_args(argv)
    rows = a.rows.split(",") if a.rows else list(ROWS)
    sets = a.sets.split(",") if a.sets else list(RULE_SETS)
    target = a.elements or (QUICK_ELEMENTS if a.quick else FULL_ELEMENTS)
    cells = []
    start = time.perf_counter()
    for name in rows:
        for rules in sets:
            def progress(cell):
                print(f"\r[{time.perf_counter() - start:7.1f}s] {cell.row} / {cell.rules}: {cell.cases} cases, "
                      f"{cell.elements:,} elements, {cell.differing:,} differing", end="", file=sys.stderr, flush=True)
            cells.append(fuzz(name, rules, target, progress=progress))
            print(file=sys.stderr)
    text = table(cells)
    flags = "".join(f" --{k} {v}" for k, v in (("rows", a.rows), ("sets", a.sets)) if v)
    header = (f"benchmarks/fuzz_rules.py{' --quick' if a.quick else ''}{flags}: mcc's runtime vs LiteRT (BUILTIN_REF for "
              "litert-ref, default resolver with XNNPACK for litert-xnnpack) and onnxruntime (ORT_ENABLE_ALL + "
              f"ORT_DISABLE_ALL), {target:,} output elements per row and rule set at least, "
              f"{time.perf_counter() - start:.0f} s\n")
    print(header + text)
    out = a.out or (RESULTS if target == FULL_ELEMENTS and not a.rows and not a.sets else None)
    if out:
        out.write_text(header + text + "\n")
    return 1 if any(c.differing or c.mismatched for c in cells) else 0


if __name__ == "__main__":
    sys.exit(main())
